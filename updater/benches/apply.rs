//! The time to apply an update — verify the bundle, stream the root into the slot while
//! hashing it, fsync, read it back and hash it again, write the boot files, switch
//! `grubenv` — against `dd` writing the same root payload into the same kind of target
//! (a preallocated file on the same file system, `conv=fsync`), measured in the same run.
//! Prints medians and ratios; asserts nothing about time.
//!
//! `cargo bench -p gantry-updater --bench apply [-- ROOT_MIB [RUNS]]` (default 256 MiB, 3).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use gantry_updater::bundle::{write, BundleMeta, ARCH};
use gantry_updater::esp::Esp;
use gantry_updater::grubenv::GrubEnv;
use gantry_updater::install::{install, Machine, Target};
use gantry_updater::keys::{SigningKey, TrustedKeys};
use gantry_updater::release::Release;
use gantry_updater::verity::Verity;
use gantry_updater::Slot;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

/// `len` bytes that do not compress or dedupe (xorshift).
fn payload(path: &Path, len: u64) {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut buf = Vec::with_capacity(len as usize);
    while (buf.len() as u64) < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf.extend_from_slice(&x.to_le_bytes());
    }
    buf.truncate(len as usize);
    std::fs::write(path, buf).expect("write payload");
}

fn preallocate(path: &Path, len: u64) {
    let f = std::fs::File::create(path).expect("target");
    f.set_len(len).expect("size target");
    // Real blocks, as a partition has: write zeros once.
    let status = Command::new("dd")
        .args(["if=/dev/zero", "bs=1M", "conv=notrunc,fsync", "status=none"])
        .arg(format!("of={}", path.display()))
        .arg(format!("count={}", len >> 20))
        .status()
        .expect("dd");
    assert!(status.success());
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let root_mib: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(256);
    let runs: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(3);
    // On the disk, not in /tmp (often tmpfs): the target must be a real disk.
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-apply");
    std::fs::create_dir_all(&base).expect("bench dir");
    let dir = tempfile::tempdir_in(&base).expect("tempdir");
    let root = dir.path().join("root.img");
    let root_len = root_mib << 20;
    payload(&root, root_len);
    let kernel = dir.path().join("vmlinuz");
    payload(&kernel, 8 << 20);
    let key = SigningKey::from_pkcs8(&SigningKey::generate_pkcs8().expect("key"), Path::new("k"))
        .expect("key");
    let bundle = dir.path().join("b.bundle");
    let data_blocks = (root_len - (1 << 20)) / 4096;
    write(
        &bundle,
        &BundleMeta {
            os_version: "2".into(),
            rollback_index: 2,
            arch: ARCH.into(),
            board: "generic".into(),
            verity: Verity {
                root_hash: "12".repeat(32),
                salt: "34".repeat(32),
                data_blocks,
                hash_offset_blocks: data_blocks,
                total_bytes: root_len,
            },
        },
        &kernel,
        &["console=ttyS0".into(), "panic=10".into()],
        &root,
        &[&key],
    )
    .expect("bundle");
    let keys = TrustedKeys::new([key.public_key()]);
    let machine = Machine {
        running: Slot::A,
        release: Release {
            name: "gantry".into(),
            version: "1".into(),
            rollback_index: 1,
            board: "generic".into(),
        },
        running_root_hash: None,
        min_rollback_index: 1,
    };
    let esp_dir = dir.path().join("esp");
    std::fs::create_dir_all(&esp_dir).expect("esp dir");
    let esp = Esp::new(&esp_dir);
    let slot_len = root_len + (64 << 20);
    let target = Target {
        slot: Slot::B,
        device: dir.path().join("slot-b.img"),
        size: slot_len,
        partuuid: "00000000-0000-4000-8000-000000000002".into(),
    };
    let dd_target = dir.path().join("slot-dd.img");
    preallocate(&target.device, slot_len);
    preallocate(&dd_target, slot_len);

    let (mut ours, mut dd, mut verify, mut stream, mut back) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        esp.write_env(&GrubEnv::initial(Slot::A)).expect("grubenv");
        let t = Instant::now();
        let done =
            install(&bundle, &keys, &machine, &target, &esp, 3, &mut |_| {}).expect("install");
        ours.push(t.elapsed());
        verify.push(done.verify);
        stream.push(done.stream);
        back.push(done.read_back);

        let t = Instant::now();
        let status = Command::new("dd")
            .args(["bs=1M", "conv=notrunc,fsync", "status=none"])
            .arg(format!("if={}", root.display()))
            .arg(format!("of={}", dd_target.display()))
            .status()
            .expect("dd");
        assert!(status.success());
        dd.push(t.elapsed());
    }
    let (ours, dd) = (median(ours), median(dd));
    let stream = median(stream);
    println!("apply: {root_mib} MiB root, {runs} runs, medians");
    println!(
        "  gantry install  {:>8.0} ms  (verify {:.0} ms, stream+fsync {:.0} ms, read back {:.0} ms)",
        ours.as_secs_f64() * 1e3,
        median(verify).as_secs_f64() * 1e3,
        stream.as_secs_f64() * 1e3,
        median(back).as_secs_f64() * 1e3
    );
    println!("  dd conv=fsync   {:>8.0} ms", dd.as_secs_f64() * 1e3);
    println!(
        "  ratio install/dd {:.2}; stream+fsync/dd {:.2}",
        ours.as_secs_f64() / dd.as_secs_f64(),
        stream.as_secs_f64() / dd.as_secs_f64()
    );
}
