//! `/etc/resolv.conf`: the read-only root has a symlink to [`RESOLV_CONF`] under `/run`,
//! which PID 1 rewrites whenever the configured or DHCP-given servers change.
//!
//! Containers follow it while they run. Each container's `gantry run --host-resolv-conf
//! /run/gantry/resolv.conf` watches this file's directory and rewrites the container's
//! bind-mounted copy in place when the file is replaced (see
//! `gantry_runtime::container::from_image`), so a container started before the DHCP lease
//! has the lease's servers as soon as it arrives, and a renewed lease with other servers
//! reaches every running container. PID 1 therefore never holds containers back waiting
//! for the network: a container without network needs starts at once, and a network that
//! never answers does not stop the others. [`Resolver::write`] replaces the file by a
//! rename in the same directory, which is what the watch sees.

use std::net::IpAddr;
use std::path::Path;

pub use gantry_contract::RESOLV_CONF;

/// The resolver's limit on name servers (glibc and musl `MAXNS`).
pub const MAX_SERVERS: usize = 3;
/// glibc's limit on search domains since 2.26 is 6 (musl allows more); keep to it.
pub const MAX_SEARCH: usize = 6;

/// Resolver settings, merged from the config and every lease.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Resolver {
    /// Name servers, in order, without duplicates.
    pub servers: Vec<IpAddr>,
    /// Search domains, in order, without duplicates.
    pub search: Vec<String>,
}

impl Resolver {
    /// Adds servers and search domains after those already present, dropping duplicates
    /// and anything past the resolver's limits.
    pub fn extend(
        &mut self,
        servers: impl IntoIterator<Item = IpAddr>,
        search: impl IntoIterator<Item = String>,
    ) {
        for s in servers {
            if !self.servers.contains(&s) && !s.is_unspecified() && self.servers.len() < MAX_SERVERS
            {
                self.servers.push(s);
            }
        }
        for d in search {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            if !d.is_empty() && !self.search.contains(&d) && self.search.len() < MAX_SEARCH {
                self.search.push(d);
            }
        }
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let mut out = String::from("# Written by gantry-init from the machine config and DHCP.\n");
        for s in &self.servers {
            out.push_str(&format!("nameserver {s}\n"));
        }
        if !self.search.is_empty() {
            out.push_str(&format!("search {}\n", self.search.join(" ")));
        }
        out
    }

    /// Writes the file atomically (temp file, fsync, rename), creating its directory.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        gantry_durable::write_atomic(path, self.render().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_in_order_without_duplicates_and_within_limits() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let mut r = Resolver::default();
        r.extend([ip("192.0.2.53")], ["Example.NET.".to_owned()]);
        r.extend(
            [
                ip("10.0.2.3"),
                ip("192.0.2.53"),
                ip("0.0.0.0"),
                ip("2001:db8::53"),
                ip("10.9.9.9"),
            ],
            ["example.net".to_owned(), "lab.internal".to_owned()],
        );
        assert_eq!(
            r.servers,
            vec![ip("192.0.2.53"), ip("10.0.2.3"), ip("2001:db8::53")]
        );
        assert_eq!(r.search, vec!["example.net", "lab.internal"]);
        assert_eq!(
            r.render(),
            "# Written by gantry-init from the machine config and DHCP.\n\
             nameserver 192.0.2.53\nnameserver 10.0.2.3\nnameserver 2001:db8::53\n\
             search example.net lab.internal\n"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gantry/resolv.conf");
        r.write(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), r.render());
    }
}
