//! `lease = "etcd"`: a reboot semaphore in etcd, so that at most `slots` machines of a
//! group are between "about to reboot into a new version" and "marked good" at once.
//!
//! It speaks etcd's v3 API through [`crate::etcd`]. The recipe is etcd's own for
//! semaphores:
//!
//! 1. grant a lease of `ttl_secs`;
//! 2. put `/gantry/reboot/<group>/<machine id>` (the version and the time) on that lease;
//! 3. read the group's keys in the order they were created (`create_revision`), at most
//!    `slots` of them: a machine whose key is among those holds a slot; one whose key is
//!    not deletes it, revokes the lease and asks again at its next check.
//!
//! The order of creation is etcd's total order, so two machines that put at once cannot
//! both count themselves in: the later one sees the earlier one's key. A holder that dies
//! (a power cut mid-update, a machine that never comes back) frees its slot when its lease
//! expires, unlike locksmith's semaphore, which needs `locksmithctl unlock`. While the new
//! version is on trial the machine renews its lease every third of `ttl_secs`
//! ([`RebootLease::renew`]), so the lease only has to outlive the shutdown and the reboot
//! (`ttl_secs`, default 15 minutes, at least a minute); a machine slower than that loses
//! its slot early and another may start, and one that dies in the health gate frees its
//! slot a TTL after its last renewal. `release` (after mark-good or after a rollback)
//! deletes the key and revokes the lease, unless the key was taken since for a newer
//! version. Holder ids are machine ids (`/etc/machine-id`), so a machine that
//! asks again while it holds is told yes without taking a second slot.

use serde_json::json;

use crate::etcd::Etcd;
use crate::fetch::{Fetcher, Url};
use crate::policy::{LeaseError, RebootLease};

/// Where the groups' semaphores live.
pub const PREFIX: &str = "/gantry/reboot/";

/// The semaphore of one machine in one group.
#[derive(Debug, Clone)]
pub struct EtcdLease {
    /// The etcd endpoint, e.g. `http://10.0.2.102:2379`.
    pub endpoint: Url,
    pub group: String,
    pub slots: u32,
    pub ttl_secs: u64,
    /// This machine's id: the holder's name.
    pub holder: String,
    pub fetcher: Fetcher,
}

/// One key of a group: its holder and the lease it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub holder: String,
    pub lease: i64,
    pub value: String,
}

fn lease_error(reason: String) -> LeaseError {
    LeaseError { reason }
}

impl EtcdLease {
    fn key(&self) -> String {
        format!("{PREFIX}{}/{}", self.group, self.holder)
    }

    fn etcd(&self) -> Etcd {
        Etcd {
            endpoint: self.endpoint.clone(),
            fetcher: self.fetcher.clone(),
        }
    }

    /// The group's holders, oldest first: the first `slots` hold the slots.
    pub fn holders(&self) -> Result<Vec<Holder>, LeaseError> {
        holders(&self.etcd(), &self.group).map_err(lease_error)
    }
}

/// The holders of `group`'s semaphore, oldest first.
pub fn holders(etcd: &Etcd, group: &str) -> Result<Vec<Holder>, String> {
    let prefix = format!("{PREFIX}{group}/");
    etcd.range_prefix(&prefix)?
        .into_iter()
        .map(|kv| {
            let holder = kv
                .key
                .strip_prefix(&prefix)
                .ok_or_else(|| format!("etcd {}: a key outside the group", etcd.endpoint))?
                .to_owned();
            Ok(Holder {
                holder,
                lease: kv.lease,
                value: kv.value,
            })
        })
        .collect()
}

impl RebootLease for EtcdLease {
    fn acquire(&mut self, version: &str) -> Result<bool, LeaseError> {
        let slots = self.slots as usize;
        let holds = |h: &[Holder]| h.iter().take(slots).any(|h| h.holder == self.holder);
        if holds(&self.holders()?) {
            return Ok(true);
        }
        let etcd = self.etcd();
        let lease = etcd.grant(self.ttl_secs).map_err(lease_error)?;
        let value = json!({
            "version": version,
            "since": crate::policy::unix_secs(std::time::SystemTime::now()),
        })
        .to_string();
        etcd.put(&self.key(), &value, Some(lease))
            .map_err(lease_error)?;
        if holds(&self.holders()?) {
            return Ok(true);
        }
        // Not among the first: out of the queue again, so as not to hold a later slot.
        etcd.revoke(lease).map_err(lease_error)?;
        Ok(false)
    }

    fn renew_every(&self) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_secs((self.ttl_secs / 3).max(1)))
    }

    fn renew(&mut self) -> Result<bool, LeaseError> {
        let etcd = self.etcd();
        let mut held = false;
        for h in self.holders()? {
            if h.holder == self.holder && h.lease != 0 {
                held |= etcd.keep_alive(h.lease).map_err(lease_error)?.is_some();
            }
        }
        Ok(held)
    }

    fn release(&mut self, version: &str) -> Result<(), LeaseError> {
        let mine: Vec<Holder> = self
            .holders()?
            .into_iter()
            .filter(|h| h.holder == self.holder)
            .collect();
        // Taken since for a newer update (a late release of the last one must not free
        // the slot this machine reboots in). Acquire and release of one machine are
        // serialised by its caller, and no other machine writes this key.
        let held_for = |h: &Holder| {
            serde_json::from_str::<serde_json::Value>(&h.value)
                .ok()
                .and_then(|v| v["version"].as_str().map(str::to_owned))
        };
        if mine
            .iter()
            .any(|h| held_for(h).is_some_and(|v| v != version))
        {
            return Ok(());
        }
        let etcd = self.etcd();
        etcd.delete(&self.key()).map_err(lease_error)?;
        for h in mine.iter().filter(|h| h.lease != 0) {
            // Gone already (expired) is as good as revoked.
            let _ = etcd.revoke(h.lease);
        }
        Ok(())
    }
}
