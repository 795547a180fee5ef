//! The layer tar walker (`layer::walk`: the stream walk `unpack`, image import and
//! archive scanning share, with unpack's checks of names, links and xattrs), on the
//! input as an uncompressed layer. The same stream is walked a second time through a
//! reader that gives one byte per read.
//!
//! Checks: a walked stream's diff ID is the SHA-256 of all of it and its size is its
//! length; members have names of at most 4096 bytes with no `..` component; short reads
//! change nothing (same members, same result).
#![no_main]

use std::io::Read;

use gantry_runtime::layer::{walk, Kind};
use gantry_runtime::Digest;
use libfuzzer_sys::fuzz_target;

struct OneByte<'a>(&'a [u8]);

impl Read for OneByte<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match (self.0.split_first(), buf.first_mut()) {
            (Some((&b, rest)), Some(slot)) => {
                *slot = b;
                self.0 = rest;
                Ok(1)
            }
            _ => Ok(0),
        }
    }
}

fn members(stream: impl Read) -> (Vec<(Vec<u8>, Kind)>, Result<String, String>) {
    let mut seen = Vec::new();
    let walked = walk(stream, |m| seen.push((m.name.clone(), m.kind.clone())));
    let walked = walked
        .map(|w| format!("{} {} {}", w.diff_id, w.entries, w.uncompressed_bytes))
        .map_err(|e| e.to_string());
    (seen, walked)
}

fuzz_target!(|data: &[u8]| {
    let mut count = 0u64;
    let walked = walk(data, |m| {
        count += 1;
        assert!(m.name.len() <= 4096, "a name of {} bytes", m.name.len());
        assert!(
            !m.name.split(|&b| b == b'/').any(|c| c == b".."),
            "{:?}",
            m.entry()
        );
    });
    if let Ok(w) = &walked {
        assert_eq!(w.diff_id, Digest::sha256_of(data));
        assert_eq!(w.uncompressed_bytes, data.len() as u64);
        assert_eq!(w.entries, count);
    }
    if data.len() <= 64 * 1024 {
        assert_eq!(members(data), members(OneByte(data)));
    }
});
