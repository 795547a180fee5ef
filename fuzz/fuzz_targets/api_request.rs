//! The API's request path without TLS: raw bytes from a client into `api::serve_http`
//! (hyper's HTTP/1 server with the API's head limits, then `Handler::handle`), over an
//! in-memory stream, reading every response it writes.
//!
//! Checks: every response is HTTP/1.x (hyper answers an HTTP/1.0 request in kind) with a
//! status the API gives; nothing is answered 200 unless the input carries the configured
//! token.
#![no_main]

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use gantry_init::api::config::{TokenConfig, TokenHash};
use gantry_init::api::{serve_http, Backend, Handler};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "fuzz-token";

struct Fake;

impl Backend for Fake {
    fn containers(&self) -> Result<serde_json::Value, String> {
        Ok(serde_json::json!({ "web": { "state": "running" } }))
    }
    fn log_tail(&self, container: &str, lines: usize) -> Result<String, String> {
        Ok(format!("{container} {lines}\n"))
    }
}

fn handler() -> Arc<Handler> {
    static HANDLER: OnceLock<Arc<Handler>> = OnceLock::new();
    HANDLER
        .get_or_init(|| {
            let mut h = [0u8; 32];
            h.copy_from_slice(
                ring::digest::digest(&ring::digest::SHA256, TOKEN.as_bytes()).as_ref(),
            );
            Arc::new(Handler::new(
                vec![TokenConfig {
                    name: "fuzzer".into(),
                    sha256: TokenHash(h),
                }],
                BTreeSet::from(["web".to_owned()]),
                "0.0-fuzz".into(),
                "0123456789abcdef0123456789abcdef".into(),
            ))
        })
        .clone()
}

/// The statuses the handler answers with, and hyper's own refusals.
const STATUSES: [&str; 10] = [
    "200", "400", "401", "404", "405", "413", "500", "408", "431", "505",
];

fuzz_target!(|data: &[u8]| {
    let out = gantry_fuzz::runtime().block_on(async {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let served = tokio::spawn(serve_http(
            server,
            "192.0.2.1:40000".parse().expect("a peer address"),
            handler(),
            Arc::new(Fake),
            Duration::from_secs(5),
        ));
        let (mut rx, mut tx) = tokio::io::split(client);
        let write = async {
            let _ = tx.write_all(data).await;
            let _ = tx.shutdown().await;
        };
        let mut out = Vec::new();
        let read = rx.read_to_end(&mut out);
        let (_, read) = tokio::join!(write, read);
        let _ = read;
        served.await.expect("the connection task does not panic");
        out
    });
    let text = String::from_utf8_lossy(&out);
    let mut authorized = false;
    let status_lines = text
        .match_indices("HTTP/1.1 ")
        .chain(text.match_indices("HTTP/1.0 "));
    for (i, _) in status_lines {
        // Only status lines start a line; a body could hold the string too.
        if i != 0 && !text[..i].ends_with('\n') {
            continue;
        }
        let status = text.get(i + 9..i + 12).unwrap_or("");
        assert!(STATUSES.contains(&status), "status {status:?} in {text:?}");
        authorized |= status == "200";
    }
    if authorized {
        let input = String::from_utf8_lossy(data);
        assert!(input.contains(TOKEN), "200 without the token: {text:?}");
    }
    assert!(
        out.is_empty() || text.starts_with("HTTP/1.1 ") || text.starts_with("HTTP/1.0 "),
        "{text:?}"
    );
});
