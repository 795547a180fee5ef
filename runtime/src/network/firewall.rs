//! Gantry's nf_tables ruleset: the table `ip gantry`, programmed with [`super::nft`].
//!
//! ```text
//! table ip gantry {
//!   chain guard { type filter hook prerouting priority raw; policy accept;
//!     iifname "gantry0" ip daddr 127.0.0.0/8 counter drop         # CVE-2020-8558
//!     iifname "gantry0" ip daddr 169.254.169.254 counter drop }   # cloud metadata
//!   chain forward { type filter hook forward priority filter; policy accept;
//!     oifname "gantry0" ct state established,related accept       # replies
//!     oifname "gantry0" ct status dnat accept                     # published ports
//!     oifname "gantry0" iifname "gantry0" accept                  # container to container
//!     oifname "gantry0" counter drop }                            # anything else
//!   chain publish { }                                  # one DNAT rule per published port
//!   chain prerouting { type nat hook prerouting priority dstnat; policy accept;
//!     fib daddr type local jump publish }              # from outside, to a host address
//!   chain output { type nat hook output priority -100; policy accept;
//!     fib daddr type local jump publish }              # from the host itself (localhost too)
//!   chain postrouting { type nat hook postrouting priority srcnat; policy accept;
//!     ip saddr 10.88.0.0/16 ip daddr != 10.88.0.0/16 oifname != "gantry0" masquerade
//!     oifname "gantry0" ip saddr 10.88.0.0/16 ct status dnat masquerade # hairpin
//!     oifname "gantry0" ip saddr 127.0.0.0/8 masquerade }              # localhost
//! }
//! ```
//!
//! A published port matches only packets for an address of this host (`fib daddr type
//! local`, Docker's `--dst-type LOCAL`): a container's own connection to port 80
//! somewhere else is not caught. Traffic from outside keeps its source address (the
//! container sees the real client). A container reaching a published port through the
//! host's address (hairpin) and the host reaching one through 127.0.0.1 are masqueraded
//! to the bridge address, or the answer would not come back the same way; localhost
//! needs `route_localnet` on the bridge as well (set by [`super::bridge`]).
//!
//! The filter: `route_localnet` would let a container (which keeps `CAP_NET_RAW`) send
//! a frame to the bridge's MAC address for 127.0.0.1 and reach services the host binds
//! to loopback only (CVE-2020-8558); `guard` drops what comes in from the bridge for
//! 127.0.0.0/8 (before conntrack, so no state is made for it), and for the instance
//! metadata address, whose user data is the machine config, registry passwords
//! included. `forward` lets into the bridge only replies, published ports (DNATed) and
//! traffic between its containers: a machine with a route to the subnet reaches no
//! unpublished port (Docker 28 does the same). What leaves the bridge is not filtered,
//! and containers on one network are not isolated from each other.
//!
//! Every rule carries a comment in its user data: `gantry` for the jumps, `network
//! <bridge>` for a network's masquerading, `container <id>` for a container's ports.
//! Setting up a network replaces its own rules in one transaction (so it can run any
//! number of times), and removing a container's ports lists the table and deletes exactly
//! the rules with its comment, by handle, in one transaction.
//!
//! Our base chains' policy is accept, so other tables still decide about traffic we do
//! not drop: a host with a `forward` policy of drop elsewhere must accept the bridge's
//! traffic there.

use std::net::Ipv4Addr;

use super::nft::{
    BaseChain, Batch, Chain, CmpOp, CtKey, Expr, FibResult, Hook, MetaKey, NftError, NftSocket,
    PayloadBase, Reg, Rule, CT_STATE_ESTABLISHED, CT_STATE_RELATED, FIB_F_DADDR, IPS_DST_NAT,
    RTN_LOCAL,
};
use super::{PortMapping, Protocol, Subnet};
use crate::ContainerId;

/// The table's name (family `ip`).
pub const TABLE: &str = "gantry";
/// The regular chain holding the published ports.
pub const PUBLISH: &str = "publish";

const JUMP_TAG: &str = "gantry";

/// The filter chain at prerouting, priority raw, before conntrack and routing.
pub const GUARD: &str = "guard";
/// The filter chain at forward.
pub const FORWARD: &str = "forward";

fn chains() -> [Chain; 6] {
    let base = |kind, hook, priority| {
        Some(BaseChain {
            kind,
            hook,
            priority,
        })
    };
    let nat = |hook, priority| base("nat", hook, priority);
    [
        Chain {
            name: GUARD,
            base: base("filter", Hook::Prerouting, -300),
        },
        Chain {
            name: FORWARD,
            base: base("filter", Hook::Forward, 0),
        },
        Chain {
            name: PUBLISH,
            base: None,
        },
        Chain {
            name: "prerouting",
            base: nat(Hook::Prerouting, -100),
        },
        Chain {
            name: "output",
            base: nat(Hook::Output, -100),
        },
        Chain {
            name: "postrouting",
            base: nat(Hook::Postrouting, 100),
        },
    ]
}

/// The comment of a network's own rules.
pub fn network_tag(bridge: &str) -> String {
    format!("network {bridge}")
}

/// The comment of a container's port rules.
pub fn container_tag(id: &ContainerId) -> String {
    format!("container {id}")
}

/// `ip saddr <net>/<len>`.
fn saddr_in(network: Ipv4Addr, mask: Ipv4Addr) -> [Expr; 3] {
    addr_cmp(12, CmpOp::Eq, network, mask)
}

/// `ip saddr` (offset 12) or `ip daddr` (16) `(==|!=) <net>/<len>`.
fn addr_cmp(offset: u32, op: CmpOp, network: Ipv4Addr, mask: Ipv4Addr) -> [Expr; 3] {
    [
        Expr::Payload {
            base: PayloadBase::Network,
            offset,
            len: 4,
            dreg: Reg::R1,
        },
        Expr::Bitwise {
            sreg: Reg::R1,
            dreg: Reg::R1,
            mask: mask.octets().to_vec(),
            xor: vec![0; 4],
        },
        Expr::Cmp {
            op,
            sreg: Reg::R1,
            data: network.octets().to_vec(),
        },
    ]
}

/// `oifname (==|!=) <name>`.
fn oifname(op: CmpOp, name: &str) -> [Expr; 2] {
    ifname(MetaKey::OifName, op, name)
}

/// `iifname == <name>`.
fn iifname(name: &str) -> [Expr; 2] {
    ifname(MetaKey::IifName, CmpOp::Eq, name)
}

fn ifname(key: MetaKey, op: CmpOp, name: &str) -> [Expr; 2] {
    let mut data = name.as_bytes().to_vec();
    data.resize(16, 0); // IFNAMSIZ
    [
        Expr::Meta { key, dreg: Reg::R1 },
        Expr::Cmp {
            op,
            sreg: Reg::R1,
            data,
        },
    ]
}

fn jump_if_local(chain: &str) -> Rule {
    Rule {
        chain: chain.to_owned(),
        exprs: vec![
            Expr::Fib {
                result: FibResult::AddrType,
                flags: FIB_F_DADDR,
                dreg: Reg::R1,
            },
            Expr::Cmp {
                op: CmpOp::Eq,
                sreg: Reg::R1,
                data: RTN_LOCAL.to_ne_bytes().to_vec(),
            },
            Expr::Jump(PUBLISH.to_owned()),
        ],
        comment: Some(JUMP_TAG.to_owned()),
    }
}

/// `ct (state|status) & <bits> != 0`.
fn ct_any(key: CtKey, bits: u32) -> [Expr; 3] {
    [
        Expr::Ct { key, dreg: Reg::R1 },
        Expr::Bitwise {
            sreg: Reg::R1,
            dreg: Reg::R1,
            mask: bits.to_ne_bytes().to_vec(),
            xor: vec![0; 4],
        },
        Expr::Cmp {
            op: CmpOp::Neq,
            sreg: Reg::R1,
            data: vec![0; 4],
        },
    ]
}

/// The instance metadata service of the clouds (EC2, GCE, Azure, OpenStack, …).
pub const METADATA: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

/// The filter rules of the network on `bridge`: what comes in from its containers and
/// what may go out to them.
fn filter_rules(bridge: &str) -> Vec<Rule> {
    let tag = Some(network_tag(bridge));
    let rule = |chain: &str, exprs: Vec<Expr>| Rule {
        chain: chain.into(),
        exprs,
        comment: tag.clone(),
    };
    let host = Ipv4Addr::new(255, 255, 255, 255);
    let to_bridge = oifname(CmpOp::Eq, bridge);
    vec![
        // With route_localnet on the bridge, a container (with CAP_NET_RAW) could send a
        // frame to the bridge's MAC for 127.0.0.1 and reach the host's loopback services
        // (CVE-2020-8558). The replies of the localhost DNAT are masqueraded to the
        // bridge's address, so nothing legitimate comes in for 127.0.0.0/8.
        rule(
            GUARD,
            [
                &iifname(bridge)[..],
                &addr_cmp(
                    16,
                    CmpOp::Eq,
                    Ipv4Addr::new(127, 0, 0, 0),
                    Ipv4Addr::new(255, 0, 0, 0),
                ),
                &[Expr::Counter, Expr::Drop],
            ]
            .concat(),
        ),
        rule(
            GUARD,
            [
                &iifname(bridge)[..],
                &addr_cmp(16, CmpOp::Eq, METADATA, host),
                &[Expr::Counter, Expr::Drop],
            ]
            .concat(),
        ),
        // Into the bridge: replies, published ports (DNATed), container to container;
        // nothing else, so a host with a route to the subnet reaches no other port.
        rule(
            FORWARD,
            [
                &to_bridge[..],
                &ct_any(CtKey::State, CT_STATE_ESTABLISHED | CT_STATE_RELATED),
                &[Expr::Accept],
            ]
            .concat(),
        ),
        rule(
            FORWARD,
            [
                &to_bridge[..],
                &ct_any(CtKey::Status, IPS_DST_NAT),
                &[Expr::Accept],
            ]
            .concat(),
        ),
        rule(
            FORWARD,
            [&to_bridge[..], &iifname(bridge), &[Expr::Accept]].concat(),
        ),
        rule(
            FORWARD,
            [&to_bridge[..], &[Expr::Counter, Expr::Drop]].concat(),
        ),
    ]
}

/// The masquerading rules of the network on `bridge` with `subnet`.
fn network_rules(bridge: &str, subnet: Subnet) -> Vec<Rule> {
    let tag = Some(network_tag(bridge));
    let rule = |exprs: Vec<Expr>| Rule {
        chain: "postrouting".into(),
        exprs,
        comment: tag.clone(),
    };
    let from_subnet = saddr_in(subnet.network(), subnet.mask());
    // With br_netfilter loaded, traffic bridged between two containers passes these
    // hooks too, with the bridge port as the output device: never masquerade it.
    let to_elsewhere = addr_cmp(16, CmpOp::Neq, subnet.network(), subnet.mask());
    let ct_dnat = ct_any(CtKey::Status, IPS_DST_NAT);
    let localhost = saddr_in(Ipv4Addr::new(127, 0, 0, 0), Ipv4Addr::new(255, 0, 0, 0));
    vec![
        rule(
            [
                &from_subnet[..],
                &to_elsewhere,
                &oifname(CmpOp::Neq, bridge),
                &[Expr::Masquerade],
            ]
            .concat(),
        ),
        rule(
            [
                &oifname(CmpOp::Eq, bridge)[..],
                &from_subnet,
                &ct_dnat,
                &[Expr::Masquerade],
            ]
            .concat(),
        ),
        rule(
            [
                &oifname(CmpOp::Eq, bridge)[..],
                &localhost,
                &[Expr::Masquerade],
            ]
            .concat(),
        ),
    ]
}

/// The DNAT rule of one published port.
fn publish_rule(tag: &str, address: Ipv4Addr, port: &PortMapping) -> Rule {
    let mut exprs = Vec::new();
    if let Some(ip) = port.host_ip {
        exprs.extend([
            Expr::Payload {
                base: PayloadBase::Network,
                offset: 16,
                len: 4,
                dreg: Reg::R1,
            },
            Expr::Cmp {
                op: CmpOp::Eq,
                sreg: Reg::R1,
                data: ip.octets().to_vec(),
            },
        ]);
    }
    let proto = match port.protocol {
        Protocol::Tcp => libc::IPPROTO_TCP as u8,
        Protocol::Udp => libc::IPPROTO_UDP as u8,
    };
    exprs.extend([
        Expr::Meta {
            key: MetaKey::L4Proto,
            dreg: Reg::R1,
        },
        Expr::Cmp {
            op: CmpOp::Eq,
            sreg: Reg::R1,
            data: vec![proto],
        },
        // The destination port sits at offset 2 in both the TCP and the UDP header.
        Expr::Payload {
            base: PayloadBase::Transport,
            offset: 2,
            len: 2,
            dreg: Reg::R1,
        },
        Expr::Cmp {
            op: CmpOp::Eq,
            sreg: Reg::R1,
            data: port.host_port.to_be_bytes().to_vec(),
        },
        Expr::Counter,
        Expr::Immediate {
            dreg: Reg::R1,
            data: address.octets().to_vec(),
        },
        Expr::Immediate {
            dreg: Reg::R2,
            data: port.container_port.to_be_bytes().to_vec(),
        },
        Expr::Dnat {
            addr: Reg::R1,
            port: Reg::R2,
        },
    ]);
    Rule {
        chain: PUBLISH.into(),
        exprs,
        comment: Some(tag.to_owned()),
    }
}

/// Makes the table and chains if missing and (re)places the jumps and the network's
/// filter and masquerading rules, in one transaction.
pub fn setup(sock: &NftSocket, bridge: &str, subnet: Subnet) -> Result<(), NftError> {
    let existing = sock.list_rules(TABLE)?;
    let tag = network_tag(bridge);
    let mut b = Batch::new(TABLE);
    b.add_table();
    for c in &chains() {
        b.add_chain(c);
    }
    for r in existing
        .iter()
        .filter(|r| matches!(r.comment.as_deref(), Some(c) if c == tag || c == JUMP_TAG))
    {
        b.delete_rule(r);
    }
    b.add_rule(&jump_if_local("prerouting"));
    b.add_rule(&jump_if_local("output"));
    for r in filter_rules(bridge)
        .into_iter()
        .chain(network_rules(bridge, subnet))
    {
        b.add_rule(&r);
    }
    b.commit(sock)
}

/// Replaces container `id`'s published ports with `ports`, DNATed to `address`, in one
/// transaction; returns how many rules it had before.
pub fn publish(
    sock: &NftSocket,
    id: &ContainerId,
    address: Ipv4Addr,
    ports: &[PortMapping],
) -> Result<usize, NftError> {
    let tag = container_tag(id);
    let mine: Vec<_> = sock
        .list_rules(TABLE)?
        .into_iter()
        .filter(|r| r.comment.as_ref() == Some(&tag))
        .collect();
    let mut b = Batch::new(TABLE);
    for r in &mine {
        b.delete_rule(r);
    }
    for p in ports {
        b.add_rule(&publish_rule(&tag, address, p));
    }
    b.commit(sock)?;
    Ok(mine.len())
}

/// Deletes container `id`'s rules, if any; returns how many there were.
pub fn unpublish(sock: &NftSocket, id: &ContainerId) -> Result<usize, NftError> {
    publish(sock, id, Ipv4Addr::UNSPECIFIED, &[])
}
