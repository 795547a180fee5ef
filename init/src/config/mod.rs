//! The machine configuration: one TOML document that says what a machine is.
//!
//! This module owns the schema: the format `version`, the `hostname`, the `[network]`
//! section, and the `[registries]` and `[containers.<name>]` sections ([`containers`]).
//! The `[update]` section is the updater's [`UpdatePolicy`], documented with an example of
//! every key in `updater/src/policy.rs`. The optional `[api]` section (where PID 1's HTTPS
//! API listens, its certificate and key, the SHA-256 of each bearer token) is
//! [`crate::api::config::ApiConfig`], documented with an example there; without it there is
//! no API.
//! Unknown keys are refused, and every error names the key path and the reason, e.g.
//! `network.interfaces[0].mtu: 20 is below the IPv4 minimum of 68`.
//!
//! ```toml
//! version = 1
//! hostname = "edge-7"
//!
//! [network]
//! carrier_timeout_secs = 10       # how long a NIC may go without carrier before we say so
//!
//! [[network.interfaces]]
//! name = "eth0"                   # or: mac = "52:54:00:12:34:56"
//! dhcp = true                     # the default when no static address is given
//! mtu = 1500
//!
//! [[network.interfaces]]
//! mac = "52:54:00:aa:bb:cc"
//! addresses = ["192.0.2.10/24", "2001:db8::10/64"]
//! gateway4 = "192.0.2.1"
//! gateway6 = "2001:db8::1"
//! routes = [{ to = "198.51.100.0/24", via = "192.0.2.254" }]
//! ipv6_ra = true                  # accept router advertisements (SLAAC); off by default
//!
//! [network.dns]
//! servers = ["192.0.2.53"]        # used before any the DHCP server gives
//! search = ["example.net"]
//!
//! [network.hosts]                 # lines of every container's /etc/hosts
//! "db-1" = "192.0.2.21"
//!
//! [update]                        # every key optional; see gantry_updater::policy
//! server = "https://updates.example.net/gantry/stable.json"
//! channel = "stable"
//! reboot = "window"               # immediately (default), off, or window
//! window = { days = ["sat", "sun"], start = "02:30", duration_mins = 120 }   # UTC
//! tries = 3
//! ```
//!
//! With no `[[network.interfaces]]` at all, every physical NIC (one with a device behind it
//! in sysfs) is brought up with DHCP.
//!
//! Where the document comes from (kernel command line, fw_cfg, a config drive, the metadata
//! service, the last good copy) is [`sources`].

pub mod containers;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::str::FromStr;

use crate::api::ApiConfig;
use gantry_updater::policy::UpdatePolicy;
use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

pub mod drive;
pub mod imds;
pub mod last_good;
pub mod sources;
pub mod user_data;

pub use containers::{ContainerSpec, HealthSpec, RegistriesConfig, RestartPolicy};

/// The only format version there is.
pub const FORMAT_VERSION: u32 = 1;

/// Where QEMU's `-fw_cfg name=opt/org.gantry/config,file=…` appears in the guest.
pub const FW_CFG_PATH: &str = "/sys/firmware/qemu_fw_cfg/by_name/opt/org.gantry/config/raw";

/// The largest config accepted, from any source.
pub const MAX_CONFIG_BYTES: usize = 1 << 20;

/// A whole machine configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfig {
    /// Format version; must be [`FORMAT_VERSION`].
    pub version: u32,
    /// The machine's host name; when absent, the DHCP server's (or the image's) is used.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Interfaces, addresses and DNS.
    #[serde(default)]
    pub network: NetworkConfig,
    /// Registry trust and credentials for pulls.
    #[serde(default)]
    pub registries: RegistriesConfig,
    /// The containers to run, by name.
    #[serde(default)]
    pub containers: BTreeMap<String, ContainerSpec>,
    /// Update server, channel, reboot strategy, boot tries and health gate time.
    #[serde(default)]
    pub update: UpdatePolicy,
    /// PID 1's HTTPS API; none without the section.
    #[serde(default)]
    pub api: Option<ApiConfig>,
}

/// The `[network]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// The NICs to configure; empty means every physical NIC with DHCP.
    #[serde(default)]
    pub interfaces: Vec<InterfaceConfig>,
    /// Resolver settings added to what DHCP gives.
    #[serde(default)]
    pub dns: DnsConfig,
    /// How long to wait for carrier on a NIC before logging that it has none (the NIC
    /// stays configured and is used as soon as carrier comes).
    #[serde(default = "default_carrier_timeout")]
    pub carrier_timeout_secs: u64,
    /// Names every container's `/etc/hosts` gets (a cluster's nodes, say), by name.
    #[serde(default)]
    pub hosts: BTreeMap<String, IpAddr>,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            interfaces: Vec::new(),
            dns: DnsConfig::default(),
            carrier_timeout_secs: default_carrier_timeout(),
            hosts: BTreeMap::new(),
        }
    }
}

fn default_carrier_timeout() -> u64 {
    10
}

/// One `[[network.interfaces]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterfaceConfig {
    /// Kernel interface name (`eth0`, `enp0s3`); exactly one of `name` and `mac`.
    #[serde(default)]
    pub name: Option<String>,
    /// Hardware address; exactly one of `name` and `mac`.
    #[serde(default)]
    pub mac: Option<MacAddr>,
    /// Run the DHCPv4 client; defaults to true when `addresses` is empty.
    #[serde(default)]
    pub dhcp: Option<bool>,
    /// Link MTU; the DHCP server's MTU option is used when this is absent.
    #[serde(default)]
    pub mtu: Option<u32>,
    /// Static addresses with prefix length.
    #[serde(default)]
    pub addresses: Vec<IpNet>,
    /// Default IPv4 gateway.
    #[serde(default)]
    pub gateway4: Option<Ipv4Addr>,
    /// Default IPv6 gateway.
    #[serde(default)]
    pub gateway6: Option<Ipv6Addr>,
    /// Extra static routes.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Accept IPv6 router advertisements and autoconfigure addresses (SLAAC).
    #[serde(default)]
    pub ipv6_ra: bool,
}

impl InterfaceConfig {
    /// Whether the DHCPv4 client runs on this interface.
    pub fn dhcp_enabled(&self) -> bool {
        self.dhcp.unwrap_or(self.addresses.is_empty())
    }

    /// How the interface is named in logs and errors: its name or its MAC.
    pub fn selector(&self) -> String {
        match (&self.name, &self.mac) {
            (Some(n), _) => n.clone(),
            (None, Some(m)) => m.to_string(),
            (None, None) => "?".to_owned(),
        }
    }
}

/// A static route.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Destination prefix.
    pub to: IpNet,
    /// Next hop; same family as `to`.
    pub via: IpAddr,
    /// Route metric (priority); lower wins.
    #[serde(default)]
    pub metric: Option<u32>,
}

/// The `[network.dns]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// Name servers, used before any from DHCP.
    #[serde(default)]
    pub servers: Vec<IpAddr>,
    /// Search domains, used before any from DHCP.
    #[serde(default)]
    pub search: Vec<String>,
}

/// An Ethernet hardware address, written `52:54:00:12:34:56`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a MAC address like 52:54:00:12:34:56");
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for byte in &mut out {
            let p = parts.next().ok_or_else(bad)?;
            if p.len() != 2 {
                return Err(bad());
            }
            *byte = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(out))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A config that cannot be used: where it came from, the key path and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}: {key}: {reason}")]
pub struct ConfigError {
    /// Where the document came from (`fw_cfg opt/org.gantry/config`, a file path).
    pub source_name: String,
    /// The key path (`network.interfaces[0].mtu`), or `(document)` for the whole text.
    pub key: String,
    /// Why it was refused.
    pub reason: String,
}

impl MachineConfig {
    /// Parses and validates a TOML document; `source_name` goes into errors.
    pub fn parse(text: &str, source_name: &str) -> Result<MachineConfig, Vec<ConfigError>> {
        let err = |key: &str, reason: String| ConfigError {
            source_name: source_name.to_owned(),
            key: key.to_owned(),
            reason,
        };
        if text.len() > MAX_CONFIG_BYTES {
            return Err(vec![err(
                "(document)",
                format!(
                    "{} bytes is more than the {MAX_CONFIG_BYTES} allowed",
                    text.len()
                ),
            )]);
        }
        let config: MachineConfig = serde_path_to_error::deserialize(toml::Deserializer::new(text))
            .map_err(|e| {
                let path = e.path().to_string();
                let key = if path == "." || path.is_empty() {
                    "(document)".to_owned()
                } else {
                    path
                };
                let inner = e.into_inner();
                let reason = match inner.span() {
                    Some(span) => {
                        let before = text.get(..span.start).unwrap_or(text);
                        let line = before.matches('\n').count() + 1;
                        format!("{} (line {line})", inner.message())
                    }
                    None => inner.message().to_owned(),
                };
                vec![err(&key, reason)]
            })?;
        let problems: Vec<ConfigError> = config
            .problems()
            .into_iter()
            .map(|(k, r)| err(&k, r))
            .collect();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(problems)
        }
    }

    /// Every semantic problem, as (key path, reason).
    fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.version != FORMAT_VERSION {
            out.push((
                "version".to_owned(),
                format!(
                    "{} is not a known format version (this Gantry reads {FORMAT_VERSION})",
                    self.version
                ),
            ));
        }
        if let Some(h) = &self.hostname {
            if !crate::cmdline::valid_hostname(h) {
                out.push((
                    "hostname".to_owned(),
                    format!("{h:?} is not a valid host name (dot-separated labels of letters, digits and '-')"),
                ));
            }
        }
        self.network.problems(&mut out);
        containers::problems(&self.containers, &self.registries, &mut out);
        out.extend(
            self.update
                .problems()
                .into_iter()
                .map(|(key, reason)| (format!("update.{key}"), reason)),
        );
        if let Some(api) = &self.api {
            out.extend(
                api.problems()
                    .into_iter()
                    .map(|(key, reason)| (format!("api.{key}"), reason)),
            );
        }
        out
    }
}

impl NetworkConfig {
    fn problems(&self, out: &mut Vec<(String, String)>) {
        for name in self.hosts.keys() {
            if !crate::cmdline::valid_hostname(name) {
                out.push((
                    format!("network.hosts.{name:?}"),
                    "is not a host name".to_owned(),
                ));
            }
        }
        let mut names = BTreeSet::new();
        let mut macs = BTreeSet::new();
        for (i, iface) in self.interfaces.iter().enumerate() {
            let key = |field: &str| format!("network.interfaces[{i}].{field}");
            match (&iface.name, &iface.mac) {
                (Some(_), Some(_)) => out.push((
                    format!("network.interfaces[{i}]"),
                    "give either name or mac, not both".to_owned(),
                )),
                (None, None) => out.push((
                    format!("network.interfaces[{i}]"),
                    "needs a name or a mac".to_owned(),
                )),
                _ => {}
            }
            if let Some(name) = &iface.name {
                if let Err(reason) = check_ifname(name) {
                    out.push((key("name"), reason));
                } else if !names.insert(name.clone()) {
                    out.push((key("name"), format!("{name:?} is configured twice")));
                }
            }
            if let Some(mac) = iface.mac {
                if !macs.insert(mac) {
                    out.push((key("mac"), format!("{mac} is configured twice")));
                }
            }
            if let Some(mtu) = iface.mtu {
                if mtu < 68 {
                    out.push((key("mtu"), format!("{mtu} is below the IPv4 minimum of 68")));
                } else if mtu > 65535 {
                    out.push((key("mtu"), format!("{mtu} is above the maximum of 65535")));
                } else if mtu < 1280 && iface.ipv6_ra {
                    out.push((
                        key("mtu"),
                        format!("{mtu} is below the IPv6 minimum of 1280 and ipv6_ra is on"),
                    ));
                }
            }
            if iface.dhcp == Some(false) && iface.addresses.is_empty() && !iface.ipv6_ra {
                out.push((
                    key("dhcp"),
                    "false with no addresses and ipv6_ra off leaves the interface without an address".to_owned(),
                ));
            }
            for (j, a) in iface.addresses.iter().enumerate() {
                if a.addr().is_unspecified() || a.addr().is_multicast() {
                    out.push((
                        format!("network.interfaces[{i}].addresses[{j}]"),
                        format!("{a} is not a unicast address"),
                    ));
                } else if let IpNet::V4(v4) = a {
                    if v4.prefix_len() < 31 && v4.addr() == v4.broadcast() {
                        out.push((
                            format!("network.interfaces[{i}].addresses[{j}]"),
                            format!("{a} is the broadcast address of its subnet"),
                        ));
                    }
                }
            }
            let has_v4 = iface.addresses.iter().any(|a| matches!(a, IpNet::V4(_)));
            let has_v6 = iface.addresses.iter().any(|a| matches!(a, IpNet::V6(_)));
            if iface.gateway4.is_some() && !has_v4 && !iface.dhcp_enabled() {
                out.push((
                    key("gateway4"),
                    "needs an IPv4 address in addresses (or dhcp)".to_owned(),
                ));
            }
            if iface.gateway6.is_some() && !has_v6 && !iface.ipv6_ra {
                out.push((
                    key("gateway6"),
                    "needs an IPv6 address in addresses (or ipv6_ra)".to_owned(),
                ));
            }
            for (j, r) in iface.routes.iter().enumerate() {
                if r.to.addr().is_ipv4() != r.via.is_ipv4() {
                    out.push((
                        format!("network.interfaces[{i}].routes[{j}].via"),
                        format!("{} is not the same address family as {}", r.via, r.to),
                    ));
                }
            }
        }
        if self.dns.servers.len() > 3 {
            out.push((
                "network.dns.servers".to_owned(),
                format!(
                    "{} servers given; the resolver uses at most 3",
                    self.dns.servers.len()
                ),
            ));
        }
        for (j, d) in self.dns.search.iter().enumerate() {
            if !valid_domain(d) {
                out.push((
                    format!("network.dns.search[{j}]"),
                    format!("{d:?} is not a domain name"),
                ));
            }
        }
        if self.carrier_timeout_secs > 3600 {
            out.push((
                "network.carrier_timeout_secs".to_owned(),
                format!("{} is more than an hour", self.carrier_timeout_secs),
            ));
        }
    }
}

/// Checks a kernel interface name: 1–15 bytes, no '/', ':' or white space, not `.`/`..`.
pub fn check_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 15 {
        return Err(format!("{name:?} is not 1 to 15 bytes long"));
    }
    if name == "."
        || name == ".."
        || name.contains(['/', ':'])
        || name.contains(char::is_whitespace)
    {
        return Err(format!("{name:?} is not a valid interface name"));
    }
    Ok(())
}

/// A DNS name (a trailing dot allowed): the same rules as a host name.
pub fn valid_domain(name: &str) -> bool {
    crate::cmdline::valid_hostname(name.strip_suffix('.').unwrap_or(name))
}

/// Reads the config QEMU passes with `-fw_cfg name=opt/org.gantry/config`: `Ok(None)` when
/// there is none (not QEMU, or no such file).
pub fn from_fw_cfg(path: &Path) -> Result<Option<MachineConfig>, Vec<ConfigError>> {
    let source_name = "fw_cfg opt/org.gantry/config";
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(vec![ConfigError {
                source_name: source_name.to_owned(),
                key: "(document)".to_owned(),
                reason: format!("cannot read {}: {e}", path.display()),
            }])
        }
    };
    let text = String::from_utf8(bytes).map_err(|e| {
        vec![ConfigError {
            source_name: source_name.to_owned(),
            key: "(document)".to_owned(),
            reason: format!("not UTF-8 (byte {})", e.utf8_error().valid_up_to()),
        }]
    })?;
    MachineConfig::parse(&text, source_name).map(Some)
}

/// Helpers for the config tests of this module and its children.
#[cfg(test)]
pub(crate) mod test_support {
    /// The first ```toml block of a module's `//!` docs, as TOML text.
    pub(crate) fn doc_example(source: &str) -> String {
        source
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| {
                l.strip_prefix("//! ")
                    .or(l.strip_prefix("//!"))
                    .unwrap_or(l)
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Every expected message starts one of `got`, and `got` has nothing else.
    pub(crate) fn assert_exactly(got: &[String], want: &[&str]) {
        for w in want {
            assert!(
                got.iter().any(|g| g.starts_with(w)),
                "missing {w:?} in {got:#?}"
            );
        }
        assert_eq!(got.len(), want.len(), "{got:#?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_updater::policy::RebootStrategy;

    fn parse(text: &str) -> Result<MachineConfig, Vec<ConfigError>> {
        MachineConfig::parse(text, "test")
    }

    fn only_error(text: &str) -> String {
        let errors = parse(text).expect_err("must be refused");
        assert_eq!(errors.len(), 1, "{errors:?}");
        errors[0].to_string()
    }

    #[test]
    fn the_documented_example_parses() {
        let doc = test_support::doc_example(include_str!("mod.rs"));
        let c = parse(&doc).expect("the example in the docs must be valid");
        assert_eq!(c.hostname.as_deref(), Some("edge-7"));
        assert_eq!(c.network.interfaces.len(), 2);
        assert!(c.network.interfaces[0].dhcp_enabled());
        assert!(!c.network.interfaces[1].dhcp_enabled());
        assert_eq!(
            c.network.interfaces[1].mac,
            Some(MacAddr([0x52, 0x54, 0, 0xaa, 0xbb, 0xcc]))
        );
        assert_eq!(
            c.network.interfaces[1].routes[0].via.to_string(),
            "192.0.2.254"
        );
        assert_eq!(c.update.channel.as_str(), "stable");
        assert_eq!(c.update.reboot, RebootStrategy::Window);
        assert_eq!(c.update.window.map(|w| w.duration_mins), Some(120));
    }

    #[test]
    fn the_update_policy_example_parses_in_a_machine_config() {
        let doc = test_support::doc_example(include_str!("../../../updater/src/policy.rs"));
        let c = parse(&format!("version = 1\n{doc}")).expect("the update example is valid");
        assert!(c.update.server.is_some());
        assert_eq!(c.update.boot_tries(), 3);
    }

    #[test]
    fn without_an_update_section_the_policy_is_the_default() {
        let c = parse("version = 1").unwrap();
        assert_eq!(c.update, UpdatePolicy::default());
        assert_eq!(c.update.server, None);
    }

    #[test]
    fn bad_update_values_name_the_key_and_the_reason() {
        for (text, want) in [
            (
                "[update]\nserver = \"ftp://updates.example.net/c\"\n",
                "test: update.server: \"ftp://updates.example.net/c\" is not an http:// or https:// URL (line 3)",
            ),
            (
                "[update]\nchannel = \"Beta\"\n",
                "test: update.channel: \"Beta\" is not a channel name",
            ),
            (
                "[update]\nreboot = \"sometimes\"\n",
                "test: update.reboot: \"sometimes\" is not a reboot strategy",
            ),
            (
                "[update]\nlease = \"zookeeper\"\n",
                "test: update.lease: \"zookeeper\" is not a lease kind",
            ),
            (
                "[update]\nreboot = \"window\"\n[update.window]\ndays = [\"sat\", \"sunday\"]\nstart = \"02:00\"\nduration_mins = 60\n",
                "test: update.window.days[1]: \"sunday\" is not a day",
            ),
            (
                "[update]\nreboot = \"window\"\n[update.window]\nstart = \"25:00\"\nduration_mins = 60\n",
                "test: update.window.start: \"25:00\" is not a time of day",
            ),
            (
                "[update]\nintervall = 60\n",
                "test: update.intervall: unknown field `intervall`",
            ),
        ] {
            let e = only_error(&format!("version = 1\n{text}"));
            assert!(e.starts_with(want), "{e}");
        }
    }

    #[test]
    fn update_values_out_of_range_are_all_reported() {
        let errors = parse(
            "version = 1\n[update]\ncheck_interval_secs = 5\ntries = 12\n\
             health_timeout_secs = 0\nreboot = \"off\"\n\
             [update.window]\nstart = \"02:00\"\nduration_mins = 0\n",
        )
        .expect_err("must be refused");
        let text: Vec<String> = errors
            .iter()
            .map(|e| format!("{}: {}", e.key, e.reason))
            .collect();
        test_support::assert_exactly(
            &text,
            &[
                "update.check_interval_secs: 5 is less than 10",
                "update.tries: 12 is more than 9",
                "update.health_timeout_secs: 0 is less than 10",
                "update.window: is given but reboot is \"off\"",
            ],
        );
        let e = only_error("version = 1\n[update]\nreboot = \"window\"\n");
        assert_eq!(
            e,
            "test: update.reboot: \"window\" needs an [update.window] section"
        );
    }

    #[test]
    fn a_minimal_config_means_dhcp_everywhere() {
        let c = parse("version = 1").unwrap();
        assert!(c.network.interfaces.is_empty());
        assert_eq!(c.network.carrier_timeout_secs, 10);
    }

    #[test]
    fn unknown_keys_are_refused_with_their_path() {
        let e = only_error(
            "version = 1\n[network]\n[[network.interfaces]]\nname = \"eth0\"\nmut = 1500\n",
        );
        assert!(e.starts_with("test: network.interfaces[0].mut: "), "{e}");
        assert!(e.contains("unknown field `mut`"), "{e}");
        assert!(e.contains("line 5"), "{e}");
    }

    #[test]
    fn wrong_types_name_the_key() {
        let e = only_error("version = 1\n[[network.interfaces]]\nname = \"eth0\"\nmtu = \"big\"\n");
        assert!(e.starts_with("test: network.interfaces[0].mtu:"), "{e}");
        let e = only_error(
            "version = 1\n[[network.interfaces]]\nname = \"eth0\"\naddresses = [\"10.0.0.1\"]\n",
        );
        assert!(e.contains("network.interfaces[0].addresses[0]"), "{e}");
        let e = only_error("version = 1\n[[network.interfaces]]\nmac = \"52:54:00:12:34\"\n");
        assert!(e.contains("network.interfaces[0].mac"), "{e}");
        assert!(e.contains("not a MAC address"), "{e}");
    }

    #[test]
    fn semantic_errors_are_all_reported() {
        let errors = parse(
            "version = 2\nhostname = \"bad name\"\n\
             [[network.interfaces]]\nname = \"eth0\"\nmac = \"52:54:00:12:34:56\"\nmtu = 20\n\
             [[network.interfaces]]\nname = \"a/b\"\n\
             [[network.interfaces]]\nname = \"eth1\"\naddresses = [\"10.0.0.255/24\"]\n\
             routes = [{ to = \"10.1.0.0/16\", via = \"fe80::1\" }]\ngateway6 = \"fe80::1\"\n\
             [network.dns]\nservers = [\"1.1.1.1\", \"1.0.0.1\", \"8.8.8.8\", \"9.9.9.9\"]\nsearch = [\"-bad\"]\n\
             [network.hosts]\n\"bad host\" = \"10.0.0.1\"\n\"good-1\" = \"10.0.0.2\"\n",
        )
        .expect_err("must be refused");
        let text: Vec<String> = errors
            .iter()
            .map(|e| format!("{}: {}", e.key, e.reason))
            .collect();
        let expect = [
            "version: 2 is not a known format version",
            "hostname: \"bad name\"",
            "network.interfaces[0]: give either name or mac",
            "network.interfaces[0].mtu: 20 is below the IPv4 minimum of 68",
            "network.interfaces[1].name: \"a/b\" is not a valid interface name",
            "network.interfaces[2].addresses[0]: 10.0.0.255/24 is the broadcast address",
            "network.interfaces[2].gateway6: needs an IPv6 address",
            "network.interfaces[2].routes[0].via: fe80::1 is not the same address family",
            "network.dns.servers: 4 servers given",
            "network.dns.search[0]: \"-bad\" is not a domain name",
            "network.hosts.\"bad host\": is not a host name",
        ];
        test_support::assert_exactly(&text, &expect);
    }

    #[test]
    fn mac_addresses_round_trip() {
        let m: MacAddr = "52:54:00:AB:cd:0F".parse().unwrap();
        assert_eq!(m.to_string(), "52:54:00:ab:cd:0f");
        for bad in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:0f:00",
            "5:54:00:ab:cd:0f",
            "zz:54:00:ab:cd:0f",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn fw_cfg_absent_is_not_an_error_and_garbage_is() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(from_fw_cfg(&dir.path().join("raw")), Ok(None));
        std::fs::write(dir.path().join("raw"), b"version = 1\nhostname = \"vm1\"\n").unwrap();
        let c = from_fw_cfg(&dir.path().join("raw")).unwrap().unwrap();
        assert_eq!(c.hostname.as_deref(), Some("vm1"));
        std::fs::write(dir.path().join("raw"), b"\xff\xfe").unwrap();
        let e = from_fw_cfg(&dir.path().join("raw")).unwrap_err();
        assert!(e[0].to_string().contains("not UTF-8"), "{e:?}");
    }
}
