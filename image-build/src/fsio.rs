//! File writes that survive a crash: write to a temporary name, fsync, rename.

use std::path::{Path, PathBuf};

/// An I/O error on a named path: every step that touches a file says which.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct PathError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Attaches the path to an I/O result.
pub trait AtPath<T> {
    fn at(self, path: &Path) -> Result<T, PathError>;
}

impl<T> AtPath<T> for std::io::Result<T> {
    fn at(self, path: &Path) -> Result<T, PathError> {
        self.map_err(|source| PathError {
            path: path.to_owned(),
            source,
        })
    }
}

pub use gantry_durable::write_atomic;

/// A sibling name for building `path` before it is renamed into place.
pub fn tmp_name(path: &Path) -> std::path::PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

/// fsyncs `tmp`, renames it to `path`, and fsyncs the directory.
pub fn rename_synced(tmp: &Path, path: &Path) -> std::io::Result<()> {
    std::fs::File::open(tmp)?.sync_all()?;
    std::fs::rename(tmp, path)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}

/// fsyncs every file directly in `dir`, and `dir` itself.
pub fn sync_dir_files(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::File::open(entry.path())?.sync_all()?;
        }
    }
    std::fs::File::open(dir)?.sync_all()
}
