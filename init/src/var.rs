//! `/var` on the DATA partition: found, grown to the disk on first boot, mounted, counted.
//!
//! The image carries a small ext4 DATA partition, last on the disk. At every boot, before
//! the machine config and the network (both keep state under `/var`), PID 1:
//!
//! 1. finds DATA by its GPT name on the disk that holds the root ([`locate`]);
//! 2. grows the partition when the disk has room after it ([`gpt_grow`]): the GPT is
//!    rewritten (backup first, then primary, each flushed; see there for why that order
//!    survives a power cut) and the kernel is told the new length with
//!    `BLKPG_RESIZE_PARTITION` ([`blkdev`]) — no partprobe, no reboot. This happens
//!    *before* mounting, while nothing holds the partition open, so the kernel's view
//!    and the table agree by the time the file system sees the device;
//! 3. reads the ext4 superblock (to report whether the last unmount was clean) and
//!    mounts it without fsck: the kernel replays the journal, which is what a power cut
//!    needs (the image has no e2fsprogs). Options:
//!    - `nodev,nosuid`: nothing under `/var` is a device node or a setuid program the
//!      host should honour. Container root file systems are overlayfs mounts with their
//!      own flags, so setuid programs inside images still work; volumes bound from
//!      `/var` into containers inherit `nosuid,nodev`, deliberately;
//!    - `noatime`: reads of image layers and logs do not turn into writes;
//!    - `errors=remount-ro`: on detected corruption the file system stops taking writes
//!      instead of spreading the damage, while the machine stays up to be looked at
//!      (`errors=panic` would boot-loop it);
//!    - `data=ordered,commit=5`: the defaults, named because the crash story depends on
//!      them: file data reaches the disk before the metadata that points at it, and at
//!      most 5 s of unsynced work is lost in a power cut (PID 1's own state files are
//!      written with fsync and rename, so they are never torn);
//! 4. grows the mounted file system to the partition online (`EXT4_IOC_RESIZE_FS`,
//!    [`ext4`]), which is journaled and therefore crash-safe by itself;
//! 5. counts the boot in [`BOOT_COUNT_FILE`] (fsynced before the ready marker) and
//!    writes a status report to [`STATUS_FILE`].
//!
//! Nothing is done twice: a disk that is already grown is not written, and a file
//! system as big as its partition is not resized. If DATA cannot be found or mounted,
//! PID 1 says so and mounts a tmpfs on `/var` so the machine still boots, without
//! persistence ([`VAR_ON_TMPFS`]). A failed grow is logged and the boot goes on with
//! the smaller `/var`. Orderly shutdown unmounts `/var` like every other mount (see
//! [`crate::shutdown`]: innermost first, busy ones remounted read-only and detached),
//! which leaves the journal clean; the next boot's [`VAR_MOUNTED`] line says `clean=`.

pub mod blkdev;
pub mod ext4;
pub mod gpt_grow;
pub mod locate;

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use nix::errno::Errno;
use nix::mount::MsFlags;
use tracing::{error, info, warn};

use ext4::{Ext4Error, Superblock};
use gpt_grow::{DataExtent, GrowError};
use locate::{DataPartition, LocateError};

pub const MOUNT_POINT: &str = "/var";
/// How many times this machine has booted with this `/var`: one decimal number.
pub const BOOT_COUNT_FILE: &str = "/var/lib/gantry/boot-count";
/// What [`prepare`] did, as JSON ([`VarStatus`]).
pub const STATUS_FILE: &str = "/run/gantry/var.json";

/// Logged once `/var` is DATA, with `device= size_bytes= partition_bytes= grown=
/// grown_from= clean= ms=` (`grown_from` is the file system's size before this boot;
/// `clean` whether the last unmount was; `ms` the time all of it took).
pub const VAR_MOUNTED: &str = "gantry-init: var mounted";
/// Logged when `/var` is a tmpfs because DATA could not be used, with `reason=`.
pub const VAR_ON_TMPFS: &str = "gantry-init: var on tmpfs, not persistent";
/// Logged when the partition was grown, with `device= from_bytes= to_bytes= ms=`.
pub const DATA_GROWN: &str = "gantry-init: data partition grown";
/// Logged once per boot with `count=` and `persistent=`.
pub const BOOT_COUNT_LINE: &str = "gantry-init: boot count";

/// The DATA mount: see the module docs for why these.
pub const MOUNT_FLAGS: MsFlags = MsFlags::MS_NODEV
    .union(MsFlags::MS_NOSUID)
    .union(MsFlags::MS_NOATIME);
pub const MOUNT_OPTIONS: &str = "errors=remount-ro,data=ordered,commit=5";

#[derive(Debug, thiserror::Error)]
pub enum VarError {
    #[error("cannot stat the root file system: {0}")]
    Root(#[source] io::Error),
    #[error(transparent)]
    Locate(#[from] LocateError),
    #[error("cannot open {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot read the block size of {path}: {source}")]
    BlockSize { path: PathBuf, source: io::Error },
    #[error("cannot grow the GPT on {path}: {source}")]
    Grow { path: PathBuf, source: GrowError },
    #[error("cannot tell the kernel that {device} is now {length} bytes: {source}")]
    TellKernel {
        device: PathBuf,
        length: u64,
        source: io::Error,
    },
}

/// The system calls and files of [`setup`]. [`Host`] makes them; the tests record.
pub trait VarOps {
    fn locate(&mut self) -> Result<DataPartition, VarError>;
    /// Rewrites the GPT so DATA reaches the end of the disk; DATA's extent per the table.
    fn grow_table(&mut self, data: &DataPartition) -> Result<DataExtent, VarError>;
    /// `BLKPG_RESIZE_PARTITION`.
    fn tell_kernel(&mut self, data: &DataPartition, extent: &DataExtent) -> Result<(), VarError>;
    /// DATA's length as the kernel sees it.
    fn partition_length(&mut self, data: &DataPartition) -> Result<u64, LocateError>;
    fn read_superblock(&mut self, device: &Path) -> Result<Superblock, Ext4Error>;
    fn mount_ext4(&mut self, device: &Path) -> Result<(), Errno>;
    fn mount_tmpfs(&mut self) -> Result<(), Errno>;
    fn resize_fs(&mut self, blocks: u64) -> Result<(), Ext4Error>;
    fn count_boot(&mut self) -> io::Result<u64>;
}

/// What [`setup`] did; also written to [`STATUS_FILE`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct VarStatus {
    /// `/var` is DATA (false: a tmpfs, or nothing).
    pub persistent: bool,
    pub device: Option<String>,
    /// The file system's size (0 on tmpfs).
    pub size_bytes: u64,
    pub partition_bytes: Option<u64>,
    /// The partition's length before this boot grew it.
    pub partition_grown_from: Option<u64>,
    /// The file system's size before this boot grew it.
    pub grown_from: Option<u64>,
    /// Whether the file system was unmounted cleanly last time.
    pub clean: Option<bool>,
    pub boot_count: Option<u64>,
    /// Why `/var` is not DATA, or what could not be done; empty when all went well.
    pub problems: Vec<String>,
}

/// Makes `/var` and says what it did (the boot goes on whatever happens).
pub fn setup(ops: &mut dyn VarOps) -> VarStatus {
    let started = Instant::now();
    let mut status = VarStatus::default();
    if let Err(reason) = mount_data(ops, &mut status, started) {
        error!(reason = %reason, "{VAR_ON_TMPFS}");
        status.problems.push(reason);
        match ops.mount_tmpfs() {
            Ok(()) => {}
            Err(e) => error!(error = %e, "cannot mount a tmpfs on /var either; /var is read-only"),
        }
    }
    match ops.count_boot() {
        Ok(count) => {
            info!(count, persistent = status.persistent, "{BOOT_COUNT_LINE}");
            status.boot_count = Some(count);
        }
        Err(e) => {
            warn!(file = BOOT_COUNT_FILE, error = %e, "cannot count this boot");
            status.problems.push(format!("cannot count this boot: {e}"));
        }
    }
    status
}

/// Steps 1–4; an error is the reason `/var` is not DATA.
fn mount_data(
    ops: &mut dyn VarOps,
    status: &mut VarStatus,
    started: Instant,
) -> Result<(), String> {
    let data = ops
        .locate()
        .map_err(|e| format!("cannot find the DATA partition: {e}"))?;
    let device = data.device();
    status.device = Some(device.display().to_string());

    grow_partition(ops, &data, status);

    let before = ops.read_superblock(&device).map_err(|e| format!("{e}"))?;
    status.clean = Some(before.clean());
    if before.errors {
        warn!(device = %device.display(), "the kernel recorded errors on /var earlier; mounting anyway");
    }
    ops.mount_ext4(&device)
        .map_err(|e| format!("cannot mount {} on /var: {e}", device.display()))?;
    status.persistent = true;

    let after = grow_file_system(ops, &data, &before, status);
    status.size_bytes = after.size_bytes();
    if after.blocks > before.blocks {
        status.grown_from = Some(before.size_bytes());
    }
    info!(
        device = %device.display(),
        size_bytes = status.size_bytes,
        partition_bytes = status.partition_bytes.unwrap_or(0),
        grown = status.grown_from.is_some(),
        grown_from = status.grown_from.unwrap_or(status.size_bytes),
        clean = before.clean(),
        ms = started.elapsed().as_millis() as u64,
        "{VAR_MOUNTED}"
    );
    Ok(())
}

/// Grows DATA's table entry and the kernel's idea of it; failures only cost space.
fn grow_partition(ops: &mut dyn VarOps, data: &DataPartition, status: &mut VarStatus) {
    let started = Instant::now();
    let extent = match ops.grow_table(data) {
        Ok(extent) => extent,
        Err(e) => {
            warn!(error = %e, "cannot grow the DATA partition; /var keeps its size");
            status.problems.push(e.to_string());
            return;
        }
    };
    // Compared with the kernel rather than with what the table said before: after a
    // power cut between the table write and BLKPG, the kernel read the new table at boot.
    match ops.partition_length(data) {
        Ok(len) if len == extent.length => {}
        Ok(_) => {
            if let Err(e) = ops.tell_kernel(data, &extent) {
                warn!(error = %e, "the DATA partition grows at the next boot");
                status.problems.push(e.to_string());
            }
        }
        Err(e) => status.problems.push(e.to_string()),
    }
    if let Some(from) = extent.grown_from {
        status.partition_grown_from = Some(from);
        info!(
            device = %data.device().display(),
            from_bytes = from,
            to_bytes = extent.length,
            ms = started.elapsed().as_millis() as u64,
            "{DATA_GROWN}"
        );
    }
}

/// Grows the mounted file system to the partition; returns its superblock afterwards.
fn grow_file_system(
    ops: &mut dyn VarOps,
    data: &DataPartition,
    before: &Superblock,
    status: &mut VarStatus,
) -> Superblock {
    let length = match ops.partition_length(data) {
        Ok(l) => l,
        Err(e) => {
            status.problems.push(e.to_string());
            return before.clone();
        }
    };
    status.partition_bytes = Some(length);
    let blocks = length / before.block_size;
    if blocks <= before.blocks {
        return before.clone();
    }
    if let Err(e) = ops.resize_fs(blocks) {
        warn!(error = %e, "/var keeps its size");
        status.problems.push(e.to_string());
        return before.clone();
    }
    match ops.read_superblock(&data.device()) {
        Ok(sb) => sb,
        Err(_) => Superblock {
            blocks,
            ..before.clone()
        },
    }
}

/// Runs [`setup`] on this machine and writes [`STATUS_FILE`].
pub fn prepare() -> VarStatus {
    let status = setup(&mut Host);
    let json = serde_json::to_vec_pretty(&status).unwrap_or_default();
    let path = Path::new(STATUS_FILE);
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| gantry_durable::write_atomic(path, &json));
    if let Err(e) = written {
        warn!(file = STATUS_FILE, error = %e, "cannot write the /var status");
    }
    status
}

/// Adds one to the number in `path` (a missing or unreadable number counts as 0) and
/// writes it back durably (fsync and rename); returns the new count.
pub fn count_boot(path: &Path) -> io::Result<u64> {
    let previous = match std::fs::read_to_string(path) {
        Ok(text) => text.trim().parse::<u64>().unwrap_or(0),
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e),
    };
    let count = previous.saturating_add(1);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    gantry_durable::write_atomic(path, format!("{count}\n").as_bytes())?;
    Ok(count)
}

/// This machine.
#[derive(Debug, Default)]
pub struct Host;

impl VarOps for Host {
    fn locate(&mut self) -> Result<DataPartition, VarError> {
        use std::os::unix::fs::MetadataExt;
        let dev = std::fs::metadata("/").map_err(VarError::Root)?.dev();
        let root = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
        Ok(locate::locate(Path::new("/sys"), root)?)
    }

    fn grow_table(&mut self, data: &DataPartition) -> Result<DataExtent, VarError> {
        let path = data.disk_device();
        let mut disk = File::options()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|source| VarError::Open {
                path: path.clone(),
                source,
            })?;
        let block_size =
            blkdev::logical_block_size(&disk).map_err(|source| VarError::BlockSize {
                path: path.clone(),
                source,
            })?;
        gpt_grow::grow(&mut disk, block_size, data.number, &mut |f: &mut File| {
            f.sync_all()
        })
        .map_err(|source| VarError::Grow { path, source })
    }

    fn tell_kernel(&mut self, data: &DataPartition, extent: &DataExtent) -> Result<(), VarError> {
        let path = data.disk_device();
        let disk = File::open(&path).map_err(|source| VarError::Open {
            path: path.clone(),
            source,
        })?;
        blkdev::resize_partition(&disk, data.number, extent.start, extent.length).map_err(
            |source| VarError::TellKernel {
                device: data.device(),
                length: extent.length,
                source,
            },
        )
    }

    fn partition_length(&mut self, data: &DataPartition) -> Result<u64, LocateError> {
        data.length()
    }

    fn read_superblock(&mut self, device: &Path) -> Result<Superblock, Ext4Error> {
        ext4::read_superblock(device)
    }

    fn mount_ext4(&mut self, device: &Path) -> Result<(), Errno> {
        nix::mount::mount(
            Some(device),
            MOUNT_POINT,
            Some("ext4"),
            MOUNT_FLAGS,
            Some(MOUNT_OPTIONS),
        )
    }

    fn mount_tmpfs(&mut self) -> Result<(), Errno> {
        nix::mount::mount(
            Some("var"),
            MOUNT_POINT,
            Some("tmpfs"),
            MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
            Some("mode=0755"),
        )
    }

    fn resize_fs(&mut self, blocks: u64) -> Result<(), Ext4Error> {
        ext4::resize(Path::new(MOUNT_POINT), blocks)
    }

    fn count_boot(&mut self) -> io::Result<u64> {
        count_boot(Path::new(BOOT_COUNT_FILE))
    }
}

#[cfg(test)]
mod tests;
