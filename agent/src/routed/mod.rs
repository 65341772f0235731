//! The calico-style routed network inside plexusd, chosen when the store
//! holds routed-network config (at least one pool under plexus-ipam's
//! layout). Pods get /32s from this node's blocks (served on the control
//! socket to plexus-bgp-routes), the blocks are blackholed locally and
//! announced over BGP, and the best routes learned are installed in the
//! kernel. No encapsulation.
//!
//! - [`peers`]: which neighbours (mesh, reflectors, global/node peers), pure;
//! - [`kernel`]: our route protocol numbers, the [`kernel::RouteTable`]
//!   the logic needs and its netlink implementation;
//! - [`bgp`]: the [`bgp::Announcer`] the logic needs of the speaker;
//! - [`blocks`]: a held block → blackhole route + announcement;
//! - [`ipam`]: the control socket's allocate/release/gc/bgp_status;
//! - [`routing`]: the RouteFeed → kernel routes, and the stale-route purge;
//! - [`watch`]: wakes the loop when the store's records change;
//! - this file: start-up and the loop that follows the store.

pub mod bgp;
pub mod blocks;
#[cfg(test)]
mod fakes;
pub mod ipam;
pub mod kernel;
pub mod peers;
pub mod routing;
pub mod watch;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use plexus_bgp::fsm::State;
use plexus_bgp::open::GracefulRestart;
use plexus_bgp::{PeerStatus, Speaker, SpeakerConfig};
use plexus_ipam::{Allocator, Cluster};
use plexus_netlink::Netns;

use crate::ctlsock::Handlers;
use crate::runfiles;
use crate::status::{BgpGauges, Shared};

use self::bgp::Announcer;
use self::blocks::Blocks;
use self::kernel::{KernelRoutes, RouteTable};
use self::peers::{Desired, Me};

/// Seconds between a peer's connection attempts.
const CONNECT_RETRY_SECS: u16 = 2;

/// How often the BGP gauges of /metrics are refreshed.
const GAUGES_EVERY: Duration = Duration::from_secs(2);

/// The neighbours configured now, by address (shared with `bgp_status`).
pub type PeerTable = Arc<std::sync::Mutex<BTreeMap<IpAddr, Desired>>>;

/// What the routed network needs from the command line.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node: String,
    pub run_dir: PathBuf,
    /// The node's address: BGP router ID, peering address, next hop.
    pub public_ip: Ipv4Addr,
    /// How often the store is read again for peers, nodes and blocks.
    pub poll_every: Duration,
    /// How long to wait for every peer's End-of-RIB before removing the
    /// previous run's routes that no peer confirmed.
    pub sync_wait: Duration,
}

/// The store holds a routed network (a pool).
pub async fn configured(cluster: &Cluster) -> anyhow::Result<bool> {
    Ok(!cluster
        .pools()
        .await
        .context("read the routed network's pools")?
        .is_empty())
}

/// Runs the routed network until an error (or until the caller drops it).
pub async fn run(
    s: &Settings,
    cluster: Cluster,
    status: &Shared,
    handlers: &Handlers,
) -> anyhow::Result<()> {
    let ns = Netns::current().context("open this process's network namespace")?;
    let address = IpAddr::V4(s.public_ip);
    let me_cfg = cluster
        .update_node(&s.node, |n| {
            n.address = Some(address);
            n.router_id = Some(s.public_ip);
        })
        .await
        .context("register this node in the store")?;
    let alloc = Arc::new(
        Allocator::load(cluster.clone(), &s.node)
            .await
            .context("load this node's blocks")?,
    );
    let bgp = cluster.bgp_config().await.context("read the BGP config")?;
    let asn = peers::node_as(&bgp, Some(&me_cfg));

    // Routes of ours in the kernel: a previous run's. Then we restart
    // gracefully: peers keep our routes, we keep theirs until they resync.
    let routes: Arc<dyn RouteTable> = Arc::new(KernelRoutes::open(&ns).await?);
    let previous = routes.ours(kernel::PROTO_BGP).await?;
    let restarting = !previous.is_empty() || !routes.ours(kernel::PROTO_BLOCK).await?.is_empty();
    let mut cfg = SpeakerConfig::new(s.public_ip, asn);
    cfg.cluster_id = me_cfg.route_reflector_cluster_id;
    // Nodes starting together race: a node's first connect can reach a peer
    // that is not listening yet, or does not know this node yet, and both
    // sides then wait a whole retry interval (30 s by default, 120 s in RFC
    // 4271). On a cluster network a refused connect costs nothing.
    cfg.connect_retry = CONNECT_RETRY_SECS;
    cfg.graceful_restart = Some(GracefulRestart {
        restarting,
        forwarding_preserved: true,
        ..GracefulRestart::default()
    });
    let (speaker, feed) = Speaker::start(cfg).await.context("start the BGP speaker")?;
    let speaker = Arc::new(speaker);
    tracing::info!(asn, router_id = %s.public_ip, restarting, "BGP speaker started");

    let blocks = Arc::new(Blocks::new(routes.clone(), speaker.clone()).await?);
    blocks
        .sync(alloc.blocks().await)
        .await
        .context("program this node's blocks")?;
    let routing = routing::Routing::new(routes, status.clone());
    let _feed = AbortOnDrop(tokio::spawn(routing.clone().follow(feed)));

    let table = PeerTable::default();
    let mut follower = Follower {
        cluster: cluster.clone(),
        node: s.node.clone(),
        address,
        speaker: speaker.clone(),
        table: table.clone(),
    };
    follower.peers().await?;

    let pools = ipam::PoolCache::default();
    *pools.lock().unwrap_or_else(|p| p.into_inner()) =
        cluster.pools().await.context("read the pools")?;
    *handlers.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(ipam::RoutedHandler {
        cluster: cluster.clone(),
        pools: pools.clone(),
        alloc: alloc.clone(),
        blocks: blocks.clone(),
        peers: table.clone(),
        router_id: s.public_ip.to_string(),
        asn,
    }));
    status.add_backend("routed (BGP)");
    status.update(|st| st.public_ip = Some(s.public_ip.to_string()));
    tracing::info!("routed network ready");
    // With the overlay beside it, the node is ready when both are.
    if status.network_ready() {
        runfiles::mark_ready(&s.run_dir)?;
    }

    let _purge = AbortOnDrop(tokio::spawn(routing.purge_after_sync(
        speaker.clone(),
        previous,
        s.sync_wait,
    )));
    let wake = Arc::new(tokio::sync::Notify::new());
    let _watch = AbortOnDrop(tokio::spawn(watch::wake_on_change(
        cluster.clone(),
        wake.clone(),
    )));
    // The BGP gauges are local (no store request), refreshed every few
    // seconds; the store is read on each watch event and, as the fallback
    // for a missed one, once per poll interval after the last read.
    let mut gauge_tick = tokio::time::interval(GAUGES_EVERY);
    let mut poll = tokio::time::interval(s.poll_every);
    poll.reset(); // start-up has just read everything
    loop {
        tokio::select! {
            _ = gauge_tick.tick() => {
                if let Ok(peers) = speaker.status().await {
                    status.set_bgp(gauges(&peers));
                }
                continue;
            }
            _ = poll.tick() => {}
            _ = wake.notified() => {}
        }
        poll.reset();
        if let Err(e) = follower.peers().await {
            status.store_error();
            tracing::warn!(error = %format!("{e:#}"), "following the BGP peers");
        }
        match cluster.pools().await {
            Ok(p) => *pools.lock().unwrap_or_else(|p| p.into_inner()) = p,
            Err(e) => {
                status.store_error();
                tracing::warn!(error = %e, "re-reading the pools");
            }
        }
        match alloc.resync().await {
            Ok(()) => {
                if let Err(e) = blocks.sync(alloc.blocks().await).await {
                    status.dataplane_errors(1);
                    tracing::warn!(error = %format!("{e:#}"), "programming the blocks");
                }
            }
            Err(e) => {
                status.store_error();
                tracing::warn!(error = %e, "re-reading this node's blocks");
            }
        }
    }
}

/// The BGP metrics from the sessions' status (every state the operator
/// watches is present, at 0 when no session is in it).
pub fn gauges(peers: &[PeerStatus]) -> BgpGauges {
    let mut g = BgpGauges::default();
    for st in [
        State::Established,
        State::Idle,
        State::Active,
        State::Connect,
    ] {
        g.sessions.insert(st.to_string(), 0);
    }
    for p in peers {
        *g.sessions.entry(p.state.to_string()).or_default() += 1;
        g.prefixes_received += p.prefixes_received;
        g.prefixes_advertised += p.prefixes_sent;
    }
    g
}

/// Keeps the speaker's neighbours equal to what the store says.
pub struct Follower {
    pub cluster: Cluster,
    pub node: String,
    pub address: IpAddr,
    pub speaker: Arc<dyn Announcer>,
    pub table: PeerTable,
}

impl Follower {
    /// One round: read the BGP config, nodes and peers; add and remove
    /// the speaker's peers to match.
    pub async fn peers(&mut self) -> anyhow::Result<()> {
        let bgp = self.cluster.bgp_config().await?;
        let nodes = self.cluster.nodes().await?;
        let explicit = self.cluster.peers().await?;
        let mine = nodes.iter().find(|n| n.name == self.node);
        let me = Me {
            name: &self.node,
            address: self.address,
            asn: peers::node_as(&bgp, mine),
            cluster_id: mine.and_then(|n| n.route_reflector_cluster_id),
        };
        let want = peers::desired(&me, &bgp, &nodes, &explicit);
        let have = self.table.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for (addr, d) in &have {
            if want.get(addr).map(|w| &w.config) != Some(&d.config) {
                self.speaker.remove_peer(*addr).await?;
                self.table
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(addr);
                tracing::info!(peer = %addr, "BGP peer removed");
            }
        }
        for (addr, d) in want {
            let known = self
                .table
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(&addr);
            if !known {
                self.speaker.add_peer(d.config.clone()).await?;
                tracing::info!(peer = %addr, kind = d.kind.label(), asn = d.config.remote_as, "BGP peer added");
            }
            self.table
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(addr, d);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

/// Stops a background task when the network stops.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
