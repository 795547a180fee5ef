//! Test images whose ESP differs from the release's: slot A booted with more kernel
//! parameters (`gantry.imds=`, `gantry.watchdog=`), edited with mtools on a copy.

use std::path::{Path, PathBuf};

use gantry_image_build::tool;

use crate::image;

/// A copy of the raw image in `dir` whose slot A boots with `args` added to its kernel
/// command line (the command line is `A/boot.cfg` on the ESP).
pub fn image_with_kernel_args(dir: &Path, args: &str) -> PathBuf {
    let image = image();
    let esp = image.partition("ESP").expect("image has an ESP");
    let disk = dir.join("disk.img");
    std::fs::copy(&image.raw_image, &disk).expect("copy the image");
    let on_esp = format!("{}@@{}", disk.display(), esp.offset);
    let local = dir.join("boot.cfg");
    let mcopy = || tool::MCOPY.cmd().env("MTOOLS_SKIP_CHECK", "1");
    mcopy()
        .arg("-i")
        .arg(&on_esp)
        .arg("::/EFI/gantry/A/boot.cfg")
        .arg(&local)
        .run()
        .expect("mcopy boot.cfg off the ESP");
    let cfg = std::fs::read_to_string(&local).expect("read boot.cfg");
    let cfg: String = cfg
        .lines()
        .map(|l| {
            if l.starts_with("linux ") {
                format!("{l} {args}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    assert!(cfg.contains(args), "no linux line in boot.cfg: {cfg}");
    std::fs::write(&local, cfg).expect("write boot.cfg");
    mcopy()
        .arg("-o")
        .arg("-i")
        .arg(&on_esp)
        .arg(&local)
        .arg("::/EFI/gantry/A/boot.cfg")
        .run()
        .expect("mcopy boot.cfg onto the ESP");
    disk
}
