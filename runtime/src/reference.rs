//! Image references, parsed and normalised the way Docker does: `busybox` is
//! `docker.io/library/busybox:latest`, `host:5000/ns/name:tag` names its registry, and
//! `name@sha256:…` pins a digest.

use std::fmt;
use std::str::FromStr;

/// The registry an unqualified name means.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// The host that serves [`DEFAULT_REGISTRY`]'s API.
const DEFAULT_REGISTRY_API: &str = "registry-1.docker.io";
const DEFAULT_TAG: &str = "latest";
const MAX_NAME: usize = 255;

/// A content digest as references carry it: `sha256:<64 hex>` or `sha512:<128 hex>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Digest {
    algorithm: &'static str,
    hex: String,
}

impl Digest {
    pub fn algorithm(&self) -> &str {
        self.algorithm
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The sha256 digest of `data`.
    pub fn sha256_of(data: &[u8]) -> Digest {
        let mut h = Sha256::new();
        h.update(data);
        h.finish()
    }
}

/// A running sha256 whose result is a [`Digest`].
pub struct Sha256(ring::digest::Context);

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sha256")
    }
}

impl Default for Sha256 {
    fn default() -> Self {
        Self::new()
    }
}

impl Sha256 {
    pub fn new() -> Self {
        Self(ring::digest::Context::new(&ring::digest::SHA256))
    }

    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    pub fn finish(self) -> Digest {
        use fmt::Write;
        let mut hex = String::with_capacity(64);
        for b in self.0.finish().as_ref() {
            let _ = write!(hex, "{b:02x}");
        }
        Digest {
            algorithm: "sha256",
            hex,
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.hex)
    }
}

impl FromStr for Digest {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (algorithm, hex) = s
            .split_once(':')
            .ok_or("digest must be <algorithm>:<hex>")?;
        let (algorithm, len) = match algorithm {
            "sha256" => ("sha256", 64),
            "sha512" => ("sha512", 128),
            _ => return Err("digest algorithm must be sha256 or sha512"),
        };
        if hex.len() != len || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err("digest hex has the wrong length or is not lower-case hex");
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_owned(),
        })
    }
}

/// A normalised image reference. It always has a registry and a repository, and a tag
/// (`latest` when none is given and no digest pins it), a digest, or both.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("image reference {reference:?} is invalid: {reason}")]
pub struct InvalidReference {
    pub reference: String,
    pub reason: &'static str,
}

impl ImageRef {
    /// The registry host (and port) as written, `docker.io` for unqualified names.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The host that serves the registry API (`registry-1.docker.io` for Docker Hub).
    pub fn api_host(&self) -> &str {
        if self.registry == DEFAULT_REGISTRY {
            DEFAULT_REGISTRY_API
        } else {
            &self.registry
        }
    }

    /// The repository path, with `library/` for Docker Hub's official images.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for ImageRef {
    type Err = InvalidReference;

    fn from_str(reference: &str) -> Result<Self, Self::Err> {
        let fail = |reason| InvalidReference {
            reference: reference.to_owned(),
            reason,
        };
        if reference.is_empty() {
            return Err(fail("it is empty"));
        }
        let (rest, digest) = match reference.split_once('@') {
            Some((rest, digest)) => (rest, Some(digest.parse::<Digest>().map_err(fail)?)),
            None => (reference, None),
        };
        // A tag is a ':' after the last '/' (a ':' before it is a registry port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag {
            if !valid_tag(tag) {
                return Err(fail(
                    "tag must be 1 to 128 of [A-Za-z0-9_.-], not starting with '.' or '-'",
                ));
            }
        }
        if name.len() > MAX_NAME {
            return Err(fail("name is longer than 255 characters"));
        }
        // The first component is a registry when it looks like a host: it has a '.' or a
        // ':', is "localhost", or has upper case (which a repository cannot).
        let (registry, path) = match name.split_once('/') {
            Some((first, path))
                if first.contains(['.', ':'])
                    || first == "localhost"
                    || first.bytes().any(|b| b.is_ascii_uppercase()) =>
            {
                (first, path)
            }
            _ => (DEFAULT_REGISTRY, name),
        };
        let registry = match registry {
            "index.docker.io" | "registry-1.docker.io" => DEFAULT_REGISTRY,
            r => r,
        };
        if !valid_registry(registry) {
            return Err(fail(
                "registry must be a host name or address with an optional port",
            ));
        }
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(fail("repository name must be lower case"));
        }
        if path.is_empty() || !path.split('/').all(valid_path_component) {
            return Err(fail(
                "repository components must be [a-z0-9] separated by '.', '_', '__' or '-'",
            ));
        }
        let repository = if registry == DEFAULT_REGISTRY && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_owned()
        };
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_owned()),
            (None, None) => Some(DEFAULT_TAG.to_owned()),
            (None, Some(_)) => None,
        };
        Ok(ImageRef {
            registry: registry.to_owned(),
            repository,
            tag,
            digest,
        })
    }
}

fn valid_tag(tag: &str) -> bool {
    (1..=128).contains(&tag.len())
        && tag
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// `host[:port]`, where host is dot-separated labels of letters, digits and inner hyphens.
fn valid_registry(registry: &str) -> bool {
    let (host, port) = match registry.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (registry, None),
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    port_ok
        && !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// `[a-z0-9]+` runs joined by one separator: `.`, `_`, `__`, or one or more `-`.
fn valid_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &component[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        s.parse::<ImageRef>().unwrap().to_string()
    }

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn normalises_like_docker() {
        assert_eq!(norm("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(norm("user/app"), "docker.io/user/app:latest");
        assert_eq!(
            norm("index.docker.io/library/alpine"),
            "docker.io/library/alpine:latest"
        );
        assert_eq!(norm("localhost/app"), "localhost/app:latest");
        assert_eq!(norm("localhost:5000/app:v1"), "localhost:5000/app:v1");
        assert_eq!(
            norm("host.example:5000/ns/deep/name:tag"),
            "host.example:5000/ns/deep/name:tag"
        );
        assert_eq!(
            norm("127.0.0.1:5000/a_b/c-d"),
            "127.0.0.1:5000/a_b/c-d:latest"
        );
    }

    #[test]
    fn a_digest_pins_the_image_and_keeps_any_tag() {
        let r: ImageRef = format!("alpine@sha256:{HEX}").parse().unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest().unwrap().hex(), HEX);
        assert_eq!(
            r.to_string(),
            format!("docker.io/library/alpine@sha256:{HEX}")
        );
        let r: ImageRef = format!("alpine:3.19@sha256:{HEX}").parse().unwrap();
        assert_eq!(r.tag(), Some("3.19"));
    }

    #[test]
    fn docker_hub_is_reached_at_its_api_host() {
        let r: ImageRef = "busybox".parse().unwrap();
        assert_eq!(r.registry(), "docker.io");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(r.repository(), "library/busybox");
        let r: ImageRef = "127.0.0.1:5000/x".parse().unwrap();
        assert_eq!(r.api_host(), "127.0.0.1:5000");
    }

    #[test]
    fn bad_references_say_why() {
        for (bad, why) in [
            ("", "empty"),
            ("Busybox", "lower case"),
            ("busybox:", "tag"),
            ("busybox:-x", "tag"),
            ("a//b", "repository components"),
            ("a/-b", "repository components"),
            ("a..b", "repository components"),
            ("bad_host:x/app", "registry"),
            ("busybox@sha256:abc", "digest hex"),
            ("busybox@md5:abc", "algorithm"),
        ] {
            let err = bad.parse::<ImageRef>().unwrap_err();
            assert_eq!(err.reference, bad);
            assert!(err.reason.contains(why), "{bad:?}: {err}");
        }
        let long = format!("a{}", "b".repeat(300));
        assert!(long.parse::<ImageRef>().unwrap_err().reason.contains("255"));
    }
}
