//! Address management for one network: which container holds which address of the
//! subnet, and which host ports it publishes.
//!
//! The leases live in `<state dir>/<network>.json` (PID 1 uses `/var/lib/gantry/network`,
//! so they survive reboots and a container that comes back gets its address again). Every
//! change happens under an exclusive `flock` on `<network>.lock` (a separate file, because
//! the data file is replaced by rename) and is written to a temporary file, fsynced and
//! renamed over the old one, then the directory is fsynced: a crash leaves the old or the
//! new file, never half of one. The lock is held for the whole of an attach or detach, so
//! it also serialises the link and firewall changes of one network.
//!
//! Addresses are handed out round-robin after the last one given, so that an address that
//! was just released (and may still sit in a peer's ARP cache or in conntrack) is reused
//! last. The gateway is the subnet's first host; the network and broadcast addresses are
//! never given out. Asking again for a container that already holds a lease returns the
//! same address.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::PortMapping;
use crate::ContainerId;

/// An IPv4 subnet, `a.b.c.d/len`, with the host bits zero. Containers need at least two
/// host addresses besides the gateway, so the prefix is 8 to 29 bits long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    network: Ipv4Addr,
    prefix: u8,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("subnet {value:?} is invalid: {reason}")]
pub struct InvalidSubnet {
    pub value: String,
    pub reason: &'static str,
}

impl Subnet {
    /// `10.88.0.0/16`, Podman's default.
    pub const DEFAULT: Subnet = Subnet {
        network: Ipv4Addr::new(10, 88, 0, 0),
        prefix: 16,
    };

    pub fn new(network: Ipv4Addr, prefix: u8) -> Result<Self, InvalidSubnet> {
        format!("{network}/{prefix}").parse()
    }

    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn mask(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::MAX << (32 - u32::from(self.prefix)))
    }

    /// The first host address: the bridge's address and the containers' default route.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    fn broadcast(&self) -> u32 {
        u32::from(self.network) | !u32::from(self.mask())
    }

    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & u32::from(self.mask()) == u32::from(self.network)
    }

    /// Whether `addr` may be given to a container.
    fn assignable(&self, addr: Ipv4Addr) -> bool {
        let a = u32::from(addr);
        self.contains(addr) && a > u32::from(self.gateway()) && a < self.broadcast()
    }
}

impl FromStr for Subnet {
    type Err = InvalidSubnet;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let fail = |reason| InvalidSubnet {
            value: value.to_owned(),
            reason,
        };
        let (addr, len) = value
            .split_once('/')
            .ok_or_else(|| fail("expected ADDRESS/PREFIX, like 10.88.0.0/16"))?;
        let network: Ipv4Addr = addr.parse().map_err(|_| fail("not an IPv4 address"))?;
        let prefix: u8 = len
            .parse()
            .map_err(|_| fail("the prefix is not a number"))?;
        if !(8..=29).contains(&prefix) {
            return Err(fail("the prefix must be 8 to 29 bits"));
        }
        let s = Subnet { network, prefix };
        if u32::from(network) & !u32::from(s.mask()) != 0 {
            return Err(fail("host bits are set (use the network address)"));
        }
        Ok(s)
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Serialize for Subnet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Subnet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("lock {path}: {errno}")]
    Lock {
        path: PathBuf,
        errno: nix::errno::Errno,
    },
    #[error("{path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path} holds leases of subnet {found}, but the network is configured with {configured}; release them or use the old subnet")]
    SubnetChanged {
        path: PathBuf,
        found: Subnet,
        configured: Subnet,
    },
    #[error("subnet {0} has no free address left")]
    Exhausted(Subnet),
    #[error("host port {port} is already published by container {holder}")]
    PortTaken { port: String, holder: String },
}

/// Takes network `name`'s exclusive lock in `dir`, blocking while another process holds it.
fn lock_network(dir: &Path, name: &str) -> Result<Flock<File>, IpamError> {
    let lock_path = dir.join(format!("{name}.lock"));
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| IpamError::Io {
            path: lock_path.clone(),
            source,
        })?;
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| IpamError::Lock {
        path: lock_path,
        errno,
    })
}

/// One container's lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub address: Ipv4Addr,
    #[serde(default)]
    pub ports: Vec<PortMapping>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Leases {
    subnet: Subnet,
    /// The address handed out last; the next search starts after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last: Option<Ipv4Addr>,
    leases: BTreeMap<String, Lease>,
}

/// The leases of one network, held under its lock until dropped.
#[derive(Debug)]
pub struct Ipam {
    path: PathBuf,
    leases: Leases,
    _lock: Flock<File>,
}

impl Ipam {
    /// Locks the network `name`'s leases in `dir` (made if missing) and loads them,
    /// blocking while another process holds the lock.
    pub fn lock(dir: &Path, name: &str, subnet: Subnet) -> Result<Self, IpamError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| IpamError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let lock = lock_network(dir, name)?;
        let path = dir.join(format!("{name}.json"));
        let leases = match std::fs::read(&path) {
            Ok(bytes) => parse(&path, &bytes, subnet)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Leases {
                subnet,
                last: None,
                leases: BTreeMap::new(),
            },
            Err(e) => return Err(io(&path)(e)),
        };
        Ok(Ipam {
            path,
            leases,
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Drops every network's leases in `dir`, each under its network's lock, and returns
    /// each file's outcome (none when `dir` does not exist). PID 1 calls this at boot:
    /// nothing runs before it starts, so every lease found then belongs to a container that
    /// ended with the last boot (a power cut, or a kill when its grace ran out) and would
    /// otherwise hold its address and published ports forever. The lock files stay.
    pub fn forget_all(dir: &Path) -> Vec<Result<PathBuf, IpamError>> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
            Err(source) => {
                return vec![Err(IpamError::Io {
                    path: dir.to_owned(),
                    source,
                })]
            }
        };
        let mut outcomes = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
            else {
                continue;
            };
            let forget = lock_network(dir, name).and_then(|_lock| {
                std::fs::remove_file(&path).map_err(|source| IpamError::Io {
                    path: path.clone(),
                    source,
                })
            });
            outcomes.push(forget.map(|()| path));
        }
        outcomes
    }

    pub fn get(&self, id: &ContainerId) -> Option<&Lease> {
        self.leases.leases.get(id.as_str())
    }

    /// Every container holding a lease.
    pub fn containers(&self) -> impl Iterator<Item = (&str, &Lease)> {
        self.leases.leases.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Gives `id` an address (the one it holds already, if any) and records its published
    /// ports, refusing host ports another container publishes. Saved at once.
    pub fn allocate(
        &mut self,
        id: &ContainerId,
        ports: &[PortMapping],
    ) -> Result<Ipv4Addr, IpamError> {
        for (holder, lease) in &self.leases.leases {
            if holder == id.as_str() {
                continue;
            }
            if let Some(p) = ports
                .iter()
                .find(|p| lease.ports.iter().any(|q| p.clashes_with(q)))
            {
                return Err(IpamError::PortTaken {
                    port: p.host_side(),
                    holder: holder.clone(),
                });
            }
        }
        let address = match self.get(id) {
            Some(lease) => lease.address,
            None => self.free_address()?,
        };
        self.leases.leases.insert(
            id.to_string(),
            Lease {
                address,
                ports: ports.to_vec(),
            },
        );
        self.leases.last = Some(address);
        self.save()?;
        Ok(address)
    }

    /// Drops `id`'s lease, if it has one. Saved at once.
    pub fn release(&mut self, id: &ContainerId) -> Result<Option<Lease>, IpamError> {
        let lease = self.leases.leases.remove(id.as_str());
        if lease.is_some() {
            self.save()?;
        }
        Ok(lease)
    }

    fn free_address(&self) -> Result<Ipv4Addr, IpamError> {
        let s = self.leases.subnet;
        let first = u32::from(s.gateway()) + 1;
        let last = s.broadcast() - 1;
        let start = match self.leases.last {
            Some(a) if s.assignable(a) && u32::from(a) < last => u32::from(a) + 1,
            _ => first,
        };
        let taken: std::collections::HashSet<Ipv4Addr> =
            self.leases.leases.values().map(|l| l.address).collect();
        (start..=last)
            .chain(first..start)
            .map(Ipv4Addr::from)
            .find(|a| !taken.contains(a))
            .ok_or(IpamError::Exhausted(s))
    }

    fn save(&self) -> Result<(), IpamError> {
        let json = serde_json::to_vec_pretty(&self.leases).map_err(|e| IpamError::Corrupt {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        crate::fsutil::write_atomic(&self.path, &json).map_err(|source| IpamError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

/// Parses and checks a leases file: one subnet, every address assignable and unique,
/// every holder a valid container id.
fn parse(path: &Path, bytes: &[u8], configured: Subnet) -> Result<Leases, IpamError> {
    let corrupt = |reason: String| IpamError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let leases: Leases = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    if leases.subnet != configured {
        if leases.leases.is_empty() {
            // Nothing to keep: the network simply moves to the new subnet.
            return Ok(Leases {
                subnet: configured,
                last: None,
                leases: BTreeMap::new(),
            });
        }
        return Err(IpamError::SubnetChanged {
            path: path.to_owned(),
            found: leases.subnet,
            configured,
        });
    }
    let mut seen = std::collections::HashMap::new();
    for (id, lease) in &leases.leases {
        id.parse::<ContainerId>()
            .map_err(|e| corrupt(e.to_string()))?;
        if !configured.assignable(lease.address) {
            return Err(corrupt(format!(
                "container {id} holds {}, which is not a host address of {configured} other than the gateway",
                lease.address
            )));
        }
        if let Some(other) = seen.insert(lease.address, id) {
            return Err(corrupt(format!(
                "{} is held by both {other} and {id}",
                lease.address
            )));
        }
    }
    Ok(leases)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ContainerId {
        s.parse().unwrap()
    }

    fn subnet(s: &str) -> Subnet {
        s.parse().unwrap()
    }

    #[test]
    fn subnets_parse_and_refuse_host_bits_and_odd_prefixes() {
        let s = subnet("10.88.0.0/16");
        assert_eq!(s.gateway(), Ipv4Addr::new(10, 88, 0, 1));
        assert_eq!(s.mask(), Ipv4Addr::new(255, 255, 0, 0));
        assert!(s.contains(Ipv4Addr::new(10, 88, 255, 255)));
        assert!(!s.contains(Ipv4Addr::new(10, 89, 0, 1)));
        for bad in [
            "10.88.0.1/16",
            "10.88.0.0",
            "10.88.0.0/31",
            "10.88.0.0/x",
            "x/16",
        ] {
            let err = bad.parse::<Subnet>().unwrap_err();
            assert_eq!(err.value, bad);
        }
    }

    #[test]
    fn forgetting_all_drops_every_networks_leases_under_its_lock_and_keeps_the_locks() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Ipam::forget_all(&dir.path().join("missing")).is_empty());
        for name in ["gantry0", "other"] {
            let mut ipam = Ipam::lock(dir.path(), name, subnet("10.88.0.0/24")).unwrap();
            ipam.allocate(&id("a"), &[]).unwrap();
        }
        std::fs::write(dir.path().join("notes.txt"), "kept").unwrap();
        // A holder of one network's lock makes the forgetting wait for it.
        let held = Ipam::lock(dir.path(), "gantry0", subnet("10.88.0.0/24")).unwrap();
        let path = dir.path().to_owned();
        let forget = std::thread::spawn(move || Ipam::forget_all(&path));
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(!forget.is_finished(), "did not wait for the lock");
        assert!(dir.path().join("gantry0.json").exists());
        drop(held);
        let mut forgotten: Vec<PathBuf> = forget
            .join()
            .unwrap()
            .into_iter()
            .map(Result::unwrap)
            .collect();
        forgotten.sort();
        assert_eq!(
            forgotten,
            [
                dir.path().join("gantry0.json"),
                dir.path().join("other.json")
            ]
        );
        assert!(dir.path().join("gantry0.lock").exists());
        assert!(dir.path().join("notes.txt").exists());
        let ipam = Ipam::lock(dir.path(), "gantry0", subnet("10.88.0.0/24")).unwrap();
        assert_eq!(ipam.containers().count(), 0);
    }

    #[test]
    fn allocates_in_order_skipping_the_gateway_and_is_idempotent_per_container() {
        let dir = tempfile::tempdir().unwrap();
        let mut ipam = Ipam::lock(dir.path(), "gantry0", subnet("10.88.0.0/24")).unwrap();
        let a = ipam.allocate(&id("a"), &[]).unwrap();
        let b = ipam.allocate(&id("b"), &[]).unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 88, 0, 2));
        assert_eq!(b, Ipv4Addr::new(10, 88, 0, 3));
        assert_eq!(ipam.allocate(&id("a"), &[]).unwrap(), a);
    }

    #[test]
    fn refuses_when_exhausted_and_reuses_released_addresses_last() {
        let dir = tempfile::tempdir().unwrap();
        // /29: .0 network, .1 gateway, .2-.6 hosts, .7 broadcast.
        let mut ipam = Ipam::lock(dir.path(), "n", subnet("192.168.9.0/29")).unwrap();
        for i in 0..5 {
            ipam.allocate(&id(&format!("c{i}")), &[]).unwrap();
        }
        let err = ipam.allocate(&id("c5"), &[]).unwrap_err();
        assert!(matches!(err, IpamError::Exhausted(_)), "{err}");
        assert!(err.to_string().contains("192.168.9.0/29"), "{err}");
        let freed = ipam.release(&id("c1")).unwrap().unwrap().address;
        assert_eq!(freed, Ipv4Addr::new(192, 168, 9, 3));
        assert_eq!(ipam.allocate(&id("c5"), &[]).unwrap(), freed);
        assert!(ipam.release(&id("never")).unwrap().is_none());
    }

    #[test]
    fn round_robin_does_not_hand_back_a_just_released_address_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut ipam = Ipam::lock(dir.path(), "n", subnet("10.1.0.0/24")).unwrap();
        let a = ipam.allocate(&id("a"), &[]).unwrap();
        ipam.release(&id("a")).unwrap();
        let b = ipam.allocate(&id("b"), &[]).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn leases_persist_across_reload() {
        let dir = tempfile::tempdir().unwrap();
        let s = subnet("10.88.0.0/16");
        let port: PortMapping = "8080:80".parse().unwrap();
        let a = {
            let mut ipam = Ipam::lock(dir.path(), "gantry0", s).unwrap();
            ipam.allocate(&id("web"), std::slice::from_ref(&port))
                .unwrap()
        };
        let ipam = Ipam::lock(dir.path(), "gantry0", s).unwrap();
        let lease = ipam.get(&id("web")).unwrap();
        assert_eq!(lease.address, a);
        assert_eq!(lease.ports, vec![port]);
    }

    #[test]
    fn refuses_a_host_port_another_container_publishes() {
        let dir = tempfile::tempdir().unwrap();
        let mut ipam = Ipam::lock(dir.path(), "n", subnet("10.88.0.0/16")).unwrap();
        let p = |s: &str| -> PortMapping { s.parse().unwrap() };
        ipam.allocate(&id("a"), &[p("8080:80")]).unwrap();
        // Other protocol or other host address: fine.
        ipam.allocate(&id("b"), &[p("8080:80/udp")]).unwrap();
        let err = ipam.allocate(&id("c"), &[p("8080:81")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "host port 8080/tcp is already published by container a"
        );
        // The same container may publish it again.
        ipam.allocate(&id("a"), &[p("8080:80")]).unwrap();
    }

    #[test]
    fn concurrent_allocations_take_turns_under_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let s = subnet("10.88.0.0/24");
        let addrs: Vec<Ipv4Addr> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|i| {
                    let dir = dir.path();
                    scope.spawn(move || {
                        // Each thread opens the lock file itself: its own flock.
                        let mut ipam = Ipam::lock(dir, "n", s).unwrap();
                        ipam.allocate(&id(&format!("c{i}")), &[]).unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let unique: std::collections::HashSet<_> = addrs.iter().collect();
        assert_eq!(unique.len(), 8, "{addrs:?}");
        let ipam = Ipam::lock(dir.path(), "n", s).unwrap();
        assert_eq!(ipam.containers().count(), 8);
    }

    #[test]
    fn a_corrupt_file_is_a_clear_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let s = subnet("10.88.0.0/16");
        let path = dir.path().join("gantry0.json");
        for (text, why) in [
            ("{ not json", "key must be a string"),
            (
                r#"{"subnet":"10.88.0.0/16","leases":{"a":{"address":"10.88.0.1"}}}"#,
                "gateway",
            ),
            (
                r#"{"subnet":"10.88.0.0/16","leases":{"a":{"address":"10.88.0.2"},"b":{"address":"10.88.0.2"}}}"#,
                "held by both a and b",
            ),
            (
                r#"{"subnet":"10.88.0.0/16","leases":{"../x":{"address":"10.88.0.2"}}}"#,
                "invalid",
            ),
            (r#"{"subnet":"10.88.0.1/16","leases":{}}"#, "host bits"),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = Ipam::lock(dir.path(), "gantry0", s).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            assert!(msg.contains(why), "{text}: {msg}");
        }
    }

    #[test]
    fn a_changed_subnet_is_refused_while_leases_remain() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut ipam = Ipam::lock(dir.path(), "n", subnet("10.88.0.0/16")).unwrap();
            ipam.allocate(&id("a"), &[]).unwrap();
        }
        let err = Ipam::lock(dir.path(), "n", subnet("10.99.0.0/16")).unwrap_err();
        assert!(matches!(err, IpamError::SubnetChanged { .. }), "{err}");
        {
            let mut ipam = Ipam::lock(dir.path(), "n", subnet("10.88.0.0/16")).unwrap();
            ipam.release(&id("a")).unwrap();
        }
        let mut ipam = Ipam::lock(dir.path(), "n", subnet("10.99.0.0/16")).unwrap();
        assert_eq!(
            ipam.allocate(&id("a"), &[]).unwrap(),
            Ipv4Addr::new(10, 99, 0, 2)
        );
    }
}
