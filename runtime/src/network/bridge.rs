//! Links, addresses and routes over rtnetlink: the bridge, a veth pair per container,
//! and the container's side of it, plus the two sysctls the host side needs.
//!
//! Each function runs on a thread that is already inside the right network namespace
//! (see [`super::netns`]), on a current-thread tokio runtime made for the occasion
//! ([`with_handle`]), so the socket rtnetlink opens lands in that namespace.
//!
//! A container's veth pair is made in one request with the peer created straight inside
//! the container's namespace as `eth0` (`IFLA_NET_NS_FD` on the peer, as `ip link add …
//! peer name eth0 netns …` does): no temporary name in the host namespace, no rename.
//! The host end is `gv` + 10 hex digits of the SHA-256 of the container id: 12
//! characters, under the kernel's 15, and derived from the id alone, so that a delete
//! after a crash finds it without any other record.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, BorrowedFd};

use futures_util::TryStreamExt;
use netlink_packet_route::link::{InfoData, InfoKind, InfoVeth};
use rtnetlink::{
    Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
};

use super::NetworkError;
use crate::ContainerId;

/// The host end of container `id`'s veth pair.
pub fn host_veth_name(id: &ContainerId) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, id.as_str().as_bytes());
    let hex: String = d.as_ref()[..5].iter().map(|b| format!("{b:02x}")).collect();
    format!("gv{hex}")
}

/// The container's end, inside its namespace.
pub const CONTAINER_IFNAME: &str = "eth0";

fn nl(op: String) -> impl FnOnce(rtnetlink::Error) -> NetworkError {
    move |e| NetworkError::Netlink {
        op,
        reason: match e {
            rtnetlink::Error::NetlinkError(m) => m.to_io().to_string(),
            other => other.to_string(),
        },
    }
}

fn errno_of(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}

/// Runs `f` with an rtnetlink handle in the calling thread's network namespace.
pub(crate) fn with_handle<T, F, Fut>(f: F) -> Result<T, NetworkError>
where
    F: FnOnce(Handle) -> Fut,
    Fut: Future<Output = Result<T, NetworkError>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(NetworkError::Runtime)?;
    rt.block_on(async {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| NetworkError::Netlink {
            op: "open a route netlink socket".into(),
            reason: e.to_string(),
        })?;
        let task = tokio::spawn(conn);
        let result = f(handle).await;
        task.abort();
        result
    })
}

/// The index of link `name`, if there is one.
pub(crate) async fn link_index(h: &Handle, name: &str) -> Result<Option<u32>, NetworkError> {
    let mut links = h.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(Some(msg)) => Ok(Some(msg.header.index)),
        Ok(None) => Ok(None),
        Err(e) if errno_of(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(nl(format!("look up link {name}"))(e)),
    }
}

async fn must_index(h: &Handle, name: &str) -> Result<u32, NetworkError> {
    link_index(h, name)
        .await?
        .ok_or_else(|| NetworkError::Netlink {
            op: format!("look up link {name}"),
            reason: "it does not exist".into(),
        })
}

async fn add_address(
    h: &Handle,
    link: &str,
    index: u32,
    addr: Ipv4Addr,
    prefix: u8,
) -> Result<(), NetworkError> {
    match h
        .address()
        .add(index, IpAddr::V4(addr), prefix)
        .execute()
        .await
    {
        Err(e) if errno_of(&e) != Some(libc::EEXIST) => {
            Err(nl(format!("add address {addr}/{prefix} to {link}"))(e))
        }
        _ => Ok(()),
    }
}

async fn set_up(h: &Handle, link: &str, index: u32) -> Result<(), NetworkError> {
    h.link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(nl(format!("bring {link} up")))
}

/// Makes the bridge `name` with `gateway/prefix` unless it exists, and brings it up.
/// An existing bridge gets the address if it lacks it.
pub(crate) async fn ensure_bridge(
    h: &Handle,
    name: &str,
    gateway: Ipv4Addr,
    prefix: u8,
    mtu: u32,
) -> Result<u32, NetworkError> {
    if link_index(h, name).await?.is_none() {
        match h
            .link()
            .add(LinkBridge::new(name).mtu(mtu).build())
            .execute()
            .await
        {
            Err(e) if errno_of(&e) != Some(libc::EEXIST) => {
                return Err(nl(format!("create bridge {name}"))(e))
            }
            _ => {}
        }
    }
    let index = must_index(h, name).await?;
    add_address(h, name, index, gateway, prefix).await?;
    set_up(h, name, index).await?;
    Ok(index)
}

/// Deletes link `name`; `false` if there was none.
pub(crate) async fn delete_link(h: &Handle, name: &str) -> Result<bool, NetworkError> {
    let Some(index) = link_index(h, name).await? else {
        return Ok(false);
    };
    match h.link().del(index).execute().await {
        Ok(()) => Ok(true),
        Err(e) if errno_of(&e) == Some(libc::ENODEV) => Ok(false),
        Err(e) => Err(nl(format!("delete link {name}"))(e)),
    }
}

/// Makes the pair `host_name` ↔ `eth0` with `eth0` inside the namespace `container_ns`,
/// attaches the host end to the bridge and brings it up. A leftover link of the same
/// name (from a crash) is replaced.
pub(crate) async fn add_veth(
    h: &Handle,
    host_name: &str,
    bridge: u32,
    mtu: u32,
    container_ns: BorrowedFd<'_>,
) -> Result<(), NetworkError> {
    delete_link(h, host_name).await?;
    let peer = LinkMessageBuilder::<LinkUnspec>::new()
        .name(CONTAINER_IFNAME.to_owned())
        .mtu(mtu)
        .setns_by_fd(container_ns.as_raw_fd())
        .build();
    let pair = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
        .name(host_name.to_owned())
        .mtu(mtu)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build();
    h.link().add(pair).execute().await.map_err(nl(format!(
        "create veth pair {host_name} / {CONTAINER_IFNAME}"
    )))?;
    let index = must_index(h, host_name).await?;
    h.link()
        .set(
            LinkUnspec::new_with_index(index)
                .controller(bridge)
                .up()
                .build(),
        )
        .execute()
        .await
        .map_err(nl(format!(
            "attach {host_name} to the bridge and bring it up"
        )))
}

/// `lo` up.
pub(crate) async fn loopback_up(h: &Handle) -> Result<(), NetworkError> {
    let lo = must_index(h, "lo").await?;
    set_up(h, "lo", lo).await
}

/// Inside the container's namespace: `lo` up, `eth0` with `addr/prefix` up, default
/// route via `gateway`.
pub(crate) async fn configure_container(
    h: &Handle,
    addr: Ipv4Addr,
    prefix: u8,
    gateway: Ipv4Addr,
) -> Result<(), NetworkError> {
    loopback_up(h).await?;
    let eth0 = must_index(h, CONTAINER_IFNAME).await?;
    add_address(h, CONTAINER_IFNAME, eth0, addr, prefix).await?;
    set_up(h, CONTAINER_IFNAME, eth0).await?;
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .gateway(gateway)
        .output_interface(eth0)
        .build();
    match h.route().add(route).execute().await {
        Err(e) if errno_of(&e) != Some(libc::EEXIST) => {
            Err(nl(format!("add the default route via {gateway}"))(e))
        }
        _ => Ok(()),
    }
}

/// Sets a sysctl of the calling thread's network namespace (`/proc/sys/net` shows the
/// namespace of the thread that opens it), writing only when it differs.
pub(crate) fn set_net_sysctl(key: &str, value: &str) -> Result<(), NetworkError> {
    let path = std::path::PathBuf::from("/proc/sys/net").join(key);
    if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() == value) {
        return Ok(());
    }
    std::fs::write(&path, value).map_err(|source| NetworkError::Sysctl { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_veth_names_fit_ifnamsiz_and_depend_on_the_id_only() {
        let a: ContainerId = "a-very-long-container-name-that-goes-on-and-on"
            .parse()
            .unwrap();
        let name = host_veth_name(&a);
        assert_eq!(name.len(), 12);
        assert!(name.starts_with("gv"));
        assert_eq!(name, host_veth_name(&a));
        assert_ne!(name, host_veth_name(&"b".parse().unwrap()));
    }
}
