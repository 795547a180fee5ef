//! The container's init process: what runs in the child after `clone`, in its new
//! namespaces. It joins the namespaces the bundle names by path (unless the user
//! namespace helper has, see `userns`), sets the host name,
//! prepares the root file system, reports to the runtime that it is ready (or why it is
//! not), waits for `start` on the exec fifo, drops privileges and execs the program.
//!
//! Order of the privilege drop, as runc does it: rlimits and OOM score while still
//! privileged; bounding set; `PR_SET_KEEPCAPS`; groups, gid, uid; then the effective,
//! permitted and inheritable sets; ambient; `no_new_privs`; the bundle's seccomp filters
//! and `execve` last, with nothing of the runtime's own in between (see
//! [`exec_process`] for the whole order, and for the one exception: without
//! `no_new_privs` the filters must go in before the user switch).

use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;

use seccompiler::BpfProgram;

use super::rootfs;
use super::seccomp::Profile;
use super::spec::{ContainerConfig, ProcessSpec};

/// The init's message to the runtime when its set-up is done.
pub const READY: &[u8] = b"ready\n";

/// Makes this process (a copy of the runtime) safe to run next to container code: not
/// dumpable, so that nothing in the container can open `/proc/<pid>/exe` (the runtime's
/// binary on the host, CVE-2019-5736) or its memory; default signal dispositions and an
/// empty mask, which the program should inherit (Rust's runtime ignores SIGPIPE).
pub(super) fn harden_child() {
    // SAFETY: prctl with plain integers touches no memory of ours.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    // The raw system call, not libc's wrapper, which refuses the signals libc reserves
    // for itself (32 and 33) and would leave them as they were.
    // SAFETY: a zeroed sigaction is SIG_DFL with no flags and an empty mask.
    let dfl: libc::sigaction = unsafe { std::mem::zeroed() };
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: `dfl` outlives the call, the old action is not asked for, and 8 is the
        // kernel's sigset size; SIG_DFL is valid for every catchable signal.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &dfl as *const libc::sigaction,
                std::ptr::null_mut::<libc::sigaction>(),
                8usize,
            )
        };
    }
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    );
}

/// Marks every descriptor from 3 up close-on-exec, so that nothing the runtime's caller
/// left open (a directory of the host, a socket) reaches the container.
pub(super) fn close_inherited_fds() -> Result<(), String> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on descriptors.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc != 0 {
        return Err(format!(
            "mark inherited descriptors close-on-exec: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Closes every descriptor from 3 up but `keep`, so that nothing the runtime had open (the
/// host's cgroup directory `clone3` needed, a namespace, whatever its caller left) can be
/// reached through `/proc/self/fd` (CVE-2024-21626). First thing in every child that will
/// run container code, before any path from the container's config is touched.
pub(super) fn close_fds_except(keep: &[RawFd]) -> Result<(), String> {
    let mut keep: Vec<u32> = keep
        .iter()
        .filter_map(|fd| u32::try_from(*fd).ok())
        .filter(|fd| *fd > 2)
        .collect();
    keep.sort_unstable();
    keep.dedup();
    let mut first = 3u32;
    for fd in keep {
        if fd > first {
            close_range(first, fd - 1)?;
        }
        first = fd + 1;
    }
    close_range(first, u32::MAX)
}

fn close_range(first: u32, last: u32) -> Result<(), String> {
    // SAFETY: close_range only closes this process's descriptors; none in the range is
    // owned by live Rust objects the caller will use (the caller keeps those out of it).
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::ENOSYS) {
        return Err(format!("close descriptors {first}-{last}: {err}"));
    }
    // Before Linux 5.9: one at a time, up to the descriptor limit.
    let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(1 << 20, |(soft, hard)| soft.max(hard).min(1 << 20));
    let last = u64::from(last).min(limit);
    for fd in u64::from(first)..=last {
        // SAFETY: as above; EBADF for a descriptor not open is harmless.
        unsafe { libc::close(fd as libc::c_int) };
    }
    Ok(())
}

/// What the runtime hands the init: its ends of the hand-shake pipes, the exec fifo
/// (`O_PATH`), the logger's pipes, the console socket.
pub struct Handoff {
    pub ready: OwnedFd,
    pub go: OwnedFd,
    pub fifo: OwnedFd,
    pub stdio: Option<super::log::LogPipes>,
    pub console: Option<std::os::unix::net::UnixStream>,
}

impl Handoff {
    /// Its descriptors: all the init keeps of what it inherits.
    pub fn fds(&self) -> Vec<RawFd> {
        let mut fds = vec![
            self.ready.as_raw_fd(),
            self.go.as_raw_fd(),
            self.fifo.as_raw_fd(),
        ];
        if let Some(p) = &self.stdio {
            fds.extend([p.stdout.as_raw_fd(), p.stderr.as_raw_fd()]);
        }
        fds.extend(self.console.as_ref().map(|c| c.as_raw_fd()));
        fds
    }
}

/// Runs in the cloned child; never returns.
pub fn run(
    config: &ContainerConfig,
    filters: &[BpfProgram],
    handoff: Handoff,
    join_paths: bool,
) -> ! {
    if let Err(e) = close_fds_except(&handoff.fds()) {
        let mut ready = std::fs::File::from(handoff.ready);
        let _ = ready.write_all(format!("error: {e}\n").as_bytes());
        exit(1);
    }
    let Handoff {
        ready,
        go,
        fifo: fifo_fd,
        stdio,
        console,
    } = handoff;
    harden_child();
    if let Some(pipes) = stdio {
        // The logger's pipes become stdout and stderr; stdin reads nothing.
        let null = open(
            "/dev/null",
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        );
        // SAFETY: dup2 onto this process's standard descriptors; the sources are open.
        unsafe {
            if let Ok(null) = null {
                libc::dup2(null, 0);
                libc::close(null);
            }
            libc::dup2(pipes.stdout.as_raw_fd(), 1);
            libc::dup2(pipes.stderr.as_raw_fd(), 2);
        }
    }
    // Until the runtime has recorded this container, its death must end this process too:
    // nobody else would ever start or delete it.
    // SAFETY: prctl with plain integers touches no memory of ours.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    let mut ready = std::fs::File::from(ready);
    let mut go = std::fs::File::from(go);
    // The runtime says go once this process is in its cgroup.
    let mut byte = [0u8; 1];
    if !matches!(std::io::Read::read(&mut go, &mut byte), Ok(1)) {
        exit(1);
    }
    if config.has_new(super::spec::NsKind::Cgroup) {
        if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP) {
            let _ = ready.write_all(format!("error: make the cgroup namespace: {e}\n").as_bytes());
            exit(1);
        }
    }
    let state = match setup(config, join_paths, console.as_ref(), &mut ready, &mut go) {
        Ok(state) => state,
        Err(e) => {
            let _ = ready.write_all(format!("error: {e}\n").as_bytes());
            exit(1);
        }
    };
    if ready.write_all(READY).is_err() {
        exit(1);
    }
    // The runtime says so once the state is saved; from then on this process outlives it.
    if !matches!(std::io::Read::read(&mut go, &mut byte), Ok(1)) {
        exit(1);
    }
    // SAFETY: prctl with plain integers touches no memory of ours.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, 0, 0, 0, 0) };
    drop(go);
    // Tells the runtime it may exit now.
    drop(ready);
    // Blocks until `start` opens the fifo for reading. The fifo stays open (close-on-exec)
    // until the program is exec'd: `start` waits for that end of file, and reads what
    // went wrong instead if the init fails on the way.
    let path = format!("/proc/self/fd/{}", fifo_fd.as_raw_fd());
    let mut started = match open(
        path.as_str(),
        OFlag::O_WRONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        // SAFETY: open just returned this descriptor and nothing else owns it.
        Ok(fd) => std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) }),
        Err(e) => {
            eprintln!("gantry-runtime init: cannot open the exec fifo: {e}");
            exit(1);
        }
    };
    let _ = started.write_all(b"0");
    drop(fifo_fd);
    let mut fail = |e: String, code: i32| -> ! {
        eprintln!("gantry-runtime init: {e}");
        let _ = started.write_all(e.as_bytes());
        exit(code);
    };
    // In the container, with the program's user and capabilities (as runc: after the
    // privilege drop), before the program: a failure is the container's end.
    let mut hooks = || match &state {
        Some(state) => {
            super::hooks::run_all(&config.hooks, super::hooks::Kind::StartContainer, state)
                .map_err(|e| e.to_string())
        }
        None => Ok(()),
    };
    let err = exec_process(&config.process, filters, &mut hooks);
    fail(err, 127);
}

fn exit(code: i32) -> ! {
    // SAFETY: _exit ends the process at once; the cloned child must not run the parent's
    // atexit handlers or flush its copies of the parent's buffers.
    unsafe { libc::_exit(code) }
}

/// The init's message to the runtime when the container's namespaces and mounts exist
/// and the runtime's hooks of `create` may run (see [`super::hooks`]).
pub const HOOKS: &[u8] = b"hooks\n";
/// The runtime's answer: this byte, then the state for the hooks (a 4-byte little-endian
/// length and the JSON).
pub const HOOKS_DONE: u8 = b'h';
/// How the init reports that a `createContainer` hook failed (the rest of the line says
/// which and why): `create` then fails as for the runtime's own hooks.
pub const HOOK_ERROR: &[u8] = b"hook-error: ";
/// The most state JSON the init takes (annotations are the bundle's, and unbounded).
const MAX_STATE: usize = 16 << 20;

/// Everything before the wait for `start`; with a console socket, the terminal. Joins the
/// namespaces named by path unless the user namespace helper has (`join_paths` false).
/// With hooks, stops before `pivot_root` for the runtime's and runs `createContainer`;
/// returns the state for `startContainer` then.
fn setup(
    config: &ContainerConfig,
    join_paths: bool,
    console: Option<&std::os::unix::net::UnixStream>,
    ready: &mut std::fs::File,
    go: &mut std::fs::File,
) -> Result<Option<Vec<u8>>, String> {
    for ns in config.namespaces.iter().filter(|_| join_paths) {
        if let Some(path) = &ns.path {
            if ns.kind == super::spec::NsKind::Pid {
                continue; // joined by the runtime before clone
            }
            let fd = open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
                .map_err(|e| format!("open namespace {}: {e}", path.display()))?;
            // SAFETY: open just returned this descriptor and nothing else owns it.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            nix::sched::setns(&fd, ns.kind.clone_flag())
                .map_err(|e| format!("join namespace {}: {e}", path.display()))?;
        }
    }
    if let Some(h) = &config.hostname {
        nix::unistd::sethostname(h).map_err(|e| format!("set host name {h:?}: {e}"))?;
    }
    if let Some(d) = &config.domainname {
        // SAFETY: the pointer and length describe `d`'s bytes, which outlive the call.
        let rc = unsafe { libc::setdomainname(d.as_ptr().cast(), d.len()) };
        if rc != 0 {
            return Err(format!(
                "set domain name {d:?}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    let root = rootfs::prepare(config).map_err(|e| e.to_string())?;
    let state = if config.hooks.sync_in_create() {
        let state = hooks_of_create(ready, go)?;
        if let Err(e) =
            super::hooks::run_all(&config.hooks, super::hooks::Kind::CreateContainer, &state)
        {
            let mut line = HOOK_ERROR.to_vec();
            line.extend(format!("{e}\n").as_bytes());
            let _ = ready.write_all(&line);
            exit(1);
        }
        Some(state)
    } else {
        None
    };
    rootfs::pivot(config, root).map_err(|e| e.to_string())?;
    rootfs::finish(config).map_err(|e| e.to_string())?;
    // From the container's devpts, now in place.
    if let Some(socket) = console {
        super::console::attach(socket)?;
    }
    // What runc checks at create: the working directory (made if missing) and the program.
    if std::fs::metadata(&config.process.cwd).is_err() {
        std::fs::create_dir_all(&config.process.cwd).map_err(|e| {
            format!(
                "make the working directory {}: {e}",
                config.process.cwd.display()
            )
        })?;
    }
    find_program(&config.process)?;
    if let Some(score) = config.process.oom_score_adj {
        std::fs::write("/proc/self/oom_score_adj", score.to_string())
            .map_err(|e| format!("set oom_score_adj {score}: {e}"))?;
    }
    Ok(state)
}

/// Tells the runtime its hooks of `create` may run, and waits until they have: returns the
/// state the runtime sends with its go-ahead. An end of file means they failed (the
/// runtime kills this process anyway).
fn hooks_of_create(ready: &mut std::fs::File, go: &mut std::fs::File) -> Result<Vec<u8>, String> {
    use std::io::Read;
    ready
        .write_all(HOOKS)
        .map_err(|e| format!("tell the runtime to run its hooks: {e}"))?;
    let lost = |e: std::io::Error| format!("wait for the runtime's hooks: {e}");
    let mut head = [0u8; 5];
    go.read_exact(&mut head).map_err(lost)?;
    if head[0] != HOOKS_DONE {
        return Err("the runtime's hooks did not finish".into());
    }
    let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_STATE {
        return Err(format!(
            "the hooks' state is {len} bytes, above {MAX_STATE}"
        ));
    }
    let mut state = vec![0u8; len];
    go.read_exact(&mut state).map_err(lost)?;
    Ok(state)
}

/// Drops privileges, installs the seccomp filters and execs the program; returns only on
/// failure.
///
/// The filters are the bundle's, and a profile lists what the program needs, not what the
/// runtime does: once they are in, this process makes no system call of its own but
/// `execve` where it can. The order, from runc's `standard_init_linux.go` and
/// `finalizeNamespace`, with what runc does after the filters but need not moved before:
///
/// 1. rlimits and umask;
/// 2. `chdir` to `process.cwd` while still root (as runc; again after the user switch if
///    root could not), and the check that it is inside the root;
/// 3. the program's path (looked up as root, as runc), its arguments and environment, and
///    `execve`'s pointer arrays: nothing is allocated for the exec after the filters;
/// 4. inherited descriptors marked close-on-exec (`close_range`);
/// 5. the bounding set, `PR_SET_KEEPCAPS`, the ambient set emptied (see
///    [`super::caps::prepare_switch`]);
/// 6. with `no_new_privs`: the user switch and the capability sets, `PR_SET_NO_NEW_PRIVS`,
///    the filters, `execve`. Without it, the kernel takes a filter only from a process
///    with CAP_SYS_ADMIN, so the filters go in before the user switch, as runc's do:
///    the filters, then `setgroups`, `setresgid`, `setresuid`, `capget`/`capset` (and
///    `prctl` to raise ambient capabilities, if the bundle has any), then `execve`; a
///    profile for such a bundle must allow those, as with runc.
///
/// `before_exec` (the `startContainer` hooks) runs once the user and capabilities are the
/// program's, before `no_new_privs` and the filters (without `no_new_privs`: after the
/// filters, as runc, whose hooks run under the bundle's profile then).
pub(super) fn exec_process(
    p: &ProcessSpec,
    filters: &[BpfProgram],
    before_exec: &mut dyn FnMut() -> Result<(), String>,
) -> String {
    let (exec, cwd_entered) = match before_filters(p) {
        Ok(ready) => ready,
        Err(e) => return e,
    };
    let argv = nul_terminated(&exec.args);
    let envp = nul_terminated(&exec.env);
    let install = || Profile::install(filters).map_err(|e| e.to_string());
    let ready = if p.no_new_privileges {
        switch_user(p, cwd_entered)
            .and_then(|()| before_exec())
            .and_then(|()| set_no_new_privs())
            .and_then(|()| install())
    } else {
        install()
            .and_then(|()| switch_user(p, cwd_entered))
            .and_then(|()| before_exec())
    };
    if let Err(e) = ready {
        return e;
    }
    // SAFETY: the path and every pointer in `argv` and `envp` point into `exec`'s
    // NUL-terminated strings, which outlive the call; both arrays end with a null pointer.
    unsafe { libc::execve(exec.path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    let err = std::io::Error::last_os_error();
    format!("exec {:?}: {err}", p.args[0])
}

/// Steps 1 to 5 of [`exec_process`]: the program to exec, and whether the working
/// directory is entered already.
fn before_filters(p: &ProcessSpec) -> Result<(ExecArgs, bool), String> {
    for r in &p.rlimits {
        let lim = libc::rlimit {
            rlim_cur: r.soft,
            rlim_max: r.hard,
        };
        // SAFETY: `lim` is a valid rlimit that outlives the call.
        if unsafe { libc::setrlimit(r.resource as _, &lim) } != 0 {
            return Err(format!(
                "setrlimit {}: {}",
                r.resource,
                std::io::Error::last_os_error()
            ));
        }
    }
    // runc's default when the bundle sets none.
    let mask = p.umask.unwrap_or(0o022);
    nix::sys::stat::umask(Mode::from_bits_truncate(mask as libc::mode_t));
    let cwd_entered = nix::unistd::chdir(&p.cwd).is_ok();
    if cwd_entered {
        cwd_in_root(&p.cwd)?;
    }
    let exec = prepare_exec(p)?;
    close_inherited_fds()?;
    super::caps::prepare_switch(p).map_err(|e| e.to_string())?;
    Ok((exec, cwd_entered))
}

/// The user switch and the capability sets; then the working directory if root could not
/// enter it.
fn switch_user(p: &ProcessSpec, cwd_entered: bool) -> Result<(), String> {
    super::caps::switch_user(p).map_err(|e| e.to_string())?;
    if !cwd_entered {
        nix::unistd::chdir(&p.cwd).map_err(|e| format!("chdir {}: {e}", p.cwd.display()))?;
        cwd_in_root(&p.cwd)?;
    }
    Ok(())
}

fn set_no_new_privs() -> Result<(), String> {
    // SAFETY: PR_SET_NO_NEW_PRIVS takes plain integers and touches no memory of ours.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(format!(
            "set no_new_privs: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// `execve`'s form of `strings`: their pointers and a null pointer.
fn nul_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// Refuses a working directory the container's root does not contain (reached through a
/// descriptor or a magic link): the kernel's getcwd then fails or says `(unreachable)`.
fn cwd_in_root(cwd: &std::path::Path) -> Result<(), String> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`, which outlives the
    // call. The raw system call: glibc's wrapper hides the "(unreachable)" prefix.
    let rc = unsafe { libc::syscall(libc::SYS_getcwd, buf.as_mut_ptr(), buf.len()) };
    let outside = "the working directory is outside the container's root";
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        return Err(format!("process.cwd {cwd:?}: {outside} (getcwd: {e})"));
    }
    if buf.first() != Some(&b'/') {
        return Err(format!("process.cwd {cwd:?}: {outside}"));
    }
    Ok(())
}

/// The program's path, its arguments and its environment, ready for `execve`.
struct ExecArgs {
    path: CString,
    args: Vec<CString>,
    env: Vec<CString>,
}

/// The home directory of `uid` in the container's `/etc/passwd`, or `/`.
fn home_of(uid: u32) -> String {
    // In-root, a regular file, capped (see `inroot`): a FIFO planted by the image would
    // hold this process, still a copy of the runtime, as long as the image likes.
    super::inroot::read_text(
        std::path::Path::new("/"),
        std::path::Path::new("etc/passwd"),
    )
    .ok()
    .and_then(|text| {
        text.lines().find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.len() >= 7 && f[2].parse::<u32>() == Ok(uid) && !f[5].is_empty())
                .then(|| f[5].to_owned())
        })
    })
    .unwrap_or_else(|| "/".to_owned())
}

/// The program path (searched in the container's PATH when it has no `/`), its arguments
/// and environment as C strings.
fn prepare_exec(p: &ProcessSpec) -> Result<ExecArgs, String> {
    let cstr = |s: &str| CString::new(s).map_err(|_| format!("{s:?} has a NUL byte"));
    let args = p
        .args
        .iter()
        .map(|a| cstr(a))
        .collect::<Result<Vec<_>, _>>()?;
    let mut env = p
        .env
        .iter()
        .map(|e| cstr(e))
        .collect::<Result<Vec<_>, _>>()?;
    if !p.env.iter().any(|e| e.starts_with("HOME=")) {
        // As runc does: the user's home from the container's /etc/passwd, else "/".
        env.push(cstr(&format!("HOME={}", home_of(p.uid)))?);
    }
    let path = cstr(&find_program(p)?)?;
    Ok(ExecArgs { path, args, env })
}

/// The program's path: as given when it has a `/`, else the first executable of that name
/// in the process's PATH.
fn find_program(p: &ProcessSpec) -> Result<String, String> {
    let program = &p.args[0];
    let executable = |path: &str| nix::unistd::access(path, nix::unistd::AccessFlags::X_OK).is_ok();
    if program.contains('/') {
        return if executable(program) {
            Ok(program.clone())
        } else {
            Err(format!("{program:?} is not an executable in the container"))
        };
    }
    let search = p
        .env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    search
        .split(':')
        .map(|dir| format!("{dir}/{program}"))
        .find(|candidate| executable(candidate))
        .ok_or_else(|| format!("{program:?} not found in PATH {search:?}"))
}
