//! Pull benchmark: the same generated multi-layer image (about 40 MB uncompressed, 5
//! layers) pulled from a local docker-registry, each run into a fresh destination, five
//! times (`GANTRY_BENCH_RUNS`), by
//!
//! - `gantry image pull`: download, verify, decompress, check diff_ids, unpack, fsync;
//! - `skopeo copy docker://… oci:…`: download and verify, each blob fsynced (as strace
//!   shows), no unpacking: durable like Gantry, but it writes the compressed blobs (about
//!   half the bytes here) where Gantry writes the unpacked files;
//! - `skopeo copy` then `umoci unpack`: the same work as Gantry with the usual tools.
//!
//! Prints the medians and the ratios. Run: `cargo bench -p gantry-runtime --bench pull`
//! (root, docker-registry, skopeo, umoci).

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let reg = TestRegistry::plain();
    let layout = tempfile::tempdir().expect("layout");
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let words = b"container host image layer registry manifest digest ".repeat(90_000);
    let layers: Vec<Vec<u8>> = (0..5)
        .map(|i| {
            let random = noise(&mut seed, 4 << 20);
            let (a, b) = (
                format!("opt/l{i}/random.bin"),
                format!("opt/l{i}/words.txt"),
            );
            layer_tar(&[
                Entry::Dir("opt"),
                Entry::File(&a, &random, 0o644),
                Entry::File(&b, &words[..4 << 20], 0o644),
            ])
        })
        .collect();
    let total: usize = layers.iter().map(Vec::len).sum();
    let d = amd64_image(layout.path(), &layers, Comp::Gzip);
    finish_layout(layout.path(), vec![("bench", d)]);
    reg.push(layout.path(), "bench", "bench/img", &[]);
    let reference = format!("{}/bench/img:bench", reg.host);
    if let Ok(secs) = std::env::var("GANTRY_BENCH_HOLD") {
        // Keep the registry up for profiling by hand.
        println!("registry serving {reference} for {secs} s");
        std::thread::sleep(Duration::from_secs(secs.parse().unwrap_or(600)));
        return;
    }

    let runs: usize = std::env::var("GANTRY_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let mut gantry_times = Vec::new();
    let mut skopeo_times = Vec::new();
    let mut umoci_times = Vec::new();
    for _ in 0..runs {
        let store = tempfile::tempdir().expect("store");
        let start = Instant::now();
        let (ok, _, err) = gantry(
            &[
                "--root",
                store.path().to_str().expect("utf-8"),
                "image",
                "pull",
                &reference,
            ],
            None,
        );
        gantry_times.push(start.elapsed());
        assert!(ok, "gantry pull failed: {err}");

        let dest = tempfile::tempdir().expect("dest");
        let start = Instant::now();
        let out = Command::new("skopeo")
            .args(["copy", "--quiet", "--src-tls-verify=false"])
            .arg(format!("docker://{reference}"))
            .arg(format!("oci:{}:bench", dest.path().join("oci").display()))
            .output()
            .expect("skopeo");
        skopeo_times.push(start.elapsed());
        assert!(
            out.status.success(),
            "skopeo failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:bench", dest.path().join("oci").display()))
            .arg(dest.path().join("bundle"))
            .output()
            .expect("umoci");
        umoci_times.push(start.elapsed());
        assert!(
            out.status.success(),
            "umoci failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    println!("gantry runs: {gantry_times:?}");
    println!("skopeo runs: {skopeo_times:?}");
    println!("skopeo+umoci runs: {umoci_times:?}");
    let (g, s, u) = (
        median(gantry_times),
        median(skopeo_times),
        median(umoci_times),
    );
    println!("image: 5 layers, {:.1} MB uncompressed", total as f64 / 1e6);
    println!(
        "gantry image pull (download+verify+unpack): {:.3} s",
        g.as_secs_f64()
    );
    println!(
        "skopeo copy docker:// oci: (download+verify+fsync): {:.3} s",
        s.as_secs_f64()
    );
    println!(
        "skopeo copy + umoci unpack (download+verify+unpack): {:.3} s",
        u.as_secs_f64()
    );
    println!(
        "ratio skopeo/gantry: {:.2} (above 1 means gantry is faster)",
        s.as_secs_f64() / g.as_secs_f64()
    );
    println!(
        "ratio skopeo+umoci/gantry: {:.2}",
        u.as_secs_f64() / g.as_secs_f64()
    );
}
