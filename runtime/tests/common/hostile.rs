//! Hostile images for `gantry run`: the standard busybox image with a layer of the
//! attacker's on top, imported into a fresh store, and `gantry run` of it.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::{busybox_layers, layer_tar, store_with, Entry};

/// The name the hostile image is stored under.
pub const HOSTILE_IMAGE: &str = "example.com/hostile:1";

/// A store (`<work>/store`) holding the standard busybox image with `extra` layered on top,
/// as [`HOSTILE_IMAGE`]; returns (store, state root).
pub fn hostile_store(work: &Path, extra: &[Entry]) -> (String, String) {
    let mut layers = busybox_layers();
    layers.push(layer_tar(extra));
    store_with(work, &layers, HOSTILE_IMAGE)
}

/// `gantry run --name NAME [extra] HOSTILE_IMAGE sh -c SCRIPT`, started.
pub fn spawn_run(store: &str, state: &str, name: &str, extra: &[&str], script: &str) -> Child {
    let mut args = vec![
        "--root",
        store,
        "run",
        "--name",
        name,
        "--state-root",
        state,
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[HOSTILE_IMAGE, "/bin/busybox", "sh", "-c", script]);
    Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run gantry")
}

/// [`spawn_run`] to its end; returns (success, stdout, stderr).
pub fn run(
    store: &str,
    state: &str,
    name: &str,
    extra: &[&str],
    script: &str,
) -> (bool, String, String) {
    let out = spawn_run(store, state, name, extra, script)
        .wait_with_output()
        .expect("gantry");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
