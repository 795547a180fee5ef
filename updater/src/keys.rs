//! Ed25519 keys (via `ring`) and the signature block that bundles and channel documents
//! share.
//!
//! - A **private key** is ring's PKCS#8 v2 document, kept in a file of mode 0600 on the
//!   build host. It never enters the image.
//! - A **public key** file is one line: `gantry-ed25519 <base64 of the 32 key bytes>
//!   [comment]`. The image carries the trusted ones in [`TRUSTED_KEYS_DIR`], one `*.pub`
//!   file each; more than one is allowed so that a key can be rotated.
//! - A key's **id** is the first 8 bytes of the SHA-256 of its 32 bytes, in hex.
//! - A **signature block** lists signatures by key id. Every signature covers a
//!   domain-separation prefix plus the signed bytes, so a signed manifest can never pass
//!   for a channel document or the other way round. It verifies when at least one
//!   signature is by a trusted key and all signatures by trusted keys verify: a block
//!   signed with the old and the new key passes on machines that trust either.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};

/// Where the image keeps the public keys it trusts for updates.
pub const TRUSTED_KEYS_DIR: &str = "/etc/gantry/update-keys";
const PUBLIC_KEY_TAG: &str = "gantry-ed25519";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not an Ed25519 PKCS#8 private key ({reason})")]
    BadPrivateKey { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    BadPublicKey { path: PathBuf, reason: String },
    #[error("no trusted update keys in {0}")]
    NoTrustedKeys(PathBuf),
    #[error("cannot generate a key: the system random source failed")]
    Random,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("no signatures")]
    Unsigned,
    #[error("signed only by unknown key(s) {found}; this machine trusts {trusted}")]
    UnknownKey { found: String, trusted: String },
    #[error(
        "signature by key {0} does not verify: the signed bytes or the signature were altered"
    )]
    Invalid(KeyId),
    #[error("signature by key {key_id}: {reason}")]
    Malformed {
        key_id: String,
        reason: &'static str,
    },
}

/// Writes a private key with mode 0600: to a temporary name, fsynced, then renamed.
pub fn write_private_key(path: &Path, pkcs8: &[u8]) -> Result<(), KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("key.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(pkcs8).and_then(|()| f.sync_all()).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// The short id of a public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId([u8; 8]);

impl KeyId {
    pub fn of(public_key: &[u8; 32]) -> KeyId {
        let d = ring::digest::digest(&ring::digest::SHA256, public_key);
        let mut id = [0u8; 8];
        id.copy_from_slice(&d.as_ref()[..8]);
        KeyId(id)
    }

    pub fn parse(s: &str) -> Option<KeyId> {
        let bytes = crate::hex::decode(s)?;
        Some(KeyId(bytes.try_into().ok()?))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::hex::encode(&self.0))
    }
}

/// A key pair that signs bundles and channel documents (build host only).
pub struct SigningKey {
    pair: Ed25519KeyPair,
    id: KeyId,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.id)
    }
}

impl SigningKey {
    /// A new key as its PKCS#8 document (what [`SigningKey::load`] reads).
    pub fn generate_pkcs8() -> Result<Vec<u8>, KeyError> {
        Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map(|doc| doc.as_ref().to_vec())
            .map_err(|_| KeyError::Random)
    }

    pub fn from_pkcs8(pkcs8: &[u8], path: &Path) -> Result<Self, KeyError> {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|e| KeyError::BadPrivateKey {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let id = KeyId::of(&public_bytes(&pair));
        Ok(Self { pair, id })
    }

    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let bytes = std::fs::read(path).map_err(|source| KeyError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_pkcs8(&bytes, path)
    }

    pub fn id(&self) -> KeyId {
        self.id
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            bytes: public_bytes(&self.pair),
            comment: String::new(),
        }
    }

    fn sign(&self, domain: Domain, bytes: &[u8]) -> SignatureEntry {
        let sig = self.pair.sign(&domain.message(bytes));
        SignatureEntry {
            key_id: self.id.to_string(),
            ed25519: B64.encode(sig.as_ref()),
        }
    }
}

fn public_bytes(pair: &Ed25519KeyPair) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(pair.public_key().as_ref());
    out
}

/// A public key and the comment of its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub bytes: [u8; 32],
    pub comment: String,
}

impl PublicKey {
    pub fn id(&self) -> KeyId {
        KeyId::of(&self.bytes)
    }

    /// The one-line file format.
    pub fn to_line(&self) -> String {
        let mut line = format!("{PUBLIC_KEY_TAG} {}", B64.encode(self.bytes));
        if !self.comment.is_empty() {
            line.push(' ');
            line.push_str(&self.comment);
        }
        line.push('\n');
        line
    }

    /// Parses the one-line format; `path` names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, KeyError> {
        let bad = |reason: String| KeyError::BadPublicKey {
            path: path.to_owned(),
            reason,
        };
        let line = text.trim();
        if line.contains('\n') {
            return Err(bad("more than one line".into()));
        }
        let mut parts = line.splitn(3, ' ');
        let tag = parts.next().unwrap_or("");
        if tag != PUBLIC_KEY_TAG {
            return Err(bad(format!("starts with {tag:?}, not {PUBLIC_KEY_TAG:?}")));
        }
        let b64 = parts.next().unwrap_or("");
        let raw = B64
            .decode(b64)
            .map_err(|e| bad(format!("key is not base64: {e}")))?;
        let bytes: [u8; 32] = raw
            .try_into()
            .map_err(|raw: Vec<u8>| bad(format!("key is {} bytes, not 32", raw.len())))?;
        Ok(Self {
            bytes,
            comment: parts.next().unwrap_or("").trim().to_owned(),
        })
    }
}

/// The public keys a machine accepts signatures from.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: BTreeMap<KeyId, PublicKey>,
}

impl TrustedKeys {
    pub fn new(keys: impl IntoIterator<Item = PublicKey>) -> Self {
        Self {
            keys: keys.into_iter().map(|k| (k.id(), k)).collect(),
        }
    }

    /// Every `*.pub` file of `dir`; a malformed file is an error, none at all too.
    pub fn load_dir(dir: &Path) -> Result<Self, KeyError> {
        let io = |source| KeyError::Io {
            path: dir.to_owned(),
            source,
        };
        let mut keys = Vec::new();
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(io)?;
        paths.sort();
        for path in paths {
            if path.extension().is_some_and(|e| e == "pub") {
                let text = std::fs::read_to_string(&path).map_err(|source| KeyError::Io {
                    path: path.clone(),
                    source,
                })?;
                keys.push(PublicKey::parse(&text, &path)?);
            }
        }
        if keys.is_empty() {
            return Err(KeyError::NoTrustedKeys(dir.to_owned()));
        }
        Ok(Self::new(keys))
    }

    pub fn ids(&self) -> Vec<KeyId> {
        self.keys.keys().copied().collect()
    }

    /// Checks `block` over `bytes`; returns the ids of the trusted keys that signed.
    pub fn verify(
        &self,
        domain: Domain,
        bytes: &[u8],
        block: &SignatureBlock,
    ) -> Result<Vec<KeyId>, SignatureError> {
        if block.signatures.is_empty() {
            return Err(SignatureError::Unsigned);
        }
        let message = domain.message(bytes);
        let mut good = Vec::new();
        let mut unknown = Vec::new();
        for entry in &block.signatures {
            let malformed = |reason| SignatureError::Malformed {
                key_id: entry.key_id.clone(),
                reason,
            };
            let id = KeyId::parse(&entry.key_id).ok_or(malformed("key id is not 16 hex digits"))?;
            let Some(key) = self.keys.get(&id) else {
                unknown.push(id.to_string());
                continue;
            };
            let sig = B64
                .decode(&entry.ed25519)
                .map_err(|_| malformed("signature is not base64"))?;
            if sig.len() != 64 {
                return Err(malformed("signature is not 64 bytes"));
            }
            UnparsedPublicKey::new(&ED25519, key.bytes)
                .verify(&message, &sig)
                .map_err(|_| SignatureError::Invalid(id))?;
            good.push(id);
        }
        if good.is_empty() {
            return Err(SignatureError::UnknownKey {
                found: unknown.join(", "),
                trusted: self
                    .ids()
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        Ok(good)
    }
}

/// What a signature is for; part of every signed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    BundleManifest,
    Channel,
}

impl Domain {
    fn message(self, bytes: &[u8]) -> Vec<u8> {
        let prefix: &[u8] = match self {
            Domain::BundleManifest => b"gantry bundle manifest v1\0",
            Domain::Channel => b"gantry channel document v1\0",
        };
        [prefix, bytes].concat()
    }
}

/// Signatures over one signed document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureBlock {
    pub signatures: Vec<SignatureEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureEntry {
    /// [`KeyId`] in hex.
    pub key_id: String,
    /// The 64-byte signature, base64.
    pub ed25519: String,
}

impl SignatureBlock {
    pub fn sign(domain: Domain, bytes: &[u8], keys: &[&SigningKey]) -> Self {
        Self {
            signatures: keys.iter().map(|k| k.sign(domain, bytes)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_pkcs8(&SigningKey::generate_pkcs8().unwrap(), Path::new("k")).unwrap()
    }

    #[test]
    fn a_signature_verifies_only_for_its_bytes_domain_and_key() {
        let (k, other) = (key(), key());
        let trusted = TrustedKeys::new([k.public_key()]);
        let block = SignatureBlock::sign(Domain::BundleManifest, b"manifest", &[&k]);
        assert_eq!(
            trusted.verify(Domain::BundleManifest, b"manifest", &block),
            Ok(vec![k.id()])
        );
        assert_eq!(
            trusted.verify(Domain::BundleManifest, b"manifesT", &block),
            Err(SignatureError::Invalid(k.id()))
        );
        assert_eq!(
            trusted.verify(Domain::Channel, b"manifest", &block),
            Err(SignatureError::Invalid(k.id()))
        );
        let by_other = SignatureBlock::sign(Domain::BundleManifest, b"manifest", &[&other]);
        let err = trusted
            .verify(Domain::BundleManifest, b"manifest", &by_other)
            .unwrap_err();
        assert!(
            matches!(&err, SignatureError::UnknownKey { found, trusted }
                if *found == other.id().to_string() && *trusted == k.id().to_string()),
            "{err}"
        );
        assert_eq!(
            trusted.verify(Domain::BundleManifest, b"m", &SignatureBlock::default()),
            Err(SignatureError::Unsigned)
        );
    }

    #[test]
    fn rotation_a_block_signed_by_old_and_new_key_passes_with_either_trusted() {
        let (old, new) = (key(), key());
        let block = SignatureBlock::sign(Domain::Channel, b"doc", &[&old, &new]);
        for trusted in [old.public_key(), new.public_key()] {
            let keys = TrustedKeys::new([trusted.clone()]);
            assert_eq!(
                keys.verify(Domain::Channel, b"doc", &block),
                Ok(vec![trusted.id()])
            );
        }
    }

    #[test]
    fn public_key_files_round_trip_and_bad_ones_are_named() {
        let k = key();
        let mut public = k.public_key();
        public.comment = "release 2026".into();
        let parsed = PublicKey::parse(&public.to_line(), Path::new("a.pub")).unwrap();
        assert_eq!(parsed, public);
        for (text, reason) in [
            ("ssh-ed25519 AAAA", "starts with \"ssh-ed25519\""),
            ("gantry-ed25519 !!!", "not base64"),
            ("gantry-ed25519 AAAA", "3 bytes, not 32"),
        ] {
            let err = PublicKey::parse(text, Path::new("/k/x.pub"))
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("/k/x.pub: ") && err.contains(reason),
                "{err}"
            );
        }
    }

    #[test]
    fn trusted_keys_load_every_pub_file_and_refuse_an_empty_dir() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            TrustedKeys::load_dir(dir.path()),
            Err(KeyError::NoTrustedKeys(_))
        ));
        let (a, b) = (key(), key());
        std::fs::write(dir.path().join("a.pub"), a.public_key().to_line()).unwrap();
        std::fs::write(dir.path().join("b.pub"), b.public_key().to_line()).unwrap();
        std::fs::write(dir.path().join("README"), "not a key").unwrap();
        let keys = TrustedKeys::load_dir(dir.path()).unwrap();
        let mut want = vec![a.id(), b.id()];
        want.sort();
        assert_eq!(keys.ids(), want);
    }
}
