//! The updater on a running Gantry machine: finds the slots, installs a bundle from a file
//! or from the update server into the inactive one, and remembers it as pending.
//!
//! One install at a time: PID 1's update agent and `gantry-update install` take
//! [`LOCK`] (flock) for the whole install.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::bundle::ARCH;
use crate::channel::{Channel, MAX_CHANNEL_BYTES};
use crate::disk::{BlockPaths, DiskError, SlotPartitions};
use crate::esp::{Esp, MOUNTED_DIR};
use crate::fetch::{FetchError, Fetcher, Progress, Url};
use crate::install::{install, InstallError, Installed, Machine, Step, Target};
use crate::keys::{KeyError, TrustedKeys, TRUSTED_KEYS_DIR};
use crate::policy::UpdatePolicy;
use crate::release::{Release, ReleaseError, OS_RELEASE};
use crate::state::{Pending, StateError, UpdateState, STATE_DIR};
use crate::verity::Verity;
use crate::Slot;

/// Held for the whole of an install.
pub const LOCK: &str = "/run/gantry/update.lock";
/// The machine's id, which places it in a release's waves (PID 1 writes it at boot).
pub const MACHINE_ID: &str = "/etc/machine-id";
/// Where a downloaded bundle is staged (a partial one is resumed).
pub const STAGED_BUNDLE: &str = "/var/lib/gantry/update/download.bundle";

#[derive(Debug, thiserror::Error)]
pub enum HereError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("the kernel command line has no gantry.slot=: this system was not booted from a slot")]
    NoSlot,
    #[error(transparent)]
    Release(#[from] ReleaseError),
    #[error("finding the slots: {0}")]
    Disk(#[from] DiskError),
    #[error("trusted keys: {0}")]
    Keys(#[from] KeyError),
    #[error("update state: {0}")]
    State(#[from] StateError),
    #[error(transparent)]
    Install(#[from] InstallError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Channel(#[from] crate::channel::ChannelError),
    #[error("channel document {url}: {reason}")]
    ChannelRefused { url: String, reason: String },
    #[error("bundle {url}: sha256 is {actual}, the channel document says {expected}")]
    Digest {
        url: String,
        expected: String,
        actual: String,
    },
}

/// What this machine runs and where its slots are.
#[derive(Debug, Clone)]
pub struct Here {
    pub booted: Slot,
    pub release: Release,
    pub root_hash: Option<String>,
    pub slots: SlotPartitions,
}

impl Here {
    pub fn discover() -> Result<Here, HereError> {
        let cmdline = std::fs::read_to_string("/proc/cmdline").map_err(|source| HereError::Io {
            what: "/proc/cmdline".into(),
            source,
        })?;
        let booted = booted_slot(&cmdline).ok_or(HereError::NoSlot)?;
        let release = Release::read(Path::new(OS_RELEASE))?;
        let dev = std::fs::metadata("/")
            .map_err(|source| HereError::Io {
                what: "stat /".into(),
                source,
            })?
            .dev();
        let root = (libc::major(dev) as u64, libc::minor(dev) as u64);
        let slots = BlockPaths::host().slot_partitions(root)?;
        Ok(Here {
            booted,
            release,
            root_hash: Verity::root_hash_in(&cmdline).map(str::to_owned),
            slots,
        })
    }
}

/// The slot named by `gantry.slot=` on a command line.
pub fn booted_slot(cmdline: &str) -> Option<Slot> {
    cmdline
        .split_whitespace()
        .find_map(|a| a.strip_prefix("gantry.slot="))
        .and_then(|s| s.parse().ok())
}

/// Installs the bundle at `path` into the inactive slot and records it as pending.
pub fn install_file(
    path: &Path,
    tries: u8,
    progress: &mut dyn FnMut(Step),
) -> Result<Installed, HereError> {
    let _lock = lock()?;
    let here = Here::discover()?;
    let keys = TrustedKeys::load_dir(Path::new(TRUSTED_KEYS_DIR))?;
    let state_dir = Path::new(STATE_DIR);
    let mut state = UpdateState::load(state_dir)?;
    let target_slot = here.booted.other();
    let part = here.slots.slot(target_slot);
    let machine = Machine {
        running: here.booted,
        min_rollback_index: here.release.rollback_index,
        release: here.release.clone(),
        running_root_hash: here.root_hash.clone(),
    };
    let target = Target {
        slot: target_slot,
        device: part.device.clone(),
        size: part.size_bytes,
        partuuid: part.part_uuid.clone(),
    };
    let esp = Esp::new(MOUNTED_DIR);
    // The pending record is saved before grubenv switches, so that a rollback of a slot
    // switched to just before a power cut is still reported. The manifest is read here
    // unverified for its version; `install` verifies the same file before that step.
    let (manifest, _) = crate::bundle::read_unverified(path).map_err(InstallError::from)?;
    let pending = Pending {
        version: manifest.os_version,
        rollback_index: manifest.rollback_index,
        slot: target_slot,
        from_version: here.release.version.clone(),
        tries,
        gate_failures: Vec::new(),
    };
    let mut recorded = false;
    let mut step = |s: Step| {
        if s == Step::BootFilesWritten {
            state.pending = Some(pending.clone());
            recorded = state.save(state_dir).is_ok();
        }
        progress(s);
    };
    let result = install(path, &keys, &machine, &target, &esp, tries, &mut step);
    match result {
        Ok(installed) => {
            if !recorded {
                state.pending = Some(pending);
                state.save(state_dir)?;
            }
            Ok(installed)
        }
        Err(e) => {
            if state.pending.as_ref() == Some(&pending) {
                // Not switched: nothing is pending after all.
                state.pending = None;
                let _ = state.save(state_dir);
            }
            Err(e.into())
        }
    }
}

/// What one look at the update server found.
#[derive(Debug)]
pub enum Check {
    /// The channel offers nothing newer than what runs.
    UpToDate {
        version: String,
    },
    /// The channel's version rolled back here before; it waits for a newer one.
    FailedBefore {
        version: String,
        reason: String,
    },
    /// `pin_version` holds the machine on another version than the channel names.
    Pinned {
        pinned: String,
        offered: String,
    },
    /// The release's rollout has not reached this machine yet.
    WaitingForWave {
        version: String,
        /// The machine's place in the rollout, 0 to 100.
        place: f64,
        /// When its wave opens (unix seconds); `None`: no wave of this document reaches
        /// it, a later document must widen the rollout.
        opens_at: Option<u64>,
    },
    /// An operator paused the release in the fleet store.
    Paused {
        version: String,
        why: String,
    },
    /// The release spent its failure budget: this machine does not install it.
    Halted {
        version: String,
        reason: String,
    },
    /// An update is already installed and waits for its reboot.
    AlreadyPending {
        version: String,
    },
    Installed(Installed),
}

/// Fetches the channel document, and when it names a newer version that did not fail
/// here before, downloads the bundle (resuming), checks it against the document and
/// installs it.
pub fn check_server(
    policy: &UpdatePolicy,
    server: &Url,
    fetcher: &Fetcher,
    progress: &mut dyn FnMut(Step),
) -> Result<Check, HereError> {
    let keys = TrustedKeys::load_dir(Path::new(TRUSTED_KEYS_DIR))?;
    let release = Release::read(Path::new(OS_RELEASE))?;
    let bytes = fetcher.fetch_small(server, MAX_CHANNEL_BYTES as u64)?;
    let channel = Channel::verify(&bytes, &keys, server.as_str())?;
    let refuse = |reason: String| HereError::ChannelRefused {
        url: server.to_string(),
        reason,
    };
    if channel.channel != policy.channel.as_str() {
        return Err(refuse(format!(
            "it is channel {:?}; this machine follows {:?}",
            channel.channel,
            policy.channel.as_str()
        )));
    }
    if channel.arch != ARCH || channel.board != release.board {
        return Err(refuse(format!(
            "it is for {}/{}; this machine is {ARCH}/{}",
            channel.arch, channel.board, release.board
        )));
    }
    {
        // Serials are checked and raised under the install lock, so that no other writer of
        // the state file loses this update or has its own lost.
        let _lock = lock()?;
        let mut state = UpdateState::load(Path::new(STATE_DIR))?;
        let now = crate::policy::unix_secs(std::time::SystemTime::now());
        channel
            .check_fresh(now, state.channel_serials.get(&channel.channel).copied())
            .map_err(refuse)?;
        if state.accept_serial(&channel.channel, channel.serial) {
            state.save(Path::new(STATE_DIR))?;
        }
    }
    if channel.os_version == release.version || channel.rollback_index < release.rollback_index {
        return Ok(Check::UpToDate {
            version: release.version,
        });
    }
    if let Some(pinned) = policy
        .pin_version
        .as_ref()
        .filter(|v| **v != channel.os_version)
    {
        return Ok(Check::Pinned {
            pinned: pinned.clone(),
            offered: channel.os_version,
        });
    }
    if let Some(rollout) = channel.rollout.as_ref().filter(|_| !policy.ignore_waves) {
        let id = crate::rollout::read_machine_id(Path::new(MACHINE_ID))
            .map_err(|e| refuse(format!("its rollout places machines by machine id: {e}")))?;
        let place = crate::rollout::place(&id, &channel.os_version);
        let now = crate::policy::unix_secs(std::time::SystemTime::now());
        match rollout.verdict(place, now) {
            crate::rollout::Verdict::Open => {}
            crate::rollout::Verdict::OpensAt(t) => {
                return Ok(Check::WaitingForWave {
                    version: channel.os_version,
                    place,
                    opens_at: Some(t),
                })
            }
            crate::rollout::Verdict::NotInThisRollout => {
                return Ok(Check::WaitingForWave {
                    version: channel.os_version,
                    place,
                    opens_at: None,
                })
            }
        }
    }
    let state = UpdateState::load(Path::new(STATE_DIR))?;
    if let Some(f) = state.failed_before(&channel.os_version) {
        return Ok(Check::FailedBefore {
            version: f.version.clone(),
            reason: f.reason.clone(),
        });
    }
    if let Some(p) = state
        .pending
        .as_ref()
        .filter(|p| p.version == channel.os_version)
    {
        return Ok(Check::AlreadyPending {
            version: p.version.clone(),
        });
    }
    let fleet = policy.fleet_store();
    if let Some(fleet) = &fleet {
        let store = |e: String| refuse(format!("the fleet store: {e}"));
        if let Some(why) = fleet.paused(&channel.os_version).map_err(store)? {
            return Ok(Check::Paused {
                version: channel.os_version,
                why,
            });
        }
        if let Some(budget) = &channel.failure_budget {
            let outcomes = fleet.outcomes(&channel.os_version).map_err(store)?;
            if let Some(reason) = budget.spent(&outcomes) {
                if let Ok(id) = crate::rollout::read_machine_id(Path::new(MACHINE_ID)) {
                    let halted = crate::fleet::Outcome {
                        state: crate::fleet::State::Halted,
                        reason: Some(reason.clone()),
                        at: crate::policy::unix_secs(std::time::SystemTime::now()),
                    };
                    // The record is for the operator; the machine halts either way.
                    let _ = fleet.report(&channel.os_version, &id, &halted);
                }
                return Ok(Check::Halted {
                    version: channel.os_version,
                    reason,
                });
            }
        }
    }
    let url = server
        .join(&channel.bundle.url)
        .map_err(|e| refuse(format!("bundle.url {:?}: {e}", channel.bundle.url)))?;
    policy
        .transport_problem(&url)
        .map_err(|reason| refuse(format!("bundle.url {:?}: {reason}", channel.bundle.url)))?;
    let staged = PathBuf::from(STAGED_BUNDLE);
    if let Some(dir) = staged.parent() {
        std::fs::create_dir_all(dir).map_err(|source| HereError::Io {
            what: dir.display().to_string(),
            source,
        })?;
    }
    fetcher.download(&url, &staged, channel.bundle.size, &mut |_: Progress| {})?;
    let (_, actual) = crate::bundle::hash_file(&staged).map_err(|source| HereError::Io {
        what: staged.display().to_string(),
        source,
    })?;
    if actual != channel.bundle.sha256 {
        // A bad download is not kept for resuming.
        let _ = std::fs::remove_file(&staged);
        return Err(HereError::Digest {
            url: url.to_string(),
            expected: channel.bundle.sha256,
            actual,
        });
    }
    // Installed or refused, the staged copy has served: a refused bundle is not kept.
    let installed = install_file(&staged, policy.boot_tries(), progress);
    let _ = std::fs::remove_file(&staged);
    let installed = installed?;
    if let (Some(fleet), Ok(id)) = (
        &fleet,
        crate::rollout::read_machine_id(Path::new(MACHINE_ID)),
    ) {
        let outcome = crate::fleet::Outcome {
            state: crate::fleet::State::Installed,
            reason: None,
            at: crate::policy::unix_secs(std::time::SystemTime::now()),
        };
        // A record missed is not worth an install undone; the next step writes again.
        let _ = fleet.report(&installed.version, &id, &outcome);
    }
    Ok(Check::Installed(installed))
}

/// The install lock, held until dropped.
fn lock() -> Result<File, HereError> {
    let io = |source| HereError::Io {
        what: LOCK.into(),
        source,
    };
    if let Some(dir) = Path::new(LOCK).parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let f = File::create(LOCK).map_err(io)?;
    // SAFETY: flock only reads its integer arguments; the fd is open.
    if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&f), libc::LOCK_EX) } != 0 {
        return Err(io(std::io::Error::last_os_error()));
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_booted_slot_comes_from_the_command_line() {
        assert_eq!(booted_slot("ro gantry.slot=B panic=10"), Some(Slot::B));
        assert_eq!(booted_slot("ro gantry.slot=C"), None);
        assert_eq!(booted_slot("ro"), None);
    }
}
