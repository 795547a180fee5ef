//! `gantry-update`, the command line: makes, checks and installs Gantry update bundles.
//!
//! On the build host: `keygen`, `sign`, `verify`, `inspect` and `channel`. On a running
//! Gantry machine (as root, in the image at `/usr/bin/gantry-update`): `install` and
//! `status`.
//!
//! Results go to stdout, one line or one JSON document, so scripts can use them; progress
//! and notes go to stderr. A failure prints `error: ` and the whole cause chain once, and
//! exits 1.
//!
//! Choices:
//! - `keygen` refuses to replace an existing `NAME.key` or `NAME.pub`: losing a release
//!   key to a typo would leave a fleet that trusts only a key nobody has.
//! - `channel` verifies the bundle it publishes (signature against the public halves of
//!   the signing keys, every payload's digest) and then the channel document it wrote, so
//!   a channel never points a fleet at a bundle the fleet would refuse.
//! - `inspect` trusts nothing and says so on stderr; `verify` is the check.
//! - Progress of `install` is plain lines on stderr (each step, and the root as it streams):
//!   it runs on a serial console as often as on a terminal.
//!
//! One file per command: [`keygen`], [`sign`] (`sign`, `verify`, `inspect`),
//! [`channel`], [`machine`] (`install`, `status`) and [`fleet`]; this file holds the
//! command line's shape, its errors and the file helpers the commands share.

use crate::bundle::{self, Bundle, BundleMeta};
use crate::channel::{BundleRef, Channel};
use crate::esp::{Esp, MOUNTED_DIR};
use crate::fetch::Url;
use crate::grubenv::MAX_TRIES;
use crate::install::{Installed, Step};
use crate::keys::{self, KeyError, PublicKey, SigningKey, TrustedKeys};
use crate::policy::UpdatePolicy;
use crate::release::{Release, OS_RELEASE};
use crate::state::{UpdateState, STATE_DIR};
use crate::verity::Verity;
use crate::{here, Slot};
use clap::{ArgGroup, Args, Parser, Subcommand};
use std::error::Error;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

mod channel;
mod fleet;
mod keygen;
mod machine;
mod sign;

use self::channel::{channel, ChannelArgs};
use self::fleet::{fleet, FleetArgs};
use self::keygen::{keygen, KeygenArgs};
use self::machine::{install, status};
use self::sign::{inspect, sign, verify, SignArgs, VerifyArgs};

/// Make, check and install Gantry update bundles.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate a signing key: NAME.key (private, mode 0600; keep it off the image) and
    /// NAME.pub (for the image's trusted keys). Prints the key id.
    Keygen(KeygenArgs),
    /// Write a signed bundle of a kernel, its command line and a root image.
    Sign(SignArgs),
    /// Check a bundle's signature and every payload; prints
    /// `ok <version> rollback_index=<n> signed_by=<key ids>`.
    Verify(VerifyArgs),
    /// Print a bundle's manifest and signer key ids as JSON, without verifying anything.
    Inspect {
        /// The bundle file.
        bundle: PathBuf,
    },
    /// Write the signed channel document that points machines at a bundle.
    Channel(ChannelArgs),
    /// Install a bundle into the inactive slot of this machine (root, on Gantry).
    Install {
        /// The bundle file.
        file: PathBuf,
        /// Boots the new slot gets before GRUB falls back to this one.
        #[arg(long, default_value_t = UpdatePolicy::default().boot_tries(),
              value_parser = clap::value_parser!(u8).range(1..=i64::from(MAX_TRIES)))]
        tries: u8,
    },
    /// Print this machine's slots, boot state and pending/failed updates as JSON.
    Status,
    /// See and steer a release across the fleet, from its records in etcd.
    Fleet(FleetArgs),
}

/// What the command line itself can get wrong; the library's errors pass through as they
/// are.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("{path} already exists; refusing to overwrite it")]
    Exists { path: PathBuf },
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the {what} {path}: {source}")]
    Input {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("--{arg} {value:?}: {reason}")]
    Arg {
        arg: &'static str,
        value: String,
        reason: String,
    },
}

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// Runs `gantry-update` on the process's arguments.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Keygen(a) => keygen(&a),
        Command::Sign(a) => sign(&a),
        Command::Verify(a) => verify(&a),
        Command::Inspect { bundle } => inspect(&bundle),
        Command::Channel(a) => channel(&a),
        Command::Install { file, tries } => install(&file, tries),
        Command::Status => status(),
        Command::Fleet(a) => fleet(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", gantry_report::error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// `path` with `suffix` appended to its file name (`release-2026` → `release-2026.key`;
/// a dot in the name is kept, unlike `with_extension`).
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = OsString::from(path.as_os_str());
    s.push(suffix);
    PathBuf::from(s)
}

/// Writes `bytes` to `path` through a temporary name, fsynced, then renamed.
fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let invalid = |reason: &str| CliError::Invalid {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let name = path
        .file_name()
        .ok_or_else(|| invalid("names no file"))?
        .to_str()
        .ok_or_else(|| invalid("file name is not UTF-8"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    gantry_durable::write_atomic(&dir.join(name), bytes).map_err(|source| CliError::Io {
        action: "write",
        path: path.to_owned(),
        source,
    })?;
    Ok(())
}

/// Names an input that is missing or not a file by its option, before any work starts.
fn readable_file(what: &'static str, path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|source| CliError::Input {
        what,
        path: path.to_owned(),
        source,
    })?;
    if !meta.is_file() {
        return Err(CliError::Invalid {
            path: path.to_owned(),
            reason: format!("the {what} is not a regular file"),
        }
        .into());
    }
    Ok(())
}

fn load_signing_keys(paths: &[PathBuf]) -> Result<Vec<SigningKey>> {
    Ok(paths
        .iter()
        .map(|p| SigningKey::load(p))
        .collect::<std::result::Result<_, _>>()?)
}

fn load_public_keys(paths: &[PathBuf]) -> Result<TrustedKeys> {
    let mut keys = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.clone(),
            source,
        })?;
        keys.push(PublicKey::parse(&text, path)?);
    }
    Ok(TrustedKeys::new(keys))
}

fn join_ids(ids: impl Iterator<Item = keys::KeyId>) -> String {
    ids.map(|id| id.to_string()).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests;
