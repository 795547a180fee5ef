//! HTTP(S) downloads for the updater: the channel document, and bundles that resume.
//!
//! A blocking API over `reqwest` (the HTTP client the registry pulls and the metadata
//! client already use): each call builds a current-thread tokio runtime and a client,
//! runs, and drops both. Calls are rare (a channel check an hour, one bundle per update),
//! so nothing is pooled, and a [`Fetcher`] is only its options: it holds no runtime that
//! could be dropped inside an async context. Calling it from inside a tokio runtime is
//! refused ([`FetchError::InsideRuntime`]) rather than left to panic, since PID 1 links it.
//!
//! - [`Fetcher::fetch_small`] reads a small body (the channel document) into memory and
//!   refuses one larger than its cap without reading the rest.
//! - [`Fetcher::download`] writes a large one (a bundle) into a staging file. A partial
//!   file from an earlier attempt is resumed with `Range: bytes=N-`; the `206` reply must
//!   carry `Content-Range: bytes N-(size-1)/size` for exactly the expected size. A `200`
//!   (the server ignores ranges) rewrites the file from the start, and a `416` asks again
//!   for the whole file. A partial longer than the expected size is discarded; a file of
//!   exactly that size is taken as downloaded without asking the server, and a body that
//!   runs past the size is refused (and the partial discarded, as it cannot be the
//!   expected file). Nothing is ever written past the expected size. The file and its
//!   directory are fsynced before `download` returns.
//! - No `If-Range`: the bundle is signed and its digest checked by the caller after the
//!   download, so a partial of another file is caught there; the caller then deletes the
//!   staging file and downloads again.
//! - Time limits: `connect_timeout` for the TCP (and TLS) connection, `stall_timeout` for
//!   any wait on the server after that (the reply's head, each piece of the body). There is
//!   no limit on the whole transfer: a slow but moving download of a large bundle is fine.
//! - Errors name the URL (without any user or password in it) and the reason. Retrying is
//!   the caller's business; every failure leaves a partial that the next call resumes.
//! - Redirects are followed (at most 10), but never to plain `http://` on a host that is
//!   not loopback unless [`FetchOptions::insecure`] is set: a mirror must not be able to
//!   take a machine off TLS. No proxy is used, as PID 1 has no proxy settings
//!   and a test process must not use its own.

use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, RANGE};
use reqwest::StatusCode;
pub use reqwest::Url;

/// Time limits; the defaults suit a machine on a real network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchOptions {
    /// For the connection (TCP and TLS).
    pub connect_timeout: Duration,
    /// For any single wait on the server once connected.
    pub stall_timeout: Duration,
    /// Redirects to plain http on a host that is not loopback are followed.
    pub insecure: bool,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            connect_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(30),
            insecure: false,
        }
    }
}

/// How far a download has come: bytes in the file, of `total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
}

/// What a download did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Downloaded {
    /// The offset the transfer started from: the length of the partial file that was kept.
    pub resumed_from: u64,
    /// Bytes received and written by this call.
    pub transferred: u64,
}

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("downloads cannot run inside an async runtime")]
    InsideRuntime,
    #[error("cannot start a runtime for the download")]
    Runtime(#[source] io::Error),
    #[error("cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
    #[error("{url}: request failed")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url}: no connection within {after:?}")]
    Connect { url: String, after: Duration },
    #[error("{url}: nothing from the server for {after:?}")]
    Stalled { url: String, after: Duration },
    #[error("{url}: HTTP {status}")]
    Status { url: String, status: StatusCode },
    #[error("{url}: the body is more than {max} bytes")]
    TooLarge { url: String, max: u64 },
    #[error("{url}: the server has {got} bytes, not the expected {expected}")]
    SizeMismatch {
        url: String,
        expected: u64,
        got: u64,
    },
    #[error("{url}: partial reply does not match the request for bytes {from}-: {reason}")]
    ContentRange {
        url: String,
        from: u64,
        reason: String,
    },
    #[error("{url}: the body runs past the expected {expected} bytes")]
    TooLong { url: String, expected: u64 },
    #[error("{url}: the body ended at byte {got} of {expected}")]
    Short {
        url: String,
        got: u64,
        expected: u64,
    },
    #[error("cannot open {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot sync {}", path.display())]
    Sync {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Blocking HTTP(S) downloads (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct Fetcher {
    options: FetchOptions,
}

impl Fetcher {
    pub fn new(options: FetchOptions) -> Fetcher {
        Fetcher { options }
    }

    /// The body at `url`, refused when it is not a 2xx reply or is more than `max_bytes`.
    pub fn fetch_small(&self, url: &Url, max_bytes: u64) -> Result<Vec<u8>, FetchError> {
        self.small(url, max_bytes, |http| http.get(url.clone()))
    }

    /// The body of the reply to a POST of `json` with `headers` to `url` (an etcd v3 JSON
    /// gateway call, a FleetLock request), under the same rules as [`Self::fetch_small`].
    pub fn post_small(
        &self,
        url: &Url,
        json: &[u8],
        headers: &[(&'static str, &'static str)],
        max_bytes: u64,
    ) -> Result<Vec<u8>, FetchError> {
        self.small(url, max_bytes, |http| {
            headers.iter().fold(
                http.post(url.clone())
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(json.to_vec()),
                |req, (k, v)| req.header(*k, *v),
            )
        })
    }

    fn small(
        &self,
        url: &Url,
        max_bytes: u64,
        request: impl FnOnce(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<Vec<u8>, FetchError> {
        self.run(|http| async move {
            let shown = shown(url);
            let mut resp = self.send(request(&http), &shown).await?;
            if !resp.status().is_success() {
                return Err(FetchError::Status {
                    url: shown,
                    status: resp.status(),
                });
            }
            let too_large = |url: String| FetchError::TooLarge {
                url,
                max: max_bytes,
            };
            if content_length(&resp).is_some_and(|n| n > max_bytes) {
                return Err(too_large(shown));
            }
            let mut out = Vec::new();
            while let Some(chunk) = self.in_time(resp.chunk(), &shown).await? {
                if out.len() as u64 + chunk.len() as u64 > max_bytes {
                    return Err(too_large(shown));
                }
                out.extend_from_slice(&chunk);
            }
            Ok(out)
        })
    }

    /// Downloads `url`, `expected_size` bytes, into `dest`, resuming a partial `dest`;
    /// `progress` is told after every piece written. The caller checks the digest.
    pub fn download(
        &self,
        url: &Url,
        dest: &Path,
        expected_size: u64,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Downloaded, FetchError> {
        let mut file = Staging::open(dest)?;
        if file.len > expected_size {
            file.restart()?;
        }
        let mut resumed_from = file.len;
        let mut transferred = 0;
        if file.len < expected_size {
            let shown = &shown(url);
            let staging = &mut file;
            let (from, got) = self.run(|http| async move {
                let resp = self
                    .request(&http, url, shown, staging, expected_size)
                    .await?;
                let from = staging.len;
                progress(Progress {
                    done: from,
                    total: expected_size,
                });
                let got = self
                    .stream(resp, shown, staging, expected_size, progress)
                    .await?;
                Ok((from, got))
            })?;
            resumed_from = from;
            transferred = got;
        }
        file.sync()?;
        Ok(Downloaded {
            resumed_from,
            transferred,
        })
    }

    /// Asks for the rest of the file: the reply to stream from `file.len`, which is 0
    /// again when the server answered with the whole file.
    async fn request(
        &self,
        http: &reqwest::Client,
        url: &Url,
        shown: &str,
        file: &mut Staging,
        expected: u64,
    ) -> Result<reqwest::Response, FetchError> {
        loop {
            let from = file.len;
            let mut req = http.get(url.clone());
            if from > 0 {
                req = req.header(RANGE, format!("bytes={from}-"));
            }
            let resp = self.send(req, shown).await?;
            match resp.status() {
                StatusCode::PARTIAL_CONTENT if from > 0 => {
                    check_content_range(&resp, from, expected).map_err(|e| match e {
                        RangeProblem::Total(got) => FetchError::SizeMismatch {
                            url: shown.to_owned(),
                            expected,
                            got,
                        },
                        RangeProblem::Other(reason) => FetchError::ContentRange {
                            url: shown.to_owned(),
                            from,
                            reason,
                        },
                    })?;
                    return Ok(resp);
                }
                StatusCode::OK => {
                    if let Some(got) = content_length(&resp).filter(|n| *n != expected) {
                        return Err(FetchError::SizeMismatch {
                            url: shown.to_owned(),
                            expected,
                            got,
                        });
                    }
                    file.restart()?;
                    return Ok(resp);
                }
                StatusCode::RANGE_NOT_SATISFIABLE if from > 0 => file.restart()?,
                status => {
                    return Err(FetchError::Status {
                        url: shown.to_owned(),
                        status,
                    })
                }
            }
        }
    }

    /// Writes the body to `file` from its end; the bytes written.
    async fn stream(
        &self,
        mut resp: reqwest::Response,
        shown: &str,
        file: &mut Staging,
        expected: u64,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<u64, FetchError> {
        let start = file.len;
        while let Some(chunk) = self.in_time(resp.chunk(), shown).await? {
            if file.len + chunk.len() as u64 > expected {
                file.restart()?;
                return Err(FetchError::TooLong {
                    url: shown.to_owned(),
                    expected,
                });
            }
            file.append(&chunk)?;
            progress(Progress {
                done: file.len,
                total: expected,
            });
        }
        if file.len < expected {
            return Err(FetchError::Short {
                url: shown.to_owned(),
                got: file.len,
                expected,
            });
        }
        Ok(file.len - start)
    }

    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        shown: &str,
    ) -> Result<reqwest::Response, FetchError> {
        self.in_time(req.send(), shown).await
    }

    /// `fut`, failing as stalled after `stall_timeout`.
    async fn in_time<T>(
        &self,
        fut: impl Future<Output = reqwest::Result<T>>,
        shown: &str,
    ) -> Result<T, FetchError> {
        match tokio::time::timeout(self.options.stall_timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) if e.is_timeout() => Err(FetchError::Connect {
                url: shown.to_owned(),
                after: self.options.connect_timeout,
            }),
            Ok(Err(e)) => Err(FetchError::Request {
                url: shown.to_owned(),
                source: e.without_url(),
            }),
            Err(_) => Err(FetchError::Stalled {
                url: shown.to_owned(),
                after: self.options.stall_timeout,
            }),
        }
    }

    /// Runs `job` with a client on a runtime of its own.
    fn run<T, F, Fut>(&self, job: F) -> Result<T, FetchError>
    where
        F: FnOnce(reqwest::Client) -> Fut,
        Fut: Future<Output = Result<T, FetchError>>,
    {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(FetchError::InsideRuntime);
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(FetchError::Runtime)?;
        let insecure = self.options.insecure;
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            match redirect_refused(attempt.previous(), attempt.url(), insecure) {
                Some(reason) => attempt.error(reason),
                None => attempt.follow(),
            }
        });
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(redirects)
            .connect_timeout(self.options.connect_timeout)
            .user_agent(concat!("gantry-updater/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(FetchError::Client)?;
        rt.block_on(job(http))
    }
}

/// Why a redirect to `next` after `previous` is not followed, if it is not: more than 10,
/// or to plain http on a host that is not loopback without `insecure` (the rule
/// [`crate::policy::UpdatePolicy::transport_problem`] applies to the first URL).
fn redirect_refused(previous: &[Url], next: &Url, insecure: bool) -> Option<String> {
    if previous.len() >= 10 {
        return Some("more than 10 redirects".into());
    }
    let plain = next.scheme() == "http" && !crate::policy::is_loopback(next);
    (plain && !insecure).then(|| {
        format!(
            "redirected to plain http ({}) on a host that is not loopback; refused without \
             update.insecure = true",
            shown(next)
        )
    })
}

/// `url` for messages: without a user or password.
fn shown(url: &Url) -> String {
    let mut u = url.clone();
    // Only fails for URLs that cannot have credentials, which then have none to remove.
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.to_string()
}

fn content_length(resp: &reqwest::Response) -> Option<u64> {
    resp.headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

enum RangeProblem {
    /// The server's file has another size.
    Total(u64),
    Other(String),
}

/// Checks that a 206 reply is `bytes from-(expected-1)/expected`, and that its length, if
/// given, is what that range holds.
fn check_content_range(
    resp: &reqwest::Response,
    from: u64,
    expected: u64,
) -> Result<(), RangeProblem> {
    let other = |s: String| RangeProblem::Other(s);
    let value = resp
        .headers()
        .get(CONTENT_RANGE)
        .ok_or_else(|| other("no Content-Range".to_owned()))?;
    let text = value
        .to_str()
        .map_err(|_| other("Content-Range is not text".to_owned()))?;
    let (first, last, total) = parse_content_range(text).ok_or_else(|| {
        other(format!(
            "Content-Range {text:?} is not bytes FIRST-LAST/SIZE"
        ))
    })?;
    if total != expected {
        return Err(RangeProblem::Total(total));
    }
    if first != from || last.checked_add(1) != Some(expected) {
        return Err(other(format!("Content-Range is {text:?}")));
    }
    if let Some(n) = content_length(resp).filter(|n| *n != expected - from) {
        return Err(other(format!(
            "Content-Length {n} does not match Content-Range {text:?}"
        )));
    }
    Ok(())
}

/// `bytes FIRST-LAST/SIZE` (RFC 9110 section 14.4), with FIRST <= LAST < SIZE.
fn parse_content_range(text: &str) -> Option<(u64, u64, u64)> {
    let num = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    let rest = text.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    let (first, last, total) = (num(first)?, num(last)?, num(total)?);
    (first <= last && last < total).then_some((first, last, total))
}

/// The staging file and its length, which is where the next byte goes.
struct Staging {
    file: File,
    path: PathBuf,
    len: u64,
}

impl Staging {
    fn open(path: &Path) -> Result<Staging, FetchError> {
        let open_err = |source| FetchError::Open {
            path: path.to_owned(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(open_err)?;
        let len = file.metadata().map_err(open_err)?.len();
        Ok(Staging {
            file,
            path: path.to_owned(),
            len,
        })
    }

    fn write_err(&self, source: io::Error) -> FetchError {
        FetchError::Write {
            path: self.path.clone(),
            source,
        }
    }

    /// Empties the file, to write it from the start.
    fn restart(&mut self) -> Result<(), FetchError> {
        self.file.set_len(0).map_err(|e| self.write_err(e))?;
        self.len = 0;
        Ok(())
    }

    fn append(&mut self, data: &[u8]) -> Result<(), FetchError> {
        self.file
            .seek(SeekFrom::Start(self.len))
            .and_then(|_| self.file.write_all(data))
            .map_err(|e| self.write_err(e))?;
        self.len += data.len() as u64;
        Ok(())
    }

    /// Makes the file and its name durable.
    fn sync(&self) -> Result<(), FetchError> {
        let sync_err = |path: &Path, source| FetchError::Sync {
            path: path.to_owned(),
            source,
        };
        self.file.sync_all().map_err(|e| sync_err(&self.path, e))?;
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| sync_err(dir, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parses_only_whole_well_ordered_ranges() {
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some((100, 199, 200))
        );
        for bad in [
            "bytes 100-199/*",
            "bytes */200",
            "bytes 100-99/200",
            "bytes 100-200/200",
            "bytes=100-199/200",
            "bytes -1-199/200",
            "bytes 100-+199/200",
            "items 100-199/200",
            "bytes 100-199/99999999999999999999999",
        ] {
            assert_eq!(parse_content_range(bad), None, "{bad}");
        }
    }

    #[test]
    fn redirects_never_go_to_a_remote_plain_http_host_unless_insecure() {
        let u = |s: &str| Url::parse(s).unwrap();
        let tls = [u("https://updates.example.net/c.json")];
        let local = [u("http://127.0.0.1:8080/c.json")];
        let err = redirect_refused(&tls, &u("http://cdn.example.net/c.json"), false).unwrap();
        assert!(err.contains("http://cdn.example.net/c.json"), "{err}");
        assert!(redirect_refused(&tls, &u("http://cdn.example.net/c"), true).is_none());
        assert!(redirect_refused(&tls, &u("http://127.0.0.1:8080/c"), false).is_none());
        assert!(redirect_refused(&tls, &u("https://cdn.example.net/c"), false).is_none());
        // A loopback server cannot hand the machine on to a remote plain one either.
        assert!(redirect_refused(&local, &u("http://cdn.example.net/c"), false).is_some());
        assert!(redirect_refused(&local, &u("http://localhost:81/c"), false).is_none());
        let many = vec![u("https://a.example/"); 10];
        assert!(redirect_refused(&many, &u("https://b.example/"), true).is_some());
    }

    #[test]
    fn urls_in_messages_carry_no_credentials() {
        let u = Url::parse("https://fleet:s3cret@updates.example.net/b.bundle").unwrap();
        assert_eq!(shown(&u), "https://updates.example.net/b.bundle");
    }

    #[test]
    fn refuses_to_run_inside_a_runtime() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let url = Url::parse("http://127.0.0.1:9/").unwrap();
        let got = rt.block_on(async { Fetcher::default().fetch_small(&url, 10) });
        assert!(matches!(got, Err(FetchError::InsideRuntime)), "{got:?}");
    }
}
