//! The DHCPv4 client (RFC 2131): a state machine that is pure (time and randomness come
//! from the caller, packets in and actions out) and a driver ([`client`]) that runs it on a
//! UDP socket and applies leases over netlink.
//!
//! States and what moves between them:
//!
//! - **INIT → SELECTING**: DISCOVER, broadcast, retried at 4, 8, 16, 32, 64, 64… seconds
//!   ±1 s (RFC 2131 4.1), forever: a server that comes later is found.
//! - **SELECTING → REQUESTING**: the first acceptable OFFER; REQUEST broadcast naming the
//!   server and the address. Four tries, then back to INIT.
//! - **INIT-REBOOT → REBOOTING**: with a lease saved from an earlier boot, REQUEST that
//!   address without DISCOVER; two tries, then INIT.
//! - **BOUND**: the lease applied; at T1 → **RENEWING** (REQUEST unicast to the server),
//!   at T2 → **REBINDING** (REQUEST broadcast), at expiry → the address and its routes are
//!   removed and the client starts again at INIT.
//! - A NAK in any state that asked for an address ends that address and restarts at INIT
//!   after a back-off that grows with each NAK in a row, so a server that NAKs everything
//!   is not flooded.
//! - RELEASE on an orderly shutdown (the saved lease is kept for INIT-REBOOT).
//!
//! Replies are accepted only if they are BOOTREPLYs with our transaction id and our
//! hardware address, carry a message type, and (for ACKs) make a usable [`Lease`];
//! anything else is dropped and counted, never fatal. Address conflict detection (ARP
//! probing and DECLINE) is not done: the client has no packet socket.

pub mod client;
pub mod lease;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};

pub use lease::{Lease, SavedLease};

/// Where a message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// 255.255.255.255 on the client's interface.
    Broadcast,
    /// A server we have an address to talk to.
    Unicast(Ipv4Addr),
}

/// How a lease was (re)gained, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// After DISCOVER/OFFER/REQUEST/ACK.
    Discovered,
    /// INIT-REBOOT: the saved lease confirmed.
    Rebooted,
    /// RENEWING: the same server extended it.
    Renewed,
    /// REBINDING: some server extended it.
    Rebound,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send a message.
    Send(Box<Message>, Destination),
    /// Apply the lease (address with its lifetime, routes, MTU, DNS); `Bound` says how it
    /// came. Called again on every renewal with the same address.
    Apply(Box<Lease>, Bound),
    /// Remove this lease's address and routes; the string says why.
    Remove(Box<Lease>, &'static str),
    /// Save this lease for INIT-REBOOT; granted at the given wall-clock offset (seconds
    /// before now that the request went out).
    Save(Box<Lease>, Duration),
    /// Forget any saved lease.
    Forget,
    /// A NAK arrived; the message is the server's reason if it gave one.
    Nak(Option<String>),
}

/// The client's state (RFC 2131 figure 5).
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// Waiting to send a DISCOVER at `at`.
    Init { at: Instant },
    /// DISCOVER sent; waiting for an OFFER.
    Selecting { tries: u32, retry_at: Instant },
    /// REQUEST for an offer sent; waiting for an ACK.
    Requesting {
        offer: Box<Lease>,
        tries: u32,
        retry_at: Instant,
        sent_at: Instant,
    },
    /// REQUEST for a remembered address sent; waiting for an ACK.
    Rebooting {
        address: Ipv4Addr,
        tries: u32,
        retry_at: Instant,
        sent_at: Instant,
    },
    /// Holding a lease.
    Bound { lease: Box<Lease>, since: Instant },
    /// Asking the granting server to extend it.
    Renewing {
        lease: Box<Lease>,
        since: Instant,
        retry_at: Instant,
        sent_at: Instant,
    },
    /// Asking any server to extend it.
    Rebinding {
        lease: Box<Lease>,
        since: Instant,
        retry_at: Instant,
        sent_at: Instant,
    },
}

impl State {
    /// The state's name as RFC 2131 spells it.
    pub fn name(&self) -> &'static str {
        match self {
            State::Init { .. } => "INIT",
            State::Selecting { .. } => "SELECTING",
            State::Requesting { .. } => "REQUESTING",
            State::Rebooting { .. } => "REBOOTING",
            State::Bound { .. } => "BOUND",
            State::Renewing { .. } => "RENEWING",
            State::Rebinding { .. } => "REBINDING",
        }
    }
}

/// Why a reply was dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ignored {
    /// Not a BOOTREPLY, or another transaction or hardware address.
    NotForUs,
    /// No DHCP message type option.
    NoMessageType,
    /// Not a type this state waits for.
    Unexpected(MessageType, &'static str),
    /// An OFFER or ACK we cannot use, with the reason.
    Unusable(String),
}

/// Randomness the machine needs: transaction ids and retry jitter.
pub trait Random {
    /// A uniformly random u32.
    fn next_u32(&mut self) -> u32;
}

/// The DHCPv4 client state machine for one interface.
pub struct Machine {
    mac: [u8; 6],
    hostname: Option<String>,
    xid: u32,
    state: State,
    naks_in_a_row: u32,
    rng: Box<dyn Random + Send>,
}

impl std::fmt::Debug for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Machine")
            .field("state", &self.state)
            .field("xid", &self.xid)
            .finish_non_exhaustive()
    }
}

/// Requests at most this many times before giving up on an offer.
const REQUEST_TRIES: u32 = 4;
/// INIT-REBOOT requests before falling back to DISCOVER.
const REBOOT_TRIES: u32 = 2;
/// The longest wait between retransmissions (RFC 2131 4.1).
const MAX_BACKOFF: Duration = Duration::from_secs(64);
/// The shortest wait between RENEWING/REBINDING retries. RFC 2131 4.4.5 suggests 60 s;
/// we retry sooner so that leases of a few minutes (dnsmasq's minimum is two) still get
/// several tries before T2 and expiry. Half the time left is still the rule above it.
const MIN_RENEW_RETRY: Duration = Duration::from_secs(4);

impl Machine {
    /// A machine for the interface with hardware address `mac`. With `saved` (a lease from
    /// an earlier boot for this MAC) it starts in INIT-REBOOT, else in INIT.
    pub fn new(
        mac: [u8; 6],
        hostname: Option<String>,
        saved: Option<Ipv4Addr>,
        now: Instant,
        mut rng: Box<dyn Random + Send>,
    ) -> (Machine, Vec<Action>) {
        let xid = rng.next_u32();
        let mut m = Machine {
            mac,
            hostname,
            xid,
            state: State::Init { at: now },
            naks_in_a_row: 0,
            rng,
        };
        let actions = match saved {
            Some(address) => m.send_reboot(address, 1, now),
            None => m.send_discover(1, now),
        };
        (m, actions)
    }

    /// The current state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The current transaction id.
    pub fn xid(&self) -> u32 {
        self.xid
    }

    /// The lease held, if any (BOUND, RENEWING, REBINDING), and when it was granted.
    pub fn lease(&self) -> Option<(&Lease, Instant)> {
        match &self.state {
            State::Bound { lease, since }
            | State::Renewing { lease, since, .. }
            | State::Rebinding { lease, since, .. } => Some((lease, *since)),
            _ => None,
        }
    }

    /// When [`Machine::on_timeout`] must next be called.
    pub fn deadline(&self) -> Instant {
        match &self.state {
            State::Init { at } => *at,
            State::Selecting { retry_at, .. }
            | State::Requesting { retry_at, .. }
            | State::Rebooting { retry_at, .. } => *retry_at,
            State::Bound { lease, since } => at(*since, lease.t1_secs),
            State::Renewing {
                lease,
                since,
                retry_at,
                ..
            } => (*retry_at).min(at(*since, lease.t2_secs)),
            State::Rebinding {
                lease,
                since,
                retry_at,
                ..
            } => (*retry_at).min(at(*since, lease.lease_secs)),
        }
    }

    /// Time has reached [`Machine::deadline`]: retransmit, move to RENEWING/REBINDING, or
    /// let the lease expire.
    pub fn on_timeout(&mut self, now: Instant) -> Vec<Action> {
        if now < self.deadline() {
            return Vec::new();
        }
        match self.state.clone() {
            State::Init { .. } => self.send_discover(1, now),
            State::Selecting { tries, .. } => self.send_discover(tries + 1, now),
            State::Requesting { offer, tries, .. } => {
                if tries >= REQUEST_TRIES {
                    self.send_discover(1, now)
                } else {
                    self.send_select_request(offer, tries + 1, now)
                }
            }
            State::Rebooting { address, tries, .. } => {
                if tries >= REBOOT_TRIES {
                    self.send_discover(1, now)
                } else {
                    self.send_reboot(address, tries + 1, now)
                }
            }
            State::Bound { lease, since } => self.send_extend(lease, since, false, now),
            State::Renewing { lease, since, .. } => {
                let rebind = now >= at(since, lease.t2_secs);
                self.send_extend(lease, since, rebind, now)
            }
            State::Rebinding { lease, since, .. } => {
                if now >= at(since, lease.lease_secs) {
                    let mut actions = vec![Action::Remove(lease, "lease expired"), Action::Forget];
                    actions.extend(self.send_discover(1, now));
                    actions
                } else {
                    self.send_extend(lease, since, true, now)
                }
            }
        }
    }

    /// A reply arrived. Returns what to do, or why it was dropped.
    pub fn on_reply(&mut self, msg: &Message, now: Instant) -> Result<Vec<Action>, Ignored> {
        // `hlen` before `chaddr`, which slices with it and panics above 16 (`decode_reply`
        // refuses those; a message from anywhere else gets the same care).
        if msg.opcode() != Opcode::BootReply
            || msg.xid() != self.xid
            || msg.hlen() != 6
            || msg.chaddr().get(..6) != Some(&self.mac[..])
        {
            return Err(Ignored::NotForUs);
        }
        let kind = msg.opts().msg_type().ok_or(Ignored::NoMessageType)?;
        let state_name = self.state.name();
        match (self.state.clone(), kind) {
            (State::Selecting { .. }, MessageType::Offer) => {
                let offer = Lease::from_reply(msg).map_err(Ignored::Unusable)?;
                Ok(self.send_select_request(Box::new(offer), 1, now))
            }
            (State::Requesting { sent_at, .. }, MessageType::Ack) => {
                self.bind(msg, sent_at, Bound::Discovered, None, now)
            }
            (State::Rebooting { sent_at, .. }, MessageType::Ack) => {
                self.bind(msg, sent_at, Bound::Rebooted, None, now)
            }
            (State::Renewing { sent_at, lease, .. }, MessageType::Ack) => {
                self.bind(msg, sent_at, Bound::Renewed, Some(lease), now)
            }
            (State::Rebinding { sent_at, lease, .. }, MessageType::Ack) => {
                self.bind(msg, sent_at, Bound::Rebound, Some(lease), now)
            }
            (
                State::Requesting { .. }
                | State::Rebooting { .. }
                | State::Renewing { .. }
                | State::Rebinding { .. },
                MessageType::Nak,
            ) => {
                let reason = match msg.opts().get(OptionCode::Message) {
                    Some(DhcpOption::Message(m)) => Some(m.chars().take(200).collect()),
                    _ => None,
                };
                let mut actions = vec![Action::Nak(reason)];
                if let Some((lease, _)) = self.lease() {
                    actions.push(Action::Remove(Box::new(lease.clone()), "server sent NAK"));
                }
                actions.push(Action::Forget);
                self.naks_in_a_row = self.naks_in_a_row.saturating_add(1);
                // The first NAK restarts at once; more in a row back off like retransmissions.
                let wait = if self.naks_in_a_row <= 1 {
                    Duration::ZERO
                } else {
                    self.backoff(self.naks_in_a_row - 1)
                };
                self.xid = self.rng.next_u32();
                self.state = State::Init { at: now + wait };
                if wait.is_zero() {
                    actions.extend(self.send_discover(1, now));
                }
                Ok(actions)
            }
            (_, kind) => Err(Ignored::Unexpected(kind, state_name)),
        }
    }

    /// An orderly shutdown: the RELEASE to send (if a lease is held) and the removal. The
    /// saved lease is kept: the next boot asks for the same address with INIT-REBOOT,
    /// which a server grants if no one took it meanwhile.
    pub fn release(&mut self, now: Instant) -> Vec<Action> {
        let Some((lease, _)) = self.lease() else {
            return Vec::new();
        };
        let lease = lease.clone();
        let mut msg = self.message(MessageType::Release, lease.address.addr());
        msg.opts_mut()
            .insert(DhcpOption::ServerIdentifier(lease.server));
        self.state = State::Init {
            at: now + Duration::from_secs(u64::from(u32::MAX)),
        };
        vec![
            Action::Send(Box::new(msg), Destination::Unicast(lease.server)),
            Action::Remove(Box::new(lease), "released"),
        ]
    }

    fn bind(
        &mut self,
        msg: &Message,
        sent_at: Instant,
        how: Bound,
        old: Option<Box<Lease>>,
        now: Instant,
    ) -> Result<Vec<Action>, Ignored> {
        let lease = Lease::from_reply(msg).map_err(Ignored::Unusable)?;
        let mut actions = Vec::new();
        if let Some(old) = old {
            if old.address != lease.address {
                // A server may move us; the old address must not linger.
                actions.push(Action::Remove(old, "server gave another address"));
            }
        }
        let lease = Box::new(lease);
        self.naks_in_a_row = 0;
        actions.push(Action::Apply(lease.clone(), how));
        actions.push(Action::Save(
            lease.clone(),
            now.saturating_duration_since(sent_at),
        ));
        self.state = State::Bound {
            lease,
            since: sent_at,
        };
        Ok(actions)
    }

    fn send_discover(&mut self, tries: u32, now: Instant) -> Vec<Action> {
        if tries == 1 {
            self.xid = self.rng.next_u32();
        }
        let mut msg = self.message(MessageType::Discover, Ipv4Addr::UNSPECIFIED);
        msg.set_flags(Flags::default().set_broadcast());
        self.state = State::Selecting {
            tries,
            retry_at: now + self.backoff(tries),
        };
        vec![Action::Send(Box::new(msg), Destination::Broadcast)]
    }

    fn send_select_request(&mut self, offer: Box<Lease>, tries: u32, now: Instant) -> Vec<Action> {
        let mut msg = self.message(MessageType::Request, Ipv4Addr::UNSPECIFIED);
        msg.set_flags(Flags::default().set_broadcast());
        msg.opts_mut()
            .insert(DhcpOption::RequestedIpAddress(offer.address.addr()));
        msg.opts_mut()
            .insert(DhcpOption::ServerIdentifier(offer.server));
        self.state = State::Requesting {
            offer,
            tries,
            retry_at: now + self.backoff(tries),
            sent_at: now,
        };
        vec![Action::Send(Box::new(msg), Destination::Broadcast)]
    }

    fn send_reboot(&mut self, address: Ipv4Addr, tries: u32, now: Instant) -> Vec<Action> {
        let mut msg = self.message(MessageType::Request, Ipv4Addr::UNSPECIFIED);
        msg.set_flags(Flags::default().set_broadcast());
        msg.opts_mut()
            .insert(DhcpOption::RequestedIpAddress(address));
        self.state = State::Rebooting {
            address,
            tries,
            retry_at: now + self.backoff(tries),
            sent_at: now,
        };
        vec![Action::Send(Box::new(msg), Destination::Broadcast)]
    }

    /// RENEWING (unicast to the server) or REBINDING (broadcast): ciaddr set, no server id,
    /// no requested address (RFC 2131 table 5). The next try is half-way to the next
    /// deadline, at least [`MIN_RENEW_RETRY`] later.
    fn send_extend(
        &mut self,
        lease: Box<Lease>,
        since: Instant,
        rebind: bool,
        now: Instant,
    ) -> Vec<Action> {
        let entering = !matches!(
            (&self.state, rebind),
            (State::Renewing { .. }, false) | (State::Rebinding { .. }, true)
        );
        if entering {
            self.xid = self.rng.next_u32();
        }
        let msg = self.message(MessageType::Request, lease.address.addr());
        let until = if rebind {
            at(since, lease.lease_secs)
        } else {
            at(since, lease.t2_secs)
        };
        let retry_at = now + (until.saturating_duration_since(now) / 2).max(MIN_RENEW_RETRY);
        let to = if rebind {
            Destination::Broadcast
        } else {
            Destination::Unicast(lease.server)
        };
        self.state = if rebind {
            State::Rebinding {
                lease,
                since,
                retry_at,
                sent_at: now,
            }
        } else {
            State::Renewing {
                lease,
                since,
                retry_at,
                sent_at: now,
            }
        };
        vec![Action::Send(Box::new(msg), to)]
    }

    /// 4, 8, 16, 32, 64, 64… seconds for try 1, 2, 3…, each ±1 s at random.
    fn backoff(&mut self, tries: u32) -> Duration {
        let base = Duration::from_secs(4u64 << tries.saturating_sub(1).min(4)).min(MAX_BACKOFF);
        let jitter_ms = u64::from(self.rng.next_u32() % 2001);
        (base + Duration::from_millis(jitter_ms)).saturating_sub(Duration::from_secs(1))
    }

    fn message(&self, kind: MessageType, ciaddr: Ipv4Addr) -> Message {
        let mut msg = Message::new_with_id(
            self.xid,
            ciaddr,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &self.mac,
        );
        let opts = msg.opts_mut();
        opts.insert(DhcpOption::MessageType(kind));
        let mut client_id = vec![1u8]; // hardware type: Ethernet
        client_id.extend_from_slice(&self.mac);
        opts.insert(DhcpOption::ClientIdentifier(client_id));
        if kind != MessageType::Release {
            opts.insert(DhcpOption::MaxMessageSize(1500));
            opts.insert(DhcpOption::ParameterRequestList(vec![
                OptionCode::SubnetMask,
                OptionCode::Router,
                OptionCode::DomainNameServer,
                OptionCode::Hostname,
                OptionCode::DomainName,
                OptionCode::InterfaceMtu,
                OptionCode::AddressLeaseTime,
                OptionCode::Renewal,
                OptionCode::Rebinding,
                OptionCode::DomainSearch,
                OptionCode::ClasslessStaticRoute,
            ]));
            if let Some(h) = &self.hostname {
                opts.insert(DhcpOption::Hostname(h.clone()));
            }
        }
        msg
    }
}

/// Decodes a packet received on the client's socket into a reply it may act on. Every
/// field a later library call trusts is checked first: the framing ([`check_framing`]),
/// `op` = BOOTREPLY, `htype` = Ethernet and `hlen` <= 16 (dhcproto's `chaddr()` slices its
/// 16-byte array by `hlen` and panics past it). A refused packet gets the reason.
pub fn decode_reply(packet: &[u8]) -> Result<Message, String> {
    const BOOTREPLY: u8 = 2;
    const ETHERNET: u8 = 1;
    const CHADDR_LEN: u8 = 16;
    check_framing(packet)?;
    let (op, htype, hlen) = match packet {
        [op, htype, hlen, ..] => (*op, *htype, *hlen),
        _ => return Err("no BOOTP header".to_owned()),
    };
    if op != BOOTREPLY {
        return Err(format!("op {op} is not a BOOTREPLY"));
    }
    if htype != ETHERNET {
        return Err(format!("htype {htype} is not Ethernet"));
    }
    if hlen > CHADDR_LEN {
        return Err(format!(
            "hlen {hlen} is longer than chaddr's {CHADDR_LEN} bytes"
        ));
    }
    <Message as dhcproto::Decodable>::from_bytes(packet).map_err(|e| e.to_string())
}

/// Checks a received packet's framing before it is decoded: a BOOTP header, the magic
/// cookie, and options that each fit in the packet up to an END and have the length
/// their type fixes ([`option_length_ok`]). The decoder is lenient (it keeps the options
/// before a broken one, reads the first bytes of a too-long one, and asserts some lengths
/// in debug builds: option 155 of one byte panicked it); a packet with any broken option
/// is dropped whole instead.
pub fn check_framing(packet: &[u8]) -> Result<(), String> {
    const HEADER: usize = 236;
    const COOKIE: [u8; 4] = [99, 130, 83, 99];
    if packet.len() < HEADER + COOKIE.len() {
        return Err(format!(
            "{} bytes is shorter than a DHCP header",
            packet.len()
        ));
    }
    if packet.get(HEADER..HEADER + 4) != Some(&COOKIE[..]) {
        return Err("no DHCP magic cookie".to_owned());
    }
    let mut i = HEADER + 4;
    loop {
        match packet.get(i) {
            None => return Err("options end without an END option".to_owned()),
            Some(0) => i += 1,
            Some(255) => return Ok(()),
            Some(&code) => {
                let len = usize::from(
                    *packet
                        .get(i + 1)
                        .ok_or_else(|| format!("option {code} at byte {i} has no length"))?,
                );
                if i + 2 + len > packet.len() {
                    return Err(format!(
                        "option {code} at byte {i} says {len} bytes but the packet ends first"
                    ));
                }
                if !option_length_ok(code, len) {
                    return Err(format!(
                        "option {code} at byte {i} has {len} bytes, which its type does not allow"
                    ));
                }
                i += 2 + len;
            }
        }
    }
}

/// Whether `len` is a length option `code` may have: the fixed sizes of RFC 2132's
/// addresses, times, counts and flags and of the later options dhcproto reads as fixed
/// (RFC 4039 rapid commit, RFC 4578 client interface, RFC 6926 bulk lease query times,
/// RFC 4702's FQDN of at least 3), and whole addresses for the address lists. Options not
/// named here may have any length.
pub fn option_length_ok(code: u8, len: usize) -> bool {
    match code {
        // Rapid commit.
        80 => len == 0,
        // IP forwarding, source routing, TTL, MTU discovery flags, all subnets local,
        // mask discovery and supplier, router discovery, trailers, ARP encapsulation,
        // TCP TTL and keep-alive garbage, NetBIOS node type, overload, message type.
        19 | 20 | 23 | 27 | 29..=31 | 34 | 36 | 37 | 39 | 46 | 52 | 53 => len == 1,
        // Boot file size, max datagram, interface MTU, max DHCP message size.
        13 | 22 | 26 | 57 => len == 2,
        // Client network interface identifier.
        94 => len == 3,
        // Subnet mask, time offset, swap server, PMTU aging, router solicitation
        // address, ARP cache and keep-alive times, lease time, server identifier, T1,
        // T2, requested address, bulk lease query times.
        1 | 2 | 16 | 24 | 32 | 35 | 38 | 50 | 51 | 54 | 58 | 59 | 152..=155 => len == 4,
        // Routers, time, name, domain name, log, cookie, LPR, Impress and resource
        // location servers, NIS, NTP, NetBIOS name and distribution servers, X fonts and
        // display managers.
        3..=11 | 41 | 42 | 44 | 45 | 48 | 49 => len > 0 && len.is_multiple_of(4),
        // Client FQDN: flags, two RCODEs, then the name.
        81 => len >= 3,
        _ => true,
    }
}

fn at(since: Instant, secs: u32) -> Instant {
    since
        .checked_add(Duration::from_secs(u64::from(secs)))
        .unwrap_or(since + Duration::from_secs(u64::from(u32::MAX)))
}

#[cfg(test)]
mod tests;
