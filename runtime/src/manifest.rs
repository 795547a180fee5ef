//! Manifests, indexes and image configs: the OCI image spec and Docker's schema 2, which
//! share one shape and differ in media types. Each document is parsed once, at the edge,
//! into types that cannot be wrong: a known media type, digests that parse, a config whose
//! `diff_ids` match the manifest's layers one for one.
//!
//! We keep our own small serde types rather than the `oci-spec` crate's: they accept both
//! the OCI and the Docker media types in one place, and refusing a document names the
//! digest it came under, which a generic parser cannot do.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::layer::Compression;
use crate::reference::Digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// What a client offers in `Accept` when it asks a registry for a manifest.
pub const ACCEPT: [&str; 4] = [OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST];

/// The platform Gantry runs images for.
pub const PLATFORM_OS: &str = "linux";
pub const PLATFORM_ARCH: &str = "amd64";

#[derive(Debug, thiserror::Error)]
#[error("manifest {digest}: {reason}")]
pub struct InvalidManifest {
    /// The digest the document was fetched or stored under (or `<unknown>` for a tag).
    pub digest: String,
    pub reason: String,
}

/// A content descriptor: what a manifest says about a blob it points to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    #[serde(with = "digest_serde")]
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Foreign layers point elsewhere; Gantry does not fetch them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// A manifest as fetched: either one image, or an index of per-platform images.
#[derive(Debug, Clone)]
pub enum Manifest {
    Image(ImageManifest),
    Index(Index),
}

/// One image: its config and its layers, bottom first.
#[derive(Debug, Clone)]
pub struct ImageManifest {
    pub media_type: &'static str,
    pub config: Descriptor,
    pub layers: Vec<Layer>,
}

/// A layer descriptor whose media type is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    pub descriptor: Descriptor,
    pub compression: Compression,
}

#[derive(Debug, Clone)]
pub struct Index {
    pub media_type: &'static str,
    pub manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: u32,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
}

impl Manifest {
    /// Parses a manifest fetched under `digest` (for messages) and served with
    /// `content_type` (used only when the document does not name its own media type).
    pub fn parse(
        bytes: &[u8],
        content_type: Option<&str>,
        digest: &str,
    ) -> Result<Self, InvalidManifest> {
        let bad = |reason: String| InvalidManifest {
            digest: digest.to_owned(),
            reason,
        };
        let raw: RawManifest =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("not a manifest: {e}")))?;
        if raw.schema_version != 2 {
            return Err(bad(format!(
                "schemaVersion {} is not supported (only 2)",
                raw.schema_version
            )));
        }
        // The document's own mediaType wins; the Content-Type header helps when the
        // field is absent (it is optional in OCI); the shape decides when both are.
        let content_type = content_type.map(|c| c.split(';').next().unwrap_or(c).trim());
        let media_type = match (raw.media_type.as_deref(), content_type) {
            (Some(m), _) => m.to_owned(),
            (None, Some(c)) if ACCEPT.contains(&c) => c.to_owned(),
            (None, _) if raw.manifests.is_some() => OCI_INDEX.to_owned(),
            (None, _) => OCI_MANIFEST.to_owned(),
        };
        let descriptors = raw
            .config
            .iter()
            .chain(raw.layers.iter().flatten())
            .chain(raw.manifests.iter().flatten());
        for d in descriptors {
            if d.digest.algorithm() != "sha256" {
                return Err(bad(format!(
                    "{} uses {}, and Gantry verifies sha256 only",
                    d.digest,
                    d.digest.algorithm()
                )));
            }
        }
        match media_type.as_str() {
            OCI_INDEX | DOCKER_LIST => {
                let manifests = raw
                    .manifests
                    .ok_or_else(|| bad(format!("{media_type} without manifests")))?;
                let media_type = if media_type == OCI_INDEX {
                    OCI_INDEX
                } else {
                    DOCKER_LIST
                };
                Ok(Manifest::Index(Index {
                    media_type,
                    manifests,
                }))
            }
            OCI_MANIFEST | DOCKER_MANIFEST => {
                let config = raw
                    .config
                    .ok_or_else(|| bad(format!("{media_type} without a config")))?;
                if config.media_type != OCI_CONFIG && config.media_type != DOCKER_CONFIG {
                    return Err(bad(format!(
                        "config {} has media type {:?}, not an image config",
                        config.digest, config.media_type
                    )));
                }
                let layers = raw
                    .layers
                    .ok_or_else(|| bad(format!("{media_type} without layers")))?
                    .into_iter()
                    .map(|d| {
                        let compression = layer_compression(&d.media_type).ok_or_else(|| {
                            bad(format!(
                                "layer {} has media type {:?}, which Gantry does not unpack",
                                d.digest, d.media_type
                            ))
                        })?;
                        if !d.urls.is_empty() {
                            return Err(bad(format!(
                                "layer {} is a foreign layer (urls), which Gantry does not fetch",
                                d.digest
                            )));
                        }
                        Ok(Layer {
                            descriptor: d,
                            compression,
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let media_type = if media_type == OCI_MANIFEST {
                    OCI_MANIFEST
                } else {
                    DOCKER_MANIFEST
                };
                Ok(Manifest::Image(ImageManifest {
                    media_type,
                    config,
                    layers,
                }))
            }
            other => Err(bad(format!(
                "media type {other:?} is not a manifest or index"
            ))),
        }
    }
}

impl Index {
    /// The entry for linux/amd64. An entry without a variant is preferred; attestation
    /// manifests (`unknown/unknown`) never match.
    pub fn select(&self, index_digest: &str) -> Result<&Descriptor, InvalidManifest> {
        let matching = |d: &&Descriptor| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == PLATFORM_OS && p.architecture == PLATFORM_ARCH)
                && (d.media_type == OCI_MANIFEST || d.media_type == DOCKER_MANIFEST)
        };
        let mut candidates: Vec<&Descriptor> = self.manifests.iter().filter(matching).collect();
        candidates.sort_by_key(|d| d.platform.as_ref().and_then(|p| p.variant.clone()));
        candidates.first().copied().ok_or_else(|| {
            let offered: Vec<String> = self
                .manifests
                .iter()
                .map(|d| {
                    d.platform
                        .as_ref()
                        .map_or_else(|| "no platform".to_owned(), |p| p.to_string())
                })
                .collect();
            InvalidManifest {
                digest: index_digest.to_owned(),
                reason: format!(
                    "no {PLATFORM_OS}/{PLATFORM_ARCH} image in the index (it has: {})",
                    offered.join(", ")
                ),
            }
        })
    }
}

/// The media types of layers Gantry unpacks, and how each is compressed.
pub fn layer_compression(media_type: &str) -> Option<Compression> {
    Some(match media_type {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.docker.image.rootfs.diff.tar" => Compression::None,
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip" => Compression::Gzip,
        "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Compression::Zstd,
        _ => return None,
    })
}

/// The parts of an image config Gantry reads: the platform, the layers' uncompressed
/// digests and the process defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default)]
    pub config: ProcessDefaults,
    pub rootfs: RootFs,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProcessDefaults {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(with = "digest_vec_serde")]
    pub diff_ids: Vec<Digest>,
}

impl ImageConfig {
    /// Parses the config stored under `digest` for a manifest with `layers` layers, and
    /// refuses one for another platform or whose layer list does not match.
    pub fn parse(bytes: &[u8], digest: &Digest, layers: usize) -> Result<Self, InvalidManifest> {
        let bad = |reason: String| InvalidManifest {
            digest: digest.to_string(),
            reason,
        };
        let config: ImageConfig =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("not an image config: {e}")))?;
        if config.os != PLATFORM_OS || config.architecture != PLATFORM_ARCH {
            return Err(bad(format!(
                "image is for {}/{}, this host runs {PLATFORM_OS}/{PLATFORM_ARCH}",
                config.os, config.architecture
            )));
        }
        if config.rootfs.kind != "layers" {
            return Err(bad(format!(
                "rootfs.type is {:?}, not \"layers\"",
                config.rootfs.kind
            )));
        }
        if config.rootfs.diff_ids.len() != layers {
            return Err(bad(format!(
                "config lists {} diff_ids for {layers} layers",
                config.rootfs.diff_ids.len()
            )));
        }
        Ok(config)
    }

    /// The chain ID of each layer: the identity of the file system after applying it on
    /// top of all the layers below (OCI image spec, "Layer ChainID").
    pub fn chain_ids(&self) -> Vec<Digest> {
        let mut out: Vec<Digest> = Vec::with_capacity(self.rootfs.diff_ids.len());
        for diff in &self.rootfs.diff_ids {
            let next = match out.last() {
                None => diff.clone(),
                Some(parent) => Digest::sha256_of(format!("{parent} {diff}").as_bytes()),
            };
            out.push(next);
        }
        out
    }
}

mod digest_serde {
    use super::Digest;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Digest, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(d)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|e| serde::de::Error::custom(format!("digest {s:?}: {e}")))
    }
}

mod digest_vec_serde {
    use super::Digest;
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[Digest], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for d in v {
            seq.serialize_element(&d.to_string())?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Digest>, D::Error> {
        Vec::<String>::deserialize(d)?
            .into_iter()
            .map(|s| {
                s.parse()
                    .map_err(|e| serde::de::Error::custom(format!("digest {s:?}: {e}")))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn image_manifest(media_type: &str, layer_type: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{media_type}",
            "config":{{"mediaType":"{OCI_CONFIG}","digest":"{}","size":10}},
            "layers":[{{"mediaType":"{layer_type}","digest":"{}","size":20}}]}}"#,
            digest('a'),
            digest('b')
        )
    }

    #[test]
    fn parses_oci_and_docker_image_manifests() {
        for (mt, lt, comp) in [
            (
                OCI_MANIFEST,
                "application/vnd.oci.image.layer.v1.tar+zstd",
                Compression::Zstd,
            ),
            (
                DOCKER_MANIFEST,
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                Compression::Gzip,
            ),
        ] {
            let m = Manifest::parse(image_manifest(mt, lt).as_bytes(), None, "x").unwrap();
            let Manifest::Image(m) = m else {
                panic!("not an image")
            };
            assert_eq!(m.media_type, mt);
            assert_eq!(m.layers.len(), 1);
            assert_eq!(m.layers[0].compression, comp);
            assert_eq!(m.layers[0].descriptor.size, 20);
        }
    }

    #[test]
    fn media_type_comes_from_the_header_when_the_document_has_none() {
        let doc = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":1,
            "platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
            digest('c')
        );
        let m = Manifest::parse(
            doc.as_bytes(),
            Some("application/vnd.docker.distribution.manifest.list.v2+json; charset=utf-8"),
            "x",
        )
        .unwrap();
        let Manifest::Index(i) = m else {
            panic!("not an index")
        };
        assert_eq!(i.media_type, DOCKER_LIST);
    }

    #[test]
    fn refuses_unknown_layer_types_foreign_layers_and_schema_1() {
        let err = Manifest::parse(
            image_manifest(OCI_MANIFEST, "application/vnd.example.blob").as_bytes(),
            None,
            "sha256:feed",
        )
        .unwrap_err();
        assert!(err.to_string().contains("sha256:feed"), "{err}");
        assert!(
            err.to_string().contains("application/vnd.example.blob"),
            "{err}"
        );
        let err = Manifest::parse(br#"{"schemaVersion":1}"#, None, "m").unwrap_err();
        assert!(err.reason.contains("schemaVersion 1"), "{err}");
        let foreign = image_manifest(
            DOCKER_MANIFEST,
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
        )
        .replace(
            r#""size":20"#,
            r#""size":20,"urls":["https://example.invalid/l"]"#,
        );
        let err = Manifest::parse(foreign.as_bytes(), None, "m").unwrap_err();
        assert!(err.reason.contains("foreign"), "{err}");
        let err = Manifest::parse(
            image_manifest(OCI_MANIFEST, "application/vnd.oci.image.layer.v1.tar")
                .replace(&digest('b'), "sha256:short")
                .as_bytes(),
            None,
            "m",
        )
        .unwrap_err();
        assert!(err.reason.contains("sha256:short"), "{err}");
    }

    fn index(entries: &[(&str, &str, Option<&str>, char)]) -> Index {
        let manifests = entries
            .iter()
            .map(|(os, arch, variant, c)| Descriptor {
                media_type: OCI_MANIFEST.to_owned(),
                digest: digest(*c).parse().unwrap(),
                size: 1,
                platform: Some(Platform {
                    os: (*os).to_owned(),
                    architecture: (*arch).to_owned(),
                    variant: variant.map(str::to_owned),
                }),
                annotations: BTreeMap::new(),
                urls: vec![],
            })
            .collect();
        Index {
            media_type: OCI_INDEX,
            manifests,
        }
    }

    #[test]
    fn selects_linux_amd64_from_an_index() {
        let i = index(&[
            ("linux", "arm64", Some("v8"), 'a'),
            ("unknown", "unknown", None, 'b'),
            ("linux", "amd64", Some("v3"), 'c'),
            ("linux", "amd64", None, 'd'),
        ]);
        assert_eq!(i.select("idx").unwrap().digest.to_string(), digest('d'));
    }

    #[test]
    fn an_index_without_our_platform_is_refused_with_what_it_has() {
        let i = index(&[
            ("linux", "arm64", Some("v8"), 'a'),
            ("windows", "amd64", None, 'b'),
        ]);
        let err = i.select("sha256:idx").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("sha256:idx"), "{msg}");
        assert!(msg.contains("linux/arm64/v8, windows/amd64"), "{msg}");
    }

    #[test]
    fn config_checks_platform_and_layer_count_and_computes_chain_ids() {
        let d: Digest = digest('e').parse().unwrap();
        let doc = format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{"Cmd":["sh"],"Env":["A=1"]}},
            "rootfs":{{"type":"layers","diff_ids":["{}","{}"]}}}}"#,
            digest('1'),
            digest('2')
        );
        let c = ImageConfig::parse(doc.as_bytes(), &d, 2).unwrap();
        assert_eq!(c.config.cmd.as_deref(), Some(&["sh".to_owned()][..]));
        let chain = c.chain_ids();
        assert_eq!(chain[0].to_string(), digest('1'));
        // sha256("sha256:111… sha256:222…"), as `printf` | sha256sum gives it.
        assert_eq!(
            chain[1],
            Digest::sha256_of(format!("{} {}", digest('1'), digest('2')).as_bytes())
        );
        let err = ImageConfig::parse(doc.as_bytes(), &d, 3).unwrap_err();
        assert!(err.reason.contains("2 diff_ids for 3 layers"), "{err}");
        let arm = doc.replace("amd64", "arm64");
        let err = ImageConfig::parse(arm.as_bytes(), &d, 2).unwrap_err();
        assert!(err.to_string().contains(&digest('e')), "{err}");
        assert!(err.reason.contains("linux/arm64"), "{err}");
    }
}
