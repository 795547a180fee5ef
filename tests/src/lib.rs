//! Harness for Gantry's end-to-end tests: builds the image once per test process and boots
//! it in QEMU. The tests themselves are in `tests/`.
//!
//! Every test that boots a VM is named `qemu_…`: it needs `qemu-system-x86_64` and OVMF, but
//! not root or KVM (it runs under TCG). Building the image needs the tools that
//! `gantry-image-build` checks for, and builds the kernel the first time (minutes; cached).

pub mod cluster;
pub mod demo;
pub mod esp;
pub mod release;
pub mod seed;

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use gantry_image_build::{build, BuildManifest, BuildOptions};

/// How long a boot may take to reach the ready marker under TCG on a busy 2-core machine
/// (a quiet one takes under 10 s).
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

/// The release image, built once per test process into `target/gantry`.
pub fn image() -> &'static BuildManifest {
    static IMAGE: OnceLock<BuildManifest> = OnceLock::new();
    IMAGE.get_or_init(|| build_into(&BuildOptions::default_for_workspace()))
}

/// Builds with the shipped definition into `opts.out_dir`, panicking with the whole error.
pub fn build_into(opts: &BuildOptions) -> BuildManifest {
    match build(opts, &|line| eprintln!("image-build: {line}")) {
        Ok(m) => m,
        Err(e) => panic!("image build failed: {e}"),
    }
}

/// An image built from the shipped definition as changed by `edit` (its text in, the
/// variant's out), into `target/gantry-variants/<name>`: another version to update to,
/// or a broken release to roll back from. Shares the kernel cache and the development
/// signing key with [`image`], so the release image trusts its bundle.
pub fn build_variant(name: &str, edit: impl FnOnce(String) -> String) -> BuildManifest {
    let mut opts = BuildOptions::default_for_workspace();
    let text = std::fs::read_to_string(&opts.definition).expect("the shipped definition");
    let out = opts.out_dir.with_file_name("gantry-variants").join(name);
    std::fs::create_dir_all(&out).expect("variant directory");
    let definition = out.join("gantry.toml");
    std::fs::write(&definition, edit(text)).expect("variant definition");
    opts.definition = definition;
    opts.out_dir = out;
    build_into(&opts)
}

/// Copies `image` to `dest` with one byte at `offset` inverted.
pub fn copy_with_flipped_byte(image: &Path, dest: &Path, offset: u64) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom, Write};
    std::fs::copy(image, dest)?;
    let mut f = std::fs::File::options().read(true).write(true).open(dest)?;
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(offset))?;
    f.read_exact(&mut b)?;
    f.seek(SeekFrom::Start(offset))?;
    f.write_all(&[!b[0]])?;
    f.sync_all()
}

/// The `key=value` field of a log line (values may be quoted).
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {key}="))? + key.len() + 2;
    let rest = &line[start..];
    let end = rest.find(' ').unwrap_or(rest.len());
    Some(rest[..end].trim_matches('"'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_of_a_log_line() {
        let line = "[ 1.4]  INFO gantry-init: ready version=\"0.1.0\" slot=\"A\" boot_ms=1416";
        assert_eq!(field(line, "version"), Some("0.1.0"));
        assert_eq!(field(line, "boot_ms"), Some("1416"));
        assert_eq!(field(line, "nope"), None);
    }

    #[test]
    fn flips_exactly_one_byte() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::write(&a, [1u8, 2, 3]).unwrap();
        copy_with_flipped_byte(&a, &b, 1).unwrap();
        assert_eq!(std::fs::read(&b).unwrap(), [1u8, !2, 3]);
        assert_eq!(std::fs::read(&a).unwrap(), [1u8, 2, 3]);
    }
}
