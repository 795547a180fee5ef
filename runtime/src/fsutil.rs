//! Crash-safe file writes, shared by the store, the network state and PID 1, and the
//! private directories the store and the container state live in.

use std::io::Write;
use std::path::Path;

/// Writes `data` to a temporary file beside `path`, fsyncs it, renames it over `path` and
/// fsyncs the directory: a reader sees the old content or the new, never a mix, and a
/// crash at any point leaves one of the two.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::with_prefix_in(".tmp-", dir)?;
    tmp.write_all(data)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Makes `path` (and missing parents) a directory only its owner may enter: 0700, and an
/// existing one is tightened to 0700. Image contents (device nodes, setuid files) live
/// under such directories, where no other host user can reach them.
pub fn private_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
}

#[cfg(test)]
mod tests {
    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        super::write_atomic(&path, b"one").unwrap();
        super::write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
