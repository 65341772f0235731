//! The node side of a routed pod: the veth pair (node end named after the
//! attachment, see `names`), its sysctls, and the node's route and
//! neighbour entry for each pod address.
//!
//! Neither end has a subnet, so nothing is learnt by ARP/NDP across the
//! pair: each side gets a permanent neighbour entry for the other (the pod
//! for its gateway, the node for each pod address). The data path then
//! does not depend on proxy ARP answering, which needs the node to have a
//! route to 169.254.1.1 (a node with no default route has none). Proxy
//! ARP is still turned on, as Calico does, for any other address the pod
//! asks for.

use std::net::IpAddr;

use ipnet::IpNet;
use plexus_agent_api::ROUTE_PROTOCOL_POD;
use plexus_cni::{CniEnv, CniError};
use plexus_netlink::sysctl::Write;
use plexus_netlink::{Link, MacAddr, Netlink, Netns, Route, Scope, Veth};
use plexus_plugin::{iface, netlink_ctx, netlink_err, owner};

use crate::PLUGIN;

/// The alias the node end carries: which attachment it belongs to.
pub fn veth_alias(env: &CniEnv) -> String {
    owner::alias(PLUGIN, &env.container_id, &env.ifname)
}

/// Creates the pair: `host_name` on the node, `ifname` in the pod's
/// namespace, marked with `alias`. A node end of that name left by an
/// earlier ADD of the same attachment is replaced; anyone else's is an
/// error.
pub async fn create_pair(
    node: &Netlink,
    pod_ns: &Netns,
    host_name: &str,
    ifname: &str,
    mtu: Option<u32>,
    pod_mac: Option<MacAddr>,
    alias: &str,
) -> Result<Link, CniError> {
    if let Some(old) = node
        .link_by_name(host_name)
        .await
        .map_err(netlink_ctx(format!("failed to look up {host_name:?}")))?
    {
        if old.alias.as_deref() != Some(alias) {
            return Err(CniError::kernel(format!(
                "the node already has an interface {host_name:?} that is not this attachment's (alias {:?})",
                old.alias.as_deref().unwrap_or("")
            )));
        }
        tracing::info!(host_name, "replacing a node veth left by an earlier ADD");
        delete(node, &old).await?;
    }
    let mut v = Veth::new(host_name, ifname).peer_netns(pod_ns);
    if let Some(m) = mtu {
        v = v.mtu(m);
    }
    if let Some(m) = pod_mac {
        v = v.peer_mac(m);
    }
    let host = node.create_veth(&v).await.map_err(netlink_ctx(format!(
        "failed to create the veth pair {host_name:?} / {ifname:?}"
    )))?;
    if let Err(e) = node.set_alias(host.index, alias).await {
        // Unlabelled, no DEL would ever recognise it: remove it now.
        let _ = delete(node, &host).await;
        return Err(netlink_ctx(format!("failed to label {host_name:?}"))(e));
    }
    Ok(host)
}

/// The node's sysctls: proxy ARP (and NDP) on the node end, no router
/// advertisements taken from the pod, forwarding for each family in use.
pub async fn sysctls(host_name: &str, v4: bool, v6: bool) -> Result<(), CniError> {
    let ns = Netns::current().map_err(netlink_err)?;
    // (write, must succeed)
    let mut plan = vec![
        (
            Write::new(format!("net/ipv4/conf/{host_name}/proxy_arp"), "1"),
            v4,
        ),
        (
            Write::new(format!("net/ipv4/neigh/{host_name}/proxy_delay"), "0"),
            false,
        ),
        (
            Write::new(format!("net/ipv6/conf/{host_name}/accept_ra"), "0"),
            false,
        ),
    ];
    if v4 {
        plan.push((Write::new("net/ipv4/ip_forward", "1"), true));
    }
    if v6 {
        plan.push((
            Write::new(format!("net/ipv6/conf/{host_name}/proxy_ndp"), "1"),
            false,
        ));
        plan.push((Write::new("net/ipv6/conf/all/forwarding", "1"), true));
    }
    iface::set_sysctls(&ns, &plan).await
}

/// The node's route to one pod address: through the node end, scope link,
/// with the pod route protocol number.
pub fn pod_route(addr: IpAddr, host_index: u32) -> Route {
    Route::new(IpNet::from(addr))
        .dev(host_index)
        .scope(Scope::Link)
        .protocol(ROUTE_PROTOCOL_POD)
}

/// Routes and permanent neighbour entries on the node for the pod's
/// addresses.
pub async fn route_pod(
    node: &Netlink,
    host: &Link,
    pod_mac: MacAddr,
    ips: &[IpNet],
) -> Result<(), CniError> {
    for ip in ips {
        let addr = ip.addr();
        node.neigh_replace(host.index, addr, pod_mac)
            .await
            .map_err(netlink_ctx(format!(
                "failed to add the neighbour entry {addr} on {:?}",
                host.name
            )))?;
        match node.route_add(&pod_route(addr, host.index)).await {
            Ok(()) => {}
            Err(e) if e.is_exists() => {
                return Err(CniError::kernel(format!(
                    "the node already has a route to {addr}: another attachment holds this address"
                )))
            }
            Err(e) => {
                return Err(netlink_ctx(format!(
                    "failed to add the route to {addr} dev {:?}",
                    host.name
                ))(e))
            }
        }
    }
    Ok(())
}

/// Deletes the node end (the kernel removes the pod end with it, and the
/// routes and neighbour entries through it).
async fn delete(node: &Netlink, link: &Link) -> Result<(), CniError> {
    match node.delete_link_detached(link.index).await {
        Ok(()) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(netlink_ctx(format!("failed to delete {:?}", link.name))(e)),
    }
}

/// DEL: removes the node end named `host_name` if it is this attachment's
/// (`alias`). Returns whether there was one.
pub async fn remove(host_name: &str, alias: &str) -> Result<bool, CniError> {
    let ns = Netns::current().map_err(netlink_err)?;
    let node = Netlink::open(&ns).await.map_err(netlink_err)?;
    let Some(link) = node
        .link_by_name(host_name)
        .await
        .map_err(netlink_ctx(format!("failed to look up {host_name:?}")))?
    else {
        return Ok(false);
    };
    if link.alias.as_deref() != Some(alias) {
        tracing::warn!(
            host_name,
            alias = link.alias.as_deref().unwrap_or(""),
            "DEL: the node interface is not this attachment's; leaving it alone"
        );
        return Ok(false);
    }
    delete(&node, &link).await?;
    Ok(true)
}

/// Cleanup after a failed ADD: the node end this ADD created.
pub async fn remove_after_failure(node: &Netlink, host_name: &str, alias: &str) {
    match node.link_by_name(host_name).await {
        Ok(Some(l)) if l.alias.as_deref() == Some(alias) => {
            if let Err(e) = delete(node, &l).await {
                tracing::warn!("removing the veth after a failed ADD: {e}");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("looking up the veth after a failed ADD: {e}"),
    }
}
