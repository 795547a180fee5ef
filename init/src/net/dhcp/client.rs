//! Runs the [`Machine`] for one interface: a UDP socket on port 68 bound to the interface,
//! timers, and the lease applied over netlink.
//!
//! Before it has an address the client sends to 255.255.255.255 from 0.0.0.0 and sets the
//! BROADCAST flag, so servers broadcast their replies (RFC 2131 4.1); a UDP socket bound to
//! the device receives those. That keeps the client free of packet sockets and BPF
//! filters, at the price of ARP probing (no DECLINE).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dhcproto::v4::{Message, MessageType};
use dhcproto::Encodable;
use ipnet::IpNet;
use nix::sys::socket::{self, setsockopt, sockopt, AddressFamily, SockFlag, SockType};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use super::{Action, Bound, Destination, Ignored, Lease, Machine, Random, SavedLease};
use crate::config::MacAddr;
use crate::net::link::{Link, Netlink, Route};

/// What the client reports to whoever runs it (the network manager, tests).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A message went out.
    Sent(MessageType, Destination),
    /// A lease was applied.
    Bound(Box<Lease>, Bound),
    /// A lease's address and routes were removed, and why.
    Removed(Box<Lease>, &'static str),
    /// The server refused us.
    Nak(Option<String>),
    /// A packet was dropped, and why.
    Dropped(String),
    /// Something failed that the client will retry or live with (a send, a netlink call).
    Error(String),
}

/// How to run the client on one interface.
#[derive(Debug, Clone)]
pub struct Options {
    /// The interface.
    pub link: Link,
    /// The host name to send (option 12).
    pub hostname: Option<String>,
    /// Where to keep the lease for INIT-REBOOT; None to keep nothing.
    pub lease_file: Option<PathBuf>,
    /// Apply the server's MTU (false when the config sets one).
    pub use_server_mtu: bool,
}

/// Randomness from the operating system, for transaction ids and jitter.
#[derive(Debug)]
pub struct OsRandom(ring::rand::SystemRandom);

impl Default for OsRandom {
    fn default() -> Self {
        OsRandom(ring::rand::SystemRandom::new())
    }
}

impl Random for OsRandom {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        // SystemRandom reads getrandom(2); should it ever fail, a time-based value still
        // gives distinct transaction ids.
        if ring::rand::SecureRandom::fill(&self.0, &mut b).is_err() {
            return SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
        }
        u32::from_ne_bytes(b)
    }
}

/// Opens the client's socket: UDP 0.0.0.0:68 on one device, allowed to broadcast.
pub fn open_socket(ifname: &str) -> std::io::Result<UdpSocket> {
    let fd: OwnedFd = socket::socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    setsockopt(&fd, sockopt::Broadcast, &true)?;
    setsockopt(
        &fd,
        sockopt::BindToDevice,
        &std::ffi::OsString::from(ifname),
    )?;
    let addr = socket::SockaddrIn::new(0, 0, 0, 0, 68);
    socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr)?;
    UdpSocket::from_std(std::net::UdpSocket::from(fd))
}

/// Runs the client until `stop` turns true, then releases the lease. Never returns an
/// error: failures are reported as events and retried.
pub async fn run(
    netlink: Netlink,
    opts: Options,
    events: mpsc::UnboundedSender<Event>,
    mut stop: watch::Receiver<bool>,
) {
    let name = opts.link.name.clone();
    let Some(mac) = opts.link.mac else {
        let _ = events.send(Event::Error(format!(
            "{name}: no hardware address; no DHCP"
        )));
        return;
    };
    let socket = loop {
        match open_socket(&name) {
            Ok(s) => break s,
            Err(e) => {
                let _ = events.send(Event::Error(format!(
                    "{name}: cannot open the DHCP socket: {e}"
                )));
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    };
    let saved = opts
        .lease_file
        .as_ref()
        .and_then(|p| match SavedLease::load(p) {
            Ok(Some(s)) if s.mac == MacAddr(mac).to_string() => Some(s),
            Ok(_) => None,
            Err(e) => {
                warn!(interface = %name, error = %e, "ignoring the saved lease");
                None
            }
        });
    let mut driver = Driver {
        netlink,
        opts,
        mac,
        socket,
        events,
    };
    let (mut machine, actions) = Machine::new(
        mac,
        driver.opts.hostname.clone(),
        saved.map(|s| s.lease.address.addr()),
        Instant::now(),
        Box::new(OsRandom::default()),
    );
    info!(interface = %name, state = machine.state().name(), "dhcp: started");
    driver.perform(actions).await;
    let mut buf = vec![0u8; 4096];
    loop {
        let deadline = tokio::time::Instant::from_std(machine.deadline());
        let before = machine.state().name();
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                let actions = machine.on_timeout(Instant::now());
                driver.perform(actions).await;
            }
            got = driver.socket.recv_from(&mut buf) => match got {
                Ok((n, from)) => {
                    let bytes = buf.get(..n).unwrap_or_default();
                    let decoded = super::decode_reply(bytes);
                    match decoded {
                        Ok(msg) => match machine.on_reply(&msg, Instant::now()) {
                            Ok(actions) => driver.perform(actions).await,
                            Err(Ignored::NotForUs) => {}
                            Err(why) => driver.report(Event::Dropped(format!("from {from}: {why:?}"))),
                        },
                        Err(e) => driver.report(Event::Dropped(format!("from {from}: malformed ({n} bytes): {e}"))),
                    }
                }
                Err(e) => {
                    driver.report(Event::Error(format!("{name}: receive: {e}")));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
            _ = stop.changed() => {
                let actions = machine.release(Instant::now());
                driver.perform(actions).await;
                info!(interface = %name, "dhcp: stopped");
                return;
            }
        }
        let after = machine.state().name();
        if before != after {
            debug!(interface = %name, from = before, to = after, "dhcp: state");
        }
    }
}

struct Driver {
    netlink: Netlink,
    opts: Options,
    mac: [u8; 6],
    socket: UdpSocket,
    events: mpsc::UnboundedSender<Event>,
}

impl Driver {
    fn report(&self, e: Event) {
        if let Event::Dropped(why) = &e {
            debug!(interface = %self.opts.link.name, why, "dhcp: packet dropped");
        }
        let _ = self.events.send(e);
    }

    async fn perform(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Send(msg, to) => self.send(&msg, to).await,
                Action::Apply(lease, how) => {
                    if !self.apply(&lease).await {
                        // Not reported as bound: the status must not claim an address
                        // the interface does not have. The next renewal tries again.
                        continue;
                    }
                    info!(
                        interface = %self.opts.link.name,
                        address = %lease.address,
                        server = %lease.server,
                        lease_secs = lease.lease_secs,
                        how = ?how,
                        "dhcp: bound"
                    );
                    self.report(Event::Bound(lease, how));
                }
                Action::Remove(lease, why) => {
                    self.remove(&lease).await;
                    warn!(interface = %self.opts.link.name, address = %lease.address, why, "dhcp: address removed");
                    self.report(Event::Removed(lease, why));
                }
                Action::Save(lease, age) => self.save(*lease, age),
                Action::Forget => {
                    if let Some(p) = &self.opts.lease_file {
                        if let Err(e) = std::fs::remove_file(p) {
                            if e.kind() != std::io::ErrorKind::NotFound {
                                warn!(file = %p.display(), error = %e, "cannot remove the saved lease");
                            }
                        }
                    }
                }
                Action::Nak(reason) => {
                    warn!(interface = %self.opts.link.name, reason = reason.as_deref().unwrap_or("-"), "dhcp: NAK");
                    self.report(Event::Nak(reason));
                }
            }
        }
    }

    async fn send(&self, msg: &Message, to: Destination) {
        let kind = msg.opts().msg_type().unwrap_or(MessageType::Unknown(0));
        let dest = match to {
            Destination::Broadcast => Ipv4Addr::BROADCAST,
            Destination::Unicast(a) => a,
        };
        let bytes = match msg.to_vec() {
            Ok(b) => b,
            Err(e) => {
                self.report(Event::Error(format!("cannot encode {kind:?}: {e}")));
                return;
            }
        };
        let addr = SocketAddr::V4(SocketAddrV4::new(dest, 67));
        match self.socket.send_to(&bytes, addr).await {
            Ok(_) => self.report(Event::Sent(kind, to)),
            Err(e) => self.report(Event::Error(format!(
                "{}: cannot send {kind:?} to {dest}: {e}",
                self.opts.link.name
            ))),
        }
    }

    /// Applies a lease; false when its address could not be set.
    async fn apply(&self, lease: &Lease) -> bool {
        let link = &self.opts.link;
        if self.opts.use_server_mtu {
            if let Some(mtu) = lease.mtu {
                if link.mtu != Some(u32::from(mtu)) {
                    if let Err(e) = self.netlink.set_mtu(link, u32::from(mtu)).await {
                        self.report(Event::Error(e.to_string()));
                    }
                }
            }
        }
        let life = Duration::from_secs(u64::from(lease.lease_secs));
        if let Err(e) = self
            .netlink
            .replace_address(link, IpNet::V4(lease.address), Some(life))
            .await
        {
            self.report(Event::Error(e.to_string()));
            return false;
        }
        for route in routes_of(lease) {
            if let Err(e) = self.netlink.replace_route(link, &route).await {
                self.report(Event::Error(e.to_string()));
            }
        }
        true
    }

    async fn remove(&self, lease: &Lease) {
        let link = &self.opts.link;
        for route in routes_of(lease) {
            if let Err(e) = self.netlink.del_route(link, &route).await {
                self.report(Event::Error(e.to_string()));
            }
        }
        if let Err(e) = self
            .netlink
            .del_address(link, IpNet::V4(lease.address))
            .await
        {
            self.report(Event::Error(e.to_string()));
        }
    }

    fn save(&self, lease: Lease, age: Duration) {
        let Some(path) = &self.opts.lease_file else {
            return;
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let saved = SavedLease {
            mac: MacAddr(self.mac).to_string(),
            granted_unix: now.saturating_sub(age.as_secs()),
            lease,
        };
        let result = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| saved.save(path));
        if let Err(e) = result {
            warn!(file = %path.display(), error = %e, "cannot save the lease; INIT-REBOOT will not be possible");
        }
    }
}

/// The routes a lease asks for, with `onlink` set for gateways outside its subnet.
pub fn routes_of(lease: &Lease) -> Vec<Route> {
    lease
        .effective_routes()
        .into_iter()
        .map(|(to, via)| Route {
            to: IpNet::V4(to),
            via: Some(via.into()),
            metric: None,
            onlink: !via.is_unspecified() && !lease.address.contains(&via),
            dhcp: true,
        })
        .collect()
}
