//! The fleet's services beside a cluster, each a real server on the host's loopback,
//! started with the cluster and stopped with it: a container registry (Debian's
//! `docker-registry`), etcd (Debian's `etcd-server`, the fleet's coordination store) and
//! an update channel server (`busybox httpd` over a directory of channel documents and
//! bundles). Nodes reach them through their user network's `guestfwd` at fixed addresses
//! inside QEMU's 10.0.2.0/24, so node configs are the same for every cluster.

use std::net::{Ipv4Addr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::process;
use super::state::Service;
use crate::GuestForward;

/// A service as nodes see it: its name, guest address and port.
struct Spot {
    name: &'static str,
    addr: Ipv4Addr,
    port: u16,
}

const SPOTS: [Spot; 3] = [
    Spot {
        name: "registry",
        addr: Ipv4Addr::new(10, 0, 2, 100),
        port: 5000,
    },
    Spot {
        name: "channel",
        addr: Ipv4Addr::new(10, 0, 2, 101),
        port: 80,
    },
    Spot {
        name: "etcd",
        addr: Ipv4Addr::new(10, 0, 2, 102),
        port: 2379,
    },
];

fn spot(name: &str) -> &'static Spot {
    SPOTS.iter().find(|s| s.name == name).unwrap_or(&SPOTS[0])
}

/// The registry as nodes name it in image references, e.g. `10.0.2.100:5000`.
pub const NODE_REGISTRY: &str = "10.0.2.100:5000";

/// Starts the three services under `dir/services`; on failure, stops what started.
pub fn start(dir: &Path, name: &str) -> Result<Vec<Service>, String> {
    let base = dir.join("services");
    let mut started: Vec<Service> = Vec::new();
    let result = (|| {
        for spot in &SPOTS {
            let port = process::free_port()?;
            let sdir = base.join(spot.name);
            std::fs::create_dir_all(&sdir).map_err(|e| format!("{}: {e}", sdir.display()))?;
            let cmd = command(spot.name, &sdir, name, port)?;
            let child = process::spawn(cmd, &sdir.join("log"), dir)?;
            let (scheme, path) = match spot.name {
                "registry" => ("", ""),
                "channel" => ("http://", "/"),
                _ => ("http://", ""),
            };
            let node_port = if spot.port == 80 {
                String::new()
            } else {
                format!(":{}", spot.port)
            };
            started.push(Service {
                name: spot.name.to_owned(),
                host_url: format!("{scheme}127.0.0.1:{port}{path}"),
                node_url: format!("{scheme}{}{node_port}{path}", spot.addr),
                pid: Some(child.id()),
            });
            wait_listening(spot.name, port, &sdir.join("log"), Duration::from_secs(30))?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(started),
        Err(e) => {
            stop(dir, &started);
            Err(e)
        }
    }
}

fn command(service: &str, sdir: &Path, name: &str, port: u16) -> Result<Command, String> {
    let mut cmd;
    match service {
        "registry" => {
            let config = sdir.join("config.yml");
            let storage = sdir.join("storage");
            let yml = format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                storage.display()
            );
            std::fs::write(&config, yml).map_err(|e| format!("{}: {e}", config.display()))?;
            cmd = Command::new("docker-registry");
            cmd.arg("serve").arg(&config);
        }
        "channel" => {
            let www = sdir.join("www");
            std::fs::create_dir_all(&www).map_err(|e| format!("{}: {e}", www.display()))?;
            cmd = Command::new("busybox");
            cmd.args(["httpd", "-f", "-p"])
                .arg(format!("127.0.0.1:{port}"))
                .arg("-h")
                .arg(&www);
        }
        _ => {
            let peer = process::free_port()?;
            let client = format!("http://127.0.0.1:{port}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            cmd = Command::new("etcd");
            cmd.arg("--name")
                .arg(name)
                .arg("--data-dir")
                .arg(sdir.join("data"))
                .args([
                    "--listen-client-urls",
                    &client,
                    "--advertise-client-urls",
                    &client,
                ])
                .args([
                    "--listen-peer-urls",
                    &peer_url,
                    "--initial-advertise-peer-urls",
                    &peer_url,
                ])
                .arg("--initial-cluster")
                .arg(format!("{name}={peer_url}"))
                .args(["--log-level", "warn"]);
        }
    }
    Ok(cmd)
}

fn wait_listening(service: &str, port: u16, log: &Path, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let tail = std::fs::read_to_string(log).unwrap_or_default();
    Err(format!(
        "{service} did not listen on 127.0.0.1:{port} within {timeout:?} (is it installed? \
         bash .ci/deps); its log:\n{}",
        tail.lines()
            .rev()
            .take(10)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    ))
}

/// The `guestfwd`s that put the services at their node addresses.
pub fn guest_forwards(services: &[Service]) -> Vec<GuestForward> {
    services
        .iter()
        .filter_map(|s| {
            let port = s
                .host_url
                .trim_end_matches('/')
                .rsplit(':')
                .next()?
                .parse()
                .ok()?;
            let spot = spot(&s.name);
            Some(GuestForward {
                guest_addr: spot.addr,
                guest_port: spot.port,
                host_port: port,
            })
        })
        .collect()
}

/// Stops the services (each only if its PID still names the cluster's directory).
pub fn stop(dir: &Path, services: &[Service]) {
    for s in services {
        if let Some(pid) = s.pid {
            process::stop(pid, dir, Duration::from_secs(10));
        }
    }
}
