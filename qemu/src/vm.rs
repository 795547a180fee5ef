//! A running VM: started from a [`VmConfig`], watched through its serial log, controlled
//! through QMP, and killed when dropped.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::config::{VmConfig, VmFiles};
use crate::qmp::{Qmp, QmpError};

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{command}` failed: {stderr}")]
    QemuImg { command: String, stderr: String },
    #[error("cannot start qemu-system-x86_64 (apt-get install qemu-system-x86 ovmf): {0}")]
    Spawn(std::io::Error),
    #[error("firmware {0} is missing (apt-get install ovmf)")]
    Firmware(PathBuf),
    #[error("no console line containing {wanted:?} within {timeout:?}; console tail:\n{tail}")]
    Timeout {
        wanted: Vec<String>,
        timeout: Duration,
        tail: String,
    },
    #[error("QEMU exited ({status}) before the console showed {wanted:?}; console tail:\n{tail}")]
    Exited {
        status: ExitStatus,
        wanted: Vec<String>,
        tail: String,
    },
    #[error("cannot check whether QEMU is still running: {0}")]
    Wait(std::io::Error),
    #[error("QEMU did not exit within {0:?}")]
    StillRunning(Duration),
    #[error(transparent)]
    Qmp(#[from] QmpError),
}

/// A VM and the directory of its files (removed on drop unless kept).
#[derive(Debug)]
pub struct Vm {
    child: Child,
    files: VmFiles,
    dir: Option<tempfile::TempDir>,
    log: Option<File>,
    seen: String,
    /// How much of `seen` earlier waits have matched against.
    scanned: usize,
    qmp: Option<Qmp>,
}

impl Vm {
    /// Starts QEMU. The image is never written (unless `cfg.overlay` is false): the VM runs
    /// on a qcow2 overlay in its own directory, with its own copy of the firmware variables.
    pub fn start(cfg: &VmConfig) -> Result<Self, VmError> {
        let dir = tempfile::Builder::new()
            .prefix("gantry-vm-")
            .tempdir()
            .map_err(|source| VmError::Io {
                path: std::env::temp_dir(),
                source,
            })?;
        let files = VmFiles::in_dir(dir.path());
        for fw in [&cfg.firmware.code, &cfg.firmware.vars_template] {
            if !fw.is_file() {
                return Err(VmError::Firmware(fw.clone()));
            }
        }
        std::fs::copy(&cfg.firmware.vars_template, &files.vars).map_err(|source| VmError::Io {
            path: files.vars.clone(),
            source,
        })?;
        if cfg.overlay {
            create_overlay(&cfg.image, &files.overlay)?;
        }
        File::create(&files.serial_log).map_err(|source| VmError::Io {
            path: files.serial_log.clone(),
            source,
        })?;
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(cfg.args(&files));
        if cfg.console {
            cmd.stdin(Stdio::inherit()).stdout(Stdio::inherit());
        } else {
            cmd.stdin(Stdio::null()).stdout(Stdio::null());
        }
        cmd.stderr(Stdio::inherit());
        let child = cmd.spawn().map_err(VmError::Spawn)?;
        Ok(Vm {
            child,
            files,
            dir: Some(dir),
            log: None,
            seen: String::new(),
            scanned: 0,
            qmp: None,
        })
    }

    pub fn serial_log_path(&self) -> &Path {
        &self.files.serial_log
    }

    pub fn qmp_path(&self) -> &Path {
        &self.files.qmp
    }

    /// The qcow2 overlay holding everything the guest wrote to its disk (when the VM
    /// runs on one, see [`VmConfig::overlay`]).
    pub fn overlay_path(&self) -> &Path {
        &self.files.overlay
    }

    /// Keeps the VM's directory after the VM is gone (to look at its log).
    pub fn keep_files(&mut self) -> Option<PathBuf> {
        self.dir.take().map(tempfile::TempDir::keep)
    }

    /// All console output so far.
    pub fn console(&mut self) -> &str {
        self.pull();
        &self.seen
    }

    /// Waits for a console line containing `needle`; returns that line.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> Result<String, VmError> {
        self.wait_for_any(&[needle], timeout).map(|(_, line)| line)
    }

    /// Waits for a console line containing any of `needles`; returns which and the line.
    /// Lines seen by an earlier wait are not matched again.
    pub fn wait_for_any(
        &mut self,
        needles: &[&str],
        timeout: Duration,
    ) -> Result<(usize, String), VmError> {
        let deadline = Instant::now() + timeout;
        let wanted = || needles.iter().map(|s| (*s).to_owned()).collect();
        loop {
            // Whether QEMU is gone is asked before the last read, so that what it wrote
            // before exiting is scanned too.
            let exited = self.child.try_wait().map_err(VmError::Wait)?;
            self.pull();
            if let Some(found) = self.scan(needles, exited.is_some()) {
                return Ok(found);
            }
            if let Some(status) = exited {
                return Err(VmError::Exited {
                    status,
                    wanted: wanted(),
                    tail: self.tail(40),
                });
            }
            if Instant::now() >= deadline {
                return Err(VmError::Timeout {
                    wanted: wanted(),
                    timeout,
                    tail: self.tail(40),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Looks for a needle in the lines not scanned yet: whole lines, and the unfinished
    /// last one too when `to_end` (nothing more will come).
    fn scan(&mut self, needles: &[&str], to_end: bool) -> Option<(usize, String)> {
        while self.scanned < self.seen.len() {
            let rest = &self.seen[self.scanned..];
            let (line, next) = match rest.find('\n') {
                Some(nl) => (&rest[..nl], self.scanned + nl + 1),
                None if to_end => (rest, self.seen.len()),
                None => return None,
            };
            let hit = needles.iter().position(|n| line.contains(n));
            let line = line.trim_end_matches('\r').to_owned();
            self.scanned = next;
            if let Some(i) = hit {
                return Some((i, line));
            }
        }
        None
    }

    /// Runs a QMP command (connecting on first use).
    pub fn qmp(
        &mut self,
        command: &str,
        arguments: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, VmError> {
        if self.qmp.is_none() {
            self.qmp = Some(Qmp::connect(&self.files.qmp, Duration::from_secs(10))?);
        }
        match self.qmp.as_mut() {
            Some(q) => Ok(q.execute(command, arguments)?),
            None => Err(VmError::Qmp(QmpError::Closed)),
        }
    }

    /// Presses the ACPI power button.
    pub fn power_button(&mut self) -> Result<(), VmError> {
        self.qmp("system_powerdown", None).map(|_| ())
    }

    /// Presses Ctrl-Alt-Del on the VM's PS/2 keyboard.
    pub fn ctrl_alt_del(&mut self) -> Result<(), VmError> {
        let keys: Vec<serde_json::Value> = ["ctrl", "alt", "delete"]
            .iter()
            .map(|k| serde_json::json!({ "type": "qcode", "data": k }))
            .collect();
        self.qmp("send-key", Some(serde_json::json!({ "keys": keys })))
            .map(|_| ())
    }

    /// Waits for QEMU to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, VmError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().map_err(VmError::Wait)? {
                self.pull();
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(VmError::StillRunning(timeout));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last `n` console lines.
    pub fn tail(&self, n: usize) -> String {
        let lines: Vec<&str> = self.seen.lines().rev().take(n).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    fn pull(&mut self) {
        if self.log.is_none() {
            self.log = File::open(&self.files.serial_log).ok();
        }
        if let Some(log) = self.log.as_mut() {
            let mut buf = Vec::new();
            if log.read_to_end(&mut buf).is_ok() {
                // Firmware writes escape codes and the odd invalid byte; keep the text.
                self.seen.push_str(&String::from_utf8_lossy(&buf));
            }
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A qcow2 overlay on `image`, so the VM never writes the image itself.
pub(crate) fn create_overlay(image: &Path, overlay: &Path) -> Result<(), VmError> {
    let image = image.canonicalize().map_err(|source| VmError::Io {
        path: image.to_owned(),
        source,
    })?;
    let format = crate::config::image_format(&image);
    let args = [
        "create".to_owned(),
        "-q".to_owned(),
        "-f".to_owned(),
        "qcow2".to_owned(),
        "-F".to_owned(),
        format.to_owned(),
        "-b".to_owned(),
        image.display().to_string(),
        overlay.display().to_string(),
    ];
    let out = Command::new("qemu-img")
        .args(&args)
        .output()
        .map_err(|source| VmError::Io {
            path: "qemu-img".into(),
            source,
        })?;
    if !out.status.success() {
        return Err(VmError::QemuImg {
            command: format!("qemu-img {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}
