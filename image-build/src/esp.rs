//! The EFI system partition: GRUB as `EFI/BOOT/BOOTX64.EFI`, the boot script, `grubenv`,
//! and slot A's kernel and command line. Made with `mkfs.vfat` and mtools on a plain file,
//! with a fixed volume id and every timestamp at the build's epoch. Slot A's files are
//! named and written as the updater's installer names and writes a slot's
//! ([`gantry_boot::esp`]): `A/vmlinuz-<16 hex of its sha256>` and `A/boot.cfg`.

use std::path::{Path, PathBuf};

use gantry_boot::esp::{kernel_file_name, slot_config, BOOT_CFG, GRUBENV};
use gantry_boot::grubenv::GrubEnv;
use gantry_boot::Slot;

use crate::fsio::{AtPath, PathError};
use crate::grub;
use crate::ids::Sha256;
use crate::tool::{self, Invocation, ToolError};

const GRUB_MODULE_DIR: &str = "/usr/lib/grub/x86_64-efi";

#[derive(Debug, thiserror::Error)]
pub enum EspError {
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error(transparent)]
    Io(#[from] PathError),
    #[error("grubenv: {0}")]
    Grubenv(#[from] gantry_boot::grubenv::GrubenvError),
}

/// What goes on the ESP.
#[derive(Debug)]
pub struct EspContents<'a> {
    pub kernel: &'a Path,
    pub slot_a_args: &'a [String],
    pub version: &'a str,
    pub volume_id: &'a str,
    pub size_mib: u64,
    pub epoch: u64,
}

/// Builds the ESP image at `out`; `work` holds intermediate files.
pub fn build(c: &EspContents<'_>, work: &Path, out: &Path) -> Result<(), EspError> {
    std::fs::create_dir_all(work).at(work)?;
    let early = work.join("early.cfg");
    std::fs::write(&early, grub::early_config(c.volume_id)).at(&early)?;
    // The memdisk: a tar holding only the boot script, with fixed owner, mode and time.
    let memdisk_dir = work.join("memdisk");
    std::fs::create_dir_all(&memdisk_dir).at(&memdisk_dir)?;
    write(&memdisk_dir, "grub.cfg", grub::boot_script().as_bytes())?;
    let memdisk = work.join("memdisk.tar");
    tool::TAR
        .cmd()
        .arg("--format=ustar")
        .arg(format!("--mtime=@{}", c.epoch))
        .args([
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--mode=0644",
            "--sort=name",
        ])
        .arg("-C")
        .arg(&memdisk_dir)
        .arg("-cf")
        .arg(&memdisk)
        .arg("grub.cfg")
        .run()?;
    let efi = work.join("BOOTX64.EFI");
    tool::GRUB_MKIMAGE
        .cmd()
        .arg("-O")
        .arg("x86_64-efi")
        .arg("-d")
        .arg(GRUB_MODULE_DIR)
        .arg("-p")
        .arg(grub::PREFIX)
        .arg("-c")
        .arg(&early)
        .arg("-m")
        .arg(&memdisk)
        .arg("-o")
        .arg(&efi)
        .args(grub::MODULES)
        .run()?;
    let kernel_file = kernel_file_name(&Sha256::of_file(c.kernel).at(c.kernel)?.0);
    let slot_a = format!("{}/{}", grub::PREFIX, Slot::A);
    let files: Vec<(PathBuf, String)> = vec![
        (efi, "/EFI/BOOT/BOOTX64.EFI".into()),
        (
            write(work, GRUBENV, &GrubEnv::initial(Slot::A).to_block()?)?,
            format!("{}/{GRUBENV}", grub::PREFIX),
        ),
        (c.kernel.to_owned(), format!("{slot_a}/{kernel_file}")),
        (
            write(
                work,
                "boot-A.cfg",
                slot_config(Slot::A, c.version, &kernel_file, c.slot_a_args).as_bytes(),
            )?,
            format!("{slot_a}/{BOOT_CFG}"),
        ),
    ];

    let _ = std::fs::remove_file(out);
    with_epoch(tool::MKFS_VFAT.cmd(), c.epoch)
        .arg("--invariant")
        .arg("-C")
        .arg("-F")
        .arg("32")
        .arg("-i")
        .arg(c.volume_id)
        .arg("-n")
        .arg("GANTRY-ESP")
        .arg(out)
        .arg((c.size_mib * 1024).to_string())
        .run()?;
    let dirs = [
        "/EFI",
        "/EFI/BOOT",
        grub::PREFIX,
        &format!("{}/A", grub::PREFIX),
        &format!("{}/B", grub::PREFIX),
    ];
    with_epoch(tool::MMD.cmd(), c.epoch)
        .arg("-i")
        .arg(out)
        .args(dirs.iter().map(|d| format!("::{d}")))
        .run()?;
    let mtime = std::time::UNIX_EPOCH + std::time::Duration::from_secs(c.epoch);
    for (src, dest) in files {
        // mcopy -m keeps the source's mtime: make it the epoch (on a copy, not the cache).
        let staged = work.join("stage.tmp");
        std::fs::copy(&src, &staged).at(&src)?;
        std::fs::File::options()
            .write(true)
            .open(&staged)
            .and_then(|f| f.set_modified(mtime))
            .at(&staged)?;
        with_epoch(tool::MCOPY.cmd(), c.epoch)
            .arg("-m")
            .arg("-i")
            .arg(out)
            .arg(&staged)
            .arg(format!("::{dest}"))
            .run()?;
    }
    Ok(())
}

fn with_epoch(cmd: Invocation, epoch: u64) -> Invocation {
    cmd.env("SOURCE_DATE_EPOCH", epoch.to_string())
        .env("MTOOLS_SKIP_CHECK", "1")
}

fn write(dir: &Path, name: &str, data: &[u8]) -> Result<PathBuf, EspError> {
    let p = dir.join(name);
    std::fs::write(&p, data).at(&p)?;
    Ok(p)
}
