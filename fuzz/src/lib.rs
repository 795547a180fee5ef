//! What the fuzz targets share: the key that signs seeds of signed documents, splitting one
//! input into parts, and a runtime for the async receive paths.
//!
//! The targets are in `fuzz_targets/`, one per parser; `fuzz/README.md` says how to run
//! them and `examples/make_corpus.rs` writes the seeds that need signing or building.

use std::path::Path;
use std::sync::OnceLock;

use gantry_updater::keys::{SigningKey, TrustedKeys};

/// A fixed Ed25519 key (PKCS#8 v2) that signs the seed bundles and channel documents. It
/// is trusted only by the fuzz targets: it lets the fuzzer start from documents whose
/// signature verifies, so what comes after the signature check is reached.
pub const FUZZ_KEY_PKCS8: &[u8] = include_bytes!("../keys/fuzz.pk8");

/// The fuzz signing key.
pub fn signing_key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| {
        SigningKey::from_pkcs8(FUZZ_KEY_PKCS8, Path::new("fuzz/keys/fuzz.pk8"))
            .unwrap_or_else(|e| panic!("the fuzz key does not load: {e}"))
    })
}

/// The trusted keys of the fuzz targets: the fuzz key only.
pub fn trusted_keys() -> &'static TrustedKeys {
    static KEYS: OnceLock<TrustedKeys> = OnceLock::new();
    KEYS.get_or_init(|| TrustedKeys::new([signing_key().public_key()]))
}

/// The separator between the parts of an input that feeds several documents (user-data
/// and meta-data, several HTTP responses). Chosen to be rare in real documents and easy
/// to write in a seed by hand.
pub const SEPARATOR: &[u8] = b"\n--8<--\n";

/// Splits `data` at each [`SEPARATOR`].
pub fn parts(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some(i) = rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
        out.push(&rest[..i]);
        rest = &rest[i + SEPARATOR.len()..];
    }
    out.push(rest);
    out
}

/// A current-thread tokio runtime with I/O and timers, made once per fuzz process.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("no tokio runtime: {e}"))
    })
}
