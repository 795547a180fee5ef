//! Image configs (`manifest::ImageConfig::parse`), for a manifest with as many layers as
//! the first byte says.
//!
//! Checks: a config that parses is linux/amd64 with a `layers` rootfs of exactly that many
//! diff IDs; it round-trips through JSON; it has one chain ID per layer, the first being
//! the first diff ID.
#![no_main]

use gantry_runtime::manifest::{ImageConfig, PLATFORM_ARCH, PLATFORM_OS};
use gantry_runtime::Digest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&layers, doc)) = data.split_first() else {
        return;
    };
    let layers = usize::from(layers % 16);
    let digest = Digest::sha256_of(doc);
    let Ok(config) = ImageConfig::parse(doc, &digest, layers) else {
        return;
    };
    assert_eq!(
        (config.os.as_str(), config.architecture.as_str()),
        (PLATFORM_OS, PLATFORM_ARCH)
    );
    assert_eq!(config.rootfs.kind, "layers");
    assert_eq!(config.rootfs.diff_ids.len(), layers);
    let json = serde_json::to_vec(&config).expect("a config serializes");
    let back = ImageConfig::parse(&json, &digest, layers).expect("and parses back");
    assert_eq!(back, config);
    let chain = config.chain_ids();
    assert_eq!(chain.len(), layers);
    assert_eq!(chain.first(), config.rootfs.diff_ids.first());
});
