//! dm-verity parameters of a root image, and the kernel arguments that open a slot's root
//! through them. The image build formats the tree (`veritysetup`), the bundle manifest
//! carries these parameters signed, and the installer writes the same arguments for the
//! slot it fills, so a slot's command line is a function of (signed manifest, slot,
//! partition UUID) alone.

use serde::{Deserialize, Serialize};

use crate::Slot;

/// dm-verity data and hash block size.
pub const BLOCK: u64 = 4096;

/// Whether the installer owns `arg` (a bundle's own command line may not set it): the
/// root, its dm-verity table and the slot's name.
pub fn slot_owned(arg: &str) -> bool {
    matches!(arg, "ro" | "rw")
        || [
            "root=",
            "rootfstype=",
            "rootflags=",
            "dm-mod.",
            "gantry.slot=",
        ]
        .iter()
        .any(|p| arg.starts_with(p))
}

/// What the kernel needs to open a verified root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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

    /// The full command line of `slot`: the image's own `base` arguments, then the root
    /// through dm-verity on the slot's partition, then the slot's name for PID 1.
    pub fn slot_args(&self, base: &[String], slot: Slot, partuuid: &str) -> Vec<String> {
        let mut args = base.to_vec();
        args.extend([
            "root=/dev/dm-0".to_owned(),
            "ro".to_owned(),
            "rootfstype=erofs".to_owned(),
            format!("dm-mod.waitfor=PARTUUID={partuuid}"),
            format!("dm-mod.create={}", self.dm_create(partuuid)),
            format!("gantry.slot={slot}"),
        ]);
        args
    }

    /// The root hash in a running system's command line (`dm-mod.create=…`), if any.
    pub fn root_hash_in(cmdline: &str) -> Option<&str> {
        let table = cmdline
            .split("dm-mod.create=")
            .nth(1)?
            .split(" sha256 ")
            .nth(1)?;
        table
            .split_whitespace()
            .next()
            .filter(|h| crate::hex::is_sha256(h))
    }

    /// Structural checks for parameters from a manifest; `Err` holds the reason.
    pub fn check(&self) -> Result<(), String> {
        for (name, value) in [("root_hash", &self.root_hash), ("salt", &self.salt)] {
            if !crate::hex::is_sha256(value) {
                return Err(format!("{name} {value:?} is not 64 lower-case hex digits"));
            }
        }
        if self.data_blocks == 0 || self.hash_offset_blocks < self.data_blocks {
            return Err(format!(
                "hash tree at block {} overlaps {} data blocks",
                self.hash_offset_blocks, self.data_blocks
            ));
        }
        // Block numbers that fit in bytes: `dm_create` multiplies them out.
        let hash_offset = self.hash_offset_blocks.checked_mul(BLOCK).ok_or_else(|| {
            format!(
                "hash_offset_blocks {} is too large",
                self.hash_offset_blocks
            )
        })?;
        if self.total_bytes <= hash_offset {
            return Err(format!(
                "total_bytes {} leaves no room for the hash tree after block {}",
                self.total_bytes, self.hash_offset_blocks
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verity() -> Verity {
        Verity {
            root_hash: "ab".repeat(32),
            salt: "cd".repeat(32),
            data_blocks: 100,
            hash_offset_blocks: 100,
            total_bytes: 101 * BLOCK + 8192,
        }
    }

    #[test]
    fn dm_table_points_data_and_tree_at_the_same_partition() {
        assert_eq!(
            verity().dm_create("1111"),
            format!(
                "vroot,,,ro,0 800 verity 1 PARTUUID=1111 PARTUUID=1111 4096 4096 100 101 \
                 sha256 {} {} 1 restart_on_corruption",
                "ab".repeat(32),
                "cd".repeat(32)
            )
        );
    }

    #[test]
    fn slot_args_name_the_slot_and_its_partition_and_the_hash_reads_back() {
        let args = verity().slot_args(&["panic=10".into()], Slot::B, "2222");
        assert_eq!(args[0], "panic=10");
        assert!(args.contains(&"dm-mod.waitfor=PARTUUID=2222".to_owned()));
        assert_eq!(args.last().map(String::as_str), Some("gantry.slot=B"));
        let cmdline = args.join(" ");
        assert_eq!(
            Verity::root_hash_in(&cmdline),
            Some("ab".repeat(32).as_str())
        );
        assert_eq!(Verity::root_hash_in("console=ttyS0 panic=10"), None);
    }

    #[test]
    fn check_refuses_bad_hashes_and_overlapping_trees() {
        assert_eq!(verity().check(), Ok(()));
        let mut v = verity();
        v.root_hash = "AB".repeat(32);
        assert!(v.check().unwrap_err().contains("root_hash"));
        let mut v = verity();
        v.hash_offset_blocks = 50;
        assert!(v.check().unwrap_err().contains("overlaps"));
        let mut v = verity();
        v.total_bytes = 100 * BLOCK;
        assert!(v.check().unwrap_err().contains("no room"));
    }
}
