//! A DHCPv4 lease: what an ACK grants, checked, and how it is kept across boots.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dhcproto::v4::{DhcpOption, Message, OptionCode};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// The shortest lease we accept; anything shorter would have us renewing in a loop.
pub const MIN_LEASE_SECS: u32 = 8;

/// A lease granted by a server, as the client uses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Our address and the subnet's prefix length.
    pub address: Ipv4Net,
    /// The server that granted it (option 54).
    pub server: Ipv4Addr,
    /// Default gateways (option 3), first first. Ignored when `routes` is not empty.
    pub routers: Vec<Ipv4Addr>,
    /// Classless static routes (option 121): destination and gateway (0.0.0.0 = on link).
    pub routes: Vec<(Ipv4Net, Ipv4Addr)>,
    /// Name servers (option 6).
    pub dns: Vec<Ipv4Addr>,
    /// Domain name (option 15).
    pub domain: Option<String>,
    /// Domain search list (option 119).
    pub search: Vec<String>,
    /// Host name the server gives us (option 12).
    pub hostname: Option<String>,
    /// Interface MTU (option 26).
    pub mtu: Option<u16>,
    /// Lease time, T1 (renew) and T2 (rebind), in seconds from when the request was sent.
    pub lease_secs: u32,
    /// Renewal time (T1).
    pub t1_secs: u32,
    /// Rebinding time (T2).
    pub t2_secs: u32,
}

impl Lease {
    /// Reads a lease from a DHCPACK (or the lease an OFFER proposes). Refuses one we could
    /// not use: no address, no server identifier, no lease time, a bad mask.
    pub fn from_reply(msg: &Message) -> Result<Lease, String> {
        let opts = msg.opts();
        let yiaddr = msg.yiaddr();
        if yiaddr.is_unspecified()
            || yiaddr.is_broadcast()
            || yiaddr.is_multicast()
            || yiaddr.is_loopback()
        {
            return Err(format!("offered address {yiaddr} is not a unicast address"));
        }
        let server = match opts.get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(s)) if !s.is_unspecified() => *s,
            _ => return Err("no server identifier (option 54)".to_owned()),
        };
        let prefix = match opts.get(OptionCode::SubnetMask) {
            Some(DhcpOption::SubnetMask(mask)) => {
                let bits = u32::from(*mask);
                if bits.leading_ones() + bits.trailing_zeros() != 32 {
                    return Err(format!("subnet mask {mask} is not contiguous"));
                }
                u8::try_from(bits.leading_ones()).unwrap_or(32)
            }
            // RFC 2131 leaves it to the client; the classful default is what servers meant.
            _ => match yiaddr.octets()[0] {
                0..=127 => 8,
                128..=191 => 16,
                _ => 24,
            },
        };
        let address = Ipv4Net::new(yiaddr, prefix).map_err(|e| e.to_string())?;
        if prefix < 31 && (yiaddr == address.broadcast() || yiaddr == address.network()) {
            return Err(format!(
                "offered address {yiaddr} is the network or broadcast address of {address}"
            ));
        }
        let lease_secs = match opts.get(OptionCode::AddressLeaseTime) {
            Some(DhcpOption::AddressLeaseTime(t)) => *t,
            _ => return Err("no lease time (option 51)".to_owned()),
        };
        if lease_secs < MIN_LEASE_SECS {
            return Err(format!(
                "lease time {lease_secs} s is shorter than {MIN_LEASE_SECS} s"
            ));
        }
        let mut t2_secs = match opts.get(OptionCode::Rebinding) {
            Some(DhcpOption::Rebinding(t)) => *t,
            _ => scale(lease_secs, 7, 8),
        };
        let mut t1_secs = match opts.get(OptionCode::Renewal) {
            Some(DhcpOption::Renewal(t)) => *t,
            _ => lease_secs / 2,
        };
        // RFC 2131 4.4.5: T1 < T2 < lease; fall back to the defaults when a server says otherwise.
        // A T2 under 2 s leaves no whole second for a T1 before it.
        if t2_secs < 2 || t2_secs >= lease_secs {
            t2_secs = scale(lease_secs, 7, 8);
        }
        if t1_secs == 0 || t1_secs >= t2_secs {
            t1_secs = (t2_secs / 2).max(1).min(lease_secs / 2);
        }
        let ipv4s = |code| match opts.get(code) {
            Some(DhcpOption::Router(v)) | Some(DhcpOption::DomainNameServer(v)) => v
                .iter()
                .copied()
                .filter(|a| !a.is_unspecified() && !a.is_broadcast() && !a.is_multicast())
                .collect(),
            _ => Vec::new(),
        };
        let text = |code| match opts.get(code) {
            Some(DhcpOption::Hostname(s)) | Some(DhcpOption::DomainName(s)) => {
                let s = s.trim_end_matches('\0').trim_end_matches('.');
                crate::config::valid_domain(s).then(|| s.to_owned())
            }
            _ => None,
        };
        let search = match opts.get(OptionCode::DomainSearch) {
            Some(DhcpOption::DomainSearch(names)) => names
                .iter()
                .map(|n| n.to_utf8().trim_end_matches('.').to_owned())
                .filter(|s| crate::config::valid_domain(s))
                .collect(),
            _ => Vec::new(),
        };
        let routes = match opts.get(OptionCode::ClasslessStaticRoute) {
            Some(DhcpOption::ClasslessStaticRoute(r)) => r
                .iter()
                .map(|(net, gw)| (net.trunc(), *gw))
                .filter(|(_, gw)| !gw.is_broadcast() && !gw.is_multicast())
                .collect(),
            _ => Vec::new(),
        };
        let mtu = match opts.get(OptionCode::InterfaceMtu) {
            Some(DhcpOption::InterfaceMtu(m)) if *m >= 576 => Some(*m),
            _ => None,
        };
        Ok(Lease {
            address,
            server,
            routers: ipv4s(OptionCode::Router),
            routes,
            dns: ipv4s(OptionCode::DomainNameServer),
            domain: text(OptionCode::DomainName),
            search,
            hostname: text(OptionCode::Hostname),
            mtu,
            lease_secs,
            t1_secs,
            t2_secs,
        })
    }

    /// The routes to install: option 121 when given (RFC 3442 says the router option is
    /// then ignored), else a default route through the first router.
    pub fn effective_routes(&self) -> Vec<(Ipv4Net, Ipv4Addr)> {
        if !self.routes.is_empty() {
            return self.routes.clone();
        }
        self.routers
            .first()
            .map(|gw| vec![(Ipv4Net::default(), *gw)])
            .unwrap_or_default()
    }
}

fn scale(secs: u32, num: u64, den: u64) -> u32 {
    u32::try_from(u64::from(secs) * num / den).unwrap_or(u32::MAX)
}

/// A lease as saved under `/var` for INIT-REBOOT after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedLease {
    /// The interface's MAC when the lease was granted; a lease for another NIC is not reused.
    pub mac: String,
    /// When the request that got the lease was sent, seconds since the Unix epoch.
    pub granted_unix: u64,
    /// The lease.
    pub lease: Lease,
}

impl SavedLease {
    /// Seconds of the lease left at `now`, 0 when it has run out.
    pub fn remaining(&self, now: SystemTime) -> Duration {
        let now = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let end = self
            .granted_unix
            .saturating_add(u64::from(self.lease.lease_secs));
        Duration::from_secs(end.saturating_sub(now))
    }

    /// Loads a saved lease; `Ok(None)` when there is none. A damaged file is an error the
    /// caller logs before starting afresh.
    pub fn load(path: &Path) -> Result<Option<SavedLease>, String> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| format!("{}: not a saved lease: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Saves the lease: temp file, fsync, rename, fsync of the directory.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        gantry_durable::write_atomic(path, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcproto::v4::{MessageType, Opcode};

    fn ack() -> Message {
        let mut m = Message::new(
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::new(10, 0, 2, 15),
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &[0x52, 0x54, 0, 0x12, 0x34, 0x56],
        );
        m.set_opcode(Opcode::BootReply);
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(MessageType::Ack));
        o.insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 2, 2)));
        o.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
        o.insert(DhcpOption::AddressLeaseTime(3600));
        o.insert(DhcpOption::Router(vec![Ipv4Addr::new(10, 0, 2, 2)]));
        o.insert(DhcpOption::DomainNameServer(vec![Ipv4Addr::new(
            10, 0, 2, 3,
        )]));
        m
    }

    #[test]
    fn a_plain_ack_gives_defaults_for_t1_and_t2() {
        let l = Lease::from_reply(&ack()).unwrap();
        assert_eq!(l.address.to_string(), "10.0.2.15/24");
        assert_eq!((l.lease_secs, l.t1_secs, l.t2_secs), (3600, 1800, 3150));
        assert_eq!(
            l.effective_routes(),
            vec![(Ipv4Net::default(), Ipv4Addr::new(10, 0, 2, 2))]
        );
        assert_eq!(l.dns, vec![Ipv4Addr::new(10, 0, 2, 3)]);
    }

    #[test]
    fn inconsistent_timers_fall_back_to_the_defaults() {
        let mut m = ack();
        m.opts_mut().insert(DhcpOption::Renewal(4000));
        m.opts_mut().insert(DhcpOption::Rebinding(5000));
        let l = Lease::from_reply(&m).unwrap();
        assert!(l.t1_secs < l.t2_secs && l.t2_secs < l.lease_secs, "{l:?}");
        let mut m = ack();
        m.opts_mut().insert(DhcpOption::Renewal(10));
        m.opts_mut().insert(DhcpOption::Rebinding(20));
        let l = Lease::from_reply(&m).unwrap();
        assert_eq!((l.t1_secs, l.t2_secs), (10, 20));
    }

    #[test]
    fn classless_routes_win_over_the_router_option() {
        let mut m = ack();
        let net: Ipv4Net = "192.168.0.0/16".parse().unwrap();
        m.opts_mut().insert(DhcpOption::ClasslessStaticRoute(vec![
            (net, Ipv4Addr::new(10, 0, 2, 9)),
            (Ipv4Net::default(), Ipv4Addr::new(10, 0, 2, 1)),
        ]));
        let l = Lease::from_reply(&m).unwrap();
        assert_eq!(l.effective_routes().len(), 2);
        assert_eq!(l.effective_routes()[1].1, Ipv4Addr::new(10, 0, 2, 1));
    }

    #[test]
    fn unusable_replies_are_refused_with_a_reason() {
        type Change = fn(&mut Message);
        let cases: [(&str, Change); 5] = [
            ("no server identifier", |m| {
                m.opts_mut().remove(OptionCode::ServerIdentifier);
            }),
            ("no lease time", |m| {
                m.opts_mut().remove(OptionCode::AddressLeaseTime);
            }),
            ("not contiguous", |m| {
                m.opts_mut()
                    .insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 0, 255, 0)));
            }),
            ("not a unicast address", |m| {
                m.set_yiaddr(Ipv4Addr::BROADCAST);
            }),
            ("broadcast address of", |m| {
                m.set_yiaddr(Ipv4Addr::new(10, 0, 2, 255));
            }),
        ];
        for (want, change) in cases {
            let mut m = ack();
            change(&mut m);
            let e = Lease::from_reply(&m).unwrap_err();
            assert!(e.contains(want), "{e} should say {want}");
        }
    }

    #[test]
    fn saved_leases_round_trip_and_count_down() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("eth0.json");
        assert_eq!(SavedLease::load(&path), Ok(None));
        let saved = SavedLease {
            mac: "52:54:00:12:34:56".into(),
            granted_unix: 1_000,
            lease: Lease::from_reply(&ack()).unwrap(),
        };
        saved.save(&path).unwrap();
        assert_eq!(SavedLease::load(&path).unwrap().as_ref(), Some(&saved));
        let at = |s| UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(saved.remaining(at(1_600)), Duration::from_secs(3_000));
        assert_eq!(saved.remaining(at(9_999)), Duration::ZERO);
        std::fs::write(&path, b"{not json").unwrap();
        assert!(SavedLease::load(&path)
            .unwrap_err()
            .contains("not a saved lease"));
    }
}
