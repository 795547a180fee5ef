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

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;

/// Opens the pty, hands the master to the caller over `socket` and makes the slave this
/// process's controlling terminal and stdio.
pub(super) fn attach(socket: &UnixStream) -> Result<(), String> {
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
    let name = format!("/dev/pts/{number}");
    send_fd(socket, name.as_bytes(), master.as_raw_fd())
        .map_err(|e| format!("send the pty to the console socket: {e}"))?;
    drop(master);
    nix::unistd::setsid().map_err(|e| format!("start a session: {e}"))?;
    // SAFETY: TIOCSCTTY takes an int by value; the descriptor is open.
    if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) } != 0 {
        return Err(os_err("make the pty the controlling terminal"));
    }
    for target in 0..=2 {
        // SAFETY: dup2 onto this process's standard descriptors; the source is open.
        if unsafe { libc::dup2(slave.as_raw_fd(), target) } < 0 {
            return Err(os_err("make the pty standard input and output"));
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
