//! Reboot coordination, `lease` and its sections `[update.etcd]` and `[update.fleetlock]`:
//! the settings, and the [`RebootLease`] the updater asks before it reboots into an update.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

use super::{parse_server_url, Channel};
use crate::fetch::Url;

/// `lease = "none" | "etcd"`: fleet-wide reboot coordination.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LeaseKind {
    /// No coordination: the lease is always granted ([`NoLease`]).
    #[default]
    None,
    /// A semaphore in etcd ([`crate::etcd_lease`], `[update.etcd]`).
    Etcd,
    /// A FleetLock server ([`crate::fleetlock`], `[update.fleetlock]`).
    Fleetlock,
}

impl fmt::Display for LeaseKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LeaseKind::None => "none",
            LeaseKind::Etcd => "etcd",
            LeaseKind::Fleetlock => "fleetlock",
        })
    }
}

impl FromStr for LeaseKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(LeaseKind::None),
            "etcd" => Ok(LeaseKind::Etcd),
            "fleetlock" => Ok(LeaseKind::Fleetlock),
            _ => Err(format!(
                "{s:?} is not a lease kind (\"none\", \"etcd\" or \"fleetlock\")"
            )),
        }
    }
}

/// `[update.etcd]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdSettings {
    /// etcd's client URL (`https://`, or `http://` on loopback or with `insecure`).
    #[serde(deserialize_with = "endpoint_url")]
    pub endpoint: Url,
    /// The machines that share the slots (default `default`); the same rules as a channel
    /// name.
    #[serde(default = "default_group")]
    pub group: Channel,
    /// How many machines of the group may be rebooting into an update at once.
    #[serde(default = "one")]
    pub slots: u32,
    /// How long a slot is held without a release (a machine that died), in seconds.
    #[serde(default = "fifteen_minutes")]
    pub ttl_secs: u64,
}

fn default_group() -> Channel {
    Channel("default".to_owned())
}

fn one() -> u32 {
    1
}

fn fifteen_minutes() -> u64 {
    900
}

fn endpoint_url<'de, D: Deserializer<'de>>(d: D) -> Result<Url, D::Error> {
    let s = String::deserialize(d)?;
    parse_server_url(&s).map_err(serde::de::Error::custom)
}

/// `[update.fleetlock]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetlockSettings {
    /// The server's base URL (`https://`, or `http://` on loopback or with `insecure`).
    #[serde(deserialize_with = "endpoint_url")]
    pub url: Url,
    /// The group sent with each request (default `default`).
    #[serde(default = "default_group")]
    pub group: Channel,
}

/// A lease that is never granted, for a configuration that cannot coordinate (logged at
/// each try).
#[derive(Debug, Clone)]
pub struct Refused(pub String);

impl RebootLease for Refused {
    fn acquire(&mut self, _version: &str) -> Result<bool, LeaseError> {
        Err(LeaseError {
            reason: self.0.clone(),
        })
    }
    fn release(&mut self, _version: &str) -> Result<(), LeaseError> {
        Ok(())
    }
}

/// The shortest etcd lease (`[update.etcd] ttl_secs`): a machine must get through its
/// shutdown and its reboot (firmware, kernel, the network up) within it, before its
/// renewals start. Firmware of real servers can take minutes: the default is 15 minutes.
pub const MIN_ETCD_TTL_SECS: u64 = 60;

/// The right to reboot into an update, shared by a fleet.
///
/// The updater calls [`acquire`](Self::acquire) when an installed update is due to reboot
/// (by [`UpdatePolicy::reboot_at`]) and reboots only on `Ok(true)`; on `Ok(false)` it asks
/// again later. The lease must outlive the reboot (it is held by the machine, not by a
/// connection): the next boot renews it while on trial ([`renew`](Self::renew)) and calls
/// [`release`](Self::release) once the new version is marked good, or after a rollback to
/// the old one.
pub trait RebootLease: fmt::Debug {
    /// Asks for the lease to reboot into `version`; `Ok(false)`: not now.
    fn acquire(&mut self, version: &str) -> Result<bool, LeaseError>;
    /// Gives the lease taken for `version` back; a lease this machine holds for another
    /// version (taken since, for a newer update) stays.
    fn release(&mut self, version: &str) -> Result<(), LeaseError>;
    /// How often a held lease must be renewed while the new version is on trial, for
    /// leases that expire; `None` (the default): it is held until given back.
    fn renew_every(&self) -> Option<std::time::Duration> {
        None
    }
    /// Renews the lease this machine holds: `Ok(false)` when it holds none (never taken,
    /// or expired while the machine was down). Leases that do not expire are always held.
    fn renew(&mut self) -> Result<bool, LeaseError> {
        Ok(true)
    }
}

/// A lease that could not be asked for or given back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("reboot lease: {reason}")]
pub struct LeaseError {
    pub reason: String,
}

/// `lease = "none"`: always granted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoLease;

impl RebootLease for NoLease {
    fn acquire(&mut self, _version: &str) -> Result<bool, LeaseError> {
        Ok(true)
    }
    fn release(&mut self, _version: &str) -> Result<(), LeaseError> {
        Ok(())
    }
}
