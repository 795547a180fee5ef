//! `exec`: another process in a running container. It joins every namespace of the
//! container's init (opened from `/proc/<pid>/ns/*` before anything changes), and gets the
//! same security settings as the container's process: capabilities, `no_new_privs`,
//! rlimits, user and the seccomp filters, all from the bundle's config. The user
//! namespace comes first; those the container shares with the runtime are left alone. A
//! PID namespace takes effect for children only, so the runtime forks once to join and
//! once more to run the program inside, and waits for it.
//!
//! With [`ExecOptions::tty`] the program gets a pty of its own, opened from the
//! container's devpts in the container's mount namespace and sized like the caller's
//! terminal; its master comes back over a socket pair and the runtime relays it to its
//! own stdin and stdout (see [`super::console`]). The process's `terminal` setting from
//! the bundle does not carry over: an exec has a terminal when asked for one, as with
//! runc's `--tty`.

use std::io::IsTerminal;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;

use nix::fcntl::{open, OFlag};
use nix::sched::setns;
use nix::sys::stat::Mode;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use super::spec::{ContainerConfig, NsKind, ProcessSpec};
use super::{console, init, ContainerError, StateDir, Status};
use crate::id::ContainerId;

/// What to run, on top of the container's own process settings.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: Option<std::path::PathBuf>,
    /// Kill the process (SIGKILL) if it runs longer; its exit code is then 137.
    pub timeout: Option<std::time::Duration>,
    /// Give the process a pty and relay it to the caller's stdin and stdout.
    pub tty: bool,
    /// Write the process's pid (in the runtime's PID namespace) here once it runs, as
    /// runc's `exec --pid-file` does.
    pub pid_file: Option<std::path::PathBuf>,
}

/// Runs `opts.args` in the running container `id` and returns its wait status as an exit
/// code (128 + signal when killed).
pub fn exec(
    states: &StateDir,
    id: &ContainerId,
    opts: &ExecOptions,
) -> Result<i32, ContainerError> {
    let stored = states.load(id)?;
    let status = states.status(id, &stored);
    if status != Status::Running {
        return Err(ContainerError::WrongStatus {
            id: id.to_string(),
            status,
            what: "exec needs a running container",
        });
    }
    // The settings saved at create, not the bundle as it is now.
    let saved = states.dir(id).join("config.json");
    let spec = oci_spec::runtime::Spec::load(&saved).map_err(|e| {
        ContainerError::Spec(super::SpecError::Load {
            bundle: saved.clone(),
            reason: e.to_string(),
        })
    })?;
    let config = ContainerConfig::from_spec(&stored.bundle, &spec)?;
    if opts.args.is_empty() {
        return Err(ContainerError::Init {
            id: id.to_string(),
            reason: "exec needs a command".into(),
        });
    }
    let mut process: ProcessSpec = config.process.clone();
    process.args = opts.args.clone();
    for e in &opts.env {
        let key = e.split('=').next().unwrap_or("");
        process.env.retain(|x| x.split('=').next() != Some(key));
        process.env.push(e.clone());
    }
    if let Some(cwd) = &opts.cwd {
        process.cwd = cwd.clone();
    }
    process.terminal = opts.tty;
    let filters = match &config.seccomp {
        Some(p) => p.compile()?,
        None => Vec::new(),
    };
    // Open every namespace first: joining the mount namespace changes what /proc shows.
    // The user namespace first: the others are then joined with its privileges, and the
    // process never runs as the host's root in there.
    let mut namespaces = Vec::new();
    for kind in [
        NsKind::User,
        NsKind::Ipc,
        NsKind::Uts,
        NsKind::Net,
        NsKind::Pid,
        NsKind::Cgroup,
        NsKind::Mount,
    ] {
        let path = format!("/proc/{}/ns/{}", stored.pid, kind.proc_name());
        // One the container shares with the runtime needs no joining, and in a user
        // namespace could not be joined.
        let ino = |p: &str| std::fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
        if ino(&path).is_some() && ino(&path) == ino(&format!("/proc/self/ns/{}", kind.proc_name()))
        {
            continue;
        }
        let fd = open(
            path.as_str(),
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|errno| ContainerError::Sys {
            id: id.to_string(),
            step: "open the container's namespaces",
            errno,
        })?;
        // SAFETY: open just returned this descriptor and nothing else owns it.
        namespaces.push((kind, unsafe { OwnedFd::from_raw_fd(fd) }));
    }
    let sys = |step| {
        let id = id.to_string();
        move |errno| ContainerError::Sys { id, step, errno }
    };
    let console_err = |source| ContainerError::Console {
        id: id.to_string(),
        source,
    };
    // The process's end of the pair sends the pty's master back; the signals a terminal
    // relay takes are blocked before the fork (the helper unblocks its own).
    let mut terminal = None;
    if opts.tty {
        let pair = UnixStream::pair()
            .map_err(|source| console::ConsoleError::Pair { source })
            .map_err(console_err)?;
        let signals = super::block_forwarded_signals().map_err(sys("block signals"))?;
        let stdin = std::io::stdin();
        let size = stdin
            .is_terminal()
            .then(|| console::window_size(stdin.as_fd()).ok())
            .flatten();
        terminal = Some((pair, signals, size));
    }
    // The helper sends the process's pid back on this pipe: it is the one that forks it,
    // and it is in the container's mount namespace, where the pid file's path means
    // nothing.
    let pid_pipe = match opts.pid_file {
        Some(_) => Some(nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(sys("make a pipe"))?),
        None => None,
    };
    // SAFETY: the runtime command line is single-threaded, so the child gets a consistent
    // copy of memory; it only makes system calls and execs or exits.
    match unsafe { fork() }.map_err(sys("fork"))? {
        ForkResult::Parent { child } => {
            if let (Some((rd, wr)), Some(path)) = (pid_pipe, &opts.pid_file) {
                drop(wr);
                if let Err(e) = record_pid(rd, path) {
                    // The process would run with nobody knowing its pid: end it (it
                    // dies with the helper).
                    let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                    let _ = waitpid(child, None);
                    return Err(ContainerError::Io {
                        id: id.to_string(),
                        path: path.clone(),
                        source: e,
                    });
                }
            }
            let status = match terminal {
                Some(((ours, theirs), signals, _)) => {
                    drop(theirs);
                    match console::recv_fd(&ours) {
                        Ok((_, master)) => console::Relay::new(master, None)
                            .and_then(|r| r.run(child, &signals))
                            .map_err(console_err)?,
                        // The process said why on stderr and exits.
                        Err(_) => waitpid(child, None).map_err(sys("wait"))?,
                    }
                }
                None => waitpid(child, None).map_err(sys("wait"))?,
            };
            Ok(super::exit_code(status).unwrap_or(1))
        }
        ForkResult::Child => {
            let terminal = terminal.map(|((ours, theirs), _, size)| {
                drop(ours);
                (theirs, size)
            });
            let pid_out = pid_pipe.map(|(rd, wr)| {
                drop(rd);
                std::fs::File::from(wr)
            });
            // Only what the helper needs: nothing of the runtime's may be reachable through
            // /proc/self/fd once the program's cwd is set.
            let keep: Vec<_> = namespaces
                .iter()
                .map(|(_, fd)| fd.as_raw_fd())
                .chain(terminal.as_ref().map(|(s, _)| s.as_raw_fd()))
                .chain(pid_out.as_ref().map(|f| f.as_raw_fd()))
                .collect();
            if let Err(e) = init::close_fds_except(&keep) {
                eprintln!("gantry-runtime exec: {e}");
                exit(1);
            }
            init::harden_child();
            // If the caller dies (a health check killed at its deadline), so does this
            // helper, and with it (below) the process in the container.
            let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
            // Into the container's cgroup first, while the host's cgroup tree is in view.
            if let Some(cg) = &stored.cgroup {
                if let Err(e) = std::fs::write(cg.join("cgroup.procs"), "0") {
                    eprintln!("gantry-runtime exec: join cgroup {}: {e}", cg.display());
                    exit(1);
                }
            }
            for (kind, fd) in &namespaces {
                if let Err(e) = setns(fd, kind.clone_flag()) {
                    eprintln!(
                        "gantry-runtime exec: join the {} namespace: {e}",
                        kind.proc_name()
                    );
                    exit(1);
                }
            }
            drop(namespaces);
            // With a pid file, its pid is sent once the process runs the program: its end
            // of this pipe closes on execve (or when it dies before).
            let execed = match pid_out {
                Some(_) => match nix::unistd::pipe2(OFlag::O_CLOEXEC) {
                    Ok(pair) => Some(pair),
                    Err(e) => {
                        eprintln!("gantry-runtime exec: make a pipe: {e}");
                        exit(1);
                    }
                },
                None => None,
            };
            // Now in the container's PID namespace for children: fork the real process.
            // SAFETY: still single-threaded (this is the forked child).
            match unsafe { fork() } {
                Ok(ForkResult::Parent { child }) => {
                    drop(terminal);
                    if let (Some(mut out), Some((rd, wr))) = (pid_out, execed) {
                        drop(wr);
                        let mut rest = Vec::new();
                        let _ = std::io::Read::read_to_end(&mut std::fs::File::from(rd), &mut rest);
                        // fork gave the pid as the runtime's namespace sees it: this
                        // helper joined the container's PID namespace for its children
                        // only.
                        let _ = std::io::Write::write_all(&mut out, &child.as_raw().to_le_bytes());
                    }
                    exit(match opts.timeout {
                        Some(limit) => wait_code_within(child, limit),
                        None => wait_code(child),
                    })
                }
                Ok(ForkResult::Child) => {
                    let keep: Vec<_> = terminal
                        .iter()
                        .map(|(s, _)| s.as_raw_fd())
                        .chain(execed.as_ref().map(|(_, wr)| wr.as_raw_fd()))
                        .collect();
                    if let Err(e) = init::close_fds_except(&keep) {
                        eprintln!("gantry-runtime exec: {e}");
                        exit(127);
                    }
                    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
                    if let Some((socket, size)) = &terminal {
                        if let Err(e) = console::attach_sized(socket, *size) {
                            eprintln!("gantry-runtime exec: terminal: {e}");
                            exit(127);
                        }
                    }
                    let err = init::exec_process(&process, &filters, &mut || Ok(()));
                    eprintln!("gantry-runtime exec: {err}");
                    exit(127);
                }
                Err(e) => {
                    eprintln!("gantry-runtime exec: fork: {e}");
                    exit(1);
                }
            }
        }
    }
}

/// Reads the process's pid from the helper and writes it to `path`. The helper closes
/// the pipe without writing when it fails before the fork; it then says why on stderr.
fn record_pid(rd: OwnedFd, path: &std::path::Path) -> std::io::Result<()> {
    let mut buf = [0u8; 4];
    match std::io::Read::read_exact(&mut std::fs::File::from(rd), &mut buf) {
        Ok(()) => super::write_pid_file(path, i32::from_le_bytes(buf)),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(()),
        Err(e) => Err(e),
    }
}

fn wait_code(child: Pid) -> i32 {
    match waitpid(child, None) {
        Ok(WaitStatus::Exited(_, code)) => code,
        Ok(WaitStatus::Signaled(_, sig, _)) => 128 + sig as i32,
        _ => 1,
    }
}

/// Waits for `child` at most `limit`, then kills it; 137 when it had to be killed.
fn wait_code_within(child: Pid, limit: std::time::Duration) -> i32 {
    let deadline = std::time::Instant::now() + limit;
    loop {
        match waitpid(child, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, sig, _)) => return 128 + sig as i32,
            _ => return 1,
        }
        if std::time::Instant::now() >= deadline {
            let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
            let _ = waitpid(child, None);
            return 137;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn exit(code: i32) -> ! {
    // SAFETY: _exit ends the forked child at once, without the parent's atexit handlers
    // or its buffered output.
    unsafe { libc::_exit(code) }
}
