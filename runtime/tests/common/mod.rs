//! Test fixtures: the shared registry and OCI layout builders (`gantry-testkit`), plus the
//! runtime's own binaries.
#![allow(dead_code)] // each test binary uses a different part of the fixture

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

#[allow(unused_imports)] // not every test binary uses the fixtures
pub use gantry_testkit::*;

pub mod bundle;
pub mod hostile;

/// The host's mount points at or below `dir`. Tests run in parallel in one process and mount
/// things of their own, so a count of every mount races; this sees only one test's.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let dir = dir.to_str().expect("utf-8");
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|point| point.starts_with(dir))
        .map(str::to_owned)
        .collect()
}

/// Runs the `gantry` binary with `args`; returns (success, stdout, stderr).
pub fn gantry(args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gantry"));
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run gantry");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("stdin");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("gantry");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `gantry-checker`, built once per test run with `crt-static` so it runs in a bare root.
pub fn checker() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let target = workspace.join("target/checker-static");
        let out = Command::new(env!("CARGO"))
            .args([
                "build",
                "--release",
                "-p",
                "gantry-checker",
                "--target",
                "x86_64-unknown-linux-gnu",
            ])
            .env("CARGO_TARGET_DIR", &target)
            .env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+crt-static")
            .current_dir(&workspace)
            .output()
            .expect("cargo");
        assert!(
            out.status.success(),
            "building the checker failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        target.join("x86_64-unknown-linux-gnu/release/gantry-checker")
    })
}

/// Writes, as the OCI layout `layout`, the standard busybox image plus `/checker`, with
/// `cmd` as its command, tagged `tag`.
pub fn checker_layout(layout: &Path, cmd: &[&str], tag: &str) {
    std::fs::create_dir_all(layout).expect("layout");
    let checker_bytes = std::fs::read(checker()).expect("checker");
    let mut layers = busybox_layers();
    layers.push(layer_tar(&[Entry::File("checker", &checker_bytes, 0o755)]));
    let d = add_image(
        layout,
        &ImageSpec {
            arch: "amd64",
            layers: &layers,
            comp: Comp::Gzip,
            bad_diff_id: false,
            cmd,
        },
    );
    finish_layout(layout, vec![(tag, d)]);
}

/// A new store (`<work>/store`) holding an image of `layers` as `name`, imported with the
/// `gantry` binary from an OCI layout; returns (store, state root `<work>/run`).
pub fn store_with(work: &Path, layers: &[Vec<u8>], name: &str) -> (String, String) {
    let layout = work.join("layout");
    std::fs::create_dir(&layout).expect("layout");
    let d = amd64_image(&layout, layers, Comp::Gzip);
    finish_layout(&layout, vec![(name, d)]);
    let store = work.join("store").display().to_string();
    let state = work.join("run").display().to_string();
    let (ok, _, err) = gantry(
        &[
            "--root",
            &store,
            "image",
            "import",
            layout.to_str().expect("utf-8"),
        ],
        None,
    );
    assert!(ok, "{err}");
    (store, state)
}
