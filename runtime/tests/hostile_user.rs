//! Hostile images against `gantry run --user NAME`, which reads the image's `/etc/passwd`
//! and `/etc/group` on the host before the container starts. Each case's doc comment says
//! what the image attacks and what the host must see. Needs root (CI runs as root).

mod common;

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use common::bundle::require_root;
use common::hostile::*;
use common::*;

/// A user and a group that only the host's files (made by the test) name: if either ever
/// resolves, the runtime read a host file.
fn marker() -> String {
    format!("gantry-marker-{}", std::process::id())
}

/// The host's files the image aims at: `passwd` naming [`marker`] as uid 4242 and `group`
/// naming it as gid 4243, in `work/host`; returns that directory.
fn host_files(work: &Path) -> std::path::PathBuf {
    let host = work.join("host");
    std::fs::create_dir(&host).expect("host dir");
    let m = marker();
    std::fs::write(host.join("passwd"), format!("{m}:x:4242:4242::/:/bin/sh\n")).expect("passwd");
    std::fs::write(host.join("group"), format!("{m}:x:4243:\n")).expect("group");
    host
}

/// Image files: a valid `someone` (4321:4322, group `grp` 4323), so that only the file
/// under attack is hostile.
const PASSWD: &[u8] = b"root:x:0:0::/root:/bin/sh\nsomeone:x:4321:4322::/:/bin/sh\n";
const GROUP: &[u8] = b"root:x:0:\ngrp:x:4323:\n";

/// `gantry run --user USER` of a store, to its end or for at most 60 s: a lookup that
/// blocks (on a FIFO) fails the test instead of hanging it. Returns (success, stdout,
/// stderr).
fn run_as(store: &str, state: &str, name: &str, user: &str) -> (bool, String, String) {
    let child = spawn_run(store, state, name, &["--user", user], "id -u; id -g");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => {
            let out = out.expect("gantry");
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
        Err(_) => {
            // The gantry process this test started, by its id.
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            panic!("gantry run --user {user} did not end within 60 s");
        }
    }
}

/// What the image puts where its `/etc/passwd` or `/etc/group` should be.
#[derive(Debug, Clone, Copy)]
enum Attack {
    /// A symlink to the host's file by its absolute path.
    AbsoluteLink,
    /// A symlink climbing out of the root with `../`, then down to the host's file.
    RelativeLink,
    /// A named pipe: a blocking open or read would hang `gantry run`.
    Fifo,
    /// More than the 1 MiB cap, with the marker user on its first line.
    Huge,
}

impl Attack {
    /// What the error must say of the file.
    fn reason(self) -> &'static str {
        match self {
            Attack::AbsoluteLink | Attack::RelativeLink => "a symbolic link, which is not followed",
            Attack::Fifo => "not a regular file",
            Attack::Huge => "larger than the 1048576 bytes",
        }
    }
}

/// Attacks the host through user and group lookup: the image's `/etc/passwd` (then
/// `/etc/group`) is a symlink to a host file by absolute path, one by `../../..`, a FIFO,
/// or a file over the cap. The host file names a marker user (group) that resolves if it
/// is ever read. `gantry run --user` must end at once with an error naming the file and
/// the reason, the container never starting.
#[test]
fn a_hostile_passwd_or_group_is_refused_naming_the_file_as_root() {
    require_root();
    let m = marker();
    for file in ["passwd", "group"] {
        for attack in [
            Attack::AbsoluteLink,
            Attack::RelativeLink,
            Attack::Fifo,
            Attack::Huge,
        ] {
            let work = tempfile::tempdir().expect("tmp");
            let host = host_files(work.path());
            let host_file = host.join(file);
            let absolute = host_file.to_str().expect("utf-8").to_owned();
            let relative = format!("../../../../../../../..{absolute}");
            let huge = {
                let mut b = match file {
                    "passwd" => format!("{m}:x:4242:4242::/:/bin/sh\n"),
                    _ => format!("{m}:x:4243:\n"),
                }
                .into_bytes();
                b.resize(1024 * 1024 + 1, b'#');
                b
            };
            let path = format!("etc/{file}");
            let hostile = match attack {
                Attack::AbsoluteLink => Entry::Symlink(&path, &absolute),
                Attack::RelativeLink => Entry::Symlink(&path, &relative),
                Attack::Fifo => Entry::Fifo(&path),
                Attack::Huge => Entry::File(&path, &huge, 0o644),
            };
            // The other file is a valid one.
            let other = match file {
                "passwd" => Entry::File("etc/group", GROUP, 0o644),
                _ => Entry::File("etc/passwd", PASSWD, 0o644),
            };
            let (s, st) = hostile_store(work.path(), &[Entry::Dir("etc"), other, hostile]);
            let user = match file {
                "passwd" => m.clone(),
                _ => format!("someone:{m}"),
            };
            let (ok, out, err) = run_as(&s, &st, "hostile-user", &user);
            let case = format!("{file} as {attack:?}");
            assert!(!ok, "{case}: the run must be refused, it printed {out:?}");
            assert!(
                err.contains(&format!("/{path}")) && err.contains(attack.reason()),
                "{case}: {err}"
            );
            assert!(
                !out.contains("4242") && !out.contains("4243"),
                "{case}: {out}"
            );
        }
    }
}

/// Attacks the lookup through a directory: the image's `/etc` is a symlink to the host's
/// directory holding the marker's `passwd`. The link resolves inside the root (where that
/// directory does not exist), so the marker user must not resolve and the error must say
/// the image has no `/etc/passwd`.
#[test]
fn an_etc_linked_to_a_host_directory_resolves_inside_the_root_as_root() {
    require_root();
    let work = tempfile::tempdir().expect("tmp");
    let host = host_files(work.path());
    let target = host.to_str().expect("utf-8").to_owned();
    // Layered over busybox's /etc directory: the link replaces it.
    let (s, st) = hostile_store(work.path(), &[Entry::Symlink("etc", &target)]);
    let (ok, out, err) = run_as(&s, &st, "hostile-etc", &marker());
    assert!(!ok, "the run must be refused, it printed {out:?}");
    assert!(err.contains("the image has no /etc/passwd"), "{err}");
}

/// The valid case keeps working: names in the image's own files resolve to their ids,
/// with the primary group or the one named.
#[test]
fn a_user_in_the_images_own_files_resolves_as_root() {
    require_root();
    let work = tempfile::tempdir().expect("tmp");
    let (s, st) = hostile_store(
        work.path(),
        &[
            Entry::Dir("etc"),
            Entry::File("etc/passwd", PASSWD, 0o644),
            Entry::File("etc/group", GROUP, 0o644),
        ],
    );
    let (ok, out, err) = run_as(&s, &st, "user-primary", "someone");
    assert!(ok, "{err}");
    assert_eq!(out, "4321\n4322\n");
    let (ok, out, err) = run_as(&s, &st, "user-group", "someone:grp");
    assert!(ok, "{err}");
    assert_eq!(out, "4321\n4323\n");
}
