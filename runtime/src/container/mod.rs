//! Container execution: the OCI runtime operations `create`, `start`, `state`, `kill` and
//! `delete` (and `run`, which is create + start + wait) on a bundle.
//!
//! `create` clones the container's init straight into its new namespaces (one `clone`,
//! as crun does; no re-exec of the runtime as runc does), waits until the init has set up
//! the root file system and is parked on the exec fifo, records the state and returns.
//! `start` opens the fifo for reading, which lets the init exec the program.
//!
//! A container with a user namespace takes one more process, a helper that joins and
//! makes the namespaces in the order the kernel needs while the runtime writes the maps;
//! see [`userns`]. The exec fifo is opened by the runtime (`O_PATH`) and inherited, and
//! given to the container's root, so that an init in a user namespace can reach it
//! whatever the permissions of the state directory.
//!
//! `process.terminal` follows runc's `--console-socket` convention (see [`console`]): a
//! terminal needs the socket, the socket needs a terminal, and a terminal replaces the log.
//!
//! Hooks run at the points the spec names (see [`hooks`]): the init stops before
//! `pivot_root` for the runtime's `prestart` and `createRuntime` hooks and runs
//! `createContainer` itself; `startContainer` runs in the init after `start`, `poststart`
//! in `start`, `poststop` in `delete` (and when a hook made `create` fail).

pub mod caps;
pub mod cgroup;
pub mod console;
pub mod devices;
mod exec;
pub mod from_image;
pub mod hooks;
mod init;
pub mod inroot;
pub mod log;
pub mod rootfs;
pub mod seccomp;
pub mod spec;
pub mod state;
mod syscalls;
mod userns;

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::sys::stat::Mode;
use nix::unistd::Pid;

use crate::id::ContainerId;
pub use exec::{exec, ExecOptions};
pub use spec::{ContainerConfig, SpecError};
pub use state::{OciState, StateDir, StateError, Status, Stored};

/// Where runtimes keep container state by default.
pub const DEFAULT_STATE_ROOT: &str = "/run/gantry-runtime";

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("container {id}: {step}: {errno}")]
    Sys {
        id: String,
        step: &'static str,
        errno: nix::errno::Errno,
    },
    #[error("container {id}: init failed: {reason}")]
    Init { id: String, reason: String },
    /// A hook of `create` failed: the container is destroyed and `poststop` runs.
    #[error("container {id}: {reason}")]
    Hook { id: String, reason: String },
    #[error("container {id}: {reason}")]
    Options { id: String, reason: &'static str },
    #[error("container {id} is {status:?}; {what}")]
    WrongStatus {
        id: String,
        status: Status,
        what: &'static str,
    },
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
    #[error(transparent)]
    Seccomp(#[from] seccomp::SeccompError),
    #[error("container {id}: {source}")]
    Console {
        id: String,
        source: console::ConsoleError,
    },
    #[error("container {id}: network: {source}")]
    Network {
        id: String,
        source: crate::network::NetworkError,
    },
    #[error("container {id}: {path}: {source}")]
    Io {
        id: String,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Options of `create`.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub pid_file: Option<PathBuf>,
    /// Run without cgroup limits where the host has no cgroup v2 hierarchy.
    pub no_cgroups: bool,
    /// The cgroup v2 mount (default `/sys/fs/cgroup`).
    pub cgroup_root: Option<PathBuf>,
    /// Send the container's stdout and stderr to this file, a timestamped record per line
    /// (stdin is then /dev/null); otherwise the container shares the caller's stdio.
    pub log: Option<PathBuf>,
    /// Rotate the log file by size.
    pub log_rotation: Option<log::Rotation>,
    /// runc's `--console-socket`: where to send the pty of a container with
    /// `process.terminal` (and only of one).
    pub console_socket: Option<PathBuf>,
}

fn sys(id: &ContainerId, step: &'static str) -> impl FnOnce(nix::errno::Errno) -> ContainerError {
    let id = id.to_string();
    move |errno| ContainerError::Sys { id, step, errno }
}

/// Creates the container `id` from `bundle`: returns the init's pid once it is waiting for
/// `start`. On failure nothing is left: no process, no state directory.
pub fn create(
    states: &StateDir,
    id: &ContainerId,
    bundle: &Path,
    opts: &CreateOptions,
) -> Result<Pid, ContainerError> {
    let config = ContainerConfig::load(bundle)?;
    states.claim(id)?;
    // exec reads the settings from this copy, whatever happens to the bundle later.
    let saved = states.dir(id).join("config.json");
    if let Err(source) = std::fs::copy(config.bundle.join("config.json"), &saved) {
        let _ = states.remove(id);
        return Err(ContainerError::Io {
            id: id.to_string(),
            path: saved,
            source,
        });
    }
    let result = create_claimed(states, id, &config, opts);
    if result.is_err() {
        let _ = states.remove(id);
    }
    if let Err(ContainerError::Hook { .. }) = &result {
        // The spec's lifecycle goes on at "destroy": then the poststop hooks.
        let state = hook_state(
            id,
            &config.bundle,
            state::Status::Stopped,
            None,
            &config.annotations,
        );
        hooks::run_all_warning(&config.hooks, hooks::Kind::Poststop, &state);
    }
    result
}

/// The state hooks get on their stdin.
fn hook_state(
    id: &ContainerId,
    bundle: &Path,
    status: Status,
    pid: Option<i32>,
    annotations: &[(String, String)],
) -> Vec<u8> {
    hooks::State {
        oci_version: state::OCI_VERSION,
        id: id.as_str(),
        status,
        pid,
        bundle,
        annotations: annotations
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
    }
    .to_json()
}

/// The hooks of a created container, from the copy of its `config.json` in its state
/// directory; a copy that cannot be read is reported and counts as no hooks, so that
/// `start` and `delete` still work.
fn saved_hooks(states: &StateDir, id: &ContainerId) -> hooks::Hooks {
    let path = states.dir(id).join("config.json");
    hooks::Hooks::from_saved(&path).unwrap_or_else(|e| {
        eprintln!("gantry-runtime: warning: container {id}: its hooks cannot be read: {e}");
        hooks::Hooks::default()
    })
}

fn create_claimed(
    states: &StateDir,
    id: &ContainerId,
    config: &ContainerConfig,
    opts: &CreateOptions,
) -> Result<Pid, ContainerError> {
    let filters = match &config.seccomp {
        Some(profile) => profile.compile()?,
        None => Vec::new(),
    };
    let fifo = states.fifo(id);
    nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600))
        .map_err(sys(id, "make the exec fifo"))?;
    let fifo_fd = nix::fcntl::open(
        &fifo,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(sys(id, "open the exec fifo"))?;
    // SAFETY: open just returned this descriptor and nothing else owns it.
    let fifo_fd = unsafe { OwnedFd::from_raw_fd(fifo_fd) };
    let (ready_rd, ready_wr) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys(id, "make a pipe"))?;

    // Joining a PID namespace affects children only: do it here, before the clone (with a
    // user namespace, the helper joins it, before it leaves the host's privileges).
    for ns in config.namespaces.iter().filter(|_| !config.has_userns()) {
        if let (spec::NsKind::Pid, Some(path)) = (ns.kind, &ns.path) {
            let fd = nix::fcntl::open(
                path,
                nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(sys(id, "open the PID namespace to join"))?;
            // SAFETY: open just returned this descriptor and nothing else owns it.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWPID)
                .map_err(sys(id, "join the PID namespace"))?;
        }
    }
    // A new cgroup namespace is made by the init itself, once it is in its cgroup, so
    // that the namespace's root is the container's cgroup.
    let flags = config
        .namespaces
        .iter()
        .filter(|n| n.path.is_none() && n.kind != spec::NsKind::Cgroup)
        .fold(nix::sched::CloneFlags::empty(), |f, n| {
            f | n.kind.clone_flag()
        });
    let cgroup_root = opts
        .cgroup_root
        .clone()
        .unwrap_or_else(|| PathBuf::from(cgroup::DEFAULT_ROOT));
    let cgroup = if cgroup::is_v2(&cgroup_root) {
        // The bundle's device rules, then its nodes' and those every container has (which win).
        let mut rules = config.devices.clone();
        // The nodes of linux.devices may be made and opened, as runc allows them.
        rules.extend(config.nodes.iter().filter_map(devices::Node::rule));
        rules.extend(devices::defaults());
        Some(cgroup::Cgroup::create(
            &cgroup_root,
            &cgroup::Cgroup::relative_path(id.as_str(), config.cgroups_path.as_deref()),
            &config.limits,
            &rules,
        )?)
    } else if (config.limits.is_empty() && config.cgroups_path.is_none()) || opts.no_cgroups {
        None
    } else {
        return Err(cgroup::CgroupError::NoV2 { path: cgroup_root }.into());
    };
    // Without a cgroup there are no device rules, and CAP_MKNOD would let the container
    // make a node for a host disk in its /dev and read it.
    if cgroup.is_none()
        && config.process.caps.bounding & ::caps::Capability::CAP_MKNOD.bitmask() != 0
    {
        return Err(ContainerError::Init {
            id: id.to_string(),
            reason: "CAP_MKNOD needs device rules, which need cgroup v2 (see --cgroup-root)".into(),
        });
    }
    let result = clone_init(
        states,
        id,
        config,
        opts,
        flags,
        filters,
        (&fifo, fifo_fd),
        ready_rd,
        ready_wr,
        cgroup.as_ref(),
    );
    if result.is_err() {
        if let Some(cg) = &cgroup {
            let _ = cg.remove();
        }
    }
    result
}

#[allow(clippy::too_many_arguments)] // the steps of create, split for the cleanup above
fn clone_init(
    states: &StateDir,
    id: &ContainerId,
    config: &ContainerConfig,
    opts: &CreateOptions,
    flags: nix::sched::CloneFlags,
    filters: Vec<seccompiler::BpfProgram>,
    (fifo, fifo_fd): (&Path, OwnedFd),
    ready_rd: OwnedFd,
    ready_wr: OwnedFd,
    cgroup: Option<&cgroup::Cgroup>,
) -> Result<Pid, ContainerError> {
    let (go_rd, go_wr) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys(id, "make a pipe"))?;

    let stdio = match &opts.log {
        Some(path) => {
            Some(
                log::start(path, opts.log_rotation).map_err(|source| ContainerError::Io {
                    id: id.to_string(),
                    path: path.clone(),
                    source,
                })?,
            )
        }
        None => None,
    };
    let console = console_socket(id, config, opts)?;
    let mut stack = vec![0u8; 1 << 20];
    // Moved into the child's closure: the parent's copies close when clone returns, so
    // the logger sees end-of-file when the container's last process is gone.
    let mut handoff = Some(init::Handoff {
        ready: ready_wr,
        go: go_rd,
        fifo: fifo_fd,
        stdio,
        console,
    });
    let keep = handoff.as_ref().map(init::Handoff::fds).unwrap_or_default();
    // With a user namespace the helper has joined the namespaces named by path already.
    let init_joins = !config.has_userns();
    let init_cb: nix::sched::CloneCb = Box::new(move || -> isize {
        match handoff.take() {
            Some(handoff) => init::run(config, &filters, handoff, init_joins),
            None => 1,
        }
    });
    let (child, in_cgroup) = if config.has_userns() {
        (
            clone_through_helper(id, config, fifo, init_cb, &keep, &mut stack)?,
            false,
        )
    } else {
        let mut init_cb = init_cb;
        // Born in its cgroup where the kernel can (see `Cgroup::clone_into`).
        let born_in = match cgroup {
            // SAFETY: this process is single-threaded at this point (the runtime command
            // line starts no threads), so the child gets a consistent copy of memory; the
            // child ends in execve or _exit.
            Some(cg) => unsafe { cg.clone_into(flags, &mut *init_cb) }
                .map_err(sys(id, "clone the init process"))?,
            None => None,
        };
        match born_in {
            Some(pid) => (pid, true),
            None => (
                // SAFETY: as above; the child runs on its own 1 MiB stack and never
                // returns into code that expects the parent's stack.
                unsafe { nix::sched::clone(init_cb, &mut stack, flags, Some(libc::SIGCHLD)) }
                    .map_err(sys(id, "clone the init process"))?,
                false,
            ),
        }
    };
    let mut go = std::fs::File::from(go_wr);
    let result = after_clone(
        states, id, config, opts, child, &mut go, ready_rd, cgroup, in_cgroup,
    );
    if result.is_err() {
        // Whatever failed, the init must not outlive this create.
        let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(child, None);
    }
    result
}

/// The connection to `--console-socket`, checked against `process.terminal` as runc
/// does.
fn console_socket(
    id: &ContainerId,
    config: &ContainerConfig,
    opts: &CreateOptions,
) -> Result<Option<std::os::unix::net::UnixStream>, ContainerError> {
    let refuse = |reason: &'static str| ContainerError::Options {
        id: id.to_string(),
        reason,
    };
    match (&opts.console_socket, config.process.terminal) {
        (None, false) => Ok(None),
        (None, true) => Err(refuse(
            "process.terminal needs --console-socket to send the terminal to",
        )),
        (Some(_), false) => Err(refuse(
            "--console-socket needs process.terminal in the bundle",
        )),
        (Some(_), true) if opts.log.is_some() => Err(refuse(
            "a terminal and a container log cannot both take the output",
        )),
        (Some(path), true) => std::os::unix::net::UnixStream::connect(path)
            .map(Some)
            .map_err(|source| ContainerError::Io {
                id: id.to_string(),
                path: path.clone(),
                source,
            }),
    }
}

/// Clones the helper that makes the user namespace and clones `init` (see [`userns`]);
/// returns the init's pid, once the exec fifo belongs to the container's root.
fn clone_through_helper(
    id: &ContainerId,
    config: &ContainerConfig,
    fifo: &Path,
    init_cb: nix::sched::CloneCb,
    keep: &[std::os::fd::RawFd],
    stack: &mut [u8],
) -> Result<Pid, ContainerError> {
    let io = |path: &str| {
        let (id, path) = (id.to_string(), PathBuf::from(path));
        move |source| ContainerError::Io { id, path, source }
    };
    let (mut sync, sync_child) =
        std::os::unix::net::UnixStream::pair().map_err(io("<socket to the helper>"))?;
    let mut parts = Some((sync_child, init_cb));
    let helper_cb = Box::new(move || -> isize {
        match parts.take() {
            Some((sync, init_cb)) => userns::helper(config, sync, init_cb, keep),
            None => 1,
        }
    });
    // SAFETY: as for the init's clone: single-threaded, own stack, ends in _exit.
    let helper = unsafe {
        nix::sched::clone(
            helper_cb,
            stack,
            nix::sched::CloneFlags::empty(),
            Some(libc::SIGCHLD),
        )
    }
    .map_err(sys(id, "clone the user namespace helper"))?;
    let failed = |pid: Pid, reason: String| {
        let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid, None);
        ContainerError::Init {
            id: id.to_string(),
            reason,
        }
    };
    let init =
        userns::await_init(config, helper, &mut sync).map_err(|reason| failed(helper, reason))?;
    // The init opens the fifo for writing as the container's root.
    let owned = userns::host_root(init)
        .ok_or_else(|| "root is not mapped in the container's user namespace".to_owned())
        .and_then(|(uid, gid)| {
            nix::unistd::chown(fifo, Some(uid), Some(gid))
                .map_err(|e| format!("give the exec fifo to the container's root: {e}"))
        });
    match owned {
        Ok(()) => Ok(init),
        Err(reason) => Err(failed(init, reason)),
    }
}

/// Reads up to and including a newline (or to end-of-file), a byte at a time so that
/// nothing after the line is taken from the stream.
fn read_line(rd: &mut impl Read) -> Vec<u8> {
    let mut msg = Vec::new();
    let mut byte = [0u8; 1];
    while !msg.ends_with(b"\n") && matches!(rd.read(&mut byte), Ok(1)) {
        msg.push(byte[0]);
    }
    msg
}

/// The runtime's side of the hand-shake with a freshly cloned init: put it in its cgroup,
/// let it set up, wait for it to be ready, save the state, then let it outlive us.
#[allow(clippy::too_many_arguments)] // the pieces clone_init set up, passed on as they are
fn after_clone(
    states: &StateDir,
    id: &ContainerId,
    config: &ContainerConfig,
    opts: &CreateOptions,
    child: Pid,
    go: &mut std::fs::File,
    ready_rd: OwnedFd,
    cgroup: Option<&cgroup::Cgroup>,
    in_cgroup: bool,
) -> Result<Pid, ContainerError> {
    if let Some(cg) = cgroup.filter(|_| !in_cgroup) {
        cg.add(child.as_raw()).map_err(ContainerError::Cgroup)?;
    }
    std::io::Write::write_all(go, b"g").map_err(|source| ContainerError::Io {
        id: id.to_string(),
        path: PathBuf::from("<pipe to the init>"),
        source,
    })?;

    // The child holds its own copy of the write end; ours is in the closure, drop it so
    // that EOF means the child is gone.
    // One line: READY, or "error: …". EOF first means the init died. With hooks, first
    // HOOKS: the namespaces and mounts exist, pivot_root has not happened.
    let mut rd = std::fs::File::from(ready_rd);
    let mut msg = read_line(&mut rd);
    if msg == init::HOOKS {
        let state = hook_state(
            id,
            &config.bundle,
            Status::Created,
            Some(child.as_raw()),
            &config.annotations,
        );
        for kind in [hooks::Kind::Prestart, hooks::Kind::CreateRuntime] {
            hooks::run_all(&config.hooks, kind, &state).map_err(|e| ContainerError::Hook {
                id: id.to_string(),
                reason: e.to_string(),
            })?;
        }
        let mut answer = vec![init::HOOKS_DONE];
        answer.extend((state.len() as u32).to_le_bytes());
        answer.extend(&state);
        std::io::Write::write_all(go, &answer).map_err(|source| ContainerError::Io {
            id: id.to_string(),
            path: PathBuf::from("<pipe to the init>"),
            source,
        })?;
        msg = read_line(&mut rd);
    }
    if let Some(reason) = msg
        .strip_prefix(init::HOOK_ERROR)
        .map(|r| String::from_utf8_lossy(r).trim().to_owned())
    {
        return Err(ContainerError::Hook {
            id: id.to_string(),
            reason,
        });
    }
    if msg != init::READY {
        let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(child, None);
        let text = String::from_utf8_lossy(&msg);
        let reason = text
            .trim()
            .strip_prefix("error: ")
            .unwrap_or(if text.is_empty() {
                "it exited before it was ready"
            } else {
                text.trim()
            })
            .to_owned();
        return Err(ContainerError::Init {
            id: id.to_string(),
            reason,
        });
    }
    let start_time =
        state::process_start_time(child.as_raw()).ok_or_else(|| ContainerError::Init {
            id: id.to_string(),
            reason: "it exited right after it was ready".into(),
        })?;
    states.save(
        id,
        &Stored {
            id: id.to_string(),
            pid: child.as_raw(),
            start_time,
            bundle: config.bundle.clone(),
            created: state::now_rfc3339(),
            annotations: config.annotations.clone(),
            cgroup: cgroup.map(|c| c.path.clone()),
        },
    )?;
    if let Some(pid_file) = &opts.pid_file {
        write_pid_file(pid_file, child.as_raw()).map_err(|source| ContainerError::Io {
            id: id.to_string(),
            path: pid_file.clone(),
            source,
        })?;
    }
    // Recorded: the init may now outlive this process. It closes its end of the ready
    // pipe once it no longer dies with us; wait for that before returning (and exiting).
    std::io::Write::write_all(go, b"c").map_err(|source| ContainerError::Io {
        id: id.to_string(),
        path: PathBuf::from("<pipe to the init>"),
        source,
    })?;
    let mut rest = Vec::new();
    let _ = rd.read_to_end(&mut rest);
    Ok(child)
}

/// Writes `pid` to `path` atomically (a temporary file in the same directory, renamed
/// over it), as runc does: a reader never sees a partial pid. No newline, like runc's.
pub(super) fn write_pid_file(path: &Path, pid: i32) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, pid.to_string().as_bytes())?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Waits up to `ms` for `f` to have something to read (or its end).
fn poll_in(f: &std::fs::File, ms: u16) {
    let mut fds = [nix::poll::PollFd::new(
        std::os::fd::AsFd::as_fd(f),
        nix::poll::PollFlags::POLLIN,
    )];
    let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms));
}

/// Lets a created container's init exec its program, and returns once it has: after the
/// `startContainer` hooks, and with the error if the init failed before the exec. Then
/// the `poststart` hooks.
pub fn start(states: &StateDir, id: &ContainerId) -> Result<(), ContainerError> {
    let stored = states.load(id)?;
    let status = states.status(id, &stored);
    if status != Status::Created {
        return Err(ContainerError::WrongStatus {
            id: id.to_string(),
            status,
            what: "only a created container can be started",
        });
    }
    let fifo = states.fifo(id);
    let io = |source| ContainerError::Io {
        id: id.to_string(),
        path: fifo.clone(),
        source,
    };
    // The init is blocked opening the fifo for writing; opening it for reading lets it
    // through and it writes a byte. Opened non-blocking and polled, so that an init that
    // dies or stops on the way cannot hold `start` forever.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .map_err(io)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = false;
    while !got {
        poll_in(&f, 50);
        let mut byte = [0u8; 1];
        got = matches!((&f).read(&mut byte), Ok(1));
        if !got && (states.status(id, &stored) == Status::Stopped || Instant::now() > deadline) {
            return Err(ContainerError::Init {
                id: id.to_string(),
                reason: "the init did not take the start signal (it died or is stopped)".into(),
            });
        }
    }
    std::fs::remove_file(&fifo).map_err(io)?;
    let hooks = saved_hooks(states, id);
    // The init keeps the fifo open until it execs the program (after the startContainer
    // hooks): end of file means the program runs; text means what failed instead.
    // The hooks' timeouts and 10 s; 10 minutes when a hook has none (a stopped init, or a
    // hook that never ends, must not hold `start` for ever).
    let limit = Instant::now()
        + hooks
            .start_container
            .iter()
            .map(|h| h.timeout)
            .try_fold(Duration::from_secs(10), |sum, t| t.map(|t| sum + t))
            .unwrap_or(Duration::from_secs(600));
    let mut said = Vec::new();
    loop {
        poll_in(&f, 50);
        let mut buf = [0u8; 512];
        match (&f).read(&mut buf) {
            Ok(0) => break,
            Ok(n) if said.len() < 4096 => said.extend(&buf[..n]),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(io(e)),
        }
        if Instant::now() > limit {
            // It must not exec the program after `start` said it failed.
            let _ = nix::sys::signal::kill(Pid::from_raw(stored.pid), Signal::SIGKILL);
            return Err(ContainerError::Init {
                id: id.to_string(),
                reason: "the init did not exec the program in time (startContainer hooks \
                         past their timeouts, or the init is stopped)"
                    .into(),
            });
        }
    }
    if !said.is_empty() {
        return Err(ContainerError::Init {
            id: id.to_string(),
            reason: String::from_utf8_lossy(&said).trim().to_owned(),
        });
    }
    if !hooks.poststart.is_empty() {
        let state = hook_state(
            id,
            &stored.bundle,
            Status::Running,
            Some(stored.pid),
            &stored.annotations,
        );
        hooks::run_all_warning(&hooks, hooks::Kind::Poststart, &state);
    }
    Ok(())
}

pub fn state(states: &StateDir, id: &ContainerId) -> Result<OciState, ContainerError> {
    let stored = states.load(id)?;
    Ok(states.oci_state(id, &stored))
}

/// Sends `signal` to the container's init.
pub fn kill(states: &StateDir, id: &ContainerId, signal: Signal) -> Result<(), ContainerError> {
    let stored = states.load(id)?;
    let status = states.status(id, &stored);
    if status == Status::Stopped {
        return Err(ContainerError::WrongStatus {
            id: id.to_string(),
            status,
            what: "there is nothing to signal",
        });
    }
    nix::sys::signal::kill(Pid::from_raw(stored.pid), signal).map_err(sys(id, "send the signal"))
}

/// Removes a stopped container; with `force`, kills a live one first.
pub fn delete(states: &StateDir, id: &ContainerId, force: bool) -> Result<(), ContainerError> {
    let stored = match states.load(id) {
        Ok(s) => s,
        // A create that crashed before it saved the state leaves only the directory.
        Err(StateError::NotFound(_)) if force && states.dir(id).exists() => {
            states.remove(id)?;
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let status = states.status(id, &stored);
    if status != Status::Stopped {
        if !force {
            return Err(ContainerError::WrongStatus {
                id: id.to_string(),
                status,
                what: "stop it first or delete with --force",
            });
        }
        let _ = nix::sys::signal::kill(Pid::from_raw(stored.pid), Signal::SIGKILL);
        // Its parent reaps it; wait until the pid no longer names the container.
        let deadline = Instant::now() + Duration::from_secs(10);
        while states.status(id, &stored) != Status::Stopped {
            // A child of ours (as with `run`) must be reaped here.
            let _ = nix::sys::wait::waitpid(
                Pid::from_raw(stored.pid),
                Some(nix::sys::wait::WaitPidFlag::WNOHANG),
            );
            if Instant::now() > deadline {
                return Err(ContainerError::WrongStatus {
                    id: id.to_string(),
                    status: states.status(id, &stored),
                    what: "it did not die within 10 s of SIGKILL",
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    // Mounts live in the container's mount namespace and went with its last process; the
    // cgroup is killed (exec'd processes too) and removed.
    if let Some(path) = &stored.cgroup {
        cgroup::Cgroup { path: path.clone() }.remove()?;
    }
    // The network last: its rules and lease go, and the veth if the namespace's end did
    // not take it along. A failure keeps the state, so that the delete can be repeated.
    if let Some(record) = network_record(states, id)? {
        record
            .detach(id)
            .map_err(|source| ContainerError::Network {
                id: id.to_string(),
                source,
            })?;
    }
    let hooks = saved_hooks(states, id);
    states.remove(id)?;
    let state = hook_state(
        id,
        &stored.bundle,
        Status::Stopped,
        None,
        &stored.annotations,
    );
    hooks::run_all_warning(&hooks, hooks::Kind::Poststop, &state);
    Ok(())
}

const NETWORK_RECORD: &str = "network.json";

/// Notes, before attaching container `id` to a network, what `delete` needs to take it
/// off again, even after the runtime that attached it crashed.
pub fn record_network(
    states: &StateDir,
    id: &ContainerId,
    record: &crate::network::Record,
) -> Result<(), ContainerError> {
    let path = states.dir(id).join(NETWORK_RECORD);
    let json = serde_json::to_vec(record).map_err(|e| StateError::Corrupt {
        id: id.to_string(),
        reason: e.to_string(),
    })?;
    crate::fsutil::write_atomic(&path, &json).map_err(|source| ContainerError::Io {
        id: id.to_string(),
        path,
        source,
    })
}

fn network_record(
    states: &StateDir,
    id: &ContainerId,
) -> Result<Option<crate::network::Record>, ContainerError> {
    let path = states.dir(id).join(NETWORK_RECORD);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            StateError::Corrupt {
                id: id.to_string(),
                reason: format!("{}: {e}", path.display()),
            }
            .into()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ContainerError::Io {
            id: id.to_string(),
            path,
            source,
        }),
    }
}

/// The signals a foreground runtime (`run`) passes on to the container.
const FORWARDED: [Signal; 6] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// Blocks the forwarded signals and SIGCHLD in the calling (single-threaded) runtime, so
/// that [`wait_forwarding`] can take them in turn. Call before `create`: the container's
/// init resets its own mask.
pub fn block_forwarded_signals() -> Result<nix::sys::signal::SigSet, nix::errno::Errno> {
    let mut set = nix::sys::signal::SigSet::empty();
    for s in FORWARDED {
        set.add(s);
    }
    set.add(Signal::SIGCHLD);
    set.thread_block()?;
    Ok(set)
}

/// Waits for the container's init `pid`, passing on the forwarded signals the runtime
/// receives meanwhile, and returns how it ended.
pub fn wait_forwarding(
    pid: Pid,
    set: &nix::sys::signal::SigSet,
) -> Result<nix::sys::wait::WaitStatus, nix::errno::Errno> {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG))? {
            WaitStatus::StillAlive => {}
            done => return Ok(done),
        }
        let sig = set.wait()?;
        if sig != Signal::SIGCHLD {
            let _ = nix::sys::signal::kill(pid, sig);
        }
    }
}

/// Parses a signal as `kill` accepts it: `TERM`, `SIGTERM` or `15`.
pub fn parse_signal(s: &str) -> Option<Signal> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).ok();
    }
    let name = s.to_ascii_uppercase();
    let name = if name.starts_with("SIG") {
        name
    } else {
        format!("SIG{name}")
    };
    name.parse().ok()
}

/// What a waited-for container ended with, as a shell reports it: the exit code, or 128 +
/// the signal.
pub fn exit_code(status: nix::sys::wait::WaitStatus) -> Option<i32> {
    use nix::sys::wait::WaitStatus;
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_by_name_short_name_and_number() {
        assert_eq!(parse_signal("TERM"), Some(Signal::SIGTERM));
        assert_eq!(parse_signal("sigkill"), Some(Signal::SIGKILL));
        assert_eq!(parse_signal("9"), Some(Signal::SIGKILL));
        assert_eq!(parse_signal("NOPE"), None);
        assert_eq!(parse_signal("99"), None);
    }
}
