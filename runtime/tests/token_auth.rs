//! The bearer-token flow against a real registry: Distribution 2.8 with `auth: token`,
//! trusting a certificate the test makes, and a small token service run by the test that
//! checks basic-auth credentials and issues ES256 JWTs (signed with `ring`, the
//! certificate in `x5c`) for the scopes asked. skopeo pushes through the same flow.
//! Needs root, docker-registry, skopeo and openssl.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use common::*;
use serde_json::json;

const SERVICE: &str = "gantry-test-registry";
const ISSUER: &str = "gantry-test-issuer";

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Requests the token service saw: (scopes, whether the credentials were right).
type Seen = Arc<Mutex<Vec<(Vec<String>, bool)>>>;

/// Serves `GET /token?service=…&scope=…` on a loopback port; returns the port.
fn token_service(dir: &Path, seen: Seen) -> u16 {
    let key = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &std::fs::read(dir.join("token.pk8")).expect("key"),
        &ring::rand::SystemRandom::new(),
    )
    .expect("ES256 key");
    let cert = STANDARD.encode(std::fs::read(dir.join("token.der")).expect("cert"));
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let expected = format!("Basic {}", STANDARD.encode(format!("{USER}:{PASSWORD}")));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut request_line = String::new();
            let _ = reader.read_line(&mut request_line);
            let mut authorized = false;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':') {
                    if name.eq_ignore_ascii_case("authorization") && value.trim() == expected {
                        authorized = true;
                    }
                }
            }
            let target = request_line.split_whitespace().nth(1).unwrap_or("");
            let query = target.split_once('?').map_or("", |(_, q)| q);
            let scopes: Vec<String> = query
                .split('&')
                .filter_map(|kv| kv.strip_prefix("scope="))
                .map(percent_decode)
                .collect();
            seen.lock()
                .expect("seen")
                .push((scopes.clone(), authorized));
            let (status, body) = if authorized {
                let access: Vec<_> = scopes
                    .iter()
                    .filter_map(|s| {
                        let mut parts = s.splitn(3, ':');
                        let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
                        Some(json!({ "type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>() }))
                    })
                    .collect();
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .expect("time")
                    .as_secs();
                let header = json!({ "typ": "JWT", "alg": "ES256", "x5c": [cert] });
                let claims = json!({
                    "iss": ISSUER, "sub": USER, "aud": SERVICE,
                    "exp": now + 300, "nbf": now - 10, "iat": now,
                    "jti": format!("{now}-{}", access.len()), "access": access,
                });
                let signing_input = format!(
                    "{}.{}",
                    URL_SAFE_NO_PAD.encode(header.to_string()),
                    URL_SAFE_NO_PAD.encode(claims.to_string())
                );
                let sig = key
                    .sign(&ring::rand::SystemRandom::new(), signing_input.as_bytes())
                    .expect("sign");
                let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()));
                (
                    "200 OK",
                    json!({ "token": token, "expires_in": 300 }).to_string(),
                )
            } else {
                (
                    "401 Unauthorized",
                    r#"{"details":"bad credentials"}"#.to_owned(),
                )
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

#[test]
fn pulls_through_the_bearer_token_flow_of_a_real_registry_as_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root; CI runs as root"
    );
    let keys = tempfile::tempdir().expect("keys");
    openssl(
        keys.path(),
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "token.key",
            "-out",
            "token.pem",
            "-days",
            "2",
            "-subj",
            "/CN=gantry token issuer",
        ],
    );
    openssl(
        keys.path(),
        &[
            "pkcs8",
            "-topk8",
            "-nocrypt",
            "-in",
            "token.key",
            "-outform",
            "DER",
            "-out",
            "token.pk8",
        ],
    );
    openssl(
        keys.path(),
        &[
            "x509",
            "-in",
            "token.pem",
            "-outform",
            "DER",
            "-out",
            "token.der",
        ],
    );
    let seen: Seen = Arc::default();
    let port = token_service(keys.path(), seen.clone());
    let reg = TestRegistry::start_with_auth(&format!(
        "auth:\n  token:\n    realm: http://127.0.0.1:{port}/token\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
        keys.path().join("token.pem").display()
    ));

    let layout = tempfile::tempdir().expect("layout");
    let layers = busybox_layers();
    let d = amd64_image(layout.path(), &layers, Comp::Gzip);
    finish_layout(layout.path(), vec![("v1", d)]);
    reg.push(
        layout.path(),
        "v1",
        "test/tok",
        &[&format!("--dest-creds={USER}:{PASSWORD}")],
    );
    seen.lock().expect("seen").clear();

    let root = tempfile::tempdir().expect("store");
    let root_s = root.path().to_str().expect("utf-8");
    let reference = format!("{}/test/tok:v1", reg.host);
    let (ok, _, err) = gantry(&["--root", root_s, "image", "pull", &reference], None);
    assert!(!ok, "an anonymous pull must be refused");
    assert!(
        err.contains(&format!("127.0.0.1:{port}/token")) && err.contains("401"),
        "{err}"
    );

    let (ok, out, err) = gantry(
        &[
            "--root",
            root_s,
            "image",
            "pull",
            &reference,
            "--username",
            USER,
        ],
        Some(PASSWORD),
    );
    assert!(ok, "{err}");
    assert!(out.starts_with(&reference), "{out}");
    let seen = seen.lock().expect("seen").clone();
    assert!(
        seen.iter().any(|(scopes, authorized)| *authorized
            && scopes == &["repository:test/tok:pull".to_owned()]),
        "the token service saw {seen:?}"
    );
    let (ok, out, err) = gantry(&["--root", root_s, "image", "check"], None);
    assert!(ok, "{out}{err}");
}
