//! OCI and Docker manifests and indexes (`manifest::Manifest::parse`, then
//! `Index::select`), as a registry or an image layout serves them. The first byte picks
//! the `Content-Type` the document came with.
//!
//! Checks: an image manifest has an image config, layers whose media type maps to their
//! compression and no foreign URLs, sha256 digests only; its descriptors round-trip
//! through JSON; an index entry that is selected is linux/amd64 and an image manifest.
#![no_main]

use gantry_runtime::manifest::{
    layer_compression, Descriptor, Manifest, ACCEPT, DOCKER_MANIFEST, OCI_MANIFEST, PLATFORM_ARCH,
    PLATFORM_OS,
};
use libfuzzer_sys::fuzz_target;

fn round_trips(d: &Descriptor) {
    let json = serde_json::to_vec(d).expect("a descriptor serializes");
    let back: Descriptor = serde_json::from_slice(&json).expect("and parses back");
    assert_eq!(&back, d);
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, doc)) = data.split_first() else {
        return;
    };
    let content_type = match pick % 6 {
        0 => None,
        5 => Some("application/json; charset=utf-8"),
        n => ACCEPT.get(usize::from(n - 1)).copied(),
    };
    let Ok(manifest) = Manifest::parse(doc, content_type, "sha256:fuzz") else {
        return;
    };
    match manifest {
        Manifest::Image(m) => {
            assert!(m.media_type == OCI_MANIFEST || m.media_type == DOCKER_MANIFEST);
            assert_eq!(m.config.digest.algorithm(), "sha256");
            round_trips(&m.config);
            for l in &m.layers {
                assert_eq!(
                    layer_compression(&l.descriptor.media_type),
                    Some(l.compression)
                );
                assert!(l.descriptor.urls.is_empty());
                assert_eq!(l.descriptor.digest.algorithm(), "sha256");
                round_trips(&l.descriptor);
            }
        }
        Manifest::Index(i) => {
            for d in &i.manifests {
                assert_eq!(d.digest.algorithm(), "sha256");
                round_trips(d);
            }
            if let Ok(d) = i.select("sha256:fuzz") {
                let p = d
                    .platform
                    .as_ref()
                    .expect("a selected entry has a platform");
                assert_eq!(
                    (p.os.as_str(), p.architecture.as_str()),
                    (PLATFORM_OS, PLATFORM_ARCH)
                );
                assert!(d.media_type == OCI_MANIFEST || d.media_type == DOCKER_MANIFEST);
            }
        }
    }
});
