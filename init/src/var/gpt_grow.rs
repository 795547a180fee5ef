//! Growing the DATA partition's GPT entry to the end of a disk that got bigger (a cloud
//! volume or a `qemu-img resize`d image), with the `gpt` crate's header and entry code.
//!
//! The new end of DATA is the last whole MiB before the backup GPT (entries + header,
//! 33 blocks of 512 bytes), so that a disk that was not enlarged — the image leaves 1 MiB
//! after DATA — has nothing to do, and the partition stays MiB-aligned.
//!
//! Crash safety: a power cut at any point must leave a disk the firmware can boot. The
//! writes go in this order, each stage ended by a flush to stable storage:
//!
//! 1. the new backup (entries, then header) at the new end of the disk. The primary is
//!    untouched and still valid, and still points at the old backup, also untouched;
//! 2. the new primary (entries, then header). Cut half-way, the primary's checksums do
//!    not match and it is invalid; UEFI firmware then reads the backup at the disk's last
//!    block — the valid new one from stage 1 — and restores the primary from it (UEFI
//!    spec 5.3.2; OVMF does). This is why the `gpt` crate's own `write()` (which writes
//!    the primary entries first and the backup header last) is not used as a whole;
//! 3. tidying: the old backup header (now inside DATA, beyond its file system) is zeroed
//!    so no tool finds a stale table, and the protective MBR gets the disk's new size.
//!
//! A cut after stage 2 leaves a grown table that the kernel reads at the next boot; the
//! next run finds nothing to do. Every entry but DATA's is rewritten byte for byte.

use std::collections::BTreeMap;
use std::io::{self, Cursor, Read, Seek, SeekFrom, Write};

use gpt::disk::LogicalBlockSize;
use gpt::header::{Header, HeaderBuilder, HeaderError};
use gpt::mbr::ProtectiveMBR;
use gpt::partition::Partition;

/// DATA's new end is aligned down to this.
pub const ALIGN_BYTES: u64 = 1 << 20;
/// The GPT name of the partition that becomes `/var`.
pub const DATA_NAME: &str = "DATA";
/// The only entry size in use (and the only one the `gpt` crate reads without panicking).
const ENTRY_SIZE: u32 = 128;
/// More entries than any table has; a bigger count is a broken header.
const MAX_ENTRIES: u32 = 16 * 1024;
/// The partition type of a protective MBR's one record.
const PROTECTIVE_MBR_TYPE: u8 = 0xEE;

#[derive(Debug, thiserror::Error)]
pub enum GrowError {
    #[error("disk i/o: {0}")]
    Io(#[from] io::Error),
    #[error("unsupported logical block size {0}")]
    BlockSize(u64),
    #[error("cannot read the primary GPT header: {0}")]
    Header(#[source] HeaderError),
    #[error("unsupported GPT layout: {0}")]
    Layout(String),
    #[error("cannot read the GPT entries: {0}")]
    Entries(#[source] io::Error),
    #[error("GPT entry {0} is empty")]
    NoEntry(u32),
    #[error("GPT entry {number} is named {name:?}, not {DATA_NAME}")]
    NotData { number: u32, name: String },
    #[error("partition {other} lies after {DATA_NAME}, which must be the last partition")]
    NotLast { other: u32 },
    #[error("the disk has {disk_blocks} blocks but the GPT's backup header is at block {backup_lba}: the disk shrank")]
    DiskShrank { disk_blocks: u64, backup_lba: u64 },
    #[error("cannot build the new GPT headers: {0}")]
    Build(#[source] HeaderError),
    #[error("cannot write the new backup GPT: {0}")]
    WriteBackup(#[source] HeaderError),
    #[error("cannot write the new primary GPT: {0}")]
    WritePrimary(#[source] HeaderError),
    #[error("cannot update the protective MBR: {0}")]
    Mbr(String),
    #[error("cannot flush the disk: {0}")]
    Sync(#[source] io::Error),
}

/// What growing changes, in logical blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// DATA's entry number (1-based, as in `/dev/vda4`).
    pub number: u32,
    pub first_lba: u64,
    pub old_last_lba: u64,
    pub new_last_lba: u64,
    pub old_backup_lba: u64,
    pub new_backup_lba: u64,
}

/// DATA's place on the disk after [`grow`], in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataExtent {
    pub start: u64,
    pub length: u64,
    /// Its length before, when the table was rewritten.
    pub grown_from: Option<u64>,
}

/// Decides what to change, from the primary header, its entries and the disk's size.
/// `None` when DATA already ends at the last aligned block and the backup header is at
/// the end of the disk.
pub fn plan(
    primary: &Header,
    entries: &BTreeMap<u32, Partition>,
    number: u32,
    disk_blocks: u64,
    block_size: u64,
) -> Result<Option<Plan>, GrowError> {
    let data = entries.get(&number).ok_or(GrowError::NoEntry(number))?;
    if data.name != DATA_NAME {
        return Err(GrowError::NotData {
            number,
            name: data.name.clone(),
        });
    }
    if let Some((&other, _)) = entries
        .iter()
        .find(|(&n, p)| n != number && p.is_used() && p.last_lba >= data.first_lba)
    {
        return Err(GrowError::NotLast { other });
    }
    let end = disk_blocks.saturating_sub(1);
    if primary.backup_lba > end {
        return Err(GrowError::DiskShrank {
            disk_blocks,
            backup_lba: primary.backup_lba,
        });
    }
    let array_blocks = array_blocks(primary, block_size);
    let last_usable = end
        .checked_sub(array_blocks + 1)
        .ok_or_else(|| GrowError::Layout("the disk cannot hold a backup GPT".into()))?;
    if data.last_lba > last_usable || primary.last_usable > last_usable {
        return Err(GrowError::Layout(format!(
            "the table uses block {} but the backup entries start at block {}",
            data.last_lba.max(primary.last_usable),
            last_usable + 1
        )));
    }
    let align = (ALIGN_BYTES / block_size).max(1);
    let aligned_end = (last_usable + 1) / align * align;
    // Never shrink: a partition that already reaches past the aligned end keeps its end.
    let new_last_lba = aligned_end.saturating_sub(1).max(data.last_lba);
    if new_last_lba == data.last_lba && primary.backup_lba == end {
        return Ok(None);
    }
    Ok(Some(Plan {
        number,
        first_lba: data.first_lba,
        old_last_lba: data.last_lba,
        new_last_lba,
        old_backup_lba: primary.backup_lba,
        new_backup_lba: end,
    }))
}

fn array_blocks(header: &Header, block_size: u64) -> u64 {
    (u64::from(header.num_parts) * u64::from(header.part_size)).div_ceil(block_size)
}

/// Grows entry `number` (which must be DATA, the last partition) to the end of `disk`,
/// flushing with `sync` after each stage (see the module docs). Returns DATA's extent as
/// the table now says.
pub fn grow<D: Read + Write + Seek + std::fmt::Debug>(
    disk: &mut D,
    block_size: u64,
    number: u32,
    sync: &mut dyn FnMut(&mut D) -> io::Result<()>,
) -> Result<DataExtent, GrowError> {
    let lbs =
        LogicalBlockSize::try_from(block_size).map_err(|_| GrowError::BlockSize(block_size))?;
    let disk_blocks = disk.seek(SeekFrom::End(0))? / block_size;
    let primary =
        gpt::header::read_header_from_arbitrary_device(disk, lbs).map_err(GrowError::Header)?;
    if primary.part_size != ENTRY_SIZE || primary.num_parts == 0 || primary.num_parts > MAX_ENTRIES
    {
        return Err(GrowError::Layout(format!(
            "{} entries of {} bytes",
            primary.num_parts, primary.part_size
        )));
    }
    if primary.current_lba != 1 || primary.part_start != 2 {
        return Err(GrowError::Layout(format!(
            "primary header at block {}, entries at block {}",
            primary.current_lba, primary.part_start
        )));
    }
    let entries =
        gpt::partition::file_read_partitions(disk, &primary, lbs).map_err(GrowError::Entries)?;
    let data = entries
        .get(&number)
        .ok_or(GrowError::NoEntry(number))?
        .clone();
    let extent = |last_lba: u64, grown_from| DataExtent {
        start: data.first_lba * block_size,
        length: (last_lba + 1 - data.first_lba) * block_size,
        grown_from,
    };
    let Some(plan) = plan(&primary, &entries, number, disk_blocks, block_size)? else {
        return Ok(extent(data.last_lba, None));
    };

    // The raw entry array, so every entry but DATA's is written back byte for byte.
    let mut array = vec![0u8; (primary.num_parts * ENTRY_SIZE) as usize];
    disk.seek(SeekFrom::Start(primary.part_start * block_size))?;
    disk.read_exact(&mut array).map_err(GrowError::Entries)?;
    let mut grown = data.clone();
    grown.last_lba = plan.new_last_lba;
    let mut cursor = Cursor::new(array);
    grown.write_to_device(&mut cursor, u64::from(number - 1), 0, lbs, ENTRY_SIZE)?;
    let array = cursor.into_inner();

    let mut new_primary = HeaderBuilder::from_header(&primary)
        .primary(true)
        .backup_lba(plan.new_backup_lba)
        .build(lbs)
        .map_err(GrowError::Build)?;
    let mut new_backup = HeaderBuilder::from_header(&new_primary)
        .primary(false)
        .build(lbs)
        .map_err(GrowError::Build)?;

    // Stage 1: the backup at the new end; the old primary and old backup stay valid.
    write_at(disk, new_backup.part_start * block_size, &array)?;
    new_backup
        .write_backup(disk, lbs)
        .map_err(GrowError::WriteBackup)?;
    flush(disk, sync)?;
    // Stage 2: the primary; a torn primary is restored from the new backup by firmware.
    write_at(disk, new_primary.part_start * block_size, &array)?;
    new_primary
        .write_primary(disk, lbs)
        .map_err(GrowError::WritePrimary)?;
    flush(disk, sync)?;
    // Stage 3: tidying that nothing depends on.
    if plan.old_backup_lba != plan.new_backup_lba && plan.old_backup_lba > plan.old_last_lba {
        write_at(
            disk,
            plan.old_backup_lba * block_size,
            &vec![0u8; block_size as usize],
        )?;
    }
    update_protective_mbr(disk, lbs, disk_blocks)?;
    flush(disk, sync)?;
    let grown_from =
        (plan.new_last_lba != plan.old_last_lba).then(|| extent(plan.old_last_lba, None).length);
    Ok(extent(plan.new_last_lba, grown_from))
}

fn write_at<D: Write + Seek>(disk: &mut D, offset: u64, bytes: &[u8]) -> io::Result<()> {
    disk.seek(SeekFrom::Start(offset))?;
    disk.write_all(bytes)
}

fn flush<D: Write>(
    disk: &mut D,
    sync: &mut dyn FnMut(&mut D) -> io::Result<()>,
) -> Result<(), GrowError> {
    disk.flush().map_err(GrowError::Sync)?;
    sync(disk).map_err(GrowError::Sync)
}

/// Sets the protective MBR's one record to the disk's new size (boot code and the
/// other bytes of LBA 0 are kept). A hybrid or missing MBR is left alone.
fn update_protective_mbr<D: Read + Write + Seek + std::fmt::Debug>(
    disk: &mut D,
    lbs: LogicalBlockSize,
    disk_blocks: u64,
) -> Result<(), GrowError> {
    let Ok(mut mbr) = ProtectiveMBR::from_disk(disk, lbs) else {
        return Ok(());
    };
    let Some(mut record) = mbr.partition(0) else {
        return Ok(());
    };
    let others_empty = (1..4).all(|i| mbr.partition(i).is_some_and(|r| r.os_type == 0));
    if record.os_type != PROTECTIVE_MBR_TYPE || record.lb_start != 1 || !others_empty {
        return Ok(());
    }
    record.lb_size = u32::try_from(disk_blocks.saturating_sub(1)).unwrap_or(u32::MAX);
    mbr.set_partition(0, record);
    mbr.update_conservative(disk)
        .map_err(|e| GrowError::Mbr(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpt::partition_types::{Type, EFI, LINUX_FS};
    use std::fs::File;
    use std::path::Path;

    const MIB: u64 = 1 << 20;

    /// A sparse disk image shaped like Gantry's: 1 MiB gap, then the partitions back to
    /// back (name, MiB), DATA last, and 1 MiB left at the end for the backup GPT.
    fn make_disk(path: &Path, block: u64, parts: &[(&str, u64)]) -> u64 {
        let size = MIB + parts.iter().map(|(_, mib)| mib * MIB).sum::<u64>() + MIB;
        let f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .unwrap();
        f.set_len(size).unwrap();
        let mut f = f;
        let blocks = size / block;
        ProtectiveMBR::with_lb_size(u32::try_from(blocks - 1).unwrap())
            .overwrite_lba0(&mut f)
            .unwrap();
        let lbs = LogicalBlockSize::try_from(block).unwrap();
        let mut disk = gpt::GptConfig::new()
            .writable(true)
            .logical_block_size(lbs)
            .create_from_device(f, None)
            .unwrap();
        let mut first = MIB / block;
        for (i, (name, mib)) in parts.iter().enumerate() {
            let len = mib * MIB / block;
            let ty: Type = if i == 0 { EFI } else { LINUX_FS };
            disk.add_partition_at(name, i as u32 + 1, first, len, ty, 0)
                .unwrap();
            first += len;
        }
        disk.write().unwrap().sync_all().unwrap();
        size
    }

    fn open_valid(path: &Path, block: u64) -> gpt::GptDisk<File> {
        gpt::GptConfig::new()
            .logical_block_size(LogicalBlockSize::try_from(block).unwrap())
            .only_valid_headers(true)
            .open(path)
            .unwrap()
    }

    fn enlarge(path: &Path, by: u64) -> u64 {
        let f = File::options().write(true).open(path).unwrap();
        let size = f.metadata().unwrap().len() + by;
        f.set_len(size).unwrap();
        size
    }

    fn grow_file(path: &Path, block: u64, number: u32) -> Result<DataExtent, GrowError> {
        let mut f = File::options().read(true).write(true).open(path).unwrap();
        grow(&mut f, block, number, &mut |f: &mut File| f.sync_all())
    }

    const LAYOUT: &[(&str, u64)] = &[("ESP", 2), ("ROOT-A", 4), ("ROOT-B", 4), ("DATA", 3)];

    #[test]
    fn grows_data_to_the_last_whole_mib_and_moves_the_backup_to_the_end() {
        for block in [512, 4096] {
            let dir = tempfile::tempdir().unwrap();
            let img = dir.path().join("disk.img");
            make_disk(&img, block, LAYOUT);
            let before = open_valid(&img, block).partitions().clone();
            // An odd amount, as a cloud volume might be: 64 MiB and a few blocks.
            let size = enlarge(&img, 64 * MIB + 5 * block);

            let extent = grow_file(&img, block, 4).unwrap();

            let disk = open_valid(&img, block);
            let blocks = size / block;
            let primary = disk.primary_header().unwrap();
            let backup = disk.backup_header().unwrap();
            assert_eq!(primary.backup_lba, blocks - 1, "block {block}");
            assert_eq!(backup.current_lba, blocks - 1);
            assert_eq!(backup.part_start, backup.last_usable + 1);
            assert_eq!(primary.last_usable, backup.last_usable);
            let data = &disk.partitions()[&4];
            // The disk is 79 MiB and 5 blocks. The backup GPT takes the last 33 blocks of
            // 512 bytes (so DATA stops at 78 MiB) or 5 of 4096 (so at 79 MiB).
            let data_end = if block == 512 { 78 * MIB } else { 79 * MIB };
            assert_eq!((data.last_lba + 1) * block, data_end, "block {block}");
            assert!(data.last_lba <= primary.last_usable);
            assert_eq!(
                extent,
                DataExtent {
                    start: 11 * MIB,
                    length: data_end - 11 * MIB,
                    grown_from: Some(3 * MIB),
                }
            );
            for n in 1..=3 {
                assert_eq!(disk.partitions()[&n], before[&n], "entry {n} changed");
            }
            assert_eq!(data.part_guid, before[&4].part_guid);
            assert_eq!(data.name, "DATA");
            assert_eq!(data.first_lba, before[&4].first_lba);
            // The protective MBR covers the new disk.
            let mut f = File::open(&img).unwrap();
            let mbr = ProtectiveMBR::from_disk(&mut f, LogicalBlockSize::try_from(block).unwrap())
                .unwrap();
            assert_eq!(u64::from(mbr.partition(0).unwrap().lb_size), blocks - 1);
        }
    }

    #[test]
    fn a_disk_that_was_not_enlarged_is_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.img");
        make_disk(&img, 512, LAYOUT);
        let before = std::fs::read(&img).unwrap();
        let extent = grow_file(&img, 512, 4).unwrap();
        assert_eq!(extent.grown_from, None);
        assert_eq!(extent.length, 3 * MIB);
        assert!(std::fs::read(&img).unwrap() == before, "the disk changed");
    }

    #[test]
    fn growing_again_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.img");
        make_disk(&img, 512, LAYOUT);
        enlarge(&img, 10 * MIB);
        assert_eq!(grow_file(&img, 512, 4).unwrap().grown_from, Some(3 * MIB));
        let once = std::fs::read(&img).unwrap();
        let again = grow_file(&img, 512, 4).unwrap();
        assert_eq!(again.grown_from, None);
        assert_eq!(again.length, 13 * MIB);
        assert!(std::fs::read(&img).unwrap() == once, "the disk changed");
    }

    #[test]
    fn a_cut_after_the_backup_stage_leaves_the_old_primary_valid_and_a_rerun_finishes() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.img");
        make_disk(&img, 512, LAYOUT);
        let size = enlarge(&img, 10 * MIB);
        let mut f = File::options().read(true).write(true).open(&img).unwrap();
        let cut = grow(&mut f, 512, 4, &mut |_: &mut File| {
            Err(io::Error::other("power cut"))
        });
        assert!(matches!(cut, Err(GrowError::Sync(_))), "{cut:?}");
        drop(f);

        // The primary is the old table, valid; the new backup at the end is valid too.
        let disk = gpt::GptConfig::new().open(&img).unwrap();
        let primary = disk.primary_header().unwrap();
        assert_eq!((disk.partitions()[&4].last_lba + 1) * 512, 14 * MIB);
        assert_eq!(primary.backup_lba, (size - 10 * MIB) / 512 - 1);
        let backup = disk.backup_header().unwrap();
        assert_eq!(backup.current_lba, size / 512 - 1);

        assert_eq!(grow_file(&img, 512, 4).unwrap().length, 13 * MIB);
        let disk = open_valid(&img, 512);
        assert_eq!((disk.partitions()[&4].last_lba + 1) * 512, 24 * MIB);
    }

    #[test]
    fn a_torn_primary_is_recoverable_from_the_new_backup() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.img");
        make_disk(&img, 512, LAYOUT);
        enlarge(&img, 10 * MIB);
        let torn = dir.path().join("torn.img");
        // Stage 1 completes, then the cut comes after stage 2's entries but before its
        // header: the finished grow's entry sectors over the stage-1 state.
        {
            let mut f = File::options().read(true).write(true).open(&img).unwrap();
            let mut calls = 0;
            let _ = grow(&mut f, 512, 4, &mut |_: &mut File| {
                calls += 1;
                if calls == 1 {
                    std::fs::copy(&img, &torn).map(|_| ())
                } else {
                    Ok(())
                }
            });
        }
        let grown = std::fs::read(&img).unwrap();
        let mut t = File::options().read(true).write(true).open(&torn).unwrap();
        write_at(&mut t, 2 * 512, &grown[2 * 512..34 * 512]).unwrap();
        drop(t);

        // The primary's entries no longer match its header's checksum. PID 1 itself does
        // not touch such a table.
        assert!(gpt::GptConfig::new().open(&torn).is_err());
        assert!(matches!(
            grow_file(&torn, 512, 4),
            Err(GrowError::Entries(_))
        ));
        // Firmware discards a primary that fails a checksum (blanked here to show the
        // crate the same) and uses the backup at the disk's end: the grown table.
        let mut t = File::options().read(true).write(true).open(&torn).unwrap();
        write_at(&mut t, 512, &[0u8; 512]).unwrap();
        drop(t);
        let disk = gpt::GptConfig::new().open(&torn).unwrap();
        assert!(disk.primary_header().is_err());
        assert!(disk.backup_header().is_ok());
        assert_eq!((disk.partitions()[&4].last_lba + 1) * 512, 24 * MIB);
    }

    #[test]
    fn refuses_when_data_is_not_the_last_partition() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.img");
        make_disk(&img, 512, &[("ESP", 2), ("DATA", 3), ("ROOT-A", 4)]);
        enlarge(&img, 10 * MIB);
        let before = std::fs::read(&img).unwrap();
        assert!(matches!(
            grow_file(&img, 512, 2),
            Err(GrowError::NotLast { other: 3 })
        ));
        assert!(std::fs::read(&img).unwrap() == before, "the disk changed");
    }

    #[test]
    fn refuses_an_entry_that_is_not_data_or_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.img");
        make_disk(&img, 512, LAYOUT);
        enlarge(&img, 10 * MIB);
        assert!(matches!(
            grow_file(&img, 512, 3),
            Err(GrowError::NotData { number: 3, .. })
        ));
        assert!(matches!(
            grow_file(&img, 512, 9),
            Err(GrowError::NoEntry(9))
        ));
    }

    #[test]
    fn refuses_a_disk_smaller_than_its_table() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.img");
        let size = make_disk(&img, 512, LAYOUT);
        File::options()
            .write(true)
            .open(&img)
            .unwrap()
            .set_len(size - MIB / 2)
            .unwrap();
        assert!(matches!(
            grow_file(&img, 512, 4),
            Err(GrowError::DiskShrank { .. })
        ));
    }

    #[test]
    fn growth_that_does_not_reach_the_next_mib_only_moves_the_backup() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.img");
        make_disk(&img, 512, LAYOUT);
        // The 1 MiB after DATA minus the backup's 33 blocks, plus 10, is still short of
        // a whole MiB.
        let size = enlarge(&img, 10 * 512);
        let extent = grow_file(&img, 512, 4).unwrap();
        assert_eq!(extent.length, 3 * MIB);
        let disk = open_valid(&img, 512);
        assert_eq!(disk.backup_header().unwrap().current_lba, size / 512 - 1);
        assert_eq!(grow_file(&img, 512, 4).unwrap().grown_from, None);
    }
}
