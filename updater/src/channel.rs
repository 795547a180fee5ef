//! The channel document: what an update server publishes so that machines can find the
//! newest bundle of a channel. It is signed like a bundle manifest (its own signature
//! domain, the same trusted keys), so a server or a proxy cannot point machines at an
//! older or foreign bundle; the bundle it names is verified again on its own.
//!
//! On the wire it is JSON: `{"document": "<base64 of the document's JSON>", "signatures":
//! [...]}`. The signed bytes are the decoded document, exactly.
//!
//! A signature alone does not stop a mirror from serving an old document it once saw
//! (a replay, which could point machines back at a release the channel has left) or from
//! serving the same document for ever (a freeze, which hides every later release). So the
//! signed document carries, as TUF's timestamp metadata does:
//! - `serial`: grows with every document of a channel. A machine keeps the highest serial
//!   it accepted for each channel (see [`crate::state`]) and refuses a lower one. The
//!   publishing tool defaults it to the signing time in unix seconds, so documents signed
//!   on different machines still grow.
//! - `expires`: unix seconds (UTC) after which the document is refused. A frozen mirror
//!   is noticed once the document it keeps serving expires: the machine logs it at each
//!   check. The publisher re-signs before then, even with nothing new to offer.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::keys::{
    Domain, SignatureBlock, SignatureEntry, SignatureError, SigningKey, TrustedKeys,
};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
/// The largest channel document accepted.
pub const MAX_CHANNEL_BYTES: usize = 64 << 10;
/// The document format this code writes and reads; format 1 had no serial and no expiry
/// and is refused.
pub const FORMAT: u32 = 2;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Channel {
    pub format: u32,
    /// The channel's name (`stable`); a machine following another channel refuses it.
    pub channel: String,
    /// Grows with each document of the channel; a machine refuses one lower than the
    /// highest it accepted.
    pub serial: u64,
    /// Unix seconds after which the document is refused.
    pub expires: u64,
    pub os_version: String,
    pub rollback_index: u64,
    pub arch: String,
    pub board: String,
    pub bundle: BundleRef,
    /// The release's waves; absent: every machine at once (see [`crate::rollout`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<crate::rollout::Rollout>,
    /// How many rollbacks the release may cost before machines stop installing it (see
    /// [`crate::fleet`]); absent: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_budget: Option<crate::fleet::FailureBudget>,
}

/// Where the bundle is: a URL (absolute, or relative to the channel document's), its size
/// and the SHA-256 of the whole file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleRef {
    pub url: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    document: String,
    signatures: Vec<SignatureEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("channel document {source_name}: {reason}")]
    Format { source_name: String, reason: String },
    #[error("channel document {source_name}: signature: {error}")]
    Signature {
        source_name: String,
        error: SignatureError,
    },
}

impl Channel {
    /// The signed wire form.
    pub fn sign(&self, keys: &[&SigningKey]) -> Result<Vec<u8>, serde_json::Error> {
        let document = serde_json::to_vec(self)?;
        let envelope = Envelope {
            signatures: SignatureBlock::sign(Domain::Channel, &document, keys).signatures,
            document: B64.encode(&document),
        };
        serde_json::to_vec_pretty(&envelope)
    }

    /// Parses and verifies the wire form; `source_name` (the URL) names it in errors.
    pub fn verify(
        bytes: &[u8],
        keys: &TrustedKeys,
        source_name: &str,
    ) -> Result<Channel, ChannelError> {
        let format = |reason: String| ChannelError::Format {
            source_name: source_name.to_owned(),
            reason,
        };
        if bytes.len() > MAX_CHANNEL_BYTES {
            return Err(format(format!(
                "{} bytes, more than {MAX_CHANNEL_BYTES}",
                bytes.len()
            )));
        }
        let envelope: Envelope =
            serde_json::from_slice(bytes).map_err(|e| format(format!("envelope: {e}")))?;
        let document = B64
            .decode(&envelope.document)
            .map_err(|e| format(format!("document is not base64: {e}")))?;
        let block = SignatureBlock {
            signatures: envelope.signatures,
        };
        keys.verify(Domain::Channel, &document, &block)
            .map_err(|error| ChannelError::Signature {
                source_name: source_name.to_owned(),
                error,
            })?;
        let channel: Channel =
            serde_json::from_slice(&document).map_err(|e| format(format!("document: {e}")))?;
        channel.check().map_err(format)?;
        Ok(channel)
    }

    /// Whether the document may be acted on at `now` (unix seconds) by a machine whose
    /// highest accepted serial for this channel is `highest`: not expired and not older
    /// than what was seen. The same serial again is the same document fetched again.
    pub fn check_fresh(&self, now: u64, highest: Option<u64>) -> Result<(), String> {
        if now >= self.expires {
            return Err(format!(
                "it expired at {} (unix seconds); the time here is {now}: the server \
                 serves a document that is no longer re-signed (a frozen mirror?)",
                self.expires
            ));
        }
        if let Some(highest) = highest.filter(|h| self.serial < *h) {
            return Err(format!(
                "serial {} is lower than {highest}, the highest accepted here for channel \
                 {:?}: an older document replayed",
                self.serial, self.channel
            ));
        }
        Ok(())
    }

    fn check(&self) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!(
                "format {} is not {FORMAT}{}",
                self.format,
                if self.format == 1 {
                    " (format 1 has no serial and no expiry; re-sign it with this \
                     gantry-update)"
                } else {
                    ""
                }
            ));
        }
        if self.serial == 0 {
            return Err("serial is 0; serials start at 1".into());
        }
        if self.bundle.url.is_empty() || self.bundle.url.chars().any(char::is_control) {
            return Err(format!("bundle.url {:?} is not a URL", self.bundle.url));
        }
        if !crate::hex::is_sha256(&self.bundle.sha256) {
            return Err(format!(
                "bundle.sha256 {:?} is not 64 lower-case hex digits",
                self.bundle.sha256
            ));
        }
        if self.bundle.size == 0 {
            return Err("bundle.size is 0".into());
        }
        if let Some(r) = &self.rollout {
            r.check()?;
        }
        if let Some(b) = &self.failure_budget {
            b.check()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn key() -> SigningKey {
        SigningKey::from_pkcs8(&SigningKey::generate_pkcs8().unwrap(), Path::new("k")).unwrap()
    }

    fn channel() -> Channel {
        Channel {
            format: FORMAT,
            channel: "stable".into(),
            serial: 7,
            expires: 2_000_000_000,
            os_version: "0.2.0".into(),
            rollback_index: 2,
            arch: "x86_64".into(),
            board: "generic".into(),
            bundle: BundleRef {
                url: "gantry-0.2.0.bundle".into(),
                size: 1000,
                sha256: "ab".repeat(32),
            },
            rollout: None,
            failure_budget: None,
        }
    }

    #[test]
    fn a_rollout_travels_signed_and_a_bad_one_is_refused_naming_the_wave() {
        use crate::rollout::{Rollout, Wave};
        let k = key();
        let keys = TrustedKeys::new([k.public_key()]);
        let mut c = channel();
        c.rollout = Some(Rollout {
            start: 1_765_000_000,
            waves: vec![
                Wave {
                    after_secs: 0,
                    percent: 10,
                },
                Wave {
                    after_secs: 3_600,
                    percent: 100,
                },
            ],
        });
        let wire = c.sign(&[&k]).unwrap();
        assert_eq!(Channel::verify(&wire, &keys, "u").unwrap(), c);
        if let Some(r) = c.rollout.as_mut() {
            r.waves[1].percent = 5;
        }
        let err = Channel::verify(&c.sign(&[&k]).unwrap(), &keys, "http://s/c")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("channel document http://s/c:") && err.contains("rollout.waves[1]"),
            "{err}"
        );
    }

    #[test]
    fn a_signed_channel_verifies_and_an_altered_one_does_not() {
        let k = key();
        let keys = TrustedKeys::new([k.public_key()]);
        let wire = channel().sign(&[&k]).unwrap();
        assert_eq!(Channel::verify(&wire, &keys, "u").unwrap(), channel());

        // Point the document at another bundle, keeping the old signature.
        let mut env: serde_json::Value = serde_json::from_slice(&wire).unwrap();
        let mut other = channel();
        other.rollback_index = 1;
        env["document"] = B64.encode(serde_json::to_vec(&other).unwrap()).into();
        let err = Channel::verify(&serde_json::to_vec(&env).unwrap(), &keys, "http://s/c")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("channel document http://s/c: signature:")
                && err.contains("does not verify"),
            "{err}"
        );
        let stranger = TrustedKeys::new([key().public_key()]);
        assert!(Channel::verify(&wire, &stranger, "u")
            .unwrap_err()
            .to_string()
            .contains("unknown key"));
    }

    #[test]
    fn a_manifest_signature_does_not_pass_for_a_channel() {
        let k = key();
        let keys = TrustedKeys::new([k.public_key()]);
        let document = serde_json::to_vec(&channel()).unwrap();
        let envelope = Envelope {
            signatures: SignatureBlock::sign(Domain::BundleManifest, &document, &[&k]).signatures,
            document: B64.encode(&document),
        };
        let wire = serde_json::to_vec(&envelope).unwrap();
        assert!(Channel::verify(&wire, &keys, "u").is_err());
    }

    #[test]
    fn bad_documents_are_named() {
        let k = key();
        let keys = TrustedKeys::new([k.public_key()]);
        let mut c = channel();
        c.bundle.sha256 = "nope".into();
        let err = Channel::verify(&c.sign(&[&k]).unwrap(), &keys, "u")
            .unwrap_err()
            .to_string();
        assert!(err.contains("bundle.sha256 \"nope\""), "{err}");
        assert!(Channel::verify(b"{}", &keys, "u")
            .unwrap_err()
            .to_string()
            .contains("envelope"));
        assert!(Channel::verify(&vec![b' '; MAX_CHANNEL_BYTES + 1], &keys, "u").is_err());
    }

    #[test]
    fn expired_and_replayed_documents_are_refused_with_both_values() {
        let c = channel();
        assert!(c.check_fresh(1_999_999_999, None).is_ok());
        assert!(
            c.check_fresh(1_999_999_999, Some(7)).is_ok(),
            "the same one again"
        );
        assert!(c.check_fresh(1_999_999_999, Some(6)).is_ok());
        let err = c.check_fresh(2_000_000_000, None).unwrap_err();
        assert!(
            err.contains("expired at 2000000000") && err.contains("the time here is 2000000000"),
            "{err}"
        );
        let err = c.check_fresh(1_000, Some(8)).unwrap_err();
        assert!(
            err.contains("serial 7 is lower than 8") && err.contains("\"stable\""),
            "{err}"
        );
    }

    #[test]
    fn format_1_and_serial_0_are_refused() {
        let k = key();
        let keys = TrustedKeys::new([k.public_key()]);
        let mut c = channel();
        c.format = 1;
        let err = Channel::verify(&c.sign(&[&k]).unwrap(), &keys, "u")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("format 1 is not 2 (format 1 has no serial"),
            "{err}"
        );
        let mut c = channel();
        c.serial = 0;
        let err = Channel::verify(&c.sign(&[&k]).unwrap(), &keys, "u")
            .unwrap_err()
            .to_string();
        assert!(err.contains("serial is 0"), "{err}");
        // A format-1 document as it was written, without the fields, does not parse.
        let old = br#"{"format":1,"channel":"stable","os_version":"0.2.0","rollback_index":2,"arch":"x86_64","board":"generic","bundle":{"url":"b","size":1,"sha256":"ab"}}"#;
        let envelope = Envelope {
            signatures: SignatureBlock::sign(Domain::Channel, old, &[&k]).signatures,
            document: B64.encode(old),
        };
        let err = Channel::verify(&serde_json::to_vec(&envelope).unwrap(), &keys, "u")
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing field `serial`"), "{err}");
    }
}
