//! dm-verity: a hash tree over the root file system, appended to it in the slot's partition.
//! The parameters ([`Verity`]) and the kernel arguments made from them belong to the updater,
//! which writes the same arguments when it installs a slot.

use std::io::Write;
use std::path::Path;

use crate::fsio::{AtPath, PathError};
use crate::tool::{self, ToolError};

pub use gantry_updater::verity::{Verity, BLOCK};

#[derive(Debug, thiserror::Error)]
pub enum VerityError {
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error(transparent)]
    Io(#[from] PathError),
    #[error("veritysetup printed no root hash: {0:?}")]
    NoRootHash(String),
}

/// Formats the hash tree for `data` (padded to whole blocks) and writes data followed by
/// the tree to `out`.
pub fn format(data: &Path, out: &Path, salt: &str, uuid: &str) -> Result<Verity, VerityError> {
    let len = std::fs::metadata(data).at(data)?.len();
    let data_blocks = len.div_ceil(BLOCK);
    {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(data)
            .at(data)?;
        f.set_len(data_blocks * BLOCK).at(data)?;
    }
    let hash = out.with_extension("verity-tree");
    let _ = std::fs::remove_file(&hash);
    let stdout = tool::VERITYSETUP
        .cmd()
        .arg("format")
        .arg("--hash=sha256")
        .arg(format!("--data-block-size={BLOCK}"))
        .arg(format!("--hash-block-size={BLOCK}"))
        .arg(format!("--salt={salt}"))
        .arg(format!("--uuid={uuid}"))
        .arg(data)
        .arg(&hash)
        .run()?;
    let root_hash = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Root hash:"))
        .map(|h| h.trim().to_owned())
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| VerityError::NoRootHash(stdout.clone()))?;
    let mut w = std::fs::File::create(out).at(out)?;
    std::io::copy(&mut std::fs::File::open(data).at(data)?, &mut w).at(out)?;
    std::io::copy(&mut std::fs::File::open(&hash).at(&hash)?, &mut w).at(out)?;
    w.flush().at(out)?;
    let total_bytes = w.metadata().at(out)?.len();
    let _ = std::fs::remove_file(&hash);
    Ok(Verity {
        root_hash,
        salt: salt.to_owned(),
        data_blocks,
        hash_offset_blocks: data_blocks,
        total_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_a_tree_that_veritysetup_verifies() {
        if !tool::VERITYSETUP.exists() {
            // Not skipped silently: the image build itself fails without veritysetup.
            panic!("veritysetup is required (apt-get install cryptsetup-bin)");
        }
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::write(&data, vec![7u8; 10_000]).unwrap();
        let out = dir.path().join("part");
        let v = format(
            &data,
            &out,
            &"00".repeat(32),
            "00000000-0000-4000-8000-000000000000",
        )
        .unwrap();
        assert_eq!(v.data_blocks, 3);
        assert!(v.total_bytes > 3 * BLOCK);
        // veritysetup verify reads the same layout the kernel will.
        tool::VERITYSETUP
            .cmd()
            .arg("verify")
            .arg(format!("--hash-offset={}", v.hash_offset_blocks * BLOCK))
            .arg(&out)
            .arg(&out)
            .arg(&v.root_hash)
            .run()
            .unwrap();
    }
}
