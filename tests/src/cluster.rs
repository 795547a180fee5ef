//! Helpers of the local-cluster tests: a node's console read as it grows, the cluster
//! taken down however a test ends, an image pushed to the cluster's registry.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use gantry_qemu::cluster::Cluster;

/// Reads a node's console from where the last wait stopped.
#[derive(Debug)]
pub struct Console {
    path: std::path::PathBuf,
    seen: usize,
}

impl Console {
    pub fn of(cluster: &Cluster, i: u32) -> Console {
        let path = cluster
            .state()
            .node(i)
            .unwrap_or_else(|e| panic!("{e}"))
            .serial_log
            .clone();
        Console { path, seen: 0 }
    }

    /// Waits for a line containing every one of `parts`; returns it.
    pub fn wait(&mut self, parts: &[&str], timeout: Duration) -> String {
        self.wait_any(&[parts], timeout).1
    }

    /// Waits for a line containing every part of one of `choices`; returns which, and the
    /// line.
    pub fn wait_any(&mut self, choices: &[&[&str]], timeout: Duration) -> (usize, String) {
        let deadline = Instant::now() + timeout;
        loop {
            let text = std::fs::read_to_string(&self.path).unwrap_or_default();
            if text.len() < self.seen {
                self.seen = 0; // a new boot's log
            }
            let rest = &text[self.seen..];
            let mut offset = self.seen;
            for line in rest.split_inclusive('\n') {
                offset += line.len();
                if !line.ends_with('\n') {
                    break;
                }
                let found = choices
                    .iter()
                    .position(|parts| parts.iter().all(|p| line.contains(p)));
                if let Some(which) = found {
                    self.seen = offset;
                    return (which, line.trim_end().to_owned());
                }
            }
            assert!(
                Instant::now() < deadline,
                "{}: no line with {choices:?} within {timeout:?}; tail:\n{}",
                self.path.display(),
                gantry_qemu::cluster::tail(&self.path, 30)
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// Stops the cluster however the test ends, so a failure leaves no VM behind.
#[derive(Debug)]
pub struct Running(pub Cluster);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.down();
    }
}

pub fn push(layout: &Path, registry: &str, reference: &str) {
    let out = Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:1", layout.display()))
        .arg(format!("docker://{registry}/{reference}"))
        .output()
        .expect("skopeo must be installed");
    assert!(
        out.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
