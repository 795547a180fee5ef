//! Crash-safe file writes, shared by the store, the network state and PID 1, and the
//! private directories the store and the container state live in.

use std::path::Path;

pub use gantry_durable::write_atomic;

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
