//! The EFI system partition as the updater sees it: the Gantry directory on the ESP
//! ([`PREFIX`] there, GRUB's `$prefix`; [`MOUNTED_DIR`] in the running image), holding
//!
//! - `grubenv`, the environment block ([`crate::grubenv`]) that picks the slot;
//! - per slot, `<slot>/boot.cfg` (the `linux` line: kernel and command line, which the
//!   boot script `source`s) and the kernel it names, `<slot>/vmlinuz-<16 hex>`.
//!
//! The image build writes slot A's files with [`slot_config`] and [`kernel_file_name`];
//! the installer writes the inactive slot's with [`Esp::install_slot_boot`], so both agree
//! byte for byte.
//!
//! Crash safety. The ESP is FAT: no journal, so every file is written under a temporary
//! name (`<name>.new`), fsynced, renamed over its final name, fsynced again under that
//! name (vfat writes the moved directory entry with the inode), and the directory fsynced.
//! PID 1 also mounts the ESP with `dirsync`. A rename over an existing name on Linux's vfat
//! rewrites that name's one directory entry in place, so a reader sees the old file or the
//! new one. A kernel is named after its digest, so the slot's old `boot.cfg` keeps pointing
//! at a complete old kernel until the new `boot.cfg` replaces it; only then are the old
//! kernels removed. A power cut at any step therefore leaves a `boot.cfg` whose kernel is
//! whole. What an interrupted attempt leaves behind (`*.new`, kernels no `boot.cfg` names)
//! costs only space, and the next install of the slot removes it. Installing the same
//! kernel again is harmless: it replaces a file with identical bytes.
//!
//! Only the slot's own directory is touched by an install, never the other slot's or
//! `grubenv`: switching slots is a separate [`Esp::write_env`], after the install.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use ring::digest::{Context, SHA256};

use crate::grubenv::{GrubEnv, GrubenvError};
use crate::hex;
use crate::Slot;

/// Where Gantry's boot files live on the ESP (GRUB's `$prefix`).
pub const PREFIX: &str = "/EFI/gantry";
/// [`PREFIX`] as the running image mounts the ESP.
pub const MOUNTED_DIR: &str = "/run/gantry/esp/EFI/gantry";
/// The environment block's file name in [`PREFIX`].
pub const GRUBENV: &str = "grubenv";
/// A slot's kernel and command line, in `<slot>/`.
pub const BOOT_CFG: &str = "boot.cfg";
const KERNEL_STEM: &str = "vmlinuz";
const NEW_SUFFIX: &str = ".new";
/// How much of the kernel's SHA-256 its file name carries: 64 bits tell kernels apart.
const NAME_DIGEST_BYTES: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum EspError {
    #[error("{path} is missing")]
    EnvMissing { path: PathBuf },
    #[error("{path} is corrupt: {source}")]
    EnvCorrupt { path: PathBuf, source: GrubenvError },
    #[error("cannot encode the environment block for {path}: {source}")]
    EnvEncode { path: PathBuf, source: GrubenvError },
    #[error("kernel digest {value:?} is not 64 lower-case hex digits")]
    DigestFormat { value: String },
    #[error("kernel parameter {value:?} is empty or holds a control character")]
    Parameter { value: String },
    #[error("cannot read the kernel for slot {slot}: {source}")]
    KernelRead { slot: Slot, source: io::Error },
    #[error("{path}: kernel sha256 is {actual}, not {expected}")]
    KernelDigest {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

/// What [`Esp::install_slot_boot`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotBoot {
    /// The kernel's file name in the slot's directory, as `boot.cfg` names it.
    pub kernel_file: String,
    pub kernel_bytes: u64,
}

/// The Gantry directory of a mounted ESP.
#[derive(Debug, Clone)]
pub struct Esp {
    dir: PathBuf,
}

impl Esp {
    /// The ESP whose Gantry directory ([`PREFIX`] on it) is `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn env_path(&self) -> PathBuf {
        self.dir.join(GRUBENV)
    }

    /// Reads `grubenv`. A missing or malformed block is an error: the boot state is
    /// unknown, so nothing may be decided from it.
    pub fn read_env(&self) -> Result<GrubEnv, EspError> {
        let path = self.env_path();
        let block = match fs::read(&path) {
            Ok(block) => block,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(EspError::EnvMissing { path })
            }
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        GrubEnv::parse(&block).map_err(|source| EspError::EnvCorrupt { path, source })
    }

    /// Replaces `grubenv` with `env` as one 1024-byte block, through `grubenv.new`.
    pub fn write_env(&self, env: &GrubEnv) -> Result<(), EspError> {
        let block = env.to_block().map_err(|source| EspError::EnvEncode {
            path: self.env_path(),
            source,
        })?;
        replace_file(&self.dir, GRUBENV, |file, tmp| {
            file.write_all(&block).map_err(io_err("write", tmp))
        })
    }

    /// Installs `slot`'s kernel and command line: the kernel read from `kernel` goes to
    /// `<slot>/vmlinuz-<16 hex of its sha256>` and must match `kernel_sha256_hex` (else it
    /// is removed and nothing else changes); then `<slot>/boot.cfg` is replaced by one that
    /// boots it with `args`; then the slot's other `vmlinuz*` files are removed. Each step
    /// is durable before the next (see the module docs).
    pub fn install_slot_boot(
        &self,
        slot: Slot,
        kernel: &mut dyn Read,
        kernel_sha256_hex: &str,
        args: &[String],
        version: &str,
    ) -> Result<SlotBoot, EspError> {
        let expected = parse_sha256(kernel_sha256_hex)?;
        if let Some(bad) = args
            .iter()
            .find(|a| a.is_empty() || a.chars().any(char::is_control))
        {
            return Err(EspError::Parameter { value: bad.clone() });
        }
        let slot_dir = self.dir.join(slot.as_str());
        if !slot_dir.is_dir() {
            fs::create_dir(&slot_dir).map_err(io_err("create", &slot_dir))?;
            sync_dir(&self.dir)?;
        }
        // Leftovers of an interrupted install: free their space before copying.
        for name in list(&slot_dir)? {
            if name.ends_with(NEW_SUFFIX) {
                remove(&slot_dir.join(name))?;
            }
        }

        let kernel_file = kernel_file_name(&expected);
        let kernel_bytes = replace_file(&slot_dir, &kernel_file, |file, tmp| {
            let (bytes, actual) = copy_hashed(kernel, file, tmp, slot)?;
            if actual != expected {
                return Err(EspError::KernelDigest {
                    path: tmp.to_owned(),
                    expected: hex::encode(&expected),
                    actual: hex::encode(&actual),
                });
            }
            Ok(bytes)
        })?;

        let config = slot_config(slot, version, &kernel_file, args);
        replace_file(&slot_dir, BOOT_CFG, |file, tmp| {
            file.write_all(config.as_bytes())
                .map_err(io_err("write", tmp))
        })?;

        let mut removed = false;
        for name in list(&slot_dir)? {
            if name.starts_with(KERNEL_STEM) && name != kernel_file {
                remove(&slot_dir.join(name))?;
                removed = true;
            }
        }
        if removed {
            sync_dir(&slot_dir)?;
        }
        Ok(SlotBoot {
            kernel_file,
            kernel_bytes,
        })
    }
}

/// The file name of the kernel whose SHA-256 is `sha256`: `vmlinuz-` and the first 16 hex
/// digits. A new kernel never overwrites the one the current `boot.cfg` names.
pub fn kernel_file_name(sha256: &[u8; 32]) -> String {
    format!(
        "{KERNEL_STEM}-{}",
        hex::encode(&sha256[..NAME_DIGEST_BYTES])
    )
}

/// A slot's `boot.cfg`: its kernel (`kernel_file` in the slot's directory) and command
/// line. Each word with anything but `[A-Za-z0-9_.,=:/+-]` in it is single-quoted, so
/// GRUB passes it on to the kernel as one word and expands nothing in it.
pub fn slot_config(slot: Slot, version: &str, kernel_file: &str, args: &[String]) -> String {
    // A newline in the comment would start a GRUB command.
    let version: String = version
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    let words: Vec<String> = std::iter::once(format!("{PREFIX}/{slot}/{kernel_file}"))
        .chain(args.iter().cloned())
        .map(|w| grub_quote(&w))
        .collect();
    format!(
        "# Slot {slot}: Gantry {version}.\nlinux {}\n",
        words.join(" ")
    )
}

/// One GRUB word: as is when it is plain, else single-quoted with `'` spelled `'\''`.
pub fn grub_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.,=:/+-".contains(&b))
    {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Writes `dir/name` through `dir/name.new`: `fill` writes the content, which is fsynced
/// and renamed into place, and `dir` fsynced. On error the temporary file is removed and
/// `dir/name` is as it was.
fn replace_file<T>(
    dir: &Path,
    name: &str,
    fill: impl FnOnce(&mut File, &Path) -> Result<T, EspError>,
) -> Result<T, EspError> {
    let tmp = dir.join(format!("{name}{NEW_SUFFIX}"));
    let path = dir.join(name);
    let written = File::create(&tmp)
        .map_err(io_err("create", &tmp))
        .and_then(|mut file| {
            let value = fill(&mut file, &tmp)?;
            file.sync_all().map_err(io_err("fsync", &tmp))?;
            Ok(value)
        })
        .and_then(|value| {
            fs::rename(&tmp, &path).map_err(io_err("rename into place", &tmp))?;
            // vfat moves the file to the new name's directory entry in its in-memory
            // inode; fsyncing the directory alone does not write that entry. Without
            // this, a power cut after the rename left `grubenv`'s entry pointing at the
            // freed clusters of the old file (found by the update power-cut test).
            File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(io_err("fsync", &path))?;
            Ok(value)
        });
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    let value = written?;
    sync_dir(dir)?;
    Ok(value)
}

fn copy_hashed(
    from: &mut dyn Read,
    to: &mut File,
    to_path: &Path,
    slot: Slot,
) -> Result<(u64, [u8; 32]), EspError> {
    let mut ctx = Context::new(&SHA256);
    let mut buf = vec![0u8; 1 << 16];
    let mut bytes = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => return Err(EspError::KernelRead { slot, source }),
        };
        let chunk = buf.get(..n).unwrap_or_default();
        ctx.update(chunk);
        to.write_all(chunk).map_err(io_err("write", to_path))?;
        bytes += n as u64;
    }
    let mut digest = [0u8; 32];
    digest.copy_from_slice(ctx.finish().as_ref());
    Ok((bytes, digest))
}

fn parse_sha256(value: &str) -> Result<[u8; 32], EspError> {
    Some(value)
        .filter(|v| hex::is_sha256(v))
        .and_then(hex::decode)
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| EspError::DigestFormat {
            value: value.to_owned(),
        })
}

fn sync_dir(dir: &Path) -> Result<(), EspError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync", dir))
}

fn remove(path: &Path) -> Result<(), EspError> {
    fs::remove_file(path).map_err(io_err("remove", path))
}

/// The names in `dir`, sorted.
fn list(dir: &Path) -> Result<Vec<String>, EspError> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("list", dir))? {
        let entry = entry.map_err(io_err("list", dir))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> EspError {
    let path = path.to_owned();
    move |source| EspError::Io {
        action,
        path,
        source,
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;
    use crate::SlotState;

    fn sha256(data: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(ring::digest::digest(&SHA256, data).as_ref());
        out
    }

    fn names(dir: &Path) -> Vec<String> {
        list(dir).unwrap()
    }

    fn args() -> Vec<String> {
        vec!["ro".into(), "dm-mod.create=v,,,ro,0 8 verity".into()]
    }

    /// An ESP directory with grubenv and both slot directories, as the image has them.
    fn esp() -> (tempfile::TempDir, Esp) {
        let dir = tempfile::tempdir().unwrap();
        let esp = Esp::new(dir.path());
        esp.write_env(&GrubEnv::initial(Slot::A)).unwrap();
        for slot in Slot::ALL {
            fs::create_dir(dir.path().join(slot.as_str())).unwrap();
        }
        (dir, esp)
    }

    fn install(esp: &Esp, slot: Slot, kernel: &[u8]) -> Result<SlotBoot, EspError> {
        esp.install_slot_boot(
            slot,
            &mut &kernel[..],
            &hex::encode(&sha256(kernel)),
            &args(),
            "1.0",
        )
    }

    #[test]
    fn slot_config_names_the_kernel_and_quotes_parameters_with_spaces() {
        let cfg = slot_config(
            Slot::B,
            "1.2",
            "vmlinuz-0123456789abcdef",
            &["ro".into(), "dm-mod.create=v,,,ro,0 8 verity".into()],
        );
        assert_eq!(
            cfg,
            "# Slot B: Gantry 1.2.\n\
             linux /EFI/gantry/B/vmlinuz-0123456789abcdef ro 'dm-mod.create=v,,,ro,0 8 verity'\n"
        );
        assert_eq!(grub_quote("a;reboot"), "'a;reboot'");
        assert_eq!(grub_quote("it's $x"), r"'it'\''s $x'");
        assert_eq!(grub_quote(""), "''");
        // A version cannot smuggle a command into the script.
        let cfg = slot_config(Slot::A, "1\nreboot", "vmlinuz-x", &[]);
        assert_eq!(cfg.lines().count(), 2, "{cfg}");
    }

    #[test]
    fn kernel_names_carry_the_first_16_hex_digits_of_the_digest() {
        let digest = sha256(b"kernel");
        let name = kernel_file_name(&digest);
        assert_eq!(name, format!("vmlinuz-{}", &hex::encode(&digest)[..16]));
        assert_eq!(parse_sha256(&hex::encode(&digest)).unwrap(), digest);
        let upper = hex::encode(&digest).to_uppercase();
        for bad in ["", "abc", &"g".repeat(64), &"é".repeat(32), &upper] {
            assert!(
                matches!(parse_sha256(bad), Err(EspError::DigestFormat { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn reads_a_block_made_by_grub_editenv_and_grub_editenv_reads_ours() {
        let dir = tempfile::tempdir().unwrap();
        let esp = Esp::new(dir.path());
        let file = esp.env_path();
        let editenv = |args: &[&str]| {
            let out = Command::new("grub-editenv")
                .arg(&file)
                .args(args)
                .output()
                .expect("grub-editenv (Debian grub-common) runs");
            assert!(out.status.success(), "grub-editenv {args:?}: {out:?}");
            String::from_utf8(out.stdout).unwrap()
        };
        editenv(&["create"]);
        editenv(&[
            "set",
            "gantry_order=B A",
            "B_tries=2",
            "B_good=0",
            "A_good=1",
        ]);
        let env = esp.read_env().unwrap();
        assert_eq!(env.order().unwrap(), vec![Slot::B, Slot::A]);
        assert_eq!(
            env.slot(Slot::B).unwrap(),
            SlotState {
                good: false,
                tries: 2
            }
        );
        assert_eq!(env.slot(Slot::A).unwrap(), SlotState::GOOD);

        let mut next = env.clone();
        next.set_slot(Slot::B, SlotState::GOOD);
        esp.write_env(&next).unwrap();
        assert_eq!(fs::metadata(&file).unwrap().len(), 1024);
        let listed = editenv(&["list"]);
        assert!(listed.contains("B_good=1\n"), "{listed}");
        assert!(listed.contains("gantry_order=B A\n"), "{listed}");
        assert_eq!(names(dir.path()), ["grubenv"]);
    }

    #[test]
    fn a_missing_or_corrupt_grubenv_is_an_error_that_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let esp = Esp::new(dir.path());
        let err = esp.read_env().unwrap_err();
        assert!(
            matches!(&err, EspError::EnvMissing { path } if *path == esp.env_path()),
            "{err}"
        );
        fs::write(esp.env_path(), [b'#'; 100]).unwrap();
        let err = esp.read_env().unwrap_err();
        assert!(
            matches!(
                &err,
                EspError::EnvCorrupt {
                    source: GrubenvError::Size(100),
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("grubenv"), "{err}");
    }

    #[test]
    fn installs_a_kernel_under_a_new_name_then_points_boot_cfg_at_it() {
        let (dir, esp) = esp();
        let first = install(&esp, Slot::B, b"kernel one").unwrap();
        assert_eq!(first.kernel_bytes, 10);
        let b = dir.path().join("B");
        assert_eq!(names(&b), [BOOT_CFG.to_owned(), first.kernel_file.clone()]);
        assert_eq!(fs::read(b.join(&first.kernel_file)).unwrap(), b"kernel one");
        assert_eq!(
            fs::read_to_string(b.join(BOOT_CFG)).unwrap(),
            slot_config(Slot::B, "1.0", &first.kernel_file, &args())
        );

        let second = install(&esp, Slot::B, b"kernel two").unwrap();
        assert_ne!(second.kernel_file, first.kernel_file);
        assert_eq!(names(&b), [BOOT_CFG.to_owned(), second.kernel_file.clone()]);
        assert!(fs::read_to_string(b.join(BOOT_CFG))
            .unwrap()
            .contains(&format!("/EFI/gantry/B/{} ro ", second.kernel_file)));
        // The same kernel again changes nothing.
        assert_eq!(install(&esp, Slot::B, b"kernel two").unwrap(), second);
        assert_eq!(names(&b), [BOOT_CFG.to_owned(), second.kernel_file]);
        // Nothing outside the slot's directory changed.
        assert!(names(&dir.path().join("A")).is_empty());
        assert_eq!(esp.read_env().unwrap(), GrubEnv::initial(Slot::A));
    }

    #[test]
    fn a_digest_mismatch_leaves_the_old_boot_cfg_and_kernel_intact() {
        let (dir, esp) = esp();
        let old = install(&esp, Slot::B, b"old kernel").unwrap();
        let b = dir.path().join("B");
        let cfg = fs::read(b.join(BOOT_CFG)).unwrap();

        let err = esp
            .install_slot_boot(
                Slot::B,
                &mut &b"tampered kernel"[..],
                &hex::encode(&sha256(b"new kernel")),
                &args(),
                "2.0",
            )
            .unwrap_err();
        assert!(matches!(err, EspError::KernelDigest { .. }), "{err}");
        assert!(
            err.to_string()
                .contains(&hex::encode(&sha256(b"new kernel"))),
            "{err}"
        );
        assert_eq!(names(&b), [BOOT_CFG.to_owned(), old.kernel_file.clone()]);
        assert_eq!(fs::read(b.join(BOOT_CFG)).unwrap(), cfg);
        assert_eq!(fs::read(b.join(&old.kernel_file)).unwrap(), b"old kernel");
    }

    #[test]
    fn a_reader_that_fails_leaves_nothing_behind() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk gone"))
            }
        }
        let (dir, esp) = esp();
        let err = esp
            .install_slot_boot(
                Slot::B,
                &mut Broken,
                &hex::encode(&sha256(b"k")),
                &args(),
                "1",
            )
            .unwrap_err();
        assert!(
            matches!(err, EspError::KernelRead { slot: Slot::B, .. }),
            "{err}"
        );
        assert!(names(&dir.path().join("B")).is_empty());
        let err = install_with_args(&esp, &["ro".into(), "a\nb".into()]).unwrap_err();
        assert!(matches!(err, EspError::Parameter { .. }), "{err}");
    }

    fn install_with_args(esp: &Esp, args: &[String]) -> Result<SlotBoot, EspError> {
        esp.install_slot_boot(
            Slot::B,
            &mut &b"k"[..],
            &hex::encode(&sha256(b"k")),
            args,
            "1",
        )
    }

    #[test]
    fn leftovers_of_a_power_cut_are_ignored_then_cleaned_up() {
        let (dir, esp) = esp();
        let old = install(&esp, Slot::B, b"old kernel").unwrap();
        let b = dir.path().join("B");
        // An earlier attempt was cut: half a grubenv.new, half a kernel (under its
        // temporary name, and already renamed but never named by a boot.cfg), a
        // boot.cfg.new, and the image build's old fixed kernel name.
        fs::write(dir.path().join("grubenv.new"), b"# GRUB Env").unwrap();
        let cut_name = kernel_file_name(&sha256(b"new kernel"));
        fs::write(b.join(format!("{cut_name}.new")), b"new ke").unwrap();
        fs::write(b.join("vmlinuz-00000000deadbeef"), b"other").unwrap();
        fs::write(b.join("boot.cfg.new"), b"linux /EFI/gantry/B/vmlin").unwrap();
        fs::write(b.join("vmlinuz"), b"legacy").unwrap();

        assert_eq!(esp.read_env().unwrap(), GrubEnv::initial(Slot::A));
        let mut env = GrubEnv::initial(Slot::A);
        env.set_order(&[Slot::B, Slot::A]);
        esp.write_env(&env).unwrap();
        assert_eq!(esp.read_env().unwrap(), env);
        assert_eq!(names(dir.path()), ["A", "B", "grubenv"]);

        // Until the install is redone, boot.cfg still names the old, whole kernel.
        let cfg = fs::read_to_string(b.join(BOOT_CFG)).unwrap();
        assert!(cfg.contains(&old.kernel_file), "{cfg}");
        let new = install(&esp, Slot::B, b"new kernel").unwrap();
        assert_eq!(new.kernel_file, cut_name);
        assert_eq!(names(&b), [BOOT_CFG.to_owned(), new.kernel_file.clone()]);
        assert_eq!(fs::read(b.join(&new.kernel_file)).unwrap(), b"new kernel");
    }
}
