//! Importing images without a registry: an OCI image layout (a directory, or a tar of one)
//! and a `docker save` archive (legacy layout or the OCI-based one of Docker 25+, plain or
//! gzip-compressed). Every blob is checked against its digest and size as it enters the
//! store, and every layer against the config's `diff_ids` as it is unpacked, exactly as a
//! pull does.
//!
//! A tar is first staged into the store's `tmp/` with its own path checks: only regular
//! files, directories and symlinks (legacy `docker save` links identical layers) with
//! plain relative names, and symlinks that stay inside the archive.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::blobs::Verifying;
use crate::layer::archive::{Archive, Kind};
use crate::layer::LayerError;
use crate::manifest::{self, Descriptor, ImageConfig, InvalidManifest, Manifest};
use crate::pull::{record_for, store_bytes};
use crate::reference::{Digest, ImageRef, Sha256};
use crate::store::{ImageRecord, Store, StoreError};
use crate::BlobError;

const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";
/// Largest JSON document (index, manifest, config) read from an archive.
pub(crate) const MAX_JSON: u64 = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error(transparent)]
    Manifest(#[from] InvalidManifest),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// The archive's tar stream, walked as a pulled layer's is (extension headers capped).
    #[error("{path}: {source}")]
    Archive {
        path: PathBuf,
        source: crate::layer::LayerError,
    },
}

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ImportError + '_ {
    move |source| ImportError::Io {
        path: path.to_owned(),
        source,
    }
}

pub(crate) fn walk_err(path: &Path) -> impl FnOnce(LayerError) -> ImportError + '_ {
    move |source| ImportError::Archive {
        path: path.to_owned(),
        source,
    }
}

/// The archive's tar stream (plain or gzip), for the layer walker, which caps PAX and GNU
/// long-name payloads before reading them.
pub(crate) fn open_archive(archive: &Path) -> Result<Archive<Box<dyn Read>>, ImportError> {
    let mut file = File::open(archive).map_err(io(archive))?;
    let mut magic = [0u8; 2];
    let n = file.read(&mut magic).map_err(io(archive))?;
    let file = File::open(archive).map_err(io(archive))?;
    let reader: Box<dyn Read> = if n == 2 && magic == [0x1f, 0x8b] {
        Box::new(flate2::read::GzDecoder::new(BufReader::new(file)))
    } else {
        Box::new(BufReader::new(file))
    };
    Ok(Archive::new(reader))
}

pub(crate) fn format_err(path: &Path, reason: impl Into<String>) -> ImportError {
    ImportError::Format {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// Imports the image(s) in `source`. `name` names the image when the archive does not, or
/// replaces the name it gives.
pub fn import(
    store: &Store,
    source: &Path,
    name: Option<&ImageRef>,
) -> Result<Vec<ImageRecord>, ImportError> {
    let _guard = store.pull_guard()?;
    let meta = std::fs::metadata(source).map_err(io(source))?;
    if meta.is_dir() {
        return import_dir(store, source, source, name);
    }
    let staging = store.tmp_dir("import")?;
    let result =
        stage_tar(source, &staging).and_then(|()| import_dir(store, &staging, source, name));
    let _ = std::fs::remove_dir_all(&staging);
    result
}

fn import_dir(
    store: &Store,
    dir: &Path,
    shown: &Path,
    name: Option<&ImageRef>,
) -> Result<Vec<ImageRecord>, ImportError> {
    // Docker 25+ writes both; the OCI layout names every blob by digest, so it wins.
    if dir.join("oci-layout").is_file() {
        oci_layout(store, dir, shown, name).map(|r| vec![r])
    } else if dir.join("manifest.json").is_file() {
        docker_save(store, dir, shown, name)
    } else {
        Err(format_err(
            shown,
            "neither an OCI image layout (no oci-layout) nor a docker save archive (no manifest.json)",
        ))
    }
}

/// The name an OCI layout's index entry gives its image: containerd's full name, else a
/// `ref.name` that is a whole reference (a bare tag like `1` names no repository).
pub(crate) fn oci_name(d: &Descriptor) -> Option<ImageRef> {
    d.annotations
        .get(ANNOTATION_CONTAINERD_NAME)
        .or_else(|| d.annotations.get(ANNOTATION_REF_NAME))
        .filter(|n| n.contains('/') || n.contains(':'))
        .and_then(|n| n.parse::<ImageRef>().ok())
}

fn read_json_file(path: &Path) -> Result<Vec<u8>, ImportError> {
    let file = File::open(path).map_err(io(path))?;
    let mut bytes = Vec::new();
    file.take(MAX_JSON + 1)
        .read_to_end(&mut bytes)
        .map_err(io(path))?;
    if bytes.len() as u64 > MAX_JSON {
        return Err(format_err(path, format!("larger than {MAX_JSON} bytes")));
    }
    Ok(bytes)
}

fn blob_path(layout: &Path, digest: &Digest) -> PathBuf {
    layout
        .join("blobs")
        .join(digest.algorithm())
        .join(digest.hex())
}

/// Reads a JSON blob of an OCI layout, checked against its descriptor.
fn layout_json(store: &Store, layout: &Path, d: &Descriptor) -> Result<Vec<u8>, ImportError> {
    let path = blob_path(layout, &d.digest);
    let bytes = read_json_file(&path)?;
    store.blobs().put(&d.digest, d.size, &bytes[..])?;
    Ok(bytes)
}

fn oci_layout(
    store: &Store,
    dir: &Path,
    shown: &Path,
    name: Option<&ImageRef>,
) -> Result<ImageRecord, ImportError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct LayoutFile {
        image_layout_version: String,
    }
    let layout_path = dir.join("oci-layout");
    let layout: LayoutFile = serde_json::from_slice(&read_json_file(&layout_path)?)
        .map_err(|e| format_err(&layout_path, e.to_string()))?;
    if layout.image_layout_version != "1.0.0" {
        return Err(format_err(
            &layout_path,
            format!(
                "imageLayoutVersion {:?} is not 1.0.0",
                layout.image_layout_version
            ),
        ));
    }
    let index_path = dir.join("index.json");
    let index_bytes = read_json_file(&index_path)?;
    let shown_index = format!("{}/index.json", shown.display());
    let Manifest::Index(index) =
        Manifest::parse(&index_bytes, Some(manifest::OCI_INDEX), &shown_index)?
    else {
        return Err(format_err(&index_path, "is not an image index"));
    };
    // With one entry, take it; with several, the one whose ref name matches the name
    // asked for, else the linux/amd64 one.
    let wanted_tag = name.and_then(|n| n.tag());
    let chosen = match index.manifests.as_slice() {
        [only] => only,
        many => many
            .iter()
            .find(|d| {
                wanted_tag.is_some()
                    && d.annotations.get(ANNOTATION_REF_NAME).map(String::as_str) == wanted_tag
            })
            .map_or_else(|| index.select(&shown_index), Ok)?,
    };
    let image_name = match name {
        Some(n) => n.to_string(),
        None => oci_name(chosen)
            .map(|r| r.to_string())
            .ok_or_else(|| format_err(&index_path, "names no image (no org.opencontainers.image.ref.name with a repository); give one with --name"))?,
    };
    let mut descriptor = chosen.clone();
    let mut from_index = None;
    let manifest = loop {
        let bytes = layout_json(store, dir, &descriptor)?;
        match Manifest::parse(
            &bytes,
            Some(&descriptor.media_type),
            &descriptor.digest.to_string(),
        )? {
            Manifest::Image(m) => break m,
            Manifest::Index(inner) if from_index.is_none() => {
                from_index = Some(descriptor.digest.clone());
                descriptor = inner.select(&descriptor.digest.to_string())?.clone();
            }
            Manifest::Index(_) => {
                return Err(format_err(
                    &index_path,
                    "an index inside an index inside the layout",
                ))
            }
        }
    };
    let config_bytes = layout_json(store, dir, &manifest.config)?;
    let config = ImageConfig::parse(
        &config_bytes,
        &manifest.config.digest,
        manifest.layers.len(),
    )?;
    let mut sources = Vec::new();
    for layer in &manifest.layers {
        let d = &layer.descriptor;
        let path = blob_path(dir, &d.digest);
        sources.push(path);
    }
    install(
        store,
        image_name,
        from_index,
        &descriptor.digest,
        &manifest,
        &config,
        &sources,
    )
}

/// Unpacks the layers of a manifest from `sources` (layer blobs, in order, each checked
/// against its descriptor in the same read that unpacks it), commits them with one sync,
/// then records the image.
fn install(
    store: &Store,
    name: String,
    index: Option<Digest>,
    manifest_digest: &Digest,
    manifest: &manifest::ImageManifest,
    config: &ImageConfig,
    sources: &[PathBuf],
) -> Result<ImageRecord, ImportError> {
    let chains = config.chain_ids();
    let _locks = store.lock_layers(&chains)?;
    let mut staged = Vec::new();
    for (((layer, diff), chain), source) in manifest
        .layers
        .iter()
        .zip(&config.rootfs.diff_ids)
        .zip(&chains)
        .zip(sources)
    {
        if store.has_layer(chain) {
            continue;
        }
        let d = &layer.descriptor;
        let file = File::open(source).map_err(io(source))?;
        let mut reader = Verifying::new(
            BufReader::with_capacity(256 * 1024, file),
            &d.digest,
            d.size,
        );
        let unpacked = store.stage_layer(chain, diff, &d.digest, layer.compression, &mut reader);
        // A blob that is not what the manifest says is the error, whatever the unpacker
        // made of it.
        reader.finish(source)?;
        staged.push(unpacked?);
    }
    store.commit_layers(staged)?;
    let record = record_for(name, index, manifest_digest, manifest, config);
    store.put_image(record.clone())?;
    Ok(record)
}

/// One image of a `docker save` archive's `manifest.json`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct SaveEntry {
    config: String,
    #[serde(default)]
    pub(crate) repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// A manifest made for an image that came without one (legacy `docker save`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MadeManifest<'a> {
    schema_version: u32,
    media_type: &'a str,
    config: MadeDescriptor<'a>,
    layers: Vec<MadeDescriptor<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MadeDescriptor<'a> {
    media_type: &'a str,
    digest: String,
    size: u64,
}

fn docker_save(
    store: &Store,
    dir: &Path,
    shown: &Path,
    name: Option<&ImageRef>,
) -> Result<Vec<ImageRecord>, ImportError> {
    let manifest_path = dir.join("manifest.json");
    let entries: Vec<SaveEntry> = serde_json::from_slice(&read_json_file(&manifest_path)?)
        .map_err(|e| format_err(&manifest_path, e.to_string()))?;
    if entries.is_empty() {
        return Err(format_err(&manifest_path, "lists no images"));
    }
    let mut records = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let member = |rel: &str| -> Result<PathBuf, ImportError> {
            let rel_path = Path::new(rel);
            if !rel_path
                .components()
                .all(|c| matches!(c, Component::Normal(_)))
            {
                return Err(format_err(
                    &manifest_path,
                    format!("entry {i} names {rel:?}, which is not a plain relative path"),
                ));
            }
            Ok(dir.join(rel_path))
        };
        let config_path = member(&entry.config)?;
        let config_bytes = read_json_file(&config_path)?;
        let config_digest = Digest::sha256_of(&config_bytes);
        check_member_name(&entry.config, &config_digest, &manifest_path)?;
        store
            .blobs()
            .put(&config_digest, config_bytes.len() as u64, &config_bytes[..])?;
        let config = ImageConfig::parse(&config_bytes, &config_digest, entry.layers.len())?;
        let mut layers = Vec::new();
        let mut sources = Vec::new();
        for rel in &entry.layers {
            let path = member(rel)?;
            let (digest, size, media_type) = hash_layer_file(&path)?;
            check_member_name(rel, &digest, &manifest_path)?;
            sources.push(path);
            layers.push(MadeDescriptor {
                media_type,
                digest: digest.to_string(),
                size,
            });
        }
        let made = MadeManifest {
            schema_version: 2,
            media_type: manifest::OCI_MANIFEST,
            config: MadeDescriptor {
                media_type: "application/vnd.oci.image.config.v1+json",
                digest: config_digest.to_string(),
                size: config_bytes.len() as u64,
            },
            layers,
        };
        let bytes =
            serde_json::to_vec(&made).map_err(|e| format_err(&manifest_path, e.to_string()))?;
        let manifest_digest = Digest::sha256_of(&bytes);
        let Manifest::Image(m) = Manifest::parse(&bytes, None, &manifest_digest.to_string())?
        else {
            return Err(format_err(
                &manifest_path,
                "made manifest is not an image manifest",
            ));
        };
        store_bytes(store, &manifest_digest, &bytes)?;
        let mut names: Vec<String> = match (name, i) {
            (Some(n), 0) => vec![n.to_string()],
            _ => entry
                .repo_tags
                .iter()
                .flatten()
                .map(|t| {
                    t.parse::<ImageRef>()
                        .map(|r| r.to_string())
                        .map_err(|e| format_err(&manifest_path, e.to_string()))
                })
                .collect::<Result<_, _>>()?,
        };
        if names.is_empty() {
            return Err(format_err(
                shown,
                format!("image {i} has no RepoTags; give it a name with --name"),
            ));
        }
        names.dedup();
        for n in names {
            records.push(install(
                store,
                n,
                None,
                &manifest_digest,
                &m,
                &config,
                &sources,
            )?);
        }
    }
    Ok(records)
}

/// A member named for its digest (`<hex>.json`, `blobs/sha256/<hex>`) must have it. The
/// legacy layer directories are named by v1 layer IDs, not digests: those are checked by
/// their diff IDs when unpacked.
fn check_member_name(rel: &str, got: &Digest, manifest: &Path) -> Result<(), ImportError> {
    let named = rel
        .strip_prefix("blobs/sha256/")
        .or_else(|| rel.strip_suffix(".json"))
        .filter(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
    match named {
        Some(hex) if hex != got.hex() => Err(format_err(
            manifest,
            format!("member {rel:?} holds content with digest {got}, not the one its name gives"),
        )),
        _ => Ok(()),
    }
}

/// Hashes a layer file and says how it is compressed, from its first bytes.
fn hash_layer_file(path: &Path) -> Result<(Digest, u64, &'static str), ImportError> {
    let mut file = File::open(path).map_err(io(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    let mut magic = Vec::with_capacity(4);
    loop {
        let n = file.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        if magic.len() < 4 {
            let take = (4 - magic.len()).min(n);
            magic.extend_from_slice(&buf[..take]);
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    let media_type = if magic.starts_with(&[0x1f, 0x8b]) {
        "application/vnd.oci.image.layer.v1.tar+gzip"
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        "application/vnd.oci.image.layer.v1.tar+zstd"
    } else {
        "application/vnd.oci.image.layer.v1.tar"
    };
    Ok((h.finish(), size, media_type))
}

/// Stages the members of an archive (plain or gzip tar) in `dest`.
fn stage_tar(archive: &Path, dest: &Path) -> Result<(), ImportError> {
    let mut tar = open_archive(archive)?;
    let mut links: BTreeMap<PathBuf, PathBuf> = BTreeMap::new();
    while let Some(member) = tar.next_member().map_err(walk_err(archive))? {
        let raw = PathBuf::from(OsStr::from_bytes(&member.name));
        let mut rel = PathBuf::new();
        for c in raw.components() {
            match c {
                Component::Normal(p) => rel.push(p),
                Component::CurDir => {}
                _ => {
                    return Err(format_err(
                        archive,
                        format!("member {:?} is not a plain relative path", raw),
                    ))
                }
            }
        }
        if rel.as_os_str().is_empty() {
            continue;
        }
        let out = dest.join(&rel);
        match &member.kind {
            Kind::Dir => std::fs::create_dir_all(&out).map_err(io(&out))?,
            Kind::File => {
                if let Some(parent) = out.parent() {
                    std::fs::create_dir_all(parent).map_err(io(parent))?;
                }
                // create_new: a second member of the same name, or a name that is now a
                // symlink, is refused rather than written through.
                let mut f = File::options()
                    .write(true)
                    .create_new(true)
                    .open(&out)
                    .map_err(io(&out))?;
                tar.copy_data(&mut f).map_err(walk_err(archive))?;
            }
            Kind::Symlink(target) => {
                let target = Path::new(OsStr::from_bytes(target));
                let base = rel.parent().unwrap_or(Path::new(""));
                let resolved = normalize(&base.join(target)).ok_or_else(|| {
                    format_err(
                        archive,
                        format!("symlink {rel:?} points outside the archive ({target:?})"),
                    )
                })?;
                links.insert(rel, resolved);
            }
            other => {
                return Err(format_err(
                    archive,
                    format!("member {rel:?} has type {other:?}, not a file, directory or symlink"),
                ))
            }
        }
    }
    // Members that were symlinks become hard links to what they point at (within the
    // staging directory). Chains are followed a bounded number of times.
    for (link, target) in &links {
        let mut t = target.clone();
        for _ in 0..8 {
            match links.get(&t) {
                Some(next) => t = next.clone(),
                None => break,
            }
        }
        let (from, to) = (dest.join(&t), dest.join(link));
        if !std::fs::symlink_metadata(&from).is_ok_and(|m| m.is_file()) {
            return Err(format_err(
                archive,
                format!("symlink {link:?} points at {t:?}, which is not a file in the archive"),
            ));
        }
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::hard_link(&from, &to).map_err(io(&to))?;
    }
    Ok(())
}

/// Resolves `.` and `..` lexically; `None` if the path climbs above its start.
fn normalize(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_named_for_a_digest_must_have_it() {
        let d = Digest::sha256_of(b"config");
        let m = Path::new("manifest.json");
        check_member_name(&format!("{}.json", d.hex()), &d, m).unwrap();
        check_member_name(&format!("blobs/sha256/{}", d.hex()), &d, m).unwrap();
        check_member_name("3f1a/layer.tar", &d, m).unwrap();
        let other = Digest::sha256_of(b"other");
        let err = check_member_name(&format!("{}.json", other.hex()), &d, m).unwrap_err();
        assert!(err.to_string().contains(&d.to_string()), "{err}");
        let err = check_member_name(&format!("blobs/sha256/{}", other.hex()), &d, m).unwrap_err();
        assert!(
            err.to_string().contains("not the one its name gives"),
            "{err}"
        );
    }

    #[test]
    fn normalize_keeps_paths_inside() {
        assert_eq!(
            normalize(Path::new("a/../b/./c")),
            Some(PathBuf::from("b/c"))
        );
        assert_eq!(normalize(Path::new("a/../../b")), None);
        assert_eq!(normalize(Path::new("/etc/passwd")), None);
    }

    #[test]
    fn staging_refuses_members_that_climb_out() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("a.tar");
        {
            let mut b = tar::Builder::new(File::create(&archive).unwrap());
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            h.set_path("x/layer.tar").unwrap();
            h.set_link_name("../../outside").unwrap();
            h.set_cksum();
            b.append(&h, std::io::empty()).unwrap();
            b.finish().unwrap();
        }
        let stage = dir.path().join("stage");
        std::fs::create_dir(&stage).unwrap();
        let err = stage_tar(&archive, &stage).unwrap_err();
        assert!(
            err.to_string().contains("points outside the archive"),
            "{err}"
        );
    }

    #[test]
    fn staging_refuses_a_huge_gnu_long_name_at_the_extension_limit() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("huge.tar");
        crate::archives::tests::huge_long_name(&archive);
        let stage = dir.path().join("stage");
        std::fs::create_dir(&stage).unwrap();
        let err = stage_tar(&archive, &stage).unwrap_err().to_string();
        assert!(err.contains("huge.tar"), "{err}");
        assert!(err.contains("8589934592 bytes is over the"), "{err}");
    }
}
