//! The main job's start-up time: from QEMU's start until a container pulled from a
//! registry on loopback serves its page through the published port, against the boot of
//! the trivial busybox-init baseline (`images/baseline-busybox.toml`) measured in the same
//! run. Then the same machine with 128 MiB of guest memory, and more until it works. Prints medians and ratios;
//! asserts nothing about time.
//!
//! `cargo bench -p gantry-tests --bench to_healthy [-- RUNS]` (default 3 runs each).

use std::time::{Duration, Instant};

use gantry_image_build::BuildOptions;
use gantry_qemu::{Vm, VmConfig};
use gantry_testkit::{free_port, TestRegistry};
use gantry_tests::demo::{fetch, push_web_image, vm_config, wait_healthy, web_config};
use gantry_tests::{build_into, image, BOOT_TIMEOUT};

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// QEMU start → healthy, and → page fetched from the host; None if it never got there.
fn gantry_once(cfg: &VmConfig, limit: Duration) -> Option<(u64, u64)> {
    let port = cfg.hostfwd[0].host_port;
    let started = Instant::now();
    let mut vm = Vm::start(cfg).expect("QEMU starts");
    if let Err(e) = wait_healthy(&mut vm, "web", limit) {
        eprintln!("{}", e.lines().rev().take(5).collect::<Vec<_>>().join("\n"));
        return None;
    }
    let healthy = ms(started.elapsed());
    while fetch(&format!("http://127.0.0.1:{port}/")).is_err() {
        if started.elapsed() > Duration::from_secs(400) {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Some((healthy, ms(started.elapsed())))
}

fn main() {
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(3);
    let gantry = image();
    let mut opts = BuildOptions::default_for_workspace();
    opts.definition = opts.definition.with_file_name("baseline-busybox.toml");
    opts.out_dir = opts.out_dir.with_file_name("baseline-busybox");
    let baseline = build_into(&opts);
    let dir = tempfile::tempdir().expect("tmp");
    let registry = TestRegistry::plain();
    push_web_image(&registry, dir.path(), "<p>bench</p>\n");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, web_config()).expect("config");
    let cfg = vm_config(&gantry.qcow2_image, &registry, free_port(), &config);

    let (mut healthy, mut served, mut base) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        if let Some((h, s)) = gantry_once(&cfg, Duration::from_secs(300)) {
            healthy.push(h);
            served.push(s);
        }
        let started = Instant::now();
        let mut vm = Vm::start(&VmConfig::new(&baseline.qcow2_image)).expect("QEMU starts");
        vm.wait_for("baseline-init: ready", BOOT_TIMEOUT)
            .expect("baseline boots");
        base.push(ms(started.elapsed()));
    }
    let b = median(base);
    println!("start-up, median of {runs} runs each, QEMU TCG:");
    if healthy.is_empty() {
        println!("  gantry: the container never became healthy");
    } else {
        let (h, s) = (median(healthy), median(served));
        println!(
            "  QEMU start -> container healthy: {h} ms; -> page served to the host: {s} ms; \
             busybox-init baseline to its ready line: {b} ms; ratio (served/baseline) {:.2}",
            s as f64 / b.max(1) as f64
        );
    }
    // The smallest guest that runs the job: 128 MiB first (the question), then more.
    for mib in [128, 192, 256] {
        let mut small = cfg.clone();
        small.memory_mib = mib;
        small.hostfwd[0].host_port = free_port();
        match gantry_once(&small, Duration::from_secs(90)) {
            Some((h, s)) => {
                println!("  with -m {mib}: healthy after {h} ms, served after {s} ms");
                break;
            }
            None => println!("  with -m {mib}: the container did not come up within 90 s"),
        }
    }
}
