//! The last accepted config, kept on `/var` so that a machine keeps its config when a new
//! one is refused or when every source has gone (the config drive was removed, the
//! metadata service forgot the user data).
//!
//! The file is the accepted document exactly as its source gave it, after a few header
//! comments saying where it came from and what the source's meta-data said:
//!
//! ```text
//! # gantry-init: last good machine config
//! # source: config drive /dev/vdb (CIDATA)
//! # instance-id: iid-local01
//! # local-hostname: node-7
//! version = 1
//! …
//! ```
//!
//! It is written with [`gantry_durable::write_atomic`] (temporary file, fsync,
//! rename, fsync of the directory), so a power cut leaves the old copy or the new one.
//! Nothing is written when `/var` is not persistent (tmpfs or ramfs because the DATA
//! partition could not be mounted) or is read-only; PID 1 logs why.

use std::io;
use std::path::{Path, PathBuf};

use super::user_data::MetaData;
use super::{ConfigError, MachineConfig};

/// Where PID 1 keeps the copy.
pub const PATH: &str = "/var/lib/gantry/config/current.toml";
const FIRST_LINE: &str = "# gantry-init: last good machine config";

/// A stored copy, read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub config: MachineConfig,
    /// The source it was accepted from, as the header says.
    pub from: String,
    pub meta: MetaData,
}

/// The place the copy is kept.
#[derive(Debug, Clone)]
pub struct LastGood {
    path: PathBuf,
    /// `Err(why)` when copies there would not survive a reboot.
    persistent: Result<(), String>,
}

/// Why a copy was not kept.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    NotPersistent(String),
    #[error("cannot create {path}: {source}")]
    Dir { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

impl LastGood {
    /// [`PATH`], after checking that `/var` keeps what is written to it.
    pub fn for_pid1() -> LastGood {
        LastGood {
            path: PathBuf::from(PATH),
            persistent: persistent(Path::new("/var")),
        }
    }

    /// A copy at `path`, on a file system taken to be persistent.
    pub fn at(path: impl Into<PathBuf>) -> LastGood {
        LastGood {
            path: path.into(),
            persistent: Ok(()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How this copy is named in logs and errors.
    pub fn source_name(&self) -> String {
        format!("last good copy {}", self.path.display())
    }

    /// Keeps `text` (an accepted document) with its origin. Returns whether the file
    /// changed (an identical copy is not rewritten).
    pub fn store(&self, text: &str, from: &str, meta: &MetaData) -> Result<bool, StoreError> {
        self.persistent.clone().map_err(StoreError::NotPersistent)?;
        let mut out = format!("{FIRST_LINE}\n# source: {}\n", one_line(from));
        if let Some(id) = &meta.instance_id {
            out.push_str(&format!("# instance-id: {}\n", one_line(id)));
        }
        if let Some(h) = &meta.local_hostname {
            out.push_str(&format!("# local-hostname: {}\n", one_line(h)));
        }
        out.push_str(text);
        if std::fs::read(&self.path).is_ok_and(|old| old == out.as_bytes()) {
            return Ok(false);
        }
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
                path: dir.to_owned(),
                source,
            })?;
        }
        gantry_durable::write_atomic(&self.path, out.as_bytes()).map_err(|source| {
            StoreError::Write {
                path: self.path.clone(),
                source,
            }
        })?;
        Ok(true)
    }

    /// The stored copy: `Ok(None)` when there is none; refused like any other source when
    /// it no longer parses (e.g. after a downgrade to a Gantry that reads less).
    pub fn load(&self) -> Result<Option<Stored>, Vec<ConfigError>> {
        let name = self.source_name();
        let err = |reason: String| {
            vec![ConfigError {
                source_name: name.clone(),
                key: "(document)".to_owned(),
                reason,
            }]
        };
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(err(format!("cannot read: {e}"))),
        };
        let text = String::from_utf8(bytes)
            .map_err(|e| err(format!("not UTF-8 (byte {})", e.utf8_error().valid_up_to())))?;
        let config = MachineConfig::parse(&text, &name)?;
        let header: String = text
            .lines()
            .map_while(|l| l.strip_prefix("# "))
            .map(|l| format!("{l}\n"))
            .collect();
        let from = header
            .lines()
            .find_map(|l| l.strip_prefix("source: "))
            .unwrap_or("unknown")
            .to_owned();
        Ok(Some(Stored {
            config,
            from,
            meta: MetaData::parse(&header),
        }))
    }
}

/// A value that cannot break the header: line breaks become spaces.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// Whether files under `var` survive a reboot: not on tmpfs/ramfs, not read-only.
fn persistent(var: &Path) -> Result<(), String> {
    use nix::sys::statfs::{statfs, FsType, TMPFS_MAGIC};
    // linux/magic.h; nix names tmpfs's magic number but not ramfs's.
    const RAMFS_MAGIC: FsType = FsType(0x8584_58f6);
    use nix::sys::statvfs::{statvfs, FsFlags};
    let shown = var.display();
    let fs = statfs(var).map_err(|e| format!("cannot inspect {shown}: {e}"))?;
    if fs.filesystem_type() == TMPFS_MAGIC || fs.filesystem_type() == RAMFS_MAGIC {
        return Err(format!(
            "{shown} is in memory (the DATA partition is not mounted); a copy there would not survive a reboot"
        ));
    }
    let vfs = statvfs(var).map_err(|e| format!("cannot inspect {shown}: {e}"))?;
    if vfs.flags().contains(FsFlags::ST_RDONLY) {
        return Err(format!(
            "{shown} is read-only (the DATA partition is not mounted)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_copy_reads_back_with_its_origin() {
        let dir = tempfile::tempdir().unwrap();
        let lg = LastGood::at(dir.path().join("lib/gantry/config/current.toml"));
        assert_eq!(lg.load(), Ok(None));
        let meta = MetaData {
            instance_id: Some("iid-1".into()),
            local_hostname: Some("n\n1".into()),
        };
        let text = "#gantry-config\nversion = 1\nhostname = \"edge\"\n";
        assert!(lg
            .store(text, "config drive /dev/vdb (CIDATA)", &meta)
            .unwrap());
        assert!(!lg
            .store(text, "config drive /dev/vdb (CIDATA)", &meta)
            .unwrap());
        let s = lg.load().unwrap().unwrap();
        assert_eq!(s.config.hostname.as_deref(), Some("edge"));
        assert_eq!(s.from, "config drive /dev/vdb (CIDATA)");
        assert_eq!(s.meta.instance_id.as_deref(), Some("iid-1"));
        assert_eq!(s.meta.local_hostname.as_deref(), Some("n 1"));
        let raw = std::fs::read_to_string(lg.path()).unwrap();
        assert!(raw.ends_with(text), "the document is kept as given: {raw}");
    }

    #[test]
    fn a_copy_that_no_longer_parses_is_refused_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("current.toml");
        std::fs::write(&path, "version = 1\nfuture = true\n").unwrap();
        let e = LastGood::at(&path).load().unwrap_err();
        assert_eq!(e[0].key, "future");
        assert!(e[0].source_name.starts_with("last good copy"), "{e:?}");
    }

    #[test]
    fn nothing_is_stored_where_it_would_not_last() {
        let lg = LastGood {
            path: "/nonexistent/current.toml".into(),
            persistent: Err("/var is in memory".into()),
        };
        let e = lg
            .store("version = 1", "x", &MetaData::default())
            .unwrap_err();
        assert_eq!(e.to_string(), "/var is in memory");
    }

    #[test]
    fn tmpfs_is_not_persistent() {
        // /dev/shm is tmpfs on most hosts; where it is not, there is nothing to check.
        if let Ok(fs) = nix::sys::statfs::statfs("/dev/shm") {
            if fs.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC {
                let e = persistent(Path::new("/dev/shm")).unwrap_err();
                assert!(e.contains("in memory"), "{e}");
            }
        }
    }
}
