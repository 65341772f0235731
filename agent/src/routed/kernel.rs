//! The routed network's kernel routes: a blackhole per block this node
//! holds, and the best BGP routes. Each kind has its own route protocol
//! number, so the agent finds what it installed (after a restart too) and
//! never touches anyone else's routes, nor the pod routes (112).
//!
//! [`RouteTable`] is what the control logic needs of the kernel;
//! [`KernelRoutes`] does it over netlink, the unit tests with a fake.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use anyhow::Context;
use ipnet::IpNet;
use plexus_netlink::route::{Route, RouteFilter, RouteKind};
use plexus_netlink::Netlink;

/// RTPROT of the blackhole routes of this node's blocks.
pub const PROTO_BLOCK: u8 = 113;
/// RTPROT of the routes learned over BGP.
pub const PROTO_BGP: u8 = 114;

/// The main table's routes of one of our protocols.
#[async_trait::async_trait]
pub trait RouteTable: Send + Sync {
    /// Prefixes of the routes with protocol `proto`.
    async fn ours(&self, proto: u8) -> anyhow::Result<BTreeSet<IpNet>>;
    async fn add_blackhole(&self, block: IpNet) -> anyhow::Result<()>;
    /// Installs (or moves) the BGP route to `prefix` via `next_hop`.
    async fn install(&self, prefix: IpNet, next_hop: IpAddr) -> anyhow::Result<()>;
    /// Deletes our route of `proto` to `prefix`; gone already is fine.
    async fn remove(&self, prefix: IpNet, proto: u8) -> anyhow::Result<()>;
}

/// [`RouteTable`] over netlink in the agent's namespace.
pub struct KernelRoutes(pub Arc<Netlink>);

#[async_trait::async_trait]
impl RouteTable for KernelRoutes {
    async fn ours(&self, proto: u8) -> anyhow::Result<BTreeSet<IpNet>> {
        let routes = self
            .0
            .routes(RouteFilter::default().table(254))
            .await
            .context("list routes")?;
        Ok(routes
            .into_iter()
            .filter(|r| r.protocol == Some(proto))
            .map(|r| r.dst)
            .collect())
    }

    async fn add_blackhole(&self, block: IpNet) -> anyhow::Result<()> {
        let r = Route::new(block)
            .kind(RouteKind::Blackhole)
            .protocol(PROTO_BLOCK);
        self.0
            .route_replace(&r)
            .await
            .with_context(|| format!("blackhole route for block {block}"))
    }

    async fn install(&self, prefix: IpNet, next_hop: IpAddr) -> anyhow::Result<()> {
        let r = Route::new(prefix).via(next_hop).protocol(PROTO_BGP);
        self.0
            .route_replace(&r)
            .await
            .with_context(|| format!("route {prefix} via {next_hop}"))
    }

    async fn remove(&self, prefix: IpNet, proto: u8) -> anyhow::Result<()> {
        let mut r = Route::new(prefix).protocol(proto);
        if proto == PROTO_BLOCK {
            r = r.kind(RouteKind::Blackhole);
        }
        match self.0.route_del(&r).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e).with_context(|| format!("remove route {prefix} (proto {proto})")),
        }
    }
}
