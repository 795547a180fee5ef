//! PID 1's API: a small, read-only HTTPS server, on when the machine config has an `[api]`
//! section ([`config`]).
//!
//! - `GET /v1/status`: the Gantry version, the running release's version, and every
//!   container's status as the supervisor writes it to
//!   [`STATUS_FILE`](crate::supervisor::STATUS_FILE) (state, image, restarts, health, last
//!   exit code, last error), as JSON.
//! - `GET /v1/containers/<name>/logs?tail=N`: the last N lines (default 100, at most
//!   10 000, at most 1 MiB) of `/var/log/containers/<name>.log`, as text. `<name>` must be
//!   a container of the config; the file name is built from the config's copy of it.
//!
//! Every request needs `Authorization: Bearer <token>` with a token whose SHA-256 the config
//! lists (401 otherwise, for every path); unknown paths and containers are 404, other
//! methods 405, requests with a body 413. What to answer is [`handler`], free of I/O.
//!
//! Choices:
//! - HTTPS only, with rustls and ring (already in the image for the registry client), and
//!   HTTP/1.1 only: hyper's HTTP/1 server and tokio-rustls, both already in the tree
//!   through reqwest. No HTTP/2: one protocol, fewer limits to get right.
//! - Limits ([`Limits`]): 16 connections at once and 4 from one source address (more are
//!   closed at once), 5 s for the TLS handshake and 5 s to send the request head, 16 KiB and 64 header lines for it, 60 s per connection.
//! - The server has its own thread and a current-thread tokio runtime: nothing it does can
//!   block PID 1's event loop. It never ends: a listener that cannot be bound (an address
//!   not up yet) is retried every 5 s, accept errors back off, a panic is caught, logged,
//!   and the server starts again.
//! - The backend reads are small synchronous file reads, done inline on that runtime.

pub mod config;
pub mod handler;

use std::convert::Infallible;
use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::{Body as _, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tracing::{error, info, warn};

pub use config::ApiConfig;
pub use handler::{Backend, Handler};

/// Logged when the API listens, with `address=`.
pub const API_LISTENING: &str = "gantry-init: api listening";
/// Logged for each request, with `peer= method= path= status= token=`.
pub const API_REQUEST: &str = "gantry-init: api request";

/// How many connections the server holds, and how long one may take to say who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections at once, from everyone; more are closed at once.
    pub max_connections: usize,
    /// Connections at once from one source address; more are closed at once.
    pub per_peer: usize,
    /// Each of the TLS handshake and the request head must arrive within this.
    pub pre_auth: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 16,
            per_peer: 4,
            pre_auth: Duration::from_secs(5),
        }
    }
}

/// A connection counted against its peer's share until dropped.
struct PeerSlot {
    peers: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
    ip: std::net::IpAddr,
}

impl PeerSlot {
    fn take(
        peers: &Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
        ip: std::net::IpAddr,
        limit: usize,
    ) -> Option<PeerSlot> {
        let mut map = peers.lock().unwrap_or_else(|p| p.into_inner());
        let held = map.entry(ip).or_insert(0);
        if *held >= limit {
            return None;
        }
        *held += 1;
        Some(PeerSlot {
            peers: peers.clone(),
            ip,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut map = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(held) = map.get_mut(&self.ip) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                map.remove(&self.ip);
            }
        }
    }
}
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);
/// hyper's read buffer, which bounds the request head (hyper's minimum is 8 KiB).
const MAX_HEAD_BYTES: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;
const RETRY: Duration = Duration::from_secs(5);
const ACCEPT_BACKOFF: Duration = Duration::from_millis(200);
/// The most bytes of log one request gets.
const MAX_TAIL_BYTES: u64 = 1 << 20;
const TAIL_CHUNK: u64 = 64 * 1024;

/// The API cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The certificate or key cannot be used (the config check should have said so).
    #[error("api.{0}: {1}")]
    Tls(String, String),
    /// No thread for the server.
    #[error("cannot start the api thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// The machine as PID 1 runs it: the supervisor's status file and the container logs.
#[derive(Debug, Clone)]
pub struct Host {
    /// The supervisor's status JSON.
    pub status_file: PathBuf,
    /// Where `<name>.log` of each container is.
    pub log_dir: PathBuf,
}

impl Host {
    /// The real paths.
    pub fn for_pid1() -> Host {
        Host {
            status_file: crate::supervisor::STATUS_FILE.into(),
            log_dir: crate::supervisor::launcher::LOG_DIR.into(),
        }
    }
}

impl Backend for Host {
    fn containers(&self) -> Result<serde_json::Value, String> {
        match std::fs::read(&self.status_file) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| format!("cannot parse {}: {e}", self.status_file.display())),
            // Supervision has not started yet (the config or the store check is pending).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(serde_json::json!({})),
            Err(e) => Err(format!("cannot read {}: {e}", self.status_file.display())),
        }
    }

    fn log_tail(&self, container: &str, lines: usize) -> Result<String, String> {
        let path = self.log_dir.join(format!("{container}.log"));
        tail_lines(&path, lines).map_err(|e| format!("cannot read {}: {e}", path.display()))
    }
}

/// The last `lines` lines of the file at `path` (empty when it does not exist), reading
/// at most `MAX_TAIL_BYTES` (1 MiB) from its end; a line cut by that limit is left out.
pub fn tail_lines(path: &Path, lines: usize) -> std::io::Result<String> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => return Err(e),
    };
    let mut pos = file.metadata()?.len();
    let mut buf: Vec<u8> = Vec::new();
    let body = |buf: &[u8]| buf.strip_suffix(b"\n").unwrap_or(buf).len();
    while pos > 0 && (buf.len() as u64) < MAX_TAIL_BYTES {
        let newlines = buf[..body(&buf)].iter().filter(|b| **b == b'\n').count();
        if newlines >= lines {
            break;
        }
        let step = TAIL_CHUNK.min(pos).min(MAX_TAIL_BYTES - buf.len() as u64);
        pos -= step;
        file.seek(SeekFrom::Start(pos))?;
        let mut chunk = vec![0u8; usize::try_from(step).unwrap_or(0)];
        file.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&buf);
        buf = chunk;
    }
    let end = body(&buf);
    let mut start = buf[..end]
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, b)| **b == b'\n')
        .nth(lines.saturating_sub(1))
        .map_or(0, |(i, _)| i + 1);
    if start == 0 && pos > 0 {
        // The first line read is a part of a line.
        start = buf
            .iter()
            .position(|b| *b == b'\n')
            .map_or(buf.len(), |i| i + 1);
    }
    Ok(String::from_utf8_lossy(&buf[start..]).into_owned())
}

/// Starts the API of `api` on its own thread; it runs as long as the machine.
pub fn spawn<B: Backend + Send + Sync + 'static>(
    api: &ApiConfig,
    handler: Handler,
    backend: B,
) -> Result<(), ApiError> {
    let tls = api.tls().map_err(|mut e| {
        let (key, reason) = e.swap_remove(0);
        ApiError::Tls(key, reason)
    })?;
    let listen = api.listen;
    std::thread::Builder::new()
        .name("api".to_owned())
        .spawn(move || run(listen, tls, handler, backend))
        .map(drop)
        .map_err(ApiError::Thread)
}

/// The server thread: binds (again and again until it can) and serves; never returns.
fn run<B: Backend + Send + Sync + 'static>(
    listen: SocketAddr,
    tls: Arc<ServerConfig>,
    handler: Handler,
    backend: B,
) {
    let handler = Arc::new(handler);
    let backend = Arc::new(backend);
    let mut restarts = crate::tasks::Restarts::new(crate::tasks::Backoff::PID1);
    loop {
        let started = std::time::Instant::now();
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                error!(error = %e, "api: cannot make a runtime; retrying");
                std::thread::sleep(RETRY);
                continue;
            }
        };
        let served = catch_unwind(AssertUnwindSafe(|| {
            runtime.block_on(async {
                match TcpListener::bind(listen).await {
                    Ok(listener) => {
                        info!(address = %listen, "{API_LISTENING}");
                        serve(listener, tls.clone(), handler.clone(), backend.clone()).await
                    }
                    Err(e) => warn!(address = %listen, error = %e, "api: cannot listen; retrying"),
                }
            })
        }));
        match served {
            Ok(()) => {
                restarts = crate::tasks::Restarts::new(crate::tasks::Backoff::PID1);
                std::thread::sleep(RETRY);
            }
            Err(payload) => {
                let delay = restarts.after_panic(started.elapsed());
                error!(
                    task = "api",
                    panic = %crate::tasks::panic_message(payload.as_ref()),
                    restart_in_ms = delay.as_millis() as u64,
                    "{}", crate::tasks::TASK_PANICKED
                );
                std::thread::sleep(delay);
            }
        }
    }
}

/// Accepts connections on `listener` and serves each on its own task; returns never.
pub async fn serve<B: Backend + Send + Sync + 'static>(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    handler: Arc<Handler>,
    backend: Arc<B>,
) {
    serve_with(listener, tls, handler, backend, Limits::default()).await
}

/// [`serve`] with other [`Limits`].
pub async fn serve_with<B: Backend + Send + Sync + 'static>(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    handler: Arc<Handler>,
    backend: Arc<B>,
    limits: Limits,
) {
    let acceptor = TlsAcceptor::from(tls);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let peers = Arc::default();
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors or memory: wait instead of spinning.
                warn!(error = %e, "api: cannot accept");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            warn!(%peer, "api: too many connections; closing");
            continue;
        };
        let Some(peer_slot) = PeerSlot::take(&peers, peer.ip(), limits.per_peer) else {
            warn!(%peer, limit = limits.per_peer, "api: too many connections from this peer; closing");
            continue;
        };
        let (acceptor, handler, backend) = (acceptor.clone(), handler.clone(), backend.clone());
        tokio::spawn(async move {
            connection(tcp, peer, acceptor, handler, backend, limits.pre_auth).await;
            drop(peer_slot);
            drop(slot);
        });
    }
}

/// One connection: the TLS handshake, then HTTP/1.1 requests until the client is done or a
/// limit is reached.
async fn connection<B: Backend + Send + Sync + 'static>(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    handler: Arc<Handler>,
    backend: Arc<B>,
    pre_auth: Duration,
) {
    let tls = match tokio::time::timeout(pre_auth, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            warn!(%peer, error = %e, "api: TLS handshake failed");
            return;
        }
        Err(_) => {
            warn!(%peer, "api: TLS handshake timed out");
            return;
        }
    };
    serve_http(tls, peer, handler, backend, pre_auth).await;
}

/// Serves HTTP/1.1 requests on `io`, a stream whose TLS handshake (if any) is done, with
/// the limits of every API connection (a request head of at most 16 KiB and 64 header
/// lines, each within `pre_auth`; 60 s for the whole connection), until the client is
/// done or a limit is reached. [`serve`] calls it after the handshake; on its own it is
/// the request path without TLS, for tests and fuzzing.
pub async fn serve_http<IO, B>(
    io: IO,
    peer: SocketAddr,
    handler: Arc<Handler>,
    backend: Arc<B>,
    pre_auth: Duration,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    B: Backend + Send + Sync + 'static,
{
    let service = service_fn(move |request: Request<Incoming>| {
        let (handler, backend) = (handler.clone(), backend.clone());
        async move {
            let has_body = !request.body().is_end_stream();
            let (response, outcome) = handler.handle(
                request.method(),
                request.uri(),
                request.headers(),
                has_body,
                &*backend,
            );
            info!(
                %peer,
                method = %request.method(),
                path = request.uri().path(),
                status = outcome.status.as_u16(),
                token = outcome.token.as_deref().unwrap_or("-"),
                "{API_REQUEST}"
            );
            Ok::<_, Infallible>(response)
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(pre_auth)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS)
        .serve_connection(TokioIo::new(io), service);
    match tokio::time::timeout(CONNECTION_TIMEOUT, conn).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(%peer, error = %e, "api: connection ended with an error"),
        Err(_) => warn!(%peer, "api: connection open too long; closed"),
    }
}

#[cfg(test)]
mod tests;
