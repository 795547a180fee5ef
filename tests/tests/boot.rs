//! The image boots: UEFI → GRUB → kernel → dm-verity root → PID 1, shuts down on the power
//! button, refuses a tampered root, and PID 1 drives the hardware watchdog when there is
//! one. Needs QEMU and OVMF (TCG, no root, no KVM).

use std::time::Duration;

use gantry_init::mounts::EARLY_MOUNTS;
use gantry_init::watchdog::DEFAULT_TIMEOUT_SECS;
use gantry_init::{
    MOUNT_LINE, NO_WATCHDOG_LINE, POWER_BUTTON_PRESSED, READY_MARKER, ROOT_DEVICE_LINE,
    SHUTDOWN_MARKER, SHUTDOWN_REQUESTED, VERSION, WATCHDOG_LINE,
};
use gantry_qemu::{DiskBus, Vm, VmConfig, VmError};
use gantry_tests::esp::image_with_kernel_args;
use gantry_tests::{copy_with_flipped_byte, field, image, BOOT_TIMEOUT};

/// What the kernel says when a watchdog device is closed without the magic character.
const WATCHDOG_NOT_STOPPED: &str = "watchdog did not stop";

fn boot(cfg: &VmConfig) -> Vm {
    Vm::start(cfg).expect("QEMU starts")
}

#[test]
fn qemu_boots_to_ready_from_a_verity_root_on_slot_a() {
    let image = image();
    let mut vm = boot(&VmConfig::new(&image.qcow2_image));
    let ready = vm.wait_for(READY_MARKER, BOOT_TIMEOUT).unwrap();
    assert_eq!(field(&ready, "version"), Some(VERSION));
    assert_eq!(field(&ready, "slot"), Some("A"));
    // boot_ms is the same clock as the line's own "[    1.483]" stamp.
    let boot_ms: u64 = field(&ready, "boot_ms").unwrap().parse().unwrap();
    let stamp = ready
        .trim_start_matches('[')
        .split(']')
        .next()
        .and_then(|t| t.trim().parse::<f64>().ok())
        .expect("the ready line starts with its time since boot");
    let stamp_ms = (stamp * 1000.0).round() as u64;
    assert!(boot_ms.abs_diff(stamp_ms) <= 5, "{ready}");
    assert!(
        boot_ms >= 100,
        "the kernel cannot boot in under 100 ms: {ready}"
    );

    let console = vm.console().to_owned();
    let root = console
        .lines()
        .find(|l| l.contains(ROOT_DEVICE_LINE))
        .expect("init logs the root device");
    assert_eq!(field(root, "device"), Some("/dev/dm-0"), "{root}");
    assert_eq!(field(root, "dm_name"), Some("vroot"), "{root}");
    let root_mount = console
        .lines()
        .find(|l| l.contains(MOUNT_LINE) && field(l, "target") == Some("/"))
        .expect("init logs the root mount");
    assert_eq!(field(root_mount, "fstype"), Some("erofs"), "{root_mount}");
    let opts = field(root_mount, "options").unwrap();
    assert!(opts.split(',').any(|o| o == "ro"), "{root_mount}");
    for spec in EARLY_MOUNTS {
        let mounted = console.lines().any(|l| {
            l.contains(MOUNT_LINE)
                && field(l, "target") == Some(spec.target)
                && field(l, "fstype") == Some(spec.fstype)
        });
        assert!(
            mounted,
            "{} ({}) not mounted:\n{console}",
            spec.target, spec.fstype
        );
    }
    assert!(
        !console.contains("cannot mount"),
        "a mount failed:\n{console}"
    );
    // No i6300esb on this VM: PID 1 says so once and boots on.
    let none = console
        .lines()
        .find(|l| l.contains(NO_WATCHDOG_LINE))
        .expect("init says it has no watchdog");
    assert_eq!(field(none, "device"), Some("/dev/watchdog"), "{none}");
    assert!(!console.contains(WATCHDOG_LINE), "{console}");
}

#[test]
fn qemu_power_button_powers_off_and_qemu_exits() {
    let image = image();
    let mut cfg = VmConfig::new(&image.qcow2_image);
    cfg.watchdog = true;
    let mut vm = boot(&cfg);
    let armed = vm.wait_for(WATCHDOG_LINE, BOOT_TIMEOUT).unwrap();
    assert_eq!(field(&armed, "device"), Some("/dev/watchdog"), "{armed}");
    let default = DEFAULT_TIMEOUT_SECS.to_string();
    assert_eq!(
        field(&armed, "timeout_secs"),
        Some(default.as_str()),
        "{armed}"
    );
    vm.wait_for(READY_MARKER, BOOT_TIMEOUT).unwrap();
    vm.power_button().unwrap();
    // wait_for only matches lines after the previous match: this also checks the order.
    vm.wait_for(POWER_BUTTON_PRESSED, Duration::from_secs(60))
        .unwrap();
    vm.wait_for(SHUTDOWN_MARKER, Duration::from_secs(60))
        .unwrap();
    let status = vm.wait_exit(Duration::from_secs(60)).unwrap();
    assert!(status.success(), "QEMU exited with {status}");
    assert!(
        vm.console().contains("reboot: Power down"),
        "{}",
        vm.tail(20)
    );
    // Disarmed with the magic close before the power-off.
    assert!(
        !vm.console().contains(WATCHDOG_NOT_STOPPED),
        "{}",
        vm.tail(20)
    );
}

#[test]
fn qemu_pid1_pets_a_short_watchdog_while_idle_and_disarms_it_to_reboot() {
    let dir = tempfile::tempdir().unwrap();
    let disk = image_with_kernel_args(dir.path(), "gantry.watchdog=10");
    let mut cfg = VmConfig::new(&disk);
    cfg.watchdog = true;
    // A reset, by the watchdog or by a reboot, ends QEMU.
    cfg.no_reboot = true;
    let mut vm = boot(&cfg);
    let armed = vm.wait_for(WATCHDOG_LINE, BOOT_TIMEOUT).unwrap();
    assert_eq!(field(&armed, "timeout_secs"), Some("10"), "{armed}");
    vm.wait_for(READY_MARKER, BOOT_TIMEOUT).unwrap();
    // Three and a half timeouts of an idle machine (no containers, no events): an event
    // loop that only woke for events would let the watchdog reset it.
    match vm.wait_for_any(
        &["gantry: booting slot", "reboot: "],
        Duration::from_secs(35),
    ) {
        Err(VmError::Timeout { .. }) => {}
        other => panic!("the machine reset while idle: {other:?}"),
    }
    // The shutdown's grace period (5 s) is half the timeout: its waits pet too.
    vm.ctrl_alt_del().unwrap();
    vm.wait_for(SHUTDOWN_MARKER, Duration::from_secs(60))
        .unwrap();
    let status = vm.wait_exit(Duration::from_secs(60)).unwrap();
    assert!(status.success(), "QEMU exited with {status}");
    let console = vm.console();
    assert!(
        console.contains("reboot: Restarting system"),
        "{}",
        vm.tail(20)
    );
    assert!(!console.contains(WATCHDOG_NOT_STOPPED), "{}", vm.tail(20));
}

#[test]
fn qemu_ctrl_alt_del_reboots_in_order() {
    let image = image();
    let mut cfg = VmConfig::new(&image.qcow2_image);
    // A reboot ends QEMU, so the test sees it happen.
    cfg.no_reboot = true;
    let mut vm = boot(&cfg);
    vm.wait_for(READY_MARKER, BOOT_TIMEOUT).unwrap();
    vm.ctrl_alt_del().unwrap();
    let requested = vm
        .wait_for(SHUTDOWN_REQUESTED, Duration::from_secs(60))
        .unwrap();
    assert_eq!(field(&requested, "signal"), Some("SIGINT"), "{requested}");
    let done = vm
        .wait_for(SHUTDOWN_MARKER, Duration::from_secs(60))
        .unwrap();
    assert_eq!(field(&done, "action"), Some("Reboot"), "{done}");
    let status = vm.wait_exit(Duration::from_secs(60)).unwrap();
    assert!(status.success(), "QEMU exited with {status}");
    assert!(
        vm.console().contains("reboot: Restarting system"),
        "{}",
        vm.tail(20)
    );
}

#[test]
fn qemu_boots_from_nvme() {
    let image = image();
    let mut cfg = VmConfig::new(&image.qcow2_image);
    cfg.disk_bus = DiskBus::Nvme;
    let mut vm = boot(&cfg);
    vm.wait_for(READY_MARKER, BOOT_TIMEOUT).unwrap();
}

#[test]
fn qemu_tampered_root_is_refused_by_dm_verity() {
    let image = image();
    let root_a = image.partition("ROOT-A").expect("image has ROOT-A");
    let dir = tempfile::tempdir().unwrap();
    let tampered = dir.path().join("tampered.img");
    // Byte 0 of an erofs image lies before its superblock and is never read by erofs:
    // only dm-verity can notice that it changed.
    copy_with_flipped_byte(&image.raw_image, &tampered, root_a.offset).unwrap();

    let mut cfg = VmConfig::new(&tampered);
    cfg.no_reboot = true;
    let mut vm = boot(&cfg);
    let (which, line) = vm
        .wait_for_any(&[READY_MARKER, "is corrupted"], BOOT_TIMEOUT)
        .unwrap();
    assert_eq!(which, 1, "a tampered root reached user space: {line}");
    assert!(line.contains("device-mapper: verity"), "{line}");
    // restart_on_corruption: the machine resets (and, with -no-reboot, QEMU exits).
    vm.wait_exit(Duration::from_secs(60)).unwrap();
    assert!(!vm.console().contains(READY_MARKER));
}
