//! Pulling an image: resolve the reference to a linux/amd64 manifest, fetch and verify the
//! config, download the layers concurrently (resuming partial downloads with range
//! requests), unpack each into the store as soon as it is verified, and record the image
//! once everything it names is in place.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::blobs::{BlobError, PartialBlob};
use crate::manifest::{ImageConfig, ImageManifest, InvalidManifest, Layer, Manifest};
use crate::reference::{Digest, ImageRef};
use crate::registry::{Registry, RegistryError, RegistryOptions};
use crate::store::{ImageRecord, LayerOutcome, LayerRecord, Store, StoreError};

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

    let limit = Arc::new(Semaphore::new(opts.concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for ((layer, diff_id), chain_id) in manifest
        .layers
        .iter()
        .cloned()
        .zip(config.rootfs.diff_ids.iter().cloned())
        .zip(chain_ids.iter().cloned())
    {
        let (store, registry, progress, limit) = (
            store.clone(),
            registry.clone(),
            progress.clone(),
            limit.clone(),
        );
        tasks.spawn(async move {
            fetch_layer(
                &store, &registry, &*progress, &limit, &layer, &diff_id, &chain_id,
            )
            .await
        });
    }
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let result = joined
            .map_err(|e| PullError::Task(e.to_string()))
            .and_then(|r| r);
        // The other layers run to their end: an aborted task would leave its unpacking
        // thread running without the locks it took. What they finish stays for next time.
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    }
    if let Some(e) = first_error {
        return Err(e);
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

async fn fetch_layer(
    store: &Arc<Store>,
    registry: &Registry,
    progress: &dyn Progress,
    limit: &Semaphore,
    layer: &Layer,
    diff_id: &Digest,
    chain_id: &Digest,
) -> Result<(), PullError> {
    let blob = &layer.descriptor.digest;
    let task_err = |e: tokio::task::JoinError| PullError::Task(e.to_string());
    if store.has_layer(chain_id) {
        progress.layer_done(blob, LayerDone::AlreadyThere);
        return Ok(());
    }
    let (s, b) = (store.clone(), blob.clone());
    let _lock = tokio::task::spawn_blocking(move || s.blob_lock(&b))
        .await
        .map_err(task_err)??;
    // Another pull may have unpacked it while this one waited for the lock.
    if store.has_layer(chain_id) {
        progress.layer_done(blob, LayerDone::AlreadyThere);
        return Ok(());
    }
    let source = {
        // Only downloads count against the limit; unpacking overlaps the next download.
        let _permit = limit
            .acquire()
            .await
            .map_err(|e| PullError::Task(e.to_string()))?;
        let mut verified = None;
        for round in 0..2 {
            let (partial, resumed) = download(store, registry, progress, layer).await?;
            match partial.finish(layer.descriptor.size) {
                Ok(path) => {
                    verified = Some(path);
                    break;
                }
                // What an earlier run left was not a prefix of this blob (the partial is
                // gone now): fetch it whole, once.
                Err(e @ (BlobError::Mismatch { .. } | BlobError::Size { .. }))
                    if resumed && round == 0 =>
                {
                    tracing::warn!(error = %e, "resumed download did not verify; fetching it again");
                }
                Err(e) => return Err(e.into()),
            }
        }
        verified.ok_or_else(|| PullError::Task(format!("layer {blob} was not downloaded")))?
    };
    let (s, c, d, b, comp) = (
        store.clone(),
        chain_id.clone(),
        diff_id.clone(),
        blob.clone(),
        layer.compression,
    );
    let outcome = tokio::task::spawn_blocking(move || {
        let outcome = s.ensure_layer(&c, &d, &b, comp, &source);
        // Unpacked or refused, the compressed copy has served its purpose.
        s.blobs().remove_partial(&b);
        outcome
    })
    .await
    .map_err(task_err)??;
    progress.layer_done(
        blob,
        match outcome {
            LayerOutcome::Unpacked => LayerDone::Unpacked,
            LayerOutcome::AlreadyThere => LayerDone::AlreadyThere,
        },
    );
    Ok(())
}

/// Downloads a layer blob into its partial file, resuming what is there and retrying a
/// dropped connection; says whether it started from an earlier partial.
async fn download(
    store: &Store,
    registry: &Registry,
    progress: &dyn Progress,
    layer: &Layer,
) -> Result<(PartialBlob, bool), PullError> {
    let blob = &layer.descriptor.digest;
    let size = layer.descriptor.size;
    let mut partial = store.blobs().open_partial(blob)?;
    if partial.len() > size {
        // Longer than the blob: not a prefix of it. Start over.
        partial.restart().map_err(|source| RegistryError::Write {
            digest: blob.clone(),
            source,
        })?;
    }
    let resumed = !partial.is_empty();
    for attempt in 1..=DOWNLOAD_ATTEMPTS {
        let offset = partial.len();
        progress.layer_started(blob, size, offset);
        if offset == size {
            break;
        }
        let on_bytes = |n| progress.layer_bytes(blob, n);
        match registry
            .download_blob(blob, size, &mut partial, &on_bytes)
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
    Ok((partial, resumed))
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
