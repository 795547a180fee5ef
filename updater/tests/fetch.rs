//! `gantry_updater::fetch` against real HTTP servers on 127.0.0.1.
//!
//! Well-behaved server: Debian's `busybox httpd` (from `busybox-static`/`busybox`), which
//! answers `Range: bytes=N-` with `206` and `Content-Range`, and logs each reply's status
//! with `-vv`. The misbehaving servers that busybox cannot play (one that ignores ranges,
//! says 416, sends the wrong range, too many bytes, or stalls) are canned replies written
//! by a small `TcpListener` server below.

// The helpers below are test code too: a failure there is a failed test.
#![allow(clippy::unwrap_used)]

use std::io::{self, BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gantry_updater::fetch::{Downloaded, FetchError, FetchOptions, Fetcher, Progress, Url};

/// Deterministic bytes that no off-by-one shift could match.
fn payload(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

const SIZE: usize = 300_001;

/// Waits for `cond` up to 10 s.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `busybox httpd` serving a temporary directory.
struct Httpd {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
    log: PathBuf,
}

impl Httpd {
    fn start() -> Httpd {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("httpd.log");
        let www = dir.path().join("www");
        std::fs::create_dir(&www).unwrap();
        // A free port can be taken between our probe and busybox's bind: try a few.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let out = std::fs::File::create(&log).unwrap();
            let mut child = Command::new("busybox")
                .args([
                    "httpd",
                    "-f",
                    "-vv",
                    "-p",
                    &format!("127.0.0.1:{port}"),
                    "-h",
                ])
                .arg(&www)
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .expect("busybox (Debian busybox-static) must be installed");
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Httpd {
                        dir,
                        port,
                        child,
                        log,
                    };
                }
                if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!(
            "busybox httpd did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    fn put(&self, name: &str, data: &[u8]) -> Url {
        std::fs::write(self.dir.path().join("www").join(name), data).unwrap();
        self.url(name)
    }

    fn url(&self, name: &str) -> Url {
        Url::parse(&format!("http://127.0.0.1:{}/{name}", self.port)).unwrap()
    }

    /// The statuses of the replies so far (`-vv` logs `response:206`).
    fn statuses(&self) -> Vec<u16> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split("response:").nth(1))
            .filter_map(|s| s.trim().parse().ok())
            .collect()
    }

    /// Waits until `n` replies are logged (busybox logs after replying) and returns them.
    fn wait_statuses(&self, n: usize) -> Vec<u16> {
        wait_for("the server log", || self.statuses().len() >= n);
        self.statuses()
    }
}

impl Drop for Httpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a canned server does with a connection.
struct Reply {
    bytes: Vec<u8>,
    /// Keep the connection open after `bytes` until the client goes away.
    hang: bool,
}

fn reply(head: &str, body: &[u8]) -> Reply {
    let mut bytes = head.replace('\n', "\r\n").into_bytes();
    bytes.extend_from_slice(b"\r\n");
    bytes.extend_from_slice(body);
    Reply { bytes, hang: false }
}

/// A server that answers the n-th request (from 0) with `answer(n, request head)`, one
/// request per connection, and records the request heads (lower-cased).
struct Canned {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Canned {
    fn start(answer: impl Fn(usize, &str) -> Reply + Send + 'static) -> Canned {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for (n, conn) in listener.incoming().enumerate() {
                let Ok(mut conn) = conn else { continue };
                let mut head = String::new();
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    head.push_str(&line.to_ascii_lowercase());
                }
                log.lock().unwrap().push(head.clone());
                let r = answer(n, &head);
                let _ = conn.write_all(&r.bytes);
                let _ = conn.flush();
                if r.hang {
                    let _ = io::copy(&mut reader, &mut io::sink());
                }
            }
        });
        Canned { port, seen }
    }

    fn url(&self) -> Url {
        Url::parse(&format!("http://127.0.0.1:{}/bundle", self.port)).unwrap()
    }

    fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// Downloads, recording every progress report.
fn download(
    url: &Url,
    dest: &Path,
    size: usize,
) -> (Result<Downloaded, FetchError>, Vec<Progress>) {
    download_with(&Fetcher::default(), url, dest, size)
}

fn download_with(
    fetcher: &Fetcher,
    url: &Url,
    dest: &Path,
    size: usize,
) -> (Result<Downloaded, FetchError>, Vec<Progress>) {
    let mut seen = Vec::new();
    let got = fetcher.download(url, dest, size as u64, &mut |p| seen.push(p));
    (got, seen)
}

fn assert_progress_runs(seen: &[Progress], from: usize, to: usize) {
    assert_eq!(seen.first().map(|p| p.done), Some(from as u64), "{seen:?}");
    assert_eq!(seen.last().map(|p| p.done), Some(to as u64));
    assert!(seen.windows(2).all(|w| w[0].done <= w[1].done));
    assert!(seen.iter().all(|p| p.total == to as u64));
}

#[test]
fn downloads_a_whole_file() {
    let httpd = Httpd::start();
    let data = payload(SIZE);
    let url = httpd.put("b.bundle", &data);
    let dest = httpd.dir.path().join("staging");
    let (got, seen) = download(&url, &dest, SIZE);
    assert_eq!(
        got.unwrap(),
        Downloaded {
            resumed_from: 0,
            transferred: SIZE as u64
        }
    );
    assert!(std::fs::read(&dest).unwrap() == data);
    assert_progress_runs(&seen, 0, SIZE);
    assert_eq!(httpd.wait_statuses(1), [200]);
}

#[test]
fn resumes_a_truncated_partial_with_a_range_request() {
    let httpd = Httpd::start();
    let data = payload(SIZE);
    let url = httpd.put("b.bundle", &data);
    let dest = httpd.dir.path().join("staging");
    let cut = 123_457;
    std::fs::write(&dest, &data[..cut]).unwrap();
    let (got, seen) = download(&url, &dest, SIZE);
    assert_eq!(
        got.unwrap(),
        Downloaded {
            resumed_from: cut as u64,
            transferred: (SIZE - cut) as u64
        }
    );
    assert!(std::fs::read(&dest).unwrap() == data);
    assert_progress_runs(&seen, cut, SIZE);
    assert_eq!(httpd.wait_statuses(1), [206]);
}

#[test]
fn a_partial_longer_than_expected_is_downloaded_again() {
    let httpd = Httpd::start();
    let data = payload(SIZE);
    let url = httpd.put("b.bundle", &data);
    let dest = httpd.dir.path().join("staging");
    let mut long = payload(SIZE + 1000);
    long.reverse();
    std::fs::write(&dest, &long).unwrap();
    let (got, seen) = download(&url, &dest, SIZE);
    assert_eq!(got.unwrap().resumed_from, 0);
    assert!(std::fs::read(&dest).unwrap() == data);
    assert_progress_runs(&seen, 0, SIZE);
    assert_eq!(httpd.wait_statuses(1), [200]);
}

#[test]
fn a_complete_file_is_not_asked_for_again() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("staging");
    std::fs::write(&dest, payload(1000)).unwrap();
    // Nothing listens there: a request would fail.
    let nowhere = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = Url::parse(&format!("http://{nowhere}/b.bundle")).unwrap();
    let (got, seen) = download(&url, &dest, 1000);
    assert_eq!(
        got.unwrap(),
        Downloaded {
            resumed_from: 1000,
            transferred: 0
        }
    );
    assert!(seen.is_empty());
}

#[test]
fn a_missing_file_is_an_error_naming_the_url_and_status() {
    let httpd = Httpd::start();
    let url = httpd.url("missing.bundle");
    let dest = httpd.dir.path().join("staging");
    let (got, _) = download(&url, &dest, SIZE);
    let e = got.unwrap_err();
    assert!(matches!(e, FetchError::Status { .. }), "{e:?}");
    assert_eq!(e.to_string(), format!("{url}: HTTP 404 Not Found"));
    let e = Fetcher::default().fetch_small(&url, 1000).unwrap_err();
    assert_eq!(e.to_string(), format!("{url}: HTTP 404 Not Found"));
}

#[test]
fn a_file_of_another_size_on_the_server_is_refused() {
    let httpd = Httpd::start();
    let data = payload(SIZE);
    let url = httpd.put("b.bundle", &data);
    let dest = httpd.dir.path().join("staging");
    let (got, _) = download(&url, &dest, SIZE + 10);
    let e = got.unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{url}: the server has {SIZE} bytes, not the expected {}",
            SIZE + 10
        )
    );
    // The same from a partial, through the 206's Content-Range; the partial stays.
    std::fs::write(&dest, &data[..1000]).unwrap();
    let (got, _) = download(&url, &dest, SIZE + 10);
    assert!(
        matches!(got, Err(FetchError::SizeMismatch { got, .. }) if got == SIZE as u64),
        "{got:?}"
    );
    assert_eq!(std::fs::read(&dest).unwrap(), &data[..1000]);
    assert_eq!(httpd.wait_statuses(2), [200, 206]);
}

#[test]
fn small_fetches_are_capped() {
    let httpd = Httpd::start();
    let doc = payload(5000);
    let url = httpd.put("stable.json", &doc);
    let f = Fetcher::default();
    assert!(f.fetch_small(&url, 5000).unwrap() == doc);
    let e = f.fetch_small(&url, 4999).unwrap_err();
    assert!(matches!(e, FetchError::TooLarge { max: 4999, .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!("{url}: the body is more than 4999 bytes")
    );
}

#[test]
fn small_fetches_without_a_length_are_capped_while_reading() {
    let server =
        Canned::start(|_, _| reply("HTTP/1.1 200 OK\nConnection: close\n", &payload(70_000)));
    let e = Fetcher::default()
        .fetch_small(&server.url(), 65_536)
        .unwrap_err();
    assert!(matches!(e, FetchError::TooLarge { .. }), "{e:?}");
}

#[test]
fn a_server_that_ignores_ranges_gets_the_file_written_from_the_start() {
    let data = payload(SIZE);
    let body = data.clone();
    let server = Canned::start(move |_, _| {
        reply(
            &format!("HTTP/1.1 200 OK\nContent-Length: {SIZE}\nConnection: close\n"),
            &body,
        )
    });
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("staging");
    std::fs::write(&dest, vec![0xaa; 1000]).unwrap();
    let (got, seen) = download(&server.url(), &dest, SIZE);
    assert_eq!(
        got.unwrap(),
        Downloaded {
            resumed_from: 0,
            transferred: SIZE as u64
        }
    );
    assert!(std::fs::read(&dest).unwrap() == data);
    assert_progress_runs(&seen, 0, SIZE);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    assert!(reqs[0].contains("range: bytes=1000-"), "{reqs:?}");
}

#[test]
fn a_416_asks_again_for_the_whole_file() {
    let data = payload(SIZE);
    let body = data.clone();
    let server = Canned::start(move |n, _| {
        match n {
        0 => reply(
            &format!("HTTP/1.1 416 Range Not Satisfiable\nContent-Range: bytes */{SIZE}\nContent-Length: 0\nConnection: close\n"),
            b"",
        ),
        _ => reply(
            &format!("HTTP/1.1 200 OK\nContent-Length: {SIZE}\nConnection: close\n"),
            &body,
        ),
    }
    });
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("staging");
    std::fs::write(&dest, vec![0xaa; 1000]).unwrap();
    let (got, _) = download(&server.url(), &dest, SIZE);
    assert_eq!(got.unwrap().resumed_from, 0);
    assert!(std::fs::read(&dest).unwrap() == data);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert!(reqs[0].contains("range: bytes=1000-"), "{reqs:?}");
    assert!(!reqs[1].contains("range:"), "{reqs:?}");
}

#[test]
fn a_partial_reply_for_another_range_is_refused_and_the_partial_kept() {
    let size = 5000;
    let data = payload(size);
    for (content_range, want) in [
        (
            Some("bytes 0-4999/5000"),
            "Content-Range is \"bytes 0-4999/5000\"",
        ),
        (
            Some("bytes 1000-4998/5000"),
            "Content-Range is \"bytes 1000-4998/5000\"",
        ),
        (Some("bytes 1000-4999/*"), "is not bytes FIRST-LAST/SIZE"),
        (None, "no Content-Range"),
    ] {
        let body = data[1000..].to_vec();
        let server = Canned::start(move |_, _| {
            let range = content_range.map_or(String::new(), |r| format!("Content-Range: {r}\n"));
            reply(
                &format!(
                    "HTTP/1.1 206 Partial Content\n{range}Content-Length: {}\nConnection: close\n",
                    body.len()
                ),
                &body,
            )
        });
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("staging");
        std::fs::write(&dest, &data[..1000]).unwrap();
        let (got, _) = download(&server.url(), &dest, size);
        let e = got.unwrap_err().to_string();
        let url = server.url();
        assert!(
            e.starts_with(&format!(
                "{url}: partial reply does not match the request for bytes 1000-: "
            )) && e.contains(want),
            "{e}"
        );
        assert_eq!(std::fs::read(&dest).unwrap(), &data[..1000]);
    }
}

#[test]
fn a_body_running_past_the_expected_size_is_refused_and_nothing_written_past_it() {
    let server =
        Canned::start(|_, _| reply("HTTP/1.1 200 OK\nConnection: close\n", &payload(SIZE + 5)));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("staging");
    let (got, seen) = download(&server.url(), &dest, SIZE);
    let e = got.unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}: the body runs past the expected {SIZE} bytes",
            server.url()
        )
    );
    assert!(seen.iter().all(|p| p.done <= SIZE as u64));
    // What came cannot be the expected file: it is not kept for a resume.
    assert_eq!(std::fs::metadata(&dest).unwrap().len(), 0);
}

#[test]
fn a_body_that_ends_early_leaves_a_partial_to_resume() {
    let data = payload(SIZE);
    let half = data[..SIZE / 2].to_vec();
    let server = Canned::start(move |_, _| reply("HTTP/1.1 200 OK\nConnection: close\n", &half));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("staging");
    let (got, _) = download(&server.url(), &dest, SIZE);
    assert!(
        matches!(got, Err(FetchError::Short { got, .. }) if got == (SIZE / 2) as u64),
        "{got:?}"
    );
    assert_eq!(std::fs::read(&dest).unwrap(), &data[..SIZE / 2]);

    // The rest comes from a server that does ranges.
    let httpd = Httpd::start();
    let url = httpd.put("b.bundle", &data);
    let (got, _) = download(&url, &dest, SIZE);
    assert_eq!(got.unwrap().resumed_from, (SIZE / 2) as u64);
    assert!(std::fs::read(&dest).unwrap() == data);
}

#[test]
fn a_stalled_server_times_out_with_the_url() {
    let fetcher = Fetcher::new(FetchOptions {
        connect_timeout: Duration::from_secs(5),
        stall_timeout: Duration::from_millis(300),
        insecure: false,
    });
    // Mid-body: the bytes that came are kept.
    let server = Canned::start(|_, _| Reply {
        hang: true,
        ..reply(
            &format!("HTTP/1.1 200 OK\nContent-Length: {SIZE}\n"),
            &payload(100),
        )
    });
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("staging");
    let (got, _) = download_with(&fetcher, &server.url(), &dest, SIZE);
    let e = got.unwrap_err();
    assert!(matches!(e, FetchError::Stalled { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!("{}: nothing from the server for 300ms", server.url())
    );
    assert_eq!(std::fs::read(&dest).unwrap(), payload(100));
    // Before the reply's head.
    let silent = Canned::start(|_, _| Reply {
        bytes: Vec::new(),
        hang: true,
    });
    let e = fetcher.fetch_small(&silent.url(), 100).unwrap_err();
    assert!(matches!(e, FetchError::Stalled { .. }), "{e:?}");
}

#[test]
fn a_refused_connection_names_the_url() {
    let nowhere = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = Url::parse(&format!("http://{nowhere}/stable.json")).unwrap();
    let e = Fetcher::default().fetch_small(&url, 100).unwrap_err();
    assert!(matches!(e, FetchError::Request { .. }), "{e:?}");
    assert_eq!(e.to_string(), format!("{url}: request failed"));
    let cause = std::error::Error::source(&e).map(|c| format!("{c:?}"));
    assert!(
        cause.is_some_and(|c| c.contains("ConnectionRefused")),
        "{e:?}"
    );
}

#[test]
fn a_staging_file_that_cannot_be_opened_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("no-such-dir").join("staging");
    let url = Url::parse("http://127.0.0.1:9/b.bundle").unwrap();
    let (got, _) = download(&url, &dest, 10);
    let e = got.unwrap_err();
    assert_eq!(e.to_string(), format!("cannot open {}", dest.display()));
}
