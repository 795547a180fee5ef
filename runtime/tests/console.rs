//! `process.terminal` with `--console-socket`, as runc's callers (containerd, podman) use
//! it: the test listens on a unix socket, `create` sends the pty's master there, and what
//! the container prints is read from it. Needs root and runc (for `runc spec`).

mod common;

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::bundle::{bundle, require_root, runtime, OURS};
use serde_json::json;

/// Receives one descriptor and the message sent with it.
fn recv_fd(conn: &UnixStream) -> (String, OwnedFd) {
    use std::os::fd::AsRawFd;
    let mut data = [0u8; 256];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    let mut control = [0u64; 8];
    // SAFETY: a zeroed msghdr is empty; it points at `iov` and `control`, which outlive
    // the call.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = control.as_mut_ptr().cast();
    hdr.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: recvmsg writes only into the buffers `hdr` describes.
    let n = unsafe { libc::recvmsg(conn.as_raw_fd(), &mut hdr, libc::MSG_CMSG_CLOEXEC) };
    assert!(n > 0, "recvmsg: {}", std::io::Error::last_os_error());
    // SAFETY: the kernel filled the control buffer; CMSG_FIRSTHDR checks its length.
    let fd = unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&hdr);
        assert!(!cmsg.is_null(), "no descriptor came with the message");
        assert_eq!(
            ((*cmsg).cmsg_level, (*cmsg).cmsg_type),
            (libc::SOL_SOCKET, libc::SCM_RIGHTS)
        );
        std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>())
    };
    let name = String::from_utf8_lossy(&data[..n as usize]).into_owned();
    // SAFETY: the kernel just installed this descriptor for us.
    (name, unsafe { OwnedFd::from_raw_fd(fd) })
}

fn create(state: &Path, bundle: &Path, id: &str, socket: Option<&Path>) -> (bool, String) {
    let mut cmd = Command::new(OURS);
    cmd.arg("--root")
        .arg(state)
        .args(["create", "--bundle"])
        .arg(bundle);
    if let Some(s) = socket {
        cmd.arg("--console-socket").arg(s);
    }
    // The init keeps nothing of ours once the pty is its stdio; stderr has the errors.
    let out = cmd
        .arg(id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("create");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_terminal_is_sent_to_the_console_socket_and_carries_the_output_as_root() {
    require_root();
    let dir = tempfile::tempdir().expect("tmp");
    let b = bundle(dir.path(), |c| {
        c["process"]["terminal"] = true.into();
        c["process"]["args"] = json!([
            "/bin/busybox",
            "sh",
            "-c",
            "echo hello from the container; /bin/busybox tty; /bin/busybox cat /proc/self/stat"
        ]);
    });
    let sock = dir.path().join("console.sock");
    let listener = UnixListener::bind(&sock).expect("listen");
    let state = dir.path().join("state");
    let (ok, err) = create(&state, &b, "tty", Some(&sock));
    assert!(ok, "{err}");
    let (conn, _) = listener.accept().expect("accept");
    let (name, master) = recv_fd(&conn);
    assert_eq!(
        name, "/dev/pts/0",
        "runc's message: the slave's path in the container"
    );
    let (ok, _, err) = runtime(OURS, &state, &["start", "tty"]);
    assert!(ok, "{err}");
    // Read until the container's side closes (EIO on a pty master), with a deadline.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut f = std::fs::File::from(master);
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = f.read(&mut buf) {
            out.extend_from_slice(&buf[..n]);
        }
        let _ = tx.send(out);
    });
    let out = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the container's output");
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("hello from the container\r\n"), "{text:?}");
    assert!(
        text.contains("/dev/pts/0\r\n"),
        "stdin is the pty: {text:?}"
    );
    // /proc/self/stat of cat: tty_nr (the 7th field) is the pty, its controlling terminal.
    let stat = text
        .lines()
        .find(|l| l.contains(") R "))
        .unwrap_or_else(|| panic!("no stat line in {text:?}"));
    let tty_nr: u64 = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.split(' ').nth(4))
        .and_then(|f| f.parse().ok())
        .expect("tty_nr");
    assert_eq!(tty_nr, 136 << 8, "controlling terminal /dev/pts/0 (136, 0)");
    let (ok, _, err) = runtime(OURS, &state, &["delete", "--force", "tty"]);
    assert!(ok, "{err}");
}

#[test]
fn a_terminal_and_a_console_socket_need_each_other_as_root() {
    require_root();
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("state");
    let sock = dir.path().join("console.sock");
    let _listener = UnixListener::bind(&sock).expect("listen");
    let tty = bundle(&dir.path().join("tty"), |c| {
        c["process"]["terminal"] = true.into()
    });
    let plain = bundle(&dir.path().join("plain"), |_| {});
    let missing = dir.path().join("nobody-listens.sock");
    for (name, b, socket, expect) in [
        (
            "nosocket",
            &tty,
            None,
            "process.terminal needs --console-socket",
        ),
        (
            "noterminal",
            &plain,
            Some(sock.as_path()),
            "--console-socket needs process.terminal",
        ),
        (
            "nolistener",
            &tty,
            Some(missing.as_path()),
            "nobody-listens.sock",
        ),
    ] {
        let (ok, err) = create(&state, b, name, socket);
        assert!(!ok, "{name}: created");
        assert!(err.contains(expect), "{name}: {err}");
        let left: Vec<_> = std::fs::read_dir(&state)
            .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{name}: state left behind: {left:?}");
    }
}
