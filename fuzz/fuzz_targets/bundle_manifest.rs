//! A bundle manifest once its signature has verified (`bundle::Manifest` from JSON, then
//! `Manifest::check`), as `Bundle::open` reads it.
//!
//! Checks: a manifest that passes its check has payloads in order, 4 KiB aligned, each
//! within its size cap and ending where u64 can say, and dm-verity parameters whose
//! table can be written; it round-trips through JSON.
#![no_main]

use gantry_updater::bundle::{Manifest, Payload};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(manifest) = serde_json::from_slice::<Manifest>(data) else {
        return;
    };
    if manifest.check().is_err() {
        return;
    }
    let mut end = 0u64;
    for which in Payload::ALL {
        let p = manifest.payload(which);
        assert!(p.offset.is_multiple_of(4096) && p.offset >= end);
        assert!(p.size > 0);
        end = p
            .offset
            .checked_add(p.size)
            .expect("a checked payload ends within u64");
    }
    assert_eq!(manifest.payload_span(), end);
    let _ = manifest
        .verity
        .dm_create("00000000-0000-0000-0000-000000000000");
    let json = serde_json::to_vec(&manifest).expect("a manifest serializes");
    assert_eq!(
        serde_json::from_slice::<Manifest>(&json).expect("and parses back"),
        manifest
    );
});
