//! dm-verity: a hash tree over the root file system, appended to it in the slot's partition,
//! and the `dm-mod.create=` table that makes the kernel open the root through it.

use std::io::Write;
use std::path::Path;

use crate::fsio::{AtPath, PathError};
use crate::tool::{self, ToolError};

pub const BLOCK: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum VerityError {
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error(transparent)]
    Io(#[from] PathError),
    #[error("veritysetup printed no root hash: {0:?}")]
    NoRootHash(String),
}

/// What the kernel needs to open a verified root.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Verity {
    pub root_hash: String,
    pub salt: String,
    /// 4 KiB blocks of file system data at the start of the partition.
    pub data_blocks: u64,
    /// Block where the hash tree's superblock starts (right after the data).
    pub hash_offset_blocks: u64,
    /// Bytes of data + superblock + tree: what goes into the partition.
    pub total_bytes: u64,
}

impl Verity {
    /// The `dm-mod.create=` value opening `partuuid` as `/dev/dm-0`, read-only, restarting
    /// the machine on a corrupted block so that the boot counter can fall back.
    pub fn dm_create(&self, partuuid: &str) -> String {
        let dev = format!("PARTUUID={partuuid}");
        format!(
            "vroot,,,ro,0 {sectors} verity 1 {dev} {dev} {BLOCK} {BLOCK} {blocks} {hash_start} \
             sha256 {root} {salt} 1 restart_on_corruption",
            sectors = self.data_blocks * BLOCK / 512,
            blocks = self.data_blocks,
            // The superblock takes the first hash block; the tree starts after it.
            hash_start = self.hash_offset_blocks + 1,
            root = self.root_hash,
            salt = self.salt,
        )
    }
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
    fn dm_table_points_data_and_tree_at_the_same_partition() {
        let v = Verity {
            root_hash: "ab".repeat(32),
            salt: "cd".repeat(32),
            data_blocks: 100,
            hash_offset_blocks: 100,
            total_bytes: 0,
        };
        let table = v.dm_create("1111");
        assert_eq!(
            table,
            format!(
                "vroot,,,ro,0 800 verity 1 PARTUUID=1111 PARTUUID=1111 4096 4096 100 101 \
                 sha256 {} {} 1 restart_on_corruption",
                "ab".repeat(32),
                "cd".repeat(32)
            )
        );
    }

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
