//! A DHCP reply through the client's receive path: `decode_reply` (what the socket loop
//! calls on every packet), then the state machine's `on_reply` in the state the first byte
//! picks, then its timers. The machine's transaction id and MAC are the packet's, so that
//! replies are "for us" and reach the lease code.
//!
//! Checks: what `decode_reply` accepts is a BOOTREPLY whose `chaddr()` can be read; every
//! lease the machine applies or saves keeps `Lease::from_reply`'s promises (a unicast
//! address that is not the subnet's network or broadcast address, a lease of at least
//! `MIN_LEASE_SECS`, 1 <= T1 < T2 < lease, an MTU of at least 576, no unspecified,
//! broadcast or multicast router or name server, valid domain names); every message it
//! sends encodes.
#![no_main]

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode};
use dhcproto::Encodable;
use gantry_init::config::valid_domain;
use gantry_init::net::dhcp::client::routes_of;
use gantry_init::net::dhcp::lease::MIN_LEASE_SECS;
use gantry_init::net::dhcp::{decode_reply, Action, Lease, Machine, Random};
use libfuzzer_sys::fuzz_target;

/// Always the same transaction id: the packet's.
struct Fixed(u32);

impl Random for Fixed {
    fn next_u32(&mut self) -> u32 {
        self.0
    }
}

/// A well-formed OFFER or ACK from 10.0.0.1 for 10.0.0.7/24, to move the machine along.
fn reply(xid: u32, mac: &[u8; 6], kind: MessageType) -> Message {
    let mut m = Message::new_with_id(
        xid,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::new(10, 0, 0, 7),
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        mac,
    );
    m.set_opcode(Opcode::BootReply);
    let o = m.opts_mut();
    o.insert(DhcpOption::MessageType(kind));
    o.insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 0, 1)));
    o.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
    o.insert(DhcpOption::AddressLeaseTime(3600));
    m
}

fn check_lease(l: &Lease) {
    let a = l.address.addr();
    assert!(!a.is_unspecified() && !a.is_broadcast() && !a.is_multicast() && !a.is_loopback());
    if l.address.prefix_len() < 31 {
        assert!(
            a != l.address.network() && a != l.address.broadcast(),
            "{l:?}"
        );
    }
    assert!(!l.server.is_unspecified());
    assert!(l.lease_secs >= MIN_LEASE_SECS, "{l:?}");
    assert!(
        1 <= l.t1_secs && l.t1_secs < l.t2_secs && l.t2_secs < l.lease_secs,
        "timers out of order: {l:?}"
    );
    if let Some(mtu) = l.mtu {
        assert!(mtu >= 576);
    }
    for ip in l.routers.iter().chain(&l.dns) {
        assert!(!ip.is_unspecified() && !ip.is_broadcast() && !ip.is_multicast());
    }
    for name in l.domain.iter().chain(&l.hostname).chain(&l.search) {
        assert!(valid_domain(name), "{name:?}");
    }
    let _ = routes_of(l);
}

fn check(actions: &[Action]) {
    for a in actions {
        match a {
            Action::Send(msg, _) => {
                msg.to_vec().expect("our own message encodes");
            }
            Action::Apply(l, _) | Action::Save(l, _) | Action::Remove(l, _) => check_lease(l),
            Action::Forget | Action::Nak(_) => {}
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&state, packet)) = data.split_first() else {
        return;
    };
    let Ok(msg) = decode_reply(packet) else {
        return;
    };
    assert_eq!(msg.opcode(), Opcode::BootReply);
    assert!(msg.hlen() <= 16);
    let chaddr = msg.chaddr();
    let mac: [u8; 6] = chaddr
        .get(..6)
        .and_then(|m| m.try_into().ok())
        .unwrap_or([2, 0, 0, 0, 0, 1]);
    let xid = msg.xid();
    let start = Instant::now();
    let saved = (state % 4 == 1).then(|| Ipv4Addr::new(10, 0, 0, 7));
    let (mut m, actions) =
        Machine::new(mac, Some("fuzz".into()), saved, start, Box::new(Fixed(xid)));
    check(&actions);
    // 0: SELECTING, 1: REBOOTING, 2: REQUESTING, 3: RENEWING after a lease.
    if state % 4 >= 2 {
        let offered = m.on_reply(&reply(xid, &mac, MessageType::Offer), start);
        check(&offered.expect("our offer is taken"));
    }
    if state % 4 == 3 {
        let acked = m.on_reply(&reply(xid, &mac, MessageType::Ack), start);
        check(&acked.expect("our ack is taken"));
        let renew = m.deadline();
        check(&m.on_timeout(renew));
    }
    let now = m.deadline().min(start + Duration::from_secs(1));
    if let Ok(actions) = m.on_reply(&msg, now) {
        check(&actions);
    }
    // The timers of whatever lease it holds now, to expiry and past it.
    for _ in 0..4 {
        let at = m.deadline();
        check(&m.on_timeout(at));
    }
    check(&m.release(m.deadline()));
});
