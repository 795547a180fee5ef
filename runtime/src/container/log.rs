//! Container logs: the container's stdout and stderr go to pipes read by a small logger
//! process, which appends each line to a file in the CRI log format that kubelet and
//! containerd write (`<RFC 3339 time> <stdout|stderr> <F|P> <text>`; `P` marks a part of a
//! line longer than the buffer, `F` a full line), so existing tools read it.
//!
//! The logger is a fork of the runtime, started before the container's init, in its own
//! session; it ends when both pipes reach end-of-file, that is when the container's last
//! process has gone. With a [`Rotation`], a file that reaches `max_bytes` is renamed to
//! `<file>.1` (older ones shift to `.2` … up to `keep`, the oldest is dropped) and a new
//! file is started; a record is never split between two files.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::unistd::{fork, ForkResult};

/// The longest piece of a line written as one record.
const MAX_RECORD: usize = 16 * 1024;

/// The write ends the container's stdout and stderr go to.
#[derive(Debug)]
pub struct LogPipes {
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// Size-based rotation of a log file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Rotate once the file holds this many bytes.
    pub max_bytes: u64,
    /// Rotated files kept besides the current one.
    pub keep: u32,
}

/// Opens `path` for appending, starts the logger and returns the pipes' write ends.
pub fn start(path: &Path, rotation: Option<Rotation>) -> std::io::Result<LogPipes> {
    let file = open(path)?;
    let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // SAFETY: the runtime is single-threaded; the child only reads, writes and exits.
    match unsafe { fork() }? {
        ForkResult::Parent { .. } => Ok(LogPipes {
            stdout: out_w,
            stderr: err_w,
        }),
        ForkResult::Child => {
            drop((out_w, err_w));
            // Hold nothing but the log and the pipes: a copy of another pipe's write end
            // (the runtime's hand-shake with the init) would keep its reader waiting.
            let keep = [file.as_raw_fd(), out_r.as_raw_fd(), err_r.as_raw_fd()];
            close_all_except(&keep);
            let _ = nix::unistd::setsid();
            super::init::harden_child();
            // Detach from the runtime's stdio: nothing of a terminal is held open.
            if let Ok(null) = std::fs::File::options()
                .read(true)
                .write(true)
                .open("/dev/null")
            {
                for fd in 0..3 {
                    // SAFETY: dup2 onto the standard descriptors of this process only.
                    unsafe { libc::dup2(null.as_raw_fd(), fd) };
                }
            }
            let written = file.metadata().map(|m| m.len()).unwrap_or(0);
            let mut sink = Sink {
                file,
                path: path.to_owned(),
                written,
                rotation,
            };
            pump(&mut sink, out_r, err_r);
            // SAFETY: _exit ends the forked logger without the runtime's exit handlers.
            unsafe { libc::_exit(0) }
        }
    }
}

/// Closes every descriptor from 3 up but those in `keep`.
fn close_all_except(keep: &[i32]) {
    let open: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
                .collect()
        })
        .unwrap_or_default();
    for fd in open {
        if fd > 2 && !keep.contains(&fd) {
            // SAFETY: closing a descriptor of this (forked, single-threaded) process that
            // nothing here uses; the directory listing's own is already closed, or EBADF.
            unsafe { libc::close(fd) };
        }
    }
}

fn open(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// The log file, rotated by size.
struct Sink {
    file: std::fs::File,
    path: std::path::PathBuf,
    written: u64,
    rotation: Option<Rotation>,
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(r) = self.rotation {
            if self.written > 0 && self.written + buf.len() as u64 > r.max_bytes {
                self.rotate(r)?;
            }
        }
        let n = self.file.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl Sink {
    fn rotate(&mut self, r: Rotation) -> std::io::Result<()> {
        let name = |n: u32| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{n}"));
            std::path::PathBuf::from(p)
        };
        if r.keep == 0 {
            let _ = std::fs::remove_file(&self.path);
        } else {
            let _ = std::fs::remove_file(name(r.keep));
            for n in (1..r.keep).rev() {
                let _ = std::fs::rename(name(n), name(n + 1));
            }
            std::fs::rename(&self.path, name(1))?;
        }
        self.file = open(&self.path)?;
        self.written = 0;
        Ok(())
    }
}

/// Copies both pipes into the file, a record per line, until both are closed.
fn pump(file: &mut Sink, out: OwnedFd, err: OwnedFd) {
    let mut streams = [
        (std::fs::File::from(out), "stdout", Vec::new(), true),
        (std::fs::File::from(err), "stderr", Vec::new(), true),
    ];
    let mut buf = vec![0u8; MAX_RECORD];
    while streams.iter().any(|s| s.3) {
        let mut fds: Vec<PollFd> = streams
            .iter()
            .filter(|s| s.3)
            .map(|s| PollFd::new(s.0.as_fd(), PollFlags::POLLIN))
            .collect();
        if poll(&mut fds, PollTimeout::NONE).is_err() {
            continue;
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        for (k, s) in streams.iter_mut().filter(|s| s.3).enumerate() {
            if !ready.get(k).copied().unwrap_or(false) {
                continue;
            }
            match std::io::Read::read(&mut s.0, &mut buf) {
                Ok(0) | Err(_) => {
                    if !s.2.is_empty() {
                        let _ = record(file, s.1, &s.2, 'F');
                        s.2.clear();
                    }
                    s.3 = false;
                }
                Ok(n) => {
                    s.2.extend_from_slice(&buf[..n]);
                    let _ = drain_lines(file, s.1, &mut s.2);
                }
            }
        }
    }
}

/// Writes every complete line of `pending` (and pieces of an over-long one) and keeps
/// the rest.
fn drain_lines(file: &mut impl Write, stream: &str, pending: &mut Vec<u8>) -> std::io::Result<()> {
    while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
        let line: Vec<u8> = pending.drain(..=nl).collect();
        record(file, stream, &line[..line.len() - 1], 'F')?;
    }
    while pending.len() >= MAX_RECORD {
        let part: Vec<u8> = pending.drain(..MAX_RECORD).collect();
        record(file, stream, &part, 'P')?;
    }
    Ok(())
}

fn record(file: &mut impl Write, stream: &str, text: &[u8], tag: char) -> std::io::Result<()> {
    let mut line = format!("{} {stream} {tag} ", super::state::now_rfc3339()).into_bytes();
    line.extend_from_slice(text);
    line.push(b'\n');
    // One write per record: a rotation happens between records, never inside one.
    file.write_all(&line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_whole_records_and_at_most_keep_old_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.log");
        let mut sink = Sink {
            file: open(&path).unwrap(),
            path: path.clone(),
            written: 0,
            rotation: Some(Rotation {
                max_bytes: 100,
                keep: 2,
            }),
        };
        for i in 0..20 {
            record(&mut sink, "stdout", format!("line {i:02}").as_bytes(), 'F').unwrap();
        }
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        let current = read(&path);
        let one = read(&dir.path().join("web.log.1"));
        let two = read(&dir.path().join("web.log.2"));
        assert!(!dir.path().join("web.log.3").exists());
        for text in [&current, &one, &two] {
            assert!(text.len() <= 100, "{text}");
            assert!(
                text.lines().all(|l| l.contains(" stdout F line ")),
                "{text}"
            );
        }
        assert!(current.ends_with("line 19\n"), "{current}");
        let first_kept: u32 = two
            .lines()
            .next()
            .unwrap()
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let last_old: u32 = one
            .lines()
            .last()
            .unwrap()
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(first_kept < last_old, "older records in .2 than in .1");
    }

    #[test]
    fn lines_become_cri_records_and_long_ones_are_split() {
        let mut out = Vec::new();
        let mut pending = b"one\ntwo\nthr".to_vec();
        drain_lines(&mut out, "stdout", &mut pending).unwrap();
        assert_eq!(pending, b"thr");
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].ends_with(" stdout F one"), "{}", lines[0]);
        assert!(lines[1].ends_with(" stdout F two"), "{}", lines[1]);
        assert!(
            lines[0].as_bytes()[4] == b'-' && lines[0].contains('T'),
            "{}",
            lines[0]
        );

        let mut out = Vec::new();
        let mut pending = vec![b'x'; MAX_RECORD + 5];
        drain_lines(&mut out, "stderr", &mut pending).unwrap();
        assert_eq!(pending.len(), 5);
        assert!(String::from_utf8(out).unwrap().contains(" stderr P xxx"));
    }
}
