//! Container networks: a bridge, a veth pair per container, addresses from a subnet,
//! a default route and DNS inside the container, masquerading for egress and published
//! ports (host port → container port, TCP and UDP).
//!
//! The pieces, each in its file:
//!
//! - [`ipam`]: the leases of a subnet, persisted as JSON under the network's state
//!   directory (PID 1: `/var/lib/gantry/network`), under a lock;
//! - [`bridge`]: the bridge (`gantry0`, the subnet's first address), the veth pairs and
//!   the container's `eth0`, `lo` and default route, over rtnetlink;
//! - [`firewall`]: the nf_tables ruleset (table `ip gantry`), written with our own small
//!   netlink encoder, [`nft`] (its docs say why we wrote one);
//! - [`dns`]: the container's `/etc/resolv.conf`;
//! - [`netns`]: work inside another network namespace.
//!
//! [`attach`] does it all for one container once its network namespace exists (after
//! `create`, before `start`); [`detach`] undoes it and needs only the network's
//! configuration and the container id, so a delete after a crash can clean up: the
//! rules are found by their comment, the veth by its name (derived from the id), the
//! lease by the id. Everything happens in the *calling thread's* network namespace,
//! which is the host's for PID 1 and whatever namespace a test or `ip netns exec` put
//! the caller in.
//!
//! Defaults (Docker's, where Docker has one): bridge `gantry0`, subnet `10.88.0.0/16`
//! (Podman's; it stays clear of Docker's 172.17.0.0/16 on a machine that has both),
//! MTU 1500, upstream DNS 8.8.8.8 and 8.8.4.4 when the host only has a loopback
//! resolver. The host namespace gets `net.ipv4.ip_forward=1` (to route for the
//! containers) and `net.ipv4.conf.<bridge>.route_localnet=1` (so that a port published
//! on 127.0.0.1 can be DNATed out of the bridge). Both open doors that the firewall's
//! filter chains close again: nothing from the bridge reaches 127.0.0.0/8 (or the cloud
//! metadata address), and only replies and published ports are forwarded into it.
//!
//! `--network host` shares the host's namespace (no `network` namespace in the bundle,
//! nothing to attach); `none` gives the container a namespace with only `lo`, up
//! ([`loopback_up`]).

pub mod bridge;
pub mod dns;
pub mod firewall;
pub mod ipam;
pub mod netns;
pub mod nft;

use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use ipam::{Ipam, IpamError, Subnet};
pub use netns::{Netns, NetnsError, NetnsId};

use crate::ContainerId;

/// Where PID 1 keeps network state.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/gantry/network";
pub const DEFAULT_BRIDGE: &str = "gantry0";
pub const DEFAULT_MTU: u32 = 1500;
/// Docker's fallback resolvers, for hosts whose only resolver is on loopback.
pub const DEFAULT_UPSTREAM_DNS: [Ipv4Addr; 2] =
    [Ipv4Addr::new(8, 8, 8, 8), Ipv4Addr::new(8, 8, 4, 4)];

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("network configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("start the netlink runtime: {0}")]
    Runtime(std::io::Error),
    #[error("{op}: {reason}")]
    Netlink { op: String, reason: String },
    #[error("set {path}: {source}")]
    Sysctl {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("network {network}: {source}")]
    Ipam { network: String, source: IpamError },
    #[error("nf_tables: {0}")]
    Nft(#[from] nft::NftError),
    #[error("container {container}'s network lives in network namespace {recorded}, but this process is in {current}; run the delete there")]
    ForeignNetns {
        container: String,
        recorded: NetnsId,
        current: NetnsId,
    },
}

/// A bridged network's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// The bridge's name, which is also the network's name.
    pub bridge: String,
    pub subnet: Subnet,
    pub mtu: u32,
    /// Where the leases live.
    pub state_dir: PathBuf,
    /// Resolvers for containers when the host has none they can reach.
    pub upstream_dns: Vec<Ipv4Addr>,
}

impl Network {
    /// The defaults, with leases under `state_dir`.
    pub fn new(state_dir: &Path) -> Self {
        Network {
            bridge: DEFAULT_BRIDGE.to_owned(),
            subnet: Subnet::DEFAULT,
            mtu: DEFAULT_MTU,
            state_dir: state_dir.to_owned(),
            upstream_dns: DEFAULT_UPSTREAM_DNS.to_vec(),
        }
    }

    /// Checks what the types cannot: the bridge name and the MTU.
    pub fn validate(&self) -> Result<(), NetworkError> {
        let b = &self.bridge;
        if b.is_empty()
            || b.len() > 15
            || !b
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        {
            return Err(NetworkError::Config(format!(
                "bridge name {b:?} must be 1 to 15 letters, digits, '-', '_' or '.'"
            )));
        }
        if !(576..=65535).contains(&self.mtu) {
            return Err(NetworkError::Config(format!(
                "MTU {} must be 576 to 65535",
                self.mtu
            )));
        }
        Ok(())
    }

    fn ipam(&self) -> Result<Ipam, NetworkError> {
        Ipam::lock(&self.state_dir, &self.bridge, self.subnet).map_err(|source| {
            NetworkError::Ipam {
                network: self.bridge.clone(),
                source,
            }
        })
    }
}

/// How a container is networked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Its own namespace with only `lo`.
    #[default]
    None,
    /// The host's namespace.
    Host,
    /// Its own namespace on the bridge.
    Bridge,
}

impl FromStr for NetworkMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(NetworkMode::None),
            "host" => Ok(NetworkMode::Host),
            "bridge" => Ok(NetworkMode::Bridge),
            other => Err(format!(
                "network mode {other:?} is not one of bridge, host, none"
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// A published port: `[host_ip:]host_port:container_port[/tcp|/udp]`, as `docker run
/// -p` takes it (without ranges).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// Only packets for this host address; any of the host's addresses when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("port mapping {value:?} is invalid: {reason}")]
pub struct InvalidPortMapping {
    pub value: String,
    pub reason: String,
}

impl PortMapping {
    /// Whether both would catch the same packets.
    pub fn clashes_with(&self, other: &PortMapping) -> bool {
        self.protocol == other.protocol
            && self.host_port == other.host_port
            && (self.host_ip.is_none() || other.host_ip.is_none() || self.host_ip == other.host_ip)
    }

    /// `[ip:]port/proto`, for messages.
    pub fn host_side(&self) -> String {
        match self.host_ip {
            Some(ip) => format!("{ip}:{}/{}", self.host_port, self.protocol),
            None => format!("{}/{}", self.host_port, self.protocol),
        }
    }
}

impl FromStr for PortMapping {
    type Err = InvalidPortMapping;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let fail = |reason: String| InvalidPortMapping {
            value: value.to_owned(),
            reason,
        };
        let (ports, protocol) = match value.rsplit_once('/') {
            Some((p, "tcp")) => (p, Protocol::Tcp),
            Some((p, "udp")) => (p, Protocol::Udp),
            Some((_, other)) => return Err(fail(format!("protocol {other:?} is not tcp or udp"))),
            None => (value, Protocol::Tcp),
        };
        let parts: Vec<&str> = ports.split(':').collect();
        let (host_ip, host, container) = match parts[..] {
            [h, c] => (None, h, c),
            [ip, h, c] => {
                let ip: Ipv4Addr = ip
                    .parse()
                    .map_err(|_| fail(format!("host address {ip:?} is not an IPv4 address")))?;
                if ip.is_unspecified() {
                    (None, h, c)
                } else {
                    (Some(ip), h, c)
                }
            }
            _ => {
                return Err(fail(
                    "expected [HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|/udp]".into(),
                ))
            }
        };
        let port = |what: &str, s: &str| -> Result<u16, InvalidPortMapping> {
            match s.parse::<u16>() {
                Ok(p) if p > 0 => Ok(p),
                _ => Err(fail(format!(
                    "{what} port {s:?} is not a number from 1 to 65535"
                ))),
            }
        };
        Ok(PortMapping {
            host_ip,
            host_port: port("host", host)?,
            container_port: port("container", container)?,
            protocol,
        })
    }
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(ip) = self.host_ip {
            write!(f, "{ip}:")?;
        }
        write!(
            f,
            "{}:{}/{}",
            self.host_port, self.container_port, self.protocol
        )
    }
}

/// What [`attach`] set up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub container: String,
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    /// The host end of the veth pair.
    pub host_veth: String,
    pub ports: Vec<PortMapping>,
}

/// Puts container `id`, whose network namespace is `container_ns` (for example
/// `/proc/<pid>/ns/net`), on the network: lease, bridge, veth, address, route, firewall
/// rules for `ports`. On failure what was done is undone.
pub fn attach(
    net: &Network,
    id: &ContainerId,
    container_ns: &Path,
    ports: &[PortMapping],
) -> Result<Attachment, NetworkError> {
    net.validate()?;
    let host = Netns::current()?;
    let container = Netns::open(container_ns)?;
    if container.id() == host.id() {
        return Err(NetworkError::Config(format!(
            "container {id} shares the host's network namespace; nothing to attach"
        )));
    }
    let mut ipam = net.ipam()?;
    let result = attach_locked(net, id, &host, &container, ports, &mut ipam);
    if result.is_err() {
        let _ = detach_locked(net, id, &host, &mut ipam);
    }
    result
}

fn attach_locked(
    net: &Network,
    id: &ContainerId,
    host: &Netns,
    container: &Netns,
    ports: &[PortMapping],
    ipam: &mut Ipam,
) -> Result<Attachment, NetworkError> {
    let address = ipam
        .allocate(id, ports)
        .map_err(|source| NetworkError::Ipam {
            network: net.bridge.clone(),
            source,
        })?;
    let (prefix, gateway) = (net.subnet.prefix(), net.subnet.gateway());
    let host_veth = bridge::host_veth_name(id);
    let veth = host_veth.as_str();
    host.run(|| -> Result<(), NetworkError> {
        bridge::set_net_sysctl("ipv4/ip_forward", "1")?;
        bridge::with_handle(|h| async move {
            let br = bridge::ensure_bridge(&h, &net.bridge, gateway, prefix, net.mtu).await?;
            bridge::add_veth(&h, veth, br, net.mtu, container.fd()).await
        })?;
        bridge::set_net_sysctl(&format!("ipv4/conf/{}/route_localnet", net.bridge), "1")?;
        let sock = nft::NftSocket::open()?;
        firewall::setup(&sock, &net.bridge, net.subnet)?;
        firewall::publish(&sock, id, address, ports)?;
        Ok(())
    })??;
    container.run(|| {
        bridge::with_handle(|h| async move {
            bridge::configure_container(&h, address, prefix, gateway).await
        })
    })??;
    Ok(Attachment {
        container: id.to_string(),
        address,
        prefix,
        gateway,
        host_veth,
        ports: ports.to_vec(),
    })
}

/// Brings `lo` up in the network namespace `netns` (a container with `--network none`),
/// as Docker and runc do for a container's own namespace.
pub fn loopback_up(netns: &Path) -> Result<(), NetworkError> {
    Netns::open(netns)?
        .run(|| bridge::with_handle(|h| async move { bridge::loopback_up(&h).await }))?
}

/// Takes container `id` off the network: its firewall rules, its veth pair (if the
/// container's namespace has not taken it along already) and its lease. Safe to run
/// again, and after an attach that failed half-way.
pub fn detach(net: &Network, id: &ContainerId) -> Result<(), NetworkError> {
    let host = Netns::current()?;
    let mut ipam = net.ipam()?;
    detach_locked(net, id, &host, &mut ipam)
}

fn detach_locked(
    net: &Network,
    id: &ContainerId,
    host: &Netns,
    ipam: &mut Ipam,
) -> Result<(), NetworkError> {
    let host_veth = bridge::host_veth_name(id);
    host.run(|| -> Result<(), NetworkError> {
        let sock = nft::NftSocket::open()?;
        firewall::unpublish(&sock, id)?;
        bridge::with_handle(|h| async move { bridge::delete_link(&h, &host_veth).await })?;
        Ok(())
    })??;
    ipam.release(id).map_err(|source| NetworkError::Ipam {
        network: net.bridge.clone(),
        source,
    })?;
    Ok(())
}

/// What a container's state keeps about its network, so that `delete` can detach it
/// from the state alone, in the right namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub network: Network,
    /// The namespace the network was attached from.
    pub host_netns: NetnsId,
}

impl Record {
    /// A record of attaching to `network` from the calling thread's namespace.
    pub fn here(network: &Network) -> Result<Self, NetworkError> {
        Ok(Record {
            network: network.clone(),
            host_netns: Netns::current()?.id(),
        })
    }

    /// Detaches container `id`, refusing to touch another namespace's network.
    pub fn detach(&self, id: &ContainerId) -> Result<(), NetworkError> {
        let current = Netns::current()?.id();
        if current != self.host_netns {
            return Err(NetworkError::ForeignNetns {
                container: id.to_string(),
                recorded: self.host_netns,
                current,
            });
        }
        detach(&self.network, id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_mappings_parse_as_docker_writes_them() {
        let p: PortMapping = "8080:80".parse().unwrap();
        assert_eq!(
            p,
            PortMapping {
                host_ip: None,
                host_port: 8080,
                container_port: 80,
                protocol: Protocol::Tcp
            }
        );
        let p: PortMapping = "127.0.0.1:5353:53/udp".parse().unwrap();
        assert_eq!(p.host_ip, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(p.protocol, Protocol::Udp);
        assert_eq!(p.to_string(), "127.0.0.1:5353:53/udp");
        let p: PortMapping = "0.0.0.0:1:2/tcp".parse().unwrap();
        assert_eq!(p.host_ip, None);
    }

    #[test]
    fn bad_port_mappings_name_the_value_and_the_reason() {
        for (bad, why) in [
            ("80", "expected"),
            ("8080:80/sctp", "\"sctp\" is not tcp or udp"),
            ("x:80", "host port \"x\""),
            ("8080:0", "container port \"0\""),
            ("8080:70000", "container port \"70000\""),
            ("::1:80:80", "expected"),
            ("host:80:80", "host address \"host\""),
        ] {
            let err = bad.parse::<PortMapping>().unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(&format!("{bad:?}")), "{msg}");
            assert!(msg.contains(why), "{msg}");
        }
    }

    #[test]
    fn port_clashes_follow_protocol_port_and_address() {
        let p = |s: &str| s.parse::<PortMapping>().unwrap();
        assert!(p("80:1").clashes_with(&p("80:2")));
        assert!(p("80:1").clashes_with(&p("10.0.0.1:80:2")));
        assert!(!p("10.0.0.2:80:1").clashes_with(&p("10.0.0.1:80:2")));
        assert!(!p("80:1/udp").clashes_with(&p("80:1/tcp")));
    }

    #[test]
    fn network_modes_and_configuration_are_checked() {
        assert_eq!("bridge".parse::<NetworkMode>(), Ok(NetworkMode::Bridge));
        assert!("nat"
            .parse::<NetworkMode>()
            .unwrap_err()
            .contains("\"nat\""));
        let mut net = Network::new(Path::new("/tmp"));
        net.validate().unwrap();
        net.bridge = "a-name-that-is-too-long".into();
        assert!(net.validate().unwrap_err().to_string().contains("1 to 15"));
        net.bridge = "br0".into();
        net.mtu = 100;
        assert!(net.validate().unwrap_err().to_string().contains("MTU 100"));
    }
}
