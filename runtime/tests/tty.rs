//! A terminal in the foreground: `run` of a bundle with `process.terminal` and no console
//! socket, and `exec --tty`, relay the container's pty to the runtime's own stdio. The
//! test gives the runtime a pty of its own (a pair opened here, the slave as its stdin,
//! stdout and stderr, with a window size set), then reads what the container printed from
//! the master and types into it. Needs root and runc (for `runc spec`).

mod common;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::bundle::{bundle, require_root, runtime, OURS};
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(30);

/// A pty pair with the window size `rows` × `cols`: (master, slave).
fn pty(rows: u16, cols: u16) -> (OwnedFd, OwnedFd) {
    let (mut master, mut slave) = (-1, -1);
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes two descriptors through the pointers and reads the winsize;
    // all outlive the call, and the name and termios are not asked for.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: openpty just returned these descriptors and nothing else owns them.
    unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

/// The terminal settings of `fd` that a runtime could leave changed.
fn termios(fd: &OwnedFd) -> (u32, u32, u32, u32, Vec<u8>) {
    // SAFETY: a zeroed termios is a valid value for tcgetattr to overwrite.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: tcgetattr writes one termios through the pointer, which outlives the call.
    let rc = unsafe { libc::tcgetattr(fd.as_raw_fd(), &mut t) };
    assert_eq!(rc, 0, "tcgetattr: {}", std::io::Error::last_os_error());
    (t.c_iflag, t.c_oflag, t.c_cflag, t.c_lflag, t.c_cc.to_vec())
}

fn is_raw(fd: &OwnedFd) -> bool {
    let (_, _, _, lflag, _) = termios(fd);
    lflag & (libc::ICANON | libc::ECHO) == 0
}

/// Everything read from a pty master so far, read by a thread until the master fails.
struct Screen(Arc<Mutex<Vec<u8>>>);

impl Screen {
    fn new(master: &OwnedFd) -> Self {
        let mut f = std::fs::File::from(master.try_clone().expect("dup master"));
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&out);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = f.read(&mut buf) {
                sink.lock().expect("screen").extend_from_slice(&buf[..n]);
            }
        });
        Screen(out)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("screen")).into_owned()
    }

    /// Waits until the output contains `what`.
    fn wait_for(&self, what: &str) {
        wait_until(&format!("{what:?} on the terminal"), || {
            self.text().contains(what)
        });
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_exit(child: &mut Child, screen: &Screen) -> ExitStatus {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("the runtime did not exit; terminal: {:?}", screen.text());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The runtime with `args`, the slave as its stdin, stdout and stderr.
fn spawn_on(slave: &OwnedFd, state: &Path, args: &[&str]) -> Child {
    let stdio = || Stdio::from(slave.try_clone().expect("dup slave"));
    Command::new(OURS)
        .arg("--root")
        .arg(state)
        .args(args)
        .stdin(stdio())
        .stdout(stdio())
        .stderr(stdio())
        .spawn()
        .expect("spawn the runtime")
}

/// The shell a test runs on the container's terminal: its tty, its size, one line typed
/// in, and exit 3.
const SCRIPT: &str = "/bin/busybox tty; /bin/busybox stty size; \
                      echo waiting; read x; echo got $x; exit 3";

/// Checks a run of [`SCRIPT`] on a terminal of 31 × 97 that the runtime relays.
fn typed_and_exited(master: &OwnedFd, slave: &OwnedFd, mut child: Child, screen: &Screen) {
    screen.wait_for("waiting");
    // The runtime's terminal is raw while it relays: the container's terminal does the
    // line editing and echo.
    wait_until("raw mode on the runtime's terminal", || is_raw(slave));
    let mut keys = std::fs::File::from(master.try_clone().expect("dup master"));
    keys.write_all(b"hello\r").expect("type");
    let status = wait_exit(&mut child, screen);
    let text = screen.text();
    assert_eq!(status.code(), Some(3), "{text:?}");
    let lines: Vec<&str> = text.split("\r\n").collect();
    assert!(
        lines.iter().any(|l| l.starts_with("/dev/pts/")),
        "the process's stdin is a pty: {text:?}"
    );
    assert!(lines.contains(&"31 97"), "window size: {text:?}");
    assert!(lines.contains(&"got hello"), "typed input: {text:?}");
}

#[test]
fn run_relays_the_containers_terminal_and_restores_ours_as_root() {
    require_root();
    let dir = tempfile::tempdir().expect("tmp");
    let b = bundle(dir.path(), |c| {
        c["process"]["terminal"] = true.into();
        c["process"]["args"] = json!(["/bin/busybox", "sh", "-c", SCRIPT]);
    });
    let state = dir.path().join("state");
    let (master, slave) = pty(31, 97);
    let before = termios(&slave);
    let screen = Screen::new(&master);
    let b = b.to_str().expect("utf-8 path");
    let child = spawn_on(&slave, &state, &["run", "--bundle", b, "ttyrun"]);
    typed_and_exited(&master, &slave, child, &screen);
    assert_eq!(termios(&slave), before, "terminal settings restored");
    // Run leaves nothing behind, the console socket's directory included.
    let left: Vec<_> = std::fs::read_dir(&state)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left in the state root: {left:?}");
}

#[test]
fn exec_tty_gives_the_process_its_own_terminal_as_root() {
    require_root();
    let dir = tempfile::tempdir().expect("tmp");
    let b = bundle(dir.path(), |c| {
        c["process"]["args"] = json!(["/bin/busybox", "sleep", "60"]);
    });
    let state = dir.path().join("state");
    let b = b.to_str().expect("utf-8 path");
    let ok = Command::new(OURS)
        .arg("--root")
        .arg(&state)
        .args(["create", "--bundle", b, "ttyexec"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("create")
        .success();
    assert!(ok, "create");
    let (ok, _, err) = runtime(OURS, &state, &["start", "ttyexec"]);
    assert!(ok, "{err}");

    let (master, slave) = pty(31, 97);
    let before = termios(&slave);
    let screen = Screen::new(&master);
    let child = spawn_on(
        &slave,
        &state,
        &[
            "exec",
            "--tty",
            "ttyexec",
            "/bin/busybox",
            "sh",
            "-c",
            SCRIPT,
        ],
    );
    typed_and_exited(&master, &slave, child, &screen);
    assert_eq!(termios(&slave), before, "terminal settings restored");

    let (ok, _, err) = runtime(OURS, &state, &["delete", "--force", "ttyexec"]);
    assert!(ok, "{err}");
}

#[test]
fn gantry_run_tty_relays_the_terminal_and_logs_its_output_as_root() {
    require_root();
    let dir = tempfile::tempdir().expect("tmp");
    let layout = dir.path().join("layout");
    std::fs::create_dir_all(&layout).expect("layout");
    let d = common::add_image(
        &layout,
        &common::ImageSpec {
            arch: "amd64",
            layers: &common::busybox_layers(),
            comp: common::Comp::Gzip,
            bad_diff_id: false,
            cmd: &["/bin/sh"],
        },
    );
    common::finish_layout(&layout, vec![("example.com/tty:1", d)]);
    let store = dir.path().join("store");
    let store = store.to_str().expect("utf-8 path");
    let layout = layout.to_str().expect("utf-8 path");
    let (ok, _, err) = common::gantry(&["--root", store, "image", "import", layout], None);
    assert!(ok, "{err}");

    let state = dir.path().join("run");
    let log = dir.path().join("tty.log");
    let (master, slave) = pty(31, 97);
    let before = termios(&slave);
    let screen = Screen::new(&master);
    let script = format!("echo term=$TERM; {SCRIPT}");
    let stdio = || Stdio::from(slave.try_clone().expect("dup slave"));
    let child = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["--root", store, "run", "--name", "tty-1", "--tty"])
        .arg("--state-root")
        .arg(&state)
        .arg("--log-file")
        .arg(&log)
        .args(["example.com/tty:1", "/bin/busybox", "sh", "-c", &script])
        .stdin(stdio())
        .stdout(stdio())
        .stderr(stdio())
        .spawn()
        .expect("spawn gantry");
    typed_and_exited(&master, &slave, child, &screen);
    assert_eq!(termios(&slave), before, "terminal settings restored");
    assert!(
        screen.text().contains("term=xterm\r\n"),
        "{:?}",
        screen.text()
    );
    // The log has the terminal's output as one stdout stream, the echo of the typed line
    // included, with the terminal's line ends (the logger ends a record at each '\n').
    wait_until("the logger to write the last line", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("got hello"))
    });
    let text = std::fs::read_to_string(&log).expect("log");
    for want in ["term=xterm\r", "31 97\r", "hello\r", "got hello\r"] {
        assert!(
            text.split('\n')
                .any(|l| l.contains(" stdout F ") && l.ends_with(want)),
            "{want:?} in the log: {text}"
        );
    }
    assert!(!text.contains(" stderr "), "{text}");
}
