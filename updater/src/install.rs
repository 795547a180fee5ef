//! Installing a bundle into the inactive slot.
//!
//! The order is what makes it atomic:
//!
//! 1. **Check everything before writing anything.** The manifest's signature, then the
//!    machine's rules (architecture, board, rollback index, not the running slot, not the
//!    version that is running, fits the partition), then every payload's digest, read from
//!    the bundle. A bundle that fails any check changes nothing: not a byte of the slot,
//!    the ESP or `grubenv`.
//! 2. **Take the target slot out of the boot order**: `grubenv` says the target is not
//!    good and has no tries, with the running slot first. From here until step 5 the
//!    target's contents do not matter to GRUB, so a power cut in between boots the running
//!    slot.
//! 3. **Stream the root** into the target partition while hashing it, fsync, then read
//!    it back from the device (page cache dropped first) and hash it again: what GRUB and
//!    dm-verity will read is what the signed manifest names.
//! 4. **Write the slot's kernel and command line** to the ESP under new names, fsynced
//!    ([`Esp::install_slot_boot`]).
//! 5. **Switch**: `grubenv` puts the target first, on trial with `tries` boots, not good.
//!    One atomic rename; before it the old boot state holds, after it the new one.
//!
//! After the reboot, PID 1's health gate marks the slot good or lets GRUB's counter roll
//! back (see the init crate).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ring::digest::{Context, SHA256};

use crate::bundle::{Bundle, BundleError, Payload, ARCH};
use crate::esp::{Esp, EspError};
use crate::grubenv::{GrubenvError, MAX_TRIES};
use crate::keys::TrustedKeys;
use crate::release::Release;
use crate::verity::Verity;
use crate::{Slot, SlotState};

const CHUNK: usize = 1 << 20;
/// Progress while streaming the root: every 4 MiB.
const REPORT_EVERY: u64 = 4 << 20;

/// The machine a bundle is installed on.
#[derive(Debug, Clone)]
pub struct Machine {
    /// The slot the running system booted from.
    pub running: Slot,
    /// The running root's release file.
    pub release: Release,
    /// The running root's dm-verity root hash (from its command line).
    pub running_root_hash: Option<String>,
    /// The lowest rollback index this machine accepts: at least the running release's.
    pub min_rollback_index: u64,
}

/// Where the inactive slot's root goes.
#[derive(Debug, Clone)]
pub struct Target {
    pub slot: Slot,
    /// The partition (a file in tests).
    pub device: PathBuf,
    pub size: u64,
    pub partuuid: String,
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("bundle {path} refused: {reason}")]
    Refused { path: PathBuf, reason: String },
    #[error("ESP: {0}")]
    Esp(#[from] EspError),
    #[error("grubenv: {0}")]
    Grubenv(#[from] GrubenvError),
    #[error("slot {slot} ({device}): {what}: {source}")]
    Device {
        slot: Slot,
        device: PathBuf,
        what: &'static str,
        source: io::Error,
    },
    #[error(
        "slot {slot} ({device}): read back sha256 {actual}, the bundle's root is {expected}; \
         the slot stays out of the boot order"
    )]
    ReadBack {
        slot: Slot,
        device: PathBuf,
        expected: String,
        actual: String,
    },
}

/// What an install did, and how long its parts took.
#[derive(Debug, Clone)]
pub struct Installed {
    pub slot: Slot,
    pub version: String,
    pub rollback_index: u64,
    pub root_bytes: u64,
    /// Checking the signature and every payload's digest.
    pub verify: Duration,
    /// Streaming the root into the slot (hashing as it goes) and fsync.
    pub stream: Duration,
    /// Reading the slot back and hashing it.
    pub read_back: Duration,
    pub total: Duration,
}

/// Steps an install reports, for logs and progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Verified,
    SlotCleared,
    RootWritten { bytes: u64, total: u64 },
    RootVerified,
    BootFilesWritten,
    Switched,
}

/// Verifies `bundle` and installs it into `target`; see the module docs for the order.
pub fn install(
    bundle_path: &Path,
    keys: &TrustedKeys,
    machine: &Machine,
    target: &Target,
    esp: &Esp,
    tries: u8,
    progress: &mut dyn FnMut(Step),
) -> Result<Installed, InstallError> {
    let started = Instant::now();
    let mut bundle = Bundle::open(bundle_path, keys)?;
    check_rules(&bundle, machine, target, tries)?;
    bundle.verify_payloads()?;
    let args = bundle.cmdline_args()?;
    let verify = started.elapsed();
    progress(Step::Verified);
    let manifest = bundle.manifest().clone();

    let mut env = esp.read_env()?;
    env.set_slot(target.slot, SlotState::EMPTY);
    env.set_order(&[machine.running, target.slot]);
    esp.write_env(&env)?;
    progress(Step::SlotCleared);

    let t = Instant::now();
    let dev_err = |what| {
        move |source| InstallError::Device {
            slot: target.slot,
            device: target.device.clone(),
            what,
            source,
        }
    };
    let mut dev = File::options()
        .write(true)
        .read(true)
        .open(&target.device)
        .map_err(dev_err("open"))?;
    let mut root = bundle.payload(Payload::Root)?;
    let total = root.size();
    let mut buf = vec![0u8; CHUNK];
    let mut written = 0u64;
    let mut last_report = 0u64;
    loop {
        let n = read_full(&mut root, &mut buf).map_err(dev_err("read the bundle"))?;
        if n == 0 {
            break;
        }
        dev.write_all(&buf[..n]).map_err(dev_err("write"))?;
        written += n as u64;
        if written - last_report >= REPORT_EVERY || written == total {
            progress(Step::RootWritten {
                bytes: written,
                total,
            });
            last_report = written;
        }
    }
    // The bundle file could have changed since it was verified: check the stream too.
    root.finish()?;
    dev.sync_all().map_err(dev_err("fsync"))?;
    let stream = t.elapsed();

    let t = Instant::now();
    let actual = read_back(&mut dev, total).map_err(dev_err("read back"))?;
    if actual != manifest.payloads.root.sha256 {
        return Err(InstallError::ReadBack {
            slot: target.slot,
            device: target.device.clone(),
            expected: manifest.payloads.root.sha256.clone(),
            actual,
        });
    }
    let read_back = t.elapsed();
    progress(Step::RootVerified);

    let slot_args = manifest
        .verity
        .slot_args(&args, target.slot, &target.partuuid);
    let mut kernel = bundle.payload(Payload::Kernel)?;
    esp.install_slot_boot(
        target.slot,
        &mut kernel,
        &manifest.payloads.kernel.sha256,
        &slot_args,
        &manifest.os_version,
    )?;
    kernel.finish()?;
    progress(Step::BootFilesWritten);

    env.set_slot(target.slot, SlotState { good: false, tries });
    env.set_order(&[target.slot, machine.running]);
    esp.write_env(&env)?;
    progress(Step::Switched);
    Ok(Installed {
        slot: target.slot,
        version: manifest.os_version,
        rollback_index: manifest.rollback_index,
        root_bytes: total,
        verify,
        stream,
        read_back,
        total: started.elapsed(),
    })
}

/// The machine's rules for a bundle whose signature verified.
fn check_rules(
    bundle: &Bundle,
    machine: &Machine,
    target: &Target,
    tries: u8,
) -> Result<(), InstallError> {
    let m = bundle.manifest();
    let refuse = |reason: String| InstallError::Refused {
        path: bundle.path().to_owned(),
        reason,
    };
    if m.arch != ARCH {
        return Err(refuse(format!(
            "it is for architecture {}, this machine is {ARCH}",
            m.arch
        )));
    }
    if m.board != machine.release.board {
        return Err(refuse(format!(
            "it is for board {}, this machine is {}",
            m.board, machine.release.board
        )));
    }
    if m.rollback_index < machine.min_rollback_index {
        return Err(refuse(format!(
            "its rollback index {} is lower than {} (version {} runs with index {})",
            m.rollback_index,
            machine.min_rollback_index,
            machine.release.version,
            machine.release.rollback_index
        )));
    }
    if target.slot == machine.running {
        return Err(refuse(format!(
            "slot {} is the running slot; only the inactive slot is written",
            target.slot
        )));
    }
    if machine.running_root_hash.as_deref() == Some(m.verity.root_hash.as_str()) {
        return Err(refuse(format!(
            "it holds the root that slot {} runs now (version {}, root hash {})",
            machine.running, m.os_version, m.verity.root_hash
        )));
    }
    if m.payloads.root.size > target.size {
        return Err(refuse(format!(
            "its root is {} bytes; slot {} ({}) holds {}",
            m.payloads.root.size,
            target.slot,
            target.device.display(),
            target.size
        )));
    }
    if !(1..=MAX_TRIES).contains(&tries) {
        return Err(refuse(format!(
            "{tries} boot tries is not 1 to {MAX_TRIES}"
        )));
    }
    Ok(())
}

/// Fills `buf` unless the reader ends first; returns how much it read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Hashes the first `len` bytes of `dev` as the device has them, not as the page cache
/// remembers them.
fn read_back(dev: &mut File, len: u64) -> io::Result<String> {
    // SAFETY: posix_fadvise only reads its integer arguments; the fd is open.
    let rc = unsafe {
        libc::posix_fadvise(
            dev.as_raw_fd(),
            0,
            len as libc::off_t,
            libc::POSIX_FADV_DONTNEED,
        )
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    dev.seek(SeekFrom::Start(0))?;
    let mut ctx = Context::new(&SHA256);
    let mut limited = dev.take(len);
    let mut buf = vec![0u8; CHUNK];
    let mut read = 0u64;
    loop {
        let n = read_full(&mut limited, &mut buf)?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
        read += n as u64;
    }
    if read != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("device ended after {read} of {len} bytes"),
        ));
    }
    Ok(crate::hex::encode(ctx.finish().as_ref()))
}

/// The running root's dm-verity root hash, from `/proc/cmdline`'s text.
pub fn running_root_hash(cmdline: &str) -> Option<String> {
    Verity::root_hash_in(cmdline).map(str::to_owned)
}

#[cfg(test)]
mod tests;
