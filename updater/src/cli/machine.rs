//! This machine: installing a bundle, its slots' state.

use super::*;

pub(super) fn install(file: &Path, tries: u8) -> Result<()> {
    readable_file("bundle", file)?;
    let installed = here::install_file(file, tries, &mut |step| {
        eprintln!("gantry-update: {}", step_line(step));
    })?;
    print!("{}", installed_report(&installed, tries));
    Ok(())
}

pub(super) fn status() -> Result<()> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").map_err(|source| CliError::Io {
        action: "read",
        path: "/proc/cmdline".into(),
        source,
    })?;
    let booted = here::booted_slot(&cmdline).ok_or(here::HereError::NoSlot)?;
    let release = Release::read(Path::new(OS_RELEASE))?;
    let env = Esp::new(MOUNTED_DIR).read_env()?;
    let mut grubenv = serde_json::Map::new();
    grubenv.insert("order".into(), serde_json::to_value(env.order()?)?);
    for slot in Slot::ALL {
        let s = env.slot(slot)?;
        grubenv.insert(
            slot.to_string(),
            serde_json::json!({ "good": s.good, "tries": s.tries }),
        );
    }
    let state = UpdateState::load(Path::new(STATE_DIR))?;
    let out = serde_json::json!({
        "booted": booted,
        "version": release.version,
        "rollback_index": release.rollback_index,
        "board": release.board,
        "grubenv": grubenv,
        "pending": state.pending,
        "failed": state.failed,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

pub(super) fn step_line(step: Step) -> String {
    match step {
        Step::Verified => "bundle verified (signature, rules, every payload)".into(),
        Step::SlotCleared => "target slot taken out of the boot order".into(),
        Step::RootWritten { bytes, total } => {
            format!(
                "root: {} of {} MiB written",
                bytes >> 20,
                total.div_ceil(1 << 20)
            )
        }
        Step::RootVerified => "root read back from the slot and verified".into(),
        Step::BootFilesWritten => "kernel and command line written to the ESP".into(),
        Step::Switched => "grubenv switched to the new slot".into(),
    }
}

pub(super) fn installed_report(i: &Installed, tries: u8) -> String {
    let secs = |d: Duration| format!("{:.3}s", d.as_secs_f64());
    format!(
        "installed {} (rollback_index={}) into slot {}: {} bytes of root\n\
         verify {} stream {} read_back {} total {}\n\
         reboot to try it: slot {} gets {tries} boot(s) to pass the health gate\n",
        i.version,
        i.rollback_index,
        i.slot,
        i.root_bytes,
        secs(i.verify),
        secs(i.stream),
        secs(i.read_back),
        secs(i.total),
        i.slot,
    )
}
