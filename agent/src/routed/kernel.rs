//! The routed network's kernel routes: a blackhole per block this node
//! holds, and the best BGP routes. Each kind has its own route protocol
//! number, so the agent finds what it installed (after a restart too) and
//! never touches anyone else's routes, nor the pod routes (112).

use std::collections::BTreeSet;
use std::net::IpAddr;

use anyhow::Context;
use ipnet::IpNet;
use plexus_netlink::route::{Route, RouteFilter, RouteKind};
use plexus_netlink::Netlink;

/// RTPROT of the blackhole routes of this node's blocks.
pub const PROTO_BLOCK: u8 = 113;
/// RTPROT of the routes learned over BGP.
pub const PROTO_BGP: u8 = 114;

/// Prefixes of the main table's routes with protocol `proto`.
pub async fn ours(nl: &Netlink, proto: u8) -> anyhow::Result<BTreeSet<IpNet>> {
    let routes = nl
        .routes(RouteFilter::default().table(254))
        .await
        .context("list routes")?;
    Ok(routes
        .into_iter()
        .filter(|r| r.protocol == Some(proto))
        .map(|r| r.dst)
        .collect())
}

pub async fn add_blackhole(nl: &Netlink, block: IpNet) -> anyhow::Result<()> {
    let r = Route::new(block)
        .kind(RouteKind::Blackhole)
        .protocol(PROTO_BLOCK);
    nl.route_replace(&r)
        .await
        .with_context(|| format!("blackhole route for block {block}"))
}

/// Deletes our route of `proto` to `prefix`; gone already is fine.
pub async fn remove(nl: &Netlink, prefix: IpNet, proto: u8) -> anyhow::Result<()> {
    let mut r = Route::new(prefix).protocol(proto);
    if proto == PROTO_BLOCK {
        r = r.kind(RouteKind::Blackhole);
    }
    match nl.route_del(&r).await {
        Ok(()) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e).with_context(|| format!("remove route {prefix} (proto {proto})")),
    }
}

/// Installs (or moves) the route to `prefix` via `next_hop`.
pub async fn install(nl: &Netlink, prefix: IpNet, next_hop: IpAddr) -> anyhow::Result<()> {
    let r = Route::new(prefix).via(next_hop).protocol(PROTO_BGP);
    nl.route_replace(&r)
        .await
        .with_context(|| format!("route {prefix} via {next_hop}"))
}
