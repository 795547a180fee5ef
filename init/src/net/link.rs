//! Links, addresses and routes over rtnetlink: the few operations the host network needs,
//! each error naming the interface and what was asked.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::Duration;

use futures_util::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::address::{AddressAttribute, AddressMessage, CacheInfo};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope,
};
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

/// A netlink request that failed: what was asked, of which interface, and the kernel's answer.
#[derive(Debug, thiserror::Error)]
#[error("{what} on {link}: {source}")]
pub struct NetlinkError {
    /// The operation (`add address 10.0.2.15/24`).
    pub what: String,
    /// The interface name or index.
    pub link: String,
    /// What rtnetlink said.
    #[source]
    pub source: rtnetlink::Error,
}

/// What we know about one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Kernel interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Hardware address, for Ethernet-like links.
    pub mac: Option<[u8; 6]>,
    /// Administratively up.
    pub up: bool,
    /// The lower layer is up (carrier).
    pub carrier: bool,
    /// The loopback device.
    pub loopback: bool,
    /// Current MTU.
    pub mtu: Option<u32>,
}

impl Link {
    /// What a link message (`RTM_NEWLINK`, as the kernel answers a link dump) says: its
    /// index, name, hardware address (only a 6-byte one), MTU and up/carrier/loopback
    /// flags. Attributes it does not read are ignored.
    pub fn from_message(m: &LinkMessage) -> Link {
        let mut link = Link {
            index: m.header.index,
            name: String::new(),
            mac: None,
            up: m.header.flags.contains(LinkFlags::Up),
            carrier: m.header.flags.contains(LinkFlags::LowerUp),
            loopback: m.header.flags.contains(LinkFlags::Loopback),
            mtu: None,
        };
        for a in &m.attributes {
            match a {
                LinkAttribute::IfName(n) => link.name = n.clone(),
                LinkAttribute::Address(bytes) => link.mac = bytes.as_slice().try_into().ok(),
                LinkAttribute::Mtu(mtu) => link.mtu = Some(*mtu),
                _ => {}
            }
        }
        link
    }

    /// A physical NIC: one with a device behind it in sysfs (virtio, PCI, …), as opposed
    /// to loopback, bridges, veths and tunnels.
    pub fn is_physical(&self, sys_class_net: &Path) -> bool {
        !self.loopback && sys_class_net.join(&self.name).join("device").exists()
    }
}

/// The rtnetlink connection of the network namespace it was made in.
#[derive(Debug, Clone)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Opens a connection and spawns its task on the current tokio runtime.
    pub fn connect() -> std::io::Result<Netlink> {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// Every link in the namespace.
    pub async fn links(&self) -> Result<Vec<Link>, NetlinkError> {
        let stream = self.handle.link().get().execute();
        let msgs: Vec<LinkMessage> = stream
            .try_collect()
            .await
            .map_err(|source| err("list links", "*", source))?;
        Ok(msgs.iter().map(Link::from_message).collect())
    }

    /// One link by index.
    pub async fn link(&self, index: u32) -> Result<Option<Link>, NetlinkError> {
        let mut stream = self.handle.link().get().match_index(index).execute();
        match stream.try_next().await {
            Ok(m) => Ok(m.as_ref().map(Link::from_message)),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
            Err(source) => Err(err("get link", &index.to_string(), source)),
        }
    }

    /// Sets a link up.
    pub async fn set_up(&self, link: &Link) -> Result<(), NetlinkError> {
        let msg = LinkUnspec::new_with_index(link.index).up().build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|source| err("set up", &link.name, source))
    }

    /// Sets a link's MTU.
    pub async fn set_mtu(&self, link: &Link, mtu: u32) -> Result<(), NetlinkError> {
        let msg = LinkUnspec::new_with_index(link.index).mtu(mtu).build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|source| err(&format!("set mtu {mtu}"), &link.name, source))
    }

    /// Adds or updates an address; with `lifetime` the kernel drops it by itself when the
    /// lease would have run out, should the client not be there to do it.
    pub async fn replace_address(
        &self,
        link: &Link,
        addr: IpNet,
        lifetime: Option<Duration>,
    ) -> Result<(), NetlinkError> {
        let mut req = self
            .handle
            .address()
            .add(link.index, addr.addr(), addr.prefix_len())
            .replace();
        if let Some(life) = lifetime {
            let secs = u32::try_from(life.as_secs()).unwrap_or(u32::MAX - 1).max(1);
            let mut info = CacheInfo::default();
            info.ifa_preferred = secs;
            info.ifa_valid = secs;
            req.message_mut()
                .attributes
                .push(AddressAttribute::CacheInfo(info));
        }
        req.execute()
            .await
            .map_err(|source| err(&format!("add address {addr}"), &link.name, source))
    }

    /// Removes an address; one that is already gone is not an error.
    pub async fn del_address(&self, link: &Link, addr: IpNet) -> Result<(), NetlinkError> {
        let mut found = self
            .handle
            .address()
            .get()
            .set_link_index_filter(link.index)
            .set_address_filter(addr.addr())
            .set_prefix_length_filter(addr.prefix_len())
            .execute();
        while let Some(msg) = found
            .try_next()
            .await
            .map_err(|source| err("list addresses", &link.name, source))?
        {
            match self.handle.address().del(msg).execute().await {
                Ok(()) => {}
                Err(rtnetlink::Error::NetlinkError(e))
                    if e.raw_code() == -libc::EADDRNOTAVAIL || e.raw_code() == -libc::ENODEV => {}
                Err(source) => {
                    return Err(err(&format!("remove address {addr}"), &link.name, source))
                }
            }
        }
        Ok(())
    }

    /// The addresses on a link, with prefix length.
    pub async fn addresses(&self, link: &Link) -> Result<Vec<IpNet>, NetlinkError> {
        let mut out = Vec::new();
        let mut found = self
            .handle
            .address()
            .get()
            .set_link_index_filter(link.index)
            .execute();
        while let Some(msg) = found
            .try_next()
            .await
            .map_err(|source| err("list addresses", &link.name, source))?
        {
            out.extend(address_of(&msg));
        }
        Ok(out)
    }

    /// Adds (or replaces) a route through `link`; `via` None or 0.0.0.0 means on link. A
    /// gateway outside every subnet of the link gets the `onlink` flag, as cloud /32
    /// leases need.
    pub async fn replace_route(&self, link: &Link, route: &Route) -> Result<(), NetlinkError> {
        let msg = route.message(link.index);
        self.handle
            .route()
            .add(msg)
            .replace()
            .execute()
            .await
            .map_err(|source| err(&format!("add route {route}"), &link.name, source))
    }

    /// Removes a route; one that is already gone is not an error.
    pub async fn del_route(&self, link: &Link, route: &Route) -> Result<(), NetlinkError> {
        match self
            .handle
            .route()
            .del(route.message(link.index))
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e))
                if e.raw_code() == -libc::ESRCH || e.raw_code() == -libc::ENODEV =>
            {
                Ok(())
            }
            Err(source) => Err(err(&format!("remove route {route}"), &link.name, source)),
        }
    }

    /// The main table's IPv4 and IPv6 routes through a link, as destination and gateway.
    pub async fn routes(&self, link: &Link) -> Result<Vec<(IpNet, Option<IpAddr>)>, NetlinkError> {
        let mut out = Vec::new();
        for family in [
            RouteMessageBuilder::<Ipv4Addr>::new().build(),
            RouteMessageBuilder::<Ipv6Addr>::new().build(),
        ] {
            let mut found = self.handle.route().get(family).execute();
            while let Some(msg) = found
                .try_next()
                .await
                .map_err(|source| err("list routes", &link.name, source))?
            {
                if let Some(r) = route_of(&msg, link.index) {
                    out.push(r);
                }
            }
        }
        Ok(out)
    }
}

/// The address and prefix an address message (`RTM_NEWADDR`) gives; `None` without an
/// address attribute or with a prefix longer than the address.
pub fn address_of(msg: &AddressMessage) -> Option<IpNet> {
    let ip = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Address(ip) => Some(*ip),
        _ => None,
    })?;
    IpNet::new(ip, msg.header.prefix_len).ok()
}

/// A main-table route through the link with index `index` in a route message
/// (`RTM_NEWROUTE`), as destination and gateway; `None` for another table or link, a
/// destination or gateway that is not an IP address, or a prefix longer than it.
pub fn route_of(msg: &RouteMessage, index: u32) -> Option<(IpNet, Option<IpAddr>)> {
    if msg.header.table != RouteMessage::default().header.table
        && msg.header.table != netlink_packet_route::route::RouteHeader::RT_TABLE_MAIN
    {
        return None;
    }
    let mut oif = None;
    let mut dst = None;
    let mut gw = None;
    for a in &msg.attributes {
        match a {
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Destination(d) => dst = Some(addr_of(d)?),
            RouteAttribute::Gateway(g) => gw = Some(addr_of(g)?),
            _ => {}
        }
    }
    if oif != Some(index) {
        return None;
    }
    let dst = match (dst, msg.header.address_family) {
        (Some(d), _) => d,
        (None, netlink_packet_route::AddressFamily::Inet6) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        (None, _) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
    let net = IpNet::new(dst, msg.header.destination_prefix_length).ok()?;
    Some((net, gw))
}

fn addr_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// A route Gantry installs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination prefix.
    pub to: IpNet,
    /// Next hop; None (or unspecified) for on-link.
    pub via: Option<IpAddr>,
    /// Metric (priority).
    pub metric: Option<u32>,
    /// Whether the gateway is outside the link's subnets (needs `onlink`).
    pub onlink: bool,
    /// Who installed it: DHCP or static config.
    pub dhcp: bool,
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.via {
            Some(via) if !via.is_unspecified() => write!(f, "{} via {via}", self.to),
            _ => write!(f, "{} on link", self.to),
        }
    }
}

impl Route {
    fn message(&self, index: u32) -> RouteMessage {
        let protocol = if self.dhcp {
            RouteProtocol::Dhcp
        } else {
            RouteProtocol::Static
        };
        let gateway = self.via.filter(|g| !g.is_unspecified());
        let mut msg = match (self.to, gateway) {
            (IpNet::V4(to), gw) => {
                let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
                    .destination_prefix(to.addr(), to.prefix_len())
                    .output_interface(index)
                    .protocol(protocol);
                if let Some(IpAddr::V4(g)) = gw {
                    b = b.gateway(g);
                } else {
                    b = b.scope(RouteScope::Link);
                }
                if self.onlink {
                    b = b.onlink();
                }
                if let Some(m) = self.metric {
                    b = b.priority(m);
                }
                b.build()
            }
            (IpNet::V6(to), gw) => {
                let mut b = RouteMessageBuilder::<Ipv6Addr>::new()
                    .destination_prefix(to.addr(), to.prefix_len())
                    .output_interface(index)
                    .protocol(protocol);
                if let Some(IpAddr::V6(g)) = gw {
                    b = b.gateway(g);
                }
                if self.onlink {
                    b = b.onlink();
                }
                if let Some(m) = self.metric {
                    b = b.priority(m);
                }
                b.build()
            }
        };
        msg.header.table = netlink_packet_route::route::RouteHeader::RT_TABLE_MAIN;
        msg
    }
}

fn err(what: &str, link: &str, source: rtnetlink::Error) -> NetlinkError {
    NetlinkError {
        what: what.to_owned(),
        link: link.to_owned(),
        source,
    }
}
