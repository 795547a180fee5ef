//! `gantry-update`'s host commands, run as the built binary in temporary directories.

// Test helpers: a failed step should stop the test where it happened.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

use gantry_updater::channel::Channel;
use gantry_updater::keys::{PublicKey, TrustedKeys};

const ROOT_LEN: usize = 3 * 4096 + 100;

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gantry-update"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs and expects success; returns stdout.
fn ok(dir: &Path, args: &[&str]) -> String {
    let o = run(dir, args);
    assert!(
        o.status.success(),
        "{args:?} failed: {}{}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// Runs and expects exit code 1 and one `error: ` line; returns that line.
fn fails(dir: &Path, args: &[&str]) -> String {
    let o = run(dir, args);
    assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stdout(&o));
    let err = stderr(&o);
    assert!(err.starts_with("error: "), "{args:?}: {err}");
    err
}

/// A temporary directory with a key `rel` (rel.key, rel.pub), a small kernel and root,
/// and `verity.json` in image-build's manifest shape.
fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let kernel: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(d.join("vmlinuz"), kernel).unwrap();
    std::fs::write(d.join("root.img"), vec![0x5au8; ROOT_LEN]).unwrap();
    let build_manifest = serde_json::json!({
        "name": "gantry",
        "version": "0.2.0",
        "verity": {
            "root_hash": "12".repeat(32),
            "salt": "34".repeat(32),
            "data_blocks": 2,
            "hash_offset_blocks": 2,
            "total_bytes": ROOT_LEN,
        },
    });
    std::fs::write(d.join("gantry.json"), build_manifest.to_string()).unwrap();
    let id = ok(d, &["keygen", "--out", "rel", "--comment", "release key"]);
    assert_eq!(id.trim().len(), 16, "{id}");
    dir
}

fn sign(d: &Path, verity: &str, out: &str) -> String {
    ok(
        d,
        &[
            "sign",
            "--kernel",
            "vmlinuz",
            "--cmdline",
            "console=ttyS0 panic=10",
            "--root",
            "root.img",
            "--verity",
            verity,
            "--version",
            "0.2.0",
            "--rollback-index",
            "7",
            "--key",
            "rel.key",
            "--out",
            out,
        ],
    )
}

fn key_id(pub_file: &Path) -> String {
    let text = std::fs::read_to_string(pub_file).unwrap();
    PublicKey::parse(&text, pub_file).unwrap().id().to_string()
}

#[test]
fn keygen_sign_verify_round_trip() {
    let dir = workspace();
    let d = dir.path();
    let id = key_id(&d.join("rel.pub"));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(d.join("rel.key")).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    assert!(std::fs::read_to_string(d.join("rel.pub"))
        .unwrap()
        .trim_end()
        .ends_with(" release key"));

    let out = sign(d, "gantry.json", "b.bundle");
    assert!(out.contains("0.2.0 rollback_index=7"), "{out}");
    let verified = ok(d, &["verify", "b.bundle", "--key", "rel.pub"]);
    assert_eq!(
        verified,
        format!("ok 0.2.0 rollback_index=7 signed_by={id}\n")
    );

    // A directory of trusted keys, as the image has, works the same.
    std::fs::create_dir(d.join("trusted")).unwrap();
    std::fs::copy(d.join("rel.pub"), d.join("trusted/rel.pub")).unwrap();
    assert_eq!(
        ok(d, &["verify", "b.bundle", "--keys", "trusted"]),
        verified
    );
}

#[test]
fn a_bare_verity_object_is_accepted_too() {
    let dir = workspace();
    let d = dir.path();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("gantry.json")).unwrap()).unwrap();
    std::fs::write(d.join("bare.json"), manifest["verity"].to_string()).unwrap();
    sign(d, "bare.json", "b.bundle");
    ok(d, &["verify", "b.bundle", "--key", "rel.pub"]);

    // A verity that does not cover the root file is refused, and nothing is written.
    let mut wrong = manifest["verity"].clone();
    wrong["total_bytes"] = (ROOT_LEN + 1).into();
    std::fs::write(d.join("wrong.json"), wrong.to_string()).unwrap();
    let err = fails(
        d,
        &[
            "sign",
            "--kernel",
            "vmlinuz",
            "--cmdline",
            "panic=10",
            "--root",
            "root.img",
            "--verity",
            "wrong.json",
            "--version",
            "0.2.0",
            "--rollback-index",
            "7",
            "--key",
            "rel.key",
            "--out",
            "w.bundle",
        ],
    );
    assert!(err.contains("verity covers"), "{err}");
    assert!(!d.join("w.bundle").exists());
    let err = fails(
        d,
        &[
            "sign",
            "--kernel",
            "missing",
            "--cmdline",
            "panic=10",
            "--root",
            "root.img",
            "--verity",
            "bare.json",
            "--version",
            "0.2.0",
            "--rollback-index",
            "7",
            "--key",
            "rel.key",
            "--out",
            "w.bundle",
        ],
    );
    assert!(err.contains("cannot read the kernel missing"), "{err}");
}

#[test]
fn verify_with_another_key_names_the_unknown_key() {
    let dir = workspace();
    let d = dir.path();
    sign(d, "gantry.json", "b.bundle");
    ok(d, &["keygen", "--out", "other"]);
    let err = fails(d, &["verify", "b.bundle", "--key", "other.pub"]);
    assert!(err.contains("unknown key"), "{err}");
    assert!(err.contains(&key_id(&d.join("rel.pub"))), "{err}");
}

#[test]
fn a_flipped_byte_in_the_root_payload_fails_verify() {
    let dir = workspace();
    let d = dir.path();
    sign(d, "gantry.json", "b.bundle");
    let path = d.join("b.bundle");
    let mut bytes = std::fs::read(&path).unwrap();
    // The root is the last payload: the file ends with it.
    let i = bytes.len() - ROOT_LEN / 2;
    bytes[i] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
    let err = fails(d, &["verify", "b.bundle", "--key", "rel.pub"]);
    assert!(err.contains("payload root"), "{err}");
}

#[test]
fn inspect_prints_the_manifest_and_says_nothing_was_verified() {
    let dir = workspace();
    let d = dir.path();
    sign(d, "gantry.json", "b.bundle");
    let o = run(d, &["inspect", "b.bundle"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("nothing was verified"),
        "{}",
        stderr(&o)
    );
    let shown: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(shown["manifest"]["os_version"], "0.2.0");
    assert_eq!(shown["manifest"]["rollback_index"], 7);
    assert_eq!(
        shown["signature_key_ids"],
        serde_json::json!([key_id(&d.join("rel.pub"))])
    );

    std::fs::write(d.join("junk"), b"not a bundle at all, but long enough").unwrap();
    assert!(fails(d, &["inspect", "junk"]).contains("bad magic"));
}

#[test]
fn channel_output_verifies_and_names_the_whole_bundle() {
    let dir = workspace();
    let d = dir.path();
    sign(d, "gantry.json", "b.bundle");
    ok(
        d,
        &[
            "channel",
            "--bundle",
            "b.bundle",
            "--url",
            "gantry-0.2.0.bundle",
            "--channel",
            "beta",
            "--key",
            "rel.key",
            "--out",
            "channel.json",
            "--serial",
            "42",
        ],
    );
    let text = std::fs::read_to_string(d.join("rel.pub")).unwrap();
    let keys = TrustedKeys::new([PublicKey::parse(&text, Path::new("rel.pub")).unwrap()]);
    let wire = std::fs::read(d.join("channel.json")).unwrap();
    let c = Channel::verify(&wire, &keys, "channel.json").unwrap();
    let bundle_bytes = std::fs::read(d.join("b.bundle")).unwrap();
    assert_eq!(c.channel, "beta");
    assert_eq!(c.serial, 42);
    let now = gantry_updater::policy::unix_secs(std::time::SystemTime::now());
    assert!(
        (now + 30 * 86_400 - 120..=now + 30 * 86_400).contains(&c.expires),
        "30 days by default: {} at {now}",
        c.expires
    );
    assert_eq!((c.os_version.as_str(), c.rollback_index), ("0.2.0", 7));
    assert_eq!((c.arch.as_str(), c.board.as_str()), ("x86_64", "generic"));
    assert_eq!(c.bundle.url, "gantry-0.2.0.bundle");
    assert_eq!(c.bundle.size, bundle_bytes.len() as u64);
    assert_eq!(c.bundle.sha256, sha256_hex(&bundle_bytes));

    // A key that did not sign the bundle cannot publish it.
    ok(d, &["keygen", "--out", "other"]);
    let err = fails(
        d,
        &[
            "channel",
            "--bundle",
            "b.bundle",
            "--url",
            "b.bundle",
            "--key",
            "other.key",
            "--out",
            "c2.json",
        ],
    );
    assert!(err.contains("unknown key"), "{err}");
    assert!(!d.join("c2.json").exists());
}

#[test]
fn keygen_refuses_to_overwrite() {
    let dir = workspace();
    let d = dir.path();
    let before = std::fs::read(d.join("rel.key")).unwrap();
    let err = fails(d, &["keygen", "--out", "rel"]);
    assert!(err.contains("rel.key already exists"), "{err}");
    assert_eq!(std::fs::read(d.join("rel.key")).unwrap(), before);

    // Only the .pub there is enough to refuse: the pair must stay a pair.
    std::fs::write(d.join("lone.pub"), "x").unwrap();
    let err = fails(d, &["keygen", "--out", "lone"]);
    assert!(err.contains("lone.pub already exists"), "{err}");
    assert!(!d.join("lone.key").exists());
}

fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
