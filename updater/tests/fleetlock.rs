//! The FleetLock client against a FleetLock server written for the test (the protocol is
//! two POSTs; airlock is not packaged): what goes on the wire (path, header, body), a
//! granted lock, a server that says no, the lock given back, a server that is away. No
//! root; loopback only.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use gantry_updater::fetch::{Fetcher, Url};
use gantry_updater::fleetlock::FleetLock;
use gantry_updater::policy::RebootLease;

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    protocol_header: Option<String>,
    body: serde_json::Value,
}

/// A FleetLock server with one slot: grants `pre-reboot` to whoever asks while it is
/// free (again to its holder), frees it on the holder's `steady-state`.
fn server() -> (Url, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = Url::parse(&format!(
        "http://{}/fleet/",
        listener.local_addr().expect("addr")
    ))
    .expect("url");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        let mut holder: Option<String> = None;
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut rd = BufReader::new(conn.try_clone().expect("clone"));
            let mut line = String::new();
            rd.read_line(&mut line).expect("request line");
            let path = line
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_owned();
            let (mut len, mut header) = (0usize, None);
            loop {
                let mut h = String::new();
                rd.read_line(&mut h).expect("header");
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                let (k, v) = h.split_once(':').unwrap_or((h, ""));
                match k.to_ascii_lowercase().as_str() {
                    "content-length" => len = v.trim().parse().unwrap_or(0),
                    "fleet-lock-protocol" => header = Some(v.trim().to_owned()),
                    _ => {}
                }
            }
            let mut body = vec![0u8; len];
            rd.read_exact(&mut body).expect("body");
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let id = body["client_params"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            log.lock().expect("log").push(Seen {
                path: path.clone(),
                protocol_header: header.clone(),
                body,
            });
            let ok = header.as_deref() == Some("true")
                && match path.as_str() {
                    "/fleet/v1/pre-reboot" if holder.as_ref().is_none_or(|h| *h == id) => {
                        holder = Some(id);
                        true
                    }
                    "/fleet/v1/steady-state" => {
                        if holder.as_ref() == Some(&id) {
                            holder = None;
                        }
                        true
                    }
                    _ => false,
                };
            let (status, text) = if ok {
                ("200 OK", "{}")
            } else {
                (
                    "409 Conflict",
                    r#"{"kind":"failed_lock","value":"semaphore full"}"#,
                )
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                text.len()
            );
        }
    });
    (url, seen)
}

fn client(base: &Url, id: &str) -> FleetLock {
    FleetLock {
        base: base.clone(),
        group: "workers".into(),
        id: id.into(),
        fetcher: Fetcher::default(),
    }
}

#[test]
fn the_lock_is_asked_for_refused_granted_and_given_back_over_the_protocol() {
    let (base, seen) = server();
    let mut a = client(&base, "aaaa");
    let mut b = client(&base, "bbbb");
    assert_eq!(a.acquire("2.0.0"), Ok(true));
    assert_eq!(b.acquire("2.0.0"), Ok(false), "the slot is a's");
    a.release("2.0.0").expect("steady-state");
    assert_eq!(b.acquire("2.0.0"), Ok(true), "free again");

    let seen = seen.lock().expect("log").clone();
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert_eq!(seen[0].path, "/fleet/v1/pre-reboot");
    assert_eq!(seen[2].path, "/fleet/v1/steady-state");
    for s in &seen {
        assert_eq!(s.protocol_header.as_deref(), Some("true"), "{s:?}");
        assert_eq!(s.body["client_params"]["group"], "workers", "{s:?}");
    }
    assert_eq!(seen[1].body["client_params"]["id"], "bbbb");
}

#[test]
fn a_server_that_is_away_is_an_error_naming_it_not_a_grant() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let base = Url::parse(&format!("http://127.0.0.1:{port}/")).expect("url");
    let e = client(&base, "aaaa")
        .acquire("2.0.0")
        .expect_err("nobody there");
    assert!(
        e.reason.contains("pre-reboot") && e.reason.contains(&port.to_string()),
        "{e}"
    );
    assert!(client(&base, "aaaa").release("2.0.0").is_err());
}
