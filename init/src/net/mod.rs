//! The host network: links, DHCPv4, static addresses and routes, IPv6 router
//! advertisements, DNS, and a status report.
//!
//! [`Network::start`] runs everything on its own thread with a single-threaded tokio
//! runtime, so PID 1's event loop never waits for the network: a NIC that is missing, has
//! no carrier or gets no DHCP answer is logged and reported in [`NetStatus`], and the boot
//! goes on. Each configured interface is handled by its own task: MTU, IPv6 settings, link
//! up, static addresses and routes, then a wait for carrier (bounded by
//! `network.carrier_timeout_secs`; the DHCP client starts either way and retries until a
//! server answers).

pub mod dhcp;
pub mod link;
pub mod resolv;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::config::{InterfaceConfig, MacAddr, NetworkConfig};
use dhcp::client::{self, Event};
use link::{Link, Netlink, Route};
use resolv::Resolver;

/// Where PID 1 writes [`NetStatus`] as JSON for tests and, later, the API.
pub const STATUS_FILE: &str = "/run/gantry/network.json";
/// Where leases are kept for INIT-REBOOT, one file per interface.
pub const LEASE_DIR: &str = "/var/lib/gantry/dhcp";
/// How long the DHCP client may go unanswered before the interface reports it.
pub const DHCP_QUIET_WARNING: Duration = Duration::from_secs(20);
/// How long after carrier the addresses made from router advertisements are watched for.
pub const SLAAC_WATCH: Duration = Duration::from_secs(30);
/// Logged once per interface when it gets an address (static or DHCP), with
/// `interface= address=`.
pub const ADDRESS_LINE: &str = "network: address";

/// What the network part of PID 1 needs to know.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `[network]` section.
    pub config: NetworkConfig,
    /// The host name to send to DHCP servers.
    pub hostname: Option<String>,
    /// Whether a host name from DHCP may replace the current one (no host name in the
    /// config or on the command line).
    pub hostname_from_dhcp: bool,
    /// Where to keep leases; None keeps none (no writable `/var`).
    pub lease_dir: Option<PathBuf>,
    /// Where to write the resolver file.
    pub resolv_conf: PathBuf,
    /// Where to write the status as JSON; None writes none.
    pub status_file: Option<PathBuf>,
    /// `/sys/class/net`, to tell physical NICs from virtual ones.
    pub sys_class_net: PathBuf,
}

impl Options {
    /// The paths PID 1 uses, for `config`.
    pub fn for_pid1(
        config: NetworkConfig,
        hostname: Option<String>,
        hostname_from_dhcp: bool,
    ) -> Options {
        let lease_dir = PathBuf::from(LEASE_DIR);
        let lease_dir = match std::fs::create_dir_all(&lease_dir) {
            Ok(()) => Some(lease_dir),
            Err(e) => {
                warn!(dir = LEASE_DIR, error = %e, "cannot keep DHCP leases; every boot will DISCOVER");
                None
            }
        };
        Options {
            config,
            hostname,
            hostname_from_dhcp,
            lease_dir,
            resolv_conf: PathBuf::from(resolv::RESOLV_CONF),
            status_file: Some(PathBuf::from(STATUS_FILE)),
            sys_class_net: PathBuf::from("/sys/class/net"),
        }
    }
}

/// The network as PID 1 last saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NetStatus {
    /// Each interface Gantry manages, by name.
    pub interfaces: BTreeMap<String, InterfaceStatus>,
    /// The resolver settings in force.
    pub dns: Resolver,
    /// The host name a DHCP server gave, if one was used.
    pub dhcp_hostname: Option<String>,
    /// What is wrong that no interface owns: a configured NIC that does not exist, no
    /// NIC at all, netlink failing.
    pub problems: Vec<String>,
}

impl NetStatus {
    /// Whether any managed interface has a global address (the health gate's test).
    pub fn has_address(&self) -> bool {
        self.interfaces.values().any(|i| !i.addresses.is_empty())
    }
}

/// One managed interface.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct InterfaceStatus {
    /// Hardware address.
    pub mac: Option<String>,
    /// Carrier seen.
    pub carrier: bool,
    /// Addresses Gantry put there (static and DHCP).
    pub addresses: Vec<String>,
    /// Routes Gantry put there.
    pub routes: Vec<String>,
    /// The DHCP client's view, when it runs here.
    pub dhcp: Option<DhcpStatus>,
    /// The last errors on this interface, newest last (at most 8).
    pub errors: Vec<String>,
}

/// The DHCP client's view of one interface.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DhcpStatus {
    /// `searching`, `bound`, `renewing`, `rebinding` or `expired`.
    pub state: String,
    /// The leased address.
    pub address: Option<String>,
    /// The server that granted it.
    pub server: Option<String>,
    /// When the lease runs out, seconds since the Unix epoch.
    pub expires_unix: Option<u64>,
}

/// The running network manager.
#[derive(Debug)]
pub struct Network {
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
    status: Arc<Mutex<NetStatus>>,
}

impl Network {
    /// Starts managing the network on a thread of its own. Never fails: what goes wrong
    /// is in [`Network::status`].
    pub fn start(opts: Options) -> Network {
        let status = Arc::new(Mutex::new(NetStatus::default()));
        let (stop, stop_rx) = watch::channel(false);
        let shared = status.clone();
        let thread = std::thread::Builder::new()
            .name("network".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        error!(error = %e, "network: cannot start its runtime");
                        lock(&shared)
                            .problems
                            .push(format!("cannot start the network runtime: {e}"));
                        return;
                    }
                };
                // The manager too: a panic outside the per-link tasks starts it again.
                crate::tasks::supervise_thread(
                    "network",
                    crate::tasks::Backoff::PID1,
                    || rt.block_on(manage(opts.clone(), shared.clone(), stop_rx.clone())),
                    std::thread::sleep,
                );
            });
        let thread = match thread {
            Ok(t) => Some(t),
            Err(e) => {
                error!(error = %e, "network: cannot start its thread");
                lock(&status)
                    .problems
                    .push(format!("cannot start the network thread: {e}"));
                None
            }
        };
        Network {
            stop,
            thread,
            status,
        }
    }

    /// A copy of the current status.
    pub fn status(&self) -> NetStatus {
        lock(&self.status).clone()
    }

    /// Releases leases and stops, waiting at most `within`.
    pub fn stop(mut self, within: Duration) {
        let _ = self.stop.send(true);
        let end = Instant::now() + within;
        if let Some(t) = self.thread.take() {
            while !t.is_finished() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(20));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                warn!("network: did not stop in time");
            }
        }
    }
}

fn lock(status: &Mutex<NetStatus>) -> MutexGuard<'_, NetStatus> {
    status
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Which links to manage: the configured ones (a missing one is a problem, not a failure),
/// or every physical NIC with DHCP when none is configured.
pub fn select(
    config: &NetworkConfig,
    links: &[Link],
    sys_class_net: &Path,
) -> (Vec<(InterfaceConfig, Link)>, Vec<String>) {
    let mut chosen = Vec::new();
    let mut problems = Vec::new();
    if config.interfaces.is_empty() {
        for l in links.iter().filter(|l| l.is_physical(sys_class_net)) {
            let cfg = InterfaceConfig {
                name: Some(l.name.clone()),
                mac: None,
                dhcp: Some(true),
                mtu: None,
                addresses: Vec::new(),
                gateway4: None,
                gateway6: None,
                routes: Vec::new(),
                ipv6_ra: false,
            };
            chosen.push((cfg, l.clone()));
        }
        if chosen.is_empty() {
            problems.push("no physical network interface found".to_owned());
        }
        return (chosen, problems);
    }
    for (i, cfg) in config.interfaces.iter().enumerate() {
        let found = links.iter().find(|l| match (&cfg.name, &cfg.mac) {
            (Some(n), _) => &l.name == n,
            (None, Some(m)) => l.mac == Some(m.0),
            (None, None) => false,
        });
        match found {
            Some(l)
                if chosen
                    .iter()
                    .any(|(_, c): &(InterfaceConfig, Link)| c.index == l.index) =>
            {
                problems.push(format!(
                    "network.interfaces[{i}]: {} is already configured by an earlier entry",
                    l.name
                ));
            }
            Some(l) => chosen.push((cfg.clone(), l.clone())),
            None => problems.push(format!(
                "network.interfaces[{i}]: no interface {} {}",
                if cfg.name.is_some() {
                    "named"
                } else {
                    "with MAC"
                },
                cfg.selector()
            )),
        }
    }
    (chosen, problems)
}

/// What the interface tasks tell the manager.
enum Report {
    Carrier(String, bool),
    /// An address the kernel made from a router advertisement.
    Slaac(String, IpNet),
    Static(String, Vec<IpNet>, Vec<Route>),
    Dhcp(String, Event),
    Error(String, String),
}

async fn manage(opts: Options, status: Arc<Mutex<NetStatus>>, stop: watch::Receiver<bool>) {
    let netlink = match Netlink::connect() {
        Ok(n) => n,
        Err(e) => {
            error!(error = %e, "network: cannot open a netlink socket");
            lock(&status)
                .problems
                .push(format!("cannot open a netlink socket: {e}"));
            return;
        }
    };
    let links = match netlink.links().await {
        Ok(l) => l,
        Err(e) => {
            error!(error = %e, "network: cannot list links");
            lock(&status).problems.push(e.to_string());
            return;
        }
    };
    if let Some(lo) = links.iter().find(|l| l.loopback) {
        if let Err(e) = netlink.set_up(lo).await {
            error!(error = %e, "network: cannot bring up lo");
            lock(&status).problems.push(e.to_string());
        }
    }
    let (chosen, problems) = select(&opts.config, &links, &opts.sys_class_net);
    for p in &problems {
        error!(problem = %p, "network: configuration cannot be applied");
    }
    let mut resolver = Resolver::default();
    resolver.extend(
        opts.config.dns.servers.iter().copied(),
        opts.config.dns.search.iter().cloned(),
    );
    {
        let mut s = lock(&status);
        s.problems.extend(problems);
        s.dns = resolver.clone();
        for (_, l) in &chosen {
            s.interfaces.insert(
                l.name.clone(),
                InterfaceStatus {
                    mac: l.mac.map(|m| MacAddr(m).to_string()),
                    ..InterfaceStatus::default()
                },
            );
        }
    }
    write_outputs(&opts, &status);

    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for (cfg, link) in chosen {
        tasks.push(tokio::spawn(run_interface(
            netlink.clone(),
            cfg,
            link,
            opts.clone(),
            tx.clone(),
            stop.clone(),
        )));
    }
    drop(tx);
    let mut leases: BTreeMap<String, dhcp::Lease> = BTreeMap::new();
    let mut stop_rx = stop.clone();
    loop {
        tokio::select! {
            report = rx.recv() => match report {
                Some(r) => {
                    if apply_report(r, &opts, &status, &mut leases) {
                        let mut r = resolver.clone();
                        for l in leases.values() {
                            r.extend(
                                l.dns.iter().map(|a| IpAddr::V4(*a)),
                                l.domain.iter().cloned().chain(l.search.iter().cloned()),
                            );
                        }
                        lock(&status).dns = r;
                    }
                    write_outputs(&opts, &status);
                }
                None => break,
            },
            _ = stop_rx.changed() => {
                // The tasks see the same signal, release their leases and end; keep
                // reading their reports until they have.
                while let Some(r) = rx.recv().await {
                    apply_report(r, &opts, &status, &mut leases);
                }
                write_outputs(&opts, &status);
                break;
            }
        }
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// Applies one report to the status; true when the DNS inputs changed.
fn apply_report(
    report: Report,
    opts: &Options,
    status: &Mutex<NetStatus>,
    leases: &mut BTreeMap<String, dhcp::Lease>,
) -> bool {
    let mut s = lock(status);
    let mut dns_changed = false;
    match report {
        Report::Carrier(name, up) => {
            if let Some(i) = s.interfaces.get_mut(&name) {
                i.carrier = up;
            }
        }
        Report::Slaac(name, addr) => {
            if let Some(i) = s.interfaces.get_mut(&name) {
                info!(interface = %name, address = %addr, source = "slaac", "{ADDRESS_LINE}");
                i.addresses.push(addr.to_string());
            }
        }
        Report::Static(name, addrs, routes) => {
            if let Some(i) = s.interfaces.get_mut(&name) {
                for a in addrs {
                    info!(interface = %name, address = %a, source = "static", "{ADDRESS_LINE}");
                    i.addresses.push(a.to_string());
                }
                i.routes.extend(routes.iter().map(|r| r.to_string()));
            }
        }
        Report::Error(name, e) => {
            warn!(interface = %name, error = %e, "network: error");
            if let Some(i) = s.interfaces.get_mut(&name) {
                i.errors.push(e);
                let extra = i.errors.len().saturating_sub(8);
                i.errors.drain(..extra);
            }
        }
        Report::Dhcp(name, event) => {
            let hostname = match &event {
                Event::Bound(lease, _) => lease.hostname.clone(),
                _ => None,
            };
            let Some(i) = s.interfaces.get_mut(&name) else {
                return false;
            };
            let d = i.dhcp.get_or_insert_with(DhcpStatus::default);
            match event {
                Event::Sent(kind, _) => {
                    d.state = match (d.state.as_str(), kind) {
                        ("bound" | "renewing", dhcproto::v4::MessageType::Request)
                            if d.address.is_some() =>
                        {
                            "renewing".to_owned()
                        }
                        (_, dhcproto::v4::MessageType::Discover) => "searching".to_owned(),
                        (state, _) => state.to_owned(),
                    };
                }
                Event::Bound(lease, how) => {
                    let addr = lease.address.to_string();
                    if d.address.as_deref() != Some(&addr) {
                        info!(interface = %name, address = %addr, source = "dhcp", how = ?how, "{ADDRESS_LINE}");
                    }
                    let now = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0);
                    d.state = "bound".to_owned();
                    d.address = Some(addr.clone());
                    d.server = Some(lease.server.to_string());
                    d.expires_unix = Some(now + u64::from(lease.lease_secs));
                    if !i.addresses.contains(&addr) {
                        i.addresses.push(addr);
                    }
                    i.routes.retain(|r| !r.ends_with("(dhcp)"));
                    i.routes.extend(
                        dhcp::client::routes_of(&lease)
                            .iter()
                            .map(|r| format!("{r} (dhcp)")),
                    );
                    leases.insert(name.clone(), *lease);
                    dns_changed = true;
                }
                Event::Removed(lease, why) => {
                    let addr = lease.address.to_string();
                    i.addresses.retain(|a| *a != addr);
                    i.routes.retain(|r| !r.ends_with("(dhcp)"));
                    d.state = if why == "lease expired" {
                        "expired"
                    } else {
                        "searching"
                    }
                    .to_owned();
                    d.address = None;
                    d.expires_unix = None;
                    leases.remove(&name);
                    dns_changed = true;
                }
                Event::Nak(_) | Event::Dropped(_) => {}
                Event::Error(e) => {
                    i.errors.push(e);
                    let extra = i.errors.len().saturating_sub(8);
                    i.errors.drain(..extra);
                }
            }
            if let (Some(h), true) = (hostname, opts.hostname_from_dhcp) {
                if s.dhcp_hostname.as_deref() != Some(&h) {
                    match nix::unistd::sethostname(&h) {
                        Ok(()) => {
                            info!(hostname = %h, "host name set from DHCP");
                            s.dhcp_hostname = Some(h);
                        }
                        Err(e) => {
                            warn!(hostname = %h, error = %e, "cannot set the host name from DHCP")
                        }
                    }
                }
            }
        }
    }
    dns_changed
}

fn write_outputs(opts: &Options, status: &Mutex<NetStatus>) {
    let s = lock(status).clone();
    if let Err(e) = s.dns.write(&opts.resolv_conf) {
        warn!(file = %opts.resolv_conf.display(), error = %e, "cannot write the resolver file");
    }
    if let Some(path) = &opts.status_file {
        let json = serde_json::to_vec_pretty(&s).unwrap_or_default();
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| gantry_durable::write_atomic(path, &json));
        if let Err(e) = written {
            warn!(file = %path.display(), error = %e, "cannot write the network status");
        }
    }
}

/// Configures one interface, then runs its DHCP client until told to stop.
async fn run_interface(
    netlink: Netlink,
    cfg: InterfaceConfig,
    link: Link,
    opts: Options,
    tx: mpsc::UnboundedSender<Report>,
    stop: watch::Receiver<bool>,
) {
    let name = link.name.clone();
    let report_err = |e: String| {
        let _ = tx.send(Report::Error(name.clone(), e));
    };
    set_ipv6_ra(&name, cfg.ipv6_ra).unwrap_or_else(|e| {
        if cfg.ipv6_ra {
            report_err(e)
        }
    });
    if let Some(mtu) = cfg.mtu {
        if let Err(e) = netlink.set_mtu(&link, mtu).await {
            report_err(e.to_string());
        }
    }
    if let Err(e) = netlink.set_up(&link).await {
        report_err(e.to_string());
    }
    let mut added = Vec::new();
    for a in &cfg.addresses {
        match netlink.replace_address(&link, *a, None).await {
            Ok(()) => added.push(*a),
            Err(e) => report_err(e.to_string()),
        }
    }
    let mut routes = Vec::new();
    let on_link = |via: IpAddr| !cfg.addresses.iter().any(|a| a.contains(&via));
    for (gw, any) in [
        (cfg.gateway4.map(IpAddr::V4), IpNet::V4(Default::default())),
        (cfg.gateway6.map(IpAddr::V6), IpNet::V6(Default::default())),
    ] {
        if let Some(via) = gw {
            routes.push(Route {
                to: any,
                via: Some(via),
                metric: None,
                onlink: on_link(via) && !via.is_ipv6(),
                dhcp: false,
            });
        }
    }
    for r in &cfg.routes {
        routes.push(Route {
            to: r.to,
            via: Some(r.via),
            metric: r.metric,
            onlink: on_link(r.via) && r.via.is_ipv4(),
            dhcp: false,
        });
    }
    let mut installed = Vec::new();
    for r in routes {
        match netlink.replace_route(&link, &r).await {
            Ok(()) => installed.push(r),
            Err(e) => report_err(e.to_string()),
        }
    }
    if !added.is_empty() || !installed.is_empty() {
        let _ = tx.send(Report::Static(name.clone(), added, installed));
    }

    let deadline = Instant::now() + Duration::from_secs(opts.config.carrier_timeout_secs);
    let carrier = loop {
        match netlink.link(link.index).await {
            Ok(Some(l)) if l.carrier => break true,
            Ok(None) => {
                report_err("the interface went away".to_owned());
                return;
            }
            _ => {}
        }
        if Instant::now() >= deadline || *stop.borrow() {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = tx.send(Report::Carrier(name.clone(), carrier));
    if carrier {
        info!(interface = %name, "network: carrier");
    } else {
        report_err(format!(
            "no carrier after {} s; DHCP keeps trying",
            opts.config.carrier_timeout_secs
        ));
    }
    if cfg.ipv6_ra {
        // The kernel does SLAAC; report the addresses it makes, for the log and status.
        let (netlink, link, tx, statics) = (
            netlink.clone(),
            link.clone(),
            tx.clone(),
            cfg.addresses.clone(),
        );
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut seen: Vec<IpNet> = Vec::new();
            let end = Instant::now() + SLAAC_WATCH;
            while Instant::now() < end && !*stop.borrow() {
                if let Ok(addrs) = netlink.addresses(&link).await {
                    for a in addrs {
                        let global = matches!(a, IpNet::V6(v6) if (v6.addr().segments()[0] & 0xffc0) != 0xfe80);
                        if global && !statics.contains(&a) && !seen.contains(&a) {
                            seen.push(a);
                            let _ = tx.send(Report::Slaac(link.name.clone(), a));
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
    }
    if !cfg.dhcp_enabled() || *stop.borrow() {
        return;
    }
    let (etx, mut erx) = mpsc::unbounded_channel();
    let client_opts = client::Options {
        lease_file: opts
            .lease_dir
            .as_ref()
            .map(|d| d.join(format!("{name}.json"))),
        hostname: opts.hostname.clone(),
        use_server_mtu: cfg.mtu.is_none(),
        link,
    };
    let forward = {
        let tx = tx.clone();
        let name = name.clone();
        tokio::spawn(async move {
            // Say so once if no server has answered for a while; the client keeps trying.
            let quiet = tokio::time::sleep(DHCP_QUIET_WARNING);
            tokio::pin!(quiet);
            let mut answered = false;
            let mut warned = false;
            loop {
                tokio::select! {
                    e = erx.recv() => match e {
                        Some(e) => {
                            answered |= matches!(e, Event::Bound(..) | Event::Nak(_));
                            let _ = tx.send(Report::Dhcp(name.clone(), e));
                        }
                        None => break,
                    },
                    _ = &mut quiet, if !answered && !warned => {
                        warned = true;
                        let _ = tx.send(Report::Error(
                            name.clone(),
                            format!("no DHCP answer after {} s; still trying", DHCP_QUIET_WARNING.as_secs()),
                        ));
                    }
                }
            }
        })
    };
    // A panic in the client (a reply it failed to refuse) must not end DHCP on this link.
    crate::tasks::supervise_async(
        &format!("dhcp {name}"),
        crate::tasks::Backoff::PID1,
        || {
            client::run(
                netlink.clone(),
                client_opts.clone(),
                etx.clone(),
                stop.clone(),
            )
        },
        tokio::time::sleep,
    )
    .await;
    drop(etx);
    let _ = forward.await;
}

/// Turns router advertisements and SLAAC on or off for an interface.
fn set_ipv6_ra(name: &str, on: bool) -> Result<(), String> {
    let v = if on { "1\n" } else { "0\n" };
    for key in ["accept_ra", "autoconf"] {
        let path = format!("/proc/sys/net/ipv6/conf/{name}/{key}");
        std::fs::write(&path, v).map_err(|e| format!("cannot set {path}: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, name: &str, mac: u8) -> Link {
        Link {
            index,
            name: name.into(),
            mac: Some([0x52, 0x54, 0, 0, 0, mac]),
            up: false,
            carrier: false,
            loopback: name == "lo",
            mtu: Some(1500),
        }
    }

    #[test]
    fn with_no_interfaces_configured_every_physical_nic_gets_dhcp() {
        let sys = tempfile::tempdir().unwrap();
        for n in ["eth0", "eth1"] {
            std::fs::create_dir_all(sys.path().join(n).join("device")).unwrap();
        }
        std::fs::create_dir_all(sys.path().join("veth0")).unwrap();
        let links = [
            link(1, "lo", 0),
            link(2, "eth0", 1),
            link(3, "veth0", 2),
            link(4, "eth1", 3),
        ];
        let (chosen, problems) = select(&NetworkConfig::default(), &links, sys.path());
        let names: Vec<_> = chosen
            .iter()
            .map(|(c, l)| (l.name.as_str(), c.dhcp_enabled()))
            .collect();
        assert_eq!(names, [("eth0", true), ("eth1", true)]);
        assert!(problems.is_empty());
        let (chosen, problems) = select(&NetworkConfig::default(), &links[..1], sys.path());
        assert!(chosen.is_empty());
        assert_eq!(problems, ["no physical network interface found"]);
    }

    #[test]
    fn configured_interfaces_are_found_by_name_or_mac_and_missing_ones_reported() {
        let cfg = crate::config::MachineConfig::parse(
            "version = 1\n[[network.interfaces]]\nname = \"eth9\"\n\
             [[network.interfaces]]\nmac = \"52:54:00:00:00:03\"\n\
             [[network.interfaces]]\nname = \"eth1\"\n",
            "test",
        )
        .unwrap();
        let links = [link(2, "eth0", 1), link(4, "eth1", 3)];
        let (chosen, problems) = select(&cfg.network, &links, Path::new("/nonexistent"));
        assert_eq!(
            chosen.len(),
            1,
            "eth1 by MAC; the by-name entry for it is a duplicate"
        );
        assert_eq!(chosen[0].1.name, "eth1");
        assert_eq!(
            problems,
            [
                "network.interfaces[0]: no interface named eth9",
                "network.interfaces[2]: eth1 is already configured by an earlier entry",
            ]
        );
    }
}
