//! Container networks, for real: a "host" network namespace and an "outside" one joined
//! by a veth pair, both made by the test, `gantry run --network bridge` inside the host
//! one. Every packet stays in these namespaces; the machine's own interfaces and
//! nftables ruleset are never touched. Needs root (CI runs as root).

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use futures_util::TryStreamExt;
use gantry_runtime::network::Netns;
use serde_json::Value;

const HOST_ADDR: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
const OUTSIDE_ADDR: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);
const SUBNET: &str = "10.99.0.0/24";
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const BRIDGE: &str = "gtbr0";

/// A network namespace made for the test, deleted (with everything in it) on drop.
struct TestNetns {
    name: String,
}

impl TestNetns {
    fn new(name: String) -> Self {
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        run("ip", &["netns", "add", &name]);
        run("ip", &["-n", &name, "link", "set", "lo", "up"]);
        TestNetns { name }
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    fn open(&self) -> Netns {
        Netns::open(&self.path()).expect("open the test netns")
    }

    /// Runs `f` on a thread inside this namespace.
    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        self.open().run(f).expect("enter the test netns")
    }

    fn nft_rules(&self) -> Vec<Value> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft", "-j", "list", "ruleset"])
            .output()
            .expect("nft (installed on the build host for tests)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("nft -j");
        v["nftables"]
            .as_array()
            .expect("nftables")
            .iter()
            .filter_map(|o| o.get("rule").cloned())
            .collect()
    }

    fn sysctl(&self, key: &str) -> String {
        let path = format!("/proc/sys/net/{key}");
        self.run(move || std::fs::read_to_string(path).expect("sysctl"))
            .trim()
            .to_owned()
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `gantry run` of one container inside the host namespace, in the background.
struct Running {
    child: Child,
    name: &'static str,
    log: PathBuf,
}

impl Running {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Fixture {
    work: tempfile::TempDir,
    host: TestNetns,
    outside: TestNetns,
}

impl Fixture {
    fn store(&self) -> String {
        self.work.path().join("store").display().to_string()
    }

    fn state_root(&self) -> PathBuf {
        self.work.path().join("run")
    }

    fn leases(&self) -> Value {
        let path = self
            .work
            .path()
            .join("store/network")
            .join(format!("{BRIDGE}.json"));
        serde_json::from_slice(&std::fs::read(path).expect("leases")).expect("leases json")
    }

    fn start(&self, name: &'static str, ports: &[&str], script: &str) -> Running {
        let log = self.work.path().join(format!("{name}.log"));
        let mut args: Vec<String> = vec![
            "netns".into(),
            "exec".into(),
            self.host.name.clone(),
            env!("CARGO_BIN_EXE_gantry").into(),
            "--root".into(),
            self.store(),
            "run".into(),
            "--name".into(),
            name.into(),
            "--state-root".into(),
            self.state_root().display().to_string(),
            "--network".into(),
            "bridge".into(),
            "--bridge".into(),
            BRIDGE.into(),
            "--subnet".into(),
            SUBNET.into(),
            "--mtu".into(),
            "1400".into(),
            "--host-resolv-conf".into(),
            self.work.path().join("resolv.conf").display().to_string(),
            "--dns-upstream".into(),
            OUTSIDE_ADDR.to_string(),
        ];
        for p in ports {
            args.push("-p".into());
            args.push((*p).into());
        }
        args.extend(["example.com/net:1".into(), "/bin/sh".into(), "-c".into()]);
        // PID 1 ignores SIGTERM without a handler: the trap lets `gantry run` stop it.
        args.push(format!("trap 'exit 0' TERM; {script} & wait"));
        let out = std::fs::File::create(&log).expect("log");
        let child = Command::new("ip")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("ip netns exec gantry run");
        Running { child, name, log }
    }

    /// `gantry run --network <mode>` in the host namespace, in the foreground.
    fn run_fg(&self, name: &str, extra: &[&str], script: &str) -> (bool, String, String) {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.host.name,
                env!("CARGO_BIN_EXE_gantry"),
            ])
            .args([
                "--root",
                &self.store(),
                "run",
                "--name",
                name,
                "--state-root",
            ])
            .arg(self.state_root())
            .arg("--host-resolv-conf")
            .arg(self.work.path().join("resolv.conf"))
            .args(extra)
            .args(["example.com/net:1", "/bin/sh", "-c", script])
            .output()
            .expect("gantry run");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The container's state as `gantry-runtime state` prints it, once it runs.
    fn running_pid(&self, c: &mut Running) -> i32 {
        let root = self.state_root().join("containers");
        wait_for(&format!("container {} to run", c.name), || {
            if let Ok(Some(status)) = c.child.try_wait() {
                panic!("gantry run {} exited with {status}: {}", c.name, c.log());
            }
            let out = Command::new(env!("CARGO_BIN_EXE_gantry-runtime"))
                .args(["--root", root.to_str()?, "state", c.name])
                .output()
                .ok()?;
            let v: Value = serde_json::from_slice(&out.stdout).ok()?;
            (v["status"] == "running").then(|| v["pid"].as_i64().map(|p| p as i32))?
        })
    }

    /// Runs `cmd` inside container `name` (joining its namespaces) and returns stdout.
    fn exec(&self, name: &str, cmd: &[&str]) -> (bool, String, String) {
        let root = self.state_root().join("containers");
        let out = Command::new(env!("CARGO_BIN_EXE_gantry-runtime"))
            .args(["--root", root.to_str().expect("utf-8"), "exec", name])
            .args(cmd)
            .output()
            .expect("gantry-runtime exec");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// The namespaces and the image; `tag` keeps the names of tests running at once apart.
fn setup(tag: &str) -> Fixture {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (network namespaces, veth, nf_tables); CI runs as root"
    );
    let tag = format!("{}{tag}", std::process::id());
    let host = TestNetns::new(format!("gt{tag}h"));
    let outside = TestNetns::new(format!("gt{tag}o"));
    // The link is made straight inside the two namespaces.
    let (h, o) = (format!("gt{tag}h0"), format!("gt{tag}o0"));
    run(
        "ip",
        &[
            "link",
            "add",
            "name",
            &h,
            "netns",
            &host.name,
            "type",
            "veth",
            "peer",
            "name",
            &o,
            "netns",
            &outside.name,
        ],
    );
    for (ns, dev, addr) in [(&host, &h, HOST_ADDR), (&outside, &o, OUTSIDE_ADDR)] {
        run(
            "ip",
            &[
                "-n",
                &ns.name,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                dev,
            ],
        );
        run("ip", &["-n", &ns.name, "link", "set", dev, "up"]);
    }

    let work = tempfile::tempdir().expect("tmp");
    let layout = work.path().join("layout");
    checker_layout(&layout, &["/bin/sh"], "example.com/net:1");
    let store = work.path().join("store");
    let (ok, _, err) = gantry(
        &[
            "--root",
            store.to_str().expect("utf-8"),
            "image",
            "import",
            layout.to_str().expect("utf-8"),
        ],
        None,
    );
    assert!(ok, "{err}");
    // A host whose only resolver is a local stub: containers get the upstream instead.
    std::fs::write(
        work.path().join("resolv.conf"),
        "nameserver 127.0.0.53\nsearch example.test\n",
    )
    .expect("resolv.conf");
    Fixture {
        work,
        host,
        outside,
    }
}

/// What netlink reports inside a namespace: (eth0's IPv4 addresses with prefix, eth0's
/// MTU, whether lo is up, IPv4 default routes' gateways).
fn inspect(ns: &Netns) -> (Vec<(Ipv4Addr, u8)>, u32, bool, Vec<Ipv4Addr>) {
    use netlink_packet_route::address::AddressAttribute;
    use netlink_packet_route::link::{LinkAttribute, LinkFlags};
    use netlink_packet_route::route::{RouteAddress, RouteAttribute};
    ns.run(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let (conn, h, _) = rtnetlink::new_connection().expect("rtnetlink");
            tokio::spawn(conn);
            let link = |name: &'static str| {
                let h = h.clone();
                async move {
                    h.link()
                        .get()
                        .match_name(name)
                        .execute()
                        .try_next()
                        .await
                        .expect("get link")
                        .expect("link exists")
                }
            };
            let eth0 = link("eth0").await;
            let lo = link("lo").await;
            let mtu = eth0
                .attributes
                .iter()
                .find_map(|a| match a {
                    LinkAttribute::Mtu(m) => Some(*m),
                    _ => None,
                })
                .expect("mtu");
            let addrs: Vec<_> = h
                .address()
                .get()
                .set_link_index_filter(eth0.header.index)
                .execute()
                .try_collect::<Vec<_>>()
                .await
                .expect("addresses")
                .into_iter()
                .filter_map(|m| {
                    m.attributes.iter().find_map(|a| match a {
                        AddressAttribute::Address(std::net::IpAddr::V4(ip)) => {
                            Some((*ip, m.header.prefix_len))
                        }
                        _ => None,
                    })
                })
                .collect();
            let routes: Vec<_> = h
                .route()
                .get(rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new().build())
                .execute()
                .try_collect::<Vec<_>>()
                .await
                .expect("routes")
                .into_iter()
                .filter(|r| r.header.destination_prefix_length == 0)
                .filter_map(|r| {
                    r.attributes.iter().find_map(|a| match a {
                        RouteAttribute::Gateway(RouteAddress::Inet(g)) => Some(*g),
                        _ => None,
                    })
                })
                .collect();
            (addrs, mtu, lo.header.flags.contains(LinkFlags::Up), routes)
        })
    })
    .expect("enter the container's netns")
}

fn link_exists(ns: &TestNetns, name: &str) -> bool {
    let name = name.to_owned();
    ns.run(move || {
        Command::new("ip")
            .args(["link", "show", "dev", &name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("ip")
            .success()
    })
}

fn http_get(addr: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

fn udp_roundtrip(addr: SocketAddr, msg: &[u8]) -> Option<Vec<u8>> {
    let s = UdpSocket::bind("0.0.0.0:0").ok()?;
    s.set_read_timeout(Some(Duration::from_millis(300))).ok()?;
    s.send_to(msg, addr).ok()?;
    let mut buf = [0u8; 512];
    let (n, _) = s.recv_from(&mut buf).ok()?;
    Some(buf[..n].to_vec())
}

fn rules_tagged(ns: &TestNetns, comment: &str) -> usize {
    ns.nft_rules()
        .iter()
        .filter(|r| r["comment"] == comment)
        .count()
}

/// The packets counted by the rule in `chain` whose expressions mention `needle`.
fn counter(ns: &TestNetns, chain: &str, needle: &str) -> u64 {
    ns.nft_rules()
        .iter()
        .filter(|r| r["chain"] == chain && r["expr"].to_string().contains(needle))
        .filter_map(|r| {
            r["expr"]
                .as_array()?
                .iter()
                .find_map(|e| e["counter"]["packets"].as_u64())
        })
        .sum()
}

/// The MAC address of `dev` in `ns`.
fn mac_of(ns: &TestNetns, dev: &str) -> [u8; 6] {
    let out = Command::new("ip")
        .args(["-n", &ns.name, "-j", "link", "show", "dev", dev])
        .output()
        .expect("ip link");
    let v: Value = serde_json::from_slice(&out.stdout).expect("ip -j link");
    let text = v[0]["address"].as_str().expect("address");
    let mut mac = [0u8; 6];
    for (m, h) in mac.iter_mut().zip(text.split(':')) {
        *m = u8::from_str_radix(h, 16).expect("hex");
    }
    mac
}

/// Sends one UDP datagram as a raw Ethernet frame to `dst_mac` out of `dev` (in the
/// calling thread's namespace), bypassing the routing table, as a process with
/// CAP_NET_RAW can.
fn raw_udp(dev: &str, dst_mac: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr, port: u16, data: &[u8]) {
    let mut ip = Vec::new();
    let total = (20 + 8 + data.len()) as u16;
    ip.extend_from_slice(&[0x45, 0]);
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let mut sum: u32 = ip
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    ip.extend_from_slice(&40000u16.to_be_bytes());
    ip.extend_from_slice(&port.to_be_bytes());
    ip.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 0]); // no UDP checksum
    ip.extend_from_slice(data);
    let mut frame = dst_mac.to_vec();
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]); // a locally administered source
    frame.extend_from_slice(&0x0800u16.to_be_bytes());
    frame.extend_from_slice(&ip);
    let name = std::ffi::CString::new(dev).expect("name");
    // SAFETY: plain socket calls on a socket we own, with a sockaddr_ll we fill in.
    unsafe {
        let index = libc::if_nametoindex(name.as_ptr());
        assert!(index != 0, "no {dev}");
        let fd = libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW,
            i32::from((libc::ETH_P_IP as u16).to_be()),
        );
        assert!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = index as i32;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&dst_mac);
        let n = libc::sendto(
            fd,
            frame.as_ptr().cast(),
            frame.len(),
            0,
            std::ptr::addr_of!(sll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        );
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        assert_eq!(n, frame.len() as isize, "send the frame: {err}");
    }
}

#[test]
fn bridged_containers_talk_publish_ports_masquerade_and_clean_up_as_root() {
    let fx = setup("b");
    let mut a = fx.start(
        "net-a",
        &["8080:80", "5353:53/udp"],
        "B=/bin/busybox; $B mkdir /www && echo hello-from-a > /www/index.html && $B httpd -p 81 -h /www && $B httpd -f -p 80 -h /www & /checker --udp-echo 53",
    );
    let pid_a = fx.running_pid(&mut a);
    let mut b = fx.start(
        "net-b",
        &["9090:80/tcp", "127.0.0.1:9191:80"],
        "B=/bin/busybox; $B mkdir /www && echo hello-from-b > /www/index.html && $B httpd -f -p 80 -h /www",
    );
    let pid_b = fx.running_pid(&mut b);

    // Addresses, MTU, lo and the default route, as netlink reports them inside.
    let leases = fx.leases();
    let lease = |n: &str| -> Ipv4Addr {
        leases["leases"][n]["address"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no lease for {n}: {leases}"))
    };
    let (ip_a, ip_b) = (lease("net-a"), lease("net-b"));
    assert_eq!(ip_a, Ipv4Addr::new(10, 99, 0, 2));
    assert_eq!(ip_b, Ipv4Addr::new(10, 99, 0, 3));
    for (pid, ip) in [(pid_a, ip_a), (pid_b, ip_b)] {
        let ns = Netns::of_pid(pid).expect("container netns");
        let (addrs, mtu, lo_up, gateways) = inspect(&ns);
        assert_eq!(addrs, vec![(ip, 24)]);
        assert_eq!(mtu, 1400);
        assert!(lo_up, "lo is up");
        assert_eq!(gateways, vec![GATEWAY]);
    }
    assert_eq!(fx.host.sysctl("ipv4/ip_forward"), "1");
    assert_eq!(
        fx.host
            .sysctl(&format!("ipv4/conf/{BRIDGE}/route_localnet")),
        "1"
    );

    // DNS: the host's only resolver is on loopback, so the upstream one is used.
    let (ok, resolv, err) = fx.exec("net-a", &["/bin/busybox", "cat", "/etc/resolv.conf"]);
    assert!(ok, "{err}");
    assert_eq!(
        resolv,
        format!("# generated by gantry\nnameserver {OUTSIDE_ADDR}\nsearch example.test\n")
    );

    // A reaches B over the bridge.
    let url = format!("http://{ip_b}/");
    let body = wait_for("A to reach B", || {
        let (ok, out, _) = fx.exec("net-a", &["/bin/busybox", "wget", "-q", "-O", "-", &url]);
        ok.then_some(out)
    });
    assert_eq!(body, "hello-from-b\n");

    // Published TCP and UDP ports, from the outside namespace, to the host's address.
    let body = fx.outside.run(|| {
        wait_for("published TCP port from outside", || {
            http_get((HOST_ADDR, 8080).into())
        })
    });
    assert!(body.ends_with("hello-from-a\n"), "{body}");
    let echoed = fx.outside.run(|| {
        wait_for("published UDP port from outside", || {
            udp_roundtrip((HOST_ADDR, 5353).into(), b"ping over udp")
        })
    });
    assert_eq!(echoed, b"ping over udp");
    // From the host itself: through 127.0.0.1 and through its own address.
    for addr in [Ipv4Addr::LOCALHOST, HOST_ADDR] {
        let body = fx.host.run(move || {
            wait_for("published port from the host", || {
                http_get((addr, 9090).into())
            })
        });
        assert!(body.ends_with("hello-from-b\n"), "{addr}: {body}");
    }
    // A port published on 127.0.0.1 only: reachable there, not on the host's address.
    let body = fx.host.run(|| {
        wait_for("a port published on 127.0.0.1", || {
            http_get((Ipv4Addr::LOCALHOST, 9191).into())
        })
    });
    assert!(body.ends_with("hello-from-b\n"), "{body}");
    assert!(
        fx.outside
            .run(|| http_get((HOST_ADDR, 9191).into()))
            .is_none(),
        "a 127.0.0.1 port must not be published on other addresses"
    );
    // Hairpin: A reaches B's published port through the host's address.
    let url = format!("http://{HOST_ADDR}:9090/");
    let (ok, body, err) = fx.exec("net-a", &["/bin/busybox", "wget", "-q", "-O", "-", &url]);
    assert!(ok, "hairpin: {err}");
    assert_eq!(body, "hello-from-b\n");

    // Egress is masqueraded: the outside sees the host's address.
    let listener = fx
        .outside
        .run(|| TcpListener::bind((OUTSIDE_ADDR, 7000)).expect("listen outside"));
    listener.set_nonblocking(true).expect("nonblocking");
    let sender = std::thread::scope(|s| {
        let t = s.spawn(|| {
            fx.exec(
                "net-b",
                &[
                    "/bin/sh",
                    "-c",
                    &format!("echo egress | /bin/busybox nc {OUTSIDE_ADDR} 7000"),
                ],
            )
        });
        let (mut conn, peer) = wait_for("a connection from container B", || listener.accept().ok());
        conn.set_nonblocking(false).expect("blocking");
        conn.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut got = String::new();
        let _ = conn.read_to_string(&mut got);
        drop(conn);
        let _ = t.join();
        (peer, got)
    });
    assert_eq!(
        sender.0.ip(),
        std::net::IpAddr::V4(HOST_ADDR),
        "masqueraded source"
    );
    assert_eq!(sender.1, "egress\n");

    // A machine with a route to the subnet through the host reaches no unpublished port
    // (A's 81, and A's 80 itself, not DNATed), and still reaches the published one.
    run(
        "ip",
        &[
            "-n",
            &fx.outside.name,
            "route",
            "add",
            SUBNET,
            "via",
            &HOST_ADDR.to_string(),
        ],
    );
    for port in [81, 80] {
        assert!(
            fx.outside
                .run(move || http_get((ip_a, port).into()))
                .is_none(),
            "unpublished {ip_a}:{port} reached from outside"
        );
    }
    assert!(
        counter(&fx.host, "forward", "drop") > 0,
        "the forward drop rule saw the attempts: {:?}",
        fx.host.nft_rules()
    );
    let body = fx
        .outside
        .run(|| http_get((HOST_ADDR, 8080).into()))
        .expect("published port with a route to the subnet");
    assert!(body.ends_with("hello-from-a\n"), "{body}");
    // But A's 81 is open: from the host itself and from B.
    let url = format!("http://{ip_a}:81/");
    let (ok, body, err) = fx.exec("net-b", &["/bin/busybox", "wget", "-q", "-O", "-", &url]);
    assert!(ok, "container to container: {err}");
    assert_eq!(body, "hello-from-a\n");

    // CVE-2020-8558: with route_localnet on the bridge, a frame from a container (with
    // CAP_NET_RAW) to the bridge's MAC for 127.0.0.1 would reach the host's loopback.
    // Sent from A's namespace, as A could; the same frame for the gateway's address is
    // the control that the frame itself is right.
    let probe = fx
        .host
        .run(|| UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 7002)).expect("probe listener"));
    probe
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let bridge_mac = mac_of(&fx.host, BRIDGE);
    Netns::of_pid(pid_a)
        .expect("A's netns")
        .run(|| {
            raw_udp(
                "eth0",
                bridge_mac,
                ip_a,
                Ipv4Addr::LOCALHOST,
                7002,
                b"loopback",
            );
            raw_udp("eth0", bridge_mac, ip_a, GATEWAY, 7002, b"control");
            raw_udp(
                "eth0",
                bridge_mac,
                ip_a,
                Ipv4Addr::new(169, 254, 169, 254),
                7002,
                b"meta",
            );
        })
        .expect("enter A's netns");
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while let Ok((n, _)) = probe.recv_from(&mut buf) {
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert_eq!(
        got,
        ["control"],
        "only the frame for the gateway's address arrives"
    );
    let guard: Vec<String> = fx
        .host
        .nft_rules()
        .iter()
        .filter(|r| r["chain"] == "guard")
        .map(|r| r["expr"].to_string())
        .collect();
    assert_eq!(guard.len(), 2, "{guard:?}");
    assert!(
        guard[0].contains(r#"{"prefix":{"addr":"127.0.0.0","len":8}}"#)
            && guard[0].contains(BRIDGE)
            && guard[0].contains(r#""drop":null"#),
        "{guard:?}"
    );
    assert!(guard[1].contains("169.254.169.254"), "{guard:?}");
    assert!(counter(&fx.host, "guard", "127.0.0.0") > 0, "{guard:?}");

    // The ruleset, read back with nft: one DNAT rule per published port, tagged.
    assert_eq!(rules_tagged(&fx.host, "container net-a"), 2);
    assert_eq!(rules_tagged(&fx.host, "container net-b"), 2);
    // Set up twice (once per container), the network's own rules are there once: two in
    // guard, four in forward, three in postrouting.
    assert_eq!(rules_tagged(&fx.host, &format!("network {BRIDGE}")), 9);
    let forward: Vec<String> = fx
        .host
        .nft_rules()
        .iter()
        .filter(|r| r["chain"] == "forward")
        .map(|r| r["expr"].to_string())
        .collect();
    assert_eq!(forward.len(), 4, "{forward:?}");
    assert!(
        forward[0].contains("established") && forward[0].contains("related"),
        "{forward:?}"
    );
    assert!(
        forward[1].contains("dnat") && forward[1].contains("status"),
        "{forward:?}"
    );
    assert!(
        forward[2].contains("iifname") && forward[2].contains("accept"),
        "{forward:?}"
    );
    assert!(forward[3].contains("drop"), "{forward:?}");
    let rules = fx.host.nft_rules();
    let udp = rules
        .iter()
        .find(|r| r["comment"] == "container net-a" && r.to_string().contains("\"udp\""))
        .expect("A's UDP rule");
    assert!(
        udp["expr"]
            .to_string()
            .contains(&format!("{{\"dnat\":{{\"addr\":\"{ip_a}\",\"port\":53}}}}")),
        "{udp}"
    );

    // Delete: A stops (SIGTERM to `gantry run`), which deletes it.
    let veth_a = gantry_runtime::network::bridge::host_veth_name(&"net-a".parse().expect("id"));
    assert!(link_exists(&fx.host, &veth_a));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(a.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let status = a.child.wait().expect("wait");
    assert!(status.success(), "{status}: {}", a.log());
    assert!(!link_exists(&fx.host, &veth_a), "A's veth is gone");
    assert_eq!(rules_tagged(&fx.host, "container net-a"), 0);
    assert_eq!(rules_tagged(&fx.host, "container net-b"), 2);
    assert!(fx.leases()["leases"].get("net-a").is_none());

    // A crash: `gantry run` of B is killed; B runs on. A delete from another namespace
    // refuses to touch the network; from the host namespace it cleans up from state.
    b.child.kill().expect("SIGKILL");
    let _ = b.child.wait();
    let root = fx.state_root().join("containers");
    let delete_in = |ns: &TestNetns| {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.name,
                env!("CARGO_BIN_EXE_gantry-runtime"),
            ])
            .args([
                "--root",
                root.to_str().expect("utf-8"),
                "delete",
                "--force",
                "net-b",
            ])
            .output()
            .expect("gantry-runtime delete")
    };
    let out = delete_in(&fx.outside);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("network namespace"), "{err}");
    assert_eq!(
        rules_tagged(&fx.host, "container net-b"),
        2,
        "nothing touched"
    );
    let out = delete_in(&fx.host);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let veth_b = gantry_runtime::network::bridge::host_veth_name(&"net-b".parse().expect("id"));
    assert!(!link_exists(&fx.host, &veth_b), "B's veth is gone");
    assert_eq!(rules_tagged(&fx.host, "container net-b"), 0);
    assert_eq!(fx.leases()["leases"], serde_json::json!({}));
    // The network's own rules stay for the next container.
    assert_eq!(rules_tagged(&fx.host, &format!("network {BRIDGE}")), 9);
}

#[test]
fn a_rejected_transaction_names_the_operation_and_changes_nothing_as_root() {
    use gantry_runtime::network::nft::{Batch, Expr, NftError, NftSocket, Rule};
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (network namespaces, nf_tables); CI runs as root"
    );
    let ns = TestNetns::new(format!("gt{}n", std::process::id()));
    let (err, rules) = ns.run(|| {
        let sock = NftSocket::open().expect("socket");
        let mut b = Batch::new("gantry");
        b.add_table();
        b.add_rule(&Rule {
            chain: "missing".into(),
            exprs: vec![Expr::Counter],
            comment: Some("container x".into()),
        });
        let err = b.commit(&sock).expect_err("a rule in a missing chain");
        (err, sock.list_rules("gantry").expect("list"))
    });
    match &err {
        NftError::Rejected { op, reason } => {
            assert_eq!(op, "add rule ip gantry missing (container x)");
            assert!(reason.contains("No such file or directory"), "{reason}");
        }
        other => panic!("{other}"),
    }
    assert!(rules.is_empty());
    // All or nothing: the table of the same transaction was not made either.
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name, "nft", "list", "tables"])
        .output()
        .expect("nft");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
}

#[test]
fn host_and_none_networks_as_root() {
    let fx = setup("m");
    let script = "/bin/busybox ip -o -4 addr; /bin/busybox cat /etc/resolv.conf";
    // host: the host namespace's addresses, and its resolvers as they are.
    let (ok, out, err) = fx.run_fg("on-host", &["--network", "host"], script);
    assert!(ok, "{err}");
    assert!(out.contains(&format!("inet {HOST_ADDR}/24")), "{out}");
    assert!(
        out.ends_with("nameserver 127.0.0.53\nsearch example.test\n"),
        "{out}"
    );
    // none (the default): only lo, up, and the image's own /etc (no resolv.conf in it).
    let (ok, out, err) = fx.run_fg("on-none", &[], script);
    assert!(
        !ok,
        "the image has no /etc/resolv.conf, so cat fails: {out}"
    );
    assert!(out.contains("inet 127.0.0.1/8"), "{out} {err}");
    assert!(!out.contains("192.168."), "{out}");
    // Publishing needs the bridge.
    let (ok, _, err) = fx.run_fg("bad", &["-p", "80:80"], "true");
    assert!(!ok);
    assert!(
        err.contains("publishing ports needs --network bridge"),
        "{err}"
    );
    let (ok, _, err) = fx.run_fg("bad", &["--network", "bridge", "-p", "80:80/sctp"], "true");
    assert!(!ok);
    assert!(
        err.contains("80:80/sctp") && err.contains("\"sctp\" is not tcp or udp"),
        "{err}"
    );
    // Nothing was attached: no bridge in the host namespace.
    assert!(!link_exists(&fx.host, BRIDGE));
}
