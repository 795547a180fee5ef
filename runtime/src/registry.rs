//! A client for the OCI distribution API (Docker registry v2): manifests and blobs, with
//! anonymous access, HTTP basic auth and the bearer-token challenge flow.
//!
//! HTTPS is the rule. Plain HTTP is used only for a loopback registry or one the caller
//! marks insecure, and even then only after HTTPS failed to connect, as Docker does. Extra
//! CA certificates (PEM) are trusted on top of the built-in web roots. Every manifest is
//! checked against the digest it was asked for (or the `Docker-Content-Digest` the registry
//! announced); blobs are checked by the caller's [`crate::Blobs`].

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use reqwest::header::{
    HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_RANGE, RANGE, WWW_AUTHENTICATE,
};
use reqwest::{RequestBuilder, Response, StatusCode};

use crate::blobs::PartialBlob;
use crate::challenge::{Challenge, Scheme};
use crate::manifest;
use crate::reference::{Digest, ImageRef};
use crate::token_realm::RealmPolicy;
pub use crate::token_realm::BUILTIN_TOKEN_REALMS;

/// The largest manifest we read (Distribution refuses to store bigger ones).
const MAX_MANIFEST: usize = 4 * 1024 * 1024;
/// The largest token-service reply we read.
const MAX_TOKEN_REPLY: usize = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// How to reach registries: which may be spoken to over plain HTTP, which CAs to trust,
/// and the credentials for each registry host (`host[:port]`, as in references).
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    pub insecure: Vec<String>,
    pub ca_certs_pem: Vec<Vec<u8>>,
    pub credentials: BTreeMap<String, Credentials>,
    /// By registry, the hosts (`host` for any port, or `host:port`) besides the registry's
    /// own whose bearer token realms may receive its credentials. Docker Hub's
    /// `auth.docker.io` is built in ([`BUILTIN_TOKEN_REALMS`]). A realm on any other host
    /// is asked for an anonymous token.
    pub token_realms: BTreeMap<String, Vec<String>>,
    /// Seconds to wait for a connection; 0 means the default (15 s).
    pub connect_timeout_secs: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry {registry}: CA certificate {index}: {source}")]
    Ca {
        registry: String,
        index: usize,
        source: reqwest::Error,
    },
    #[error("registry {registry}: cannot build a client: {source}")]
    Client {
        registry: String,
        source: reqwest::Error,
    },
    #[error("{url}: {source}")]
    Request { url: String, source: reqwest::Error },
    #[error("{url}: registry answered {status}{}", detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Status {
        url: String,
        status: StatusCode,
        detail: Option<String>,
    },
    #[error("registry {registry}: {reason}")]
    Auth { registry: String, reason: String },
    #[error(
        "registry {registry}: token realm host {realm} is not allowed to receive credentials \
         for it, and {what} (to allow the host: `gantry pull --token-realm {realm}`, or \
         token_realms in the machine config's registries.auth.\"{registry}\")"
    )]
    RealmNotAllowed {
        registry: String,
        realm: String,
        what: &'static str,
        #[source]
        source: Option<Box<RegistryError>>,
    },
    #[error("{url}: reply is larger than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error("manifest {wanted}: {}", match got {
        Some(got) => format!("registry served content with digest {got}"),
        None => "only sha256 digests are verified".to_owned(),
    })]
    ManifestDigest { wanted: String, got: Option<Digest> },
    #[error("blob {digest}: {reason}")]
    Range { digest: Digest, reason: String },
    #[error("blob {digest}: cannot write the download: {source}")]
    Write {
        digest: Digest,
        source: std::io::Error,
    },
}

/// A fetched manifest: its bytes, the media type the registry gave, and its digest.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub bytes: Vec<u8>,
    pub content_type: Option<String>,
    pub digest: Digest,
}

#[derive(Debug, Clone)]
enum Auth {
    Anonymous,
    Basic,
    Bearer(HeaderValue),
}

/// A connection to one repository on one registry.
#[derive(Debug)]
pub struct Registry {
    http: reqwest::Client,
    /// `https://host[:port]` or `http://host[:port]`.
    base: String,
    registry: String,
    repository: String,
    credentials: Option<Credentials>,
    /// The token realms that may receive the credentials.
    realms: RealmPolicy,
    /// Hosts that may be spoken to over plain HTTP (besides loopback).
    insecure: Vec<String>,
    /// The authorization that last worked.
    auth: Mutex<Auth>,
}

/// A copy of a blob's bytes, in order, for a reader that works on them as they arrive (the
/// layer unpacker), so that unpacking overlaps the download. The copy stays whole only
/// while chunks come in order from where it started: a download that starts over breaks
/// it, and what the reader made of it must then be thrown away.
#[derive(Debug)]
pub struct Tee {
    tx: Option<tokio::sync::mpsc::Sender<Vec<u8>>>,
    next: u64,
    broken: bool,
}

impl Tee {
    /// A copy that goes to `tx` and starts at byte `from` (what the reader gets
    /// elsewhere, from an earlier partial download, comes before it).
    pub fn new(tx: tokio::sync::mpsc::Sender<Vec<u8>>, from: u64) -> Self {
        Self {
            tx: Some(tx),
            next: from,
            broken: false,
        }
    }

    /// A copy that goes nowhere.
    pub fn none() -> Self {
        Self {
            tx: None,
            next: 0,
            broken: true,
        }
    }

    pub(crate) async fn feed(&mut self, at: u64, chunk: &[u8]) {
        if at != self.next {
            self.broken = true;
            self.tx = None;
        }
        if let Some(tx) = &self.tx {
            // A reader that hung up has finished (or failed) on what it got.
            if tx.send(chunk.to_vec()).await.is_err() {
                self.tx = None;
            }
        }
        self.next = at + chunk.len() as u64;
    }

    /// Ends the copy (the reader sees the end of its stream) and says whether the reader
    /// was offered exactly bytes `0..size`, in order.
    pub fn close(mut self, size: u64) -> bool {
        self.tx = None;
        !self.broken && self.next == size
    }
}

impl Registry {
    /// Connects to the registry that serves `image` and settles the scheme.
    pub async fn connect(image: &ImageRef, opts: &RegistryOptions) -> Result<Self, RegistryError> {
        let registry = image.registry().to_owned();
        let host = image.api_host().to_owned();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(match opts.connect_timeout_secs {
                0 => 15,
                n => n,
            }))
            .user_agent(concat!("gantry/", env!("CARGO_PKG_VERSION")))
            // Registries redirect blob downloads to storage; reqwest drops the
            // Authorization header when a redirect leaves the host, but not when it only
            // leaves HTTPS, so that is refused here.
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                let downgrade = attempt.url().scheme() == "http"
                    && attempt.previous().iter().any(|u| u.scheme() == "https");
                if downgrade {
                    attempt.error("redirect from https to plain http refused")
                } else if attempt.previous().len() > 5 {
                    attempt.error("more than 5 redirects")
                } else {
                    attempt.follow()
                }
            }))
            .no_proxy();
        for (index, pem) in opts.ca_certs_pem.iter().enumerate() {
            let cert = reqwest::Certificate::from_pem(pem).map_err(|source| RegistryError::Ca {
                registry: registry.clone(),
                index,
                source,
            })?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder.build().map_err(|source| RegistryError::Client {
            registry: registry.clone(),
            source,
        })?;
        let plain_allowed =
            is_loopback(&host) || opts.insecure.iter().any(|h| *h == registry || *h == host);
        let realms = RealmPolicy::new(
            &registry,
            &host,
            opts.token_realms.get(&registry).map_or(&[], Vec::as_slice),
        );
        let mut this = Self {
            http,
            base: format!("https://{host}"),
            credentials: opts.credentials.get(&registry).cloned(),
            realms,
            insecure: opts.insecure.clone(),
            registry,
            repository: image.repository().to_owned(),
            auth: Mutex::new(Auth::Anonymous),
        };
        // Ping /v2/ over HTTPS; fall back to HTTP only where that is allowed.
        match this.ping().await {
            Ok(()) => Ok(this),
            Err(RegistryError::Request { source, .. })
                if plain_allowed && (source.is_connect() || source.is_request()) =>
            {
                this.base = format!("http://{host}");
                this.ping().await?;
                Ok(this)
            }
            Err(e) => Err(e),
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    async fn ping(&self) -> Result<(), RegistryError> {
        let url = format!("{}/v2/", self.base);
        let resp = self.send(&url, || self.http.get(&url)).await?;
        ok_or_status(&url, resp).await.map(|_| ())
    }

    /// Fetches a manifest by tag or digest and checks it against that digest, or against
    /// the digest the registry announced for a tag.
    pub async fn manifest(&self, reference: &str) -> Result<FetchedManifest, RegistryError> {
        if reference.contains(':') && !reference.starts_with("sha256:") {
            return Err(RegistryError::ManifestDigest {
                wanted: reference.to_owned(),
                got: None,
            });
        }
        let url = format!("{}/v2/{}/manifests/{reference}", self.base, self.repository);
        let accept = manifest::ACCEPT.join(", ");
        let resp = self
            .send(&url, || self.http.get(&url).header(ACCEPT, &accept))
            .await?;
        let resp = ok_or_status(&url, resp).await?;
        let content_type = header_str(resp.headers(), reqwest::header::CONTENT_TYPE);
        let announced = header_str(resp.headers(), "docker-content-digest");
        let bytes = read_limited(&url, resp, MAX_MANIFEST).await?;
        let got = Digest::sha256_of(&bytes);
        let wanted = if reference.contains(':') {
            Some(reference.to_owned())
        } else {
            announced.filter(|a| a.starts_with("sha256:"))
        };
        if let Some(wanted) = wanted {
            if wanted != got.to_string() {
                return Err(RegistryError::ManifestDigest {
                    wanted,
                    got: Some(got),
                });
            }
        }
        Ok(FetchedManifest {
            bytes,
            content_type,
            digest: got,
        })
    }

    /// Fetches a small blob (a config) into memory, at most `size` bytes.
    pub async fn small_blob(&self, digest: &Digest, size: u64) -> Result<Vec<u8>, RegistryError> {
        let url = self.blob_url(digest);
        let resp = self.send(&url, || self.http.get(&url)).await?;
        let resp = ok_or_status(&url, resp).await?;
        let limit = usize::try_from(size)
            .unwrap_or(usize::MAX)
            .min(MAX_MANIFEST * 4);
        read_limited(&url, resp, limit).await
    }

    /// Appends blob `digest` to `partial`, asking only for what it lacks with a range
    /// request. `on_bytes` sees each chunk's length. A registry that ignores the range
    /// sends the whole blob: then the partial starts over. Returns the offset the download
    /// really started from.
    pub async fn download_blob(
        &self,
        digest: &Digest,
        size: u64,
        partial: &mut PartialBlob,
        tee: &mut Tee,
        on_bytes: &(dyn Fn(u64) + Sync),
    ) -> Result<u64, RegistryError> {
        let offset = partial.len();
        let url = self.blob_url(digest);
        let resp = self
            .send(&url, || {
                let req = self.http.get(&url);
                if offset > 0 {
                    req.header(RANGE, format!("bytes={offset}-"))
                } else {
                    req
                }
            })
            .await?;
        let write_err = |source| RegistryError::Write {
            digest: digest.clone(),
            source,
        };
        let range_err = |reason: String| RegistryError::Range {
            digest: digest.clone(),
            reason,
        };
        let (mut resp, start) = match resp.status() {
            StatusCode::PARTIAL_CONTENT if offset > 0 => {
                let range = header_str(resp.headers(), CONTENT_RANGE).unwrap_or_default();
                if !content_range_fits(&range, offset, size) {
                    return Err(range_err(format!(
                        "asked for bytes {offset}- of {size} and got Content-Range {range:?}"
                    )));
                }
                (resp, offset)
            }
            StatusCode::OK => {
                if offset > 0 {
                    partial.restart().map_err(write_err)?;
                }
                (resp, 0)
            }
            StatusCode::RANGE_NOT_SATISFIABLE if offset > 0 => {
                // The registry disagrees about what is left: start the blob over.
                partial.restart().map_err(write_err)?;
                return Err(range_err(format!(
                    "registry refused bytes {offset}- (416); the partial download was dropped"
                )));
            }
            status if status.is_success() => {
                return Err(RegistryError::Status {
                    url,
                    status,
                    detail: Some("expected 200, or 206 for a range request".to_owned()),
                })
            }
            _ => return Err(error_status(&url, resp).await),
        };
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|source| RegistryError::Request {
                url: url.clone(),
                source,
            })?
        {
            if partial.len() + chunk.len() as u64 > size {
                partial.restart().map_err(write_err)?;
                return Err(range_err(format!(
                    "registry sent more than the {size} bytes the manifest gives"
                )));
            }
            let at = partial.len();
            partial.write_chunk(&chunk).map_err(write_err)?;
            tee.feed(at, &chunk).await;
            on_bytes(chunk.len() as u64);
        }
        Ok(start)
    }

    fn blob_url(&self, digest: &Digest) -> String {
        format!("{}/v2/{}/blobs/{digest}", self.base, self.repository)
    }

    /// Sends a request with the authorization that last worked; on a 401 answers the
    /// challenge once and sends it again.
    async fn send(
        &self,
        url: &str,
        make: impl Fn() -> RequestBuilder,
    ) -> Result<Response, RegistryError> {
        let request_err = |source| RegistryError::Request {
            url: url.to_owned(),
            source,
        };
        let current = self
            .auth
            .lock()
            .map(|a| a.clone())
            .unwrap_or(Auth::Anonymous);
        let with_auth = |auth: &Auth| match (auth, &self.credentials) {
            (Auth::Basic, Some(c)) => make().basic_auth(&c.username, Some(&c.password)),
            (Auth::Bearer(v), _) => make().header(AUTHORIZATION, v.clone()),
            _ => make(),
        };
        let resp = with_auth(&current).send().await.map_err(request_err)?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        // A redirect target (blob storage, a CDN) that asks for authorization does not get
        // the registry's credentials, nor a token got with them: only the registry's own
        // challenge is answered. reqwest already drops Authorization on a redirect that
        // changes host or port, so the retry below never carries it there either.
        if !same_origin(resp.url(), &self.base) {
            let origin = origin_of(resp.url());
            return Err(self.auth_error(format!(
                "{url}: redirected to {origin}, which answered 401; challenges from hosts \
                 other than the registry are not answered with its credentials"
            )));
        }
        let challenge = resp
            .headers()
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| Challenge::parse(v).ok())
            .ok_or_else(|| {
                self.auth_error(format!(
                    "{url} answered 401 without a usable WWW-Authenticate challenge"
                ))
            })?;
        let (value, withheld) = self.answer(&challenge).await?;
        if let Ok(mut a) = self.auth.lock() {
            *a = value.clone();
        }
        let resp = with_auth(&value).send().await.map_err(request_err)?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            if let Some(realm) = withheld {
                return Err(RegistryError::RealmNotAllowed {
                    registry: self.registry.clone(),
                    realm,
                    what: "the registry refused the anonymous token it gave",
                    source: None,
                });
            }
            let who = match &self.credentials {
                Some(c) => format!("credentials for user {:?} were refused", c.username),
                None => "it requires credentials and none are configured".to_owned(),
            };
            return Err(self.auth_error(format!("{url}: {who}")));
        }
        Ok(resp)
    }

    fn auth_error(&self, reason: String) -> RegistryError {
        RegistryError::Auth {
            registry: self.registry.clone(),
            reason,
        }
    }

    /// The authorization that answers `challenge`, and the realm host that was not given
    /// the credentials, if one was not.
    async fn answer(&self, challenge: &Challenge) -> Result<(Auth, Option<String>), RegistryError> {
        match challenge.scheme {
            Scheme::Basic => {
                if self.credentials.is_none() {
                    return Err(self.auth_error(
                        "it requires credentials and none are configured (basic auth)".to_owned(),
                    ));
                }
                Ok((Auth::Basic, None))
            }
            Scheme::Bearer => {
                let realm = challenge.param("realm").ok_or_else(|| {
                    self.auth_error("bearer challenge without a realm".to_owned())
                })?;
                let (token, withheld) = self.token(realm, challenge).await?;
                let mut v = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                    self.auth_error(
                        "the token service sent a token a header cannot carry".to_owned(),
                    )
                })?;
                v.set_sensitive(true);
                Ok((Auth::Bearer(v), withheld))
            }
        }
    }

    /// Asks the token service named in a bearer challenge for a pull token, with the
    /// registry's credentials only if the realm's host may have them (see
    /// [`crate::token_realm`]); returns the token and the realm's host if it asked
    /// without credentials it has.
    async fn token(
        &self,
        realm: &str,
        challenge: &Challenge,
    ) -> Result<(String, Option<String>), RegistryError> {
        let mut url = reqwest::Url::parse(realm)
            .map_err(|e| self.auth_error(format!("bearer realm {realm:?}: {e}")))?;
        // Credentials go in the clear only to this machine or a host the caller marked
        // insecure, never because the registry itself happens to be plain HTTP.
        let realm_host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            (None, _) => String::new(),
        };
        let plain_ok = is_loopback(&realm_host)
            || self
                .insecure
                .iter()
                .any(|h| *h == realm_host || Some(h.as_str()) == url.host_str());
        if url.scheme() != "https" && !(url.scheme() == "http" && plain_ok) {
            return Err(self.auth_error(format!(
                "bearer realm {realm:?} is not https; credentials are not sent in the clear"
            )));
        }
        let scope = challenge
            .param("scope")
            .map(str::to_owned)
            .unwrap_or_else(|| format!("repository:{}:pull", self.repository));
        {
            let mut q = url.query_pairs_mut();
            if let Some(service) = challenge.param("service") {
                q.append_pair("service", service);
            }
            q.append_pair("scope", &scope);
        }
        let withheld = match &self.credentials {
            Some(_) if !self.realms.allows(&url) => Some(realm_host),
            _ => None,
        };
        let credentials = self.credentials.as_ref().filter(|_| withheld.is_none());
        match self.request_token(url, credentials).await {
            Ok(token) => Ok((token, withheld)),
            Err(e) => match withheld {
                Some(realm) => Err(RegistryError::RealmNotAllowed {
                    registry: self.registry.clone(),
                    realm,
                    what: "an anonymous token request failed",
                    source: Some(Box::new(e)),
                }),
                None => Err(e),
            },
        }
    }

    async fn request_token(
        &self,
        url: reqwest::Url,
        credentials: Option<&Credentials>,
    ) -> Result<String, RegistryError> {
        let url_text = url.to_string();
        let mut req = self.http.get(url);
        if let Some(c) = credentials {
            req = req.basic_auth(&c.username, Some(&c.password));
        }
        let resp = req.send().await.map_err(|source| RegistryError::Request {
            url: url_text.clone(),
            source,
        })?;
        let resp = ok_or_status(&url_text, resp).await?;
        let body = read_limited(&url_text, resp, MAX_TOKEN_REPLY).await?;
        #[derive(serde::Deserialize)]
        struct Reply {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
        }
        let reply: Reply = serde_json::from_slice(&body)
            .map_err(|e| self.auth_error(format!("token service {url_text}: {e}")))?;
        reply
            .token
            .or(reply.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| self.auth_error(format!("token service {url_text} sent no token")))
    }
}

fn header_str(headers: &HeaderMap, name: impl reqwest::header::AsHeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn ok_or_status(url: &str, resp: Response) -> Result<Response, RegistryError> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    Err(error_status(url, resp).await)
}

/// Whether `Content-Range: bytes a-b/total` answers a request for `offset-` of a blob of
/// `size` bytes.
fn content_range_fits(header: &str, offset: u64, size: u64) -> bool {
    let Some(rest) = header.trim().strip_prefix("bytes ") else {
        return false;
    };
    let Some((span, total)) = rest.split_once('/') else {
        return false;
    };
    let Some((first, last)) = span.split_once('-') else {
        return false;
    };
    let (Ok(first), Ok(last)) = (first.parse::<u64>(), last.parse::<u64>()) else {
        return false;
    };
    let total_ok = total == "*" || total.parse::<u64>() == Ok(size);
    first == offset && last.checked_add(1) == Some(size) && total_ok
}

/// The error for a reply that is not a success.
async fn error_status(url: &str, resp: Response) -> RegistryError {
    let status = resp.status();
    // The registry's error document names the problem (MANIFEST_UNKNOWN, …); keep a bit.
    let detail = read_limited(url, resp, 4096)
        .await
        .ok()
        .map(|b| {
            String::from_utf8_lossy(&b)
                .trim()
                .chars()
                .take(300)
                .collect::<String>()
        })
        .filter(|s| !s.is_empty());
    RegistryError::Status {
        url: url.to_owned(),
        status,
        detail,
    }
}

async fn read_limited(
    url: &str,
    mut resp: Response,
    limit: usize,
) -> Result<Vec<u8>, RegistryError> {
    let too_large = || RegistryError::TooLarge {
        url: url.to_owned(),
        limit,
    };
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|source| RegistryError::Request {
            url: url.to_owned(),
            source,
        })?
    {
        if out.len() + chunk.len() > limit {
            return Err(too_large());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Whether `url` has the scheme, host and port of `base`.
fn same_origin(url: &reqwest::Url, base: &str) -> bool {
    reqwest::Url::parse(base).is_ok_and(|b| {
        b.scheme() == url.scheme()
            && b.host_str() == url.host_str()
            && b.port_or_known_default() == url.port_or_known_default()
    })
}

/// `scheme://host:port` of `url`, for messages.
fn origin_of(url: &reqwest::Url) -> String {
    format!(
        "{}://{}:{}",
        url.scheme(),
        url.host_str().unwrap_or(""),
        url.port_or_known_default().unwrap_or(0)
    )
}

/// Whether `host[:port]` names this machine.
fn is_loopback(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_must_answer_the_range_asked_for() {
        assert!(content_range_fits("bytes 100-999/1000", 100, 1000));
        assert!(content_range_fits("bytes 100-999/*", 100, 1000));
        assert!(!content_range_fits("bytes 0-999/1000", 100, 1000));
        assert!(!content_range_fits("bytes 100-499/1000", 100, 1000));
        assert!(!content_range_fits("bytes 100-999/2000", 100, 1000));
        assert!(!content_range_fits("bytes 100-/1000", 100, 1000));
        assert!(!content_range_fits("items 100-999/1000", 100, 1000));
        assert!(!content_range_fits("", 100, 1000));
    }

    #[test]
    fn loopback_hosts_are_recognised() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.9.9.9",
            "[::1]:443",
            "[::1]",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "registry-1.docker.io",
            "10.0.0.1:5000",
            "localhost.example.com",
            "[2001:db8::1]:5000",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
    }
}
