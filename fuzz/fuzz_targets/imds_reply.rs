//! IMDS replies through the real client (`imds::Client::fetch`: reqwest and hyper's
//! response parser, our status handling and body cap), from a server on 127.0.0.1 that
//! answers the client's requests in order (token, `user-data`, `instance-id`,
//! `local-hostname`) with the input's parts, split at `fuzz::SEPARATOR`, as raw bytes:
//! status line, headers and body as the fuzzer wrote them. One attempt, no retries. The
//! user data then goes through `sources::accept`.
//!
//! Checks: an answer's user data is within the config size cap; meta-data values are
//! trimmed and not empty.
#![no_main]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use gantry_init::config::imds::{Client, Endpoint, Retry};
use gantry_init::config::sources::{accept, Document, Source};
use gantry_init::config::MAX_CONFIG_BYTES;
use libfuzzer_sys::fuzz_target;

/// The responses of the current input, and how many requests they have answered.
type Script = Arc<Mutex<(Vec<Vec<u8>>, usize)>>;

fn server() -> &'static (Endpoint, Script) {
    static SERVER: OnceLock<(Endpoint, Script)> = OnceLock::new();
    SERVER.get_or_init(|| {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let port = listener.local_addr().expect("local address").port();
        let script: Script = Arc::default();
        let answers = script.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                // The request head, so that closing does not reset what it sent.
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                while !head.ends_with(b"\r\n\r\n") && head.len() < 64 * 1024 {
                    match stream.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => break,
                    }
                }
                let reply = {
                    let mut s = answers.lock().unwrap_or_else(|p| p.into_inner());
                    let n = s.1;
                    s.1 += 1;
                    s.0.get(n).cloned().unwrap_or_default()
                };
                let _ = stream.write_all(&reply);
            }
        });
        let endpoint = format!("127.0.0.1:{port}")
            .parse()
            .expect("a loopback endpoint");
        (endpoint, script)
    })
}

fuzz_target!(|data: &[u8]| {
    let (endpoint, script) = server();
    {
        let mut s = script.lock().unwrap_or_else(|p| p.into_inner());
        *s = (
            gantry_fuzz::parts(data)
                .into_iter()
                .map(<[u8]>::to_vec)
                .collect(),
            0,
        );
    }
    let retry = Retry {
        request_timeout: Duration::from_secs(2),
        deadline: Duration::ZERO,
        first_pause: Duration::ZERO,
        max_pause: Duration::ZERO,
    };
    let client = Client::new(endpoint, retry).expect("an HTTP client");
    let Ok(answer) = gantry_fuzz::runtime().block_on(client.fetch()) else {
        return;
    };
    for v in answer
        .meta
        .instance_id
        .iter()
        .chain(&answer.meta.local_hostname)
    {
        assert!(!v.is_empty() && v.trim() == v, "{v:?}");
    }
    if let Some(user_data) = answer.user_data {
        assert!(user_data.len() <= MAX_CONFIG_BYTES);
        let _ = accept(Document {
            source: Source::Imds {
                base: client.base().to_owned(),
            },
            bytes: user_data,
            meta: answer.meta,
        });
    }
});
