//! Where the machine config comes from, which copy wins, and the last good copy.
//!
//! Sources, tried in this order; **the first that has a config document wins**, and later
//! sources are not asked:
//!
//! 1. the kernel command line: `gantry.config=<base64 of the TOML>` (standard alphabet,
//!    padding optional; the kernel limits the whole command line to 2 KiB, and every local
//!    user can read it in `/proc/cmdline`, so keep secrets out of it);
//! 2. QEMU's `fw_cfg` file `opt/org.gantry/config` ([`super::FW_CFG_PATH`]);
//! 3. a config drive: a FAT or ISO 9660 volume labelled `CIDATA` or `GANTRY` with
//!    `user-data` (the config) and `meta-data` ([`super::drive`], [`super::user_data`]); a
//!    drive without `user-data` is not a source. Image archives in its `images/` are
//!    imported by the containers' image jobs (air-gapped hosts; see [`super::drive`]);
//! 4. an EC2-style instance metadata service ([`super::imds`]), asked only when none of the
//!    above has a config, because it needs the network: PID 1 starts the network (with the
//!    last good copy's settings, or DHCP on every NIC) and asks IMDS on a thread of its own.
//!
//! A config that is accepted is kept as the last good copy ([`super::last_good`]) and its
//! source is logged (`gantry-init: config loaded source=fw_cfg`). A config that is refused
//! (bad base64, not UTF-8, not TOML, a bad key) is logged once per reason with the key
//! (`gantry-init: config refused error=…`), and the machine runs on the last good copy
//! (`source=last-good`) — it does not fall through to a later source. When no source has a
//! config at all, the last good copy is used too, so a machine whose config drive was
//! removed keeps its config; with no copy either, the defaults apply (DHCP on every NIC).
//! A host name in `meta-data` (`local-hostname`) is used when the document has none.
//!
//! What takes effect when: the config settled at boot (every source but IMDS) is applied
//! whole. A config that IMDS delivers later settles the containers part at once (the
//! supervisor waits for [`ConfigHandle::wait`]), while its host name and network settings
//! take effect at the next boot, from the last good copy.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine;
use tracing::{error, info, warn};

use super::drive::{self, Mounter};
use super::imds::{self, ImdsSetting};
use super::last_good::{LastGood, StoreError};
use super::user_data::{self, MetaData};
use super::{ConfigError, MachineConfig, FW_CFG_PATH};
use crate::cmdline::{valid_hostname, BootParams};
use crate::{CONFIG_LOADED, CONFIG_REFUSED};

/// Logged when an accepted config is written as the last good copy, with `path=`.
pub const CONFIG_KEPT: &str = "gantry-init: config kept as the last good copy";
/// Logged when no last good copy is kept, with `reason=` (e.g. `/var` is in memory).
pub const CONFIG_NOT_KEPT: &str = "gantry-init: not keeping a last good copy of the config";

/// Where a config came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    KernelCmdline,
    FwCfg,
    ConfigDrive {
        device: String,
        label: String,
    },
    Imds {
        base: String,
    },
    /// The copy under `/var`, with the source it was first accepted from.
    LastGood {
        from: String,
    },
}

impl Source {
    /// A short stable name, logged as `source=`.
    pub fn kind(&self) -> &'static str {
        match self {
            Source::KernelCmdline => "cmdline",
            Source::FwCfg => "fw_cfg",
            Source::ConfigDrive { .. } => "config-drive",
            Source::Imds { .. } => "imds",
            Source::LastGood { .. } => "last-good",
        }
    }
}

impl fmt::Display for Source {
    /// The name used in errors, e.g. `config drive /dev/vdb (CIDATA)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::KernelCmdline => write!(f, "kernel command line gantry.config"),
            Source::FwCfg => write!(f, "fw_cfg opt/org.gantry/config"),
            Source::ConfigDrive { device, label } => write!(f, "config drive {device} ({label})"),
            Source::Imds { base } => write!(f, "imds {base}/latest/user-data"),
            Source::LastGood { from } => write!(f, "last good copy of {from}"),
        }
    }
}

/// A config document as a source gave it, before it is parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub source: Source,
    pub bytes: Vec<u8>,
    pub meta: MetaData,
}

/// An accepted config and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The config, with `meta-data`'s host name filled in when the document has none.
    pub config: MachineConfig,
    pub source: Source,
    pub meta: MetaData,
}

impl Accepted {
    fn new(mut config: MachineConfig, source: Source, meta: MetaData) -> Accepted {
        if config.hostname.is_none() {
            match &meta.local_hostname {
                Some(h) if valid_hostname(h) => config.hostname = Some(h.clone()),
                Some(h) => {
                    warn!(source = %source, hostname = %h, "ignoring invalid local-hostname in meta-data")
                }
                None => {}
            }
        }
        Accepted {
            config,
            source,
            meta,
        }
    }
}

/// Parses a document; on success also returns its text (what the last good copy keeps).
pub fn accept(doc: Document) -> Result<(Accepted, String), Vec<ConfigError>> {
    let name = doc.source.to_string();
    let text = user_data::config_text(doc.bytes, &name).map_err(|e| vec![e])?;
    let config = MachineConfig::parse(&text, &name)?;
    Ok((Accepted::new(config, doc.source, doc.meta), text))
}

/// Decodes `gantry.config=`'s value.
pub fn decode_cmdline(value: &str) -> Result<Vec<u8>, ConfigError> {
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    engine.decode(value.trim()).map_err(|e| ConfigError {
        source_name: Source::KernelCmdline.to_string(),
        key: "(document)".to_owned(),
        reason: format!("not base64 (standard alphabet A-Z a-z 0-9 + /): {e}"),
    })
}

/// What the config turned out to be once every source has been tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// Shared: every thread that waits gets the same config.
    Config(Arc<Accepted>),
    /// No config anywhere (or none that could be used, and no last good copy).
    Defaults,
}

impl Settled {
    pub fn config(&self) -> Option<&MachineConfig> {
        match self {
            Settled::Config(a) => Some(&a.config),
            Settled::Defaults => None,
        }
    }
}

/// The config as it becomes known; cheap to clone and share with other threads.
#[derive(Debug, Clone, Default)]
pub struct ConfigHandle {
    inner: Arc<(Mutex<Option<Settled>>, Condvar)>,
}

impl ConfigHandle {
    /// The settled config, waiting at most `timeout` for it (IMDS may still be asked);
    /// `None` when it is not settled by then.
    pub fn wait(&self, timeout: Duration) -> Option<Settled> {
        let (lock, cond) = &*self.inner;
        let deadline = Instant::now() + timeout;
        let mut slot = lock.lock().unwrap_or_else(PoisonError::into_inner);
        while slot.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            slot = cond
                .wait_timeout(slot, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        slot.clone()
    }

    /// The settled config, without waiting.
    pub fn get(&self) -> Option<Settled> {
        self.wait(Duration::ZERO)
    }

    /// Settles it; only the first call counts.
    fn settle(&self, settled: Settled) {
        let (lock, cond) = &*self.inner;
        let mut slot = lock.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(settled);
        }
        cond.notify_all();
    }
}

/// What [`Sources::load`] gives PID 1 at boot.
#[derive(Debug)]
pub struct BootConfig {
    at_boot: Option<Accepted>,
    handle: ConfigHandle,
}

impl BootConfig {
    /// The config to set the host name and start the network with now: the winning
    /// source's, or while IMDS is asked, the last good copy (`None`: defaults).
    pub fn at_boot(&self) -> Option<&MachineConfig> {
        self.at_boot.as_ref().map(|a| &a.config)
    }

    /// The config once settled (for the containers).
    pub fn handle(&self) -> ConfigHandle {
        self.handle.clone()
    }
}

/// Everything the sources are read from; [`Sources::for_pid1`] has the real paths.
pub struct Sources {
    /// `gantry.config=`'s raw value.
    pub cmdline_config: Option<String>,
    pub fw_cfg: PathBuf,
    pub sys_class_block: PathBuf,
    pub dev_dir: PathBuf,
    pub drive_mount_point: PathBuf,
    pub mounter: Box<dyn Mounter + Send>,
    pub last_good: LastGood,
    pub imds: ImdsSetting,
    pub imds_retry: imds::Retry,
}

impl fmt::Debug for Sources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sources")
            .field("cmdline_config", &self.cmdline_config.is_some())
            .field("fw_cfg", &self.fw_cfg)
            .field("sys_class_block", &self.sys_class_block)
            .field("dev_dir", &self.dev_dir)
            .field("drive_mount_point", &self.drive_mount_point)
            .field("last_good", &self.last_good)
            .field("imds", &self.imds)
            .finish_non_exhaustive()
    }
}

impl Sources {
    /// The sources PID 1 reads, with what the kernel command line says about them.
    pub fn for_pid1(params: &BootParams) -> Sources {
        Sources {
            cmdline_config: params.config.clone(),
            fw_cfg: PathBuf::from(FW_CFG_PATH),
            sys_class_block: PathBuf::from("/sys/class/block"),
            dev_dir: PathBuf::from("/dev"),
            drive_mount_point: PathBuf::from(drive::MOUNT_POINT),
            mounter: Box::new(drive::Kernel),
            last_good: LastGood::for_pid1(),
            imds: params.imds.clone(),
            imds_retry: imds::Retry::default(),
        }
    }

    /// Reads the sources as the module docs say; logs what it accepts and refuses. Never
    /// fails and never panics out: the worst case is the defaults.
    pub fn load(self) -> BootConfig {
        let handle = ConfigHandle::default();
        let shared = handle.clone();
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.load_into(shared)));
        run.unwrap_or_else(|_| {
            error!("gantry-init: panic while reading the config; using defaults");
            settle_fallback(&handle, None);
            BootConfig {
                at_boot: None,
                handle,
            }
        })
    }

    fn load_into(mut self, handle: ConfigHandle) -> BootConfig {
        let found = self.local();
        let fallback = || self.last_good_fallback();
        let at_boot = match found {
            Some(Ok(doc)) => match accept(doc) {
                Ok((accepted, text)) => {
                    log_loaded(&accepted);
                    self.keep(&accepted, &text);
                    Some(accepted)
                }
                Err(errors) => {
                    log_refused(&errors);
                    settle_fallback(&handle, fallback())
                }
            },
            Some(Err(e)) => {
                log_refused(&[e]);
                settle_fallback(&handle, fallback())
            }
            None => match self.imds.clone() {
                ImdsSetting::Off => {
                    info!("no config source has a config; gantry.imds=off");
                    settle_fallback(&handle, fallback())
                }
                ImdsSetting::At(endpoint) => {
                    let provisional = fallback();
                    info!(
                        imds = %endpoint,
                        until_then = provisional.as_ref().map_or("defaults", |_| "last-good"),
                        "no local config source has a config; asking the metadata service"
                    );
                    self.spawn_imds(endpoint, provisional.clone(), handle.clone());
                    return BootConfig {
                        at_boot: provisional,
                        handle,
                    };
                }
            },
        };
        if let Some(a) = &at_boot {
            handle.settle(Settled::Config(Arc::new(a.clone())));
        }
        BootConfig { at_boot, handle }
    }

    /// The first local source that has something: cmdline, fw_cfg, config drive.
    fn local(&mut self) -> Option<Result<Document, ConfigError>> {
        if let Some(value) = &self.cmdline_config {
            return Some(decode_cmdline(value).map(|bytes| Document {
                source: Source::KernelCmdline,
                bytes,
                meta: MetaData::default(),
            }));
        }
        match std::fs::read(&self.fw_cfg) {
            Ok(bytes) => {
                return Some(Ok(Document {
                    source: Source::FwCfg,
                    bytes,
                    meta: MetaData::default(),
                }))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Some(Err(ConfigError {
                    source_name: Source::FwCfg.to_string(),
                    key: "(document)".to_owned(),
                    reason: format!("cannot read {}: {e}", self.fw_cfg.display()),
                }))
            }
        }
        let volume = drive::find(&self.sys_class_block, &self.dev_dir)?;
        let source = Source::ConfigDrive {
            device: volume.device.display().to_string(),
            label: volume.label.clone(),
        };
        match drive::read(&volume, &self.drive_mount_point, self.mounter.as_mut()) {
            Ok(drive::Contents {
                user_data: Some(bytes),
                meta,
                ..
            }) => Some(Ok(Document {
                source,
                bytes,
                meta,
            })),
            Ok(drive::Contents {
                user_data: None, ..
            }) => {
                warn!(source = %source, "config drive has no user-data; not a config source");
                None
            }
            Err(e) => Some(Err(ConfigError {
                source_name: source.to_string(),
                key: "(document)".to_owned(),
                reason: e.to_string(),
            })),
        }
    }

    /// The last good copy, when there is one that still parses.
    fn last_good_fallback(&self) -> Option<Accepted> {
        match self.last_good.load() {
            Ok(Some(stored)) => Some(Accepted::new(
                stored.config,
                Source::LastGood { from: stored.from },
                stored.meta,
            )),
            Ok(None) => None,
            Err(errors) => {
                log_refused(&errors);
                None
            }
        }
    }

    /// Keeps an accepted config as the last good copy, or says why not.
    fn keep(&self, accepted: &Accepted, text: &str) {
        keep(&self.last_good, accepted, text);
    }

    fn spawn_imds(
        &self,
        endpoint: imds::Endpoint,
        provisional: Option<Accepted>,
        handle: ConfigHandle,
    ) {
        let last_good = self.last_good.clone();
        let retry = self.imds_retry;
        let fallback_handle = handle.clone();
        let fallback = provisional.clone();
        let spawned = std::thread::Builder::new()
            .name("imds".into())
            .spawn(move || {
                let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    from_imds(&endpoint, retry, &last_good, provisional, &handle)
                }));
                if run.is_err() {
                    error!("imds: panic caught; using the last good config");
                    settle_fallback(&handle, fallback);
                }
            });
        if let Err(e) = spawned {
            error!(error = %e, "imds: cannot start its thread; using the last good config");
            settle_fallback(&fallback_handle, self.last_good_fallback());
        }
    }
}

/// Asks IMDS and settles `handle` with what it gives, or with `provisional`.
fn from_imds(
    endpoint: &imds::Endpoint,
    retry: imds::Retry,
    last_good: &LastGood,
    provisional: Option<Accepted>,
    handle: &ConfigHandle,
) {
    let answer = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))
        .and_then(|rt| {
            let client = imds::Client::new(endpoint, retry).map_err(|e| e.to_string())?;
            rt.block_on(client.fetch())
                .map(|a| (a, client.base().to_owned()))
                .map_err(|e| e.to_string())
        });
    let (answer, base) = match answer {
        Ok(a) => a,
        Err(e) => {
            warn!(error = %e, "imds: no config from the metadata service");
            settle_fallback(handle, provisional);
            return;
        }
    };
    let Some(bytes) = answer.user_data else {
        info!(imds = %base, "imds: the metadata service has no user data");
        settle_fallback(handle, provisional);
        return;
    };
    let doc = Document {
        source: Source::Imds { base },
        bytes,
        meta: answer.meta,
    };
    match accept(doc) {
        Ok((accepted, text)) => {
            log_loaded(&accepted);
            let boot = provisional.as_ref().map(|p| &p.config);
            let now = &accepted.config;
            if boot.map(|b| (&b.hostname, &b.network)) != Some((&now.hostname, &now.network)) {
                info!("imds: this config's host name and network settings take effect at the next boot");
            }
            keep(last_good, &accepted, &text);
            handle.settle(Settled::Config(Arc::new(accepted)));
        }
        Err(errors) => {
            log_refused(&errors);
            settle_fallback(handle, provisional);
        }
    }
}

fn keep(last_good: &LastGood, accepted: &Accepted, text: &str) {
    match last_good.store(text, &accepted.source.to_string(), &accepted.meta) {
        Ok(true) => info!(path = %last_good.path().display(), "{CONFIG_KEPT}"),
        Ok(false) => {}
        Err(StoreError::NotPersistent(why)) => {
            warn!(reason = %why, "{CONFIG_NOT_KEPT}")
        }
        Err(e) => warn!(reason = %e, "{CONFIG_NOT_KEPT}"),
    }
}

/// Settles with the last good copy or the defaults, logging which; returns what the boot
/// uses now.
fn settle_fallback(handle: &ConfigHandle, fallback: Option<Accepted>) -> Option<Accepted> {
    match &fallback {
        Some(a) => {
            log_loaded(a);
            handle.settle(Settled::Config(Arc::new(a.clone())));
        }
        None => {
            info!("no machine config; using defaults (DHCP on every NIC)");
            handle.settle(Settled::Defaults);
        }
    }
    fallback
}

fn log_loaded(a: &Accepted) {
    info!(
        source = a.source.kind(),
        from = %a.source,
        instance_id = a.meta.instance_id.as_deref().unwrap_or("-"),
        "{CONFIG_LOADED}"
    );
}

fn log_refused(errors: &[ConfigError]) {
    for e in errors {
        error!(error = %e, "{CONFIG_REFUSED}");
    }
}

#[cfg(test)]
#[path = "sources_tests.rs"]
mod tests;
