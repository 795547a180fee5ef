//! The machine config's `[api]` section: where PID 1's HTTPS API listens, its certificate
//! and key, and the bearer tokens it accepts. Without the section there is no API.
//!
//! ```toml
//! [api]
//! listen = "0.0.0.0:7443"
//! # PEM text inline: configs arrive through fw_cfg, a config drive or user-data, not files.
//! tls_cert = """
//! -----BEGIN CERTIFICATE-----
//! MIIBszCCAVmgAwIBAgIU...
//! -----END CERTIFICATE-----
//! """
//! tls_key = """
//! -----BEGIN PRIVATE KEY-----
//! MIGHAgEAMBMGByqGSM49...
//! -----END PRIVATE KEY-----
//! """
//! # The SHA-256 of each bearer token, in hex (`printf %s "$TOKEN" | sha256sum`);
//! # the token itself never appears in the config.
//! tokens = [
//!   { name = "ops", sha256 = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae" },
//! ]
//! ```
//!
//! The certificate and key are checked when the config is read (both parse, the key is one
//! rustls can sign with, and it matches the certificate's public key), so a config the
//! server could not use is refused like any other invalid config, with the key and reason.
//! The first certificate in `tls_cert` is the server's; any that follow are its chain.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use serde::{Deserialize, Deserializer};

/// Problems found, as (key path under `api.`, reason).
pub type Problems = Vec<(String, String)>;

/// A certificate chain, the server's first.
type Chain = Vec<CertificateDer<'static>>;

/// The most tokens a config may name.
pub const MAX_TOKENS: usize = 64;

/// The `[api]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// The address and port to listen on (`0.0.0.0:7443`, `[::]:7443`).
    pub listen: SocketAddr,
    /// The server certificate (then its chain), PEM.
    pub tls_cert: String,
    /// The certificate's private key (PKCS#8, PKCS#1 or SEC1), PEM.
    pub tls_key: String,
    /// The bearer tokens accepted, by name.
    pub tokens: Vec<TokenConfig>,
}

/// One `api.tokens` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds the token; logged with each refused or served request.
    pub name: String,
    /// The SHA-256 of the token.
    pub sha256: TokenHash,
}

/// The SHA-256 of a bearer token, written as 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenHash(pub [u8; 32]);

impl fmt::Debug for TokenHash {
    // A hash of a secret is not a secret, but there is no reason to print it either.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(..)")
    }
}

impl std::str::FromStr for TokenHash {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a SHA-256 in hex (64 hex digits)");
        if s.len() != 64 || !s.is_ascii() {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            let pair = s.get(2 * i..2 * i + 2).ok_or_else(bad)?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
        }
        Ok(TokenHash(out))
    }
}

impl<'de> Deserialize<'de> for TokenHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Whether `name` is a token name: 1 to 64 letters, digits, `_`, `.`, `-`.
fn valid_token_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

impl ApiConfig {
    /// Every problem, as (key path under `api.`, reason).
    pub fn problems(&self) -> Problems {
        let mut out = Vec::new();
        if self.listen.port() == 0 {
            out.push(("listen".to_owned(), format!("{} has no port", self.listen)));
        }
        if let Err(e) = self.tls() {
            out.extend(e);
        }
        if self.tokens.is_empty() {
            out.push((
                "tokens".to_owned(),
                "is empty; the API needs at least one token".to_owned(),
            ));
        } else if self.tokens.len() > MAX_TOKENS {
            out.push((
                "tokens".to_owned(),
                format!("{} tokens given; at most {MAX_TOKENS}", self.tokens.len()),
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        let mut hashes = std::collections::BTreeSet::new();
        for (i, t) in self.tokens.iter().enumerate() {
            if !valid_token_name(&t.name) {
                out.push((
                    format!("tokens[{i}].name"),
                    format!(
                        "{:?} is not a token name (1 to 64 letters, digits, '_', '.', '-')",
                        t.name
                    ),
                ));
            } else if !names.insert(t.name.as_str()) {
                out.push((
                    format!("tokens[{i}].name"),
                    format!("{:?} is named twice", t.name),
                ));
            }
            if !hashes.insert(t.sha256.0) {
                out.push((
                    format!("tokens[{i}].sha256"),
                    "is the same as an earlier token's".to_owned(),
                ));
            }
        }
        out
    }

    /// The TLS server settings: TLS 1.2 and 1.3 with ring, no client certificates, HTTP/1.1
    /// by ALPN. Errors are (key path under `api.`, reason).
    pub fn tls(&self) -> Result<Arc<ServerConfig>, Problems> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (chain, key) = self.certified_key(&provider)?;
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
            .map_err(|e| vec![("tls_cert".to_owned(), format!("cannot be used: {e}"))])?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// The parsed chain and key, once checked to belong together.
    fn certified_key(
        &self,
        provider: &CryptoProvider,
    ) -> Result<(Chain, PrivateKeyDer<'static>), Problems> {
        let mut out = Vec::new();
        let chain: Chain = match CertificateDer::pem_slice_iter(self.tls_cert.as_bytes()).collect()
        {
            Ok(chain) => chain,
            Err(e) => {
                out.push(("tls_cert".to_owned(), format!("is not PEM: {e}")));
                Vec::new()
            }
        };
        if out.is_empty() && chain.is_empty() {
            out.push((
                "tls_cert".to_owned(),
                "has no BEGIN CERTIFICATE block".to_owned(),
            ));
        }
        let key = match PrivateKeyDer::from_pem_slice(self.tls_key.as_bytes()) {
            Ok(key) => Some(key),
            Err(rustls::pki_types::pem::Error::NoItemsFound) => {
                out.push((
                    "tls_key".to_owned(),
                    "has no BEGIN PRIVATE KEY (or RSA/EC PRIVATE KEY) block".to_owned(),
                ));
                None
            }
            Err(e) => {
                out.push(("tls_key".to_owned(), format!("is not PEM: {e}")));
                None
            }
        };
        let (Some(key), true) = (key, out.is_empty()) else {
            return Err(out);
        };
        let signer = provider
            .key_provider
            .load_private_key(key.clone_key())
            .map_err(|e| vec![("tls_key".to_owned(), format!("is not a usable key: {e}"))])?;
        match CertifiedKey::new(chain.clone(), signer).keys_match() {
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
                Ok((chain, key))
            }
            Err(rustls::Error::InconsistentKeys(_)) => Err(vec![(
                "tls_key".to_owned(),
                "does not match the certificate in tls_cert".to_owned(),
            )]),
            Err(e) => Err(vec![(
                "tls_cert".to_owned(),
                format!("is not a certificate: {e}"),
            )]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{test_support, MachineConfig};

    pub(crate) const CERT: &str = include_str!("testdata/cert.pem");
    pub(crate) const KEY: &str = include_str!("testdata/key.pem");
    const OTHER_KEY: &str = include_str!("testdata/other_key.pem");
    const HASH: &str = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";

    fn section(cert: &str, key: &str, tokens: &str) -> String {
        format!(
            "version = 1\n[api]\nlisten = \"0.0.0.0:7443\"\n\
             tls_cert = \"\"\"\n{cert}\"\"\"\ntls_key = \"\"\"\n{key}\"\"\"\ntokens = [{tokens}]\n"
        )
    }

    fn errors(text: &str) -> Vec<String> {
        MachineConfig::parse(text, "test")
            .expect_err("must be refused")
            .iter()
            .map(|e| format!("{}: {}", e.key, e.reason))
            .collect()
    }

    /// Replaces the PEM block that starts with `begin` in `text` with `pem`.
    fn swap_pem(text: &str, begin: &str, pem: &str) -> String {
        let start = text.find(begin).expect("the block");
        let end_marker = "-----\n";
        let end = text[start..]
            .find("-----END")
            .and_then(|e| text[start + e..].find(end_marker).map(|f| start + e + f))
            .expect("the block's end")
            + end_marker.len();
        format!("{}{pem}{}", &text[..start], &text[end..])
    }

    #[test]
    fn the_documented_example_parses_with_a_real_certificate() {
        let doc = test_support::doc_example(include_str!("config.rs"));
        let doc = swap_pem(&doc, "-----BEGIN CERTIFICATE", CERT);
        let doc = swap_pem(&doc, "-----BEGIN PRIVATE KEY", KEY);
        let c = MachineConfig::parse(&format!("version = 1\n{doc}"), "test")
            .unwrap_or_else(|e| panic!("{e:?}"));
        let api = c.api.expect("an [api] section");
        assert_eq!(api.listen.to_string(), "0.0.0.0:7443");
        assert_eq!(api.tokens[0].name, "ops");
        // sha256("foo")
        assert_eq!(api.tokens[0].sha256, HASH.parse().unwrap());
        assert!(api.tls().is_ok());
    }

    #[test]
    fn without_an_api_section_there_is_no_api() {
        let c = MachineConfig::parse("version = 1", "test").unwrap();
        assert_eq!(c.api, None);
    }

    #[test]
    fn a_key_that_does_not_match_the_certificate_is_refused() {
        let text = section(
            CERT,
            OTHER_KEY,
            &format!("{{ name = \"a\", sha256 = \"{HASH}\" }}"),
        );
        test_support::assert_exactly(
            &errors(&text),
            &["api.tls_key: does not match the certificate in tls_cert"],
        );
    }

    #[test]
    fn text_that_is_not_pem_is_refused_for_cert_and_key() {
        let text = section(
            "hello\n",
            "-----BEGIN PRIVATE KEY-----\n!!!\n-----END PRIVATE KEY-----\n",
            &format!("{{ name = \"a\", sha256 = \"{HASH}\" }}"),
        );
        test_support::assert_exactly(
            &errors(&text),
            &[
                "api.tls_cert: has no BEGIN CERTIFICATE block",
                "api.tls_key: is not PEM",
            ],
        );
        // Well-formed PEM around bytes that are no certificate, and no key at all.
        let text = section(
            "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n",
            KEY,
            &format!("{{ name = \"a\", sha256 = \"{HASH}\" }}"),
        );
        test_support::assert_exactly(&errors(&text), &["api.tls_cert: is not a certificate"]);
        let text = section(
            CERT,
            CERT,
            &format!("{{ name = \"a\", sha256 = \"{HASH}\" }}"),
        );
        test_support::assert_exactly(&errors(&text), &["api.tls_key: has no BEGIN PRIVATE KEY"]);
    }

    #[test]
    fn tokens_are_checked_for_names_hashes_and_count() {
        test_support::assert_exactly(
            &errors(&section(CERT, KEY, "")),
            &["api.tokens: is empty; the API needs at least one token"],
        );
        let other = "00".repeat(32);
        let text = section(
            CERT,
            KEY,
            &format!(
                "{{ name = \"ops\", sha256 = \"{HASH}\" }}, {{ name = \"ops\", sha256 = \"{other}\" }}, \
                 {{ name = \"a b\", sha256 = \"{HASH}\" }}"
            ),
        );
        test_support::assert_exactly(
            &errors(&text),
            &[
                "api.tokens[1].name: \"ops\" is named twice",
                "api.tokens[2].name: \"a b\" is not a token name",
                "api.tokens[2].sha256: is the same as an earlier token's",
            ],
        );
    }

    #[test]
    fn a_hash_that_is_not_64_hex_digits_names_the_key() {
        for bad in ["abc", &"zz".repeat(32), &"a".repeat(65), &"é".repeat(32)] {
            let e = errors(&section(
                CERT,
                KEY,
                &format!("{{ name = \"a\", sha256 = \"{bad}\" }}"),
            ));
            assert_eq!(e.len(), 1, "{e:?}");
            assert!(
                e[0].starts_with("api.tokens[0].sha256: ")
                    && e[0].contains("is not a SHA-256 in hex (64 hex digits)"),
                "{e:?}"
            );
        }
        let upper: TokenHash = HASH.to_uppercase().parse().unwrap();
        assert_eq!(upper, HASH.parse().unwrap());
    }

    #[test]
    fn listen_and_unknown_keys_name_the_key() {
        let text = section(
            CERT,
            KEY,
            &format!("{{ name = \"a\", sha256 = \"{HASH}\" }}"),
        );
        let e = errors(&text.replace("0.0.0.0:7443", "0.0.0.0"));
        assert!(e.len() == 1 && e[0].starts_with("api.listen: "), "{e:?}");
        let e = errors(&text.replace("0.0.0.0:7443", "0.0.0.0:0"));
        test_support::assert_exactly(&e, &["api.listen: 0.0.0.0:0 has no port"]);
        let e = errors(&format!("{text}port = 1\n"));
        assert!(
            e.len() == 1 && e[0].starts_with("api.port: unknown field `port`"),
            "{e:?}"
        );
        let e = errors(&text.replace("name = \"a\"", "name = \"a\", token = \"x\""));
        assert!(
            e.len() == 1 && e[0].starts_with("api.tokens[0].token: unknown field"),
            "{e:?}"
        );
    }
}
