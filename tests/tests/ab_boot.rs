//! GRUB's A/B choice from `grubenv`: each boot of a slot on trial spends one try, saved
//! before booting; a slot that cannot be loaded falls back to the good slot in the same
//! boot; once its tries are spent it is skipped. Needs QEMU and OVMF.

use std::path::Path;
use std::time::Duration;

use gantry_image_build::tool;
use gantry_init::{READY_MARKER, SHUTDOWN_MARKER};
use gantry_qemu::{Vm, VmConfig};
use gantry_tests::{field, image, BOOT_TIMEOUT};
use gantry_updater::grubenv::{GrubEnv, BLOCK_SIZE};
use gantry_updater::{Slot, SlotState};

const GRUBENV: &str = "::/EFI/gantry/grubenv";

fn esp_image(disk: &Path, esp_offset: u64) -> String {
    format!("{}@@{esp_offset}", disk.display())
}

#[test]
fn qemu_a_trial_slot_that_cannot_boot_falls_back_to_the_good_slot() {
    let image = image();
    let esp = image.partition("ESP").expect("image has an ESP");
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    std::fs::copy(&image.raw_image, &disk).unwrap();

    // Slot B is first in the order and on trial with 2 tries, but has no kernel.
    let mut env = GrubEnv::initial(Slot::A);
    env.set_order(&[Slot::B, Slot::A]);
    env.set_slot(
        Slot::B,
        SlotState {
            good: false,
            tries: 2,
        },
    );
    let env_file = dir.path().join("grubenv");
    std::fs::write(&env_file, env.to_block().unwrap()).unwrap();
    tool::MCOPY
        .cmd()
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-o")
        .arg("-i")
        .arg(esp_image(&disk, esp.offset))
        .arg(&env_file)
        .arg(GRUBENV)
        .run()
        .unwrap();

    let mut vm = Vm::start(&VmConfig::new(&disk)).unwrap();
    let step = Duration::from_secs(120);
    // Two boots spend B's two tries: GRUB picks B, cannot load it, and boots A instead.
    for attempt in 1..=2 {
        let (which, line) = vm
            .wait_for_any(
                &["gantry: cannot boot slot B", "gantry: booting slot A"],
                step,
            )
            .unwrap();
        assert_eq!(which, 0, "boot {attempt} did not try B first: {line}");
        vm.wait_for("gantry: booting slot A", step).unwrap();
        let ready = vm.wait_for(READY_MARKER, BOOT_TIMEOUT).unwrap();
        assert_eq!(field(&ready, "slot"), Some("A"), "{ready}");
        // An orderly reboot; QEMU starts the machine again.
        vm.ctrl_alt_del().unwrap();
        vm.wait_for(SHUTDOWN_MARKER, step).unwrap();
    }
    // Third boot: B has no tries left and was never good, so GRUB does not even try it.
    let (which, line) = vm
        .wait_for_any(
            &["gantry: cannot boot slot B", "gantry: booting slot A"],
            step,
        )
        .unwrap();
    assert_eq!(which, 1, "B was tried with no tries left: {line}");
    let ready = vm.wait_for(READY_MARKER, BOOT_TIMEOUT).unwrap();
    assert_eq!(field(&ready, "slot"), Some("A"), "{ready}");

    // Power off so the disk is quiet, then read back what GRUB saved.
    vm.power_button().unwrap();
    vm.wait_for(SHUTDOWN_MARKER, Duration::from_secs(60))
        .unwrap();
    vm.wait_exit(Duration::from_secs(60)).unwrap();
    let written = dir.path().join("after.img");
    tool::QEMU_IMG
        .cmd()
        .args(["convert", "-f", "qcow2", "-O", "raw"])
        .arg(vm.overlay_path())
        .arg(&written)
        .run()
        .unwrap();
    let saved = dir.path().join("grubenv.after");
    tool::MCOPY
        .cmd()
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(esp_image(&written, esp.offset))
        .arg(GRUBENV)
        .arg(&saved)
        .run()
        .unwrap();
    let block = std::fs::read(&saved).unwrap();
    assert_eq!(block.len(), BLOCK_SIZE);
    let after = GrubEnv::parse(&block).unwrap();
    assert_eq!(after.slot(Slot::B).unwrap(), SlotState::EMPTY);
    assert_eq!(after.slot(Slot::A).unwrap(), SlotState::GOOD);
}
