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
use plexus_netlink::{BatchSocket, Netlink, Netns, RtBatch};

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
    /// Many BGP route changes at once (`Some(next hop)`: install, `None`:
    /// remove; absent already counts as removed). Returns the changes the
    /// kernel refused, by position, with why.
    async fn apply_bgp(
        &self,
        changes: &[(IpNet, Option<IpAddr>)],
    ) -> anyhow::Result<Vec<(usize, String)>> {
        let mut refused = Vec::new();
        for (i, (prefix, via)) in changes.iter().enumerate() {
            let r = match via {
                Some(nh) => self.install(*prefix, *nh).await,
                None => self.remove(*prefix, PROTO_BGP).await,
            };
            if let Err(e) = r {
                refused.push((i, format!("{e:#}")));
            }
        }
        Ok(refused)
    }
    /// Deletes our route of `proto` to `prefix`; gone already is fine.
    async fn remove(&self, prefix: IpNet, proto: u8) -> anyhow::Result<()>;
}

/// [`RouteTable`] over netlink in the agent's namespace; BGP route changes
/// go in batches (one datagram per 64 KiB of changes, see
/// plexus_netlink::batch), so 10,000 routes cost a few syscalls.
pub struct KernelRoutes {
    nl: Arc<Netlink>,
    batch: tokio::sync::Mutex<BatchSocket>,
}

impl KernelRoutes {
    pub async fn open(ns: &Netns) -> anyhow::Result<KernelRoutes> {
        Ok(KernelRoutes {
            nl: Arc::new(Netlink::open(ns).await.context("open netlink")?),
            batch: tokio::sync::Mutex::new(
                BatchSocket::open(ns)
                    .await
                    .context("open a netlink batch socket")?,
            ),
        })
    }
}

#[async_trait::async_trait]
impl RouteTable for KernelRoutes {
    async fn ours(&self, proto: u8) -> anyhow::Result<BTreeSet<IpNet>> {
        let routes = self
            .nl
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
        self.nl
            .route_replace(&r)
            .await
            .with_context(|| format!("blackhole route for block {block}"))
    }

    async fn install(&self, prefix: IpNet, next_hop: IpAddr) -> anyhow::Result<()> {
        let r = Route::new(prefix).via(next_hop).protocol(PROTO_BGP);
        self.nl
            .route_replace(&r)
            .await
            .with_context(|| format!("route {prefix} via {next_hop}"))
    }

    async fn apply_bgp(
        &self,
        changes: &[(IpNet, Option<IpAddr>)],
    ) -> anyhow::Result<Vec<(usize, String)>> {
        let mut b = RtBatch::new();
        for (prefix, via) in changes {
            let r = Route::new(*prefix).protocol(PROTO_BGP);
            match via {
                Some(nh) => b.route_replace(&r.via(*nh)),
                None => b.route_del(&r),
            };
        }
        let report = self
            .batch
            .lock()
            .await
            .apply(&b)
            .await
            .context("apply BGP route changes")?;
        Ok(report
            .failed
            .into_iter()
            .filter(|(i, e)| !(changes[*i].1.is_none() && e.is_not_found()))
            .map(|(i, e)| (i, e.to_string()))
            .collect())
    }

    async fn remove(&self, prefix: IpNet, proto: u8) -> anyhow::Result<()> {
        let mut r = Route::new(prefix).protocol(proto);
        if proto == PROTO_BLOCK {
            r = r.kind(RouteKind::Blackhole);
        }
        match self.nl.route_del(&r).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e).with_context(|| format!("remove route {prefix} (proto {proto})")),
        }
    }
}
