//! Credentials go only to challenges from the registry itself: a registry on one loopback
//! port redirects a blob to "storage" on a second port, whose 401 names a token realm on a
//! third that records every Authorization header it sees. The realm must never see the
//! registry's credentials for the storage challenge, and still sees them when the registry
//! itself sends the challenge.
//!
//! A realm the registry names on another host (127.0.0.2 or `localhost` for a registry on
//! 127.0.0.1) gets an anonymous token request unless that host is listed for the registry;
//! when it wants credentials, the error names it and how to list it.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use gantry_runtime::registry::{Credentials, Registry, RegistryOptions};
use gantry_runtime::{Digest, ImageRef};

/// Serves each connection on 127.0.0.1 with `reply(path, authorization)`; returns the port.
fn serve(reply: impl Fn(&str, Option<String>) -> String + Send + 'static) -> u16 {
    serve_on("127.0.0.1", reply)
}

/// Serves each connection on loopback address `ip` with `reply(path, authorization)`;
/// returns the port.
fn serve_on(ip: &str, reply: impl Fn(&str, Option<String>) -> String + Send + 'static) -> u16 {
    let listener = TcpListener::bind((ip, 0)).expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
            let mut auth = None;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    if k.eq_ignore_ascii_case("authorization") {
                        auth = Some(v.trim().to_owned());
                    }
                }
            }
            let _ = stream.write_all(reply(&path, auth).as_bytes());
        }
    });
    port
}

/// Requests the realm saw: (path, Authorization header).
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

fn response(status: &str, headers: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn credentials_go_only_to_the_registrys_own_challenge() {
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let realm = serve(move |path, auth| {
        record.lock().unwrap().push((path.to_owned(), auth));
        response("200 OK", "", r#"{"token":"t"}"#)
    });
    let storage = serve(move |_, _| {
        response(
            "401 Unauthorized",
            &format!(
                "WWW-Authenticate: Bearer realm=\"http://127.0.0.1:{realm}/storage-token\"\r\n"
            ),
            "",
        )
    });
    let foreign = Digest::sha256_of(b"foreign");
    let own = Digest::sha256_of(b"own");
    let (foreign_path, own_path) = (
        format!("/v2/demo/blobs/{foreign}"),
        format!("/v2/demo/blobs/{own}"),
    );
    let registry = serve(move |path, auth| {
        if path == "/v2/" {
            response("200 OK", "", "{}")
        } else if path == foreign_path {
            response(
                "307 Temporary Redirect",
                &format!("Location: http://127.0.0.1:{storage}/blob\r\n"),
                "",
            )
        } else if path == own_path && auth.as_deref() != Some("Bearer t") {
            response(
                "401 Unauthorized",
                &format!(
                    "WWW-Authenticate: Bearer realm=\"http://127.0.0.1:{realm}/registry-token\"\r\n"
                ),
                "",
            )
        } else {
            response("200 OK", "", "x")
        }
    });
    let image: ImageRef = format!("127.0.0.1:{registry}/demo:1").parse().unwrap();
    let mut opts = RegistryOptions::default();
    opts.credentials.insert(
        format!("127.0.0.1:{registry}"),
        Credentials {
            username: "user".to_owned(),
            password: "secret".to_owned(),
        },
    );
    let reg = Registry::connect(&image, &opts).await.expect("connect");
    // The storage host's challenge is refused by name, never answered with the registry's
    // credentials.
    let err = reg.small_blob(&foreign, 1).await.unwrap_err().to_string();
    assert!(
        err.contains(&format!("127.0.0.1:{storage}")) && err.contains("not answered"),
        "{err}"
    );
    // The registry's own challenge gets them.
    reg.small_blob(&own, 1).await.expect("own blob");
    let seen = seen.lock().unwrap().clone();
    for (path, auth) in &seen {
        if path.starts_with("/storage-token") {
            assert_eq!(auth, &None, "storage realm saw credentials: {seen:?}");
        }
    }
    assert!(
        seen.iter().any(|(p, a)| p.starts_with("/registry-token")
            && a.as_deref().is_some_and(|a| a.starts_with("Basic "))),
        "registry realm did not get the credentials: {seen:?}"
    );
}

/// A registry on 127.0.0.1 whose blobs need a token from `realm_url` (which may name a
/// host that the realm server on `realm_ip` does not bind, such as `localhost`), and the
/// realm's record of what it saw. The realm issues `t` for the right credentials and, if
/// `anonymous_ok`, `anon` for none; the registry takes either.
fn registry_with_foreign_realm(
    realm_ip: &str,
    realm_host: &str,
    anonymous_ok: bool,
) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let realm = serve_on(realm_ip, move |path, auth| {
        record
            .lock()
            .expect("record lock")
            .push((path.to_owned(), auth.clone()));
        // base64("user:secret")
        if auth.as_deref() == Some("Basic dXNlcjpzZWNyZXQ=") {
            response("200 OK", "", r#"{"token":"t"}"#)
        } else if auth.is_none() && anonymous_ok {
            response("200 OK", "", r#"{"token":"anon"}"#)
        } else {
            response("401 Unauthorized", "", "")
        }
    });
    let realm_url = format!("http://{realm_host}:{realm}/token");
    let registry = serve(move |path, auth| {
        let tokened = matches!(auth.as_deref(), Some("Bearer t" | "Bearer anon"));
        if path == "/v2/" || tokened {
            response("200 OK", "", "x")
        } else {
            response(
                "401 Unauthorized",
                &format!(
                    "WWW-Authenticate: Bearer realm=\"{realm_url}\",\
                     service=\"reg\"\r\n"
                ),
                "",
            )
        }
    });
    (format!("127.0.0.1:{registry}"), seen)
}

fn with_credentials(registry: &str) -> RegistryOptions {
    let mut opts = RegistryOptions::default();
    opts.credentials.insert(
        registry.to_owned(),
        Credentials {
            username: "user".to_owned(),
            password: "secret".to_owned(),
        },
    );
    opts
}

async fn fetch_blob(registry: &str, opts: &RegistryOptions) -> Result<Vec<u8>, String> {
    let image: ImageRef = format!("{registry}/demo:1")
        .parse()
        .expect("image reference");
    let reg = Registry::connect(&image, opts)
        .await
        .map_err(|e| e.to_string())?;
    reg.small_blob(&Digest::sha256_of(b"x"), 1)
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn a_realm_on_another_host_gets_an_anonymous_token_request() {
    for (ip, host) in [("127.0.0.2", "127.0.0.2"), ("127.0.0.1", "localhost")] {
        let (registry, seen) = registry_with_foreign_realm(ip, host, true);
        let blob = fetch_blob(&registry, &with_credentials(&registry)).await;
        assert_eq!(blob.as_deref(), Ok(&b"x"[..]), "realm on {host}");
        let seen = seen.lock().unwrap().clone();
        assert!(!seen.is_empty(), "realm on {host} was not asked");
        assert!(
            seen.iter().all(|(_, auth)| auth.is_none()),
            "realm on {host} saw the registry's credentials: {seen:?}"
        );
    }
}

#[tokio::test]
async fn a_realm_on_another_host_that_wants_credentials_is_refused_by_name() {
    let (registry, seen) = registry_with_foreign_realm("127.0.0.2", "127.0.0.2", false);
    let err = fetch_blob(&registry, &with_credentials(&registry))
        .await
        .unwrap_err();
    assert!(
        err.contains("127.0.0.2")
            && err.contains("not allowed to receive credentials")
            && err.contains("token_realms"),
        "{err}"
    );
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter().all(|(_, auth)| auth.is_none()),
        "the realm saw the registry's credentials: {seen:?}"
    );
}

#[tokio::test]
async fn a_realm_host_listed_for_the_registry_gets_its_credentials() {
    let (registry, seen) = registry_with_foreign_realm("127.0.0.2", "127.0.0.2", false);
    let mut opts = with_credentials(&registry);
    opts.token_realms
        .insert(registry.clone(), vec!["127.0.0.2".to_owned()]);
    let blob = fetch_blob(&registry, &opts).await;
    assert_eq!(blob.as_deref(), Ok(&b"x"[..]));
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .any(|(_, a)| a.as_deref() == Some("Basic dXNlcjpzZWNyZXQ=")),
        "the listed realm did not get the credentials: {seen:?}"
    );
}
