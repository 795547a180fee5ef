//! A container's state on disk: `<root>/<id>/state.json`, written atomically, plus the
//! `exec.fifo` that holds a created container before `start`. The status is not stored; it
//! is read from the world each time (as runc does): a live init process whose fifo still
//! exists is `created`, a live one without it is `running`, a dead one is `stopped`. The
//! init's start time (from `/proc/<pid>/stat`) is kept so that a recycled pid is not
//! mistaken for the container.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::id::ContainerId;

/// The OCI runtime spec version our `state` output follows.
pub const OCI_VERSION: &str = "1.2.0";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("container {id}: {path}: {source}")]
    Io {
        id: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("container {0} does not exist")]
    NotFound(String),
    #[error("container {0} already exists")]
    Exists(String),
    #[error("container {id}: state file is corrupt: {reason}")]
    Corrupt { id: String, reason: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Stopped,
}

/// What is stored for a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    pub id: String,
    pub pid: i32,
    /// Field 22 of `/proc/<pid>/stat` when the container was created.
    pub start_time: u64,
    pub bundle: PathBuf,
    pub created: String,
    #[serde(default)]
    pub annotations: Vec<(String, String)>,
    /// The container's cgroup v2 directory, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<PathBuf>,
}

/// The `state` command's output, as the OCI runtime spec defines it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OciState {
    pub oci_version: &'static str,
    pub id: String,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    pub bundle: PathBuf,
    pub annotations: std::collections::BTreeMap<String, String>,
    pub created: String,
    /// OOM kills in the container's cgroup (Gantry's addition to the spec's state).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oom_kills: Option<u64>,
}

/// The state directory of all containers (`--root`).
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_owned(),
        }
    }

    pub fn dir(&self, id: &ContainerId) -> PathBuf {
        self.root.join(id.as_str())
    }

    pub fn fifo(&self, id: &ContainerId) -> PathBuf {
        self.dir(id).join("exec.fifo")
    }

    fn io(&self, id: &ContainerId, path: &Path) -> impl FnOnce(std::io::Error) -> StateError {
        let (id, path) = (id.to_string(), path.to_owned());
        move |source| StateError::Io { id, path, source }
    }

    /// Makes the container's directory; fails if the id is taken.
    pub fn claim(&self, id: &ContainerId) -> Result<PathBuf, StateError> {
        crate::fsutil::private_dir(&self.root).map_err(self.io(id, &self.root))?;
        let dir = self.dir(id);
        match std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
            .create(&dir)
        {
            Ok(()) => Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(StateError::Exists(id.to_string()))
            }
            Err(e) => Err(self.io(id, &dir)(e)),
        }
    }

    pub fn save(&self, id: &ContainerId, stored: &Stored) -> Result<(), StateError> {
        let path = self.dir(id).join("state.json");
        let json = serde_json::to_vec(stored).map_err(|e| StateError::Corrupt {
            id: id.to_string(),
            reason: e.to_string(),
        })?;
        let tmp = self.dir(id).join(".state.json.tmp");
        (|| {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&json)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        })()
        .map_err(self.io(id, &path))
    }

    pub fn load(&self, id: &ContainerId) -> Result<Stored, StateError> {
        let path = self.dir(id).join("state.json");
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StateError::NotFound(id.to_string()))
            }
            Err(e) => return Err(self.io(id, &path)(e)),
        };
        serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
            id: id.to_string(),
            reason: e.to_string(),
        })
    }

    /// The status as the world shows it now.
    pub fn status(&self, id: &ContainerId, stored: &Stored) -> Status {
        if process_start_time(stored.pid) != Some(stored.start_time) {
            return Status::Stopped;
        }
        if self.fifo(id).exists() {
            Status::Created
        } else {
            Status::Running
        }
    }

    pub fn oci_state(&self, id: &ContainerId, stored: &Stored) -> OciState {
        let status = self.status(id, stored);
        OciState {
            oci_version: OCI_VERSION,
            id: stored.id.clone(),
            status,
            pid: (status != Status::Stopped).then_some(stored.pid),
            bundle: stored.bundle.clone(),
            annotations: stored.annotations.iter().cloned().collect(),
            created: stored.created.clone(),
            oom_kills: stored
                .cgroup
                .as_ref()
                .map(|p| super::cgroup::Cgroup { path: p.clone() }.oom_kills()),
        }
    }

    pub fn remove(&self, id: &ContainerId) -> Result<(), StateError> {
        let dir = self.dir(id);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io(id, &dir)(e)),
        }
    }

    /// Every container id with a state directory.
    pub fn list(&self) -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(&self.root)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter(|e| e.path().join("state.json").is_file())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    }
}

/// Field 22 (starttime) of `/proc/<pid>/stat`, or `None` if there is no such process.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    // After ')' come field 3 (state) onwards; starttime is field 22.
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// Now, as RFC 3339 in UTC (what `created` holds).
pub fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_nanos()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_of_this_process_is_stable_and_a_dead_pid_has_none() {
        let me = std::process::id() as i32;
        let t = process_start_time(me).unwrap();
        assert_eq!(process_start_time(me), Some(t));
        assert_eq!(process_start_time(i32::MAX), None);
    }

    #[test]
    fn created_is_rfc3339_utc() {
        let s = now_rfc3339();
        assert_eq!(s.len(), 30, "{s}");
        assert!(
            s.starts_with("20") && s.ends_with('Z') && s.as_bytes()[10] == b'T',
            "{s}"
        );
    }
}
