//! A rolling update of a local cluster, end to end (needs what `cluster.rs` needs; CI
//! installs it with `.ci/deps`): three nodes running 0.1.0 with a required container,
//! following the cluster's channel server, with `lease = "etcd"` and one reboot slot in
//! the cluster's etcd. Release 0.2.0 is published with all its waves open. Must see: every
//! node ends on 0.2.0 in slot B, marked good, recorded `good` in the fleet store; and, from
//! etcd's history (every revision of the fleet's records), never two nodes `rebooting`
//! at once, while each of them was `rebooting` once. Then a bad release with a failure
//! budget of one rollback, its first wave holding one node: that node rolls back, and once
//! the release is opened to all, the others halt it and stay on 0.2.0.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use gantry_qemu::cluster::{Cluster, ClusterSpec};
use gantry_tests::cluster::{push, Console, Running};
use gantry_tests::demo::busybox_layout;
use gantry_tests::image;
use gantry_tests::release::{publish, v020, v021_no_runtime};
use gantry_updater::fetch::{Fetcher, Url};
use gantry_updater::fleet::FailureBudget;
use gantry_updater::rollout::{place, Rollout, Wave};

const NODES: u32 = 3;
const PORT: u16 = 8080;

fn base_config() -> String {
    format!(
        r#"[containers.web]
image = "10.0.2.100:5000/fleet/web:1"
command = ["/bin/busybox", "sh", "-c", "busybox mkdir -p /tmp/www; echo up > /tmp/www/index.html; exec busybox httpd -f -p {PORT} -h /tmp/www"]
required = true
stop_grace_secs = 1
health = {{ http = "http://127.0.0.1:{PORT}/", interval_secs = 2, retries = 2 }}

[update]
server = "http://10.0.2.101/channel.json"
insecure = true
check_interval_secs = 10
health_timeout_secs = 120
tries = 1
lease = "etcd"

[update.etcd]
endpoint = "http://10.0.2.102:2379"
group = "workers"
slots = 1
ttl_secs = 900
"#
    )
}

#[test]
fn qemu_a_rolling_update_reboots_one_node_at_a_time_through_the_etcd_lease() {
    // Built first: a cluster waiting on a build would only burn its deadlines.
    let next = v020();
    let broken = v021_no_runtime();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("fleet");
    let layout = busybox_layout(
        &work.path().join("web-layout"),
        &[],
        &["/bin/busybox", "true"],
        "1",
    );
    let spec = ClusterSpec {
        name: "fleet".into(),
        nodes: NODES,
        image: image().qcow2_image.clone(),
        dir: dir.clone(),
        base_config: Some(base_config()),
        node_configs: BTreeMap::new(),
        memory_mib: 512,
        cpus: 1,
        forward_ports: vec![PORT],
        services: true,
        fast: false,
    };
    let mut running =
        Running(Cluster::up(&spec, Duration::from_secs(600)).unwrap_or_else(|e| panic!("{e}")));
    let cluster = &mut running.0;
    let registry = cluster
        .state()
        .service("registry")
        .unwrap()
        .host_url
        .clone();
    push(&layout, &registry, "fleet/web:1");
    let mut consoles: Vec<Console> = (1..=NODES).map(|i| Console::of(cluster, i)).collect();
    for c in consoles.iter_mut() {
        c.wait(&["name=web", "health=Healthy"], Duration::from_secs(400));
    }

    let www = cluster.state().dir.join("services/channel/www");
    publish(&www, next, 2, |_| ());
    let started = Instant::now();
    for (i, c) in consoles.iter_mut().enumerate() {
        let line = c.wait(&["slot marked good", "0.2.0"], Duration::from_secs(1500));
        eprintln!(
            "node {} good after {:.0} s: {line}",
            i + 1,
            started.elapsed().as_secs_f64()
        );
    }
    for n in cluster.status() {
        assert_eq!(n.version.as_deref(), Some("0.2.0"), "{n:?}");
        assert_eq!(n.slot.as_deref(), Some("B"), "{n:?}");
    }

    // The fleet's records, revision by revision.
    let etcd = gantry_updater::etcd::Etcd {
        endpoint: Url::parse(&cluster.state().service("etcd").unwrap().host_url).unwrap(),
        fetcher: Fetcher::default(),
    };
    let prefix = "/gantry/releases/0.2.0/nodes/";
    // The settle thread records `good`, then gives the lease back: wait for all three.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let good = etcd
            .range_prefix(prefix)
            .unwrap()
            .iter()
            .filter(|kv| kv.value.contains("\"good\""))
            .count();
        if good == NODES as usize {
            break;
        }
        assert!(Instant::now() < deadline, "only {good} nodes recorded good");
        std::thread::sleep(Duration::from_secs(1));
    }
    let now = etcd.revision().unwrap();
    let mut ever_rebooting = std::collections::BTreeSet::new();
    for rev in 1..=now {
        let at = etcd.range_prefix_at(prefix, Some(rev)).unwrap();
        let rebooting: Vec<&str> = at
            .iter()
            .filter(|kv| kv.value.contains("\"rebooting\""))
            .map(|kv| kv.key.as_str())
            .collect();
        assert!(
            rebooting.len() <= 1,
            "revision {rev}: {rebooting:?} rebooting at once"
        );
        ever_rebooting.extend(rebooting.iter().map(|k| k.to_string()));
    }
    assert_eq!(
        ever_rebooting.len(),
        NODES as usize,
        "each node was recorded rebooting: {ever_rebooting:?}"
    );
    // Every lease is given back (right after the record: wait for the last one).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let holders = gantry_updater::etcd_lease::holders(&etcd, "workers").unwrap();
        if holders.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "leases not given back: {holders:?}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }

    // A bad release (0.2.1 lost its container runtime: the required container never
    // starts) with a failure budget of one rollback. Its first wave holds exactly one node
    // (the places are fixed: the machine ids derive from the cluster's name); that node
    // installs it, fails its health gate and rolls back. Then a wider document opens the
    // release to all: the other two read the spent budget and halt, and stay on 0.2.0.
    let ids: Vec<(u32, String)> = cluster
        .status()
        .iter()
        .map(|n| (n.index, n.machine_id.clone()))
        .collect();
    let mut places: Vec<(f64, u32)> = ids.iter().map(|(i, id)| (place(id, "0.2.1"), *i)).collect();
    places.sort_by(|a, b| a.0.total_cmp(&b.0));
    let first = places[0].1;
    let percent = places[0].0.floor() as u8 + 1;
    assert!(
        f64::from(percent) <= places[1].0,
        "the first wave cannot hold one node alone: {places:?}"
    );
    let now = gantry_updater::policy::unix_secs(std::time::SystemTime::now());
    let budget = Some(FailureBudget {
        rollbacks: Some(1),
        percent: None,
    });
    publish(&www, broken, 2, |c| {
        c.rollout = Some(Rollout {
            start: now - 10,
            waves: vec![Wave {
                after_secs: 0,
                percent,
            }],
        });
        c.failure_budget = budget;
    });
    let victim = &mut consoles[first as usize - 1];
    victim.wait(&["rolled back", "0.2.1"], Duration::from_secs(900));
    let deadline = Instant::now() + Duration::from_secs(300);
    let victim_id = &ids[first as usize - 1].1;
    loop {
        let recorded = etcd
            .range_prefix("/gantry/releases/0.2.1/nodes/")
            .unwrap()
            .iter()
            .any(|kv| kv.key.ends_with(victim_id.as_str()) && kv.value.contains("rolled_back"));
        if recorded {
            break;
        }
        assert!(Instant::now() < deadline, "the rollback was never recorded");
        std::thread::sleep(Duration::from_secs(1));
    }
    // Serials are seconds: the wider document must come a second later at least.
    std::thread::sleep(Duration::from_secs(2));
    publish(&www, broken, 2, |c| {
        c.rollout = Some(Rollout {
            start: now - 10,
            waves: vec![Wave {
                after_secs: 0,
                percent: 100,
            }],
        });
        c.failure_budget = budget;
    });
    for (i, c) in consoles.iter_mut().enumerate() {
        if i as u32 + 1 != first {
            c.wait(&["release halted", "0.2.1"], Duration::from_secs(300));
        }
    }
    let records = etcd.range_prefix("/gantry/releases/0.2.1/nodes/").unwrap();
    let halted = records
        .iter()
        .filter(|kv| kv.value.contains("\"halted\""))
        .count();
    assert_eq!(halted, NODES as usize - 1, "{records:?}");
    for n in cluster.status() {
        assert_eq!(n.version.as_deref(), Some("0.2.0"), "{n:?}");
        assert_eq!(n.state, "running", "{n:?}");
    }
}
