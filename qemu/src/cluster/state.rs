//! The cluster's description, `cluster.json` in its directory: what other tools (tests,
//! a fleet CLI) read to find the nodes and the services. Written to a temporary name,
//! fsynced and renamed, so a reader never sees half of it.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const STATE_FILE: &str = "cluster.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterState {
    pub name: String,
    pub dir: PathBuf,
    /// The image every node's overlay sits on.
    pub image: PathBuf,
    /// The segment's subnet, e.g. `10.123.0.0/24`.
    pub subnet: String,
    /// Each node's memory and CPUs.
    pub memory_mib: u32,
    pub cpus: u32,
    /// Nodes boot their slot's kernel directly, without OVMF and GRUB (`cluster up --fast`;
    /// see [`crate::direct_boot`]), at `cluster start` too.
    pub fast: bool,
    pub switch: Switch,
    pub services: Vec<Service>,
    pub nodes: Vec<Node>,
}

/// The user-space switch all nodes' second NIC is on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Switch {
    /// `vde_switch`'s socket directory.
    pub socket: PathBuf,
    pub pid: Option<u32>,
}

/// A fleet service on the host's loopback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// `registry`, `etcd` or `channel`.
    pub name: String,
    /// Where the host reaches it, e.g. `http://127.0.0.1:41234`.
    pub host_url: String,
    /// Where a node reaches it (through its user network's `guestfwd`).
    pub node_url: String,
    pub pid: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// 1 to N.
    pub index: u32,
    /// Host name, `NAME-i`.
    pub name: String,
    /// The machine id the node gets on its first boot (32 hex digits): its SMBIOS UUID
    /// (QEMU `-uuid`), derived from the cluster's name and the index, so it is stable.
    pub machine_id: String,
    pub dir: PathBuf,
    /// The segment NIC's address and hardware address.
    pub address: Ipv4Addr,
    pub segment_mac: String,
    /// The user-network NIC's hardware address.
    pub mac: String,
    /// Host ports on 127.0.0.1 forwarded to the node: (host, guest), TCP.
    pub forwards: Vec<(u16, u16)>,
    pub pid: Option<u32>,
    pub serial_log: PathBuf,
    pub qmp: PathBuf,
    /// Whether its segment link is cut (`cluster partition`).
    pub partitioned: bool,
}

impl ClusterState {
    pub fn load(dir: &Path) -> Result<ClusterState, String> {
        let path = dir.join(STATE_FILE);
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn save(&self) -> Result<(), String> {
        let path = self.dir.join(STATE_FILE);
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        gantry_durable::write_atomic(&path, &bytes).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Node `index` (1-based), or an error naming the nodes there are.
    pub fn node(&self, index: u32) -> Result<&Node, String> {
        self.nodes.iter().find(|n| n.index == index).ok_or_else(|| {
            format!(
                "no node {index}; cluster {} has nodes 1 to {}",
                self.name,
                self.nodes.len()
            )
        })
    }

    pub fn node_mut(&mut self, index: u32) -> Result<&mut Node, String> {
        let (name, count) = (self.name.clone(), self.nodes.len());
        self.nodes
            .iter_mut()
            .find(|n| n.index == index)
            .ok_or_else(|| format!("no node {index}; cluster {name} has nodes 1 to {count}"))
    }

    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }
}
