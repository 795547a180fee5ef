//! `process.terminal` with runc's `--console-socket` convention. The container's init,
//! once its root file system is in place, opens a pty from the container's own devpts
//! (`/dev/ptmx`, as runc does, so that the terminal belongs to the container), sends the
//! master over the unix socket the caller named (`SCM_RIGHTS`, with the slave's path in
//! the container as the message, as runc sends it), and makes the slave its controlling
//! terminal and its standard input, output and error. The caller then owns the master:
//! what it writes is the container's input, what it reads the container's output.
//!
//! The runtime connects to the socket before it clones, so that a bad path is an error of
//! `create` that names it; the init gets the connection.
//!
//! **A terminal in the foreground.** `run` of a bundle with `process.terminal` and no
//! console socket, `exec --tty` and `gantry run --tty` keep the master themselves, as
//! `runc run` without `--detach` does: `run` listens on a socket in a private directory
//! under its state root ([`ConsoleListener`]) and names it as the console socket; `exec`
//! hands its process one end of a socket pair and that process opens its own pty from
//! the container's devpts ([`attach_sized`]). A [`Relay`] then copies the runtime's stdin
//! to the master and the master to the runtime's stdout until the process exits, and
//! returns its wait status, so the exit code passes through. When stdin is a terminal it
//! is put in raw mode (keys such as ^C reach the container's line discipline, which makes
//! the signal there) and restored when the relay ends, whichever way it ends (the guard
//! restores it on drop, and the signals that would end the runtime are blocked and
//! forwarded to the process instead); its window size is copied to the pty first and on
//! every `SIGWINCH`. A pty has one output stream: stderr is not told from stdout. With a
//! log file too (`gantry run --tty --log-file`), the pty's output also goes to the log as
//! the `stdout` stream, with the `\r\n` line ends the terminal made, as Docker logs a
//! container run with `-t`. When stdin reaches end-of-file, the relay stops reading it; the
//! container's input stays open. Writes are blocking: a container that neither reads its
//! input nor lets its output be read can stall the relay, as with a pipe.

use std::io::{self, IsTerminal};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::stat::Mode;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// What can fail while the runtime holds a terminal itself.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("cannot make the console socket under {dir}: {source}")]
    Listen { dir: PathBuf, source: io::Error },
    #[error("the container sent no terminal: {source}")]
    Receive { source: io::Error },
    #[error("cannot {step} of the terminal: {errno}")]
    Terminal { step: &'static str, errno: Errno },
    #[error("cannot make a socket pair for the terminal: {source}")]
    Pair { source: io::Error },
    #[error("cannot relay the terminal: {step}: {errno}")]
    Relay { step: &'static str, errno: Errno },
}

/// Opens the pty, hands the master to the caller over `socket` and makes the slave this
/// process's controlling terminal and stdio.
pub(super) fn attach(socket: &UnixStream) -> Result<(), String> {
    attach_sized(socket, None)
}

/// As [`attach`], with the pty's window size set to `size` before anything runs on it.
pub(super) fn attach_sized(socket: &UnixStream, size: Option<libc::winsize>) -> Result<(), String> {
    let master = open(
        "/dev/ptmx",
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("open /dev/ptmx: {e}"))?;
    // SAFETY: open just returned this descriptor and nothing else owns it.
    let master = unsafe { OwnedFd::from_raw_fd(master) };
    let os_err = |what: &str| format!("{what}: {}", io::Error::last_os_error());
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int from the pointer, which outlives the call.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } != 0 {
        return Err(os_err("unlock the pty"));
    }
    let mut number: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes one unsigned int through the pointer, which outlives the call.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut number) } != 0 {
        return Err(os_err("get the pty's number"));
    }
    // The slave from the master itself, not by path: nothing in the container can swap it.
    // SAFETY: TIOCGPTPEER takes open flags by value and returns a new descriptor.
    let slave = unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if slave < 0 {
        return Err(os_err("open the pty's slave"));
    }
    // SAFETY: the ioctl just returned this descriptor and nothing else owns it.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    if let Some(size) = size {
        set_window_size(master.as_fd(), &size).map_err(|e| format!("set the window size: {e}"))?;
    }
    let name = format!("/dev/pts/{number}");
    send_fd(socket, name.as_bytes(), master.as_raw_fd())
        .map_err(|e| format!("send the pty to the console socket: {e}"))?;
    drop(master);
    nix::unistd::setsid().map_err(|e| format!("start a session: {e}"))?;
    // SAFETY: TIOCSCTTY takes an int by value; the descriptor is open.
    if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) } != 0 {
        return Err(os_err("make the pty the controlling terminal"));
    }
    let raw = slave.as_raw_fd();
    for target in (0..=2).filter(|&t| t != raw) {
        // SAFETY: dup2 onto this process's standard descriptors; the source is open.
        if unsafe { libc::dup2(raw, target) } < 0 {
            return Err(os_err("make the pty standard input and output"));
        }
    }
    if raw <= 2 {
        // The slave landed on a standard descriptor itself (one was closed when the
        // runtime started): keep it, open across exec, instead of closing it on drop.
        let fd = slave.into_raw_fd();
        // SAFETY: F_SETFD on a descriptor this process owns; 0 clears FD_CLOEXEC.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } < 0 {
            return Err(os_err("keep the pty open across exec"));
        }
    }
    Ok(())
}

/// Sends `fd` with the bytes `msg` over `socket` (`SCM_RIGHTS`).
pub fn send_fd(socket: &UnixStream, msg: &[u8], fd: RawFd) -> io::Result<()> {
    let fd_len = std::mem::size_of::<RawFd>() as libc::c_uint;
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(fd_len) } as usize;
    // u64s: the control buffer must be aligned for a cmsghdr.
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: msg.as_ptr() as *mut libc::c_void,
        iov_len: msg.len(),
    };
    // SAFETY: a zeroed msghdr is empty; the fields set below point at `iov` and
    // `control`, which outlive the sendmsg call.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = control.as_mut_ptr().cast();
    hdr.msg_controllen = space;
    // SAFETY: the control buffer has room for one cmsghdr with an fd (CMSG_SPACE), so
    // CMSG_FIRSTHDR is non-null and its data has room for the fd; sendmsg reads only
    // what `hdr` describes.
    let rc = unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&hdr);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(fd_len) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
        libc::sendmsg(socket.as_raw_fd(), &hdr, libc::MSG_NOSIGNAL)
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Receives one descriptor sent with [`send_fd`], and the message that came with it.
pub fn recv_fd(socket: &UnixStream) -> io::Result<(Vec<u8>, OwnedFd)> {
    let mut data = [0u8; 256];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    let fd_len = std::mem::size_of::<RawFd>() as libc::c_uint;
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(fd_len) } as usize;
    let mut control = vec![0u64; space.div_ceil(8)];
    // SAFETY: a zeroed msghdr is empty; the fields set below point at `iov` and
    // `control`, which outlive the recvmsg call.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = control.as_mut_ptr().cast();
    hdr.msg_controllen = space;
    let n = loop {
        // SAFETY: recvmsg writes only into the buffers `hdr` describes.
        let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut hdr, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    // SAFETY: the kernel filled `hdr`; CMSG_FIRSTHDR checks the control length, and a
    // header of SCM_RIGHTS with room for one fd carries one the kernel just installed.
    let fd = unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&hdr);
        if cmsg.is_null()
            || (*cmsg).cmsg_level != libc::SOL_SOCKET
            || (*cmsg).cmsg_type != libc::SCM_RIGHTS
            || ((*cmsg).cmsg_len as usize) < libc::CMSG_LEN(fd_len) as usize
        {
            let what = if n == 0 {
                "the sender closed the socket"
            } else {
                "a message without a descriptor"
            };
            return Err(io::Error::new(io::ErrorKind::InvalidData, what));
        }
        OwnedFd::from_raw_fd(std::ptr::read_unaligned(
            libc::CMSG_DATA(cmsg).cast::<RawFd>(),
        ))
    };
    Ok((data[..n].to_vec(), fd))
}

/// A unix socket in a private directory, named as a container's console socket by a
/// runtime that keeps the terminal itself. The directory goes when this is dropped.
#[derive(Debug)]
pub struct ConsoleListener {
    listener: UnixListener,
    dir: tempfile::TempDir,
}

impl ConsoleListener {
    /// Listens on `<parent>/console-XXXXXX/socket` (a directory only root can enter).
    pub fn new(parent: &Path) -> Result<Self, ConsoleError> {
        let listen = |source| ConsoleError::Listen {
            dir: parent.to_owned(),
            source,
        };
        std::fs::create_dir_all(parent).map_err(listen)?;
        let dir = tempfile::Builder::new()
            .prefix("console-")
            .tempdir_in(parent)
            .map_err(listen)?;
        let listener = UnixListener::bind(dir.path().join("socket")).map_err(listen)?;
        Ok(Self { listener, dir })
    }

    /// The socket's path, for `--console-socket`.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("socket")
    }

    /// The pty master a created container sent. `create` returns only once the init has
    /// sent it, so it is waiting already; the deadline guards against an init that died.
    pub fn receive(&self) -> Result<OwnedFd, ConsoleError> {
        let receive = |source| ConsoleError::Receive { source };
        self.listener.set_nonblocking(true).map_err(receive)?;
        let (conn, _) = self.listener.accept().map_err(receive)?;
        conn.set_nonblocking(false).map_err(receive)?;
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(receive)?;
        recv_fd(&conn).map(|(_, fd)| fd).map_err(receive)
    }
}

/// The window size of the terminal `fd`.
pub fn window_size(fd: BorrowedFd<'_>) -> Result<libc::winsize, Errno> {
    // SAFETY: a zeroed winsize is a valid value for TIOCGWINSZ to overwrite.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize through the pointer, which outlives the call.
    Errno::result(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut size) })?;
    Ok(size)
}

fn set_window_size(fd: BorrowedFd<'_>, size: &libc::winsize) -> Result<(), Errno> {
    // SAFETY: TIOCSWINSZ reads one winsize through the pointer, which outlives the call.
    Errno::result(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, size) }).map(drop)
}

/// A terminal in raw mode; its settings as they were come back on drop.
struct RawMode {
    fd: RawFd,
    saved: libc::termios,
}

impl RawMode {
    fn enter(fd: BorrowedFd<'_>) -> Result<Self, ConsoleError> {
        let fail = |step| move |errno| ConsoleError::Terminal { step, errno };
        // SAFETY: a zeroed termios is a valid value for tcgetattr to overwrite.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: tcgetattr writes one termios through the pointer, which outlives it.
        Errno::result(unsafe { libc::tcgetattr(fd.as_raw_fd(), &mut saved) })
            .map_err(fail("read the settings"))?;
        let mut raw = saved;
        // SAFETY: cfmakeraw only changes the termios it is given.
        unsafe { libc::cfmakeraw(&mut raw) };
        // SAFETY: tcsetattr reads one termios through the pointer, which outlives it.
        Errno::result(unsafe { libc::tcsetattr(fd.as_raw_fd(), libc::TCSADRAIN, &raw) })
            .map_err(fail("set raw mode"))?;
        Ok(Self {
            fd: fd.as_raw_fd(),
            saved,
        })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: the descriptor is the process's stdin, open for its whole life; the
        // termios outlives the call.
        unsafe { libc::tcsetattr(self.fd, libc::TCSADRAIN, &self.saved) };
    }
}

/// The runtime's stdin and stdout joined to a container's pty master (see the module
/// docs). Made before the container's process starts, so that the process finds its
/// window size set; the caller's terminal is raw from [`Relay::new`] until this is
/// dropped.
pub struct Relay {
    master: OwnedFd,
    tee: Option<OwnedFd>,
    /// Held for its drop, which restores the terminal.
    _raw: Option<RawMode>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("master", &self.master)
            .field("raw", &self._raw.is_some())
            .finish()
    }
}

impl Relay {
    /// Takes the master; `tee` gets a copy of the output (the logger's stdout pipe).
    pub fn new(master: OwnedFd, tee: Option<OwnedFd>) -> Result<Self, ConsoleError> {
        // Blocked here, before the caller starts any thread that would take it instead.
        let mut winch = SigSet::empty();
        winch.add(Signal::SIGWINCH);
        winch.thread_block().map_err(|errno| ConsoleError::Relay {
            step: "block SIGWINCH",
            errno,
        })?;
        let stdin = io::stdin();
        let raw = if stdin.is_terminal() {
            if let Ok(size) = window_size(stdin.as_fd()) {
                set_window_size(master.as_fd(), &size).map_err(|errno| ConsoleError::Terminal {
                    step: "set the window size",
                    errno,
                })?;
            }
            Some(RawMode::enter(stdin.as_fd())?)
        } else {
            None
        };
        Ok(Self {
            master,
            tee,
            _raw: raw,
        })
    }

    /// Relays until `child` ends and returns how it ended. `signals` are blocked in the
    /// caller and include SIGCHLD; the others are passed on to `child`. SIGWINCH is
    /// blocked by [`Relay::new`].
    pub fn run(mut self, child: Pid, signals: &SigSet) -> Result<WaitStatus, ConsoleError> {
        let fail = |step| move |errno| ConsoleError::Relay { step, errno };
        let mut set = *signals;
        set.add(Signal::SIGWINCH);
        let sigfd = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(fail("make a signalfd"))?;
        let stdin = io::stdin();
        let stdin = stdin.as_fd();
        let stdout = io::stdout();
        let stdout = stdout.as_fd();
        let (mut master_open, mut stdin_open, mut stdout_open) = (true, true, true);
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            if let Some(status) = exited(child).map_err(fail("wait for the process"))? {
                // What the process wrote just before it ended is still in the pty.
                if master_open {
                    let _ = nix::fcntl::fcntl(
                        self.master.as_raw_fd(),
                        nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK),
                    );
                    while let Ok(n @ 1..) = nix::unistd::read(self.master.as_raw_fd(), &mut buf) {
                        self.output(stdout, &mut stdout_open, &buf[..n]);
                    }
                }
                return Ok(status);
            }
            let mut fds = vec![PollFd::new(sigfd.as_fd(), PollFlags::POLLIN)];
            if master_open {
                fds.push(PollFd::new(self.master.as_fd(), PollFlags::POLLIN));
            }
            if stdin_open {
                fds.push(PollFd::new(stdin, PollFlags::POLLIN));
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(fail("poll")(e)),
            }
            let ready: Vec<bool> = fds
                .iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect();
            drop(fds);
            let mut ready = ready.into_iter();
            if ready.next() == Some(true) {
                while let Ok(Some(info)) = sigfd.read_signal() {
                    match Signal::try_from(info.ssi_signo as i32) {
                        Ok(Signal::SIGCHLD) => {}
                        Ok(Signal::SIGWINCH) => {
                            if let Ok(size) = window_size(stdin) {
                                let _ = set_window_size(self.master.as_fd(), &size);
                            }
                        }
                        Ok(sig) => {
                            let _ = nix::sys::signal::kill(child, sig);
                        }
                        Err(_) => {}
                    }
                }
            }
            if master_open && ready.next() == Some(true) {
                match nix::unistd::read(self.master.as_raw_fd(), &mut buf) {
                    Ok(n @ 1..) => self.output(stdout, &mut stdout_open, &buf[..n]),
                    Err(Errno::EINTR | Errno::EAGAIN) => {}
                    // EIO: no process holds the slave any more.
                    Ok(0) | Err(_) => master_open = false,
                }
            }
            if stdin_open && ready.next() == Some(true) {
                match nix::unistd::read(stdin.as_raw_fd(), &mut buf) {
                    Ok(n @ 1..) => {
                        if master_open && write_all(self.master.as_fd(), &buf[..n]).is_err() {
                            master_open = false;
                        }
                    }
                    Err(Errno::EINTR | Errno::EAGAIN) => {}
                    Ok(0) | Err(_) => stdin_open = false,
                }
            }
        }
    }

    fn output(&mut self, stdout: BorrowedFd<'_>, stdout_open: &mut bool, data: &[u8]) {
        // A closed stdout does not stop the relay: the container's output is still read,
        // so that it never blocks on a full pty.
        if *stdout_open && write_all(stdout, data).is_err() {
            *stdout_open = false;
        }
        if let Some(tee) = &self.tee {
            if write_all(tee.as_fd(), data).is_err() {
                self.tee = None;
            }
        }
    }
}

/// How `child` ended, or `None` while it runs.
fn exited(child: Pid) -> Result<Option<WaitStatus>, Errno> {
    match waitpid(child, Some(WaitPidFlag::WNOHANG))? {
        WaitStatus::StillAlive => Ok(None),
        done @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..)) => Ok(Some(done)),
        _ => Ok(None),
    }
}

fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) -> Result<(), Errno> {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(0) => return Err(Errno::EIO),
            Ok(n) => data = &data[n..],
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_descriptor_and_its_message_cross_a_socket_pair() {
        let (a, b) = UnixStream::pair().expect("pair");
        let file = tempfile::tempfile().expect("tmp");
        send_fd(&a, b"/dev/pts/7", file.as_raw_fd()).expect("send");
        let (msg, fd) = recv_fd(&b).expect("receive");
        assert_eq!(msg, b"/dev/pts/7");
        let ino = |fd: BorrowedFd<'_>| {
            nix::sys::stat::fstat(fd.as_raw_fd())
                .map(|s| s.st_ino)
                .expect("fstat")
        };
        assert_eq!(ino(fd.as_fd()), ino(file.as_fd()), "the same open file");
    }

    #[test]
    fn a_sender_that_closes_without_a_descriptor_is_an_error() {
        let (a, b) = UnixStream::pair().expect("pair");
        drop(a);
        let err = recv_fd(&b).expect_err("nothing was sent");
        assert!(err.to_string().contains("closed"), "{err}");
    }

    #[test]
    fn raw_mode_ends_with_the_terminals_settings_as_they_were() {
        let (mut master, mut slave) = (-1, -1);
        // SAFETY: openpty writes two descriptors through the pointers; the name, termios
        // and window size are not given.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "openpty: {}", io::Error::last_os_error());
        // SAFETY: openpty just returned these descriptors and nothing else owns them.
        let (_master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let lflag = || {
            // SAFETY: a zeroed termios is a valid value for tcgetattr to overwrite.
            let mut t: libc::termios = unsafe { std::mem::zeroed() };
            // SAFETY: tcgetattr writes one termios through the pointer, which outlives it.
            assert_eq!(unsafe { libc::tcgetattr(slave.as_raw_fd(), &mut t) }, 0);
            t.c_lflag
        };
        let before = lflag();
        assert_ne!(before & libc::ICANON, 0, "a new pty is canonical");
        let raw = RawMode::enter(slave.as_fd()).expect("raw");
        assert_eq!(lflag() & (libc::ICANON | libc::ECHO), 0, "raw");
        drop(raw);
        assert_eq!(lflag(), before);
    }
}
