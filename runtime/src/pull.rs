//! Pulling an image: resolve the reference to a linux/amd64 manifest, fetch and verify the
//! config, download the layers concurrently (resuming partial downloads with range
//! requests) and unpack each as it arrives, keep what verifies, commit the layers with one
//! sync, and record the image once everything it names is in place.

use std::io::Read;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::blobs::{BlobError, PartialBlob};
use crate::manifest::{ImageConfig, ImageManifest, InvalidManifest, Layer, Manifest};
use crate::reference::{Digest, ImageRef};
use crate::registry::{Registry, RegistryError, RegistryOptions, Tee};
use crate::store::{ImageRecord, LayerRecord, StagedLayer, Store, StoreError};

/// How many times a layer download is tried before the pull fails; each retry resumes.
const DOWNLOAD_ATTEMPTS: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Manifest(#[from] InvalidManifest),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error("manifest {digest}: an index inside an index is not supported")]
    NestedIndex { digest: Digest },
    #[error("layer task failed: {0}")]
    Task(String),
}

/// What a pull reports as it goes. Every method has a no-op default.
pub trait Progress: Send + Sync {
    /// The reference resolved to this manifest.
    fn resolved(&self, _image: &str, _manifest: &Digest) {}
    /// A layer download starts (or resumes at `offset`).
    fn layer_started(&self, _blob: &Digest, _size: u64, _offset: u64) {}
    fn layer_bytes(&self, _blob: &Digest, _bytes: u64) {}
    /// A layer is in place: downloaded and unpacked now, or found in the store.
    fn layer_done(&self, _blob: &Digest, _what: LayerDone) {}
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerDone {
    Unpacked,
    AlreadyThere,
}

/// A [`Progress`] that says nothing.
#[derive(Debug)]
pub struct Quiet;

impl Progress for Quiet {}

#[derive(Debug, Clone)]
pub struct PullOptions {
    pub registry: RegistryOptions,
    /// Layers downloaded at once.
    pub concurrency: usize,
}

impl Default for PullOptions {
    fn default() -> Self {
        Self {
            registry: RegistryOptions::default(),
            concurrency: 4,
        }
    }
}

/// Pulls `image` into `store` and returns its record.
pub async fn pull(
    store: Arc<Store>,
    image: &ImageRef,
    opts: &PullOptions,
    progress: Arc<dyn Progress>,
) -> Result<ImageRecord, PullError> {
    let s = store.clone();
    let _guard = tokio::task::spawn_blocking(move || s.pull_guard())
        .await
        .map_err(|e| PullError::Task(e.to_string()))??;
    let registry = Arc::new(Registry::connect(image, &opts.registry).await?);
    let reference = match (image.digest(), image.tag()) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.to_owned(),
        (None, None) => "latest".to_owned(),
    };
    let fetched = registry.manifest(&reference).await?;
    let digest_text = fetched.digest.to_string();
    let (index, fetched) = match Manifest::parse(
        &fetched.bytes,
        fetched.content_type.as_deref(),
        &digest_text,
    )? {
        Manifest::Image(_) => (None, fetched),
        Manifest::Index(i) => {
            let chosen = i.select(&digest_text)?;
            let inner = registry.manifest(&chosen.digest.to_string()).await?;
            if inner.bytes.len() as u64 != chosen.size {
                return Err(InvalidManifest {
                    digest: chosen.digest.to_string(),
                    reason: format!(
                        "{} bytes served, the index says {}",
                        inner.bytes.len(),
                        chosen.size
                    ),
                }
                .into());
            }
            store_bytes(&store, &fetched.digest, &fetched.bytes)?;
            (Some(fetched.digest), inner)
        }
    };
    let manifest = match Manifest::parse(
        &fetched.bytes,
        fetched.content_type.as_deref(),
        &fetched.digest.to_string(),
    )? {
        Manifest::Image(m) => m,
        Manifest::Index(_) => {
            return Err(PullError::NestedIndex {
                digest: fetched.digest,
            })
        }
    };
    progress.resolved(&image.to_string(), &fetched.digest);
    let config_bytes = if store.blobs().contains(&manifest.config.digest) {
        read_blob(&store, &manifest.config.digest)?
    } else {
        let bytes = registry
            .small_blob(&manifest.config.digest, manifest.config.size)
            .await?;
        store_blob(
            &store,
            &manifest.config.digest,
            manifest.config.size,
            &bytes,
        )?;
        bytes
    };
    let config = ImageConfig::parse(
        &config_bytes,
        &manifest.config.digest,
        manifest.layers.len(),
    )?;
    let chain_ids = config.chain_ids();

    // Layers already in the store are done; the others are locked (all at once, in one
    // order, so that pulls sharing layers cannot deadlock) until they are committed.
    let mut wanted = Vec::new();
    for ((layer, diff_id), chain_id) in manifest
        .layers
        .iter()
        .cloned()
        .zip(config.rootfs.diff_ids.iter().cloned())
        .zip(chain_ids.iter().cloned())
    {
        if store.has_layer(&chain_id) {
            progress.layer_done(&layer.descriptor.digest, LayerDone::AlreadyThere);
        } else {
            wanted.push((layer, diff_id, chain_id));
        }
    }
    let (s, chains) = (
        store.clone(),
        wanted.iter().map(|w| w.2.clone()).collect::<Vec<_>>(),
    );
    let _locks = tokio::task::spawn_blocking(move || s.lock_layers(&chains))
        .await
        .map_err(|e| PullError::Task(e.to_string()))??;

    let limit = Arc::new(Semaphore::new(opts.concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for (layer, diff_id, chain_id) in wanted {
        // Another pull may have put it there while this one waited for the locks.
        if store.has_layer(&chain_id) {
            progress.layer_done(&layer.descriptor.digest, LayerDone::AlreadyThere);
            continue;
        }
        let (store, registry, progress, limit) = (
            store.clone(),
            registry.clone(),
            progress.clone(),
            limit.clone(),
        );
        tasks.spawn(async move {
            let staged = fetch_layer(
                &store, &registry, &*progress, &limit, &layer, &diff_id, &chain_id,
            )
            .await;
            (layer.descriptor.digest, staged)
        });
    }
    let mut staged = Vec::new();
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        // The other layers run to their end: an aborted task would leave its unpacking
        // thread running without the locks it took. What they finish is committed, so
        // that it stays for next time.
        match joined.map_err(|e| PullError::Task(e.to_string())) {
            Ok((blob, Ok(layer))) => staged.push((blob, layer)),
            Ok((_, Err(e))) | Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let blobs: Vec<Digest> = staged.iter().map(|(b, _)| b.clone()).collect();
    let s = store.clone();
    let committed = tokio::task::spawn_blocking(move || {
        s.commit_layers(staged.into_iter().map(|(_, l)| l).collect())
    })
    .await
    .map_err(|e| PullError::Task(e.to_string()))
    .and_then(|r| r.map_err(PullError::from));
    // The layer that failed is the story; a commit that failed after it is the sequel.
    if let Some(e) = first_error {
        return Err(e);
    }
    committed?;
    for blob in &blobs {
        progress.layer_done(blob, LayerDone::Unpacked);
    }
    store_bytes(&store, &fetched.digest, &fetched.bytes)?;
    let record = record_for(
        image.to_string(),
        index,
        &fetched.digest,
        &manifest,
        &config,
    );
    store.put_image(record.clone())?;
    Ok(record)
}

/// Downloads a layer and unpacks it as it arrives; returns it staged for commit. The
/// unpacker gets the bytes before the blob's digest can be checked (that needs the last
/// byte), which is safe because it treats every layer as hostile anyway (see
/// [`crate::layer`]), and what it made is kept only if the whole blob then verifies and
/// the unpacker saw exactly that blob. Otherwise (a download that started over, or a
/// resumed one that turned out wrong) the layer is unpacked again from the verified file.
async fn fetch_layer(
    store: &Arc<Store>,
    registry: &Registry,
    progress: &dyn Progress,
    limit: &Semaphore,
    layer: &Layer,
    diff_id: &Digest,
    chain_id: &Digest,
) -> Result<StagedLayer, PullError> {
    let blob = &layer.descriptor.digest;
    let size = layer.descriptor.size;
    let task_err = |e: tokio::task::JoinError| PullError::Task(e.to_string());
    let (s, b) = (store.clone(), blob.clone());
    // Two layers (of this pull or another) can come from one blob: one partial file each.
    let _lock = tokio::task::spawn_blocking(move || s.blob_lock(&b))
        .await
        .map_err(task_err)??;
    // Only downloads count against the limit.
    let permit = limit
        .acquire()
        .await
        .map_err(|e| PullError::Task(e.to_string()))?;
    let mut partial = store.blobs().open_partial(blob)?;
    if partial.len() > size {
        // Longer than the blob: not a prefix of it. Start over.
        partial.restart().map_err(|source| RegistryError::Write {
            digest: blob.clone(),
            source,
        })?;
    }
    let resumed = !partial.is_empty();
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let mut tee = Tee::new(tx, partial.len());
    let streamed = Streamed::open(partial.path(), partial.len(), rx);
    let unpacking = {
        let (s, c, d, b, comp) = (
            store.clone(),
            chain_id.clone(),
            diff_id.clone(),
            blob.clone(),
            layer.compression,
        );
        tokio::task::spawn_blocking(move || s.stage_layer(&c, &d, &b, comp, streamed?))
    };
    let downloaded = download(registry, progress, layer, &mut partial, &mut tee).await;
    let whole = tee.close(size);
    let mut unpacked = Some(unpacking.await.map_err(task_err)?);
    downloaded?;
    let (source, whole) = match partial.finish(size) {
        Ok(path) => (path, whole),
        // What an earlier run left was not a prefix of this blob (the partial is gone
        // now): fetch it whole, once.
        Err(e @ (BlobError::Mismatch { .. } | BlobError::Size { .. })) if resumed => {
            tracing::warn!(error = %e, "resumed download did not verify; fetching it again");
            // What was unpacked from it goes now, not after the second unpack.
            unpacked = None;
            let mut partial = store.blobs().open_partial(blob)?;
            download(registry, progress, layer, &mut partial, &mut Tee::none()).await?;
            (partial.finish(size)?, false)
        }
        Err(e) => return Err(e.into()),
    };
    drop(permit);
    // A stream that was not the blob: its work is dropped here, before the second unpack.
    let staged = if let Some(unpacked) = unpacked.filter(|_| whole) {
        unpacked
    } else {
        let (s, c, d, b, comp, path) = (
            store.clone(),
            chain_id.clone(),
            diff_id.clone(),
            blob.clone(),
            layer.compression,
            source.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(&path).map_err(|e| StoreError::Io {
                path: path.clone(),
                source: e,
            })?;
            s.stage_layer(
                &c,
                &d,
                &b,
                comp,
                std::io::BufReader::with_capacity(256 * 1024, file),
            )
        })
        .await
        .map_err(task_err)?
    };
    // Unpacked or refused, the compressed copy has served its purpose (and deleted before
    // the commit's sync, its pages never reach the disk).
    store.blobs().remove_partial(blob);
    Ok(staged?)
}

/// What the unpacker reads while a layer downloads: the bytes an earlier run left in the
/// partial file, then the chunks of this download as they arrive. The end of the channel
/// is the end of the stream.
struct Streamed {
    prefix: std::io::Take<std::fs::File>,
    rx: tokio::sync::mpsc::Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl Streamed {
    fn open(
        path: &std::path::Path,
        prefix: u64,
        rx: tokio::sync::mpsc::Receiver<Vec<u8>>,
    ) -> Result<Self, StoreError> {
        let file = std::fs::File::open(path).map_err(|source| StoreError::Io {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self {
            prefix: file.take(prefix),
            rx,
            chunk: Vec::new(),
            pos: 0,
        })
    }
}

impl Read for Streamed {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.prefix.limit() > 0 {
            return match self.prefix.read(buf)? {
                0 => Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the partial download shrank while it was read",
                )),
                n => Ok(n),
            };
        }
        while self.pos == self.chunk.len() {
            match self.rx.blocking_recv() {
                Some(chunk) => (self.chunk, self.pos) = (chunk, 0),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Downloads the rest of a layer blob into its partial file (and the tee), resuming what
/// is there and retrying a dropped connection.
async fn download(
    registry: &Registry,
    progress: &dyn Progress,
    layer: &Layer,
    partial: &mut PartialBlob,
    tee: &mut Tee,
) -> Result<(), PullError> {
    let blob = &layer.descriptor.digest;
    let size = layer.descriptor.size;
    for attempt in 1..=DOWNLOAD_ATTEMPTS {
        let offset = partial.len();
        progress.layer_started(blob, size, offset);
        if offset == size {
            break;
        }
        let on_bytes = |n| progress.layer_bytes(blob, n);
        match registry
            .download_blob(blob, size, partial, tee, &on_bytes)
            .await
        {
            Ok(start) => {
                if start != offset {
                    progress.layer_started(blob, size, start);
                }
                break;
            }
            Err(RegistryError::Request { url, source }) if attempt < DOWNLOAD_ATTEMPTS => {
                tracing::warn!(%url, error = %source, attempt, "layer download interrupted; resuming");
            }
            Err(e @ RegistryError::Range { .. }) if attempt < DOWNLOAD_ATTEMPTS => {
                tracing::warn!(error = %e, attempt, "layer download starts over");
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The record for an image whose layers are all in the store.
pub(crate) fn record_for(
    name: String,
    index: Option<Digest>,
    manifest_digest: &Digest,
    manifest: &ImageManifest,
    config: &ImageConfig,
) -> ImageRecord {
    let layers = manifest
        .layers
        .iter()
        .zip(&config.rootfs.diff_ids)
        .zip(config.chain_ids())
        .map(|((l, diff), chain)| LayerRecord {
            chain_id: chain.to_string(),
            diff_id: diff.to_string(),
            blob: l.descriptor.digest.to_string(),
            size: l.descriptor.size,
        })
        .collect();
    ImageRecord {
        name,
        index: index.map(|d| d.to_string()),
        manifest: manifest_digest.to_string(),
        config: manifest.config.digest.to_string(),
        layers,
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    }
}

/// Stores bytes already checked to have `digest` (a manifest).
pub(crate) fn store_bytes(store: &Store, digest: &Digest, bytes: &[u8]) -> Result<(), BlobError> {
    store_blob(store, digest, bytes.len() as u64, bytes)
}

pub(crate) fn store_blob(
    store: &Store,
    digest: &Digest,
    size: u64,
    bytes: &[u8],
) -> Result<(), BlobError> {
    if !store.blobs().contains(digest) {
        store.blobs().put(digest, size, bytes)?;
    }
    Ok(())
}

pub(crate) fn read_blob(store: &Store, digest: &Digest) -> Result<Vec<u8>, BlobError> {
    let path = store.blobs().path(digest);
    std::fs::read(&path).map_err(|source| BlobError::Io {
        digest: digest.clone(),
        path,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `chunks` (offset, bytes) through a tee into a [`Streamed`] reader whose
    /// partial file holds `prefix`; returns what the reader read and the tee's verdict.
    fn stream(prefix: &[u8], chunks: &[(u64, &[u8])], size: u64) -> (Vec<u8>, bool) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("partial");
        std::fs::write(&path, prefix).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let mut tee = Tee::new(tx, prefix.len() as u64);
        let mut reader = Streamed::open(&path, prefix.len() as u64, rx).unwrap();
        let reading = std::thread::spawn(move || {
            let mut got = Vec::new();
            reader.read_to_end(&mut got).map(|_| got)
        });
        rt.block_on(async {
            for (at, chunk) in chunks {
                tee.feed(*at, chunk).await;
            }
        });
        let whole = tee.close(size);
        (reading.join().unwrap().unwrap(), whole)
    }

    #[test]
    fn the_unpacker_reads_the_earlier_partial_then_the_download() {
        let (got, whole) = stream(b"abc", &[(3, b"def"), (6, b"gh")], 8);
        assert_eq!(got, b"abcdefgh");
        assert!(whole);
        // Short of the size: the unpacker's view is not the blob.
        let (_, whole) = stream(b"", &[(0, b"abc")], 8);
        assert!(!whole);
    }

    #[test]
    fn a_download_that_starts_over_breaks_the_stream() {
        // The registry ignored the range request: the blob comes again from byte 0.
        let (got, whole) = stream(b"abc", &[(0, b"abcdefgh")], 8);
        assert!(!whole);
        assert_eq!(
            got, b"abc",
            "nothing after the restart reaches the unpacker"
        );
    }

    #[test]
    fn a_partial_that_shrinks_while_read_is_an_error_not_a_short_stream() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("partial");
        std::fs::write(&path, b"ab").unwrap();
        let (_tx, rx) = tokio::sync::mpsc::channel(1);
        let mut reader = Streamed::open(&path, 5, rx).unwrap();
        let mut got = Vec::new();
        let err = reader.read_to_end(&mut got).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    }
}
