//! `gantry-update`: makes, checks and installs Gantry update bundles.
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

use std::error::Error;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand};
use gantry_updater::bundle::{self, Bundle, BundleMeta};
use gantry_updater::channel::{BundleRef, Channel};
use gantry_updater::esp::{Esp, MOUNTED_DIR};
use gantry_updater::fetch::Url;
use gantry_updater::grubenv::MAX_TRIES;
use gantry_updater::install::{Installed, Step};
use gantry_updater::keys::{self, KeyError, PublicKey, SigningKey, TrustedKeys};
use gantry_updater::policy::UpdatePolicy;
use gantry_updater::release::{Release, OS_RELEASE};
use gantry_updater::state::{UpdateState, STATE_DIR};
use gantry_updater::verity::Verity;
use gantry_updater::{here, Slot};

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

#[derive(Debug, Args)]
struct FleetArgs {
    /// etcd's client URL.
    #[arg(long, value_name = "URL")]
    etcd: gantry_updater::fetch::Url,
    #[command(subcommand)]
    verb: FleetVerb,
}

#[derive(Debug, Subcommand)]
enum FleetVerb {
    /// Per release: machines by state, halted or not and why, paused or not; the reboot
    /// slots in use of a group.
    Status {
        /// Only this release.
        #[arg(long)]
        release: Option<String>,
        /// The reboot group whose slots to show.
        #[arg(long, default_value = "default")]
        group: String,
        /// The channel document the fleet follows: its release's open wave, next wave and
        /// failure budget are shown too (verified with --key or --keys first).
        #[arg(long, value_name = "URL", requires = "trust")]
        channel: Option<gantry_updater::fetch::Url>,
        /// Trust every *.pub file of DIR for the channel document.
        #[arg(long = "keys", value_name = "DIR", group = "trust")]
        keys_dir: Option<PathBuf>,
        /// Trust this public key file for the channel document; repeatable.
        #[arg(long = "key", value_name = "F.pub", group = "trust")]
        keys: Vec<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Stop machines from installing a release (those that installed it go on).
    Pause {
        release: String,
        /// Who and why, kept with the pause.
        #[arg(long, default_value = "paused by an operator")]
        reason: String,
    },
    /// Let machines install a paused release again.
    Resume { release: String },
}

#[derive(Debug, Args)]
struct KeygenArgs {
    /// Path and stem of the two files: NAME.key and NAME.pub.
    #[arg(long, value_name = "NAME")]
    out: PathBuf,
    /// Comment at the end of NAME.pub's line (who owns the key, since when).
    #[arg(long, default_value = "")]
    comment: String,
}

#[derive(Debug, Args)]
struct SignArgs {
    /// The kernel (bzImage).
    #[arg(long, value_name = "FILE")]
    kernel: PathBuf,
    /// The image's own kernel arguments, without root=, dm-mod.*, gantry.slot= (the
    /// installer adds those per slot); must include panic=N.
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    cmdline: String,
    /// The root image: erofs with its dm-verity tree appended.
    #[arg(long, value_name = "FILE")]
    root: PathBuf,
    /// dm-verity parameters: image-build's gantry.json (its "verity") or a bare object.
    #[arg(long, value_name = "FILE.json")]
    verity: PathBuf,
    /// The OS version the bundle installs.
    #[arg(long, value_name = "V")]
    version: String,
    /// Must grow with every release; machines refuse a lower one than they run.
    #[arg(long, value_name = "N")]
    rollback_index: u64,
    #[arg(long, default_value = "generic")]
    board: String,
    #[arg(long, default_value = "x86_64")]
    arch: String,
    /// A private key (PKCS#8); repeat to sign with several (key rotation).
    #[arg(long = "key", value_name = "K.key", required = true)]
    keys: Vec<PathBuf>,
    /// The bundle to write.
    #[arg(long, value_name = "B.bundle")]
    out: PathBuf,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("trust").required(true).args(["keys_dir", "keys"])))]
struct VerifyArgs {
    /// The bundle file.
    bundle: PathBuf,
    /// Trust every *.pub file of DIR (as the image does with /etc/gantry/update-keys).
    #[arg(long = "keys", value_name = "DIR")]
    keys_dir: Option<PathBuf>,
    /// Trust this public key file; repeatable.
    #[arg(long = "key", value_name = "F.pub")]
    keys: Vec<PathBuf>,
}

#[derive(Debug, Args)]
struct ChannelArgs {
    /// The bundle the channel offers.
    #[arg(long, value_name = "B.bundle")]
    bundle: PathBuf,
    /// Where machines fetch it: absolute, or relative to the channel document's URL.
    #[arg(long)]
    url: String,
    /// The channel's name.
    #[arg(long, default_value = "stable")]
    channel: gantry_updater::policy::Channel,
    /// A private key (PKCS#8); repeat to sign with several.
    #[arg(long = "key", value_name = "K.key", required = true)]
    keys: Vec<PathBuf>,
    /// The channel document to write.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// The document's serial: machines refuse one lower than the highest they accepted.
    /// Default: the signing time in unix seconds, which grows by itself.
    #[arg(long)]
    serial: Option<u64>,
    /// Days until machines refuse the document as expired: re-sign before then, even with
    /// nothing new, or machines log a frozen channel at each check.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=366))]
    valid_days: u64,
    /// A wave of the release's rollout, `AFTER_SECS:PERCENT` (repeat, in order): machines
    /// whose place is below PERCENT may install from AFTER_SECS after the rollout's start.
    /// Without waves, every machine may install at once.
    #[arg(long = "wave", value_name = "AFTER_SECS:PERCENT", value_parser = parse_wave)]
    waves: Vec<gantry_updater::rollout::Wave>,
    /// Halt the release once this many machines rolled back from it.
    #[arg(long, value_name = "N")]
    failure_budget_rollbacks: Option<u32>,
    /// Halt the release once this share (1 to 100) of the machines that tried it rolled
    /// back.
    #[arg(long, value_name = "PERCENT")]
    failure_budget_percent: Option<u8>,
    /// When the waves start, in unix seconds. Default: the signing time.
    #[arg(long, value_name = "UNIX_SECS", requires = "waves")]
    rollout_start: Option<u64>,
}

fn parse_wave(s: &str) -> std::result::Result<gantry_updater::rollout::Wave, String> {
    let (after, percent) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not AFTER_SECS:PERCENT"))?;
    Ok(gantry_updater::rollout::Wave {
        after_secs: after
            .parse()
            .map_err(|e| format!("{s:?}: after {after:?}: {e}"))?,
        percent: percent
            .parse()
            .map_err(|e| format!("{s:?}: percent {percent:?}: {e}"))?,
    })
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

fn main() -> ExitCode {
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

fn keygen(a: &KeygenArgs) -> Result<()> {
    if let Some(c) = a.comment.chars().find(|c| c.is_control()) {
        return Err(CliError::Arg {
            arg: "comment",
            value: a.comment.clone(),
            reason: format!("holds the control character {c:?}"),
        }
        .into());
    }
    let key_path = with_suffix(&a.out, ".key");
    let pub_path = with_suffix(&a.out, ".pub");
    for path in [&key_path, &pub_path] {
        if path.symlink_metadata().is_ok() {
            return Err(CliError::Exists { path: path.clone() }.into());
        }
    }
    let pkcs8 = SigningKey::generate_pkcs8()?;
    let key = SigningKey::from_pkcs8(&pkcs8, &key_path)?;
    let mut public = key.public_key();
    public.comment = a.comment.trim().to_owned();
    keys::write_private_key(&key_path, &pkcs8)?;
    write_file(&pub_path, public.to_line().as_bytes())?;
    eprintln!(
        "wrote {} (private: keep it off the image) and {}",
        key_path.display(),
        pub_path.display()
    );
    println!("{}", key.id());
    Ok(())
}

fn sign(a: &SignArgs) -> Result<()> {
    readable_file("kernel", &a.kernel)?;
    readable_file("root", &a.root)?;
    let keys = load_signing_keys(&a.keys)?;
    let verity = read_verity(&a.verity)?;
    let meta = BundleMeta {
        os_version: a.version.clone(),
        rollback_index: a.rollback_index,
        arch: a.arch.clone(),
        board: a.board.clone(),
        verity,
    };
    let args: Vec<String> = a.cmdline.split_whitespace().map(str::to_owned).collect();
    let refs: Vec<&SigningKey> = keys.iter().collect();
    let manifest = bundle::write(&a.out, &meta, &a.kernel, &args, &a.root, &refs)?;
    println!(
        "signed {} {} rollback_index={} signed_by={}",
        a.out.display(),
        manifest.os_version,
        manifest.rollback_index,
        join_ids(keys.iter().map(SigningKey::id))
    );
    Ok(())
}

fn verify(a: &VerifyArgs) -> Result<()> {
    let trusted = match &a.keys_dir {
        Some(dir) => TrustedKeys::load_dir(dir)?,
        None => load_public_keys(&a.keys)?,
    };
    let mut b = Bundle::open(&a.bundle, &trusted)?;
    b.verify_payloads()?;
    b.cmdline_args()?;
    let m = b.manifest();
    println!(
        "ok {} rollback_index={} signed_by={}",
        m.os_version,
        m.rollback_index,
        join_ids(b.signed_by().iter().copied())
    );
    Ok(())
}

fn inspect(path: &Path) -> Result<()> {
    let (manifest, key_ids) = bundle::read_unverified(path)?;
    eprintln!(
        "note: nothing was verified (not the signature, not the payloads); \
         `gantry-update verify` is the check"
    );
    let out = serde_json::json!({ "manifest": manifest, "signature_key_ids": key_ids });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

fn channel(a: &ChannelArgs) -> Result<()> {
    check_bundle_url(&a.url)?;
    let keys = load_signing_keys(&a.keys)?;
    let trusted = TrustedKeys::new(keys.iter().map(SigningKey::public_key));
    let mut b = Bundle::open(&a.bundle, &trusted)?;
    b.verify_payloads()?;
    let m = b.manifest().clone();
    let (size, sha256) = bundle::hash_file(&a.bundle).map_err(|source| CliError::Io {
        action: "hash",
        path: a.bundle.clone(),
        source,
    })?;
    let now = gantry_updater::policy::unix_secs(std::time::SystemTime::now());
    let doc = Channel {
        format: gantry_updater::channel::FORMAT,
        channel: a.channel.to_string(),
        serial: a.serial.unwrap_or(now),
        expires: now + a.valid_days * 86_400,
        os_version: m.os_version,
        rollback_index: m.rollback_index,
        arch: m.arch,
        board: m.board,
        bundle: BundleRef {
            url: a.url.clone(),
            size,
            sha256,
        },
        rollout: (!a.waves.is_empty()).then(|| gantry_updater::rollout::Rollout {
            start: a.rollout_start.unwrap_or(now),
            waves: a.waves.clone(),
        }),
        failure_budget: (a.failure_budget_rollbacks.is_some()
            || a.failure_budget_percent.is_some())
        .then_some(gantry_updater::fleet::FailureBudget {
            rollbacks: a.failure_budget_rollbacks,
            percent: a.failure_budget_percent,
        }),
    };
    let refs: Vec<&SigningKey> = keys.iter().collect();
    let wire = doc.sign(&refs)?;
    // What machines will check, checked before anything is published.
    Channel::verify(&wire, &trusted, &a.out.display().to_string())?;
    write_file(&a.out, &wire)?;
    println!(
        "channel {} {} serial={} expires={} rollback_index={} bundle={} size={} sha256={}",
        doc.channel,
        doc.os_version,
        doc.serial,
        doc.expires,
        doc.rollback_index,
        doc.bundle.url,
        doc.bundle.size,
        doc.bundle.sha256
    );
    if let Some(r) = &doc.rollout {
        let waves: Vec<String> = r
            .waves
            .iter()
            .map(|w| format!("{}s:{}%", w.after_secs, w.percent))
            .collect();
        println!("rollout start={} waves={}", r.start, waves.join(","));
    }
    Ok(())
}

fn fleet(a: &FleetArgs) -> Result<()> {
    use gantry_updater::fleet::{Fleet, State};
    let etcd = gantry_updater::etcd::Etcd {
        endpoint: a.etcd.clone(),
        fetcher: gantry_updater::fetch::Fetcher::new(gantry_updater::fetch::FetchOptions {
            insecure: true,
            ..Default::default()
        }),
    };
    let fleet = Fleet { etcd: etcd.clone() };
    match &a.verb {
        FleetVerb::Pause { release, reason } => {
            fleet.pause(release, reason)?;
            println!("paused {release}: {reason}");
        }
        FleetVerb::Resume { release } => {
            fleet.resume(release)?;
            println!("resumed {release}");
        }
        FleetVerb::Status {
            release,
            group,
            channel,
            keys_dir,
            keys,
            json,
        } => {
            let offered = match channel {
                Some(url) => {
                    let trusted = match keys_dir {
                        Some(dir) => TrustedKeys::load_dir(dir)?,
                        None => load_public_keys(keys)?,
                    };
                    let bytes = etcd
                        .fetcher
                        .fetch_small(url, gantry_updater::channel::MAX_CHANNEL_BYTES as u64)?;
                    Some(Channel::verify(&bytes, &trusted, url.as_str())?)
                }
                None => None,
            };
            let mut releases = match release {
                Some(r) => vec![r.clone()],
                None => fleet.releases()?,
            };
            if let Some(c) = &offered {
                if release.is_none() && !releases.contains(&c.os_version) {
                    releases.push(c.os_version.clone());
                }
            }
            let now = gantry_updater::policy::unix_secs(std::time::SystemTime::now());
            let holders = gantry_updater::etcd_lease::holders(&etcd, group)?;
            let mut out = Vec::new();
            for r in &releases {
                let outcomes = fleet.outcomes(r)?;
                let mut by_state = std::collections::BTreeMap::<&str, Vec<&str>>::new();
                for (id, o) in &outcomes {
                    by_state.entry(o.state.as_str()).or_default().push(id);
                }
                let halted = outcomes
                    .iter()
                    .find(|(_, o)| o.state == State::Halted)
                    .and_then(|(_, o)| o.reason.clone());
                let rolled_back: Vec<serde_json::Value> = outcomes
                    .iter()
                    .filter(|(_, o)| o.state == State::RolledBack)
                    .map(|(id, o)| serde_json::json!({"machine": id, "reason": o.reason}))
                    .collect();
                let mut entry = serde_json::json!({
                    "release": r,
                    "machines": by_state,
                    "rolled_back": rolled_back,
                    "halted": halted,
                    "paused": fleet.paused(r)?,
                });
                if let Some(c) = offered.as_ref().filter(|c| &c.os_version == r) {
                    entry["channel"] = channel_summary(c, &outcomes, now);
                    if halted.is_none() {
                        entry["halted"] = entry["channel"]["budget_spent"].clone();
                    }
                }
                out.push(entry);
            }
            let slots: Vec<serde_json::Value> = holders
                .iter()
                .map(|h| serde_json::json!({"machine": h.holder, "holder": h.value}))
                .collect();
            if *json {
                let doc = serde_json::json!({"releases": out, "group": group, "reboot_slots_in_use": slots});
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                for r in &out {
                    println!("release {}", r["release"].as_str().unwrap_or_default());
                    for (state, ids) in r["machines"].as_object().into_iter().flatten() {
                        println!("  {state:<12} {}", ids.as_array().map_or(0, Vec::len));
                    }
                    if let Some(c) = r.get("channel") {
                        if c["expired"] == true {
                            println!(
                                "  channel document expired at {} (unix): machines refuse it",
                                c["expires"]
                            );
                        }
                        match c["next_wave"].as_object() {
                            Some(next) => println!(
                                "  open wave: {} % of the fleet; next: {} % at {} (unix)",
                                c["open_percent"], next["percent"], next["at"]
                            ),
                            None => println!("  open wave: {} % of the fleet", c["open_percent"]),
                        }
                    }
                    match r["halted"].as_str() {
                        Some(why) => println!("  halted: {why}"),
                        None => println!("  halted: no"),
                    }
                    match r["paused"].as_str() {
                        Some(why) => println!("  paused: {why}"),
                        None => println!("  paused: no"),
                    }
                }
                println!("group {group}: {} reboot slots in use", slots.len());
                for h in &holders {
                    println!("  {} {}", h.holder, h.value);
                }
            }
        }
    }
    Ok(())
}

/// What the channel document says of its release's rollout at `now`: the share of the
/// fleet its open wave admits, the next wave, the failure budget and whether the
/// machines' records have spent it. A document without a rollout admits all at once.
fn channel_summary(
    c: &Channel,
    outcomes: &[(String, gantry_updater::fleet::Outcome)],
    now: u64,
) -> serde_json::Value {
    let (open, next) = match &c.rollout {
        Some(r) => (r.open_percent(now), r.next_wave(now)),
        None => (100, None),
    };
    serde_json::json!({
        "serial": c.serial,
        "expires": c.expires,
        // Machines refuse an expired document: its waves open for nobody.
        "expired": c.expires <= now,
        "open_percent": open,
        "next_wave": next.map(|(at, percent)| serde_json::json!({"at": at, "percent": percent})),
        "failure_budget": c.failure_budget,
        "budget_spent": c.failure_budget.and_then(|b| b.spent(outcomes)),
    })
}

fn install(file: &Path, tries: u8) -> Result<()> {
    readable_file("bundle", file)?;
    let installed = here::install_file(file, tries, &mut |step| {
        eprintln!("gantry-update: {}", step_line(step));
    })?;
    print!("{}", installed_report(&installed, tries));
    Ok(())
}

fn status() -> Result<()> {
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

/// The verity parameters from image-build's manifest (its `verity` field) or a bare
/// [`Verity`] object.
fn read_verity(path: &Path) -> Result<Verity> {
    let bytes = std::fs::read(path).map_err(|source| CliError::Io {
        action: "read",
        path: path.to_owned(),
        source,
    })?;
    let invalid = |reason: String| CliError::Invalid {
        path: path.to_owned(),
        reason,
    };
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| invalid(format!("not JSON: {e}")))?;
    let (value, what) = match value.get("verity") {
        Some(v) => (v.clone(), "verity"),
        None => (value, "dm-verity parameters"),
    };
    Ok(serde_json::from_value(value).map_err(|e| invalid(format!("{what}: {e}")))?)
}

/// A bundle URL resolves against any channel URL to an http(s) one, as
/// [`here::check_server`] will resolve it.
fn check_bundle_url(url: &str) -> Result<()> {
    let bad = |reason: String| CliError::Arg {
        arg: "url",
        value: url.to_owned(),
        reason,
    };
    if url.is_empty() || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("is empty or holds a space or control character".into()).into());
    }
    let base = Url::parse("https://channel.invalid/updates/channel.json")
        .map_err(|e| bad(e.to_string()))?;
    let joined = base.join(url).map_err(|e| bad(e.to_string()))?;
    if !matches!(joined.scheme(), "http" | "https") {
        return Err(bad(format!("scheme {} is not http or https", joined.scheme())).into());
    }
    Ok(())
}

fn join_ids(ids: impl Iterator<Item = keys::KeyId>) -> String {
    ids.map(|id| id.to_string()).collect::<Vec<_>>().join(",")
}

fn step_line(step: Step) -> String {
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

fn installed_report(i: &Installed, tries: u8) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> std::result::Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("gantry-update").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn install_takes_a_file_and_tries_within_grubs_range() {
        let Command::Install { file, tries } = parse(&["install", "b.bundle"]).unwrap().command
        else {
            panic!("not install");
        };
        assert_eq!(file, Path::new("b.bundle"));
        assert_eq!(tries, UpdatePolicy::default().boot_tries());
        let Command::Install { tries, .. } =
            parse(&["install", "b", "--tries", "9"]).unwrap().command
        else {
            panic!("not install");
        };
        assert_eq!(tries, 9);
        for bad in ["0", "10", "x"] {
            assert!(parse(&["install", "b", "--tries", bad]).is_err(), "{bad}");
        }
        assert!(parse(&["install"]).is_err());
    }

    #[test]
    fn status_takes_no_arguments() {
        assert!(matches!(
            parse(&["status"]).unwrap().command,
            Command::Status
        ));
        assert!(parse(&["status", "extra"]).is_err());
    }

    #[test]
    fn verify_needs_a_keys_dir_or_key_files_but_not_both() {
        assert!(parse(&["verify", "b"]).is_err());
        assert!(parse(&["verify", "b", "--keys", "d", "--key", "k.pub"]).is_err());
        assert!(parse(&["verify", "b", "--key", "a.pub", "--key", "b.pub"]).is_ok());
        assert!(parse(&["verify", "b", "--keys", "d"]).is_ok());
    }

    #[test]
    fn channel_names_are_checked_when_parsed() {
        let base = [
            "channel", "--bundle", "b", "--url", "b", "--key", "k", "--out", "c",
        ];
        assert!(parse(&base).is_ok());
        let mut bad = base.to_vec();
        bad.extend(["--channel", "Stable!"]);
        assert!(parse(&bad).is_err());
    }

    #[test]
    fn sign_takes_a_cmdline_that_looks_like_options_and_its_own_version() {
        let cli = parse(&[
            "sign",
            "--kernel",
            "k",
            "--cmdline",
            "-v panic=10",
            "--root",
            "r",
            "--verity",
            "v",
            "--version",
            "0.2.0",
            "--rollback-index",
            "2",
            "--key",
            "a",
            "--key",
            "b",
            "--out",
            "o",
        ])
        .unwrap();
        let Command::Sign(a) = cli.command else {
            panic!("not sign");
        };
        assert_eq!(a.cmdline, "-v panic=10");
        assert_eq!(a.version, "0.2.0");
        assert_eq!((a.board.as_str(), a.arch.as_str()), ("generic", "x86_64"));
        assert_eq!(a.keys.len(), 2);
    }

    #[test]
    fn bundle_urls_must_resolve_to_http() {
        assert!(check_bundle_url("gantry-0.2.0.bundle").is_ok());
        assert!(check_bundle_url("https://cdn.example.net/b.bundle").is_ok());
        for bad in ["", "a b", "file:///etc/passwd", "ftp://x/b"] {
            assert!(check_bundle_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn key_file_names_keep_their_dots() {
        assert_eq!(
            with_suffix(Path::new("k/release-1.2"), ".key"),
            Path::new("k/release-1.2.key")
        );
    }

    #[test]
    fn the_install_report_shows_every_timing() {
        let report = installed_report(
            &Installed {
                slot: Slot::B,
                version: "0.2.0".into(),
                rollback_index: 2,
                root_bytes: 4096,
                verify: Duration::from_millis(1500),
                stream: Duration::from_millis(2),
                read_back: Duration::from_millis(3),
                total: Duration::from_millis(1600),
            },
            3,
        );
        for part in [
            "0.2.0",
            "slot B",
            "verify 1.500s",
            "stream 0.002s",
            "read_back 0.003s",
            "total 1.600s",
        ] {
            assert!(report.contains(part), "{part} in {report}");
        }
    }
}
