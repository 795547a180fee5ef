//! A rolling update of a local cluster, end to end (needs what `cluster.rs` needs; CI
//! installs it with `.ci/deps`): three nodes running 0.1.0 with a required container,
//! following the cluster's channel server, with `lease = "etcd"` and one reboot slot in
//! the cluster's etcd. Release 0.2.0 is published with all its waves open. Must see: every
//! node ends on 0.2.0 in slot B, marked good, recorded `good` in the fleet store; and, from
//! etcd's history (every revision of the fleet's records), never two nodes `rebooting`
//! at once, while each of them was `rebooting` once. Then a bad release with a failure
//! budget of one rollback, its first wave holding one node: that node rolls back, and once
//! the release is opened to all, the others halt it and stay on 0.2.0. Last, 0.3.0 with a
//! first wave of two nodes and a second a day later (the clock is the channel's start
//! time): the third node waits for its wave, at the same place across a reboot; the first
//! node to take the reboot slot is killed (a power cut) while it holds it, and the other
//! node of the wave reboots once the dead holder's 60 s lease expired, with the dead
//! node still down; started again, the killed node ends marked good or rolled back. Then
//! the start moves back a day, the second wave opens and the third node installs.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use gantry_qemu::cluster::{Cluster, ClusterSpec};
use gantry_tests::cluster::{push, Console, Running};
use gantry_tests::demo::busybox_layout;
use gantry_tests::image;
use gantry_tests::release::{publish, v020, v021_no_runtime, v030};
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
ttl_secs = 60
"#
    )
}

#[test]
fn qemu_a_rolling_update_reboots_one_node_at_a_time_through_the_etcd_lease() {
    // Built first: a cluster waiting on a build would only burn its deadlines.
    let next = v020();
    let broken = v021_no_runtime();
    let third = v030();
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

    // 0.3.0: waves, and a holder that dies.
    let mut places: Vec<(f64, u32)> = ids.iter().map(|(i, id)| (place(id, "0.3.0"), *i)).collect();
    places.sort_by(|a, b| a.0.total_cmp(&b.0));
    let percent = places[1].0.floor() as u8 + 1;
    assert!(
        f64::from(percent) <= places[2].0,
        "the first wave cannot hold two nodes alone: {places:?}"
    );
    let outside = places[2].1;
    let in_wave = [places[0].1, places[1].1];
    let now = gantry_updater::policy::unix_secs(std::time::SystemTime::now());
    let start = now - 10;
    let waves = |start| Rollout {
        start,
        waves: vec![
            Wave {
                after_secs: 0,
                percent,
            },
            Wave {
                after_secs: 86_400,
                percent: 100,
            },
        ],
    };
    std::thread::sleep(Duration::from_secs(2)); // a newer serial than 0.2.1's last
    publish(&www, third, 3, |c| c.rollout = Some(waves(start)));
    let expected_place = format!(
        "place=\"{:.3}\"",
        place(&ids[outside as usize - 1].1, "0.3.0")
    );
    let opens_at = format!("opens_at={}", start + 86_400);
    let waiting = ["waiting for this machine's wave", "0.3.0"];
    let line = consoles[outside as usize - 1].wait(&waiting, Duration::from_secs(300));
    assert!(
        line.contains(&expected_place) && line.contains(&opens_at),
        "node {outside}: {line}"
    );

    // The first of the wave to take the slot is cut off while it holds it.
    let holder_of = |id: &str| ids.iter().find(|(_, m)| m == id).map(|(i, _)| *i);
    let deadline = Instant::now() + Duration::from_secs(900);
    let dead = loop {
        let holders = gantry_updater::etcd_lease::holders(&etcd, "workers").unwrap();
        if let Some(h) = holders.first() {
            break holder_of(&h.holder).unwrap_or_else(|| panic!("unknown holder {h:?}"));
        }
        assert!(
            Instant::now() < deadline,
            "no node of the wave took the slot"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(in_wave.contains(&dead), "node {dead} is outside the wave");
    cluster.kill(dead).unwrap();
    let killed = Instant::now();
    let dead_id = ids[dead as usize - 1].1.clone();
    let holders = gantry_updater::etcd_lease::holders(&etcd, "workers").unwrap();
    assert!(
        holders.iter().any(|h| h.holder == dead_id),
        "node {dead}'s slot is gone before its lease could expire: {holders:?}"
    );
    let next = in_wave[usize::from(in_wave[0] == dead)];

    // Meanwhile the node outside the wave reboots: its place for 0.3.0 is the same.
    cluster.stop(outside, Duration::from_secs(120)).unwrap();
    cluster.start(outside, Duration::from_secs(300)).unwrap();
    let mut restarted = Console::of(cluster, outside);
    let line = restarted.wait(&waiting, Duration::from_secs(300));
    assert!(
        line.contains(&expected_place),
        "node {outside} after its reboot: {line}"
    );

    let line = consoles[next as usize - 1].wait(
        &["installed; rebooting into it", "0.3.0"],
        Duration::from_secs(600),
    );
    eprintln!(
        "node {next} took the slot {:.0} s after node {dead} died holding it: {line}",
        killed.elapsed().as_secs_f64()
    );
    let holders = gantry_updater::etcd_lease::holders(&etcd, "workers").unwrap();
    assert!(
        !holders.iter().any(|h| h.holder == dead_id),
        "node {dead}'s dead lease still holds: {holders:?}"
    );
    assert!(
        cluster
            .status()
            .iter()
            .any(|n| n.index == dead && n.state == "stopped"),
        "node {dead} must still be down"
    );
    consoles[next as usize - 1].wait(&["slot marked good", "0.3.0"], Duration::from_secs(600));

    // The dead node comes back: it finishes the update, or rolls back to 0.2.0.
    cluster.start(dead, Duration::from_secs(600)).unwrap();
    let mut back = Console::of(cluster, dead);
    let (finished, line) = back.wait_any(
        &[&["slot marked good", "0.3.0"], &["rolled back", "0.3.0"]],
        Duration::from_secs(600),
    );
    eprintln!("node {dead} after its power cut: {line}");

    // The second wave opens (the start a day back): the outside node installs.
    std::thread::sleep(Duration::from_secs(2));
    publish(&www, third, 3, |c| {
        c.rollout = Some(waves(now - 86_400 - 10))
    });
    restarted.wait(&["slot marked good", "0.3.0"], Duration::from_secs(900));
    for n in cluster.status() {
        let want = if n.index == dead && finished == 1 {
            "0.2.0"
        } else {
            "0.3.0"
        };
        assert_eq!(n.version.as_deref(), Some(want), "{n:?}");
        assert_eq!(n.state, "running", "{n:?}");
        assert_eq!(n.containers_healthy, n.containers_total, "{n:?}");
    }
}
