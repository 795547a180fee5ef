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
    std::fs::create_dir(&layout).expect("layout");
    let checker_bytes = std::fs::read(checker()).expect("checker");
    let mut layers = busybox_layers();
    layers.push(layer_tar(&[Entry::File("checker", &checker_bytes, 0o755)]));
    let d = add_image(
        &layout,
        &ImageSpec {
            arch: "amd64",
            layers: &layers,
            comp: Comp::Gzip,
            bad_diff_id: false,
            cmd: &["/bin/sh"],
        },
    );
    finish_layout(&layout, vec![("example.com/net:1", d)]);
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

#[test]
fn bridged_containers_talk_publish_ports_masquerade_and_clean_up_as_root() {
    let fx = setup("b");
    let mut a = fx.start(
        "net-a",
        &["8080:80", "5353:53/udp"],
        "B=/bin/busybox; $B mkdir /www && echo hello-from-a > /www/index.html && $B httpd -f -p 80 -h /www & /checker --udp-echo 53",
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

    // The ruleset, read back with nft: one DNAT rule per published port, tagged.
    assert_eq!(rules_tagged(&fx.host, "container net-a"), 2);
    assert_eq!(rules_tagged(&fx.host, "container net-b"), 2);
    // Set up twice (once per container), the network's own rules are there once.
    assert_eq!(rules_tagged(&fx.host, &format!("network {BRIDGE}")), 3);
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
    assert_eq!(rules_tagged(&fx.host, &format!("network {BRIDGE}")), 3);
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
