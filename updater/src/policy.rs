//! The update policy: the `[update]` section of the machine config.
//!
//! It says where the updater looks for new versions, how often, how many boots a new
//! version gets to prove itself, and when the machine may reboot into it. Every key has a
//! default, so a config without `[update]` is valid: no server (no automatic checks),
//! reboot immediately after an install, 3 tries, 5 minutes for the health gate.
//!
//! ```toml
//! [update]
//! server = "https://updates.example.net/gantry/stable.json"  # the channel document
//! channel = "stable"              # the channel the signed document must name
//! check_interval_secs = 3600      # how often the server is asked (10 s to a week)
//! reboot = "window"               # "immediately" (default), "off" or "window"
//! tries = 3                       # boots a new version gets before GRUB falls back (1 to 9)
//! health_timeout_secs = 300       # how long the health gate may take on a trial boot
//! lease = "etcd"                  # reboot coordination: "none" (default), "etcd", "fleetlock"
//! insecure = false                # true: allow plain http:// to hosts other than loopback
//! ignore_waves = false            # true: install when the channel names a release, waves or not
//! pin_version = "1.4.2"           # install only this version (left out: follow the channel)
//!
//! [update.etcd]                   # only with lease = "etcd"
//! endpoint = "https://etcd.example.net:2379"
//! group = "workers"               # the machines sharing the slots (default "default")
//! slots = 1                       # at most this many rebooting into an update at once
//! ttl_secs = 900                  # a dead holder's slot comes back after this
//!
//! [update.window]                 # only with reboot = "window"; times are UTC
//! days = ["sat", "sun"]           # mon tue wed thu fri sat sun; every day when left out
//! start = "02:30"                 # HH:MM
//! duration_mins = 120             # 1 minute to a week; a window may run past midnight
//! ```
//!
//! - `server`: the `https://` URL of the channel document, which names the newest bundle.
//!   A user or password in the URL is refused, since URLs are logged. Without a server the
//!   machine installs only what it is handed.
//! - `insecure`: plain `http://` is refused for the channel document and the bundle (and
//!   for a redirect to either) unless the host is loopback or `insecure = true`. The
//!   document and the bundle are signed, and the document's serial and expiry stop replays
//!   and freezes, but over plain HTTP anyone on the path can withhold updates silently or
//!   see which version a machine runs; `insecure` is for test networks and air-gapped
//!   mirrors, and is logged at each check.
//! - `ignore_waves`, `pin_version`: the machine's say over a staged rollout (see
//!   [`crate::rollout`]): by default a machine installs a release only once its wave is
//!   open; `ignore_waves` makes it a canary; `pin_version` holds it on one version (it
//!   still installs that version if the channel names it, waves permitting).
//! - `channel`: lower-case letters, digits and `-`, at most 63. The signed channel document
//!   names its channel, and a document for another channel is refused, so a machine on
//!   `stable` cannot be fed a `beta` document from the same server.
//! - `reboot`: what happens once a new version is installed into the other slot.
//!   `"immediately"` reboots into it at once; `"off"` installs and waits for the operator to
//!   reboot; `"window"` reboots at the next opening of the maintenance window in
//!   `[update.window]` (at once when the install finishes inside the window). A window
//!   opens at `start` on each of its `days` and stays open `duration_mins`, so
//!   `days = ["sun"], start = "23:00", duration_mins = 120` is open from Sunday 23:00
//!   until Monday 01:00, across the week's end.
//! - `tries`: the boot tries GRUB gives the new slot (see [`crate::grubenv`]); a kernel
//!   panic, a hang caught by the watchdog, or a failed health gate each spend one.
//! - `health_timeout_secs`: on a trial boot, how long PID 1 waits for the health gate (the
//!   network has an address, every `required` container is running and healthy) before it
//!   gives up and reboots.
//! - `lease`: who must agree before the machine reboots into an update: `"none"` (always
//!   granted) or `"etcd"`, a semaphore of `slots` in etcd for the machines of `group`,
//!   taken before the reboot and given back once the new version is marked good or rolled
//!   back; a machine that dies holding a slot frees it after `ttl_secs` (see
//!   [`crate::etcd_lease`]); or `"fleetlock"`, a client of Zincati's FleetLock protocol
//!   (`[update.fleetlock] url`, `group`; see [`crate::fleetlock`]). The holder is the
//!   machine id, so `/etc/machine-id` must exist.
//!
//! Key paths in errors are relative to the section here; the machine config prefixes
//! `update.`, e.g. `update.tries: 12 is more than 9`. Malformed values (a bad URL, day or
//! time) are refused while parsing; out-of-range numbers and keys that contradict each
//! other are found by [`UpdatePolicy::problems`], all at once.
//!
//! Times are unix seconds in UTC throughout ([`unix_secs`]): a machine's time zone is not
//! configured, and UTC has no daylight-saving gaps that would skip or double a window.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use reqwest::Url;
use serde::{Deserialize, Deserializer};

use crate::grubenv::MAX_TRIES;

mod lease;
pub use lease::{
    EtcdSettings, FleetlockSettings, LeaseError, LeaseKind, NoLease, RebootLease, Refused,
    MIN_ETCD_TTL_SECS,
};
mod window;
pub use window::{DaySet, TimeOfDay, Weekday, Window};

/// The shortest and longest check intervals: 10 s (for tests) and a week.
pub const CHECK_INTERVAL_SECS: std::ops::RangeInclusive<u64> = 10..=WEEK_SECS;
/// The shortest and longest health gate: 10 s and a day.
pub const HEALTH_TIMEOUT_SECS: std::ops::RangeInclusive<u64> = 10..=86_400;
/// The longest maintenance window, in minutes: a week (always open).
pub const MAX_WINDOW_MINS: u32 = 7 * 24 * 60;
/// The longest channel name.
pub const MAX_CHANNEL_LEN: usize = 63;

const DAY_SECS: u64 = 86_400;
const WEEK_SECS: u64 = 7 * DAY_SECS;

/// The `[update]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpdatePolicy {
    /// The channel document's URL; `None`: no automatic checks.
    #[serde(deserialize_with = "server_url")]
    pub server: Option<Url>,
    /// The channel the signed channel document must name.
    pub channel: Channel,
    /// Seconds between checks of the server.
    pub check_interval_secs: u64,
    /// When to reboot into an installed update.
    pub reboot: RebootStrategy,
    /// The maintenance window; present exactly when `reboot` is `window`.
    pub window: Option<Window>,
    /// Boot tries a new slot gets, 1 to [`MAX_TRIES`].
    pub tries: u32,
    /// Seconds the health gate may take on a trial boot.
    pub health_timeout_secs: u64,
    /// Who must agree to a reboot into an update.
    pub lease: LeaseKind,
    /// `[update.etcd]`: the semaphore for `lease = "etcd"`.
    pub etcd: Option<EtcdSettings>,
    /// `[update.fleetlock]`: the server for `lease = "fleetlock"`.
    pub fleetlock: Option<FleetlockSettings>,
    /// Plain http:// to hosts other than loopback is allowed.
    pub insecure: bool,
    /// Install a release as soon as the channel names it, whatever its waves say.
    pub ignore_waves: bool,
    /// Install only this version; the channel naming another is logged and left alone.
    pub pin_version: Option<String>,
}

impl Default for UpdatePolicy {
    fn default() -> Self {
        UpdatePolicy {
            server: None,
            channel: Channel::default(),
            check_interval_secs: 3600,
            reboot: RebootStrategy::Immediately,
            window: None,
            tries: 3,
            health_timeout_secs: 300,
            lease: LeaseKind::None,
            etcd: None,
            fleetlock: None,
            insecure: false,
            ignore_waves: false,
            pin_version: None,
        }
    }
}

impl UpdatePolicy {
    /// Every problem as (key path within the section, reason); empty when the policy is
    /// usable.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut range = |key: &str, v: u64, r: &std::ops::RangeInclusive<u64>, max: &str| {
            if v < *r.start() {
                out.push((key.to_owned(), format!("{v} is less than {}", r.start())));
            } else if v > *r.end() {
                out.push((
                    key.to_owned(),
                    format!("{v} is more than {max} ({})", r.end()),
                ));
            }
        };
        range(
            "check_interval_secs",
            self.check_interval_secs,
            &CHECK_INTERVAL_SECS,
            "a week",
        );
        range(
            "health_timeout_secs",
            self.health_timeout_secs,
            &HEALTH_TIMEOUT_SECS,
            "a day",
        );
        match (self.lease, &self.etcd) {
            (LeaseKind::Etcd, None) => out.push((
                "lease".to_owned(),
                "\"etcd\" needs an [update.etcd] section with its endpoint".to_owned(),
            )),
            (LeaseKind::None | LeaseKind::Fleetlock, Some(_)) => out.push((
                "etcd".to_owned(),
                format!(
                    "is given but lease is \"{}\"; say lease = \"etcd\" to use it",
                    self.lease
                ),
            )),
            (_, Some(e)) => {
                if !(1..=10_000).contains(&e.slots) {
                    out.push((
                        "etcd.slots".to_owned(),
                        format!("{} is not 1 to 10000", e.slots),
                    ));
                }
                // The lease is renewed on trial: it has to outlast the reboot only.
                if !(MIN_ETCD_TTL_SECS..=86_400).contains(&e.ttl_secs) {
                    out.push((
                        "etcd.ttl_secs".to_owned(),
                        format!(
                            "{} is not {MIN_ETCD_TTL_SECS} (a reboot) to 86400",
                            e.ttl_secs
                        ),
                    ));
                }
                if let Err(reason) = self.transport_problem(&e.endpoint) {
                    out.push(("etcd.endpoint".to_owned(), reason));
                }
            }
            (LeaseKind::None | LeaseKind::Fleetlock, None) => {}
        }
        match (self.lease, &self.fleetlock) {
            (LeaseKind::Fleetlock, None) => out.push((
                "lease".to_owned(),
                "\"fleetlock\" needs an [update.fleetlock] section with its url".to_owned(),
            )),
            (LeaseKind::Fleetlock, Some(f)) => {
                if let Err(reason) = self.transport_problem(&f.url) {
                    out.push(("fleetlock.url".to_owned(), reason));
                }
            }
            (_, Some(_)) => out.push((
                "fleetlock".to_owned(),
                format!(
                    "is given but lease is \"{}\"; say lease = \"fleetlock\" to use it",
                    self.lease
                ),
            )),
            (_, None) => {}
        }
        if let Some(v) = &self.pin_version {
            if v.is_empty() || v.len() > 64 || v.chars().any(|c| c.is_control() || c == ' ') {
                out.push((
                    "pin_version".to_owned(),
                    format!("{v:?} is not a version (1 to 64 characters, no spaces)"),
                ));
            }
        }
        if let Some(Err(reason)) = self.server.as_ref().map(|u| self.transport_problem(u)) {
            out.push(("server".to_owned(), reason));
        }
        if self.tries == 0 {
            out.push((
                "tries".to_owned(),
                "0 would never boot the new version".to_owned(),
            ));
        } else if self.tries > u32::from(MAX_TRIES) {
            out.push((
                "tries".to_owned(),
                format!("{} is more than {MAX_TRIES}", self.tries),
            ));
        }
        match (&self.window, self.reboot) {
            (None, RebootStrategy::Window) => out.push((
                "reboot".to_owned(),
                "\"window\" needs an [update.window] section".to_owned(),
            )),
            (Some(_), RebootStrategy::Immediately | RebootStrategy::Off) => out.push((
                "window".to_owned(),
                format!(
                    "is given but reboot is \"{}\"; say reboot = \"window\" to use it",
                    self.reboot
                ),
            )),
            (Some(w), RebootStrategy::Window) => {
                if w.duration_mins == 0 {
                    out.push((
                        "window.duration_mins".to_owned(),
                        "0 would never open".to_owned(),
                    ));
                } else if w.duration_mins > MAX_WINDOW_MINS {
                    out.push((
                        "window.duration_mins".to_owned(),
                        format!(
                            "{} is more than a week ({MAX_WINDOW_MINS})",
                            w.duration_mins
                        ),
                    ));
                }
            }
            (None, _) => {}
        }
        out
    }

    /// Whether the updater may fetch `url`: https, or plain http to a loopback host or
    /// with `insecure` set; otherwise the reason, naming the URL.
    pub fn transport_problem(&self, url: &Url) -> Result<(), String> {
        if url.scheme() == "https" || self.insecure || is_loopback(url) {
            return Ok(());
        }
        Err(format!(
            "{:?} is plain HTTP to a host that is not loopback; use https://, or set \
             update.insecure = true for a test network or an air-gapped mirror",
            url.as_str()
        ))
    }

    /// The boot tries for a new slot, within 1 to [`MAX_TRIES`] whatever the field holds.
    pub fn boot_tries(&self) -> u8 {
        u8::try_from(self.tries.clamp(1, u32::from(MAX_TRIES))).unwrap_or(MAX_TRIES)
    }

    /// The time between checks of the server.
    pub fn check_interval(&self) -> Duration {
        Duration::from_secs(self.check_interval_secs)
    }

    /// The health gate's time limit.
    pub fn health_timeout(&self) -> Duration {
        Duration::from_secs(self.health_timeout_secs)
    }

    /// When the machine may reboot into an update installed by `now` (unix seconds).
    /// A `window` strategy without a window (refused by [`Self::problems`]) never reboots.
    pub fn reboot_at(&self, now: u64) -> RebootAt {
        match (self.reboot, &self.window) {
            (RebootStrategy::Immediately, _) => RebootAt::Now,
            (RebootStrategy::Off, _) | (RebootStrategy::Window, None) => RebootAt::Manual,
            (RebootStrategy::Window, Some(w)) if w.contains(now) => RebootAt::Now,
            (RebootStrategy::Window, Some(w)) => RebootAt::At(w.next_start(now)),
        }
    }

    /// The fleet's record of releases (see [`crate::fleet`]), in the etcd of
    /// `[update.etcd]` if there is one.
    pub fn fleet_store(&self) -> Option<crate::fleet::Fleet> {
        self.etcd.as_ref().map(|e| crate::fleet::Fleet {
            etcd: crate::etcd::Etcd {
                endpoint: e.endpoint.clone(),
                fetcher: crate::fetch::Fetcher::new(crate::fetch::FetchOptions {
                    insecure: self.insecure,
                    ..crate::fetch::FetchOptions::default()
                }),
            },
        })
    }

    /// The lease to take before a reboot into an update. With `lease = "etcd"` the holder
    /// is the machine id in `machine_id_file`; without one the lease is never granted, and
    /// says why (a machine must not reboot outside the fleet's count).
    pub fn reboot_lease(&self, machine_id_file: &std::path::Path) -> Box<dyn RebootLease + Send> {
        if self.lease == LeaseKind::Fleetlock {
            let Some(f) = &self.fleetlock else {
                return Box::new(Refused(
                    "lease = \"fleetlock\" without an [update.fleetlock] section".into(),
                ));
            };
            return match crate::rollout::read_machine_id(machine_id_file) {
                Ok(id) => Box::new(crate::fleetlock::FleetLock {
                    base: f.url.clone(),
                    group: f.group.as_str().to_owned(),
                    id,
                    fetcher: crate::fetch::Fetcher::new(crate::fetch::FetchOptions {
                        insecure: self.insecure,
                        ..crate::fetch::FetchOptions::default()
                    }),
                }),
                Err(e) => Box::new(Refused(format!(
                    "the fleetlock client's id is the machine id: {e}"
                ))),
            };
        }
        match (self.lease, &self.etcd) {
            (LeaseKind::None | LeaseKind::Fleetlock, _) => Box::new(NoLease),
            (LeaseKind::Etcd, None) => Box::new(Refused(
                "lease = \"etcd\" without an [update.etcd] section".into(),
            )),
            (LeaseKind::Etcd, Some(e)) => match crate::rollout::read_machine_id(machine_id_file) {
                Ok(holder) => Box::new(crate::etcd_lease::EtcdLease {
                    endpoint: e.endpoint.clone(),
                    group: e.group.as_str().to_owned(),
                    slots: e.slots,
                    ttl_secs: e.ttl_secs,
                    holder,
                    fetcher: crate::fetch::Fetcher::new(crate::fetch::FetchOptions {
                        insecure: self.insecure,
                        ..crate::fetch::FetchOptions::default()
                    }),
                }),
                Err(e) => Box::new(Refused(format!(
                    "the etcd lease's holder is the machine id: {e}"
                ))),
            },
        }
    }
}

/// When a reboot into an installed update may happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebootAt {
    /// Now.
    Now,
    /// At this unix time (the next opening of the window).
    At(u64),
    /// Only when the operator asks (`reboot = "off"`).
    Manual,
}

/// `reboot = "immediately" | "off" | "window"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RebootStrategy {
    /// Reboot as soon as the update is installed.
    #[default]
    Immediately,
    /// Install and wait for the operator.
    Off,
    /// Reboot in the maintenance window of `[update.window]`.
    Window,
}

impl FromStr for RebootStrategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "immediately" => Ok(RebootStrategy::Immediately),
            "off" => Ok(RebootStrategy::Off),
            "window" => Ok(RebootStrategy::Window),
            _ => Err(format!(
                "{s:?} is not a reboot strategy (immediately, off, window)"
            )),
        }
    }
}

impl fmt::Display for RebootStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RebootStrategy::Immediately => "immediately",
            RebootStrategy::Off => "off",
            RebootStrategy::Window => "window",
        })
    }
}

/// A channel name: `[a-z0-9-]+`, at most [`MAX_CHANNEL_LEN`] bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Channel(String);

impl Channel {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Channel {
    fn default() -> Self {
        Channel("stable".to_owned())
    }
}

impl FromStr for Channel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= MAX_CHANNEL_LEN
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(Channel(s.to_owned()))
        } else {
            Err(format!(
                "{s:?} is not a channel name (1 to {MAX_CHANNEL_LEN} of a-z, 0-9 and '-')"
            ))
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `t` in unix seconds; 0 for a time before 1970.
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Parses `server`: an absolute http(s) URL with a host and no user or password.
pub fn parse_server_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s).map_err(|e| format!("{s:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{s:?} is not an http:// or https:// URL"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{s:?} has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "the URL for {} has a user or password, which would be logged; not supported",
            url.host_str().unwrap_or_default()
        ));
    }
    Ok(url)
}

/// Whether `url`'s host is this machine: `localhost`, 127.0.0.0/8 or ::1.
pub fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback())
}

fn server_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Url>, D::Error> {
    let s = String::deserialize(d)?;
    parse_server_url(&s)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

fn from_str<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr<Err = String>,
{
    let s = String::deserialize(d)?;
    s.parse().map_err(serde::de::Error::custom)
}

macro_rules! deserialize_from_str {
    ($($t:ty),*) => {$(
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                from_str(d)
            }
        }
    )*};
}
deserialize_from_str!(Channel, RebootStrategy, LeaseKind, Weekday, TimeOfDay);

#[cfg(test)]
mod tests;
