//! The root file system: a staging directory with the skeleton, `/etc` files and binaries,
//! packed by `mkfs.erofs` with fixed timestamps, owner and UUID. No shell goes in.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::definition::ImageDefinition;
use crate::fsio::{AtPath, PathError};
use crate::tool::{self, ToolError};

/// Directories every Gantry root has: mount points for the API file systems and `/var`.
const SKELETON: &[(&str, u32)] = &[
    ("dev", 0o755),
    ("proc", 0o555),
    ("sys", 0o555),
    ("run", 0o755),
    ("tmp", 0o1777),
    ("var", 0o755),
    ("etc", 0o755),
    ("sbin", 0o755),
    ("usr", 0o755),
    ("usr/bin", 0o755),
    ("usr/lib", 0o755),
    ("root", 0o700),
    ("mnt", 0o755),
];

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("staging: {0}")]
    Stage(#[from] PathError),
    #[error(transparent)]
    Tool(#[from] ToolError),
}

/// A file to place in the root: where from, where to, with which mode.
#[derive(Debug, Clone)]
pub struct Entry {
    pub source: PathBuf,
    pub path: String,
    pub mode: u32,
}

/// Fills `staging` (emptied first) with the skeleton, the generated `/etc` files and
/// `entries`.
pub fn stage(def: &ImageDefinition, entries: &[Entry], staging: &Path) -> Result<(), RootfsError> {
    if staging.exists() {
        std::fs::remove_dir_all(staging).at(staging)?;
    }
    std::fs::create_dir_all(staging).at(staging)?;
    set_mode(staging, 0o755).at(staging)?;
    for (dir, mode) in SKELETON {
        let p = staging.join(dir);
        std::fs::create_dir_all(&p).at(&p)?;
        set_mode(&p, *mode).at(&p)?;
    }
    let os_release = gantry_updater::release::Release {
        name: def.name.clone(),
        version: def.version.clone(),
        rollback_index: def.rollback_index,
        board: def.board.clone(),
    }
    .os_release();
    for (path, text) in [
        ("etc/os-release", os_release),
        ("etc/hostname", format!("{}\n", def.hostname)),
    ] {
        let p = staging.join(path);
        std::fs::write(&p, text).at(&p)?;
        set_mode(&p, 0o644).at(&p)?;
    }
    // The resolver file lives under /run, where PID 1 writes it from the config and DHCP.
    let resolv = staging.join("etc/resolv.conf");
    std::os::unix::fs::symlink(gantry_contract::RESOLV_CONF, &resolv).at(&resolv)?;
    // So is the machine id (systemd's path, for programs that read it there).
    let machine_id = staging.join("etc/machine-id");
    std::os::unix::fs::symlink(gantry_contract::RUN_MACHINE_ID, &machine_id).at(&machine_id)?;
    for entry in entries {
        let dest = staging.join(entry.path.trim_start_matches('/'));
        if let Some(parent) = dest.parent() {
            if !parent.exists() {
                std::fs::create_dir_all(parent).at(parent)?;
                set_mode(parent, 0o755).at(parent)?;
            }
        }
        std::fs::copy(&entry.source, &dest).at(&entry.source)?;
        set_mode(&dest, entry.mode).at(&dest)?;
    }
    // Links last, relative so that they resolve inside the staging directory as well.
    for binary in &def.binaries {
        for link in &binary.links {
            let dest = staging.join(link.trim_start_matches('/'));
            if let Some(parent) = dest.parent() {
                if !parent.exists() {
                    std::fs::create_dir_all(parent).at(parent)?;
                    set_mode(parent, 0o755).at(parent)?;
                }
            }
            std::os::unix::fs::symlink(relative_target(link, &binary.path), &dest).at(&dest)?;
        }
    }
    Ok(())
}

/// The target of a link at `link` to `path`, relative to the link's directory (both are
/// clean absolute paths: the definition checks them).
fn relative_target(link: &str, path: &str) -> String {
    let depth = link.trim_start_matches('/').matches('/').count();
    format!("{}{}", "../".repeat(depth), path.trim_start_matches('/'))
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Packs `staging` into an erofs image: lz4hc-compressed, every file owned by root and
/// timestamped `epoch`, with the given UUID.
pub fn mkfs(staging: &Path, out: &Path, uuid: &str, epoch: u64) -> Result<(), RootfsError> {
    let _ = std::fs::remove_file(out);
    tool::MKFS_EROFS
        .cmd()
        .arg("-zlz4hc")
        .arg(format!("-T{epoch}"))
        .arg(format!("-U{uuid}"))
        .arg("--all-root")
        .arg(out)
        .arg(staging)
        .run()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_point_at_the_binary_from_inside_the_root() {
        assert_eq!(
            relative_target("/sbin/init", "/usr/bin/gantry"),
            "../usr/bin/gantry"
        );
        assert_eq!(
            relative_target("/usr/bin/gantry-update", "/usr/bin/gantry"),
            "../../usr/bin/gantry"
        );
        let work = tempfile::tempdir().unwrap();
        let def = ImageDefinition::parse(
            Path::new("t.toml"),
            r#"
name = "t"
version = "1"
rollback_index = 1
hostname = "t"
source_date_epoch = 1
[kernel]
source = "/k"
cmdline = "console=ttyS0"
[disk]
esp_mib = 64
root_mib = 64
data_mib = 64
[[binary]]
package = "p"
bin = "b"
path = "/usr/bin/gantry"
links = ["/sbin/init", "/usr/bin/gantry-update"]
"#,
        )
        .unwrap();
        let exe = work.path().join("exe");
        std::fs::write(&exe, b"#!/bin/true\n").unwrap();
        let staging = work.path().join("root");
        let entries = [Entry {
            source: exe,
            path: "/usr/bin/gantry".into(),
            mode: 0o755,
        }];
        stage(&def, &entries, &staging).unwrap();
        for link in ["sbin/init", "usr/bin/gantry-update"] {
            let p = staging.join(link);
            assert!(
                std::fs::symlink_metadata(&p).unwrap().is_symlink(),
                "{link}"
            );
            assert_eq!(std::fs::read(&p).unwrap(), b"#!/bin/true\n", "{link}");
        }
    }
}
