//! Content-addressed blobs: `<root>/blobs/sha256/<hex>`. A blob is streamed to a temporary
//! file while it is hashed and counted, checked against the digest and size it was
//! announced with, fsynced, and only then renamed into place, so a crash or a bad download
//! never leaves a blob under a name it does not match.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use ring::digest::{Context, SHA256};

use crate::reference::Digest;

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob {digest}: only sha256 blobs are stored")]
    Algorithm { digest: Digest },
    #[error("blob {digest}: {path}: {source}")]
    Io {
        digest: Digest,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("blob {digest}: got {got} bytes, expected {expected}")]
    Size {
        digest: Digest,
        got: u64,
        expected: u64,
    },
    #[error("blob {digest}: content hashes to sha256:{got}")]
    Mismatch { digest: Digest, got: String },
}

/// The blob directory of a store.
#[derive(Debug, Clone)]
pub struct Blobs {
    root: PathBuf,
}

impl Blobs {
    /// Blobs under `store_root/blobs/sha256`.
    pub fn new(store_root: &Path) -> Self {
        Self {
            root: store_root.join("blobs").join("sha256"),
        }
    }

    /// Where the blob lives (whether or not it is there).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.root.join(digest.hex())
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// Streams `content` into the store as `digest`; refuses it, leaving nothing behind,
    /// unless it has exactly `size` bytes and that digest. Storing a blob that is already
    /// there reads and checks the new copy all the same.
    pub fn put(
        &self,
        digest: &Digest,
        size: u64,
        content: impl Read,
    ) -> Result<PathBuf, BlobError> {
        if digest.algorithm() != "sha256" {
            return Err(BlobError::Algorithm {
                digest: digest.clone(),
            });
        }
        let io = |path: &Path| {
            let (digest, path) = (digest.clone(), path.to_owned());
            move |source| BlobError::Io {
                digest,
                path,
                source,
            }
        };
        std::fs::create_dir_all(&self.root).map_err(io(&self.root))?;
        let tmp = tempfile::NamedTempFile::with_prefix_in(".incoming-", &self.root)
            .map_err(io(&self.root))?;
        // One byte more than announced is enough to know the source is too long.
        let mut limited = content.take(size.saturating_add(1));
        let mut ctx = Context::new(&SHA256);
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0u64;
        let mut file: &File = tmp.as_file();
        loop {
            let n = limited.read(&mut buf).map_err(io(tmp.path()))?;
            if n == 0 {
                break;
            }
            ctx.update(&buf[..n]);
            file.write_all(&buf[..n]).map_err(io(tmp.path()))?;
            got += n as u64;
        }
        if got != size {
            return Err(BlobError::Size {
                digest: digest.clone(),
                got,
                expected: size,
            });
        }
        let hex: String = ctx
            .finish()
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if hex != digest.hex() {
            return Err(BlobError::Mismatch {
                digest: digest.clone(),
                got: hex,
            });
        }
        file.sync_all().map_err(io(tmp.path()))?;
        let dest = self.path(digest);
        tmp.persist(&dest).map_err(|e| io(&dest)(e.error))?;
        File::open(&self.root)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.root))?;
        Ok(dest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha256(data: &[u8]) -> Digest {
        let d = ring::digest::digest(&SHA256, data);
        let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256:{hex}").parse().unwrap()
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir.join("blobs/sha256"))
            .map(|rd| {
                rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn stores_a_blob_under_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::new(dir.path());
        let data = b"layer bytes".repeat(10_000);
        let d = sha256(&data);
        let path = blobs.put(&d, data.len() as u64, &data[..]).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);
        assert!(blobs.contains(&d));
        assert_eq!(leftovers(dir.path()), vec![d.hex().to_owned()]);
    }

    #[test]
    fn refuses_wrong_content_wrong_size_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::new(dir.path());
        let d = sha256(b"good");
        let err = blobs.put(&d, 4, &b"evil"[..]).unwrap_err();
        assert!(matches!(err, BlobError::Mismatch { .. }), "{err}");
        let err = blobs.put(&d, 4, &b"good and more"[..]).unwrap_err();
        assert!(matches!(err, BlobError::Size { got: 5, .. }), "{err}");
        let err = blobs.put(&d, 4, &b"goo"[..]).unwrap_err();
        assert!(matches!(err, BlobError::Size { got: 3, .. }), "{err}");
        assert!(!blobs.contains(&d));
        assert!(
            leftovers(dir.path()).is_empty(),
            "{:?}",
            leftovers(dir.path())
        );
    }

    #[test]
    fn refuses_digests_it_does_not_store() {
        let dir = tempfile::tempdir().unwrap();
        let d: Digest = format!("sha512:{}", "a".repeat(128)).parse().unwrap();
        let err = Blobs::new(dir.path()).put(&d, 0, &b""[..]).unwrap_err();
        assert!(matches!(err, BlobError::Algorithm { .. }), "{err}");
    }
}
