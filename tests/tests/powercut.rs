//! A power cut while a container writes (issue 7): QEMU is stopped with QMP `quit` while a
//! pulled container appends to a named volume and syncs in a loop; the next boot on the
//! same disk replays `/var`'s journal, PID 1 checks the image store before any container
//! starts, finds it consistent, and runs the container again on the data written before
//! the cut. Needs QEMU, OVMF, `docker-registry`, `skopeo` and busybox-static (no root, no
//! KVM).

use std::time::Duration;

use gantry_init::store_check::STORE_CHECK_LINE;
use gantry_init::supervisor::CONTAINER_LINE;
use gantry_init::var::VAR_MOUNTED;
use gantry_init::READY_MARKER;
use gantry_qemu::Vm;
use gantry_testkit::{Entry, TestRegistry};
use gantry_tests::demo::{
    push_busybox_image, registries_section, registry_vm_config, wait_healthy, REGISTRY_IN_GUEST,
};
use gantry_tests::{field, image, BOOT_TIMEOUT};

/// Keeps what an earlier run wrote in `/data/before`, then appends a counter to `/data/f`,
/// syncing after every line.
const WRITER: &str = "if [ -s /data/f ]; then /bin/busybox cp /data/f /data/before; fi; \
     i=0; while :; do i=$((i+1)); echo $i >> /data/f; /bin/busybox sync; \
     /bin/busybox usleep 50000; done";

/// The machine config: the writer, healthy once `ready` (a shell condition) holds.
fn writer_config(ready: &str) -> String {
    format!(
        r#"version = 1
hostname = "writer"

{registries}
[containers.writer]
image = "{ip}:{port}/demo/writer:1"
network = "none"
volumes = ["data:/data"]
health = {{ exec = ["/bin/sh", "-c", "{ready}"], interval_secs = 1, retries = 1000 }}
"#,
        registries = registries_section(),
        ip = REGISTRY_IN_GUEST.0,
        port = REGISTRY_IN_GUEST.1,
    )
}

#[test]
fn qemu_power_cut_while_a_container_writes_leaves_var_and_the_store_usable() {
    let dir = tempfile::tempdir().unwrap();
    let registry = TestRegistry::plain();
    push_busybox_image(
        &registry,
        dir.path(),
        "demo/writer",
        &[Entry::Dir("data")],
        &["/bin/sh", "-c", WRITER],
    );
    let disk = dir.path().join("disk.qcow2");
    std::fs::copy(&image().qcow2_image, &disk).unwrap();
    let config = dir.path().join("config.toml");
    // Healthy once it has written and synced a few lines.
    std::fs::write(
        &config,
        writer_config("test $(/bin/busybox wc -l < /data/f) -ge 20"),
    )
    .unwrap();
    let mut cfg = registry_vm_config(&disk, &registry, &config);
    cfg.overlay = false;

    let mut vm = Vm::start(&cfg).unwrap();
    let line = vm.wait_for(VAR_MOUNTED, BOOT_TIMEOUT).unwrap();
    assert_eq!(field(&line, "clean"), Some("true"), "{line}");
    vm.wait_for(READY_MARKER, BOOT_TIMEOUT).unwrap();
    wait_healthy(&mut vm, "writer", Duration::from_secs(300)).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !vm.console().contains(STORE_CHECK_LINE),
        "no check after a clean start:\n{}",
        vm.tail(40)
    );
    // Power cut with the writer in its loop. (QEMU may close the socket before it answers.)
    let _ = vm.qmp("quit", None);
    vm.wait_exit(Duration::from_secs(60)).unwrap();
    drop(vm);

    // Healthy again only if what was synced before the cut is still there.
    std::fs::write(&config, writer_config("test -s /data/before")).unwrap();
    let mut vm = Vm::start(&cfg).unwrap();
    let line = vm.wait_for(VAR_MOUNTED, BOOT_TIMEOUT).unwrap();
    assert_eq!(field(&line, "clean"), Some("false"), "{line}");
    let (which, line) = vm
        .wait_for_any(&[STORE_CHECK_LINE, CONTAINER_LINE], BOOT_TIMEOUT)
        .unwrap();
    assert_eq!(which, 0, "a container started before the check: {line}");
    assert_eq!(field(&line, "ok"), Some("true"), "{line}");
    assert_eq!(field(&line, "problems"), Some("0"), "{line}");
    eprintln!("after the power cut: {line}");
    wait_healthy(&mut vm, "writer", Duration::from_secs(300)).unwrap_or_else(|e| panic!("{e}"));
    // The image job finds the image whole in the store after the cut (pull policy
    // `missing`): nothing is fetched again.
    let console = vm.console().to_owned();
    assert!(
        console.contains("using the image in the store (pull policy: missing)"),
        "{console}"
    );
    assert!(!console.contains("downloading"), "{console}");
}
