//! The server over real TLS on loopback (a fake backend), and the host backend's reads.

use super::*;
use crate::api::config::{TokenConfig, TokenHash};
use std::collections::BTreeSet;

const CERT: &str = include_str!("testdata/cert.pem");
const KEY: &str = include_str!("testdata/key.pem");

struct Fake;

impl Backend for Fake {
    fn containers(&self) -> Result<serde_json::Value, String> {
        Ok(serde_json::json!({ "web": { "state": "running" } }))
    }
    fn log_tail(&self, container: &str, lines: usize) -> Result<String, String> {
        Ok(format!("{container} {lines}\n"))
    }
}

fn sha256(token: &str) -> TokenHash {
    let mut h = [0u8; 32];
    h.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref());
    TokenHash(h)
}

/// Runs the server on a loopback port with the test certificate; returns the port.
fn start_server() -> u16 {
    start_server_with(Limits::default())
}

/// [`start_server`] with other limits; listens on 0.0.0.0 so 127.0.0.2 can be a second peer.
fn start_server_with(limits: Limits) -> u16 {
    let api = ApiConfig {
        listen: "127.0.0.1:1".parse().unwrap(),
        tls_cert: CERT.to_owned(),
        tls_key: KEY.to_owned(),
        tokens: vec![TokenConfig {
            name: "ops".into(),
            sha256: sha256("s3cret"),
        }],
    };
    let tls = api.tls().unwrap();
    let handler = Handler::new(
        api.tokens,
        BTreeSet::from(["web".to_owned()]),
        "9.9".into(),
        "0123456789abcdef0123456789abcdef".into(),
    );
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = TcpListener::from_std(listener).unwrap();
            serve_with(listener, tls, Arc::new(handler), Arc::new(Fake), limits).await
        })
    });
    port
}

/// GET `path` over HTTPS, trusting only the test certificate; (status, body).
fn get(port: u16, path: &str, headers: &[(&str, String)]) -> Result<(u16, String), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(CERT.as_bytes()).unwrap())
            .resolve("localhost", ([127, 0, 0, 1], port).into())
            .no_proxy()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let mut req = client.get(format!("https://localhost:{port}{path}"));
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let r = req.send().await.map_err(|e| format!("{e:?}"))?;
        let status = r.status().as_u16();
        Ok((status, r.text().await.map_err(|e| e.to_string())?))
    })
}

#[test]
fn serves_https_with_bearer_tokens_and_limits_the_request_head() {
    let port = start_server();
    let auth = |t: &str| vec![("authorization", format!("Bearer {t}"))];
    let (status, _) = get(port, "/v1/status", &[]).unwrap();
    assert_eq!(status, 401);
    let (status, _) = get(port, "/v1/status", &auth("wrong")).unwrap();
    assert_eq!(status, 401);
    let (status, body) = get(port, "/v1/status", &auth("s3cret")).unwrap();
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["containers"]["web"]["state"], "running");
    assert_eq!(v["os_version"], "9.9");
    let (status, body) = get(port, "/v1/containers/web/logs?tail=3", &auth("s3cret")).unwrap();
    assert_eq!((status, body.as_str()), (200, "web 3\n"));
    let (status, _) = get(port, "/v1/containers/db/logs", &auth("s3cret")).unwrap();
    assert_eq!(status, 404);
    // A request head over the limit is answered 431 and never reaches the handler.
    let mut big = auth("s3cret");
    big.push(("x-filler", "a".repeat(MAX_HEAD_BYTES * 2)));
    let (status, _) = get(port, "/v1/status", &big).unwrap();
    assert_eq!(status, 431);
    let mut many = auth("s3cret");
    many.extend((0..MAX_HEADERS).map(|_| ("x-many", "1".to_owned())));
    let (status, _) = get(port, "/v1/status", &many).unwrap();
    assert_eq!(status, 431);
    // The server is still there.
    let (status, _) = get(port, "/v1/status", &auth("s3cret")).unwrap();
    assert_eq!(status, 200);
}

#[test]
fn plain_http_gets_no_answer() {
    let port = start_server();
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(!got.starts_with(b"HTTP/1.1 200"), "{got:?}");
    assert!(!String::from_utf8_lossy(&got).contains("running"));
}

#[test]
fn the_host_backend_reads_the_status_file_and_log_tails() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host {
        status_file: dir.path().join("containers.json"),
        log_dir: dir.path().join("logs"),
    };
    assert_eq!(host.containers().unwrap(), serde_json::json!({}));
    std::fs::write(&host.status_file, br#"{"web":{"restarts":1}}"#).unwrap();
    assert_eq!(host.containers().unwrap()["web"]["restarts"], 1);
    std::fs::write(&host.status_file, b"{").unwrap();
    assert!(host.containers().unwrap_err().contains("cannot parse"));
    assert_eq!(host.log_tail("web", 5).unwrap(), "");
    std::fs::create_dir(&host.log_dir).unwrap();
    std::fs::write(host.log_dir.join("web.log"), "a\nb\nc\n").unwrap();
    assert_eq!(host.log_tail("web", 2).unwrap(), "b\nc\n");
    assert_eq!(host.log_tail("web", 10).unwrap(), "a\nb\nc\n");
}

#[test]
fn tails_find_lines_across_chunks_and_stop_at_the_byte_limit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.log");
    // 200 000 lines of 11 bytes: 2.2 MB, more than the limit.
    let text: String = (0..200_000).map(|i| format!("line {i:05}\n")).collect();
    std::fs::write(&path, &text).unwrap();
    assert_eq!(tail_lines(&path, 1).unwrap(), "line 199999\n");
    let last = tail_lines(&path, 7000).unwrap();
    assert_eq!(last.lines().count(), 7000);
    assert!(last.starts_with("line 193000\n"), "{}", &last[..20]);
    let capped = tail_lines(&path, 10_000_000).unwrap();
    assert!(capped.len() as u64 <= MAX_TAIL_BYTES);
    assert!(capped.starts_with("line ") && capped.ends_with("line 199999\n"));
    // No trailing newline: the last line still counts.
    std::fs::write(&path, "a\nb").unwrap();
    assert_eq!(tail_lines(&path, 1).unwrap(), "b");
}

/// A plain TCP connection from `source` that sends nothing.
fn idle_from(source: [u8; 4], port: u16) -> std::net::TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind((source, 0).into()).unwrap();
        let c = s.connect(([127, 0, 0, 1], port).into()).await.unwrap();
        c.into_std().unwrap()
    })
}

/// Whether the server closes `s` within `within` (EOF or reset); false on the deadline.
fn closed_within(s: &mut std::net::TcpStream, within: Duration) -> bool {
    use std::io::Read;
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(within)).unwrap();
    let mut b = [0u8; 16];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

#[test]
fn an_authenticated_client_gets_through_while_another_peer_holds_idle_connections() {
    let limits = Limits {
        pre_auth: Duration::from_secs(60),
        ..Limits::default()
    };
    let port = start_server_with(limits);
    // Peer 127.0.0.2 tries to take every slot and sends nothing.
    let mut idle: Vec<_> = (0..limits.max_connections)
        .map(|_| idle_from([127, 0, 0, 2], port))
        .collect();
    let mut refused = 0;
    for s in idle.iter_mut().skip(limits.per_peer) {
        if closed_within(s, Duration::from_secs(10)) {
            refused += 1;
        }
    }
    assert_eq!(refused, limits.max_connections - limits.per_peer);
    let auth = vec![("authorization", "Bearer s3cret".to_owned())];
    let (status, body) = get(port, "/v1/status", &auth).unwrap();
    assert_eq!(status, 200, "{body}");
}

#[test]
fn an_idle_connection_is_closed_at_the_pre_authentication_deadline() {
    let port = start_server_with(Limits {
        pre_auth: Duration::from_millis(300),
        ..Limits::default()
    });
    let mut s = idle_from([127, 0, 0, 1], port);
    assert!(closed_within(&mut s, Duration::from_secs(20)));
}

#[test]
fn serve_http_answers_raw_requests_on_any_stream() {
    let handler = Handler::new(
        vec![TokenConfig {
            name: "ops".into(),
            sha256: sha256("s3cret"),
        }],
        BTreeSet::from(["web".to_owned()]),
        "9.9".into(),
        "0123456789abcdef0123456789abcdef".into(),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let answer = rt.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let served = tokio::spawn(serve_http(
            server,
            "127.0.0.1:1".parse().unwrap(),
            Arc::new(handler),
            Arc::new(Fake),
            Duration::from_secs(5),
        ));
        client
            .write_all(
                b"GET /v1/containers/web/logs?tail=3 HTTP/1.1\r\nhost: x\r\n\
                  authorization: Bearer s3cret\r\n\r\n\
                  GET /v1/status HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
            )
            .await
            .unwrap();
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        served.await.unwrap();
        String::from_utf8(out).unwrap()
    });
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.contains("\r\n\r\nweb 3\n"), "{answer}");
    assert!(answer.contains("HTTP/1.1 401 Unauthorized\r\n"), "{answer}");
}
