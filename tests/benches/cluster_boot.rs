//! Local cluster boot: QEMU start → every node's ready line for N nodes booted at once
//! (`cluster up`), against the same N nodes booted one after the other as one-node
//! clusters, through OVMF and GRUB and with `--fast` (direct kernel), all in the same run;
//! and each node's QEMU memory once it is ready (RSS and PSS from `smaps_rollup`). No
//! fleet services: they start in well under a second and would only add noise. Prints
//! figures and ratios; asserts nothing about time.
//!
//! `cargo bench -p gantry-tests --bench cluster_boot [-- N...]` (default 1 3 5).

use std::path::Path;
use std::time::{Duration, Instant};

use gantry_qemu::cluster::{Cluster, ClusterSpec};
use gantry_tests::image;

const TIMEOUT: Duration = Duration::from_secs(900);

struct Up {
    secs: f64,
    /// Per node: (RSS, PSS) in MiB.
    memory: Vec<(u64, u64)>,
}

fn up(dir: &Path, name: &str, nodes: u32, fast: bool) -> Up {
    let spec = ClusterSpec {
        name: name.into(),
        nodes,
        image: image().qcow2_image.clone(),
        dir: dir.join(name),
        base_config: None,
        node_configs: Default::default(),
        memory_mib: 512,
        cpus: 1,
        forward_ports: Vec::new(),
        services: false,
        fast,
    };
    let started = Instant::now();
    let mut c = Cluster::up(&spec, TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    let secs = started.elapsed().as_secs_f64();
    let memory = c
        .state()
        .nodes
        .iter()
        .filter_map(|n| n.pid)
        .map(memory_mib)
        .collect();
    c.down();
    let _ = std::fs::remove_dir_all(dir.join(name));
    Up { secs, memory }
}

/// A process's (RSS, PSS) in MiB.
fn memory_mib(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let kib = |key: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(key)?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0u64)
    };
    (kib("Rss:") >> 10, kib("Pss:") >> 10)
}

fn main() {
    let counts: Vec<u32> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let counts = if counts.is_empty() {
        vec![1, 3, 5]
    } else {
        counts
    };
    let work = tempfile::tempdir().expect("temporary directory");
    let _ = image();
    println!("cluster boot, QEMU TCG, 512 MiB and 1 vCPU per node, one run each:");
    let mut full_by_n = Vec::new();
    for &n in &counts {
        for fast in [false, true] {
            let mode = if fast { "--fast" } else { "full  " };
            let together = up(work.path(), "bench", n, fast);
            let one_by_one: f64 = (0..n)
                .map(|_| up(work.path(), "single", 1, fast).secs)
                .sum();
            let rss: Vec<u64> = together.memory.iter().map(|m| m.0).collect();
            let pss: Vec<u64> = together.memory.iter().map(|m| m.1).collect();
            println!(
                "  N={n} {mode}: all ready in {:6.1} s; {n} single-node boots one after the \
                 other {:6.1} s; ratio {:.2}; QEMU RSS per node {} MiB (max), PSS {} MiB (max)",
                together.secs,
                one_by_one,
                together.secs / one_by_one.max(0.001),
                rss.iter().max().copied().unwrap_or(0),
                pss.iter().max().copied().unwrap_or(0),
            );
            if fast {
                if let Some(&(_, full)) = full_by_n.iter().find(|(m, _)| *m == n) {
                    println!(
                        "  N={n} --fast / full (all ready): ratio {:.2}",
                        together.secs / f64::max(full, 0.001)
                    );
                }
            } else {
                full_by_n.push((n, together.secs));
            }
        }
    }
}
