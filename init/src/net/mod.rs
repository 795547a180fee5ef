//! The host network: links, DHCPv4, static addresses and routes, DNS.

pub mod dhcp;
pub mod link;
