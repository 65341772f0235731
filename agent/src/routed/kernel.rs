//! The routed network's kernel routes: a blackhole per block this node
//! holds, and the best BGP routes. Each kind has its own route protocol
//! number, so the agent finds what it installed (after a restart too) and
//! never touches anyone else's routes, nor the pod routes (112).
//!
//! A BGP route through the IP-in-IP tunnel goes out `tunl0`, onlink via
//! the other node's underlay address (see [`super::encap`]).
//!
//! [`RouteTable`] is what the control logic needs of the kernel;
//! [`KernelRoutes`] does it over netlink, the unit tests with a fake.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use anyhow::Context;
use ipnet::{IpNet, Ipv4Net};
use plexus_netlink::route::{Route, RouteFilter, RouteKind};
use plexus_netlink::{AddrOptions, BatchSocket, Ipip, Netlink, Netns, RtBatch};

use super::encap::{Hop, IPIP_OVERHEAD, TUNNEL_DEV};

/// RTPROT of the blackhole routes of this node's blocks.
pub const PROTO_BLOCK: u8 = 113;
/// RTPROT of the routes learned over BGP.
pub const PROTO_BGP: u8 = 114;
/// The metric of every route learned over BGP: above any a distribution,
/// a DHCP client or an operator gives the node's own routes, so a learned
/// route to a prefix the node already routes (its default route, a
/// connected subnet, a pod) sits behind it and never wins; it carries
/// traffic only where nothing else routes. Routes of other metrics are
/// never replaced or deleted by the agent.
pub const LEARNED_METRIC: u32 = 4_000_000_000;

/// A change the kernel refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Its position in the batch.
    pub index: usize,
    pub why: String,
    /// A route that is not ours holds the place (nothing was touched).
    pub not_ours: bool,
}

/// One learned-route change for the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BgpChange {
    pub prefix: IpNet,
    /// `Some`: install via this hop; `None`: remove ours.
    pub to: Option<Hop>,
    /// The agent holds a route of its own for the prefix now (replace it);
    /// otherwise one is created only if nothing sits at its place.
    pub ours_now: bool,
}

/// The main table's routes of one of our protocols.
#[async_trait::async_trait]
pub trait RouteTable: Send + Sync {
    /// Prefixes of the routes with protocol `proto`.
    async fn ours(&self, proto: u8) -> anyhow::Result<BTreeSet<IpNet>>;
    async fn add_blackhole(&self, block: IpNet) -> anyhow::Result<()>;
    /// Installs (or moves) the BGP route to `prefix` via `hop`.
    async fn install(&self, prefix: IpNet, hop: Hop) -> anyhow::Result<()>;
    /// Many BGP route changes at once (absent already counts as removed).
    /// Returns the changes the kernel refused.
    async fn apply_bgp(&self, changes: &[BgpChange]) -> anyhow::Result<Vec<Refused>> {
        let mut refused = Vec::new();
        for (i, c) in changes.iter().enumerate() {
            let r = match c.to {
                Some(hop) => self.install(c.prefix, hop).await,
                None => self.remove(c.prefix, PROTO_BGP).await,
            };
            if let Err(e) = r {
                refused.push(Refused {
                    index: i,
                    why: format!("{e:#}"),
                    not_ours: false,
                });
            }
        }
        Ok(refused)
    }
    /// Deletes our route of `proto` to `prefix`; gone already is fine.
    async fn remove(&self, prefix: IpNet, proto: u8) -> anyhow::Result<()>;
    /// The underlay: the subnet (our address with its prefix) and the MTU
    /// of the link holding `ip`; None if no link holds it.
    async fn underlay(&self, ip: Ipv4Addr) -> anyhow::Result<Option<(Ipv4Net, u32)>>;
    /// Every address of the node with its prefix length and the name of
    /// its link (for the BGP import guard).
    async fn addresses(&self) -> anyhow::Result<Vec<(IpNet, String)>> {
        Ok(Vec::new())
    }
    /// The tunnel device up, with MTU `underlay_mtu` − 20 and `address`/32
    /// as its only address (the source of the node's own packets into the
    /// tunnel). Tunnel routes need it first.
    async fn tunnel_up(&self, address: Ipv4Addr, underlay_mtu: u32) -> anyhow::Result<()>;
    /// The tunnel device without our address and down (no pool asks for
    /// IP-in-IP any more); absent is fine.
    async fn tunnel_down(&self) -> anyhow::Result<()>;
}

/// The kernel route for a BGP-learned prefix via `hop`; `tunnel` is the
/// tunnel device's index (0 if there is none: the kernel then refuses
/// the route, which is counted).
fn bgp_route(prefix: IpNet, hop: Hop, tunnel: u32) -> Route {
    let r = Route::new(prefix)
        .via(hop.next_hop)
        .protocol(PROTO_BGP)
        .metric(LEARNED_METRIC);
    if hop.tunnel {
        r.dev(tunnel).onlink()
    } else {
        r
    }
}

/// Our learned route to `prefix` as a delete names it: protocol and
/// metric, so no route of anyone else's matches.
fn ours(prefix: IpNet) -> Route {
    Route::new(prefix)
        .protocol(PROTO_BGP)
        .metric(LEARNED_METRIC)
}

/// [`RouteTable`] over netlink in the agent's namespace; BGP route changes
/// go in batches (one datagram per 64 KiB of changes, see
/// plexus_netlink::batch), so 10,000 routes cost a few syscalls.
pub struct KernelRoutes {
    nl: Arc<Netlink>,
    batch: tokio::sync::Mutex<BatchSocket>,
    /// The tunnel device's index once [`RouteTable::tunnel_up`] made it.
    tunnel: AtomicU32,
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
            tunnel: AtomicU32::new(0),
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
        // A learned route is ours only at our metric: the same protocol
        // number at another metric is someone else's.
        Ok(routes
            .into_iter()
            .filter(|r| r.protocol == Some(proto))
            .filter(|r| proto != PROTO_BGP || r.metric == Some(LEARNED_METRIC))
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

    async fn install(&self, prefix: IpNet, hop: Hop) -> anyhow::Result<()> {
        let r = bgp_route(prefix, hop, self.tunnel.load(Ordering::SeqCst));
        self.nl
            .route_replace(&r)
            .await
            .with_context(|| format!("route {prefix} via {hop:?}"))
    }

    async fn apply_bgp(&self, changes: &[BgpChange]) -> anyhow::Result<Vec<Refused>> {
        let tunnel = self.tunnel.load(Ordering::SeqCst);
        let mut b = RtBatch::new();
        for c in changes {
            match (c.to, c.ours_now) {
                (Some(hop), true) => b.route_replace(&bgp_route(c.prefix, hop, tunnel)),
                (Some(hop), false) => b.route_add(&bgp_route(c.prefix, hop, tunnel)),
                (None, _) => b.route_del(&ours(c.prefix)),
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
            .filter(|(i, e)| !(changes[*i].to.is_none() && e.is_not_found()))
            .map(|(i, e)| Refused {
                index: i,
                why: e.to_string(),
                not_ours: changes[i].to.is_some() && !changes[i].ours_now && e.is_exists(),
            })
            .collect())
    }

    async fn remove(&self, prefix: IpNet, proto: u8) -> anyhow::Result<()> {
        let r = match proto {
            PROTO_BLOCK => Route::new(prefix)
                .protocol(proto)
                .kind(RouteKind::Blackhole),
            PROTO_BGP => ours(prefix),
            _ => Route::new(prefix).protocol(proto),
        };
        match self.nl.route_del(&r).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e).with_context(|| format!("remove route {prefix} (proto {proto})")),
        }
    }

    async fn underlay(&self, ip: Ipv4Addr) -> anyhow::Result<Option<(Ipv4Net, u32)>> {
        let addrs = self.nl.addrs(None).await.context("list addresses")?;
        let Some(a) = addrs.iter().find(|a| a.net.addr() == IpAddr::V4(ip)) else {
            return Ok(None);
        };
        let IpNet::V4(subnet) = a.net else {
            return Ok(None);
        };
        let link = self
            .nl
            .link_by_index(a.index)
            .await
            .with_context(|| format!("the link holding {ip}"))?
            .with_context(|| format!("the link holding {ip} went away"))?;
        Ok(Some((subnet, link.mtu)))
    }

    async fn addresses(&self) -> anyhow::Result<Vec<(IpNet, String)>> {
        let names: std::collections::HashMap<u32, String> = self
            .nl
            .links()
            .await
            .context("list links")?
            .into_iter()
            .map(|l| (l.index, l.name))
            .collect();
        Ok(self
            .nl
            .addrs(None)
            .await
            .context("list addresses")?
            .into_iter()
            .map(|a| {
                let name = names.get(&a.index).cloned().unwrap_or_default();
                (a.net, name)
            })
            .collect())
    }

    async fn tunnel_up(&self, address: Ipv4Addr, underlay_mtu: u32) -> anyhow::Result<()> {
        let mtu = underlay_mtu.saturating_sub(IPIP_OVERHEAD);
        let link = self
            .nl
            .ensure_ipip(&Ipip::new(TUNNEL_DEV).mtu(mtu))
            .await
            .context("the IP-in-IP tunnel device (kernel module ipip)")?;
        if link.mtu != mtu {
            self.nl
                .set_mtu(link.index, mtu)
                .await
                .with_context(|| format!("MTU {mtu} on {TUNNEL_DEV}"))?;
        }
        let want = IpNet::V4(Ipv4Net::from(address));
        for a in self
            .nl
            .addrs(Some(link.index))
            .await
            .context("list addresses")?
        {
            if a.net != want {
                self.nl
                    .addr_del(link.index, a.net)
                    .await
                    .with_context(|| format!("remove {} from {TUNNEL_DEV}", a.net))?;
            }
        }
        let replace = AddrOptions {
            replace: true,
            ..AddrOptions::default()
        };
        self.nl
            .addr_add_with(link.index, want, replace)
            .await
            .with_context(|| format!("address {want} on {TUNNEL_DEV}"))?;
        self.nl
            .set_link_up(link.index, true)
            .await
            .with_context(|| format!("set {TUNNEL_DEV} up"))?;
        self.tunnel.store(link.index, Ordering::SeqCst);
        tracing::info!(dev = TUNNEL_DEV, %address, mtu, "IP-in-IP tunnel up");
        Ok(())
    }

    async fn tunnel_down(&self) -> anyhow::Result<()> {
        self.tunnel.store(0, Ordering::SeqCst);
        let Some(link) = self.nl.link_by_name(TUNNEL_DEV).await? else {
            return Ok(());
        };
        for a in self
            .nl
            .addrs(Some(link.index))
            .await
            .context("list addresses")?
        {
            self.nl
                .addr_del(link.index, a.net)
                .await
                .with_context(|| format!("remove {} from {TUNNEL_DEV}", a.net))?;
        }
        self.nl
            .set_link_up(link.index, false)
            .await
            .with_context(|| format!("set {TUNNEL_DEV} down"))
    }
}
