//! Workspace binaries for the image: built with cargo as static executables (glibc with
//! `crt-static`), with paths remapped so that the bytes do not depend on where the
//! checkout lives.

use std::path::{Path, PathBuf};

use crate::definition::Binary;
use crate::tool::{Invocation, ToolError};

const TARGET: &str = "x86_64-unknown-linux-gnu";

#[derive(Debug, thiserror::Error)]
pub enum BinaryError {
    #[error(transparent)]
    Cargo(#[from] ToolError),
    #[error("cargo built {package} but {path} is missing")]
    Missing { package: String, path: PathBuf },
}

/// The workspace this crate belongs to.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Builds every binary in release mode; returns the path of each, in order.
pub fn build(binaries: &[Binary], progress: &dyn Fn(&str)) -> Result<Vec<PathBuf>, BinaryError> {
    if binaries.is_empty() {
        return Ok(Vec::new());
    }
    let root = workspace_root();
    let target_dir =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    // The cargo that runs us (tests, `cargo run`) says where it is; else the PATH's.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let cargo_home = std::env::var("CARGO_HOME")
        .unwrap_or_else(|_| format!("{}/.cargo", std::env::var("HOME").unwrap_or_default()));
    let rustflags = [
        "-Ctarget-feature=+crt-static".to_owned(),
        format!("--remap-path-prefix={}=/gantry", root.display()),
        format!("--remap-path-prefix={cargo_home}=/cargo"),
    ]
    .join("\x1f");
    let mut cmd = Invocation::new(&cargo, "cargo")
        .arg("build")
        .arg("--release")
        .arg("--target")
        .arg(TARGET)
        .arg("--target-dir")
        .arg(&target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags)
        .current_dir(&root);
    for b in binaries {
        cmd = cmd.arg("-p").arg(&b.package).arg("--bin").arg(&b.bin);
    }
    progress("binaries: cargo build --release (static)");
    cmd.run()?;
    binaries
        .iter()
        .map(|b| {
            let path = target_dir.join(TARGET).join("release").join(&b.bin);
            if path.is_file() {
                Ok(path)
            } else {
                Err(BinaryError::Missing {
                    package: b.package.clone(),
                    path,
                })
            }
        })
        .collect()
}
