//! The state machine against a scripted server, with time in our hands.

use super::*;
use ipnet::Ipv4Net;

const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
const ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);

/// A counter: deterministic but different each call.
struct Counter(u32);
impl Random for Counter {
    fn next_u32(&mut self) -> u32 {
        self.0 = self.0.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        self.0
    }
}

fn machine(saved: Option<Ipv4Addr>, now: Instant) -> (Machine, Vec<Action>) {
    Machine::new(MAC, Some("node-1".into()), saved, now, Box::new(Counter(7)))
}

/// A reply of `kind` to the machine's current transaction.
fn reply(m: &Machine, kind: MessageType, yiaddr: Ipv4Addr) -> Message {
    let mut r = Message::new_with_id(
        m.xid(),
        Ipv4Addr::UNSPECIFIED,
        yiaddr,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &MAC,
    );
    r.set_opcode(Opcode::BootReply);
    let o = r.opts_mut();
    o.insert(DhcpOption::MessageType(kind));
    o.insert(DhcpOption::ServerIdentifier(SERVER));
    o.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
    o.insert(DhcpOption::AddressLeaseTime(120));
    o.insert(DhcpOption::Renewal(10));
    o.insert(DhcpOption::Rebinding(20));
    o.insert(DhcpOption::Router(vec![SERVER]));
    r
}

fn sent(actions: &[Action]) -> Vec<(MessageType, Destination, &Message)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(m, d) => Some((m.opts().msg_type().unwrap(), *d, &**m)),
            _ => None,
        })
        .collect()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Runs a full DISCOVER/OFFER/REQUEST/ACK and returns the machine, bound at `t0`.
fn bound(t0: Instant) -> Machine {
    let (mut m, a) = machine(None, t0);
    assert_eq!(sent(&a)[0].0, MessageType::Discover);
    let offer = reply(&m, MessageType::Offer, ADDR);
    m.on_reply(&offer, t0).unwrap();
    let ack = reply(&m, MessageType::Ack, ADDR);
    let a = m.on_reply(&ack, t0).unwrap();
    assert!(matches!(&a[0], Action::Apply(_, Bound::Discovered)));
    m
}

#[test]
fn discover_offer_request_ack() {
    let t0 = Instant::now();
    let (mut m, a) = machine(None, t0);
    let s = sent(&a);
    assert_eq!(s.len(), 1);
    let (kind, to, discover) = s[0];
    assert_eq!((kind, to), (MessageType::Discover, Destination::Broadcast));
    assert!(
        discover.flags().broadcast(),
        "replies must come broadcast: no address yet"
    );
    assert_eq!(
        discover.opts().get(OptionCode::Hostname),
        Some(&DhcpOption::Hostname("node-1".into()))
    );
    assert_eq!(m.state().name(), "SELECTING");

    let a = m
        .on_reply(&reply(&m, MessageType::Offer, ADDR), t0)
        .unwrap();
    let (kind, to, request) = sent(&a)[0];
    assert_eq!((kind, to), (MessageType::Request, Destination::Broadcast));
    assert_eq!(
        request.opts().get(OptionCode::RequestedIpAddress),
        Some(&DhcpOption::RequestedIpAddress(ADDR))
    );
    assert_eq!(
        request.opts().get(OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(SERVER))
    );
    assert_eq!(
        request.xid(),
        discover.xid(),
        "one transaction from DISCOVER to ACK"
    );

    let a = m
        .on_reply(&reply(&m, MessageType::Ack, ADDR), t0 + secs(1))
        .unwrap();
    match &a[..] {
        [Action::Apply(l, Bound::Discovered), Action::Save(s, age)] => {
            assert_eq!(l.address, Ipv4Net::new(ADDR, 24).unwrap());
            assert_eq!(l, s);
            assert_eq!(
                *age,
                secs(1),
                "the lease runs from when the REQUEST went out"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(m.state().name(), "BOUND");
    assert_eq!(m.deadline(), t0 + secs(10), "T1 from the request time");
}

#[test]
fn renew_at_t1_unicast_then_rebind_at_t2_broadcast_then_expire() {
    let t0 = Instant::now();
    let mut m = bound(t0);
    assert!(m.on_timeout(t0 + secs(9)).is_empty(), "nothing before T1");

    let a = m.on_timeout(t0 + secs(10));
    let (kind, to, renew) = sent(&a)[0];
    assert_eq!(
        (kind, to),
        (MessageType::Request, Destination::Unicast(SERVER))
    );
    assert_eq!(renew.ciaddr(), ADDR);
    assert!(renew.opts().get(OptionCode::RequestedIpAddress).is_none());
    assert!(renew.opts().get(OptionCode::ServerIdentifier).is_none());
    assert_eq!(m.state().name(), "RENEWING");
    // Retries go half-way to T2 (20 s), at least 4 s apart.
    assert_eq!(m.deadline(), t0 + secs(15));
    let a = m.on_timeout(t0 + secs(15));
    assert_eq!(sent(&a)[0].1, Destination::Unicast(SERVER));
    assert_eq!(m.deadline(), t0 + secs(19));
    m.on_timeout(t0 + secs(19));
    assert_eq!(m.deadline(), t0 + secs(20), "capped at T2");

    let a = m.on_timeout(t0 + secs(20));
    let (kind, to, rebind) = sent(&a)[0];
    assert_eq!((kind, to), (MessageType::Request, Destination::Broadcast));
    assert_eq!(rebind.ciaddr(), ADDR);
    assert_eq!(m.state().name(), "REBINDING");
    assert_eq!(m.deadline(), t0 + secs(70), "half-way to the 120 s expiry");

    let mut now = t0 + secs(20);
    while now < t0 + secs(120) {
        now = m.deadline();
        let a = m.on_timeout(now);
        if now < t0 + secs(120) {
            assert_eq!(sent(&a)[0].1, Destination::Broadcast);
        } else {
            assert!(
                matches!(&a[0], Action::Remove(l, "lease expired") if l.address.addr() == ADDR)
            );
            assert_eq!(a[1], Action::Forget);
            assert_eq!(sent(&a)[0].0, MessageType::Discover);
        }
    }
    assert_eq!(m.state().name(), "SELECTING");
}

#[test]
fn an_ack_while_renewing_extends_the_lease_from_the_renew_request() {
    let t0 = Instant::now();
    let mut m = bound(t0);
    m.on_timeout(t0 + secs(10));
    let a = m
        .on_reply(&reply(&m, MessageType::Ack, ADDR), t0 + secs(11))
        .unwrap();
    assert!(matches!(&a[0], Action::Apply(_, Bound::Renewed)), "{a:?}");
    assert_eq!(
        m.deadline(),
        t0 + secs(20),
        "next T1 counts from the renew request at 10 s"
    );
}

#[test]
fn a_rebind_ack_for_another_address_removes_the_old_one() {
    let t0 = Instant::now();
    let mut m = bound(t0);
    m.on_timeout(t0 + secs(10));
    m.on_timeout(t0 + secs(20));
    let other = Ipv4Addr::new(10, 0, 2, 99);
    let a = m
        .on_reply(&reply(&m, MessageType::Ack, other), t0 + secs(21))
        .unwrap();
    assert!(
        matches!(&a[0], Action::Remove(l, _) if l.address.addr() == ADDR),
        "{a:?}"
    );
    assert!(matches!(&a[1], Action::Apply(l, Bound::Rebound) if l.address.addr() == other));
}

#[test]
fn a_nak_while_renewing_drops_the_address_and_rediscovers() {
    let t0 = Instant::now();
    let mut m = bound(t0);
    m.on_timeout(t0 + secs(10));
    let old_xid = m.xid();
    let mut nak = reply(&m, MessageType::Nak, Ipv4Addr::UNSPECIFIED);
    nak.opts_mut()
        .insert(DhcpOption::Message("wrong network".into()));
    let a = m.on_reply(&nak, t0 + secs(10)).unwrap();
    assert_eq!(a[0], Action::Nak(Some("wrong network".into())));
    assert!(matches!(&a[1], Action::Remove(_, "server sent NAK")));
    assert_eq!(a[2], Action::Forget);
    assert_eq!(sent(&a)[0].0, MessageType::Discover);
    assert_ne!(m.xid(), old_xid, "a new transaction");
    assert_eq!(m.state().name(), "SELECTING");
}

#[test]
fn naks_in_a_row_back_off() {
    let t0 = Instant::now();
    let (mut m, _) = machine(None, t0);
    let mut now = t0;
    for round in 0..4 {
        m.on_reply(&reply(&m, MessageType::Offer, ADDR), now)
            .unwrap();
        let a = m
            .on_reply(&reply(&m, MessageType::Nak, Ipv4Addr::UNSPECIFIED), now)
            .unwrap();
        if round == 0 {
            assert_eq!(
                m.state().name(),
                "SELECTING",
                "the first NAK restarts at once"
            );
        } else {
            assert_eq!(m.state().name(), "INIT");
            assert!(sent(&a).is_empty());
            assert!(m.deadline() >= now + secs(3), "round {round}");
            now = m.deadline();
            assert_eq!(sent(&m.on_timeout(now))[0].0, MessageType::Discover);
        }
    }
    // An ACK at last resets the count.
    m.on_reply(&reply(&m, MessageType::Offer, ADDR), now)
        .unwrap();
    m.on_reply(&reply(&m, MessageType::Ack, ADDR), now).unwrap();
    assert_eq!(m.naks_in_a_row, 0);
}

#[test]
fn init_reboot_requests_the_saved_address_then_falls_back_to_discover() {
    let t0 = Instant::now();
    let (mut m, a) = machine(Some(ADDR), t0);
    let (kind, to, req) = sent(&a)[0];
    assert_eq!((kind, to), (MessageType::Request, Destination::Broadcast));
    assert_eq!(
        req.opts().get(OptionCode::RequestedIpAddress),
        Some(&DhcpOption::RequestedIpAddress(ADDR))
    );
    assert!(req.opts().get(OptionCode::ServerIdentifier).is_none());
    assert_eq!(req.ciaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(m.state().name(), "REBOOTING");
    let t = m.deadline();
    assert_eq!(sent(&m.on_timeout(t))[0].0, MessageType::Request);
    let t = m.deadline();
    assert_eq!(sent(&m.on_timeout(t))[0].0, MessageType::Discover);

    let (mut m, _) = machine(Some(ADDR), t0);
    let a = m.on_reply(&reply(&m, MessageType::Ack, ADDR), t0).unwrap();
    assert!(matches!(&a[0], Action::Apply(_, Bound::Rebooted)));
}

#[test]
fn discover_retries_back_off_to_64_seconds_with_jitter_and_never_stop() {
    let t0 = Instant::now();
    let (mut m, _) = machine(None, t0);
    let mut now = t0;
    let mut waits = Vec::new();
    for _ in 0..8 {
        let next = m.deadline();
        waits.push(next - now);
        now = next;
        assert_eq!(sent(&m.on_timeout(now))[0].0, MessageType::Discover);
    }
    let bases = [4, 8, 16, 32, 64, 64, 64, 64];
    for (w, b) in waits.iter().zip(bases) {
        assert!(
            *w >= secs(b - 1) && *w <= secs(b + 1),
            "wait {w:?} not within 1 s of {b} s"
        );
    }
    assert!(waits
        .windows(2)
        .any(|p| p[0].subsec_millis() != p[1].subsec_millis()));
}

#[test]
fn foreign_and_malformed_replies_are_ignored() {
    let t0 = Instant::now();
    let (mut m, _) = machine(None, t0);
    let mut wrong_xid = reply(&m, MessageType::Offer, ADDR);
    wrong_xid.set_xid(m.xid().wrapping_add(1));
    assert_eq!(m.on_reply(&wrong_xid, t0), Err(Ignored::NotForUs));
    let mut wrong_mac = reply(&m, MessageType::Offer, ADDR);
    wrong_mac.set_chaddr(&[1, 2, 3, 4, 5, 6]);
    assert_eq!(m.on_reply(&wrong_mac, t0), Err(Ignored::NotForUs));
    let mut request = reply(&m, MessageType::Offer, ADDR);
    request.set_opcode(Opcode::BootRequest);
    assert_eq!(m.on_reply(&request, t0), Err(Ignored::NotForUs));
    let mut no_type = reply(&m, MessageType::Offer, ADDR);
    no_type.opts_mut().remove(OptionCode::MessageType);
    assert_eq!(m.on_reply(&no_type, t0), Err(Ignored::NoMessageType));
    let ack = reply(&m, MessageType::Ack, ADDR);
    assert_eq!(
        m.on_reply(&ack, t0),
        Err(Ignored::Unexpected(MessageType::Ack, "SELECTING"))
    );
    let mut no_server = reply(&m, MessageType::Offer, ADDR);
    no_server.opts_mut().remove(OptionCode::ServerIdentifier);
    assert!(matches!(
        m.on_reply(&no_server, t0),
        Err(Ignored::Unusable(_))
    ));
    assert_eq!(m.state().name(), "SELECTING", "nothing changed");
    assert!(m.on_reply(&reply(&m, MessageType::Offer, ADDR), t0).is_ok());
}

#[test]
fn release_is_unicast_to_the_server_and_removes_the_address() {
    let t0 = Instant::now();
    let mut m = bound(t0);
    let a = m.release(t0 + secs(1));
    let (kind, to, rel) = sent(&a)[0];
    assert_eq!(
        (kind, to),
        (MessageType::Release, Destination::Unicast(SERVER))
    );
    assert_eq!(rel.ciaddr(), ADDR);
    assert!(matches!(&a[1], Action::Remove(_, "released")));
    assert_eq!(a.len(), 2, "the saved lease is kept for INIT-REBOOT: {a:?}");
    assert!(
        m.release(t0 + secs(2)).is_empty(),
        "nothing left to release"
    );
}

#[test]
fn framing_is_checked_before_decoding() {
    let t0 = Instant::now();
    let (m, _) = machine(None, t0);
    let good = reply(&m, MessageType::Offer, ADDR);
    let mut bytes = dhcproto::Encodable::to_vec(&good).unwrap();
    assert_eq!(check_framing(&bytes), Ok(()));
    assert!(check_framing(&bytes[..100])
        .unwrap_err()
        .contains("shorter than a DHCP header"));
    let end = bytes.len() - 1;
    assert_eq!(bytes[end], 255);
    bytes.truncate(end);
    assert!(check_framing(&bytes)
        .unwrap_err()
        .contains("without an END"));
    bytes.extend_from_slice(&[12, 200, b'x']);
    assert!(check_framing(&bytes).unwrap_err().contains("option 12"));
    let mut cookie = dhcproto::Encodable::to_vec(&good).unwrap();
    cookie[236] = 0;
    assert!(check_framing(&cookie).unwrap_err().contains("magic cookie"));
}

#[test]
fn decode_reply_refuses_hostile_header_fields_with_a_reason() {
    let t0 = Instant::now();
    let (m, _) = machine(None, t0);
    let good = dhcproto::Encodable::to_vec(&reply(&m, MessageType::Offer, ADDR)).unwrap();
    let msg = decode_reply(&good).unwrap();
    assert_eq!(msg.chaddr().len(), 6);
    // hlen 255 made dhcproto's chaddr() index past its 16-byte array: a panic in PID 1.
    let mut hlen = good.clone();
    hlen[2] = 255;
    // The old receive path (framing, then the library) let it through to chaddr().
    assert_eq!(check_framing(&hlen), Ok(()));
    let old = <Message as dhcproto::Decodable>::from_bytes(&hlen).unwrap();
    assert!(std::panic::catch_unwind(|| old.chaddr().len()).is_err());
    assert!(decode_reply(&hlen).unwrap_err().contains("hlen 255"));
    let mut op = good.clone();
    op[0] = 1;
    assert!(decode_reply(&op).unwrap_err().contains("op 1"));
    let mut htype = good.clone();
    htype[1] = 6;
    assert!(decode_reply(&htype).unwrap_err().contains("htype 6"));
    let mut framing = good;
    framing[236] = 0;
    assert!(decode_reply(&framing).unwrap_err().contains("magic cookie"));
}

/// A message with a hostile `hlen` that reached the state machine some other way than
/// `decode_reply` is dropped instead of panicking on `chaddr`.
#[test]
fn the_machine_drops_a_message_with_an_oversized_hlen() {
    let t0 = Instant::now();
    let (mut m, _) = machine(None, t0);
    let mut bytes = dhcproto::Encodable::to_vec(&reply(&m, MessageType::Offer, ADDR)).unwrap();
    bytes[2] = 255;
    let msg = <Message as dhcproto::Decodable>::from_bytes(&bytes).unwrap();
    assert!(matches!(m.on_reply(&msg, t0), Err(Ignored::NotForUs)));
}

/// Found by the `dhcp_reply` fuzz target: option 155 (a bulk lease query time) of one byte
/// made dhcproto's decoder fail a `debug_assert!(len == 4)`, a panic in any build with
/// debug assertions; in others, fixed-size options of the wrong size were read short or
/// cut. Such a packet is now dropped by the framing check, with the option named.
#[test]
fn options_of_the_wrong_length_for_their_type_are_refused() {
    let t0 = Instant::now();
    let (m, _) = machine(None, t0);
    let good = dhcproto::Encodable::to_vec(&reply(&m, MessageType::Offer, ADDR)).unwrap();
    let end = good.len() - 1;
    for (code, value) in [
        (155u8, &[7u8][..]),
        (51, &[0, 0, 1]),
        (53, &[2, 2]),
        (6, &[10, 0, 2]),
        (80, &[1]),
        (81, &[0, 0]),
    ] {
        let mut bad = good[..end].to_vec();
        bad.extend_from_slice(&[code, value.len() as u8]);
        bad.extend_from_slice(value);
        bad.push(255);
        let err = decode_reply(&bad).unwrap_err();
        assert!(err.contains(&format!("option {code} ")), "{code}: {err}");
    }
    let mut ok = good[..end].to_vec();
    ok.extend_from_slice(&[155, 4, 0, 0, 0, 9, 255]);
    assert!(decode_reply(&ok).is_ok());
}

/// A server's T2 of 1 s (no T1) gave T1 = T2 = 1: the order RFC 2131 4.4.5 asks for
/// (T1 < T2 < lease), which the `dhcp_reply` fuzz target checks, did not hold. A T2 under
/// 2 s is now replaced by the default, like one at or past the lease.
#[test]
fn a_rebinding_time_under_two_seconds_falls_back_to_the_default() {
    let t0 = Instant::now();
    let (m, _) = machine(None, t0);
    for t2 in [0, 1] {
        let mut r = reply(&m, MessageType::Ack, ADDR);
        r.opts_mut().remove(OptionCode::Renewal);
        r.opts_mut().insert(DhcpOption::Rebinding(t2));
        let l = Lease::from_reply(&r).unwrap();
        assert_eq!(
            (l.t1_secs, l.t2_secs, l.lease_secs),
            (60, 105, 120),
            "T2 {t2}"
        );
    }
}
