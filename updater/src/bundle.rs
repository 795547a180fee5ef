//! The update bundle: one file holding a signed manifest and the payloads it describes.
//!
//! ```text
//! 0       "GANTRYBN"               magic
//! 8       u32 LE                   format (1)
//! 12      u32 LE                   manifest length M (at most 64 KiB)
//! 16      u32 LE                   signature block length S (at most 16 KiB)
//! 20      u32 LE                   reserved, 0
//! 24      M bytes                  manifest, JSON
//! 24+M    S bytes                  signature block, JSON (see `keys`)
//!         zeros                    to the next 4 KiB boundary: the payload base
//! base+o  kernel, cmdline, root    at the offsets the manifest gives, 4 KiB aligned,
//!                                  zeros between; the file ends with the root payload
//! ```
//!
//! The signature covers the manifest's exact bytes. The manifest holds every payload's
//! offset, size and SHA-256 and the root's dm-verity parameters, so a verified manifest
//! pins every byte that matters. [`Bundle::open`] checks the header, the file length and
//! the signature **before** the manifest is even parsed; [`Bundle::verify_payloads`] then
//! hashes every payload and the zero padding. Nothing is written anywhere until both pass.
//!
//! The command-line payload holds the image's own kernel arguments (`console=`, `panic=`,
//! …). The slot-specific ones (root through dm-verity, `gantry.slot=`) are added by the
//! installer from the signed verity parameters ([`crate::verity::Verity::slot_args`]), so
//! one bundle installs into either slot. A command line without `panic=N` (N > 0) is
//! refused: a kernel panic must reboot so that the boot counter can fall back.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use ring::digest::{Context, SHA256};
use serde::{Deserialize, Serialize};

use crate::keys::{Domain, KeyId, SignatureBlock, SignatureError, TrustedKeys};
use crate::verity::{slot_owned, Verity};

mod write;
pub use write::{hash_file, write, BundleMeta};

pub const MAGIC: &[u8; 8] = b"GANTRYBN";
pub const FORMAT: u32 = 1;
const HEADER_LEN: u64 = 24;
const ALIGN: u64 = 4096;
const MAX_MANIFEST: u32 = 64 << 10;
const MAX_SIGNATURES: u32 = 16 << 10;
const MAX_KERNEL: u64 = 256 << 20;
const MAX_CMDLINE: u64 = 4096;
const MAX_ROOT: u64 = 16 << 30;
/// The payloads' end, from the payload base, at most: each at its cap, aligned.
const MAX_PAYLOAD_SPAN: u64 = MAX_KERNEL + MAX_CMDLINE + MAX_ROOT + 3 * ALIGN;

/// The architecture this build installs for.
pub const ARCH: &str = std::env::consts::ARCH;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("bundle {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("bundle {path}: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("bundle {path}: manifest signature: {source}")]
    Signature {
        path: PathBuf,
        source: SignatureError,
    },
    #[error("bundle {path}: manifest: {reason}")]
    Manifest { path: PathBuf, reason: String },
    #[error("bundle {path}: payload {payload}: {reason}")]
    Payload {
        path: PathBuf,
        payload: Payload,
        reason: String,
    },
}

/// The payloads, in file order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    Kernel,
    Cmdline,
    Root,
}

impl Payload {
    pub const ALL: [Payload; 3] = [Payload::Kernel, Payload::Cmdline, Payload::Root];

    fn max_size(self) -> u64 {
        match self {
            Payload::Kernel => MAX_KERNEL,
            Payload::Cmdline => MAX_CMDLINE,
            Payload::Root => MAX_ROOT,
        }
    }
}

impl std::fmt::Display for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Payload::Kernel => "kernel",
            Payload::Cmdline => "cmdline",
            Payload::Root => "root",
        })
    }
}

/// The signed description of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    /// The OS version the bundle installs (`0.2.0`).
    pub os_version: String,
    /// Grows with every release; a machine refuses a bundle lower than what it runs.
    pub rollback_index: u64,
    /// `x86_64`.
    pub arch: String,
    /// The kind of machine the image is for (`generic`).
    pub board: String,
    pub payloads: Payloads,
    pub verity: Verity,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payloads {
    pub kernel: PayloadInfo,
    pub cmdline: PayloadInfo,
    pub root: PayloadInfo,
}

/// Where a payload is, relative to the payload base, and what it hashes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayloadInfo {
    pub offset: u64,
    pub size: u64,
    pub sha256: String,
}

impl Manifest {
    pub fn payload(&self, which: Payload) -> &PayloadInfo {
        match which {
            Payload::Kernel => &self.payloads.kernel,
            Payload::Cmdline => &self.payloads.cmdline,
            Payload::Root => &self.payloads.root,
        }
    }

    /// Bytes from the payload base to the end of the last payload.
    pub fn payload_span(&self) -> u64 {
        let root = &self.payloads.root;
        root.offset + root.size
    }

    /// Everything that can be checked without the payloads; `Err` holds the reason.
    pub fn check(&self) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!("format {} is not {FORMAT}", self.format));
        }
        let word = |name: &str, value: &str| {
            if value.is_empty()
                || value.len() > 64
                || !value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
            {
                Err(format!(
                    "{name} {value:?} is not 1 to 64 of [A-Za-z0-9._+-]"
                ))
            } else {
                Ok(())
            }
        };
        word("os_version", &self.os_version)?;
        word("arch", &self.arch)?;
        word("board", &self.board)?;
        let mut end = 0;
        for which in Payload::ALL {
            let p = self.payload(which);
            if !p.offset.is_multiple_of(ALIGN) || p.offset < end {
                return Err(format!(
                    "payload {which} at offset {} is not 4 KiB aligned after the previous one \
                     (ends at {end})",
                    p.offset
                ));
            }
            if p.size == 0 || p.size > which.max_size() {
                return Err(format!(
                    "payload {which} is {} bytes; it must be 1 to {}",
                    p.size,
                    which.max_size()
                ));
            }
            if !crate::hex::is_sha256(&p.sha256) {
                return Err(format!(
                    "payload {which} sha256 {:?} is not 64 lower-case hex digits",
                    p.sha256
                ));
            }
            // Within the largest bundle the format can hold: so no sum of offsets, sizes
            // and the header (the payload span, the file length) can overflow.
            end = p
                .offset
                .checked_add(p.size)
                .filter(|e| *e <= MAX_PAYLOAD_SPAN)
                .ok_or_else(|| {
                    format!(
                        "payload {which} at offset {} ends past the {MAX_PAYLOAD_SPAN} bytes a                          bundle may hold",
                        p.offset
                    )
                })?;
        }
        self.verity
            .check()
            .map_err(|reason| format!("verity: {reason}"))?;
        if self.verity.total_bytes != self.payloads.root.size {
            return Err(format!(
                "verity covers {} bytes but the root payload is {}",
                self.verity.total_bytes, self.payloads.root.size
            ));
        }
        Ok(())
    }
}

/// A bundle whose header, length and manifest signature have been checked.
#[derive(Debug)]
pub struct Bundle {
    path: PathBuf,
    file: File,
    manifest: Manifest,
    signed_by: Vec<KeyId>,
    base: u64,
    payloads_verified: bool,
}

impl Bundle {
    /// Opens `path` and checks everything but the payloads' contents.
    pub fn open(path: &Path, keys: &TrustedKeys) -> Result<Bundle, BundleError> {
        let format_err = |reason: String| BundleError::Format {
            path: path.to_owned(),
            reason,
        };
        let Head {
            file,
            file_len,
            manifest_len,
            sig_len,
            manifest_bytes,
            block,
        } = Head::read(path)?;
        // The signature first: the manifest is parsed only once it is known to be ours.
        let signed_by = keys
            .verify(Domain::BundleManifest, &manifest_bytes, &block)
            .map_err(|source| BundleError::Signature {
                path: path.to_owned(),
                source,
            })?;
        let manifest_err = |reason: String| BundleError::Manifest {
            path: path.to_owned(),
            reason,
        };
        let manifest: Manifest =
            serde_json::from_slice(&manifest_bytes).map_err(|e| manifest_err(e.to_string()))?;
        manifest.check().map_err(manifest_err)?;
        let base =
            (HEADER_LEN + u64::from(manifest_len) + u64::from(sig_len)).next_multiple_of(ALIGN);
        let want_len = base + manifest.payload_span();
        if file_len != want_len {
            return Err(format_err(format!(
                "file is {file_len} bytes; the manifest says {want_len} (truncated or extended)"
            )));
        }
        let mut bundle = Bundle {
            path: path.to_owned(),
            file,
            manifest,
            signed_by,
            base,
            payloads_verified: false,
        };
        let pad_start = HEADER_LEN + u64::from(manifest_len) + u64::from(sig_len);
        bundle.check_zeros(pad_start, base)?;
        Ok(bundle)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn signed_by(&self) -> &[KeyId] {
        &self.signed_by
    }

    /// Hashes every payload and checks the padding between them.
    pub fn verify_payloads(&mut self) -> Result<(), BundleError> {
        let mut end = 0;
        for which in Payload::ALL {
            let info = self.manifest.payload(which).clone();
            self.check_zeros(self.base + end, self.base + info.offset)?;
            let mut reader = self.payload(which)?;
            let digest = reader.drain()?;
            if digest != info.sha256 {
                return Err(self.payload_err(
                    which,
                    format!("sha256 is {digest}, the manifest says {}", info.sha256),
                ));
            }
            end = info.offset + info.size;
        }
        self.payloads_verified = true;
        Ok(())
    }

    /// Whether [`Bundle::verify_payloads`] passed.
    pub fn payloads_verified(&self) -> bool {
        self.payloads_verified
    }

    /// A reader over one payload that hashes what it reads; see [`PayloadReader::finish`].
    pub fn payload(&self, which: Payload) -> Result<PayloadReader, BundleError> {
        let info = self.manifest.payload(which);
        let mut file = self.file.try_clone().map_err(|source| BundleError::Io {
            path: self.path.clone(),
            source,
        })?;
        file.seek(SeekFrom::Start(self.base + info.offset))
            .map_err(|source| BundleError::Io {
                path: self.path.clone(),
                source,
            })?;
        Ok(PayloadReader {
            inner: file.take(info.size),
            hash: Context::new(&SHA256),
            which,
            path: self.path.clone(),
            expected: info.sha256.clone(),
            size: info.size,
            read: 0,
        })
    }

    /// The image's own kernel arguments, from the verified command-line payload.
    pub fn cmdline_args(&self) -> Result<Vec<String>, BundleError> {
        let mut reader = self.payload(Payload::Cmdline)?;
        let mut bytes = Vec::new();
        reader
            .read_to_end(&mut bytes)
            .map_err(|source| BundleError::Io {
                path: self.path.clone(),
                source,
            })?;
        reader.finish()?;
        parse_cmdline(&bytes).map_err(|reason| self.payload_err(Payload::Cmdline, reason))
    }

    fn payload_err(&self, payload: Payload, reason: String) -> BundleError {
        BundleError::Payload {
            path: self.path.clone(),
            payload,
            reason,
        }
    }

    fn check_zeros(&mut self, from: u64, to: u64) -> Result<(), BundleError> {
        let io = |source| BundleError::Io {
            path: self.path.clone(),
            source,
        };
        self.file.seek(SeekFrom::Start(from)).map_err(io)?;
        // In pieces: a signed manifest may leave gigabytes between payloads.
        let mut pad = vec![0u8; (to - from).min(64 << 10) as usize];
        let mut at = from;
        while at < to {
            let piece = &mut pad[..(to - at).min(64 << 10) as usize];
            self.file.read_exact(piece).map_err(io)?;
            if let Some(i) = piece.iter().position(|b| *b != 0) {
                return Err(BundleError::Format {
                    path: self.path.clone(),
                    reason: format!("padding byte at offset {} is not zero", at + i as u64),
                });
            }
            at += piece.len() as u64;
        }
        Ok(())
    }
}

/// Reads one payload, hashing as it goes.
pub struct PayloadReader {
    inner: io::Take<File>,
    hash: Context,
    which: Payload,
    path: PathBuf,
    expected: String,
    size: u64,
    read: u64,
}

impl Read for PayloadReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

impl std::fmt::Debug for PayloadReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PayloadReader({} of {}, {}/{})",
            self.which,
            self.path.display(),
            self.read,
            self.size
        )
    }
}

impl PayloadReader {
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Checks that everything was read and hashes to the manifest's digest.
    pub fn finish(self) -> Result<(), BundleError> {
        let err = |reason| BundleError::Payload {
            path: self.path.clone(),
            payload: self.which,
            reason,
        };
        if self.read != self.size {
            return Err(err(format!(
                "read {} of {} bytes (file changed or truncated)",
                self.read, self.size
            )));
        }
        let digest = crate::hex::encode(self.hash.finish().as_ref());
        if digest != self.expected {
            return Err(err(format!(
                "sha256 is {digest}, the manifest says {}",
                self.expected
            )));
        }
        Ok(())
    }

    /// Reads the rest and returns the digest of the whole payload.
    fn drain(&mut self) -> Result<String, BundleError> {
        io::copy(self, &mut io::sink()).map_err(|source| BundleError::Io {
            path: self.path.clone(),
            source,
        })?;
        if self.read != self.size {
            return Err(BundleError::Payload {
                path: self.path.clone(),
                payload: self.which,
                reason: format!("only {} of {} bytes", self.read, self.size),
            });
        }
        Ok(crate::hex::encode(self.hash.clone().finish().as_ref()))
    }
}

/// The header, the manifest's bytes and the signature block, as the file has them.
struct Head {
    file: File,
    file_len: u64,
    manifest_len: u32,
    sig_len: u32,
    manifest_bytes: Vec<u8>,
    block: SignatureBlock,
}

impl Head {
    fn read(path: &Path) -> Result<Head, BundleError> {
        let io = |source| BundleError::Io {
            path: path.to_owned(),
            source,
        };
        let format_err = |reason: String| BundleError::Format {
            path: path.to_owned(),
            reason,
        };
        let mut file = File::open(path).map_err(io)?;
        let file_len = file.metadata().map_err(io)?.len();
        let mut header = [0u8; HEADER_LEN as usize];
        read_exact_or(&mut file, &mut header, file_len, path)?;
        if &header[..8] != MAGIC {
            return Err(format_err("not a Gantry bundle (bad magic)".into()));
        }
        let word =
            |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
        let (format, manifest_len, sig_len, reserved) = (word(8), word(12), word(16), word(20));
        if format != FORMAT {
            return Err(format_err(format!("format {format} is not {FORMAT}")));
        }
        if manifest_len == 0 || manifest_len > MAX_MANIFEST {
            return Err(format_err(format!(
                "manifest length {manifest_len} is not 1 to {MAX_MANIFEST}"
            )));
        }
        if sig_len == 0 || sig_len > MAX_SIGNATURES {
            return Err(format_err(format!(
                "signature block length {sig_len} is not 1 to {MAX_SIGNATURES}"
            )));
        }
        if reserved != 0 {
            return Err(format_err("reserved header field is not 0".into()));
        }
        let mut manifest_bytes = vec![0u8; manifest_len as usize];
        read_exact_or(&mut file, &mut manifest_bytes, file_len, path)?;
        let mut sig_bytes = vec![0u8; sig_len as usize];
        read_exact_or(&mut file, &mut sig_bytes, file_len, path)?;
        let block: SignatureBlock = serde_json::from_slice(&sig_bytes)
            .map_err(|e| format_err(format!("signature block: {e}")))?;
        Ok(Head {
            file,
            file_len,
            manifest_len,
            sig_len,
            manifest_bytes,
            block,
        })
    }
}

/// The manifest and the key ids the signature block names, read WITHOUT checking any
/// signature or payload: for showing a bundle (`gantry-update inspect`), never for acting
/// on it.
pub fn read_unverified(path: &Path) -> Result<(Manifest, Vec<String>), BundleError> {
    let head = Head::read(path)?;
    let manifest =
        serde_json::from_slice(&head.manifest_bytes).map_err(|e| BundleError::Manifest {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    let ids = head
        .block
        .signatures
        .into_iter()
        .map(|s| s.key_id)
        .collect();
    Ok((manifest, ids))
}

fn read_exact_or(
    file: &mut File,
    buf: &mut [u8],
    file_len: u64,
    path: &Path,
) -> Result<(), BundleError> {
    file.read_exact(buf).map_err(|source| match source.kind() {
        io::ErrorKind::UnexpectedEof => BundleError::Format {
            path: path.to_owned(),
            reason: format!("file ends after {file_len} bytes, inside the header (truncated)"),
        },
        _ => BundleError::Io {
            path: path.to_owned(),
            source,
        },
    })
}

/// The command-line payload: one line of arguments, without the slot's own.
pub fn parse_cmdline(bytes: &[u8]) -> Result<Vec<String>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "is not UTF-8".to_owned())?;
    let text = text.strip_suffix('\n').unwrap_or(text);
    if let Some(c) = text.chars().find(|c| c.is_control()) {
        return Err(format!("contains the control character {c:?}"));
    }
    let args: Vec<String> = text.split_whitespace().map(str::to_owned).collect();
    if let Some(arg) = args.iter().find(|a| slot_owned(a)) {
        return Err(format!(
            "sets {arg:?}, which the installer writes for the slot"
        ));
    }
    let panics_reboot = args.iter().any(|a| {
        a.strip_prefix("panic=")
            .and_then(|n| n.parse::<i64>().ok())
            .is_some_and(|n| n > 0)
    });
    if !panics_reboot {
        return Err(
            "has no panic=N with N > 0: a kernel panic would never reboot, and the \
                    boot counter could not fall back"
                .into(),
        );
    }
    Ok(args)
}

#[cfg(test)]
pub(crate) mod tests;
