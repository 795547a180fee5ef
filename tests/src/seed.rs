//! Config drives for the end-to-end tests: a FAT volume labelled `CIDATA` (cloud-init's
//! NoCloud seed), made as an operator would make one (`mkfs.fat`, `mmd`, `mcopy`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use gantry_image_build::tool;

/// Makes `dir/seed.img`, a FAT volume of `size_kib` labelled CIDATA holding `files`: each
/// `(name on the drive, file on the host)`, where the name may be in a directory
/// (`images/web.tar`). Panics on failure: this is test code.
pub fn cidata_drive(dir: &Path, size_kib: u32, files: &[(&str, &Path)]) -> PathBuf {
    let img = dir.join("seed.img");
    tool::MKFS_VFAT
        .cmd()
        .args(["-n", "CIDATA", "-C"])
        .arg(&img)
        .arg(size_kib.to_string())
        .run()
        .expect("mkfs.fat (dosfstools)");
    let mut made = BTreeSet::new();
    for (name, from) in files {
        if let Some((parent, _)) = name.rsplit_once('/') {
            if made.insert(parent.to_owned()) {
                tool::MMD
                    .cmd()
                    .env("MTOOLS_SKIP_CHECK", "1")
                    .arg("-i")
                    .arg(&img)
                    .arg(format!("::/{parent}"))
                    .run()
                    .expect("mmd a directory on the drive");
            }
        }
        tool::MCOPY
            .cmd()
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(&img)
            .arg(from)
            .arg(format!("::/{name}"))
            .run()
            .expect("mcopy a file onto the drive");
    }
    img
}
