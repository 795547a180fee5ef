//! nf_tables netlink answers, decoded by our own code (`network::nft`): a datagram split
//! into messages (`split_datagram`), `NLMSG_ERROR` payloads (`parse_error`, with extended
//! ACK attributes) and rule dump messages (`parse_rule`).
//!
//! Checks: the messages of a datagram fit in it, in order, each with its 16-byte header;
//! an error's errno is the negated code the message holds.
#![no_main]

use gantry_runtime::network::nft::{parse_error, parse_rule, split_datagram};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(replies) = split_datagram(data) else {
        return;
    };
    let framed: usize = replies.iter().map(|r| 16 + r.payload.len()).sum();
    assert!(framed <= data.len());
    for r in &replies {
        if let Ok((errno, _text)) = parse_error(r) {
            let code = i32::from_ne_bytes(r.payload[..4].try_into().expect("4 bytes"));
            assert_eq!(Some(errno), code.checked_neg());
        }
        let _ = parse_rule(&r.payload);
    }
});
