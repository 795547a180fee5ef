//! rtnetlink replies as the network code receives them. Decoding is rtnetlink's: the input
//! is a datagram split and parsed by `netlink_proto::NetlinkCodec` into
//! `netlink-packet-route` messages, the code that runs under `rtnetlink` in PID 1. Each
//! message of the types we consume is then read by our code: `Link::from_message`
//! (`RTM_NEWLINK`), `link::address_of` (`RTM_NEWADDR`) and `link::route_of`
//! (`RTM_NEWROUTE`), which is what this target is for.
//!
//! Checks: a link keeps the message's index and takes a MAC only from a 6-byte address;
//! addresses and routes have prefixes that fit their family.
#![no_main]

use bytes::BytesMut;
use gantry_init::net::link::{address_of, route_of, Link};
use libfuzzer_sys::fuzz_target;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::link::LinkAttribute;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_proto::{NetlinkCodec, NetlinkMessageCodec};

fn prefix_fits(net: &ipnet::IpNet) {
    let max = if net.addr().is_ipv4() { 32 } else { 128 };
    assert!(net.prefix_len() <= max);
}

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    // The codec drops what it cannot decode and goes on; bound the loop all the same.
    for _ in 0..1024 {
        let msg: NetlinkMessage<RouteNetlinkMessage> = match NetlinkCodec::decode(&mut buf) {
            Ok(Some(m)) => m,
            Ok(None) | Err(_) => break,
        };
        let NetlinkPayload::InnerMessage(inner) = msg.payload else {
            continue;
        };
        match inner {
            RouteNetlinkMessage::NewLink(m) => {
                let link = Link::from_message(&m);
                assert_eq!(link.index, m.header.index);
                if link.mac.is_some() {
                    assert!(m
                        .attributes
                        .iter()
                        .any(|a| matches!(a, LinkAttribute::Address(b) if b.len() == 6)));
                }
            }
            RouteNetlinkMessage::NewAddress(m) => {
                if let Some(net) = address_of(&m) {
                    prefix_fits(&net);
                    assert_eq!(net.prefix_len(), m.header.prefix_len);
                }
            }
            RouteNetlinkMessage::NewRoute(m) => {
                for index in [0, 1, 2, u32::MAX] {
                    if let Some((net, _)) = route_of(&m, index) {
                        prefix_fits(&net);
                    }
                }
            }
            _ => {}
        }
    }
});
