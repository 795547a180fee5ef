//! The bundle's seccomp profile cannot break the runtime's own set-up: the init installs
//! the filters last, and after them makes no system call of its own but `execve` (with
//! `no_new_privs` off: the user switch too, as runc). Each bundle carries an allow-list of
//! only what busybox-static needs, without `close_range`, `prctl`, `seccomp` or any other
//! call of the runtime's, and with a rule of another action (so that one filter must be
//! installed under another). Needs root (CI runs as root) and runc (for `runc spec`).

mod common;

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use common::bundle::{require_root, OURS};

/// What busybox-static's `true` and `mkdir` make (strace), and nothing else.
const BUSYBOX_NEEDS: &[&str] = &[
    "execve",
    "exit_group",
    "arch_prctl",
    "brk",
    "mprotect",
    "set_tid_address",
    "set_robust_list",
    "rseq",
    "prlimit64",
    "getrandom",
    "readlink",
    "getuid",
    "write",
];

/// The user switch and the capability sets, which without `no_new_privs` come after the
/// filters (the kernel takes a filter only from a process with CAP_SYS_ADMIN then).
const USER_SWITCH: &[&str] = &["setgroups", "setresgid", "setresuid", "capget", "capset"];

/// Everything else fails with EPERM; `mkdir` fails with ENOSYS, a filter of its own.
fn allow_list(extra: &[&str]) -> Value {
    let names: Vec<&str> = BUSYBOX_NEEDS.iter().chain(extra).copied().collect();
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [
            {"names": names, "action": "SCMP_ACT_ALLOW"},
            {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}
        ]
    })
}

fn bundle(dir: &Path, args: &[&str], no_new_privs: bool, profile: Value) -> PathBuf {
    common::bundle::bundle(dir, |c| {
        c["process"]["args"] = json!(args);
        c["process"]["noNewPrivileges"] = no_new_privs.into();
        // A real user switch: from root to an unprivileged user.
        c["process"]["user"] = json!({"uid": 1000, "gid": 1000});
        c["linux"]["seccomp"] = profile;
    })
}

fn run(dir: &Path, b: &Path, id: &str) -> (bool, String, String) {
    common::bundle::run_with(OURS, &dir.join("state"), b, id)
}

#[test]
fn a_profile_allowing_only_the_program_runs_it_with_no_new_privs_as_root() {
    require_root();
    let dir = tempfile::tempdir().expect("tmp");
    let b = bundle(dir.path(), &["/bin/busybox", "true"], true, allow_list(&[]));
    let (ok, _, err) = run(dir.path(), &b, "nnp-true");
    assert!(ok, "busybox true under its own allow-list: {err}");

    // The filters are in place: mkdir gets the errno of its rule.
    let b2 = dir.path().join("mkdir");
    std::fs::create_dir_all(&b2).expect("mkdir");
    let b2 = bundle(&b2, &["/bin/busybox", "mkdir", "/x"], true, allow_list(&[]));
    let (ok, _, err) = run(dir.path(), &b2, "nnp-mkdir");
    assert!(!ok, "mkdir must fail under the profile");
    assert!(
        err.contains("Function not implemented"),
        "mkdir fails with the rule's ENOSYS, from the program: {err}"
    );
}

#[test]
fn a_profile_allowing_the_program_and_the_user_switch_runs_it_without_no_new_privs_as_root() {
    require_root();
    let dir = tempfile::tempdir().expect("tmp");
    let b = bundle(
        dir.path(),
        &["/bin/busybox", "true"],
        false,
        allow_list(USER_SWITCH),
    );
    let (ok, _, err) = run(dir.path(), &b, "nnp-false");
    assert!(
        ok,
        "busybox true under its allow-list and the user switch: {err}"
    );
}
