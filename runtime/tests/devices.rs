//! `linux.devices`: the nodes a bundle lists, made in the container's `/dev` and allowed by
//! the device program, checked from inside with `gantry-checker` (type, numbers, mode,
//! owner, and whether an open works under the cgroup's device rules). Needs root (CI runs
//! as root) and runc (for `runc spec`); the device program needs cgroup v2, which this
//! hybrid host has only as a bare `cgroup2` mount (`--cgroup-root`).

mod common;

use serde_json::{json, Value};

use common::bundle::{require_root, Cgroup2, OURS};

fn node(path: &str, kind: &str, major: i64, minor: i64, mode: u32, gid: u32) -> Value {
    json!({"path": path, "type": kind, "major": major, "minor": minor,
           "fileMode": mode, "uid": 0, "gid": gid})
}

/// `run` of a checker bundle with these nodes under `--cgroup-root`; returns (exit ok,
/// the report or the error).
fn run(devices: Value) -> (bool, Value, String) {
    // Every cgroup2 mount is the same hierarchy: one id per run, the tests run at once.
    static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let id = format!(
        "dev-{}-{}",
        std::process::id(),
        RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let dir = tempfile::tempdir().expect("tmp");
    let cg = Cgroup2::mount(dir.path());
    let b = common::bundle::bundle(dir.path(), |c| {
        c["linux"]["devices"] = devices;
    });
    let state = dir.path().join("state");
    let cgroup_root = cg.0.to_str().expect("utf-8").to_owned();
    let (ok, out, err) = common::bundle::runtime(
        OURS,
        &state,
        &[
            "--cgroup-root",
            &cgroup_root,
            "run",
            "--bundle",
            b.to_str().expect("utf-8"),
            &id,
        ],
    );
    let report = serde_json::from_str(out.trim()).unwrap_or(Value::Null);
    (ok, report, err)
}

/// Must see, from inside: a char node made with the mode and group asked for; the tun
/// device (10:200) in a directory `/dev` did not have, openable although `runc spec`'s
/// rules deny every device and no default allows it (the node's own allow rule does); a
/// block node with its numbers; a FIFO; and a node listed that is already there as that
/// device (`/dev/null`) accepted as it is.
#[test]
fn listed_nodes_are_made_in_dev_and_allowed_by_the_device_program_as_root() {
    require_root();
    let (ok, report, err) = run(json!([
        node("/dev/zero2", "c", 1, 5, 0o640, 5),
        node("/dev/net/tun", "c", 10, 200, 0o600, 0),
        node("/dev/blk", "b", 7, 200, 0o660, 6),
        {"path": "/dev/fifo", "type": "p", "fileMode": 0o620},
        node("/dev/null", "c", 1, 3, 0o666, 0),
    ]));
    assert!(ok, "run failed: {err}");
    let nodes = &report["dev_nodes"];
    let zero2 = &nodes["/dev/zero2"];
    assert_eq!(
        (
            zero2["type"].as_str(),
            zero2["major"].as_u64(),
            zero2["minor"].as_u64()
        ),
        (Some("c"), Some(1), Some(5)),
        "{nodes}"
    );
    assert_eq!(zero2["mode"], "0640", "{zero2}");
    assert_eq!(zero2["gid"], 5, "{zero2}");
    assert_eq!(
        zero2["open"], "ok",
        "the device program must allow a listed node: {zero2}"
    );
    // 10:200 is in no default rule: only the node's own allow rule lets it open.
    let tun = &nodes["/dev/net/tun"];
    assert_eq!(
        (
            tun["major"].as_u64(),
            tun["minor"].as_u64(),
            tun["mode"].as_str(),
            tun["open"].as_str()
        ),
        (Some(10), Some(200), Some("0600"), Some("ok")),
        "{nodes}"
    );
    let blk = &nodes["/dev/blk"];
    assert_eq!(
        (
            blk["type"].as_str(),
            blk["major"].as_u64(),
            blk["minor"].as_u64(),
            blk["gid"].as_u64()
        ),
        (Some("b"), Some(7), Some(200), Some(6)),
        "{nodes}"
    );
    let fifo = &nodes["/dev/fifo"];
    assert_eq!(
        (fifo["type"].as_str(), fifo["mode"].as_str()),
        (Some("p"), Some("0620")),
        "{nodes}"
    );
    assert_eq!(nodes["/dev/null"]["open"], "ok", "{nodes}");
}

/// Lists the spec calls wrong, or that would put a node where it cannot work (the root
/// file system is nodev). Must see: each refused, naming the key, the node and why.
#[test]
fn bad_node_lists_are_refused_naming_the_node_as_root() {
    require_root();
    for (devices, want) in [
        (
            json!([node("/dev/null", "c", 1, 5, 0o666, 0)]),
            "linux.devices /dev/null: an entry is already there and it is not this device",
        ),
        (
            json!([node("/etc/zero", "c", 1, 5, 0o666, 0)]),
            "linux.devices[0]: path /etc/zero is not a file under /dev",
        ),
        (
            json!([
                node("/dev/a", "c", 1, 5, 0o666, 0),
                node("/dev/a", "c", 1, 3, 0o666, 0)
            ]),
            "linux.devices[1]: path /dev/a is given twice",
        ),
        (
            json!([node("/dev/../etc/x", "c", 1, 5, 0o666, 0)]),
            "linux.devices[0]: path /dev/../etc/x has a \"..\"",
        ),
        (
            json!([node("/dev/fd/x", "c", 1, 5, 0o666, 0)]),
            "linux.devices /dev/fd/x: its directory is a link or another mount",
        ),
        (
            json!([node("/dev/shm/x", "c", 1, 5, 0o666, 0)]),
            "linux.devices /dev/shm/x: its directory is a link or another mount",
        ),
        (
            json!([{"path": "/dev/all", "type": "a"}]),
            "linux.devices[0]: type \"a\" is a cgroup rule",
        ),
    ] {
        let (ok, _, err) = run(devices.clone());
        assert!(!ok, "{devices} must be refused");
        assert!(err.contains(want), "{devices}: want {want:?} in: {err}");
    }
}
