//! The host network in the real image: DHCP from QEMU's own server, a static config given
//! through fw_cfg, and a config that cannot be fully applied not stopping the boot. Needs
//! QEMU and OVMF (TCG, no root, no KVM). The user network is `restrict=on`.

use std::time::Duration;

use gantry_init::net::ADDRESS_LINE;
use gantry_init::{CONFIG_LOADED, CONFIG_REFUSED, READY_MARKER};
use gantry_qemu::{Vm, VmConfig};
use gantry_tests::{field, image, BOOT_TIMEOUT};

const CONFIG: &str = "opt/org.gantry/config";

fn with_config(toml: &str, dir: &std::path::Path) -> VmConfig {
    let file = dir.join("config.toml");
    std::fs::write(&file, toml).expect("write config");
    let mut cfg = VmConfig::new(&image().qcow2_image);
    cfg.fw_cfg.push((CONFIG.to_owned(), file));
    cfg
}

/// The address line for `interface`, waiting for it.
fn address_of(vm: &mut Vm, interface: &str) -> String {
    let deadline = std::time::Instant::now() + BOOT_TIMEOUT;
    loop {
        let line = vm
            .wait_for(
                ADDRESS_LINE,
                deadline.saturating_duration_since(std::time::Instant::now()),
            )
            .unwrap_or_else(|e| panic!("no address for {interface}: {e}\n{}", vm.tail(40)));
        if field(&line, "interface") == Some(interface) {
            return line;
        }
    }
}

#[test]
fn qemu_gets_its_address_from_qemus_dhcp_server() {
    let mut vm = Vm::start(&VmConfig::new(&image().qcow2_image)).expect("QEMU starts");
    vm.wait_for(READY_MARKER, BOOT_TIMEOUT).unwrap();
    let line = address_of(&mut vm, "eth0");
    assert_eq!(field(&line, "address"), Some("10.0.2.15/24"), "{line}");
    assert_eq!(field(&line, "source"), Some("dhcp"), "{line}");
    let bound = vm
        .console()
        .lines()
        .find(|l| l.contains("dhcp: bound"))
        .map(str::to_owned)
        .expect("the client logs the lease");
    assert_eq!(field(&bound, "server"), Some("10.0.2.2"), "{bound}");
    assert!(!vm.console().contains("network: error"), "{}", vm.tail(40));
}

#[test]
fn qemu_static_config_from_fw_cfg_is_applied() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = with_config(
        r#"
version = 1
hostname = "static-node"

[[network.interfaces]]
name = "eth0"
addresses = ["10.0.2.77/24", "fd00:10::77/64"]
gateway4 = "10.0.2.2"
routes = [{ to = "192.0.2.0/24", via = "10.0.2.2" }]

[network.dns]
servers = ["10.0.2.3"]
"#,
        dir.path(),
    );
    let mut vm = Vm::start(&cfg).expect("QEMU starts");
    vm.wait_for(CONFIG_LOADED, BOOT_TIMEOUT).unwrap();
    vm.wait_for(READY_MARKER, BOOT_TIMEOUT).unwrap();
    let v4 = address_of(&mut vm, "eth0");
    assert_eq!(field(&v4, "address"), Some("10.0.2.77/24"), "{v4}");
    assert_eq!(field(&v4, "source"), Some("static"), "{v4}");
    let v6 = address_of(&mut vm, "eth0");
    assert_eq!(field(&v6, "address"), Some("fd00:10::77/64"), "{v6}");
    let console = vm.console().to_owned();
    let host = console
        .lines()
        .find(|l| l.contains("host name set"))
        .expect("init logs the host name");
    assert_eq!(field(host, "hostname"), Some("static-node"), "{host}");
    assert!(
        !console.contains("dhcp: started"),
        "DHCP is off with static addresses"
    );
    assert!(!console.contains("network: error"), "{console}");
}

#[test]
fn qemu_a_missing_nic_and_a_silent_network_do_not_stop_the_boot() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = with_config(
        r#"
version = 1

[[network.interfaces]]
name = "eth9"

[[network.interfaces]]
name = "eth1"

[[network.interfaces]]
name = "eth0"
"#,
        dir.path(),
    );
    cfg.silent_nics = 1;
    let mut vm = Vm::start(&cfg).expect("QEMU starts");
    vm.wait_for(READY_MARKER, BOOT_TIMEOUT).unwrap();
    // The NIC with a server still gets its address.
    let line = address_of(&mut vm, "eth0");
    assert_eq!(field(&line, "address"), Some("10.0.2.15/24"), "{line}");
    let quiet = vm
        .wait_for("no DHCP answer", Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e}\n{}", vm.tail(40)));
    assert_eq!(field(&quiet, "interface"), Some("eth1"), "{quiet}");
    let console = vm.console().to_owned();
    assert!(
        console.contains("network.interfaces[0]: no interface named eth9"),
        "{console}"
    );
}

#[test]
fn qemu_a_bad_config_is_refused_with_its_reasons_and_defaults_apply() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = with_config(
        "version = 1\n[[network.interfaces]]\nname = \"eth0\"\nmtu = 20\n",
        dir.path(),
    );
    let mut vm = Vm::start(&cfg).expect("QEMU starts");
    let refused = vm.wait_for(CONFIG_REFUSED, BOOT_TIMEOUT).unwrap();
    assert!(
        refused.contains("network.interfaces[0].mtu: 20 is below the IPv4 minimum of 68"),
        "{refused}"
    );
    vm.wait_for(READY_MARKER, BOOT_TIMEOUT).unwrap();
    let line = address_of(&mut vm, "eth0");
    assert_eq!(
        field(&line, "source"),
        Some("dhcp"),
        "defaults: DHCP on every NIC"
    );
}

#[test]
fn qemu_router_advertisements_give_an_ipv6_address_when_enabled() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = with_config(
        "version = 1\n[[network.interfaces]]\nname = \"eth0\"\ndhcp = true\nipv6_ra = true\n",
        dir.path(),
    );
    let mut vm = Vm::start(&cfg).expect("QEMU starts");
    vm.wait_for(READY_MARKER, BOOT_TIMEOUT).unwrap();
    // QEMU's user network advertises fec0::/64; DHCPv4 still runs beside it.
    let deadline = std::time::Instant::now() + BOOT_TIMEOUT;
    let mut sources = Vec::new();
    while sources.len() < 2 {
        let line = vm
            .wait_for(
                ADDRESS_LINE,
                deadline.saturating_duration_since(std::time::Instant::now()),
            )
            .unwrap_or_else(|e| panic!("{e}: {sources:?}\n{}", vm.tail(40)));
        sources.push((
            field(&line, "source").unwrap_or("").to_owned(),
            field(&line, "address").unwrap_or("").to_owned(),
        ));
    }
    let slaac = sources
        .iter()
        .find(|(s, _)| s == "slaac")
        .expect("a SLAAC address");
    assert!(
        slaac.1.starts_with("fec0::") && slaac.1.ends_with("/64"),
        "{sources:?}"
    );
    assert!(
        sources
            .iter()
            .any(|(s, a)| s == "dhcp" && a == "10.0.2.15/24"),
        "{sources:?}"
    );
}
