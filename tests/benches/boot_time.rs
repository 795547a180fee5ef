//! Boot time of the Gantry image against a baseline measured in the same run: the same
//! kernel, GRUB and dm-verity root with a busybox shell script as PID 1
//! (`images/baseline-busybox.toml`). Prints medians and ratios; asserts nothing about time.
//!
//! `cargo bench -p gantry-tests --bench boot_time [-- RUNS]` (default 5 runs each).

use std::time::Instant;

use gantry_image_build::BuildOptions;
use gantry_qemu::{Vm, VmConfig};
use gantry_tests::{build_into, field, BOOT_TIMEOUT};

struct Sample {
    /// From QEMU's start to the marker: firmware, GRUB, kernel and init.
    wall_ms: u64,
    /// From kernel start to the marker, as the guest's clock says.
    kernel_ms: u64,
}

fn boot_once(image: &std::path::Path, marker: &str, kernel_ms: impl Fn(&str) -> u64) -> Sample {
    let started = Instant::now();
    let mut vm = Vm::start(&VmConfig::new(image)).expect("QEMU starts");
    let line = vm
        .wait_for(marker, BOOT_TIMEOUT)
        .expect("boot reaches its marker");
    let wall_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Sample {
        wall_ms,
        kernel_ms: kernel_ms(&line),
    }
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn main() {
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5);
    let gantry = build_into(&BuildOptions::default_for_workspace());
    let mut opts = BuildOptions::default_for_workspace();
    opts.definition = opts.definition.with_file_name("baseline-busybox.toml");
    opts.out_dir = opts.out_dir.with_file_name("baseline-busybox");
    let baseline = build_into(&opts);

    let mut g = Vec::new();
    let mut b = Vec::new();
    // Interleaved, so that a slow patch of the machine hits both alike.
    for _ in 0..runs {
        g.push(boot_once(
            &gantry.qcow2_image,
            gantry_init::READY_MARKER,
            |l| {
                field(l, "boot_ms")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            },
        ));
        b.push(boot_once(
            &baseline.qcow2_image,
            "baseline-init: ready",
            |l| {
                // uptime=1.23 (seconds, 10 ms resolution)
                field(l, "uptime")
                    .and_then(|v| v.parse::<f64>().ok())
                    .map_or(0, |s| (s * 1000.0) as u64)
            },
        ));
    }
    let gk = median(g.iter().map(|s| s.kernel_ms).collect());
    let bk = median(b.iter().map(|s| s.kernel_ms).collect());
    let gw = median(g.iter().map(|s| s.wall_ms).collect());
    let bw = median(b.iter().map(|s| s.wall_ms).collect());
    println!("boot time, median of {runs} runs each, QEMU TCG:");
    println!(
        "  kernel start -> ready:  gantry {gk} ms, busybox baseline {bk} ms, ratio {:.2}",
        gk as f64 / bk.max(1) as f64
    );
    println!(
        "  QEMU start   -> ready:  gantry {gw} ms, busybox baseline {bw} ms, ratio {:.2}",
        gw as f64 / bw.max(1) as f64
    );
    println!(
        "  image: raw {} MiB ({} KiB allocated), qcow2 {} KiB, erofs root {} KiB, kernel {} KiB",
        gantry.sizes.raw >> 20,
        gantry.sizes.raw_allocated >> 10,
        gantry.sizes.qcow2 >> 10,
        gantry.sizes.root_erofs >> 10,
        gantry.sizes.kernel >> 10
    );
}
