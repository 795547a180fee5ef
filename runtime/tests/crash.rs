//! Crash safety: `gantry image pull` runs as a child and is killed with SIGKILL at spread-out
//! moments; after each kill the store must load and pass its consistency check, and in the
//! end a pull completes (resuming what the killed ones left). Needs root, docker-registry
//! and skopeo, like tests/pull.rs.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use gantry_runtime::store::Store;

#[test]
fn killing_a_pull_at_any_moment_leaves_a_consistent_store_as_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root; CI runs as root"
    );
    let reg = TestRegistry::plain();
    // Four layers of incompressible data, big enough that a pull takes a while.
    let layout = tempfile::tempdir().expect("layout");
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let blobs: Vec<Vec<u8>> = (0..4).map(|_| noise(&mut seed, 4 << 20)).collect();
    let names: Vec<String> = (0..4).map(|i| format!("data/part-{i}")).collect();
    let layers: Vec<Vec<u8>> = blobs
        .iter()
        .zip(&names)
        .map(|(b, n)| layer_tar(&[Entry::Dir("data"), Entry::File(n, b, 0o644)]))
        .collect();
    let d = amd64_image(layout.path(), &layers, Comp::Gzip);
    finish_layout(layout.path(), vec![("big", d)]);
    reg.push(layout.path(), "big", "test/big", &[]);
    let reference = format!("{}/test/big:big", reg.host);
    let root = tempfile::tempdir().expect("store");
    let root_s = root.path().to_str().expect("utf-8");

    // How long an uninterrupted pull takes here, to spread the kills over it.
    let scratch = tempfile::tempdir().expect("scratch");
    let start = Instant::now();
    let (ok, _, err) = gantry(
        &[
            "--root",
            scratch.path().to_str().expect("utf-8"),
            "image",
            "pull",
            &reference,
        ],
        None,
    );
    assert!(ok, "{err}");
    let full = start.elapsed();

    let mut kills = 0;
    for step in 1..=12u32 {
        let delay = full * step / 14;
        let mut child = Command::new(env!("CARGO_BIN_EXE_gantry"))
            .args(["--root", root_s, "image", "pull", &reference])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn gantry");
        std::thread::sleep(delay.max(Duration::from_millis(5)));
        if child.try_wait().expect("try_wait").is_none() {
            child.kill().expect("SIGKILL");
            kills += 1;
        }
        child.wait().expect("wait");
        let store = Store::open(root.path()).expect("the store opens after a kill");
        let problems = store.check().expect("check runs");
        assert!(
            problems.is_empty(),
            "after a kill at {delay:?}: {problems:?}"
        );
        // Start over now and then, so kills land early in a pull as well as late.
        if step % 4 == 0 {
            let _ = store.prune();
        }
    }
    assert!(
        kills >= 6,
        "only {kills} pulls were still running when killed"
    );

    let (ok, out, err) = gantry(&["--root", root_s, "image", "pull", &reference], None);
    assert!(ok, "{err}");
    assert!(out.contains(&reference));
    let store = Store::open(root.path()).expect("store");
    assert!(store.check().expect("check").is_empty());
    let record = store.image(&reference).expect("record");
    for (l, (b, n)) in record.layers.iter().zip(blobs.iter().zip(&names)) {
        let chain = l.chain_id.parse().expect("chain");
        assert_eq!(
            &std::fs::read(store.layer_dir(&chain).join(n)).expect("file"),
            b
        );
    }
    // Nothing of the killed pulls is left behind once pruned.
    store.prune().expect("prune");
    assert_eq!(
        std::fs::read_dir(root.path().join("tmp"))
            .expect("tmp")
            .count(),
        0
    );
}
