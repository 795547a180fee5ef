//! Local clusters: N Gantry nodes from one image on a shared network segment, with the
//! fleet's services beside them ([`services`]), described by one JSON file
//! ([`state::ClusterState`]) that other tools read.
//!
//! - **Nodes.** Each node is a QEMU process with its own qcow2 overlay over the image, its
//!   own copy of the firmware variables (not with `fast`), stable hardware addresses
//!   derived from the cluster's name and the node's index, and the host name `NAME-i`.
//!   Its machine config (through fw_cfg) is the launcher's own part (host name, the two
//!   NICs, every node's name in `network.hosts` so containers reach their neighbours by
//!   name, the registry), then the cluster's base config (`--config`), then the node's overlay
//!   (`--node-config I=FILE`), merged key by key ([`merge`]).
//! - **The segment.** Every node's second NIC is on one `vde_switch` (user space, a unix
//!   socket in the cluster's directory): no root, no host interface, frames go only
//!   between the nodes. Node `i` has the static address `10.123.0.(10+i)/24` there. Each
//!   node keeps a user-network NIC (`restrict=on`) with `hostfwd`s of the ports asked for
//!   and `guestfwd`s to the services on loopback.
//! - **Processes** outlive the command that started them and are found again by PID
//!   ([`process`]); `cluster down` stops every one of them and leaves nothing outside the
//!   cluster's directory.
//! - **Identity.** Node `i`'s SMBIOS system UUID (QEMU `-uuid`) is derived from the
//!   cluster's name and `i` ([`node_machine_id`]), and PID 1 takes its machine id from it
//!   on the node's first boot and keeps it on the node's disk. The same cluster name gives
//!   the same ids on every `cluster up`; two clusters' nodes differ.
//! - **Fast boot** (`fast`, `cluster up --fast`): each QEMU start reads the slot GRUB would
//!   boot, its kernel and command line out of the node's own disk and boots them with
//!   `-kernel` (dm-verity stays on: the command line carries the root hash). No try is
//!   spent and a guest reboot restarts the same kernel; see [`crate::direct_boot`].
//! - **Faults.** `kill` is a power cut (QMP `quit`: the guest gets no warning), `stop` the
//!   power button, `partition`/`heal` take the node's segment link down and up (QMP
//!   `set_link`), as a pulled cable would.

pub mod merge;
pub mod process;
pub mod services;
pub mod state;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::config::{HostForward, SegmentNic, VmConfig, VmFiles, SEGMENT_NETDEV};
use crate::qmp::Qmp;
use state::{ClusterState, Node, Switch};

/// The segment's subnet; node `i` is `.10+i`. Not the container bridge's 10.88.0.0/16
/// (Docker's and Podman's habit, and the runtime's default): a node would route its
/// neighbours' addresses into its own bridge.
pub const SUBNET: &str = "10.123.0.0/24";
/// The most nodes a cluster may have (addresses .11 to .210).
pub const MAX_NODES: u32 = 200;
/// The fw_cfg name PID 1 reads its machine config from.
const CONFIG_FW_CFG: &str = "opt/org.gantry/config";

/// What `cluster up` is asked for.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub name: String,
    pub nodes: u32,
    pub image: PathBuf,
    /// The cluster's directory: everything of the cluster lives under it.
    pub dir: PathBuf,
    /// The cluster-wide config (TOML text) and per-node overlays by index.
    pub base_config: Option<String>,
    pub node_configs: BTreeMap<u32, String>,
    pub memory_mib: u32,
    pub cpus: u32,
    /// Guest TCP ports forwarded from a free host port on 127.0.0.1, on every node.
    pub forward_ports: Vec<u16>,
    /// Start the registry, etcd and the channel server.
    pub services: bool,
    /// Boot each node's kernel directly, without OVMF and GRUB.
    pub fast: bool,
}

/// What one node looks like from the outside.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeStatus {
    pub index: u32,
    pub name: String,
    /// The id the node was given ([`node_machine_id`]).
    pub machine_id: String,
    /// The id the node's PID 1 reported in its ready line, since its last start.
    pub reported_machine_id: Option<String>,
    pub address: Ipv4Addr,
    /// `running`, `booting` (no ready line since its last start) or `stopped`.
    pub state: &'static str,
    pub version: Option<String>,
    pub slot: Option<String>,
    pub containers_healthy: usize,
    pub containers_total: usize,
    pub partitioned: bool,
    pub forwards: Vec<(u16, u16)>,
}

/// A cluster on this host.
#[derive(Debug)]
pub struct Cluster {
    state: ClusterState,
}

impl Cluster {
    /// Boots a cluster: switch, services, then every node at once; returns once every
    /// node printed PID 1's ready line within `timeout`. On any failure, everything
    /// started is stopped again and the error names what failed (for nodes: which ones,
    /// with the tail of their console).
    pub fn up(spec: &ClusterSpec, timeout: Duration) -> Result<Cluster, String> {
        check_spec(spec)?;
        if spec.dir.join(state::STATE_FILE).exists() {
            if let Ok(old) = ClusterState::load(&spec.dir) {
                if (Cluster { state: old.clone() }).anything_running() {
                    return Err(format!(
                        "cluster {} in {} is running; `gantry-qemu cluster down` first",
                        old.name,
                        spec.dir.display()
                    ));
                }
            }
            std::fs::remove_dir_all(&spec.dir)
                .map_err(|e| format!("{}: {e}", spec.dir.display()))?;
        }
        std::fs::create_dir_all(&spec.dir).map_err(|e| format!("{}: {e}", spec.dir.display()))?;
        let dir = spec
            .dir
            .canonicalize()
            .map_err(|e| format!("{}: {e}", spec.dir.display()))?;
        let image = spec
            .image
            .canonicalize()
            .map_err(|e| format!("image {}: {e}", spec.image.display()))?;
        let mut cluster = Cluster {
            state: ClusterState {
                name: spec.name.clone(),
                dir: dir.clone(),
                image,
                subnet: SUBNET.to_owned(),
                memory_mib: spec.memory_mib,
                cpus: spec.cpus,
                fast: spec.fast,
                switch: Switch {
                    socket: dir.join("switch"),
                    pid: None,
                },
                services: Vec::new(),
                nodes: Vec::new(),
            },
        };
        let result = cluster.boot_all(spec, timeout);
        if let Err(e) = result {
            cluster.down();
            return Err(e);
        }
        Ok(cluster)
    }

    fn boot_all(&mut self, spec: &ClusterSpec, timeout: Duration) -> Result<(), String> {
        self.state.switch.pid = Some(start_switch(&self.state.dir)?);
        self.state.save()?;
        if spec.services {
            self.state.services = services::start(&self.state.dir, &spec.name)?;
            self.state.save()?;
        }
        let id = cluster_byte(&spec.name);
        for i in 1..=spec.nodes {
            let ndir = self.state.dir.join("nodes").join(i.to_string());
            std::fs::create_dir_all(&ndir).map_err(|e| format!("{}: {e}", ndir.display()))?;
            let files = VmFiles::in_dir(&ndir);
            let mut forwards = Vec::new();
            for &guest in &spec.forward_ports {
                forwards.push((process::free_port()?, guest));
            }
            let node = Node {
                index: i,
                name: format!("{}-{i}", spec.name),
                machine_id: node_machine_id(&spec.name, i),
                address: node_address(i),
                segment_mac: format!("52:54:00:88:{id:02x}:{i:02x}"),
                mac: format!("52:54:00:12:{id:02x}:{i:02x}"),
                forwards,
                pid: None,
                serial_log: files.serial_log.clone(),
                qmp: files.qmp.clone(),
                dir: ndir.clone(),
                partitioned: false,
            };
            let config = node_config(spec, &node, !self.state.services.is_empty())?;
            std::fs::write(ndir.join("config.toml"), config)
                .map_err(|e| format!("{}: {e}", ndir.join("config.toml").display()))?;
            if !spec.fast {
                let fw = crate::Firmware::default();
                std::fs::copy(&fw.vars_template, &files.vars).map_err(|e| {
                    format!("{}: {e} (apt-get install ovmf)", fw.vars_template.display())
                })?;
            }
            crate::vm::create_overlay(&self.state.image, &files.overlay)
                .map_err(|e| e.to_string())?;
            self.state.nodes.push(node);
        }
        for i in 1..=spec.nodes {
            self.launch(i)?;
        }
        self.state.save()?;
        let all: Vec<u32> = (1..=spec.nodes).collect();
        self.wait_ready(&all, timeout)
    }

    /// The cluster whose directory is `dir`.
    pub fn open(dir: &Path) -> Result<Cluster, String> {
        let state = ClusterState::load(dir)
            .map_err(|e| format!("{e} (no cluster there? `gantry-qemu cluster up` makes one)"))?;
        Ok(Cluster { state })
    }

    pub fn state(&self) -> &ClusterState {
        &self.state
    }

    /// The VM configuration of node `i`, from the cluster's description.
    fn vm_config(&self, node: &Node) -> VmConfig {
        let mut cfg = VmConfig::new(&self.state.image);
        cfg.memory_mib = self.state.memory_mib;
        cfg.cpus = self.state.cpus;
        cfg.mac = Some(node.mac.clone());
        cfg.uuid = Some(smbios_uuid(&node.machine_id));
        cfg.segment = Some(SegmentNic {
            switch: self.state.switch.socket.clone(),
            mac: node.segment_mac.clone(),
        });
        cfg.hostfwd = node
            .forwards
            .iter()
            .map(|&(host_port, guest_port)| HostForward {
                udp: false,
                host_port,
                guest_port,
            })
            .collect();
        cfg.guestfwd = services::guest_forwards(&self.state.services);
        cfg.fw_cfg
            .push((CONFIG_FW_CFG.to_owned(), node.dir.join("config.toml")));
        cfg
    }

    /// Starts node `i`'s QEMU on its existing overlay (its disk as the last run left it).
    fn launch(&mut self, i: u32) -> Result<(), String> {
        let node = self.state.node(i)?.clone();
        let mut cfg = self.vm_config(&node);
        let files = VmFiles::in_dir(&node.dir);
        if self.state.fast {
            // From the node's own disk, as it is now: an installed update is booted.
            let k = crate::direct_boot::from_disk(&files.overlay, &node.dir.join("boot"))
                .map_err(|e| format!("node {i} ({}): --fast: {e}", node.name))?;
            cfg.direct_kernel = Some(k);
        }
        // The console of the run before, kept for a look after a power cut.
        if files.serial_log.exists() {
            let _ = std::fs::rename(&files.serial_log, node.dir.join("serial.previous.log"));
        }
        let _ = std::fs::remove_file(&files.qmp);
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(cfg.args(&files));
        let child = process::spawn(cmd, &node.dir.join("qemu.log"), &node.dir)?;
        let n = self.state.node_mut(i)?;
        n.pid = Some(child.id());
        n.partitioned = false;
        self.state.save()
    }

    /// Waits until each of `nodes` printed the ready line since its last start.
    pub fn wait_ready(&self, nodes: &[u32], timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let mut waiting: Vec<u32> = nodes.to_vec();
        loop {
            let mut dead = Vec::new();
            waiting.retain(|&i| {
                let Ok(node) = self.state.node(i) else {
                    return false;
                };
                if ready_line(&node.serial_log).is_some() {
                    return false;
                }
                if !self.node_alive(node) {
                    dead.push(i);
                    return false;
                }
                true
            });
            if waiting.is_empty() && dead.is_empty() {
                return Ok(());
            }
            if !dead.is_empty() || Instant::now() >= deadline {
                let mut msg = String::new();
                for &i in dead.iter().chain(&waiting) {
                    let node = self.state.node(i)?;
                    let why = if dead.contains(&i) {
                        "QEMU exited".to_owned()
                    } else {
                        format!("not ready within {timeout:?}")
                    };
                    msg.push_str(&format!(
                        "node {} ({}): {why}; console tail:\n{}\nQEMU's log: {}\n",
                        i,
                        node.name,
                        tail(&node.serial_log, 15),
                        tail(&node.dir.join("qemu.log"), 5)
                    ));
                }
                return Err(msg.trim_end().to_owned());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn node_alive(&self, node: &Node) -> bool {
        node.pid.is_some_and(|p| process::alive(p, &node.dir))
    }

    fn anything_running(&self) -> bool {
        let dir = &self.state.dir;
        self.state.nodes.iter().any(|n| self.node_alive(n))
            || self
                .state
                .services
                .iter()
                .any(|s| s.pid.is_some_and(|p| process::alive(p, dir)))
            || self
                .state
                .switch
                .pid
                .is_some_and(|p| process::alive(p, dir))
    }

    fn qmp(&self, i: u32, command: &str, args: Option<serde_json::Value>) -> Result<(), String> {
        let node = self.state.node(i)?;
        if !self.node_alive(node) {
            return Err(format!("node {i} ({}) is not running", node.name));
        }
        let mut q = Qmp::connect(&node.qmp, Duration::from_secs(10)).map_err(|e| e.to_string())?;
        q.execute(command, args)
            .map(|_| ())
            .map_err(|e| format!("node {i} ({}): {e}", node.name))
    }

    /// A power cut: QEMU quits at once, the guest gets no warning.
    pub fn kill(&mut self, i: u32) -> Result<(), String> {
        let node = self.state.node(i)?.clone();
        // The quit's reply may not come: QEMU can be gone first.
        let _ = self.qmp(i, "quit", None);
        if let Some(pid) = node.pid {
            if !process::wait_gone(pid, &node.dir, Duration::from_secs(10)) {
                process::signal(pid, &node.dir, libc::SIGKILL);
                process::wait_gone(pid, &node.dir, Duration::from_secs(10));
            }
        }
        self.state.node_mut(i)?.pid = None;
        self.state.save()
    }

    /// The power button; waits up to `timeout` for the node to shut down, then cuts power.
    pub fn stop(&mut self, i: u32, timeout: Duration) -> Result<(), String> {
        let node = self.state.node(i)?.clone();
        self.qmp(i, "system_powerdown", None)?;
        let orderly = node
            .pid
            .is_none_or(|pid| process::wait_gone(pid, &node.dir, timeout));
        if !orderly {
            self.kill(i)?;
            return Err(format!(
                "node {i} ({}) did not shut down within {timeout:?}; power was cut",
                node.name
            ));
        }
        self.state.node_mut(i)?.pid = None;
        self.state.save()
    }

    /// Boots a stopped node again from its own disk; waits for it to be ready.
    pub fn start(&mut self, i: u32, timeout: Duration) -> Result<(), String> {
        let node = self.state.node(i)?;
        if self.node_alive(node) {
            return Err(format!("node {i} ({}) is running", node.name));
        }
        self.launch(i)?;
        self.wait_ready(&[i], timeout)
    }

    /// Cuts (`up = false`) or restores node `i`'s segment link.
    pub fn set_link(&mut self, i: u32, up: bool) -> Result<(), String> {
        self.qmp(
            i,
            "set_link",
            Some(json!({ "name": SEGMENT_NETDEV, "up": up })),
        )?;
        self.state.node_mut(i)?.partitioned = !up;
        self.state.save()
    }

    /// Every node as seen from its console and process.
    pub fn status(&self) -> Vec<NodeStatus> {
        self.state
            .nodes
            .iter()
            .map(|n| {
                let alive = self.node_alive(n);
                let ready = alive.then(|| ready_line(&n.serial_log)).flatten();
                let health = if alive {
                    container_health(&n.serial_log)
                } else {
                    BTreeMap::new()
                };
                NodeStatus {
                    index: n.index,
                    name: n.name.clone(),
                    machine_id: n.machine_id.clone(),
                    reported_machine_id: ready
                        .as_deref()
                        .and_then(|l| field(l, "machine_id"))
                        .map(str::to_owned),
                    address: n.address,
                    state: match (alive, &ready) {
                        (false, _) => "stopped",
                        (true, None) => "booting",
                        (true, Some(_)) => "running",
                    },
                    version: ready
                        .as_deref()
                        .and_then(|l| field(l, "os_version"))
                        .map(str::to_owned),
                    slot: ready
                        .as_deref()
                        .and_then(|l| field(l, "slot"))
                        .map(str::to_owned),
                    containers_healthy: health.values().filter(|h| *h == "Healthy").count(),
                    containers_total: health.len(),
                    partitioned: n.partitioned,
                    forwards: n.forwards.clone(),
                }
            })
            .collect()
    }

    /// Stops everything: nodes (power cut: their disks are thrown away with the cluster),
    /// services, the switch. The directory stays, with the logs and the description.
    pub fn down(&mut self) {
        let dir = self.state.dir.clone();
        for i in self.state.nodes.iter().map(|n| n.index).collect::<Vec<_>>() {
            if let Ok(n) = self.state.node(i) {
                if self.node_alive(n) {
                    let _ = self.kill(i);
                }
            }
        }
        services::stop(&dir, &self.state.services);
        if let Some(pid) = self.state.switch.pid {
            process::stop(pid, &dir, Duration::from_secs(5));
        }
        for s in &mut self.state.services {
            s.pid = None;
        }
        self.state.switch.pid = None;
        for n in &mut self.state.nodes {
            n.pid = None;
            // The disks are the bulk of a cluster's files.
            let _ = std::fs::remove_file(n.dir.join("overlay.qcow2"));
        }
        let _ = self.state.save();
    }
}

fn check_spec(spec: &ClusterSpec) -> Result<(), String> {
    let name_ok = !spec.name.is_empty()
        && spec.name.len() <= 48
        && spec
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !spec.name.starts_with('-')
        && !spec.name.ends_with('-');
    if !name_ok {
        return Err(format!(
            "cluster name {:?}: lower-case letters, digits and '-', at most 48, not starting or \
             ending with '-' (node host names are NAME-i)",
            spec.name
        ));
    }
    if spec.nodes == 0 || spec.nodes > MAX_NODES {
        return Err(format!("--nodes {}: 1 to {MAX_NODES}", spec.nodes));
    }
    if let Some(i) = spec
        .node_configs
        .keys()
        .find(|i| **i == 0 || **i > spec.nodes)
    {
        return Err(format!(
            "--node-config {i}: the cluster has nodes 1 to {}",
            spec.nodes
        ));
    }
    if !spec.image.is_file() {
        return Err(format!(
            "image {} does not exist; build it with `cargo run --release -p gantry-image-build`",
            spec.image.display()
        ));
    }
    Ok(())
}

/// Node `i`'s segment address.
pub fn node_address(i: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, 123, 0, u8::try_from(10 + i).unwrap_or(255))
}

/// Node `index`'s machine id in cluster `cluster`: 32 hex digits, the first 128 bits of a
/// SHA-256 of both, marked as a version 8 (custom) RFC 9562 UUID. Stable across `cluster
/// up`s; distinct between nodes and between clusters.
pub fn node_machine_id(cluster: &str, index: u32) -> String {
    let input = format!("gantry-cluster-node\0{cluster}\0{index}");
    let digest = ring::digest::digest(&ring::digest::SHA256, input.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest.as_ref()[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A machine id as the SMBIOS UUID QEMU's `-uuid` takes (`8-4-4-4-12`). The kernel shows
/// it back in `product_uuid` as given, so PID 1 reads the same 32 digits.
pub fn smbios_uuid(machine_id: &str) -> String {
    let h = machine_id;
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A byte from the cluster's name, so that two clusters' nodes differ in their MACs.
fn cluster_byte(name: &str) -> u8 {
    name.bytes().fold(0x5au8, |h, b| h.rotate_left(3) ^ b)
}

/// The node's machine config: the launcher's part, the base, the node's overlay.
fn node_config(spec: &ClusterSpec, node: &Node, services: bool) -> Result<String, String> {
    let mut own = format!(
        "version = 1\nhostname = \"{}\"\n\n[[network.interfaces]]\nmac = \"{}\"\n\n\
         [[network.interfaces]]\nmac = \"{}\"\naddresses = [\"{}/24\"]\n",
        node.name, node.mac, node.segment_mac, node.address
    );
    // Every node's name, in every container's /etc/hosts.
    own.push_str("\n[network.hosts]\n");
    for i in 1..=spec.nodes {
        own.push_str(&format!(
            "\"{}-{i}\" = \"{}\"\n",
            spec.name,
            node_address(i)
        ));
    }
    if services {
        own.push_str(&format!(
            "\n[registries]\ninsecure = [\"{}\"]\n",
            services::NODE_REGISTRY
        ));
    }
    let mut table = merge::parse(&own, "the launcher's node config")?;
    if let Some(base) = &spec.base_config {
        table = merge::merge(table, merge::parse(base, "--config")?);
    }
    if let Some(overlay) = spec.node_configs.get(&node.index) {
        table = merge::merge(
            table,
            merge::parse(overlay, &format!("--node-config {}", node.index))?,
        );
    }
    toml::to_string(&table).map_err(|e| format!("node {} config: {e}", node.index))
}

fn start_switch(dir: &Path) -> Result<u32, String> {
    let sock = dir.join("switch");
    let pidfile = dir.join("switch.pid");
    let mut cmd = Command::new("vde_switch");
    cmd.arg("--sock")
        .arg(&sock)
        .arg("--mgmt")
        .arg(dir.join("switch.mgmt"))
        .arg("--daemon")
        .arg("--pidfile")
        .arg(&pidfile);
    let out = cmd
        .output()
        .map_err(|e| format!("cannot start vde_switch (apt-get install vde2): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "vde_switch failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(pid) = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return Ok(pid);
        }
        if Instant::now() >= deadline {
            return Err(format!("vde_switch wrote no {}", pidfile.display()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The ready line in a console log, if PID 1 printed it.
fn ready_line(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .rev()
        .find(|l| l.contains(gantry_contract::READY_MARKER))
        .map(str::to_owned)
}

/// Each container's last reported health in a console log.
fn container_health(log: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Ok(text) = std::fs::read_to_string(log) else {
        return out;
    };
    for line in text
        .lines()
        .filter(|l| l.contains(&format!("{} ", gantry_contract::CONTAINER_LINE)))
    {
        if let (Some(name), Some(health)) = (field(line, "name"), field(line, "health")) {
            out.insert(name.to_owned(), health.to_owned());
        }
    }
    out
}

/// `key=value` in a log line (quotes removed).
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {key}="))? + key.len() + 2;
    let rest = &line[start..];
    let end = rest.find(' ').unwrap_or(rest.len());
    Some(rest[..end].trim_matches('"'))
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(n).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ClusterSpec {
        ClusterSpec {
            name: "demo".into(),
            nodes: 3,
            image: "/dev/null".into(),
            dir: "/c".into(),
            base_config: Some(
                "[containers.web]\nimage = \"10.0.2.100:5000/web:1\"\nports = [\"80:80\"]\n".into(),
            ),
            node_configs: BTreeMap::from([(
                2,
                "hostname = \"special\"\n[containers.web]\nimage = \"x:2\"\n".into(),
            )]),
            memory_mib: 512,
            cpus: 1,
            forward_ports: vec![80],
            services: true,
            fast: false,
        }
    }

    fn node(i: u32) -> Node {
        Node {
            index: i,
            name: format!("demo-{i}"),
            machine_id: node_machine_id("demo", i),
            dir: format!("/c/nodes/{i}").into(),
            address: node_address(i),
            segment_mac: format!("52:54:00:88:01:{i:02x}"),
            mac: format!("52:54:00:12:01:{i:02x}"),
            forwards: vec![],
            pid: None,
            serial_log: "/c/s".into(),
            qmp: "/c/q".into(),
            partitioned: false,
        }
    }

    #[test]
    fn node_configs_layer_the_launcher_the_base_and_the_overlay() {
        let one: toml::Table = node_config(&spec(), &node(1), true)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(one["hostname"].as_str(), Some("demo-1"));
        let ifaces = one["network"]["interfaces"].as_array().unwrap();
        assert_eq!(ifaces[1]["mac"].as_str(), Some("52:54:00:88:01:01"));
        assert_eq!(ifaces[1]["addresses"][0].as_str(), Some("10.123.0.11/24"));
        assert_eq!(
            one["registries"]["insecure"][0].as_str(),
            Some("10.0.2.100:5000")
        );
        let hosts = one["network"]["hosts"].as_table().unwrap();
        assert_eq!(hosts.len(), 3);
        assert_eq!(hosts["demo-3"].as_str(), Some("10.123.0.13"));
        assert_eq!(
            one["containers"]["web"]["image"].as_str(),
            Some("10.0.2.100:5000/web:1")
        );
        let two: toml::Table = node_config(&spec(), &node(2), true)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(two["hostname"].as_str(), Some("special"));
        assert_eq!(two["containers"]["web"]["image"].as_str(), Some("x:2"));
        assert_eq!(two["containers"]["web"]["ports"][0].as_str(), Some("80:80"));
    }

    #[test]
    fn bad_specs_are_refused_by_name() {
        let mut s = spec();
        s.name = "Demo".into();
        assert!(check_spec(&s)
            .unwrap_err()
            .contains("cluster name \"Demo\""));
        let mut s = spec();
        s.nodes = 0;
        assert!(check_spec(&s).unwrap_err().contains("--nodes 0"));
        let mut s = spec();
        s.node_configs.insert(4, String::new());
        assert!(check_spec(&s).unwrap_err().contains("--node-config 4"));
        let mut s = spec();
        s.base_config = Some("[x".into());
        assert!(node_config(&s, &node(1), false)
            .unwrap_err()
            .starts_with("--config: not a TOML"));
    }

    #[test]
    fn addresses_and_macs_are_stable_and_distinct() {
        assert_eq!(node_address(1), Ipv4Addr::new(10, 123, 0, 11));
        assert_eq!(node_address(MAX_NODES), Ipv4Addr::new(10, 123, 0, 210));
        assert_eq!(cluster_byte("demo"), cluster_byte("demo"));
        assert_ne!(cluster_byte("demo"), cluster_byte("prod"));
        let id = node_machine_id("demo", 1);
        assert_eq!(id, node_machine_id("demo", 1));
        assert_ne!(id, node_machine_id("demo", 2));
        assert_ne!(id, node_machine_id("prod", 1));
        // What PID 1 will take it for, and the UUID QEMU is given for it.
        let uuid = smbios_uuid(&id);
        assert_eq!(uuid.len(), 36);
        assert_eq!(uuid.replace('-', ""), id);
        assert_eq!(&uuid[14..15], "8");
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    }

    #[test]
    fn status_reads_health_and_the_ready_line_from_the_console() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("serial.log");
        std::fs::write(
            &log,
            "[ 1.0]  INFO gantry-init: container name=web health=Starting\n\
             [ 2.0]  INFO gantry-init: container name=db health=Healthy\n\
             [ 2.1]  INFO gantry-init: ready os_version=\"0.1.0\" slot=\"A\" machine_id=0123\n\
             [ 3.0]  INFO gantry-init: container name=web health=Healthy\n",
        )
        .unwrap();
        let h = container_health(&log);
        assert_eq!(h.len(), 2);
        assert!(h.values().all(|v| v == "Healthy"));
        let ready = ready_line(&log).unwrap();
        assert_eq!(field(&ready, "slot"), Some("A"));
        assert_eq!(field(&ready, "os_version"), Some("0.1.0"));
        assert_eq!(field(&ready, "machine_id"), Some("0123"));
    }
}
