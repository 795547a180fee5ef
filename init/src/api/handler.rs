//! What the API answers, without sockets or TLS: a request's method, target and headers in,
//! a response out. The machine's state comes through [`Backend`], so the routing and the
//! authentication are tested with a fake.
//!
//! Every request is authenticated first, whatever its path: without a valid token the
//! answer is 401 and tells nothing about which paths or containers exist. A token is
//! accepted when its SHA-256 equals one of the configured hashes; the comparison is done
//! on fixed-size digests, against every configured hash, without an early exit.

use std::collections::BTreeSet;

use hyper::header::{HeaderMap, HeaderValue, ALLOW, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Response, StatusCode, Uri};
use serde::Serialize;

use super::config::{TokenConfig, TokenHash};

/// Lines of log a request gets without `?tail=`.
pub const DEFAULT_TAIL: usize = 100;
/// The most lines a request may ask for.
pub const MAX_TAIL: usize = 10_000;

/// The machine's state, as the API reads it.
pub trait Backend {
    /// Every container's status, as PID 1 writes it (a JSON object by container name).
    fn containers(&self) -> Result<serde_json::Value, String>;
    /// The last `lines` lines of the log of `container`, a name from the config.
    fn log_tail(&self, container: &str, lines: usize) -> Result<String, String>;
}

/// `GET /v1/status`.
#[derive(Debug, Serialize)]
struct Status<'a> {
    /// This build of Gantry.
    version: &'a str,
    /// The running release (its os-release).
    os_version: &'a str,
    /// This machine's id (32 hex digits; see `machine_id`).
    machine_id: &'a str,
    /// By container name: state, image, restarts, health, last exit code, last error.
    containers: serde_json::Value,
}

/// The routes of the API and what they need from the config.
#[derive(Debug, Clone)]
pub struct Handler {
    tokens: Vec<TokenConfig>,
    containers: BTreeSet<String>,
    os_version: String,
    machine_id: String,
}

/// What a request was, for the log line: who sent it (a token name) and what came of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The name of the token that was accepted, if one was.
    pub token: Option<String>,
    /// The response status.
    pub status: StatusCode,
}

impl Handler {
    /// The API for machine `machine_id`, whose config names `containers`, running
    /// `os_version`.
    pub fn new(
        tokens: Vec<TokenConfig>,
        containers: BTreeSet<String>,
        os_version: String,
        machine_id: String,
    ) -> Self {
        Handler {
            tokens,
            containers,
            os_version,
            machine_id,
        }
    }

    /// Answers one request. `has_body` is whether the request carries a body (none is
    /// accepted: every route is a read).
    pub fn handle(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        has_body: bool,
        backend: &impl Backend,
    ) -> (Response<String>, Outcome) {
        let token = self.authenticate(headers);
        let response = match &token {
            None => unauthorized(),
            Some(_) if has_body => text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "requests with a body are not accepted\n",
            ),
            Some(_) => self.route(method, uri, backend),
        };
        let outcome = Outcome {
            token,
            status: response.status(),
        };
        (response, outcome)
    }

    /// The name of the token the request carries, if it is one of the configured ones.
    fn authenticate(&self, headers: &HeaderMap) -> Option<String> {
        let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let token = token.trim();
        if token.is_empty() {
            return None;
        }
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let mut presented = [0u8; 32];
        presented.copy_from_slice(digest.as_ref());
        let mut found = None;
        for t in &self.tokens {
            if equal_in_constant_time(&presented, &t.sha256) && found.is_none() {
                found = Some(t.name.clone());
            }
        }
        found
    }

    fn route(&self, method: &Method, uri: &Uri, backend: &impl Backend) -> Response<String> {
        let path = uri.path();
        let logs_of = path
            .strip_prefix("/v1/containers/")
            .and_then(|rest| rest.strip_suffix("/logs"))
            .filter(|name| !name.is_empty() && !name.contains('/'));
        let known = path == "/v1/status" || logs_of.is_some();
        if !known {
            return text(StatusCode::NOT_FOUND, "no such path\n");
        }
        if method != Method::GET {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET is allowed\n");
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET"));
            return r;
        }
        match logs_of {
            None => self.status(uri, backend),
            Some(name) => self.logs(name, uri, backend),
        }
    }

    fn status(&self, uri: &Uri, backend: &impl Backend) -> Response<String> {
        if uri.query().is_some_and(|q| !q.is_empty()) {
            return text(StatusCode::BAD_REQUEST, "/v1/status takes no query\n");
        }
        let containers = match backend.containers() {
            Ok(c) => c,
            Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
        };
        let status = Status {
            version: crate::VERSION,
            os_version: &self.os_version,
            machine_id: &self.machine_id,
            containers,
        };
        match serde_json::to_string_pretty(&status) {
            Ok(body) => {
                let mut r = Response::new(body + "\n");
                r.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                r
            }
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
        }
    }

    fn logs(&self, name: &str, uri: &Uri, backend: &impl Backend) -> Response<String> {
        // The config's own string goes to the backend: nothing of the request reaches a path.
        let Some(container) = self.containers.get(name) else {
            return text(StatusCode::NOT_FOUND, "no such container\n");
        };
        let lines = match tail_of(uri.query().unwrap_or("")) {
            Ok(n) => n,
            Err(e) => return text(StatusCode::BAD_REQUEST, &format!("{e}\n")),
        };
        match backend.log_tail(container, lines) {
            Ok(body) => text(StatusCode::OK, &body),
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
        }
    }
}

/// The `tail=N` of a logs query (the only parameter), 1 to [`MAX_TAIL`].
fn tail_of(query: &str) -> Result<usize, String> {
    let mut tail = DEFAULT_TAIL;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key != "tail" {
            return Err(format!("unknown query parameter {key:?}"));
        }
        tail = value
            .parse()
            .ok()
            .filter(|n| (1..=MAX_TAIL).contains(n))
            .ok_or_else(|| format!("tail={value:?} is not a number from 1 to {MAX_TAIL}"))?;
    }
    Ok(tail)
}

/// Whether two digests are equal, looking at every byte whatever the first difference.
fn equal_in_constant_time(a: &[u8; 32], b: &TokenHash) -> bool {
    let diff = a
        .iter()
        .zip(b.0.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn unauthorized() -> Response<String> {
    let mut r = text(StatusCode::UNAUTHORIZED, "a valid bearer token is needed\n");
    r.headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

fn text(status: StatusCode, body: &str) -> Response<String> {
    let mut r = Response::new(body.to_owned());
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    struct Fake {
        asked: RefCell<Vec<(String, usize)>>,
    }

    impl Backend for Fake {
        fn containers(&self) -> Result<serde_json::Value, String> {
            Ok(serde_json::json!({ "web": { "state": "running", "restarts": 2 } }))
        }
        fn log_tail(&self, container: &str, lines: usize) -> Result<String, String> {
            self.asked.borrow_mut().push((container.to_owned(), lines));
            Ok("one\ntwo\n".to_owned())
        }
    }

    fn hash_of(token: &str) -> TokenHash {
        let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let mut h = [0u8; 32];
        h.copy_from_slice(d.as_ref());
        TokenHash(h)
    }

    fn handler() -> Handler {
        let tokens = vec![
            TokenConfig {
                name: "ops".into(),
                sha256: hash_of("s3cret"),
            },
            TokenConfig {
                name: "ci".into(),
                sha256: hash_of("other"),
            },
        ];
        Handler::new(
            tokens,
            BTreeSet::from(["web".to_owned()]),
            "1.2.3".into(),
            "0123456789abcdef0123456789abcdef".into(),
        )
    }

    fn request(
        method: Method,
        target: &str,
        auth: Option<&str>,
    ) -> (Response<String>, Outcome, Fake) {
        let fake = Fake {
            asked: RefCell::new(Vec::new()),
        };
        let mut headers = HeaderMap::new();
        if let Some(a) = auth {
            headers.insert(AUTHORIZATION, HeaderValue::from_str(a).unwrap());
        }
        let uri: Uri = target.parse().unwrap();
        let (r, o) = handler().handle(&method, &uri, &headers, false, &fake);
        (r, o, fake)
    }

    #[test]
    fn tokens_are_compared_by_their_sha256_in_hex() {
        assert_eq!(
            hash_of("foo"),
            "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
                .parse()
                .unwrap()
        );
    }

    #[test]
    fn without_or_with_a_wrong_token_every_path_is_401() {
        for auth in [
            None,
            Some("Bearer wrong"),
            Some("Bearer "),
            Some("Basic czNjcmV0"),
            Some("s3cret"),
            Some("Bearer s3cret2"),
        ] {
            for target in ["/v1/status", "/v1/containers/web/logs", "/nope"] {
                let (r, o, fake) = request(Method::GET, target, auth);
                assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{auth:?} {target}");
                assert_eq!(r.headers()[WWW_AUTHENTICATE], "Bearer");
                assert_eq!(o.token, None);
                assert!(fake.asked.borrow().is_empty());
            }
        }
    }

    #[test]
    fn the_right_token_gets_the_status_with_versions_and_containers() {
        let (r, o, _) = request(Method::GET, "/v1/status", Some("Bearer s3cret"));
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(o.token.as_deref(), Some("ops"));
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
        let v: serde_json::Value = serde_json::from_str(r.body()).unwrap();
        assert_eq!(v["os_version"], "1.2.3");
        assert_eq!(v["machine_id"], "0123456789abcdef0123456789abcdef");
        assert_eq!(v["version"], crate::VERSION);
        assert_eq!(v["containers"]["web"]["restarts"], 2);
        let (_, o, _) = request(Method::GET, "/v1/status", Some("bearer other"));
        assert_eq!(o.token.as_deref(), Some("ci"));
    }

    #[test]
    fn logs_of_a_configured_container_with_a_tail() {
        let (r, _, fake) = request(
            Method::GET,
            "/v1/containers/web/logs?tail=5",
            Some("Bearer s3cret"),
        );
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.body(), "one\ntwo\n");
        let (_, _, default) = request(
            Method::GET,
            "/v1/containers/web/logs",
            Some("Bearer s3cret"),
        );
        assert_eq!(*fake.asked.borrow(), [("web".to_owned(), 5)]);
        assert_eq!(*default.asked.borrow(), [("web".to_owned(), DEFAULT_TAIL)]);
    }

    #[test]
    fn unknown_containers_and_paths_are_404_and_never_reach_the_backend() {
        for target in [
            "/v1/containers/db/logs",
            "/v1/containers/../logs",
            "/v1/containers/..%2fweb/logs",
            "/v1/containers/web/../web/logs",
            "/v1/containers//logs",
            "/v1/containers/web/logs/x",
            "/v1/status/",
            "/v2/status",
            "/",
        ] {
            let (r, _, fake) = request(Method::GET, target, Some("Bearer s3cret"));
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{target}");
            assert!(fake.asked.borrow().is_empty(), "{target}");
        }
    }

    #[test]
    fn other_methods_are_405_with_allow() {
        for m in [Method::POST, Method::DELETE, Method::PUT, Method::HEAD] {
            let (r, _, _) = request(m.clone(), "/v1/status", Some("Bearer s3cret"));
            assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED, "{m}");
            assert_eq!(r.headers()[ALLOW], "GET");
        }
        let (r, _, _) = request(Method::POST, "/v1/other", Some("Bearer s3cret"));
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn bad_queries_and_bodies_are_refused() {
        for target in [
            "/v1/containers/web/logs?tail=0",
            "/v1/containers/web/logs?tail=10001",
            "/v1/containers/web/logs?tail=-1",
            "/v1/containers/web/logs?tail=",
            "/v1/containers/web/logs?lines=5",
            "/v1/status?verbose=1",
        ] {
            let (r, _, fake) = request(Method::GET, target, Some("Bearer s3cret"));
            assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{target}");
            assert!(fake.asked.borrow().is_empty(), "{target}");
        }
        let fake = Fake {
            asked: RefCell::new(Vec::new()),
        };
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer s3cret"));
        let (r, _) = handler().handle(
            &Method::GET,
            &"/v1/status".parse().unwrap(),
            &headers,
            true,
            &fake,
        );
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
}
