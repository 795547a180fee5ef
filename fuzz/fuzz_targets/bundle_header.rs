//! An update bundle file: the header, the manifest and signature block it frames
//! (`Bundle::open`, with the fuzz key trusted), then the payloads (`verify_payloads`,
//! `cmdline_args`), and the unverified read `gantry-update inspect` does
//! (`read_unverified`).
//!
//! Checks: a bundle that opens has a manifest that passes its own check, signed by the
//! fuzz key; once its payloads verify, the command line parses.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use gantry_updater::bundle::{read_unverified, Bundle};
use libfuzzer_sys::fuzz_target;

fn path() -> &'static PathBuf {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("fuzz.bundle");
        (dir, path)
    })
    .1
}

fuzz_target!(|data: &[u8]| {
    let path = path();
    std::fs::write(path, data).expect("write the bundle");
    let _ = read_unverified(path);
    let Ok(mut bundle) = Bundle::open(path, gantry_fuzz::trusted_keys()) else {
        return;
    };
    bundle
        .manifest()
        .check()
        .expect("an opened bundle's manifest is checked");
    assert_eq!(bundle.signed_by(), [gantry_fuzz::signing_key().id()]);
    if bundle.verify_payloads().is_ok() {
        let _ = bundle.cmdline_args();
    }
});
