//! A local cluster, end to end (needs QEMU, OVMF, vde2, docker-registry, etcd-server and
//! skopeo; CI installs them with `.ci/deps`): three nodes from the built image on one
//! segment, each serving a page from a container that counts its starts in a volume, and
//! each probing the next node's page by host name across the segment from a container of
//! its own. Then
//! the faults: a power cut of node 2 (its prober's neighbour goes unhealthy, the others
//! carry on), node 2 booted again (same address, its volume kept), a partition of node 3
//! and its healing, and `cluster down` leaving no process and no listening port behind.
//! Each node reports its own machine id (from its SMBIOS UUID), and node 2 the same one
//! from its disk after the power cut.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use gantry_init::machine_id::MACHINE_ID_LINE;
use gantry_qemu::cluster::{node_machine_id, Cluster, ClusterSpec};
use gantry_tests::cluster::{push, Console, Running};
use gantry_tests::demo::{busybox_layout, fetch};
use gantry_tests::image;

const NODES: u32 = 3;
const PORT: u16 = 8080;

/// The node whose page node `i` probes. (The web container `sync`s its count of starts:
/// a power cut loses what the guest had not written out, as it should.)
fn next(i: u32) -> u32 {
    i % NODES + 1
}

fn base_config() -> String {
    format!(
        r#"[containers.web]
image = "10.0.2.100:5000/cluster/web:1"
command = ["/bin/busybox", "sh", "-c", "echo start >> /data/starts; busybox sync; busybox mkdir -p /tmp/www; echo \"$NODE starts=$(busybox wc -l < /data/starts)\" > /tmp/www/index.html; exec busybox httpd -f -p {PORT} -h /tmp/www"]
ports = ["{PORT}:{PORT}"]
volumes = ["web-data:/data"]
stop_grace_secs = 2
health = {{ http = "http://127.0.0.1:{PORT}/", interval_secs = 2, retries = 2 }}

[containers.probe]
image = "10.0.2.100:5000/cluster/web:1"
command = ["/bin/busybox", "sleep", "1000000"]
stop_grace_secs = 1
"#
    )
}

/// Node `i`'s overlay: its name in the page, and the probe of the next node's page (with
/// `nc`: Debian's static busybox `wget` crashes in a root without glibc's NSS modules).
fn node_config(i: u32) -> String {
    let n = next(i);
    format!(
        r#"[containers.web]
env = {{ NODE = "cluster-{i}" }}

[containers.probe]
health = {{ exec = ["/bin/busybox", "sh", "-c", "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 2 cluster-{n} {PORT} | busybox grep -q cluster-{n}"], interval_secs = 2, timeout_secs = 5, retries = 2 }}
"#
    )
}

fn page(cluster: &Cluster, i: u32) -> String {
    let (host, _) = cluster
        .state()
        .node(i)
        .unwrap_or_else(|e| panic!("{e}"))
        .forwards[0];
    fetch(&format!("http://127.0.0.1:{host}/")).unwrap_or_else(|e| panic!("node {i}: {e}"))
}

fn listening(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

#[test]
fn qemu_a_three_node_cluster_reaches_across_its_segment_and_survives_its_faults() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("cluster");
    let layout = busybox_layout(
        &work.path().join("web-layout"),
        &[],
        &["/bin/busybox", "true"],
        "1",
    );
    let spec = ClusterSpec {
        name: "cluster".into(),
        nodes: NODES,
        image: image().qcow2_image.clone(),
        dir: dir.clone(),
        base_config: Some(base_config()),
        node_configs: (1..=NODES)
            .map(|i| (i, node_config(i)))
            .collect::<BTreeMap<_, _>>(),
        memory_mib: 512,
        cpus: 1,
        forward_ports: vec![PORT],
        services: true,
        fast: false,
    };
    let started = Instant::now();
    let mut running =
        Running(Cluster::up(&spec, Duration::from_secs(600)).unwrap_or_else(|e| panic!("{e}")));
    let cluster = &mut running.0;
    eprintln!(
        "{NODES} nodes ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // The image goes in once the registry is up; the nodes retry their pulls until then.
    let registry = cluster
        .state()
        .service("registry")
        .unwrap()
        .host_url
        .clone();
    push(&layout, &registry, "cluster/web:1");
    let etcd = &cluster.state().service("etcd").unwrap().host_url;
    let version = fetch(&format!("{etcd}/version")).unwrap();
    assert!(version.contains("etcdserver"), "{version}");

    let mut consoles: Vec<Console> = (1..=NODES).map(|i| Console::of(cluster, i)).collect();
    for i in 1..=NODES {
        consoles[i as usize - 1].wait(&["name=probe", "health=Healthy"], Duration::from_secs(400));
        assert_eq!(page(cluster, i), format!("cluster-{i} starts=1\n"));
    }
    // Each container's health reaches the console on its own; give the last ones time.
    let settled = Instant::now() + Duration::from_secs(120);
    let status = loop {
        let status = cluster.status();
        let all = status
            .iter()
            .all(|n| n.state == "running" && n.containers_healthy == 2);
        if all || Instant::now() > settled {
            break status;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        status
            .iter()
            .all(|n| n.state == "running" && n.containers_healthy == 2),
        "{status:?}\nnode consoles:\n{}",
        (1..=NODES)
            .map(|i| gantry_qemu::cluster::tail(&cluster.state().node(i).unwrap().serial_log, 40))
            .collect::<Vec<_>>()
            .join("\n----\n")
    );
    // Each node's own machine id: the one derived for it, as its PID 1 reports it, taken
    // from its SMBIOS UUID on this first boot; no two alike.
    let ids: BTreeSet<&str> = status.iter().map(|n| n.machine_id.as_str()).collect();
    assert_eq!(ids.len(), NODES as usize, "{status:?}");
    for n in &status {
        assert_eq!(n.machine_id, node_machine_id("cluster", n.index));
        assert_eq!(
            n.reported_machine_id.as_deref(),
            Some(n.machine_id.as_str())
        );
        let mut console = Console::of(cluster, n.index);
        console.wait(
            &[MACHINE_ID_LINE, &n.machine_id, "source=smbios"],
            Duration::from_secs(10),
        );
    }

    // A power cut of node 2: node 1's probe of it fails, node 3's of node 1 does not.
    cluster.kill(2).unwrap();
    consoles[0].wait(&["name=probe", "unhealthy"], Duration::from_secs(120));
    assert_eq!(page(cluster, 3), "cluster-3 starts=1\n");
    assert_eq!(cluster.status()[1].state, "stopped");

    // Booted again: the same address (node 1's probe is healthy again), its volume kept.
    cluster
        .start(2, Duration::from_secs(600))
        .unwrap_or_else(|e| panic!("{e}"));
    consoles[1] = Console::of(cluster, 2);
    consoles[1].wait(&["name=web", "health=Healthy"], Duration::from_secs(300));
    assert_eq!(page(cluster, 2), "cluster-2 starts=2\n");
    // Its machine id came back from its disk, the same as before.
    let id = node_machine_id("cluster", 2);
    let mut console = Console::of(cluster, 2);
    console.wait(
        &[MACHINE_ID_LINE, &id, "source=persisted"],
        Duration::from_secs(10),
    );
    assert_eq!(cluster.status()[1].reported_machine_id, Some(id));
    consoles[0].wait(&["name=probe", "health=Healthy"], Duration::from_secs(120));

    // Node 3 cut off the segment: node 2's probe of it fails; healed, it passes again.
    cluster.set_link(3, false).unwrap();
    consoles[1].wait(&["name=probe", "unhealthy"], Duration::from_secs(120));
    assert!(cluster.status()[2].partitioned);
    // Its user network is untouched: the host still reaches its page.
    assert_eq!(page(cluster, 3), "cluster-3 starts=1\n");
    cluster.set_link(3, true).unwrap();
    consoles[1].wait(&["name=probe", "health=Healthy"], Duration::from_secs(120));

    // Down: no process, no port.
    let state = cluster.state().clone();
    let ports: Vec<u16> = state
        .nodes
        .iter()
        .flat_map(|n| n.forwards.iter().map(|f| f.0))
        .chain(state.services.iter().filter_map(|s| {
            s.host_url
                .trim_end_matches('/')
                .rsplit(':')
                .next()?
                .parse()
                .ok()
        }))
        .collect();
    assert!(ports.iter().all(|p| listening(*p)), "{ports:?}");
    cluster.down();
    let pids: Vec<u32> = state
        .nodes
        .iter()
        .filter_map(|n| n.pid)
        .chain(state.services.iter().filter_map(|s| s.pid))
        .chain(state.switch.pid)
        .collect();
    assert_eq!(pids.len(), NODES as usize + 4, "{state:?}");
    for pid in pids {
        assert!(
            !gantry_qemu::cluster::process::alive(pid, &state.dir),
            "{pid} still runs"
        );
    }
    for p in ports {
        assert!(!listening(p), "port {p} still listens");
    }
    let reopened = Cluster::open(&dir).unwrap();
    assert!(reopened.status().iter().all(|n| n.state == "stopped"));
}
