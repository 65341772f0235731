//! ADD, DEL, CHECK, STATUS and GC.

use plexus_cni::plugin::{Plugin, Request};
use plexus_cni::{CniError, CniResult, Interface, IpConfig};
use plexus_netlink::route::TABLE_MAIN;
use plexus_netlink::{Netlink, Netns, RouteFilter, RouteKind};
use plexus_plugin::iface::{self, Dad};
use plexus_plugin::{block_on, netlink_ctx, netlink_err, open_pod_netns, Collected};

use crate::config::{gateway_for, RoutedConf};
use crate::host::{self, veth_alias};
use crate::ipam::{self, Addresses};
use crate::names::host_veth_name;
use crate::routes::{pod_routes, Secondary};

#[derive(Debug)]
pub struct RoutedPlugin;

impl Plugin for RoutedPlugin {
    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        let conf = RoutedConf::load(req.conf)?;
        let pod_ns = open_pod_netns(req.netns()?)?;
        block_on(add(req, &conf, &pod_ns))
    }

    fn del(&self, req: &Request) -> Result<(), CniError> {
        let conf = RoutedConf::load_lenient(req.conf)?;
        let env = req.env;
        let mut errors = Collected::new();
        // The veth first: the address must not be handed out again while
        // the node still routes it to this pod. Its routes and neighbour
        // entries go with it, and the pod end (with its addresses) too,
        // so the pod netns is not needed (it may be gone).
        let host_name = host_veth_name(&env.container_id, &env.ifname);
        errors.take(
            "removing the veth",
            block_on(host::remove(&host_name, &veth_alias(env))),
        );
        errors.take("releasing the addresses", ipam::release(&conf, req));
        errors.finish()
    }

    fn check(&self, req: &Request) -> Result<(), CniError> {
        let conf = RoutedConf::load(req.conf)?;
        let pod_ns = open_pod_netns(req.netns()?)?;
        let prev = req
            .conf
            .prev_result
            .as_ref()
            .ok_or_else(|| CniError::invalid_config("Required prevResult missing"))?;
        ipam::check(&conf, req)?;
        block_on(crate::plugin::check(req, &pod_ns, prev))
    }

    fn status(&self, req: &Request) -> Result<(), CniError> {
        ipam::status(&RoutedConf::load_lenient(req.conf)?, req)
    }

    fn gc(&self, req: &Request) -> Result<(), CniError> {
        // The node ends need no collecting: a veth goes with its pod's
        // netns. Only addresses can outlive their attachment.
        ipam::gc(&RoutedConf::load_lenient(req.conf)?, req)
    }
}

/// Both namespaces' sockets.
async fn open(pod_ns: &Netns) -> Result<(Netlink, Netlink), CniError> {
    let node_ns = Netns::current().map_err(netlink_err)?;
    tokio::try_join!(Netlink::open(&node_ns), Netlink::open(pod_ns)).map_err(netlink_err)
}

async fn add(req: &Request<'_>, conf: &RoutedConf, pod_ns: &Netns) -> Result<CniResult, CniError> {
    let env = req.env;
    let (node, pod) = open(pod_ns).await?;
    if pod
        .link_by_name(&env.ifname)
        .await
        .map_err(netlink_err)?
        .is_some()
    {
        return Err(CniError::invalid_config(format!(
            "the pod network namespace already has an interface {:?}",
            env.ifname
        )));
    }
    // Addresses before anything is created: an agent that is down or a
    // full pool leaves nothing behind.
    let addrs = ipam::allocate(conf, req)?;
    let host_name = host_veth_name(&env.container_id, &env.ifname);
    let r = wire(req, conf, &node, &pod, pod_ns, &host_name, &addrs).await;
    if r.is_err() {
        host::remove_after_failure(&node, &host_name, &veth_alias(env)).await;
        ipam::release_best_effort(conf, req);
    }
    r
}

/// Whether the pod already has a default route of each family on another
/// interface: then this network is a secondary one.
async fn secondary(pod: &Netlink, ours: u32) -> Result<Secondary, CniError> {
    let routes = pod
        .routes(RouteFilter::default().table(TABLE_MAIN))
        .await
        .map_err(netlink_ctx("failed to list the pod's routes"))?;
    let has = |v4: bool| {
        routes.iter().any(|r| {
            r.is_default()
                && r.dst.addr().is_ipv4() == v4
                && r.kind == RouteKind::Unicast
                && r.oif.is_some_and(|i| i != ours)
        })
    };
    Ok(Secondary {
        v4: has(true),
        v6: has(false),
    })
}

async fn wire(
    req: &Request<'_>,
    conf: &RoutedConf,
    node: &Netlink,
    pod: &Netlink,
    pod_ns: &Netns,
    host_name: &str,
    addrs: &Addresses,
) -> Result<CniResult, CniError> {
    let env = req.env;
    let ifname = env.ifname.as_str();
    let v4 = addrs.ips.iter().any(|i| i.addr().is_ipv4());
    let v6 = addrs.ips.iter().any(|i| i.addr().is_ipv6());

    let mtu = conf.mtu.or(addrs.mtu);
    let host = host::create_pair(
        node,
        pod_ns,
        host_name,
        ifname,
        mtu,
        conf.mac,
        &veth_alias(env),
    )
    .await?;
    host::sysctls(host_name, v4, v6).await?;
    node.set_link_up(host.index, true)
        .await
        .map_err(netlink_ctx(format!("failed to set {host_name:?} up")))?;
    let cont = pod
        .link(ifname)
        .await
        .map_err(netlink_ctx("failed to look up the pod interface"))?;
    let (host_mac, pod_mac) = match (host.mac, cont.mac) {
        (Some(h), Some(p)) => (h, p),
        _ => return Err(CniError::kernel("the new veth pair has no MAC addresses")),
    };

    let pools = if addrs.pools.is_empty() {
        &conf.pool_cidrs
    } else {
        &addrs.pools
    };
    let routes = pod_routes(
        &addrs.ips,
        conf.routes.as_deref(),
        pools,
        secondary(pod, cont.index).await?,
    )?;
    let mut result = req.conf.prev_result.clone().unwrap_or_default();
    let base = result.interfaces.len();
    let own = CniResult {
        ips: addrs
            .ips
            .iter()
            .map(|a| IpConfig {
                address: *a,
                gateway: None,
                interface: Some(base + 1),
            })
            .collect(),
        routes,
        ..Default::default()
    };

    // Addresses and link up through the kit; the gateway's permanent
    // neighbour entry (the node end's MAC); then the routes, `onlink`
    // since no subnet on the link holds the gateway.
    let addrs_only = CniResult {
        ips: own.ips.clone(),
        ..Default::default()
    };
    iface::configure(pod, pod_ns, &cont, &addrs_only, Dad::Disable).await?;
    for a in &addrs.ips {
        let gw = gateway_for(a.addr());
        pod.neigh_replace(cont.index, gw, host_mac)
            .await
            .map_err(netlink_ctx(format!(
                "failed to add the neighbour entry {gw} in the pod"
            )))?;
    }
    let onlink: Vec<_> = iface::routes(&own, cont.index)?
        .into_iter()
        .map(|r| r.onlink())
        .collect();
    iface::add_routes(pod, &onlink, ifname).await?;
    host::route_pod(node, &host, pod_mac, &addrs.ips).await?;

    let cont = pod.link(ifname).await.map_err(netlink_err)?;
    result.interfaces.push(Interface {
        name: host.name.clone(),
        mac: host_mac.to_string(),
        ..Default::default()
    });
    result.interfaces.push(Interface {
        name: ifname.to_owned(),
        mac: pod_mac.to_string(),
        mtu: Some(cont.mtu),
        sandbox: req.netns()?.display().to_string(),
        ..Default::default()
    });
    result.ips.extend(own.ips);
    result.routes.extend(own.routes);
    if !addrs.dns.is_empty() {
        result.dns = addrs.dns.clone();
    }
    if let Some(dns) = &conf.dns {
        result.dns = dns.clone();
    }
    Ok(result)
}

fn check_err(msg: impl Into<String>) -> CniError {
    CniError::kernel(msg)
}

async fn check(req: &Request<'_>, pod_ns: &Netns, prev: &CniResult) -> Result<(), CniError> {
    let env = req.env;
    let ifname = env.ifname.as_str();
    let (node, pod) = open(pod_ns).await?;
    let sandbox = req.netns()?.display().to_string();
    let idx = prev
        .interface_index(ifname, Some(&sandbox))
        .ok_or_else(|| {
            CniError::invalid_config(format!(
                "prevResult has no interface {ifname:?} in sandbox {sandbox}"
            ))
        })?;

    // The node end.
    let host_name = host_veth_name(&env.container_id, ifname);
    let host = node
        .link_by_name(&host_name)
        .await
        .map_err(netlink_err)?
        .ok_or_else(|| check_err(format!("the node has no interface {host_name:?}")))?;
    if host.alias.as_deref() != Some(veth_alias(env).as_str())
        || host.kind.as_deref() != Some("veth")
    {
        return Err(check_err(format!(
            "{host_name:?} on the node is not this attachment's veth"
        )));
    }
    if !host.admin_up {
        return Err(check_err(format!("{host_name:?} on the node is down")));
    }
    // The pod end, and that the two are one pair.
    let cont = pod
        .link_by_name(ifname)
        .await
        .map_err(netlink_err)?
        .ok_or_else(|| check_err(format!("interface {ifname:?} not found in {sandbox}")))?;
    if cont.kind.as_deref() != Some("veth")
        || cont.link != Some(host.index)
        || host.link != Some(cont.index)
    {
        return Err(check_err(format!(
            "{ifname:?} in the pod is not the peer of {host_name:?} on the node"
        )));
    }
    let want_mac = &prev.interfaces[idx].mac;
    let have_mac = cont.mac.map(|m| m.to_string()).unwrap_or_default();
    if !want_mac.is_empty() && !have_mac.eq_ignore_ascii_case(want_mac) {
        return Err(check_err(format!(
            "interface {ifname:?} has MAC {have_mac}, prevResult says {want_mac}"
        )));
    }

    let ips: Vec<_> = prev
        .ips
        .iter()
        .filter(|i| i.interface == Some(idx))
        .map(|i| i.address.addr())
        .collect();
    // The node's route to each address, and the pod's way to its gateway.
    let node_routes = node
        .routes(RouteFilter::default().oif(host.index))
        .await
        .map_err(netlink_ctx("CHECK: cannot list the node's routes"))?;
    let neighbours = pod
        .neighbours(Some(cont.index))
        .await
        .map_err(netlink_ctx("CHECK: cannot list the pod's neighbours"))?;
    for a in &ips {
        let want = host::pod_route(*a, host.index);
        if !node_routes.iter().any(|r| {
            r.dst == want.dst && r.protocol == want.protocol && r.kind == RouteKind::Unicast
        }) {
            return Err(check_err(format!(
                "the node has no route to {a} dev {host_name} (proto {})",
                plexus_agent_api::ROUTE_PROTOCOL_POD
            )));
        }
        let gw = gateway_for(*a);
        if !neighbours
            .iter()
            .any(|n| n.ip == gw && n.permanent && n.mac == host.mac)
        {
            return Err(check_err(format!(
                "the pod has no permanent neighbour entry for its gateway {gw} on {ifname}"
            )));
        }
    }
    plexus_plugin::check::addrs_and_routes(&pod, &cont, prev, idx).await
}
