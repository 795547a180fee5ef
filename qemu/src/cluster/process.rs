//! The cluster's processes outlive the command that started them (`cluster up` returns;
//! `cluster down` from another shell stops them), so they run in their own process group,
//! with their output in a file, and are found again by PID. A PID is trusted only while
//! `/proc/PID/cmdline` still names the cluster's directory: a reused PID is never
//! signalled.

use std::fs::File;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Starts `cmd` detached: its own process group, stdin from /dev/null, stdout and stderr
/// into `log`. Returns once the new process runs the program with `marker` in its
/// command line (between fork and exec it still looks like this process), or fails with
/// the log's tail if it exits first.
pub fn spawn(mut cmd: Command, log: &Path, marker: &Path) -> Result<Child, String> {
    let out = File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let err = out
        .try_clone()
        .map_err(|e| format!("{}: {e}", log.display()))?;
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if alive(child.id(), marker) {
            return Ok(child);
        }
        let exited = child.try_wait().map_err(|e| format!("{program}: {e}"))?;
        if exited.is_none() && Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
        }
        if exited.is_some() || Instant::now() >= deadline {
            let why = exited.map_or("did not start".to_owned(), |s| format!("exited ({s})"));
            return Err(format!(
                "{program} {why}; {}:\n{}",
                log.display(),
                super::tail(log, 10)
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether `pid` is a live (not zombie) process whose command line contains `marker`.
pub fn alive(pid: u32, marker: &Path) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name's closing parenthesis.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    if matches!(state, Some('Z' | 'X') | None) {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let marker = marker.as_os_str().as_encoded_bytes();
    cmdline.windows(marker.len()).any(|w| w == marker)
}

/// Sends `signal` to `pid` if it is still ours; returns whether it was.
pub fn signal(pid: u32, marker: &Path, signal: i32) -> bool {
    if !alive(pid, marker) {
        return false;
    }
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: kill only sends a signal; the PID was checked to be ours just above.
    unsafe { libc::kill(pid, signal) == 0 }
}

/// Waits up to `timeout` for `pid` to be gone (reaping it if it is our child).
pub fn wait_gone(pid: u32, marker: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(p) = i32::try_from(pid) {
            // SAFETY: waitpid with WNOHANG on a PID only reaps it if it is our child.
            unsafe { libc::waitpid(p, std::ptr::null_mut(), libc::WNOHANG) };
        }
        if !alive(pid, marker) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Stops `pid`: SIGTERM, then SIGKILL after `grace`.
pub fn stop(pid: u32, marker: &Path, grace: Duration) {
    if signal(pid, marker, libc::SIGTERM) && !wait_gone(pid, marker, grace) {
        signal(pid, marker, libc::SIGKILL);
        wait_gone(pid, marker, Duration::from_secs(5));
    }
}

/// A free TCP port on 127.0.0.1 (bound, read and released).
pub fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port on 127.0.0.1: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_ours_only_while_its_command_line_names_the_marker() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("node-1");
        // `sleep 30` does not carry the marker; `sh -c 'sleep 30; true' MARKER` does.
        let mut cmd = Command::new("sleep");
        cmd.arg("30").env("UNUSED", &marker);
        let stranger = spawn(cmd, &dir.path().join("a.log"), Path::new("30")).unwrap();
        assert!(!alive(stranger.id(), &marker));
        assert!(!signal(stranger.id(), &marker, libc::SIGKILL));
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 30; true"]).arg(&marker);
        let mut ours = spawn(cmd, &dir.path().join("b.log"), &marker).unwrap();
        assert!(alive(ours.id(), &marker));
        stop(ours.id(), &marker, Duration::from_secs(5));
        assert!(!alive(ours.id(), &marker), "gone, and reaped");
        // Reaped by stop already; this only tells the compiler so.
        let _ = ours.wait();
        let mut stranger = stranger;
        let _ = stranger.kill();
        let _ = stranger.wait();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo no such thing >&2; exit 3"])
            .arg(&marker);
        let err = spawn(cmd, &dir.path().join("c.log"), Path::new("never")).unwrap_err();
        assert!(
            err.contains("exited") && err.contains("no such thing"),
            "{err}"
        );
    }
}
