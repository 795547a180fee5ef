//! The etcd reboot semaphore against a real etcd (Debian's `etcd-server`) on loopback:
//! concurrent takers never hold more than the slots, a dead holder's slot comes back when
//! its lease expires, a holder asking again keeps its one slot. Needs `etcd` on the PATH
//! (`.ci/deps` installs it); no root.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gantry_updater::etcd_lease::EtcdLease;
use gantry_updater::fetch::{Fetcher, Url};
use gantry_updater::policy::RebootLease;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// An etcd of its own in a temporary directory; killed on drop.
struct Etcd {
    child: Child,
    url: Url,
    _dir: tempfile::TempDir,
}

impl Etcd {
    fn start() -> Etcd {
        let dir = tempfile::tempdir().expect("tmp");
        let (client, peer) = (free_port(), free_port());
        let client = format!("http://127.0.0.1:{client}");
        let peer = format!("http://127.0.0.1:{peer}");
        let child = Command::new("etcd")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--name", "t", "--log-level", "warn"])
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .arg("--initial-cluster")
            .arg(format!("t={peer}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd (apt-get install etcd-server)");
        let url = Url::parse(&client).expect("url");
        let etcd = Etcd {
            child,
            url,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Fetcher::default()
            .fetch_small(&etcd.url.join("/version").expect("url"), 4096)
            .is_err()
        {
            assert!(Instant::now() < deadline, "etcd did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
        etcd
    }

    fn lease(&self, holder: &str, slots: u32, ttl_secs: u64) -> EtcdLease {
        EtcdLease {
            endpoint: self.url.clone(),
            group: "workers".into(),
            slots,
            ttl_secs,
            holder: holder.into(),
            fetcher: Fetcher::default(),
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Eight takers for two slots, each holding for a moment. Must see: every taker gets a
/// slot in the end, and never more than two hold at once (counted by the takers, and by
/// the holders etcd lists whenever a taker holds).
#[test]
fn concurrent_takers_never_hold_more_than_the_slots() {
    let etcd = Arc::new(Etcd::start());
    let inside = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let takers: Vec<_> = (0..8)
        .map(|i| {
            let (etcd, inside, most) = (etcd.clone(), inside.clone(), most.clone());
            std::thread::spawn(move || {
                let mut lease = etcd.lease(&format!("{i:032x}"), 2, 60);
                let deadline = Instant::now() + Duration::from_secs(60);
                while !lease.acquire("2.0.0").expect("acquire") {
                    assert!(Instant::now() < deadline, "taker {i} never got a slot");
                    std::thread::sleep(Duration::from_millis(20));
                }
                let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(n, Ordering::SeqCst);
                let listed = lease.holders().expect("holders");
                assert!(
                    listed
                        .iter()
                        .take(2)
                        .any(|h| h.holder == format!("{i:032x}")),
                    "taker {i} holds but etcd does not list it in the first two: {listed:?}"
                );
                std::thread::sleep(Duration::from_millis(100));
                inside.fetch_sub(1, Ordering::SeqCst);
                lease.release("2.0.0").expect("release");
            })
        })
        .collect();
    for t in takers {
        t.join().expect("a taker failed");
    }
    assert_eq!(
        most.load(Ordering::SeqCst),
        2,
        "at most two, and both slots used"
    );
    assert!(etcd
        .lease("x", 2, 60)
        .holders()
        .expect("holders")
        .is_empty());
}

/// A holder that never releases (a machine that died mid-update) with a 2 s lease. Must
/// see: another machine is refused while it holds, and gets the slot once the lease
/// expired, with nobody's release.
#[test]
fn a_dead_holders_slot_comes_back_when_its_lease_expires() {
    let etcd = Etcd::start();
    let mut dead = etcd.lease("dead", 1, 2);
    assert!(dead.acquire("2.0.0").expect("acquire"));
    let mut next = etcd.lease("next", 1, 60);
    assert!(!next.acquire("2.0.0").expect("acquire"), "the slot is held");
    let started = Instant::now();
    while !next.acquire("2.0.0").expect("acquire") {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the dead holder's lease never expired"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "granted before the lease could expire"
    );
    let holders = next.holders().expect("holders");
    assert_eq!(holders.len(), 1, "{holders:?}");
    assert_eq!(holders[0].holder, "next");
    assert!(
        holders[0].value.contains("\"version\":\"2.0.0\""),
        "{holders:?}"
    );
}

/// A holder on trial renews its 2 s lease (as PID 1 does every third of the TTL) for
/// longer than the TTL. Must see: it still holds and another machine is refused; once it
/// stops renewing, the lease expires and `renew` says it holds nothing.
#[test]
fn a_renewed_lease_outlives_its_ttl_and_expires_once_renewals_stop() {
    let etcd = Etcd::start();
    let mut holder = etcd.lease("holder", 1, 2);
    assert!(!holder.renew().expect("renew"), "nothing held yet");
    assert!(holder.acquire("2.0.0").expect("acquire"));
    let every = holder.renew_every().expect("an etcd lease expires");
    assert!(every < Duration::from_secs(2), "{every:?}");
    let mut other = etcd.lease("other", 1, 60);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        assert!(
            holder.renew().expect("renew"),
            "lost after {:?}",
            started.elapsed()
        );
        assert!(
            !other.acquire("2.0.0").expect("acquire"),
            "the slot is held"
        );
        std::thread::sleep(every);
    }
    let stopped = Instant::now();
    while holder
        .holders()
        .expect("holders")
        .iter()
        .any(|h| h.holder == "holder")
    {
        assert!(
            stopped.elapsed() < Duration::from_secs(20),
            "the lease never expired"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!holder.renew().expect("renew"), "expired: nothing to renew");
    assert!(other.acquire("2.0.0").expect("acquire"));
}

/// A holder asking again (after its reboot, say) is told yes and still holds one slot;
/// after its release the slot is free.
#[test]
fn a_holder_asking_again_keeps_its_one_slot() {
    let etcd = Etcd::start();
    let mut a = etcd.lease("a", 1, 60);
    assert!(a.acquire("2.0.0").expect("acquire"));
    assert!(a.acquire("2.0.0").expect("again"));
    assert_eq!(a.holders().expect("holders").len(), 1);
    let mut b = etcd.lease("b", 1, 60);
    assert!(!b.acquire("2.0.0").expect("acquire"));
    a.release("2.0.0").expect("release");
    assert!(b.acquire("2.0.0").expect("acquire"));
}

/// A late release of the last update (the settle thread retrying while etcd was away) does
/// not free the slot taken since for the next one; the release for that one does.
#[test]
fn a_release_for_an_older_version_keeps_the_slot_of_a_newer_one() {
    let etcd = Etcd::start();
    let mut a = etcd.lease("a", 1, 60);
    assert!(a.acquire("3.0.0").expect("acquire"));
    a.release("2.0.0").expect("late release");
    let mut b = etcd.lease("b", 1, 60);
    assert!(
        !b.acquire("3.0.0").expect("acquire"),
        "a still holds for 3.0.0"
    );
    a.release("3.0.0").expect("release");
    assert!(b.acquire("3.0.0").expect("acquire"));
}

/// An error inside a 200 reply to a keep-alive (etcd without a leader) is an error, not
/// "the lease is gone", so renewals go on.
#[test]
fn a_keep_alive_error_in_a_200_reply_is_an_error() {
    let url = serve_once(
        br#"{"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader"}}"#.to_vec(),
    );
    let etcd = gantry_updater::etcd::Etcd {
        endpoint: Url::parse(url.trim_end_matches("/channel.json")).expect("url"),
        fetcher: Fetcher::default(),
    };
    let e = etcd.keep_alive(42).expect_err("no result");
    assert!(e.contains("no leader") && e.contains("lease 42"), "{e}");
}

/// An unreachable etcd is an error naming the endpoint, not a grant.
#[test]
fn an_unreachable_etcd_is_an_error_naming_it() {
    let port = free_port();
    let mut l = EtcdLease {
        endpoint: Url::parse(&format!("http://127.0.0.1:{port}")).expect("url"),
        group: "g".into(),
        slots: 1,
        ttl_secs: 60,
        holder: "h".into(),
        fetcher: Fetcher::default(),
    };
    let e = l.acquire("2.0.0").expect_err("no etcd");
    assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
}

/// The fleet's record of a release in the same etcd: outcomes written and read back, the
/// failure budget judged from them, a pause and its resume, and `gantry-update fleet
/// status` showing it all. Must see: each machine's last state, the budget spent by one
/// rollback, the pause's reason, the JSON the operator's command prints.
#[test]
fn the_fleet_record_halts_a_release_and_the_operator_sees_it() {
    use gantry_updater::fleet::{FailureBudget, Fleet, Outcome, State};
    let etcd = Etcd::start();
    let fleet = Fleet {
        etcd: gantry_updater::etcd::Etcd {
            endpoint: etcd.url.clone(),
            fetcher: Fetcher::default(),
        },
    };
    let at = |state, reason: Option<&str>| Outcome {
        state,
        reason: reason.map(str::to_owned),
        at: 1,
    };
    fleet
        .report("2.0.0", "aaaa", &at(State::Installed, None))
        .expect("report");
    fleet
        .report(
            "2.0.0",
            "aaaa",
            &at(State::RolledBack, Some("health gate failed")),
        )
        .expect("report");
    fleet
        .report("2.0.0", "bbbb", &at(State::Good, None))
        .expect("report");
    fleet
        .report("1.0.0", "cccc", &at(State::Good, None))
        .expect("report");
    let outcomes = fleet.outcomes("2.0.0").expect("outcomes");
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
    assert_eq!(
        outcomes
            .iter()
            .find(|(id, _)| id == "aaaa")
            .map(|(_, o)| o.state),
        Some(State::RolledBack)
    );
    let budget = FailureBudget {
        rollbacks: Some(1),
        percent: None,
    };
    assert!(budget.spent(&outcomes).is_some());
    assert!(budget
        .spent(&fleet.outcomes("1.0.0").expect("outcomes"))
        .is_none());
    assert_eq!(fleet.releases().expect("releases"), ["1.0.0", "2.0.0"]);

    assert_eq!(fleet.paused("2.0.0").expect("paused"), None);
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_gantry-update"))
            .args(["fleet", "--etcd", etcd.url.as_str()])
            .args(args)
            .output()
            .expect("gantry-update");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    cli(&["pause", "2.0.0", "--reason", "ops: bad disk driver"]);
    assert_eq!(
        fleet.paused("2.0.0").expect("paused").as_deref(),
        Some("ops: bad disk driver")
    );
    let mut lease = etcd.lease("dddd", 1, 60);
    lease.group = "default".into();
    assert!(lease.acquire("2.0.0").expect("acquire"));
    let status: serde_json::Value =
        serde_json::from_str(&cli(&["status", "--release", "2.0.0", "--json"])).expect("json");
    let r = &status["releases"][0];
    assert_eq!(r["release"], "2.0.0");
    assert_eq!(r["machines"]["rolled_back"], serde_json::json!(["aaaa"]));
    assert_eq!(r["machines"]["good"], serde_json::json!(["bbbb"]));
    assert_eq!(r["rolled_back"][0]["reason"], "health gate failed");
    assert_eq!(r["paused"], "ops: bad disk driver");
    assert_eq!(status["reboot_slots_in_use"][0]["machine"], "dddd");
    cli(&["resume", "2.0.0"]);
    assert_eq!(fleet.paused("2.0.0").expect("paused"), None);
    // With the channel document the fleet follows: the release's open wave, its next
    // wave and its budget, judged from the records (spent by aaaa's rollback).
    let dir = tempfile::tempdir().expect("tmp");
    let key = gantry_updater::keys::SigningKey::from_pkcs8(
        &gantry_updater::keys::SigningKey::generate_pkcs8().expect("key"),
        &dir.path().join("k.key"),
    )
    .expect("key");
    let pubkey = dir.path().join("k.pub");
    std::fs::write(&pubkey, key.public_key().to_line()).expect("k.pub");
    let now = gantry_updater::policy::unix_secs(std::time::SystemTime::now());
    let start = now - 100;
    let document = gantry_updater::channel::Channel {
        format: gantry_updater::channel::FORMAT,
        channel: "stable".into(),
        serial: now,
        expires: now + 3_600,
        os_version: "2.0.0".into(),
        rollback_index: 2,
        arch: "x86_64".into(),
        board: "generic".into(),
        bundle: gantry_updater::channel::BundleRef {
            url: "b.bundle".into(),
            size: 1,
            sha256: "ab".repeat(32),
        },
        rollout: Some(gantry_updater::rollout::Rollout {
            start,
            waves: vec![
                gantry_updater::rollout::Wave {
                    after_secs: 0,
                    percent: 10,
                },
                gantry_updater::rollout::Wave {
                    after_secs: 86_400,
                    percent: 100,
                },
            ],
        }),
        failure_budget: Some(budget),
    }
    .sign(&[&key])
    .expect("sign");
    let url = serve_once(document);
    let status: serde_json::Value = serde_json::from_str(&cli(&[
        "status",
        "--release",
        "2.0.0",
        "--channel",
        &url,
        "--key",
        pubkey.to_str().expect("utf-8"),
        "--json",
    ]))
    .expect("json");
    let c = &status["releases"][0]["channel"];
    assert_eq!(c["open_percent"], 10, "{status}");
    assert_eq!(c["expired"], false, "{status}");
    assert_eq!(c["next_wave"]["percent"], 100, "{status}");
    assert_eq!(c["next_wave"]["at"], start + 86_400, "{status}");
    assert_eq!(
        c["budget_spent"], "1 machines rolled back; the failure budget is 1",
        "{status}"
    );
    assert_eq!(status["releases"][0]["halted"], c["budget_spent"]);

    let text = cli(&["status"]);
    assert!(
        text.contains("release 1.0.0")
            && text.contains("release 2.0.0")
            && text.contains("paused: no"),
        "{text}"
    );
}

/// Serves `body` to one HTTP request on loopback; its URL.
fn serve_once(body: Vec<u8>) -> String {
    use std::io::{Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!(
        "http://{}/channel.json",
        listener.local_addr().expect("addr")
    );
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        let mut request = [0u8; 4096];
        let _ = conn.read(&mut request);
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = conn.write_all(head.as_bytes());
        let _ = conn.write_all(&body);
    });
    url
}
