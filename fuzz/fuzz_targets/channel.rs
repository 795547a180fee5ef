//! The update channel document (`Channel::verify`, with the fuzz key trusted). The first
//! byte picks how the rest is used: even, as the wire form a mirror serves (envelope,
//! base64, signature, document); odd, as the document's JSON, which the target signs
//! with the fuzz key first, so that the parse after the signature check is reached.
//!
//! Checks: a verified document has the current format and a serial, a bundle URL without
//! control characters, a lower-case hex SHA-256 and a size; it is fresh just before its
//! expiry for its own serial and stale at it; signing it again verifies to the same
//! document.
#![no_main]

use base64::Engine as _;
use gantry_updater::channel::Channel;
use gantry_updater::keys::{Domain, SignatureBlock};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let keys = gantry_fuzz::trusted_keys();
    let key = gantry_fuzz::signing_key();
    let wire = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        let block = SignatureBlock::sign(Domain::Channel, rest, &[key]);
        serde_json::to_vec(&serde_json::json!({
            "document": base64::engine::general_purpose::STANDARD.encode(rest),
            "signatures": block.signatures,
        }))
        .expect("an envelope serializes")
    };
    let Ok(channel) = Channel::verify(&wire, keys, "fuzz") else {
        return;
    };
    assert_eq!(channel.format, gantry_updater::channel::FORMAT);
    assert!(channel.serial > 0);
    if channel.expires > 0 {
        assert!(channel.check_fresh(channel.expires - 1, Some(channel.serial)).is_ok());
    }
    assert!(channel.check_fresh(channel.expires, None).is_err());
    assert!(!channel.bundle.url.is_empty() && !channel.bundle.url.contains(char::is_control));
    assert!(
        channel.bundle.sha256.len() == 64
            && channel
                .bundle
                .sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    assert!(channel.bundle.size > 0);
    let again = channel.sign(&[key]).expect("a channel signs");
    assert_eq!(
        Channel::verify(&again, keys, "fuzz").expect("and verifies"),
        channel
    );
});
