//! OCI hooks: programs the bundle names, run at fixed points of the lifecycle with the
//! container's state as JSON on their stdin.
//!
//! Where each kind runs, and what its failure does, as the runtime spec (1.1) says:
//!
//! | kind | run by, where | when | failure |
//! |---|---|---|---|
//! | `prestart` (deprecated), `createRuntime` | the runtime, in its namespaces | `create`, once the container's namespaces and mounts exist, before `pivot_root` | `create` fails, the container is destroyed, `poststop` runs |
//! | `createContainer` | the init, in the container's namespaces (path resolved before `pivot_root`, so in the runtime's file system) | right after `createRuntime` | as above |
//! | `startContainer` | the init, in the container (path resolved in the container's root), as the program's user with its capabilities | `start`, before the program is exec'd | the init exits with the error on the container's stderr; the program never runs |
//! | `poststart` | the runtime | `start`, once the program runs | a warning, the rest go on |
//! | `poststop` | the runtime | `delete`, once the container is destroyed | a warning, the rest go on |
//!
//! The state's `status` is `created` for the hooks of `create` and `startContainer` (as
//! crun and the runtime-tools suite have it; runc says `creating` for the first two),
//! `running` for `poststart` and `stopped` for `poststop`; `pid` is the init's as the
//! host sees it. A hook's environment is exactly its `env`; its stdout and stderr go to
//! the runtime's stderr (stdout may be a protocol channel to whoever called the runtime).
//! A hook with a `timeout` (1 s to a day) that has not exited by then is killed with its
//! process group (`SIGKILL`) and counts as failed; `start` waits for the `startContainer`
//! hooks at most their timeouts and 10 s (10 minutes if one has none), then kills the init. The state goes to the hook over a socket written without blocking, so a hook
//! that never reads its stdin cannot hold the runtime beyond its timeout, and one that
//! closes it early cannot kill the runtime with `SIGPIPE`.
//!
//! Hooks are the bundle author's programs, run with the runtime's privileges: a bundle is
//! trusted configuration (as with runc). Gantry's own engine never writes hooks into the
//! bundles it makes from images.

use std::io::ErrorKind;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

/// The longest `timeout` taken: a day.
pub const MAX_TIMEOUT_SECS: i64 = 86_400;

/// The points of the lifecycle a hook can be attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Prestart,
    CreateRuntime,
    CreateContainer,
    StartContainer,
    Poststart,
    Poststop,
}

impl Kind {
    /// The key in `config.json`'s `hooks`.
    pub fn key(self) -> &'static str {
        match self {
            Kind::Prestart => "prestart",
            Kind::CreateRuntime => "createRuntime",
            Kind::CreateContainer => "createContainer",
            Kind::StartContainer => "startContainer",
            Kind::Poststart => "poststart",
            Kind::Poststop => "poststop",
        }
    }
}

/// One hook, checked: an absolute path, and a timeout above zero if there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    pub path: PathBuf,
    /// `argv`, including `argv[0]`; empty means the path.
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub timeout: Option<Duration>,
}

/// All of a bundle's hooks, by kind, in the order given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hooks {
    pub prestart: Vec<Hook>,
    pub create_runtime: Vec<Hook>,
    pub create_container: Vec<Hook>,
    pub start_container: Vec<Hook>,
    pub poststart: Vec<Hook>,
    pub poststop: Vec<Hook>,
}

impl Hooks {
    pub fn of(&self, kind: Kind) -> &[Hook] {
        match kind {
            Kind::Prestart => &self.prestart,
            Kind::CreateRuntime => &self.create_runtime,
            Kind::CreateContainer => &self.create_container,
            Kind::StartContainer => &self.start_container,
            Kind::Poststart => &self.poststart,
            Kind::Poststop => &self.poststop,
        }
    }

    /// Whether the init stops before `pivot_root` for the hooks of `create` (and to take
    /// the state `startContainer` hooks get).
    pub fn sync_in_create(&self) -> bool {
        !(self.prestart.is_empty()
            && self.create_runtime.is_empty()
            && self.create_container.is_empty()
            && self.start_container.is_empty())
    }

    /// Reads `hooks`; the error is `(key, reason)`.
    pub fn from_oci(hooks: &oci_spec::runtime::Hooks) -> Result<Self, (String, String)> {
        let list = |kind: Kind, list: &Option<Vec<oci_spec::runtime::Hook>>| {
            list.iter()
                .flatten()
                .enumerate()
                .map(|(i, h)| {
                    let key = format!("hooks.{}[{i}]", kind.key());
                    check_hook(h).map_err(|reason| (key, reason))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Hooks {
            prestart: list(Kind::Prestart, hooks.prestart())?,
            create_runtime: list(Kind::CreateRuntime, hooks.create_runtime())?,
            create_container: list(Kind::CreateContainer, hooks.create_container())?,
            start_container: list(Kind::StartContainer, hooks.start_container())?,
            poststart: list(Kind::Poststart, hooks.poststart())?,
            poststop: list(Kind::Poststop, hooks.poststop())?,
        })
    }

    /// The hooks of the `config.json` a container's state directory keeps (the copy
    /// `create` made): what `start` and `delete` run.
    pub fn from_saved(config_json: &std::path::Path) -> Result<Self, String> {
        let spec = oci_spec::runtime::Spec::load(config_json)
            .map_err(|e| format!("{}: {e}", config_json.display()))?;
        match spec.hooks() {
            Some(h) => Self::from_oci(h)
                .map_err(|(key, reason)| format!("{}: {key}: {reason}", config_json.display())),
            None => Ok(Hooks::default()),
        }
    }
}

fn check_hook(h: &oci_spec::runtime::Hook) -> Result<Hook, String> {
    let path = h.path().clone();
    if !path.is_absolute() {
        return Err(format!("path {} is not absolute", path.display()));
    }
    let timeout = match h.timeout() {
        None => None,
        Some(t) if (1..=MAX_TIMEOUT_SECS).contains(&t) => Some(Duration::from_secs(t as u64)),
        Some(t) => {
            return Err(format!(
                "timeout {t} is not 1 to {MAX_TIMEOUT_SECS} seconds"
            ))
        }
    };
    let mut env = Vec::new();
    for e in h.env().iter().flatten() {
        match e.split_once('=') {
            Some((k, v)) if !k.is_empty() && !e.contains('\0') => {
                env.push((k.to_owned(), v.to_owned()))
            }
            _ => return Err(format!("env {e:?} is not NAME=value")),
        }
    }
    let args = h.args().clone().unwrap_or_default();
    if args.iter().any(|a| a.contains('\0')) {
        return Err("args has a NUL byte".into());
    }
    Ok(Hook {
        path,
        args,
        env,
        timeout,
    })
}

/// The container's state as the spec gives it to hooks.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct State<'a> {
    pub oci_version: &'static str,
    pub id: &'a str,
    pub status: super::state::Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    pub bundle: &'a std::path::Path,
    pub annotations: std::collections::BTreeMap<&'a str, &'a str>,
}

impl State<'_> {
    pub fn to_json(&self) -> Vec<u8> {
        // A struct of strings, numbers and a string map: serialising cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("hooks.{key}[{index}] {path}: {reason}")]
pub struct HookError {
    pub key: &'static str,
    pub index: usize,
    pub path: String,
    pub reason: String,
}

/// Runs the hooks of `kind` in order with `state` (JSON) on their stdin; stops at the
/// first that fails.
pub fn run_all(hooks: &Hooks, kind: Kind, state: &[u8]) -> Result<(), HookError> {
    for (index, hook) in hooks.of(kind).iter().enumerate() {
        run(hook, state).map_err(|reason| HookError {
            key: kind.key(),
            index,
            path: hook.path.display().to_string(),
            reason,
        })?;
    }
    Ok(())
}

/// Runs every hook of `kind` even when some fail (`poststart`, `poststop`), and says on
/// stderr which failed.
pub fn run_all_warning(hooks: &Hooks, kind: Kind, state: &[u8]) {
    for (index, hook) in hooks.of(kind).iter().enumerate() {
        if let Err(reason) = run(hook, state) {
            let e = HookError {
                key: kind.key(),
                index,
                path: hook.path.display().to_string(),
                reason,
            };
            eprintln!("gantry-runtime: warning: {e} (going on, as the spec says)");
        }
    }
}

/// Runs one hook to its end (or its timeout) with `state` on its stdin.
pub fn run(hook: &Hook, state: &[u8]) -> Result<(), String> {
    let (ours, theirs) =
        std::os::unix::net::UnixStream::pair().map_err(|e| format!("make its stdin: {e}"))?;
    ours.set_nonblocking(true)
        .map_err(|e| format!("make its stdin: {e}"))?;
    let out = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| format!("give it stderr: {e}"))?;
    let mut cmd = Command::new(&hook.path);
    if let Some((first, rest)) = hook.args.split_first() {
        cmd.arg0(first).args(rest);
    }
    cmd.env_clear()
        .envs(hook.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::from(out))
        .stderr(Stdio::inherit())
        // Its own process group: a timeout kills what it forked too.
        .process_group(0);
    let mut child = cmd.spawn().map_err(|e| format!("cannot run it: {e}"))?;
    // The child's end of the socket goes with `cmd`: the hook alone holds it now.
    drop(cmd);
    let deadline = hook.timeout.map(|t| Instant::now() + t);
    let mut stdin = Some(ours);
    let mut sent = 0;
    let mut nap = Duration::from_millis(1);
    loop {
        if let Some(sock) = &stdin {
            let rest = &state[sent..];
            // SAFETY: the pointer and length describe `rest`, which outlives the call;
            // MSG_NOSIGNAL: a closed peer is EPIPE, not a signal.
            let n = unsafe {
                libc::send(
                    sock.as_raw_fd(),
                    rest.as_ptr().cast(),
                    rest.len(),
                    libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
                )
            };
            if n >= 0 {
                sent += n as usize;
            } else {
                let e = std::io::Error::last_os_error();
                if !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) {
                    // The hook closed its stdin or exited: it reads no more.
                    sent = state.len();
                }
            }
            if sent >= state.len() {
                // End of file for the hook.
                stdin = None;
            }
        }
        match child.try_wait() {
            Ok(Some(status)) => return exit_verdict(status),
            Ok(None) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("wait for it: {e}")),
        }
        if let (Some(deadline), Some(timeout)) = (deadline, hook.timeout) {
            if Instant::now() >= deadline {
                if let Ok(pid) = i32::try_from(child.id()) {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "still running after its timeout of {} s; killed",
                    timeout.as_secs()
                ));
            }
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(20));
    }
}

fn exit_verdict(status: std::process::ExitStatus) -> Result<(), String> {
    match (status.code(), status.signal()) {
        (Some(0), _) => Ok(()),
        (Some(code), _) => Err(format!("exited with status {code}")),
        (None, Some(sig)) => Err(format!("killed by signal {sig}")),
        (None, None) => Err(format!("ended with {status}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(script: &str, timeout: Option<u64>) -> Hook {
        Hook {
            path: PathBuf::from("/bin/sh"),
            args: vec!["sh".into(), "-c".into(), script.into()],
            env: vec![("GREETING".into(), "hello".into())],
            timeout: timeout.map(Duration::from_secs),
        }
    }

    #[test]
    fn the_state_reaches_stdin_and_only_the_given_environment_is_set() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out");
        let script = format!(
            "cat > {0}; echo \"$GREETING ${{HOME:-nohome}}\" >> {0}",
            out.display()
        );
        run(&hook(&script, Some(5)), b"{\"id\":\"c1\"}").expect("the hook succeeds");
        let got = std::fs::read_to_string(&out).expect("output");
        assert_eq!(got, "{\"id\":\"c1\"}hello nohome\n");
    }

    #[test]
    fn a_failing_hook_says_how_it_ended() {
        let e = run(&hook("exit 3", None), b"{}").expect_err("exit 3 fails");
        assert_eq!(e, "exited with status 3");
        let e = run(&hook("kill -9 $$", None), b"{}").expect_err("a signal fails");
        assert_eq!(e, "killed by signal 9");
    }

    #[test]
    fn a_hook_past_its_timeout_is_killed_and_fails() {
        let started = Instant::now();
        let e = run(&hook("sleep 30", Some(1)), b"{}").expect_err("times out");
        assert!(e.contains("timeout of 1 s"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(20));
    }

    #[test]
    fn a_hook_that_never_reads_a_large_state_does_not_hold_the_runtime() {
        // More than a socket buffer holds: a blocking writer would wait for the hook, which
        // never reads, and miss its timeout.
        let state = vec![b'x'; 4 << 20];
        let started = Instant::now();
        let e = run(&hook("sleep 30", Some(1)), &state).expect_err("times out");
        assert!(e.contains("timeout of 1 s"), "{e}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_timeout_kills_what_the_hook_forked_too() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pid_file = dir.path().join("child.pid");
        let script = format!("sleep 60 & echo $! > {}; wait", pid_file.display());
        run(&hook(&script, Some(1)), b"{}").expect_err("times out");
        let pid = std::fs::read_to_string(&pid_file).expect("the child's pid");
        let pid = pid.trim();
        // Killed; reaped by whoever adopted it, so wait for /proc to let go of it.
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| !s.contains(") Z "))
        {
            assert!(
                Instant::now() < deadline,
                "the hook's child {pid} survived its timeout"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_missing_program_is_an_error_that_names_why() {
        let mut h = hook("true", None);
        h.path = PathBuf::from("/nonexistent/hook");
        let e = run(&h, b"{}").expect_err("no such program");
        assert!(e.starts_with("cannot run it:"), "{e}");
    }

    #[test]
    fn hooks_from_the_spec_are_checked() {
        let parse = |json: &str| {
            let h: oci_spec::runtime::Hooks = serde_json::from_str(json).expect("json");
            Hooks::from_oci(&h)
        };
        let ok = parse(
            r#"{"poststop":[{"path":"/bin/true","args":["true"],"env":["A=b=c"],"timeout":2}]}"#,
        )
        .expect("valid");
        assert_eq!(ok.poststop[0].env, vec![("A".into(), "b=c".into())]);
        assert_eq!(ok.poststop[0].timeout, Some(Duration::from_secs(2)));
        assert!(!ok.sync_in_create());
        let (key, reason) =
            parse(r#"{"prestart":[{"path":"/a"},{"path":"rel"}]}"#).expect_err("relative");
        assert_eq!(key, "hooks.prestart[1]");
        assert!(reason.contains("not absolute"), "{reason}");
        let (key, _) = parse(r#"{"createRuntime":[{"path":"/a","timeout":0}]}"#).expect_err("zero");
        let (_, reason) = parse(r#"{"poststop":[{"path":"/a","timeout":9223372036854775807}]}"#)
            .expect_err("huge");
        assert!(reason.contains("1 to 86400"), "{reason}");
        assert_eq!(key, "hooks.createRuntime[0]");
        let (_, reason) =
            parse(r#"{"poststart":[{"path":"/a","env":["NOEQUALS"]}]}"#).expect_err("env");
        assert!(reason.contains("NAME=value"), "{reason}");
    }
}
