//! The `[containers.<name>]` and `[registries]` sections of the machine config.
//!
//! ```toml
//! [registries]
//! insecure = ["10.0.2.100:5000"]          # plain HTTP allowed to these
//! ca_certs = ["""-----BEGIN CERTIFICATE-----
//! ...
//! -----END CERTIFICATE-----"""]
//! [registries.auth."registry.example.net"]
//! username = "fleet"
//! password = "s3cret"
//! token_realms = ["auth.example.net"]    # token services on other hosts given the login
//!
//! [containers.web]
//! image = "10.0.2.100:5000/demo/web:1"
//! pull = "always"                         # missing (default) or always: see below
//! entrypoint = ["httpd"]                  # replaces the image's Entrypoint
//! command = ["-f", "-p", "80", "-h", "/www"]  # replaces its Cmd
//! env = { GREETING = "hello" }
//! working_dir = "/www"
//! user = "1000:1000"
//! network = "bridge"                      # bridge (default), host or none
//! ports = ["8080:80", "5353:53/udp"]      # [host_ip:]host:container[/tcp|/udp]
//! volumes = ["web-data:/data", "cache:/cache:ro"]   # named volumes under /var
//! restart = "on-failure:5"                # no, on-failure[:max], always (default), unless-stopped
//! depends_on = ["db"]
//! stop_grace_secs = 10                    # SIGTERM, then SIGKILL after this long
//! required = true                         # the update health gate waits for it
//! resources = { memory_mib = 256, cpu_millis = 500, pids = 200 }
//! health = { http = "http://127.0.0.1:80/", interval_secs = 10, timeout_secs = 3, retries = 3, start_period_secs = 5 }
//!
//! [containers.db]
//! image = "10.0.2.100:5000/demo/db:1"
//! health = { tcp = 5432 }
//! ```
//!
//! A health check is exactly one of `exec` (a command run in the container; healthy on exit
//! status 0), `tcp` (a port that accepts a connection) or `http` (a URL on 127.0.0.1 inside
//! the container's network that answers 2xx or 3xx).
//!
//! `pull` says when a tag is resolved again, as Kubernetes' `imagePullPolicy`:
//! `missing` (the default, Kubernetes' `IfNotPresent`) starts the container from the image
//! already in the store without touching the network, and fetches it only when the store
//! lacks it; `always` asks the registry at every boot, follows a moved tag, and falls back
//! to the stored copy with a warning when the registry cannot be reached. A reference by
//! digest cannot move, so it is always treated as `missing` (`gantry image ensure` decides
//! that, as it parses the reference).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use gantry_runtime::network::{NetworkMode, PortMapping};
use gantry_runtime::ImageRef;
use serde::{Deserialize, Deserializer};

/// One container the machine runs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerSpec {
    /// Image reference, pulled before the container first starts.
    pub image: String,
    /// When the image is fetched from its registry; `missing` when absent.
    #[serde(default, deserialize_with = "from_str_opt")]
    pub pull: Option<PullPolicy>,
    /// Replaces the image's `Entrypoint`.
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// Replaces the image's `Cmd`.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Extra environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory inside the container.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// `uid[:gid]` or a user name from the image.
    #[serde(default)]
    pub user: Option<String>,
    /// Network mode; `bridge` when absent.
    #[serde(default, deserialize_with = "from_str_opt")]
    pub network: Option<Network>,
    /// Published ports.
    #[serde(default)]
    pub ports: Vec<String>,
    /// Named volumes, `name:/path[:ro]`.
    #[serde(default)]
    pub volumes: Vec<String>,
    /// Restart policy; `always` when absent.
    #[serde(default, deserialize_with = "from_str_opt")]
    pub restart: Option<RestartPolicy>,
    /// Containers that must be running (and healthy, if they have a check) first.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Seconds between SIGTERM and SIGKILL when stopping.
    #[serde(default = "default_grace")]
    pub stop_grace_secs: u64,
    /// Whether the boot's health gate waits for this container.
    #[serde(default)]
    pub required: bool,
    /// Resource limits (cgroup v2).
    #[serde(default)]
    pub resources: Resources,
    /// Health check.
    #[serde(default)]
    pub health: Option<HealthSpec>,
}

/// The longest health interval, timeout or start period: a day.
pub const MAX_HEALTH_SECS: u64 = 86_400;
/// The most failures in a row a health check may wait for.
pub const MAX_HEALTH_RETRIES: u32 = 1_000;
/// The largest memory limit: 1 TiB.
pub const MAX_MEMORY_MIB: u64 = 1 << 20;
/// The largest CPU limit: 1024 CPUs.
pub const MAX_CPU_MILLIS: u64 = 1_024_000;
/// The largest pids limit (the kernel's `pid_max` ceiling).
pub const MAX_PIDS: u64 = 4_194_304;

fn default_grace() -> u64 {
    10
}

/// Network mode as the config spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network(pub NetworkMode);

impl FromStr for Network {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.parse().map(Network)
    }
}

/// cgroup v2 limits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// `memory.max` in MiB.
    #[serde(default)]
    pub memory_mib: Option<u64>,
    /// CPU time in thousandths of a CPU (`cpu.max`): 500 is half a CPU.
    #[serde(default)]
    pub cpu_millis: Option<u64>,
    /// `pids.max`.
    #[serde(default)]
    pub pids: Option<u64>,
}

/// When a container's image is fetched from its registry (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    /// Only when the store does not have the image.
    Missing,
    /// At every boot, falling back to the stored copy when the registry cannot be reached.
    Always,
}

impl PullPolicy {
    /// The name the config and `gantry image ensure --pull` use.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Missing => "missing",
            PullPolicy::Always => "always",
        }
    }
}

impl FromStr for PullPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "missing" => Ok(PullPolicy::Missing),
            "always" => Ok(PullPolicy::Always),
            _ => Err(format!("{s:?} is not a pull policy (missing, always)")),
        }
    }
}

/// When a container that ended is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Never.
    No,
    /// After a non-zero exit, at most `max` times in a row (unlimited when None).
    OnFailure { max: Option<u32> },
    /// Whatever the exit.
    Always,
    /// Like `always`; a container stopped on purpose (by the API, later) stays stopped
    /// across reboots.
    UnlessStopped,
}

impl FromStr for RestartPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "no" => Ok(RestartPolicy::No),
            "always" => Ok(RestartPolicy::Always),
            "unless-stopped" => Ok(RestartPolicy::UnlessStopped),
            "on-failure" => Ok(RestartPolicy::OnFailure { max: None }),
            _ => match s.strip_prefix("on-failure:") {
                Some(n) => match n.parse::<u32>() {
                    Ok(max) if max > 0 => Ok(RestartPolicy::OnFailure { max: Some(max) }),
                    _ => Err(format!(
                        "{s:?}: the count after on-failure: must be a whole number above 0"
                    )),
                },
                None => Err(format!(
                    "{s:?} is not a restart policy (no, on-failure[:max], always, unless-stopped)"
                )),
            },
        }
    }
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestartPolicy::No => write!(f, "no"),
            RestartPolicy::OnFailure { max: None } => write!(f, "on-failure"),
            RestartPolicy::OnFailure { max: Some(n) } => write!(f, "on-failure:{n}"),
            RestartPolicy::Always => write!(f, "always"),
            RestartPolicy::UnlessStopped => write!(f, "unless-stopped"),
        }
    }
}

/// A health check and its timing.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSpec {
    /// A command run inside the container.
    #[serde(default)]
    pub exec: Option<Vec<String>>,
    /// A TCP port inside the container's network.
    #[serde(default)]
    pub tcp: Option<u16>,
    /// An `http://127.0.0.1[:port]/path` URL inside the container's network.
    #[serde(default)]
    pub http: Option<String>,
    /// Seconds between checks.
    #[serde(default = "default_interval")]
    pub interval_secs: u64,
    /// Seconds a check may take.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Failures in a row that make the container unhealthy.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Seconds after a start during which failures do not count.
    #[serde(default)]
    pub start_period_secs: u64,
}

fn default_interval() -> u64 {
    10
}
fn default_timeout() -> u64 {
    3
}
fn default_retries() -> u32 {
    3
}

/// The `[registries]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistriesConfig {
    /// Registries (`host[:port]`) that may be reached over plain HTTP.
    #[serde(default)]
    pub insecure: Vec<String>,
    /// PEM certificates trusted for registries, besides the public roots.
    #[serde(default)]
    pub ca_certs: Vec<String>,
    /// Credentials by registry host.
    #[serde(default)]
    pub auth: BTreeMap<String, RegistryAuth>,
}

/// A registry login.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryAuth {
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: String,
    /// Hosts (`host` for any port, or `host:port`) besides the registry's own whose bearer
    /// token service may receive the login; a realm on any other host is asked for an
    /// anonymous token. Docker Hub's `auth.docker.io` is built in.
    #[serde(default)]
    pub token_realms: Vec<String>,
}

impl fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .field("token_realms", &self.token_realms)
            .finish()
    }
}

fn from_str_opt<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr<Err = String>,
{
    let s = String::deserialize(d)?;
    s.parse().map(Some).map_err(serde::de::Error::custom)
}

impl ContainerSpec {
    /// The restart policy in force.
    pub fn restart_policy(&self) -> RestartPolicy {
        self.restart.unwrap_or(RestartPolicy::Always)
    }

    /// The pull policy in force.
    pub fn pull_policy(&self) -> PullPolicy {
        self.pull.unwrap_or(PullPolicy::Missing)
    }

    /// The network mode in force.
    pub fn network_mode(&self) -> NetworkMode {
        self.network.map_or(NetworkMode::Bridge, |n| n.0)
    }

    /// The published ports, parsed (valid after [`problems`]).
    pub fn port_mappings(&self) -> Vec<PortMapping> {
        self.ports.iter().filter_map(|p| p.parse().ok()).collect()
    }
}

/// A container name: what `docker` allows, kept short enough for interface names and files.
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c))
}

/// Every problem with the containers and registries, as (key path, reason).
pub fn problems(
    containers: &BTreeMap<String, ContainerSpec>,
    registries: &RegistriesConfig,
    out: &mut Vec<(String, String)>,
) {
    let mut host_ports = BTreeMap::new();
    for (name, c) in containers {
        let key = |field: &str| format!("containers.{name}.{field}");
        if !valid_name(name) {
            out.push((
                format!("containers.{name}"),
                format!("{name:?} is not a container name (letters, digits, '_', '.', '-'; at most 63; starting with a letter or digit)"),
            ));
        }
        if let Err(e) = c.image.parse::<ImageRef>() {
            out.push((
                key("image"),
                format!("{:?} is not an image reference: {e}", c.image),
            ));
        }
        for k in c.env.keys() {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                out.push((
                    key(&format!("env.{k}")),
                    "is not a variable name".to_owned(),
                ));
            }
        }
        for (field, v) in [("working_dir", &c.working_dir)] {
            if let Some(p) = v {
                if !p.starts_with('/') {
                    out.push((key(field), format!("{p:?} is not an absolute path")));
                }
            }
        }
        for (i, p) in c.ports.iter().enumerate() {
            match p.parse::<PortMapping>() {
                Ok(m) => {
                    if c.network_mode() != NetworkMode::Bridge {
                        out.push((
                            key(&format!("ports[{i}]")),
                            format!("{p:?}: ports are published only on the bridge network"),
                        ));
                    }
                    let slot = (m.host_port, m.protocol.to_string());
                    if let Some(other) = host_ports.insert(slot, name.clone()) {
                        out.push((
                            key(&format!("ports[{i}]")),
                            format!(
                                "{p:?}: host port {} is already published by {other}",
                                m.host_port
                            ),
                        ));
                    }
                }
                Err(e) => out.push((key(&format!("ports[{i}]")), format!("{p:?}: {}", e.reason))),
            }
        }
        for (i, v) in c.volumes.iter().enumerate() {
            if let Err(reason) = gantry_runtime::container::from_image::parse_volume(v) {
                out.push((key(&format!("volumes[{i}]")), reason));
            }
        }
        for (i, d) in c.depends_on.iter().enumerate() {
            if d == name {
                out.push((
                    key(&format!("depends_on[{i}]")),
                    "a container cannot depend on itself".to_owned(),
                ));
            } else if !containers.contains_key(d) {
                out.push((
                    key(&format!("depends_on[{i}]")),
                    format!("{d:?} is not a container in this config"),
                ));
            }
        }
        if c.stop_grace_secs > 3600 {
            out.push((
                key("stop_grace_secs"),
                format!("{} is more than an hour", c.stop_grace_secs),
            ));
        }
        let r = &c.resources;
        for (field, v, max) in [
            ("memory_mib", r.memory_mib, MAX_MEMORY_MIB),
            ("cpu_millis", r.cpu_millis, MAX_CPU_MILLIS),
            ("pids", r.pids, MAX_PIDS),
        ] {
            if let Some(v) = v.filter(|v| *v > max) {
                out.push((
                    key(&format!("resources.{field}")),
                    format!("{v} is more than {max}"),
                ));
            }
        }
        if r.memory_mib == Some(0) {
            out.push((
                key("resources.memory_mib"),
                "0 would kill every process".to_owned(),
            ));
        }
        if matches!(r.cpu_millis, Some(m) if m < 10) {
            out.push((
                key("resources.cpu_millis"),
                "below 10 (a hundredth of a CPU)".to_owned(),
            ));
        }
        if r.pids == Some(0) {
            out.push((
                key("resources.pids"),
                "0 would allow no process at all".to_owned(),
            ));
        }
        if let Some(h) = &c.health {
            let kinds = [h.exec.is_some(), h.tcp.is_some(), h.http.is_some()];
            if kinds.iter().filter(|k| **k).count() != 1 {
                out.push((
                    key("health"),
                    "needs exactly one of exec, tcp and http".to_owned(),
                ));
            }
            if matches!(&h.exec, Some(cmd) if cmd.is_empty()) {
                out.push((key("health.exec"), "is empty".to_owned()));
            }
            if let Some(url) = &h.http {
                if let Err(reason) = parse_http_check(url) {
                    out.push((key("health.http"), reason));
                }
            }
            if h.tcp == Some(0) {
                out.push((key("health.tcp"), "0 is not a port".to_owned()));
            }
            if h.interval_secs == 0 || h.timeout_secs == 0 || h.retries == 0 {
                out.push((
                    key("health"),
                    "interval_secs, timeout_secs and retries must be above 0".to_owned(),
                ));
            }
            for (field, v) in [
                ("interval_secs", h.interval_secs),
                ("timeout_secs", h.timeout_secs),
                ("start_period_secs", h.start_period_secs),
            ] {
                if v > MAX_HEALTH_SECS {
                    out.push((
                        key(&format!("health.{field}")),
                        format!("{v} is more than a day ({MAX_HEALTH_SECS})"),
                    ));
                }
            }
            if h.retries > MAX_HEALTH_RETRIES {
                out.push((
                    key("health.retries"),
                    format!("{} is more than {MAX_HEALTH_RETRIES}", h.retries),
                ));
            }
        }
    }
    if let Some(cycle) = find_cycle(containers) {
        out.push((
            format!("containers.{}.depends_on", cycle[0]),
            format!("a dependency cycle: {}", cycle.join(" → ")),
        ));
    }
    for (i, r) in registries.insecure.iter().enumerate() {
        if !is_host_port(r) {
            out.push((
                format!("registries.insecure[{i}]"),
                format!("{r:?} is not host[:port]"),
            ));
        }
    }
    for (registry, auth) in &registries.auth {
        for (i, h) in auth.token_realms.iter().enumerate() {
            if !is_host_port(h) {
                out.push((
                    format!("registries.auth.\"{registry}\".token_realms[{i}]"),
                    format!("{h:?} is not host[:port]"),
                ));
            }
        }
    }
    for (i, pem) in registries.ca_certs.iter().enumerate() {
        if !pem.contains("-----BEGIN CERTIFICATE-----") {
            out.push((
                format!("registries.ca_certs[{i}]"),
                "is not a PEM certificate".to_owned(),
            ));
        }
    }
}

/// Whether `s` can be a `host[:port]` (no scheme, path or spaces).
fn is_host_port(s: &str) -> bool {
    !s.is_empty() && !s.contains('/') && !s.contains(char::is_whitespace)
}

/// An HTTP health URL: `http://127.0.0.1[:port]/path` (or `localhost`); returns port and path.
pub fn parse_http_check(url: &str) -> Result<(u16, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url:?} is not an http:// URL"))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("{url:?}: {p:?} is not a port"))?,
        ),
        None => (hostport, 80),
    };
    if host != "127.0.0.1" && host != "localhost" {
        return Err(format!(
            "{url:?}: checks reach the container on 127.0.0.1 or localhost only"
        ));
    }
    Ok((port, path.to_owned()))
}

/// A dependency cycle, as the names around it, if there is one.
fn find_cycle(containers: &BTreeMap<String, ContainerSpec>) -> Option<Vec<String>> {
    fn visit<'a>(
        n: &'a str,
        containers: &'a BTreeMap<String, ContainerSpec>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(pos) = path.iter().position(|p| *p == n) {
            let mut cycle: Vec<String> = path[pos..].iter().map(|s| s.to_string()).collect();
            cycle.push(n.to_owned());
            return Some(cycle);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n);
        if let Some(c) = containers.get(n) {
            for d in &c.depends_on {
                if d != n {
                    if let Some(c) = visit(d, containers, path, done) {
                        return Some(c);
                    }
                }
            }
        }
        path.pop();
        done.insert(n);
        None
    }
    let mut done = BTreeSet::new();
    for n in containers.keys() {
        if let Some(c) = visit(n, containers, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

/// Container names in an order that starts every container after those it depends on
/// (ties by name). Assumes no cycle (checked at parse time).
pub fn start_order(containers: &BTreeMap<String, ContainerSpec>) -> Vec<String> {
    let mut order: Vec<String> = Vec::new();
    while order.len() < containers.len() {
        let before = order.len();
        for (name, c) in containers {
            if !order.contains(name)
                && c.depends_on
                    .iter()
                    .all(|d| order.contains(d) || !containers.contains_key(d))
            {
                order.push(name.clone());
            }
        }
        if order.len() == before {
            // A cycle slipped through: start the rest by name rather than never.
            order.extend(
                containers
                    .keys()
                    .filter(|n| !order.contains(n))
                    .cloned()
                    .collect::<Vec<_>>(),
            );
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MachineConfig;

    fn errors(text: &str) -> Vec<String> {
        match MachineConfig::parse(&format!("version = 1\n{text}"), "test") {
            Ok(_) => Vec::new(),
            Err(e) => e
                .iter()
                .map(|e| format!("{}: {}", e.key, e.reason))
                .collect(),
        }
    }

    #[test]
    fn the_documented_example_parses() {
        let doc = crate::config::test_support::doc_example(include_str!("containers.rs"))
            .replace("...\n", "MIIB\n");
        let c = MachineConfig::parse(&format!("version = 1\n{doc}"), "doc").unwrap();
        let web = &c.containers["web"];
        assert_eq!(
            web.restart_policy(),
            RestartPolicy::OnFailure { max: Some(5) }
        );
        assert_eq!(web.port_mappings().len(), 2);
        assert_eq!(web.pull_policy(), PullPolicy::Always);
        assert_eq!(c.containers["db"].pull_policy(), PullPolicy::Missing);
        assert_eq!(web.health.as_ref().unwrap().retries, 3);
        assert_eq!(start_order(&c.containers), ["db", "web"]);
        assert_eq!(c.registries.auth["registry.example.net"].username, "fleet");
        assert_eq!(
            c.registries.auth["registry.example.net"].token_realms,
            ["auth.example.net"]
        );
        assert!(
            !format!("{:?}", c.registries).contains("s3cret"),
            "passwords stay out of logs"
        );
    }

    #[test]
    fn defaults_are_bridge_always_missing_and_ten_seconds_grace() {
        let c = MachineConfig::parse("version = 1\n[containers.a]\nimage = \"busybox\"\n", "t")
            .unwrap();
        let a = &c.containers["a"];
        assert_eq!(a.network_mode(), NetworkMode::Bridge);
        assert_eq!(a.restart_policy(), RestartPolicy::Always);
        assert_eq!(a.stop_grace_secs, 10);
        assert_eq!(a.pull_policy(), PullPolicy::Missing);
    }

    #[test]
    fn a_token_realm_that_is_not_a_host_names_its_registry() {
        let e = errors(
            "[registries.auth.\"r.example.net\"]\nusername = \"u\"\npassword = \"p\"\n\
             token_realms = [\"auth.example.net:8443\", \"https://auth.example.net/token\"]\n",
        );
        assert_eq!(
            e,
            ["registries.auth.\"r.example.net\".token_realms[1]: \
                 \"https://auth.example.net/token\" is not host[:port]"]
        );
    }

    #[test]
    fn bad_values_name_the_key_and_the_reason() {
        let e = errors("[containers.web]\nimage = \"busybox\"\nports = [\"80:http\"]\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("containers.web.ports[0]: \"80:http\""),
            "{e:?}"
        );
        let e = errors("[containers.web]\nimage = \"busybox\"\nrestart = \"sometimes\"\n");
        assert!(
            e[0].starts_with("containers.web.restart: \"sometimes\" is not a restart policy"),
            "{e:?}"
        );
        let e = errors("[containers.web]\nimage = \"busybox\"\npull = \"IfNotPresent\"\n");
        assert_eq!(
            e,
            ["containers.web.pull: \"IfNotPresent\" is not a pull policy (missing, always) (line 4)"]
        );
        let e = errors("[containers.web]\nimage = \"busybox\"\npull = true\n");
        assert!(
            e[0].starts_with("containers.web.pull: invalid type"),
            "{e:?}"
        );
        let e = errors("[containers.web]\nimage = \"busybox\"\nrestart = \"on-failure:0\"\n");
        assert!(e[0].contains("above 0"), "{e:?}");
        let e = errors("[containers.web]\nimage = \"busybox\"\nimagee = \"x\"\n");
        assert!(
            e[0].starts_with("containers.web.imagee: unknown field"),
            "{e:?}"
        );
        let e = errors("[containers.web]\nimage = \"Bad Ref\"\n");
        assert!(
            e[0].starts_with("containers.web.image: \"Bad Ref\""),
            "{e:?}"
        );
    }

    #[test]
    fn semantic_problems_are_all_reported() {
        let e = errors(
            "[containers.a]\nimage = \"busybox\"\ndepends_on = [\"b\", \"ghost\"]\n\
             volumes = [\"/etc:/etc\", \"data:rel\", \"ok:/data:ro\"]\n\
             ports = [\"8080:80\"]\nhealth = { tcp = 80, http = \"http://127.0.0.1/\" }\n\
             [containers.b]\nimage = \"busybox\"\ndepends_on = [\"a\"]\nnetwork = \"host\"\n\
             ports = [\"8080:80\"]\nresources = { memory_mib = 0 }\n\
             health = { http = \"http://10.0.0.1/\" }\n\
             [containers.\"-x\"]\nimage = \"busybox\"\n",
        );
        let want = [
            "containers.a.depends_on[1]: \"ghost\" is not a container",
            "containers.a.volumes[0]: \"/etc:/etc\"",
            "containers.a.volumes[1]: \"data:rel\"",
            "containers.a.health: needs exactly one of",
            "containers.b.ports[0]: \"8080:80\": ports are published only on the bridge",
            "containers.b.ports[0]: \"8080:80\": host port 8080 is already published by a",
            "containers.b.resources.memory_mib: 0",
            "containers.b.health.http: \"http://10.0.0.1/\": checks reach the container on 127.0.0.1",
            "containers.-x: \"-x\" is not a container name",
            "containers.a.depends_on: a dependency cycle: a → b → a",
        ];
        crate::config::test_support::assert_exactly(&e, &want);
    }

    #[test]
    fn huge_timings_and_limits_are_refused() {
        let e = errors(
            "[containers.a]\nimage = \"busybox\"\n\
             health = { tcp = 80, timeout_secs = 9223372036854775807, interval_secs = 86401, retries = 5000 }\n\
             resources = { memory_mib = 9223372036854775807, cpu_millis = 2000000, pids = 9999999 }\n",
        );
        for w in [
            "containers.a.health.timeout_secs: 9223372036854775807 is more than a day",
            "containers.a.health.interval_secs: 86401",
            "containers.a.health.retries: 5000",
            "containers.a.resources.memory_mib: 9223372036854775807 is more than",
            "containers.a.resources.cpu_millis: 2000000",
            "containers.a.resources.pids: 9999999",
        ] {
            assert!(
                e.iter().any(|x| x.starts_with(w)),
                "missing {w:?} in {e:#?}"
            );
        }
    }

    #[test]
    fn start_order_puts_dependencies_first() {
        let c = MachineConfig::parse(
            "version = 1\n[containers.web]\nimage = \"b\"\ndepends_on = [\"api\"]\n\
             [containers.api]\nimage = \"b\"\ndepends_on = [\"db\", \"cache\"]\n\
             [containers.db]\nimage = \"b\"\n[containers.cache]\nimage = \"b\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(start_order(&c.containers), ["cache", "db", "api", "web"]);
    }

    #[test]
    fn http_checks_parse_port_and_path() {
        assert_eq!(
            parse_http_check("http://127.0.0.1:8080/health"),
            Ok((8080, "/health".into()))
        );
        assert_eq!(parse_http_check("http://localhost"), Ok((80, "/".into())));
        assert!(parse_http_check("https://127.0.0.1/").is_err());
        assert!(parse_http_check("http://127.0.0.1:99999/").is_err());
    }
}
