//! The DHCPv4 client against a real dnsmasq, in network namespaces these tests make.
//!
//! Needs root (CI runs as root) and Debian's `dnsmasq` (`.ci/deps` installs it). Each test
//! makes a server namespace and a client namespace joined by a veth pair; dnsmasq serves
//! 192.168.x.0/24 on the server end, the client runs in the client namespace. Leases are
//! dnsmasq's minimum of two minutes with T1 = 10 s and T2 = 20 s. After each step the
//! address and routes are read back over netlink in the client namespace. No packet leaves
//! the namespaces.

#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode};
use dhcproto::{Decodable, Encodable};
use gantry_init::net::dhcp::client::{self, Event, Options};
use gantry_init::net::dhcp::{Bound, Destination};
use gantry_init::net::link::Netlink;
use ipnet::IpNet;

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (network namespaces, dnsmasq); CI runs as root"
    );
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A server namespace and a client namespace joined by a veth pair; removed on drop.
struct Pair {
    srv: String,
    cli: String,
    /// Third octet of 192.168.N.0/24.
    net: u8,
    dir: tempfile::TempDir,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pair {
    fn new() -> Pair {
        require_root();
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let tag = format!("{}-{n}", std::process::id());
        let pair = Pair {
            srv: format!("gdhcp-s-{tag}"),
            cli: format!("gdhcp-c-{tag}"),
            net: 70 + u8::try_from(n).unwrap(),
            dir: tempfile::tempdir().unwrap(),
        };
        ip(&["netns", "add", &pair.srv]);
        ip(&["netns", "add", &pair.cli]);
        ip(&[
            "link", "add", "v-srv", "netns", &pair.srv, "type", "veth", "peer", "name", "v-cli",
            "netns", &pair.cli,
        ]);
        ip(&[
            "-n",
            &pair.srv,
            "addr",
            "add",
            &format!("{}/24", pair.server()),
            "dev",
            "v-srv",
        ]);
        ip(&["-n", &pair.srv, "link", "set", "v-srv", "up"]);
        ip(&["-n", &pair.srv, "link", "set", "lo", "up"]);
        ip(&["-n", &pair.cli, "link", "set", "v-cli", "up"]);
        ip(&["-n", &pair.cli, "link", "set", "lo", "up"]);
        pair
    }

    fn server(&self) -> Ipv4Addr {
        Ipv4Addr::new(192, 168, self.net, 1)
    }

    /// Starts dnsmasq serving `first..=last` (host parts) with a 2 minute lease.
    fn dnsmasq(&self, first: u8, last: u8, authoritative: bool) -> Dnsmasq {
        let range = format!(
            "192.168.{n}.{first},192.168.{n}.{last},255.255.255.0,2m",
            n = self.net
        );
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &self.srv,
            "dnsmasq",
            "--no-daemon",
            "--conf-file=/dev/null",
        ])
        .args([
            "--port=0",
            "--interface=v-srv",
            "--bind-interfaces",
            "--user=root",
        ])
        .arg(format!("--dhcp-range={range}"))
        .arg("--dhcp-option=option:T1,10")
        .arg("--dhcp-option=option:T2,20")
        .arg(format!("--dhcp-option=option:router,{}", self.server()))
        .arg(format!("--dhcp-option=option:dns-server,{}", self.server()))
        .arg("--dhcp-option=option:domain-search,test.internal")
        .arg(format!(
            "--dhcp-leasefile={}",
            self.dir.path().join("leases").display()
        ))
        .arg("--log-dhcp")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(self.dir.path().join("dnsmasq.log")).unwrap());
        if authoritative {
            cmd.arg("--dhcp-authoritative");
        }
        let child = cmd
            .spawn()
            .expect("start dnsmasq (apt install dnsmasq-base)");
        // dnsmasq binds at once; give it a moment so the first DISCOVER is not lost to a race.
        std::thread::sleep(Duration::from_millis(300));
        Dnsmasq(child)
    }

    fn dnsmasq_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dnsmasq.log")).unwrap_or_default()
    }

    /// Runs the client in the client namespace; events come back on the returned channel.
    fn client(&self, lease_file: Option<PathBuf>) -> Client {
        let (tx, rx) = mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let ns = self.cli.clone();
        let thread = std::thread::spawn(move || {
            in_netns(&ns, move || async move {
                let netlink = Netlink::connect().unwrap();
                let link = netlink
                    .links()
                    .await
                    .unwrap()
                    .into_iter()
                    .find(|l| l.name == "v-cli")
                    .expect("v-cli in the client namespace");
                let (etx, mut erx) = tokio::sync::mpsc::unbounded_channel();
                let forward = tokio::spawn(async move {
                    while let Some(e) = erx.recv().await {
                        if tx.send(e).is_err() {
                            break;
                        }
                    }
                });
                let opts = Options {
                    link,
                    hostname: Some("gantry-test".into()),
                    lease_file,
                    use_server_mtu: true,
                };
                client::run(netlink, opts, etx, stop_rx).await;
                let _ = forward.await;
            })
        });
        Client {
            events: rx,
            stop: stop_tx,
            thread: Some(thread),
            seen: Vec::new(),
        }
    }

    /// The client namespace's IPv4 addresses on v-cli and its IPv4 routes through it.
    fn client_state(&self) -> (Vec<IpNet>, Vec<(IpNet, Option<IpAddr>)>) {
        in_netns(&self.cli, || async {
            let netlink = Netlink::connect().unwrap();
            let link = netlink
                .links()
                .await
                .unwrap()
                .into_iter()
                .find(|l| l.name == "v-cli")
                .unwrap();
            let addrs = netlink.addresses(&link).await.unwrap();
            let routes = netlink.routes(&link).await.unwrap();
            (
                addrs.into_iter().filter(|a| a.addr().is_ipv4()).collect(),
                routes
                    .into_iter()
                    .filter(|r| r.0.addr().is_ipv4())
                    .collect(),
            )
        })
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in [&self.srv, &self.cli] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Runs `f` on a new thread inside network namespace `ns`, with a tokio runtime.
fn in_netns<F, Fut, T>(ns: &str, f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
    T: Send + 'static,
{
    let path = Path::new("/run/netns").join(ns);
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(f())
    })
    .join()
    .unwrap()
}

struct Dnsmasq(Child);

impl Dnsmasq {
    fn stop(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Client {
    events: mpsc::Receiver<Event>,
    stop: tokio::sync::watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
    seen: Vec<Event>,
}

impl Client {
    /// Waits for an event matching `want`, failing after `within` with all events seen.
    fn wait_for(&mut self, what: &str, within: Duration, want: impl Fn(&Event) -> bool) -> Event {
        let end = Instant::now() + within;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(e) => {
                    self.seen.push(e.clone());
                    if want(&e) {
                        return e;
                    }
                }
                Err(_) => panic!("no {what} within {within:?}; events: {:#?}", self.seen),
            }
        }
    }

    fn bound(&mut self, how: Bound, within: Duration) -> Ipv4Addr {
        match self.wait_for(
            &format!("bound ({how:?})"),
            within,
            |e| matches!(e, Event::Bound(_, h) if *h == how),
        ) {
            Event::Bound(lease, _) => lease.address.addr(),
            _ => unreachable!(),
        }
    }

    fn stop(mut self) -> Vec<Event> {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.seen.extend(self.events.try_iter());
        self.seen
    }
}

fn in_range(a: Ipv4Addr, net: u8, first: u8, last: u8) -> bool {
    let o = a.octets();
    o[..3] == [192, 168, net] && (first..=last).contains(&o[3])
}

fn assert_configured(pair: &Pair, addr: Ipv4Addr) {
    let (addrs, routes) = pair.client_state();
    assert_eq!(
        addrs,
        vec![IpNet::new(IpAddr::V4(addr), 24).unwrap()],
        "addresses"
    );
    let default = IpNet::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0).unwrap();
    assert!(
        routes.contains(&(default, Some(IpAddr::V4(pair.server())))),
        "default route via the server's router option: {routes:?}"
    );
}

fn assert_unconfigured(pair: &Pair) {
    let (addrs, routes) = pair.client_state();
    assert!(addrs.is_empty(), "addresses left: {addrs:?}");
    assert!(
        routes.iter().all(|r| r.1.is_none()),
        "gateway routes left: {routes:?}"
    );
}

#[test]
fn acquires_renews_at_t1_and_releases_on_stop() {
    let pair = Pair::new();
    let _server = pair.dnsmasq(50, 60, false);
    let mut client = pair.client(None);
    let addr = client.bound(Bound::Discovered, Duration::from_secs(15));
    assert!(in_range(addr, pair.net, 50, 60), "{addr}");
    assert_configured(&pair, addr);

    client.wait_for("a unicast renew", Duration::from_secs(15), |e| {
        *e == Event::Sent(MessageType::Request, Destination::Unicast(pair.server()))
    });
    assert_eq!(client.bound(Bound::Renewed, Duration::from_secs(5)), addr);
    assert_configured(&pair, addr);

    let events = client.stop();
    assert!(
        events.contains(&Event::Sent(
            MessageType::Release,
            Destination::Unicast(pair.server())
        )),
        "{events:#?}"
    );
    assert_unconfigured(&pair);
    // dnsmasq saw our host name and the release.
    let log = pair.dnsmasq_log();
    assert!(log.contains("gantry-test"), "{log}");
    assert!(log.contains("DHCPRELEASE"), "{log}");
}

#[test]
fn rebinds_by_broadcast_when_the_server_comes_back() {
    let pair = Pair::new();
    let server = pair.dnsmasq(50, 60, false);
    let mut client = pair.client(None);
    let addr = client.bound(Bound::Discovered, Duration::from_secs(15));
    server.stop();
    client.wait_for("a unicast renew", Duration::from_secs(15), |e| {
        matches!(
            e,
            Event::Sent(MessageType::Request, Destination::Unicast(_))
        )
    });
    client.wait_for("a broadcast rebind at T2", Duration::from_secs(15), |e| {
        *e == Event::Sent(MessageType::Request, Destination::Broadcast)
    });
    assert_configured(&pair, addr);
    // Same lease file: the server knows the lease and extends it.
    let _server = pair.dnsmasq(50, 60, false);
    assert_eq!(client.bound(Bound::Rebound, Duration::from_secs(60)), addr);
    assert_configured(&pair, addr);
    client.stop();
}

#[test]
fn the_lease_expires_when_the_server_stays_away() {
    let pair = Pair::new();
    let server = pair.dnsmasq(50, 60, false);
    let mut client = pair.client(None);
    let addr = client.bound(Bound::Discovered, Duration::from_secs(15));
    let bound_at = Instant::now();
    server.stop();
    client.wait_for("a broadcast rebind", Duration::from_secs(30), |e| {
        *e == Event::Sent(MessageType::Request, Destination::Broadcast)
    });
    assert_configured(&pair, addr);
    client.wait_for(
        "expiry",
        Duration::from_secs(130),
        |e| matches!(e, Event::Removed(l, "lease expired") if l.address.addr() == addr),
    );
    assert!(
        bound_at.elapsed() >= Duration::from_secs(110),
        "expired early"
    );
    assert_unconfigured(&pair);
    client.wait_for("a new discover", Duration::from_secs(5), |e| {
        *e == Event::Sent(MessageType::Discover, Destination::Broadcast)
    });
    client.stop();
}

#[test]
fn a_nak_after_the_range_changes_restarts_discovery() {
    let pair = Pair::new();
    let server = pair.dnsmasq(50, 60, true);
    let mut client = pair.client(None);
    let old = client.bound(Bound::Discovered, Duration::from_secs(15));
    server.stop();
    std::fs::remove_file(pair.dir.path().join("leases")).unwrap();
    let _server = pair.dnsmasq(100, 110, true);
    client.wait_for("a NAK", Duration::from_secs(20), |e| {
        matches!(e, Event::Nak(_))
    });
    client.wait_for(
        "the old address removed",
        Duration::from_secs(1),
        |e| matches!(e, Event::Removed(l, "server sent NAK") if l.address.addr() == old),
    );
    let new = client.bound(Bound::Discovered, Duration::from_secs(15));
    assert!(in_range(new, pair.net, 100, 110), "{new}");
    assert_configured(&pair, new);
    client.stop();
}

#[test]
fn init_reboot_asks_for_the_saved_address_first() {
    let pair = Pair::new();
    // After a RELEASE the lease is gone from the server; only an authoritative server
    // answers an INIT-REBOOT for a lease it has no record of (RFC 2131 4.3.2).
    let _server = pair.dnsmasq(50, 60, true);
    let lease_file = pair.dir.path().join("var/lib/gantry/dhcp/v-cli.json");
    let mut first = pair.client(Some(lease_file.clone()));
    let addr = first.bound(Bound::Discovered, Duration::from_secs(15));
    first.stop();
    assert!(lease_file.exists(), "the lease is kept after a release");

    let mut second = pair.client(Some(lease_file));
    assert_eq!(second.bound(Bound::Rebooted, Duration::from_secs(15)), addr);
    let events = second.stop();
    let first_sent = events.iter().find(|e| matches!(e, Event::Sent(..)));
    assert_eq!(
        first_sent,
        Some(&Event::Sent(MessageType::Request, Destination::Broadcast)),
        "INIT-REBOOT sends REQUEST, not DISCOVER"
    );
    assert!(!events
        .iter()
        .any(|e| matches!(e, Event::Sent(MessageType::Discover, _))));
}

#[test]
fn malformed_and_foreign_replies_are_dropped_without_harm() {
    let pair = Pair::new();
    // Play the server by hand first: catch the DISCOVER to learn the transaction id.
    let srv = pair.srv.clone();
    let catcher = std::thread::spawn(move || {
        in_netns(&srv, || async {
            let sock = UdpSocket::bind("0.0.0.0:67").unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(15)))
                .unwrap();
            let mut buf = [0u8; 1500];
            let (n, _) = sock.recv_from(&mut buf).expect("a DISCOVER");
            Message::from_bytes(&buf[..n]).unwrap()
        })
    });
    std::thread::sleep(Duration::from_millis(300));
    let mut client = pair.client(None);
    let discover = catcher.join().unwrap();
    assert_eq!(discover.opts().msg_type(), Some(MessageType::Discover));

    let offer = |xid: u32, f: &dyn Fn(&mut Message)| {
        let mut m = Message::new_with_id(
            xid,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::new(192, 168, pair.net, 9),
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            discover.chaddr(),
        );
        m.set_opcode(Opcode::BootReply);
        m.opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Offer));
        m.opts_mut()
            .insert(DhcpOption::ServerIdentifier(pair.server()));
        m.opts_mut().insert(DhcpOption::AddressLeaseTime(120));
        f(&mut m);
        m.to_vec().unwrap()
    };
    let xid = discover.xid();
    let mut bad_packets: Vec<(&str, Vec<u8>)> = vec![
        (
            "truncated header",
            offer(xid, &|_| {}).into_iter().take(40).collect(),
        ),
        ("zeros", vec![0u8; 300]),
        ("wrong xid", offer(xid ^ 1, &|_| {})),
        (
            "no server id",
            offer(xid, &|m| {
                m.opts_mut()
                    .remove(dhcproto::v4::OptionCode::ServerIdentifier);
            }),
        ),
        (
            "broadcast yiaddr",
            offer(xid, &|m| {
                m.set_yiaddr(Ipv4Addr::BROADCAST);
            }),
        ),
    ];
    // An option whose length runs past the end of the packet.
    let mut overrun = offer(xid, &|_| {});
    overrun.truncate(overrun.len() - 1); // drop the END option
    overrun.extend_from_slice(&[12, 200, b'x']);
    bad_packets.push(("option overruns the packet", overrun));
    // A message type option with an impossible length.
    let mut bad_type = offer(xid, &|m| {
        m.opts_mut().remove(dhcproto::v4::OptionCode::MessageType);
    });
    bad_type.truncate(bad_type.len() - 1);
    bad_type.extend_from_slice(&[53, 0, 255]);
    bad_packets.push(("empty message type", bad_type));

    let srv = pair.srv.clone();
    // Every one but "zeros" (opcode 0, not a reply) and "wrong xid" is reported as dropped;
    // those two are dropped silently as not ours.
    let reported = bad_packets.len() - 2;
    in_netns(&srv, move || async move {
        let sock = UdpSocket::bind("0.0.0.0:67").unwrap();
        sock.set_broadcast(true).unwrap();
        nix::sys::socket::setsockopt(
            &sock,
            nix::sys::socket::sockopt::BindToDevice,
            &std::ffi::OsString::from("v-srv"),
        )
        .unwrap();
        for (_, p) in &bad_packets {
            sock.send_to(p, "255.255.255.255:68").unwrap();
        }
    });
    let mut dropped = 0;
    while dropped < reported {
        client.wait_for("dropped packets", Duration::from_secs(5), |e| {
            matches!(e, Event::Dropped(_))
        });
        dropped += 1;
    }
    assert!(
        !client
            .seen
            .iter()
            .any(|e| matches!(e, Event::Sent(MessageType::Request, _))),
        "no bad offer may be taken up: {:#?}",
        client.seen
    );
    // The client is alive and takes a real lease.
    let _server = pair.dnsmasq(50, 60, false);
    let addr = client.bound(Bound::Discovered, Duration::from_secs(40));
    assert_configured(&pair, addr);
    client.stop();
}

/// In the server's namespace, waits for the client's next BOOTREQUEST (a raw IPPROTO_UDP
/// socket gets a copy of every UDP datagram) and answers it with the same bytes as a
/// BOOTREPLY with `hlen = 255`: the right xid and chaddr, so the client reads its chaddr.
fn answer_next_request_with_hlen_255(ns: &str) -> std::thread::JoinHandle<()> {
    use nix::sys::socket::{self, AddressFamily, SockFlag, SockProtocol, SockType};
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        in_netns(&ns, || async {
            let raw = socket::socket(
                AddressFamily::Inet,
                SockType::Raw,
                SockFlag::empty(),
                SockProtocol::Udp,
            )
            .unwrap();
            let raw = std::net::UdpSocket::from(raw);
            raw.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let mut buf = [0u8; 1500];
            loop {
                let n = raw.recv(&mut buf).expect("a DHCP request within 30 s");
                let ip = &buf[..n];
                let ihl = usize::from(ip[0] & 0x0f) * 4;
                let (udp, bootp) = ip[ihl..].split_at(8);
                if u16::from_be_bytes([udp[2], udp[3]]) != 67 || bootp.first() != Some(&1) {
                    continue;
                }
                let ciaddr = Ipv4Addr::new(bootp[12], bootp[13], bootp[14], bootp[15]);
                let mut hostile = bootp.to_vec();
                hostile[0] = 2;
                hostile[2] = 255;
                let to = if ciaddr.is_unspecified() {
                    Ipv4Addr::BROADCAST
                } else {
                    ciaddr
                };
                let out = UdpSocket::bind("0.0.0.0:0").unwrap();
                out.set_broadcast(true).unwrap();
                out.send_to(&hostile, (to, 68)).unwrap();
                return;
            }
        })
    })
}

#[test]
fn a_reply_with_hlen_255_is_dropped_and_the_client_keeps_renewing() {
    let pair = Pair::new();
    let _server = pair.dnsmasq(50, 60, false);
    let mut client = pair.client(None);
    let addr = client.bound(Bound::Discovered, Duration::from_secs(15));
    let hostile = answer_next_request_with_hlen_255(&pair.srv);
    client.wait_for(
        "the hostile reply dropped",
        Duration::from_secs(20),
        |e| matches!(e, Event::Dropped(why) if why.contains("hlen 255")),
    );
    hostile.join().unwrap();
    // The client is still there: it renews at the next T1 against dnsmasq.
    assert_eq!(client.bound(Bound::Renewed, Duration::from_secs(25)), addr);
    assert_eq!(client.bound(Bound::Renewed, Duration::from_secs(25)), addr);
    assert_configured(&pair, addr);
    client.stop();
}
