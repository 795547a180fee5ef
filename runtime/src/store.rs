//! The image store: a directory (default `/var/lib/gantry`) that holds
//!
//! ```text
//! blobs/sha256/<hex>            manifests and configs, by digest
//! blobs/sha256/.partial-<hex>   a layer download in progress, resumed by the next pull
//! layers/<chain-hex>/diff/      an unpacked layer in overlayfs lower-dir form
//! layers/<chain-hex>/layer.json what it is: chain ID, diff ID, the blob it came from
//! images.json                   image records by name (registry/repository:tag)
//! tmp/<pid>-…                   work in progress of one process
//! volumes/<name>/               named volumes, bind-mounted into containers
//! ```
//!
//! `layers/`, `tmp/` and `volumes/` are 0700 (tightened when the store opens): they hold
//! what images and containers put there, device nodes and setuid files included, which no
//! other host user may reach. A volume's own directory keeps its mode: that is what the
//! container sees at its mount point.
//!
//! Crash safety comes from the order of writes: a blob or a layer is built under a
//! temporary name, synced, and renamed into place; a record that names them is written
//! (atomically, after fsync) only once they are all in place; removal goes the other way
//! (record first, then layers are renamed into `tmp/` before they are deleted). So after a
//! `kill -9` at any moment every name in the store means what it says, [`Store::check`]
//! passes, and what is left over is only unreferenced data that `prune` frees.
//!
//! A layer's compressed blob is verified where it was downloaded, unpacked, and deleted:
//! the store keeps layers unpacked only, as Docker's overlay2 store does. A host needs half
//! the disk, and a pull writes and syncs each layer once instead of twice.
//!
//! A pull unpacks its layers into `tmp/` while they download, then makes them durable with
//! one `syncfs` and renames them into `layers/` ([`Store::commit_layers`]): one sync per
//! pull, not per layer, and the deleted compressed copies never reach the disk.
//!
//! Concurrency: a pull holds `gc.lock` shared and the locks of the layers it lacks (taken
//! in one order) until they are committed, so two pulls of one layer unpack it once; `rm`/`prune` hold `gc.lock` exclusive so
//! that they never free a layer a pull is about to name. `images.json` is rewritten under
//! `images.lock`.
//!
//! Layers used by containers are not yet pinned: `rm`/`prune` consider image records only.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::blobs::{BlobError, Blobs};
use crate::layer::{self, Compression, LayerError, Unpacked};
use crate::reference::Digest;

/// Where PID 1 keeps its images.
pub const DEFAULT_ROOT: &str = "/var/lib/gantry";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("store {path}: cannot lock: {errno}")]
    Lock {
        path: PathBuf,
        errno: nix::errno::Errno,
    },
    #[error("store {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error("layer {blob}: {source}")]
    Unpack {
        blob: Digest,
        source: Box<LayerError>,
    },
    #[error("layer {blob}: uncompressed content has diff_id {got}, the config says {expected}")]
    DiffId {
        blob: Digest,
        expected: Digest,
        got: Digest,
    },
    #[error("no image named {0}")]
    NoSuchImage(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What the store knows about an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The normalised reference it was pulled or imported as.
    pub name: String,
    /// The index it was chosen from, when the reference named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<String>,
    pub manifest: String,
    pub config: String,
    pub layers: Vec<LayerRecord>,
    /// Seconds since the epoch.
    pub created: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    pub chain_id: String,
    pub diff_id: String,
    pub blob: String,
    pub size: u64,
}

/// `layers/<chain>/layer.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct LayerMeta {
    chain_id: String,
    diff_id: String,
    blob: String,
    entries: u64,
    uncompressed_bytes: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Records {
    images: BTreeMap<String, ImageRecord>,
}

/// What `rm`/`prune` freed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Freed {
    pub layers: usize,
    pub blobs: usize,
}

#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    blobs: Blobs,
}

/// An exclusive hold on one blob's download.
#[derive(Debug)]
pub struct BlobLock(#[allow(dead_code)] Flock<File>); // held for its Drop

/// A shared hold on the store that keeps `rm`/`prune` out while a pull runs.
#[derive(Debug)]
pub struct PullGuard(#[allow(dead_code)] Flock<File>); // held for its Drop

/// Exclusive holds on the unpacking of some layers, from [`Store::lock_layers`].
#[derive(Debug)]
pub struct LayerLocks(#[allow(dead_code)] Vec<Flock<File>>); // held for their Drop

/// A layer unpacked into a work directory, waiting for [`Store::commit_layers`]. Dropped
/// uncommitted, it is deleted.
#[derive(Debug)]
pub struct StagedLayer {
    work: Option<PathBuf>,
    chain_id: Digest,
}

impl StagedLayer {
    pub fn chain_id(&self) -> &Digest {
        &self.chain_id
    }
}

impl Drop for StagedLayer {
    fn drop(&mut self) {
        if let Some(work) = self.work.take() {
            let _ = std::fs::remove_dir_all(work);
        }
    }
}

impl Store {
    /// Opens (creating) the store at `root`, and clears what dead processes left in `tmp/`.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        for dir in ["blobs/sha256", "locks"] {
            let p = root.join(dir);
            std::fs::create_dir_all(&p).map_err(io(&p))?;
        }
        // Unpacked layers hold the images' device nodes and setuid files; volumes hold
        // whatever the containers write.
        for dir in ["layers", "tmp", "volumes"] {
            let p = root.join(dir);
            crate::fsutil::private_dir(&p).map_err(io(&p))?;
        }
        let store = Self {
            root: root.to_owned(),
            blobs: Blobs::new(root),
        };
        store.clear_stale_tmp()?;
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blobs(&self) -> &Blobs {
        &self.blobs
    }

    /// The directory overlayfs reads for the layer with this chain ID.
    pub fn layer_dir(&self, chain_id: &Digest) -> PathBuf {
        self.root.join("layers").join(chain_id.hex()).join("diff")
    }

    pub fn has_layer(&self, chain_id: &Digest) -> bool {
        self.root
            .join("layers")
            .join(chain_id.hex())
            .join("layer.json")
            .is_file()
    }

    fn lock(&self, name: &str, arg: FlockArg) -> Result<Flock<File>, StoreError> {
        let path = self.root.join("locks").join(name);
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        Flock::lock(file, arg).map_err(|(_, errno)| StoreError::Lock { path, errno })
    }

    /// Held while a blob is downloaded, so that two pulls do not write one partial file.
    pub fn blob_lock(&self, blob: &Digest) -> Result<BlobLock, StoreError> {
        self.lock(
            &format!("blob-{}.lock", blob.hex()),
            FlockArg::LockExclusive,
        )
        .map(BlobLock)
    }

    /// Taken by a pull or import for its whole run.
    pub fn pull_guard(&self) -> Result<PullGuard, StoreError> {
        self.lock("gc.lock", FlockArg::LockShared).map(PullGuard)
    }

    pub(crate) fn tmp_dir(&self, what: &str) -> Result<PathBuf, StoreError> {
        let base = self.root.join("tmp");
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}-{}-{what}-", boot_id(), std::process::id()))
            .tempdir_in(&base)
            .map_err(io(&base))?;
        let dir = dir.keep();
        // A staged layer keeps this mode once it is renamed into `layers/`.
        crate::fsutil::private_dir(&dir).map_err(io(&dir))?;
        Ok(dir)
    }

    /// Takes the unpack locks of these layers, in one global order so that two pulls that
    /// share layers cannot each hold one the other waits for. Held until the layers are
    /// committed (or found there), so that two pulls of one layer unpack it once.
    pub fn lock_layers<'a>(
        &self,
        chain_ids: impl IntoIterator<Item = &'a Digest>,
    ) -> Result<LayerLocks, StoreError> {
        let sorted: BTreeSet<&str> = chain_ids.into_iter().map(Digest::hex).collect();
        sorted
            .into_iter()
            .map(|hex| self.lock(&format!("layer-{hex}.lock"), FlockArg::LockExclusive))
            .collect::<Result<_, _>>()
            .map(LayerLocks)
    }

    /// Unpacks a layer from `compressed` (the content of blob `blob`) into a work
    /// directory and checks its diff_id. Nothing is synced and nothing is visible under
    /// `layers/` until [`Store::commit_layers`]; a staged layer that is dropped instead is
    /// deleted. The caller holds the layer's lock ([`Store::lock_layers`]).
    pub fn stage_layer(
        &self,
        chain_id: &Digest,
        diff_id: &Digest,
        blob: &Digest,
        compression: Compression,
        compressed: impl std::io::Read,
    ) -> Result<StagedLayer, StoreError> {
        let work = self.tmp_dir(&format!("layer-{}", &chain_id.hex()[..12]))?;
        let staged = StagedLayer {
            work: Some(work.clone()),
            chain_id: chain_id.clone(),
        };
        let diff = work.join("diff");
        std::fs::create_dir(&diff).map_err(io(&diff))?;
        let Unpacked {
            diff_id: got,
            entries,
            uncompressed_bytes,
        } = layer::unpack(compressed, compression, &diff).map_err(|source| StoreError::Unpack {
            blob: blob.clone(),
            source: Box::new(source),
        })?;
        if got != *diff_id {
            return Err(StoreError::DiffId {
                blob: blob.clone(),
                expected: diff_id.clone(),
                got,
            });
        }
        let meta = LayerMeta {
            chain_id: chain_id.to_string(),
            diff_id: diff_id.to_string(),
            blob: blob.to_string(),
            entries,
            uncompressed_bytes,
        };
        let meta_path = work.join("layer.json");
        let json = serde_json::to_vec_pretty(&meta).map_err(|e| StoreError::Corrupt {
            path: meta_path.clone(),
            reason: e.to_string(),
        })?;
        File::create(&meta_path)
            .and_then(|mut f| f.write_all(&json))
            .map_err(io(&meta_path))?;
        Ok(staged)
    }

    /// Makes staged layers durable and puts them in place: one `syncfs` for all of them
    /// (most of their data is already on its way to disk, see `layer::Writeback`),
    /// then a rename each, then one sync of `layers/`. One sync per pull instead of one per
    /// layer: the layers of an image share a file system, and a sync flushes all of it.
    pub fn commit_layers(&self, staged: Vec<StagedLayer>) -> Result<(), StoreError> {
        if staged.is_empty() {
            return Ok(());
        }
        let layers = self.root.join("layers");
        let dir = File::open(&layers).map_err(io(&layers))?;
        nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)).map_err(|e| StoreError::Io {
            path: layers.clone(),
            source: e.into(),
        })?;
        for mut layer in staged {
            if let Some(work) = layer.work.take() {
                let dest = layers.join(layer.chain_id.hex());
                if let Err(e) = std::fs::rename(&work, &dest) {
                    let _ = std::fs::remove_dir_all(&work);
                    return Err(io(&dest)(e));
                }
            }
        }
        dir.sync_all().map_err(io(&layers))
    }

    fn records_path(&self) -> PathBuf {
        self.root.join("images.json")
    }

    fn load_records(&self) -> Result<Records, StoreError> {
        let path = self.records_path();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                path,
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Records::default()),
            Err(e) => Err(io(&path)(e)),
        }
    }

    fn save_records(&self, records: &Records) -> Result<(), StoreError> {
        let path = self.records_path();
        let json = serde_json::to_vec_pretty(records).map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write_atomic(&path, &json)
    }

    /// All image records, by name.
    pub fn images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        Ok(self.load_records()?.images.into_values().collect())
    }

    pub fn image(&self, name: &str) -> Result<ImageRecord, StoreError> {
        self.load_records()?
            .images
            .remove(name)
            .ok_or_else(|| StoreError::NoSuchImage(name.to_owned()))
    }

    /// Records an image whose blobs and layers are all in place.
    pub fn put_image(&self, record: ImageRecord) -> Result<(), StoreError> {
        for l in &record.layers {
            let chain: Digest = parse_digest(&self.records_path(), &l.chain_id)?;
            if !self.has_layer(&chain) {
                return Err(StoreError::Corrupt {
                    path: self.layer_dir(&chain),
                    reason: format!(
                        "image {} names layer {} which is not unpacked",
                        record.name, l.chain_id
                    ),
                });
            }
        }
        let _lock = self.lock("images.lock", FlockArg::LockExclusive)?;
        let mut records = self.load_records()?;
        records.images.insert(record.name.clone(), record);
        self.save_records(&records)
    }

    /// Removes the image named `name` and frees what no other image uses.
    pub fn remove_image(&self, name: &str) -> Result<Freed, StoreError> {
        let _gc = self.lock("gc.lock", FlockArg::LockExclusive)?;
        {
            let _lock = self.lock("images.lock", FlockArg::LockExclusive)?;
            let mut records = self.load_records()?;
            if records.images.remove(name).is_none() {
                return Err(StoreError::NoSuchImage(name.to_owned()));
            }
            self.save_records(&records)?;
        }
        self.collect_garbage()
    }

    /// Frees every layer and blob no image record names, and abandoned downloads.
    pub fn prune(&self) -> Result<Freed, StoreError> {
        let _gc = self.lock("gc.lock", FlockArg::LockExclusive)?;
        self.collect_garbage()
    }

    /// Needs `gc.lock` held exclusively.
    fn collect_garbage(&self) -> Result<Freed, StoreError> {
        let records = self.load_records()?;
        let mut keep_layers = BTreeSet::new();
        let mut keep_blobs = BTreeSet::new();
        for r in records.images.values() {
            keep_blobs.insert(r.manifest.clone());
            keep_blobs.insert(r.config.clone());
            keep_blobs.extend(r.index.clone());
            for l in &r.layers {
                keep_layers.insert(l.chain_id.clone());
                keep_blobs.insert(l.blob.clone());
            }
        }
        let mut freed = Freed::default();
        let layers = self.root.join("layers");
        for entry in std::fs::read_dir(&layers).map_err(io(&layers))? {
            let entry = entry.map_err(io(&layers))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if keep_layers.contains(&format!("sha256:{name}")) {
                continue;
            }
            // Out of its name first, so a crash mid-delete leaves no half layer behind.
            let doomed = self.tmp_dir("delete")?;
            let target = doomed.join("layer");
            std::fs::rename(entry.path(), &target).map_err(io(&entry.path()))?;
            std::fs::remove_dir_all(&doomed).map_err(io(&doomed))?;
            freed.layers += 1;
        }
        sync_dir(&layers)?;
        for d in self.blobs.list().map_err(io(&self.root.join("blobs")))? {
            if !keep_blobs.contains(&d.to_string()) {
                self.blobs.remove(&d)?;
                freed.blobs += 1;
            }
        }
        let blob_dir = self.root.join("blobs/sha256");
        for entry in std::fs::read_dir(&blob_dir).map_err(io(&blob_dir))? {
            let entry = entry.map_err(io(&blob_dir))?;
            // Abandoned downloads and blobs a killed process was writing.
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".partial-") || name.starts_with(".incoming-") {
                std::fs::remove_file(entry.path()).map_err(io(&entry.path()))?;
            }
        }
        // Records a killed process was writing (records are written under gc.lock shared).
        for entry in std::fs::read_dir(&self.root).map_err(io(&self.root))? {
            let entry = entry.map_err(io(&self.root))?;
            if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                std::fs::remove_file(entry.path()).map_err(io(&entry.path()))?;
            }
        }
        Ok(freed)
    }

    /// Checks that every record names blobs that hash to their digests and layers that are
    /// unpacked, and that every layer directory is complete. Returns what is wrong.
    pub fn check(&self) -> Result<Vec<String>, StoreError> {
        let records = self.load_records()?;
        let mut problems = Vec::new();
        let mut checked = BTreeSet::new();
        for r in records.images.values() {
            // Layer blobs are not kept once unpacked; the layer directories stand for them.
            let mut blobs = vec![r.manifest.clone(), r.config.clone()];
            blobs.extend(r.index.clone());
            for b in blobs {
                match b.parse::<Digest>() {
                    Ok(d) => {
                        if let Err(e) = self.blobs.verify(&d) {
                            problems.push(format!("image {}: {e}", r.name));
                        }
                    }
                    Err(e) => problems.push(format!("image {}: blob {b:?}: {e}", r.name)),
                }
                checked.insert(b);
            }
            for l in &r.layers {
                match l.chain_id.parse::<Digest>() {
                    Ok(c) if self.has_layer(&c) => {}
                    _ => problems.push(format!(
                        "image {}: layer {} is not unpacked",
                        r.name, l.chain_id
                    )),
                }
            }
        }
        let layers = self.root.join("layers");
        for entry in std::fs::read_dir(&layers).map_err(io(&layers))? {
            let entry = entry.map_err(io(&layers))?;
            let meta_path = entry.path().join("layer.json");
            let name = entry.file_name().to_string_lossy().into_owned();
            let meta = std::fs::read(&meta_path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<LayerMeta>(&b).map_err(|e| e.to_string()));
            let problem = match meta {
                Err(e) => Some(format!("layer.json: {e}")),
                Ok(m) if m.chain_id != format!("sha256:{name}") => {
                    Some(format!("layer.json names chain {}", m.chain_id))
                }
                Ok(_) if !entry.path().join("diff").is_dir() => {
                    Some("no diff directory".to_owned())
                }
                Ok(_) => None,
            };
            if let Some(problem) = problem {
                problems.push(format!(
                    "layer directory {}: {problem}",
                    entry.path().display()
                ));
            }
        }
        for d in self.blobs.list().map_err(io(&self.root.join("blobs")))? {
            if !checked.contains(&d.to_string()) {
                if let Err(e) = self.blobs.verify(&d) {
                    problems.push(e.to_string());
                }
            }
        }
        Ok(problems)
    }

    /// Removes `tmp/<pid>-…` entries whose process is gone.
    fn clear_stale_tmp(&self) -> Result<(), StoreError> {
        let tmp = self.root.join("tmp");
        for entry in std::fs::read_dir(&tmp).map_err(io(&tmp))? {
            let entry = entry.map_err(io(&tmp))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // `<boot>-<pid>-…`: a process of an earlier boot is gone whatever its pid (PID 1
            // is always 1), and one of this boot is gone when its pid is.
            let mut parts = name.splitn(3, '-');
            let (boot, pid) = (
                parts.next(),
                parts.next().and_then(|p| p.parse::<i32>().ok()),
            );
            let alive = boot == Some(boot_id().as_str())
                && pid.is_some_and(|p| {
                    p == std::process::id() as i32
                        || nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None)
                            != Err(nix::errno::Errno::ESRCH)
                });
            if !alive {
                let path = entry.path();
                let result = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                result.map_err(io(&path))?;
            }
        }
        Ok(())
    }
}

/// This boot's identity (the kernel's random boot ID), to tell leftovers of an earlier
/// boot from work in progress.
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|id| id.trim().chars().filter(|c| *c != '-').take(12).collect())
        .unwrap_or_else(|_| "noboot".to_owned())
}

fn parse_digest(path: &Path, s: &str) -> Result<Digest, StoreError> {
    s.parse().map_err(|e: &str| StoreError::Corrupt {
        path: path.to_owned(),
        reason: format!("digest {s:?}: {e}"),
    })
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Writes `data` to a temporary file beside `path`, fsyncs it, renames it over `path` and
/// fsyncs the directory: a reader sees the old content or the new, never a mix.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<(), StoreError> {
    crate::fsutil::write_atomic(path, data).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &std::path::Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn opening_makes_the_volumes_directory_private_and_tightens_an_old_one() {
        let fresh = tempfile::tempdir().unwrap();
        super::Store::open(fresh.path()).unwrap();
        assert_eq!(mode(&fresh.path().join("volumes")), 0o700);
        // What an older runtime left: a world-readable volumes directory, and a volume
        // whose own mode (what the container sees at its mount point) is the container's.
        let old = tempfile::tempdir().unwrap();
        let volume = old.path().join("volumes/data");
        std::fs::create_dir_all(&volume).unwrap();
        for p in [old.path().join("volumes"), volume.clone()] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        super::Store::open(old.path()).unwrap();
        assert_eq!(mode(&old.path().join("volumes")), 0o700);
        assert_eq!(mode(&volume), 0o755);
    }
}
