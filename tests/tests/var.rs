//! `/var` on the DATA partition in the real image: grown to an enlarged disk on first boot,
//! kept across an orderly reboot, and mountable again after a power cut. PID 1 leaves the
//! evidence on the console (there is no shell in the image): the partition grow, the
//! mount line with the file system's size and whether the last unmount was clean, and
//! the boot counter it keeps in `/var/lib/gantry/boot-count`. Needs QEMU and OVMF.

use std::time::Duration;

use gantry_image_build::tool;
use gantry_init::var::{BOOT_COUNT_LINE, DATA_GROWN, VAR_MOUNTED};
use gantry_init::{READY_MARKER, SHUTDOWN_MARKER};
use gantry_qemu::{DiskBus, Vm, VmConfig};
use gantry_tests::{field, image, BOOT_TIMEOUT};

const GIB: u64 = 1 << 30;

fn number(line: &str, key: &str) -> u64 {
    field(line, key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no number {key}= in {line}"))
}

/// Waits for the mount line; fails if the partition is grown first.
fn mounted_without_growing(vm: &mut Vm) -> String {
    let (which, line) = vm
        .wait_for_any(&[DATA_GROWN, VAR_MOUNTED], BOOT_TIMEOUT)
        .expect("/var is mounted");
    assert_eq!(which, 1, "grew again: {line}");
    line
}

fn boot_count(vm: &mut Vm) -> u64 {
    let line = vm
        .wait_for(BOOT_COUNT_LINE, Duration::from_secs(60))
        .expect("the boot is counted");
    assert_eq!(field(&line, "persistent"), Some("true"), "{line}");
    number(&line, "count")
}

#[test]
fn qemu_var_grows_to_an_enlarged_disk_and_survives_a_power_cut() {
    let image = image();
    let data = image.partition("DATA").expect("image has DATA");
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.qcow2");
    std::fs::copy(&image.qcow2_image, &disk).unwrap();
    tool::QEMU_IMG
        .cmd()
        .args(["resize", "-q", "-f", "qcow2"])
        .arg(&disk)
        .arg("+1G")
        .run()
        .unwrap();
    let mut cfg = VmConfig::new(&disk);
    cfg.overlay = false;
    // The image leaves 1 MiB after DATA; the grown table leaves the backup GPT's 33
    // blocks, so DATA gains exactly the added GiB.
    let grown = data.size + GIB;

    let mut vm = Vm::start(&cfg).unwrap();
    let line = vm.wait_for(DATA_GROWN, BOOT_TIMEOUT).unwrap();
    assert_eq!(field(&line, "device"), Some("/dev/vda4"), "{line}");
    assert_eq!(number(&line, "from_bytes"), data.size, "{line}");
    assert_eq!(number(&line, "to_bytes"), grown, "{line}");
    eprintln!("partition grown in {} ms", number(&line, "ms"));
    let line = vm.wait_for(VAR_MOUNTED, Duration::from_secs(120)).unwrap();
    assert_eq!(number(&line, "size_bytes"), grown, "{line}");
    assert_eq!(number(&line, "partition_bytes"), grown, "{line}");
    assert_eq!(field(&line, "grown"), Some("true"), "{line}");
    assert_eq!(number(&line, "grown_from"), data.size, "{line}");
    assert_eq!(field(&line, "clean"), Some("true"), "{line}");
    eprintln!(
        "/var found, grown and mounted in {} ms",
        number(&line, "ms")
    );
    assert_eq!(boot_count(&mut vm), 1);
    vm.wait_for(READY_MARKER, BOOT_TIMEOUT).unwrap();
    // Power cut: QEMU stops at once, with the network's lease writes and the resize's
    // journal work in flight. (QEMU may close the socket before it answers.)
    let _ = vm.qmp("quit", None);
    vm.wait_exit(Duration::from_secs(60)).unwrap();
    drop(vm);

    let mut vm = Vm::start(&cfg).unwrap();
    let line = mounted_without_growing(&mut vm);
    assert_eq!(field(&line, "clean"), Some("false"), "{line}");
    assert_eq!(field(&line, "grown"), Some("false"), "{line}");
    assert_eq!(number(&line, "size_bytes"), grown, "{line}");
    assert_eq!(boot_count(&mut vm), 2);
    vm.wait_for(READY_MARKER, BOOT_TIMEOUT).unwrap();
}

#[test]
fn qemu_var_keeps_its_files_across_an_orderly_reboot_on_nvme() {
    let image = image();
    let data = image.partition("DATA").expect("image has DATA");
    let mut cfg = VmConfig::new(&image.qcow2_image);
    cfg.disk_bus = DiskBus::Nvme;
    let mut vm = Vm::start(&cfg).unwrap();
    // The stock image: DATA already ends where it may, nothing to grow.
    let line = mounted_without_growing(&mut vm);
    assert_eq!(field(&line, "device"), Some("/dev/nvme0n1p4"), "{line}");
    assert_eq!(number(&line, "size_bytes"), data.size, "{line}");
    assert_eq!(field(&line, "clean"), Some("true"), "{line}");
    assert_eq!(boot_count(&mut vm), 1);
    vm.wait_for(READY_MARKER, BOOT_TIMEOUT).unwrap();

    // An orderly reboot; QEMU starts the machine again on the same overlay.
    vm.ctrl_alt_del().unwrap();
    vm.wait_for(SHUTDOWN_MARKER, Duration::from_secs(120))
        .unwrap();
    let line = mounted_without_growing(&mut vm);
    assert_eq!(
        field(&line, "clean"),
        Some("true"),
        "shutdown left /var's journal dirty: {line}"
    );
    assert_eq!(boot_count(&mut vm), 2);
    vm.wait_for(READY_MARKER, BOOT_TIMEOUT).unwrap();
    let console = vm.console().to_owned();
    assert!(
        !console
            .lines()
            .any(|l| l.contains("cannot unmount") && l.contains("/var")),
        "{console}"
    );
}
