//! Content-addressed blobs: `<root>/blobs/sha256/<hex>`. A blob is streamed to a temporary
//! file while it is hashed and counted, checked against the digest and size it was
//! announced with, fsynced, and only then renamed into place, so a crash or a bad download
//! never leaves a blob under a name it does not match.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::reference::{Digest, Sha256};

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
        let mut ctx = Sha256::new();
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
        let got = ctx.finish();
        if got != *digest {
            return Err(BlobError::Mismatch {
                digest: digest.clone(),
                got: got.hex().to_owned(),
            });
        }
        file.sync_all().map_err(io(tmp.path()))?;
        let dest = self.path(digest);
        tmp.persist(&dest).map_err(|e| io(&dest)(e.error))?;
        self.sync_dir(digest)?;
        Ok(dest)
    }

    /// Where a download of `digest` keeps what it has so far. The name is stable so that a
    /// later pull, after a crash or a dropped connection, resumes with a range request.
    pub fn partial_path(&self, digest: &Digest) -> PathBuf {
        self.root.join(format!(".partial-{}", digest.hex()))
    }

    /// Opens (creating) the partial download of `digest` for appending. What it already
    /// holds is hashed, so the download carries on hashing as it writes and the blob is
    /// never read back just to be verified.
    pub fn open_partial(&self, digest: &Digest) -> Result<PartialBlob, BlobError> {
        let path = self.partial_path(digest);
        let err = |source| BlobError::Io {
            digest: digest.clone(),
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&self.root).map_err(err)?;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(err)?;
        let mut hasher = Sha256::new();
        let len = hash_into(&mut file, &mut hasher).map_err(err)?;
        Ok(PartialBlob {
            digest: digest.clone(),
            path,
            file,
            hasher,
            len,
        })
    }

    /// Deletes the partial download of `digest`, if any.
    pub fn remove_partial(&self, digest: &Digest) {
        let _ = std::fs::remove_file(self.partial_path(digest));
    }

    /// Removes a blob (for `rm`/`prune`); a blob that is already gone is not an error.
    pub fn remove(&self, digest: &Digest) -> Result<(), BlobError> {
        let path = self.path(digest);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(BlobError::Io {
                digest: digest.clone(),
                path,
                source,
            }),
        }
    }

    /// Every blob in the directory (not partial or incoming files).
    pub fn list(&self) -> std::io::Result<Vec<Digest>> {
        let mut out = Vec::new();
        let rd = match std::fs::read_dir(&self.root) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        for entry in rd {
            let name = entry?.file_name();
            if let Some(d) = name
                .to_str()
                .and_then(|n| format!("sha256:{n}").parse::<Digest>().ok())
            {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// Re-reads a stored blob and checks it still has its digest.
    pub fn verify(&self, digest: &Digest) -> Result<(), BlobError> {
        let (got, _) = hash_file(digest, &self.path(digest))?;
        if got != *digest {
            return Err(BlobError::Mismatch {
                digest: digest.clone(),
                got: got.hex().to_owned(),
            });
        }
        Ok(())
    }

    fn sync_dir(&self, digest: &Digest) -> Result<(), BlobError> {
        File::open(&self.root)
            .and_then(|d| d.sync_all())
            .map_err(|source| BlobError::Io {
                digest: digest.clone(),
                path: self.root.clone(),
                source,
            })
    }
}

/// A download in progress: `blobs/sha256/.partial-<hex>`, hashed as it is written.
///
/// Layer blobs are unpacked from here and then deleted: the store keeps layers unpacked,
/// not compressed (as Docker's overlay2 store does), which halves the disk a host needs and
/// saves writing and syncing every layer twice.
#[derive(Debug)]
pub struct PartialBlob {
    digest: Digest,
    path: PathBuf,
    file: File,
    hasher: Sha256,
    len: u64,
}

impl PartialBlob {
    /// Bytes held so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn write_chunk(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        self.file.write_all(chunk)?;
        self.hasher.update(chunk);
        self.len += chunk.len() as u64;
        Ok(())
    }

    /// Forgets what is held and starts again from byte 0.
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.hasher = Sha256::new();
        self.len = 0;
        Ok(())
    }

    /// Checks the whole download against `size` and the digest and returns its path. One
    /// that does not match is deleted, so the next try starts over.
    pub fn finish(self, size: u64) -> Result<PathBuf, BlobError> {
        let got = self.hasher.finish();
        let error = if self.len != size {
            Some(BlobError::Size {
                digest: self.digest.clone(),
                got: self.len,
                expected: size,
            })
        } else if got != self.digest {
            Some(BlobError::Mismatch {
                digest: self.digest.clone(),
                got: got.hex().to_owned(),
            })
        } else {
            None
        };
        match error {
            None => Ok(self.path),
            Some(e) => {
                let _ = std::fs::remove_file(&self.path);
                Err(e)
            }
        }
    }
}

fn hash_into(reader: &mut impl Read, hasher: &mut Sha256) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut len = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(len);
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
}

/// A reader that hashes and counts what passes through it, so that a blob is checked in
/// the same read that uses it (no check of a file followed by a second open that could
/// see other content).
#[derive(Debug)]
pub struct Verifying<R> {
    inner: R,
    digest: Digest,
    size: u64,
    hasher: Sha256,
    len: u64,
}

impl<R: Read> Verifying<R> {
    pub fn new(inner: R, digest: &Digest, size: u64) -> Self {
        Self {
            inner,
            digest: digest.clone(),
            size,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    /// Reads what the consumer left and checks the whole against the size and digest.
    /// `path` names the source in an error.
    pub fn finish(mut self, path: &Path) -> Result<(), BlobError> {
        let io = |source| BlobError::Io {
            digest: self.digest.clone(),
            path: path.to_owned(),
            source,
        };
        let rest = hash_into(
            &mut (&mut self.inner).take(self.size.saturating_sub(self.len) + 1),
            &mut self.hasher,
        )
        .map_err(io)?;
        let len = self.len + rest;
        if len != self.size {
            return Err(BlobError::Size {
                digest: self.digest,
                got: len,
                expected: self.size,
            });
        }
        let got = self.hasher.finish();
        if got != self.digest {
            return Err(BlobError::Mismatch {
                digest: self.digest,
                got: got.hex().to_owned(),
            });
        }
        Ok(())
    }
}

impl<R: Read> Read for Verifying<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

/// The sha256 and length of a file (errors name `digest`, what it should be).
fn hash_file(digest: &Digest, path: &Path) -> Result<(Digest, u64), BlobError> {
    let io = |source| BlobError::Io {
        digest: digest.clone(),
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(io)?;
    let mut ctx = Sha256::new();
    let len = hash_into(&mut file, &mut ctx).map_err(io)?;
    Ok((ctx.finish(), len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha256(data: &[u8]) -> Digest {
        Digest::sha256_of(data)
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
    fn a_verifying_reader_checks_what_its_consumer_read_and_what_it_left() {
        let data = b"layer bytes".repeat(50_000);
        let d = sha256(&data);
        let path = Path::new("layer.tar");
        // The consumer reads part of it; finish reads the rest and checks the whole.
        let mut r = Verifying::new(&data[..], &d, data.len() as u64);
        let mut head = vec![0; 1000];
        r.read_exact(&mut head).unwrap();
        r.finish(path).unwrap();

        let mut evil = data.clone();
        evil[400_000] ^= 1;
        let err = Verifying::new(&evil[..], &d, data.len() as u64)
            .finish(path)
            .unwrap_err();
        assert!(matches!(err, BlobError::Mismatch { .. }), "{err}");
        assert!(err.to_string().contains(&d.to_string()), "{err}");
        let err = Verifying::new(&data[..10], &d, data.len() as u64)
            .finish(path)
            .unwrap_err();
        assert!(matches!(err, BlobError::Size { got: 10, .. }), "{err}");
        let longer = [&data[..], b"x"].concat();
        let err = Verifying::new(&longer[..], &d, data.len() as u64)
            .finish(path)
            .unwrap_err();
        let expected = data.len() as u64 + 1;
        assert!(
            matches!(err, BlobError::Size { got, .. } if got == expected),
            "{err}"
        );
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
    fn a_partial_download_is_resumed_then_checked_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::new(dir.path());
        let data = b"0123456789".repeat(1000);
        let d = sha256(&data);
        let mut p = blobs.open_partial(&d).unwrap();
        assert_eq!(p.len(), 0);
        p.write_chunk(&data[..4000]).unwrap();
        drop(p);
        // A later pull picks up where this one stopped, hash included.
        let mut p = blobs.open_partial(&d).unwrap();
        assert_eq!(p.len(), 4000);
        p.write_chunk(&data[4000..]).unwrap();
        let path = p.finish(data.len() as u64).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);
        blobs.remove_partial(&d);
        assert!(!path.exists());
        // A partial with the wrong bytes is refused and deleted; so is a short one.
        let other = sha256(b"other");
        let mut p = blobs.open_partial(&other).unwrap();
        p.write_chunk(b"otheR").unwrap();
        let err = p.finish(5).unwrap_err();
        assert!(matches!(err, BlobError::Mismatch { .. }), "{err}");
        assert!(!blobs.partial_path(&other).exists());
        let mut p = blobs.open_partial(&other).unwrap();
        p.write_chunk(b"oth").unwrap();
        let err = p.finish(5).unwrap_err();
        assert!(matches!(err, BlobError::Size { got: 3, .. }), "{err}");
        // Restarting forgets the bytes and the hash.
        let mut p = blobs.open_partial(&other).unwrap();
        p.write_chunk(b"garbage").unwrap();
        p.restart().unwrap();
        p.write_chunk(b"other").unwrap();
        p.finish(5).unwrap();
    }

    #[test]
    fn refuses_digests_it_does_not_store() {
        let dir = tempfile::tempdir().unwrap();
        let d: Digest = format!("sha512:{}", "a".repeat(128)).parse().unwrap();
        let err = Blobs::new(dir.path()).put(&d, 0, &b""[..]).unwrap_err();
        assert!(matches!(err, BlobError::Algorithm { .. }), "{err}");
    }
}
