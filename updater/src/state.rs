//! What the updater remembers across boots, in `/var/lib/gantry/update/state.json`
//! (written to a temporary name, fsynced, renamed): the update on trial, and the versions
//! that failed, so that a bundle that rolled back is not installed again until a newer one
//! appears, and the highest channel document serial accepted per channel, so that a
//! mirror cannot replay an older document (see [`crate::channel`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Slot;

pub const STATE_DIR: &str = "/var/lib/gantry/update";
const STATE_FILE: &str = "state.json";
/// Failures kept, newest last.
const MAX_FAILED: usize = 16;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateState {
    /// Installed into the inactive slot and not yet marked good.
    #[serde(default)]
    pub pending: Option<Pending>,
    /// Versions that were rolled back.
    #[serde(default)]
    pub failed: Vec<Failure>,
    /// The highest channel document serial accepted, by channel name.
    #[serde(default)]
    pub channel_serials: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pending {
    pub version: String,
    pub rollback_index: u64,
    pub slot: Slot,
    pub from_version: String,
    pub tries: u8,
    /// Why each trial boot that got as far as PID 1 failed its health gate.
    #[serde(default)]
    pub gate_failures: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Failure {
    pub version: String,
    pub rollback_index: u64,
    pub slot: Slot,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

impl UpdateState {
    /// The state in `dir`; none yet is the default state.
    pub fn load(dir: &Path) -> Result<Self, StateError> {
        let path = dir.join(STATE_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
                path,
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(StateError::Io { path, source }),
        }
    }

    pub fn save(&self, dir: &Path) -> Result<(), StateError> {
        let path = dir.join(STATE_FILE);
        let io = |source| StateError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| StateError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        gantry_durable::write_atomic(&dir.join(STATE_FILE), &bytes).map_err(io)
    }

    /// Whether `version` rolled back before (and so is not installed again).
    pub fn failed_before(&self, version: &str) -> Option<&Failure> {
        self.failed.iter().rev().find(|f| f.version == version)
    }

    /// Records `serial` as accepted for `channel`; returns whether that raised the highest
    /// (and so the state needs saving).
    pub fn accept_serial(&mut self, channel: &str, serial: u64) -> bool {
        let highest = self.channel_serials.entry(channel.to_owned()).or_insert(0);
        let raised = serial > *highest;
        *highest = (*highest).max(serial);
        raised
    }

    /// Records that the pending update rolled back, for `reason`.
    pub fn roll_back(&mut self, reason: String) -> Option<Failure> {
        let p = self.pending.take()?;
        let failure = Failure {
            version: p.version,
            rollback_index: p.rollback_index,
            slot: p.slot,
            reason,
        };
        self.failed.push(failure.clone());
        let excess = self.failed.len().saturating_sub(MAX_FAILED);
        self.failed.drain(..excess);
        Some(failure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_keeps_failures_and_refuses_garbage_by_path() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            UpdateState::load(dir.path()).unwrap(),
            UpdateState::default()
        );
        let mut s = UpdateState {
            pending: Some(Pending {
                version: "0.2.0".into(),
                rollback_index: 2,
                slot: Slot::B,
                from_version: "0.1.0".into(),
                tries: 3,
                gate_failures: vec!["container web is not healthy".into()],
            }),
            failed: vec![],
            channel_serials: BTreeMap::new(),
        };
        assert!(s.accept_serial("stable", 9));
        assert!(!s.accept_serial("stable", 9));
        assert!(!s.accept_serial("stable", 3));
        assert!(s.accept_serial("beta", 2));
        s.save(dir.path()).unwrap();
        assert_eq!(UpdateState::load(dir.path()).unwrap(), s);
        assert_eq!(s.channel_serials["stable"], 9);
        // A state written before serials were kept still loads.
        std::fs::write(
            dir.path().join(STATE_FILE),
            r#"{"pending":null,"failed":[]}"#,
        )
        .unwrap();
        assert!(UpdateState::load(dir.path())
            .unwrap()
            .channel_serials
            .is_empty());
        s.save(dir.path()).unwrap();
        let f = s.roll_back("gate".into()).unwrap();
        assert_eq!(f.version, "0.2.0");
        assert!(s.pending.is_none());
        assert!(s.failed_before("0.2.0").is_some());
        assert!(s.failed_before("0.3.0").is_none());
        for i in 0..40 {
            s.pending = Some(Pending {
                version: format!("v{i}"),
                rollback_index: i,
                slot: Slot::B,
                from_version: "x".into(),
                tries: 1,
                gate_failures: vec![],
            });
            s.roll_back("r".into());
        }
        assert_eq!(s.failed.len(), MAX_FAILED);
        assert_eq!(s.failed.last().unwrap().version, "v39");
        std::fs::write(dir.path().join(STATE_FILE), "{").unwrap();
        let err = UpdateState::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("state.json"), "{err}");
    }
}
