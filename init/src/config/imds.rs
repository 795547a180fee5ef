//! An EC2-style instance metadata service (IMDS): `GET /latest/user-data` for the config,
//! `/latest/meta-data/instance-id` and `/latest/meta-data/local-hostname` for the rest.
//!
//! The address is `169.254.169.254:80` unless the kernel command line says otherwise with
//! `gantry.imds=<host>[:<port>]`, or turns IMDS off with `gantry.imds=off`. It cannot come
//! from the machine config, since the config is what IMDS delivers.
//!
//! IMDSv2 first: `PUT /latest/api/token`; when the service answers 403, 404 or 405 (no
//! token service, as with OpenStack and most test servers) the requests go without a token
//! (IMDSv1). A 404 for `user-data` means "this instance has no user data", not an error.
//! Each request has a short timeout; requests that cannot connect, time out or get a 5xx
//! are retried with a growing pause until an overall deadline, because the network is
//! usually still coming up when the client starts.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use super::user_data::MetaData;
use super::MAX_CONFIG_BYTES;

/// Where the service is unless the kernel command line says otherwise.
pub const DEFAULT_ADDR: &str = "169.254.169.254";
/// How long a token asked for lives, in seconds.
const TOKEN_TTL_SECS: &str = "300";

/// Whether and where to ask, from `gantry.imds=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImdsSetting {
    Off,
    At(Endpoint),
}

impl Default for ImdsSetting {
    fn default() -> Self {
        ImdsSetting::At(Endpoint {
            host: DEFAULT_ADDR.to_owned(),
            port: 80,
        })
    }
}

impl FromStr for ImdsSetting {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "off" {
            Ok(ImdsSetting::Off)
        } else {
            s.parse().map(ImdsSetting::At)
        }
    }
}

/// A host (IP address or DNS name) and TCP port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    host: String,
    port: u16,
}

impl FromStr for Endpoint {
    type Err = String;
    /// `host`, `host:port`, `[v6]` or `[v6]:port`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not host[:port]");
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (v6, after) = rest.split_once(']').ok_or_else(bad)?;
            v6.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(bad)?),
            };
            (format!("[{v6}]"), port)
        } else {
            let (host, port) = match s.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            };
            if host.parse::<std::net::Ipv4Addr>().is_err() && !crate::cmdline::valid_hostname(host)
            {
                return Err(bad());
            }
            (host.to_owned(), port)
        };
        let port = match port {
            None => 80,
            Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad)?,
        };
        Ok(Endpoint { host, port })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// How hard to try.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Each request's time limit.
    pub request_timeout: Duration,
    /// When to give up, counted from the first request.
    pub deadline: Duration,
    /// The first pause between attempts; it doubles up to `max_pause`.
    pub first_pause: Duration,
    pub max_pause: Duration,
}

impl Default for Retry {
    /// Generous enough for a DHCP lease under software emulation.
    fn default() -> Self {
        Retry {
            request_timeout: Duration::from_secs(3),
            deadline: Duration::from_secs(120),
            first_pause: Duration::from_millis(500),
            max_pause: Duration::from_secs(5),
        }
    }
}

/// What the service gave.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    /// `user-data`; `None` when the service has none (404).
    pub user_data: Option<Vec<u8>>,
    pub meta: MetaData,
}

/// Why no answer could be had.
#[derive(Debug, thiserror::Error)]
pub enum ImdsError {
    #[error("cannot build the HTTP client: {0}")]
    Client(reqwest::Error),
    #[error("no answer from {url} within {deadline:?}: {last}")]
    Unreachable {
        url: String,
        deadline: Duration,
        last: String,
    },
    #[error("{url}: HTTP {status}")]
    Status { url: String, status: StatusCode },
    #[error("{url}: more than {MAX_CONFIG_BYTES} bytes")]
    TooLarge { url: String },
}

/// One attempt's failure: worth retrying, or final.
enum Failure {
    Retry(String),
    Final(ImdsError),
}

/// An IMDS client for one endpoint.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    retry: Retry,
}

impl Client {
    pub fn new(endpoint: &Endpoint, retry: Retry) -> Result<Client, ImdsError> {
        let http = reqwest::Client::builder()
            // PID 1 has no proxy settings; a test process may, and must not use them.
            .no_proxy()
            .timeout(retry.request_timeout)
            .connect_timeout(retry.request_timeout)
            .build()
            .map_err(ImdsError::Client)?;
        Ok(Client {
            http,
            base: format!("http://{endpoint}"),
            retry,
        })
    }

    /// The base URL, for logs.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Asks for user data and meta data, retrying as the module docs say.
    pub async fn fetch(&self) -> Result<Answer, ImdsError> {
        let start = Instant::now();
        let mut pause = self.retry.first_pause;
        loop {
            match self.attempt().await {
                Ok(answer) => return Ok(answer),
                Err(Failure::Final(e)) => return Err(e),
                Err(Failure::Retry(last)) => {
                    if start.elapsed() + pause >= self.retry.deadline {
                        return Err(ImdsError::Unreachable {
                            url: self.url("/latest/user-data"),
                            deadline: self.retry.deadline,
                            last,
                        });
                    }
                    tracing::debug!(reason = %last, "imds: retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(self.retry.max_pause);
                }
            }
        }
    }

    async fn attempt(&self) -> Result<Answer, Failure> {
        let token = self.token().await?;
        let user_data = self.get("/latest/user-data", token.as_deref()).await?;
        let text = |b: Option<Vec<u8>>| {
            b.map(|b| String::from_utf8_lossy(&b).trim().to_owned())
                .filter(|s| !s.is_empty())
        };
        let instance_id = text(
            self.get("/latest/meta-data/instance-id", token.as_deref())
                .await?,
        );
        let local_hostname = text(
            self.get("/latest/meta-data/local-hostname", token.as_deref())
                .await?,
        );
        Ok(Answer {
            user_data,
            meta: MetaData {
                instance_id,
                local_hostname,
            },
        })
    }

    /// An IMDSv2 session token, or `None` where the service has no token endpoint.
    async fn token(&self) -> Result<Option<String>, Failure> {
        let url = self.url("/latest/api/token");
        let resp = self
            .http
            .put(&url)
            .header("X-aws-ec2-metadata-token-ttl-seconds", TOKEN_TTL_SECS)
            .send()
            .await
            .map_err(|e| Failure::Retry(chain(&e)))?;
        match resp.status() {
            s if s.is_success() => {
                let body = body(resp, &url).await?;
                Ok(Some(String::from_utf8_lossy(&body).trim().to_owned()))
            }
            StatusCode::FORBIDDEN | StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => {
                Ok(None)
            }
            s if s.is_server_error() => Err(Failure::Retry(format!("{url}: HTTP {s}"))),
            status => Err(Failure::Final(ImdsError::Status { url, status })),
        }
    }

    /// The body at `path`; `None` on 404.
    async fn get(&self, path: &str, token: Option<&str>) -> Result<Option<Vec<u8>>, Failure> {
        let url = self.url(path);
        let mut req = self.http.get(&url);
        if let Some(t) = token {
            req = req.header("X-aws-ec2-metadata-token", t);
        }
        let resp = req.send().await.map_err(|e| Failure::Retry(chain(&e)))?;
        match resp.status() {
            s if s.is_success() => body(resp, &url).await.map(Some),
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_server_error() => Err(Failure::Retry(format!("{url}: HTTP {s}"))),
            status => Err(Failure::Final(ImdsError::Status { url, status })),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// A response body, refused past [`MAX_CONFIG_BYTES`] without reading the rest.
async fn body(mut resp: reqwest::Response, url: &str) -> Result<Vec<u8>, Failure> {
    let too_large = || {
        Failure::Final(ImdsError::TooLarge {
            url: url.to_owned(),
        })
    };
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_CONFIG_BYTES as u64)
    {
        return Err(too_large());
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| Failure::Retry(chain(&e)))? {
        if out.len() + chunk.len() > MAX_CONFIG_BYTES {
            return Err(too_large());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// An error and its causes on one line (reqwest's own message hides the cause).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// A real HTTP/1.1 server on 127.0.0.1 for the client's tests and the sources' tests.
#[cfg(test)]
pub(crate) mod test_server {
    use super::Endpoint;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    /// One request as the test server saw it.
    #[derive(Debug, Clone)]
    pub(crate) struct Seen {
        pub(crate) method: String,
        pub(crate) path: String,
        pub(crate) token: Option<String>,
    }

    pub(crate) type Route = dyn Fn(&Seen, usize) -> (u16, Vec<u8>) + Send + Sync;

    /// A real HTTP/1.1 server on 127.0.0.1: one request per connection, answers from
    /// `route(request, how many requests came before)`.
    pub(crate) fn serve(route: Box<Route>) -> (Endpoint, Arc<Mutex<Vec<Seen>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut first = String::new();
                if reader.read_line(&mut first).is_err() {
                    continue;
                }
                let mut parts = first.split_whitespace();
                let method = parts.next().unwrap_or("").to_owned();
                let path = parts.next().unwrap_or("").to_owned();
                let mut token = None;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = line.split_once(':') {
                        if k.eq_ignore_ascii_case("x-aws-ec2-metadata-token") {
                            token = Some(v.trim().to_owned());
                        }
                    }
                }
                let req = Seen {
                    method,
                    path,
                    token,
                };
                let n = log.lock().unwrap().len();
                let (status, body) = route(&req, n);
                log.lock().unwrap().push(req);
                let head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body);
            }
        });
        (format!("127.0.0.1:{port}").parse().unwrap(), seen)
    }
}

#[cfg(test)]
mod tests {
    use super::test_server::serve;
    use super::*;
    use std::net::TcpListener;

    fn quick() -> Retry {
        Retry {
            request_timeout: Duration::from_secs(2),
            deadline: Duration::from_secs(5),
            first_pause: Duration::from_millis(20),
            max_pause: Duration::from_millis(100),
        }
    }

    fn fetch(endpoint: &Endpoint, retry: Retry) -> Result<Answer, ImdsError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(Client::new(endpoint, retry).unwrap().fetch())
    }

    #[test]
    fn gets_user_data_and_meta_data_with_an_imdsv2_token() {
        let (ep, seen) = serve(Box::new(|r, _| {
            match (r.method.as_str(), r.path.as_str()) {
                ("PUT", "/latest/api/token") => (200, b"tok-1".to_vec()),
                _ if r.token.as_deref() != Some("tok-1") => (401, Vec::new()),
                ("GET", "/latest/user-data") => (200, b"version = 1\n".to_vec()),
                ("GET", "/latest/meta-data/instance-id") => (200, b"i-0abc\n".to_vec()),
                ("GET", "/latest/meta-data/local-hostname") => (200, b"ip-10-0-0-5".to_vec()),
                _ => (404, Vec::new()),
            }
        }));
        let a = fetch(&ep, quick()).unwrap();
        assert_eq!(a.user_data.as_deref(), Some(&b"version = 1\n"[..]));
        assert_eq!(a.meta.instance_id.as_deref(), Some("i-0abc"));
        assert_eq!(a.meta.local_hostname.as_deref(), Some("ip-10-0-0-5"));
        assert_eq!(seen.lock().unwrap().len(), 4);
    }

    #[test]
    fn no_token_service_and_no_user_data_is_an_empty_answer() {
        let (ep, seen) = serve(Box::new(|r, _| match r.path.as_str() {
            "/latest/api/token" => (405, Vec::new()),
            "/latest/meta-data/instance-id" => (200, b"iid-1".to_vec()),
            _ => (404, Vec::new()),
        }));
        let a = fetch(&ep, quick()).unwrap();
        assert_eq!(a.user_data, None);
        assert_eq!(a.meta.instance_id.as_deref(), Some("iid-1"));
        assert_eq!(a.meta.local_hostname, None);
        assert!(seen.lock().unwrap().iter().all(|s| s.token.is_none()));
    }

    #[test]
    fn server_errors_are_retried() {
        let (ep, _) = serve(Box::new(|r, n| match r.path.as_str() {
            _ if n < 3 => (503, Vec::new()),
            "/latest/user-data" => (200, b"version = 1".to_vec()),
            _ => (404, Vec::new()),
        }));
        let a = fetch(&ep, quick()).unwrap();
        assert_eq!(a.user_data.as_deref(), Some(&b"version = 1"[..]));
    }

    #[test]
    fn client_errors_are_final() {
        let (ep, seen) = serve(Box::new(|r, _| match r.path.as_str() {
            "/latest/api/token" => (404, Vec::new()),
            _ => (401, Vec::new()),
        }));
        let e = fetch(&ep, quick()).unwrap_err();
        assert!(
            matches!(e, ImdsError::Status { status, .. } if status == 401),
            "{e}"
        );
        assert_eq!(seen.lock().unwrap().len(), 2, "no retry after a 4xx");
    }

    #[test]
    fn nothing_listening_gives_up_at_the_deadline() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let retry = Retry {
            deadline: Duration::from_millis(300),
            ..quick()
        };
        let e = fetch(&format!("127.0.0.1:{port}").parse().unwrap(), retry).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, ImdsError::Unreachable { .. }), "{text}");
        assert!(text.contains("/latest/user-data"), "{text}");
    }

    #[test]
    fn oversized_user_data_is_refused() {
        let (ep, _) = serve(Box::new(|r, _| match r.path.as_str() {
            "/latest/user-data" => (200, vec![b'#'; MAX_CONFIG_BYTES + 1]),
            _ => (404, Vec::new()),
        }));
        let e = fetch(&ep, quick()).unwrap_err();
        assert!(matches!(e, ImdsError::TooLarge { .. }), "{e}");
    }

    #[test]
    fn endpoints_parse_with_and_without_ports() {
        let ep = |s: &str| s.parse::<Endpoint>().map(|e| e.to_string());
        assert_eq!(ep("169.254.169.254").unwrap(), "169.254.169.254:80");
        assert_eq!(ep("10.0.2.100:8080").unwrap(), "10.0.2.100:8080");
        assert_eq!(ep("[fd00:ec2::254]").unwrap(), "[fd00:ec2::254]:80");
        assert_eq!(ep("metadata.internal:80").unwrap(), "metadata.internal:80");
        for bad in [
            "",
            "a b",
            "1.2.3.4:0",
            "1.2.3.4:x",
            "[::1",
            "[zz]:80",
            "h:1:2",
        ] {
            assert!(ep(bad).is_err(), "{bad:?}");
        }
        assert_eq!("off".parse::<ImdsSetting>(), Ok(ImdsSetting::Off));
        assert_eq!(
            ImdsSetting::default(),
            ImdsSetting::At("169.254.169.254".parse().unwrap())
        );
    }
}
