//! The calico-style routed network inside plexusd, chosen when the store
//! holds routed-network config (at least one pool under plexus-ipam's
//! layout). Pods get /32s from this node's blocks (served on the control
//! socket to plexus-bgp-routes), the blocks are blackholed locally and
//! announced over BGP, and the best routes learned are installed in the
//! kernel: direct, or through the IP-in-IP tunnel for pools with
//! `--encap ipip` / `ipip-cross-subnet`.
//!
//! - [`peers`]: which neighbours (mesh, reflectors, global/node peers), pure;
//! - [`kernel`]: what the logic reads of the kernel ([`kernel::NodeView`]:
//!   the underlay, the node's addresses); every write goes through the
//!   data plane ([`crate::dataplane`]);
//! - [`bgp`]: the [`bgp::Announcer`] the logic needs of the speaker;
//! - [`blocks`]: a held block → blackhole route + announcement;
//! - [`encap`]: which learned route goes through the tunnel, pure;
//! - [`tunnel`]: the tunnel device and its address;
//! - [`ipam`]: the control socket's allocate/release/gc/bgp_status;
//! - [`routing`]: the RouteFeed → kernel routes, and the stale-route purge;
//! - [`natout`]: the pools' `nat-outgoing` as an nftables chain;
//! - [`watch`]: wakes the loop when the store's records change;
//! - this file: start-up and the loop that follows the store.

pub mod bfdlink;
pub mod bgp;
pub mod blocks;
pub mod encap;
#[cfg(test)]
mod fakes;
pub mod ipam;
pub mod kernel;
pub mod natout;
pub mod peers;
pub mod routing;
pub mod secrets;
pub mod services;
pub mod svclocal;
pub mod tunnel;
pub mod watch;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ipnet::IpNet;
use plexus_bgp::fsm::State;
use plexus_bgp::open::GracefulRestart;
use plexus_bgp::{PeerStatus, Speaker, SpeakerConfig};
use plexus_ipam::{Allocator, Cluster, NodeSettings, Pool};
use plexus_netlink::Netns;
use tracing::Instrument;

use crate::ctlsock::Handlers;
use crate::status::{BgpGauges, Shared};

use self::bgp::Announcer;
use self::blocks::Blocks;
use self::encap::Policy;
use self::kernel::{KernelView, NodeView};
use self::peers::{Desired, Me, PeerKind};
use self::tunnel::Tunnel;
use crate::dataplane::{DataPlane, Entry, Owner};

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
    /// The node's IPv6 address (`--public-ipv6`): the next hop of its IPv6
    /// blocks on IPv4 sessions; without it they are announced only on
    /// IPv6 sessions.
    pub public_ipv6: Option<Ipv6Addr>,
    /// How often the store is read again for peers, nodes and blocks.
    pub poll_every: Duration,
    /// How long to wait for every peer's End-of-RIB before removing the
    /// previous run's routes that no peer confirmed.
    pub sync_wait: Duration,
    /// Where BGP listens (`--bgp-listen`); empty: the node's public
    /// addresses, never every address (pods' side included).
    pub bgp_listen: Vec<IpAddr>,
    /// The overlay's networks when this node serves it too: no external
    /// router may announce into them either.
    pub cluster_networks: Vec<IpNet>,
    /// Reads the Secrets peers' passwords refer to (Kubernetes mode).
    pub secrets: Option<Arc<dyn secrets::SecretReader>>,
    /// Services and EndpointSlices (Kubernetes mode): Local services'
    /// host routes.
    pub kube_services: Option<plexus_store::KubeServices>,
}

/// After the store was found reset, how long peers whose node record is
/// missing are kept: every other agent needs a moment to write its record
/// back, and dropping their sessions meanwhile would take their routes.
const RESET_GRACE: Duration = Duration::from_secs(30);

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
    dp: &DataPlane,
    status: &Shared,
    handlers: &Handlers,
) -> anyhow::Result<()> {
    let ns = Netns::current().context("open this process's network namespace")?;
    let address = IpAddr::V4(s.public_ip);
    let view: Arc<dyn NodeView> = Arc::new(KernelView::open(&ns).await?);
    let underlay = view
        .underlay(s.public_ip)
        .await
        .context("find the underlay")?
        .map(|(net, _)| IpNet::V4(net));
    // Pools covering the underlay or a node's address are refused before
    // anything reads them (the first read is the registration below).
    let nodes0 = cluster.nodes().await.unwrap_or_default();
    cluster.set_protected(protected(underlay, address, &nodes0));
    let me_cfg = cluster
        .update_node(&s.node, |n| {
            n.address = Some(address);
            n.router_id = Some(s.public_ip);
        })
        .await
        .context("register this node in the store")?;
    let journal = Arc::new(crate::runfiles::BlockJournal::new(&s.run_dir));
    let alloc = Arc::new(
        Allocator::load_with(cluster.clone(), &s.node, Some(journal))
            .await
            .context("load this node's blocks")?,
    );
    let bgp = cluster.bgp_config().await.context("read the BGP config")?;
    let asn = peers::node_as(&bgp, Some(&me_cfg));

    // Routes of ours in the kernel: a previous run's, taken over as they
    // are. Then we restart gracefully: peers keep our routes, we keep
    // theirs until they resync.
    let previous: std::collections::BTreeSet<ipnet::IpNet> = dp
        .adopt(Owner::Learned)
        .await
        .iter()
        .filter_map(|e| match e {
            Entry::Route(r) => Some(r.dst),
            _ => None,
        })
        .collect();
    let restarting = !previous.is_empty() || !dp.adopt(Owner::Blocks).await.is_empty();
    let mut cfg = SpeakerConfig::new(s.public_ip, asn);
    cfg.cluster_id = me_cfg.route_reflector_cluster_id;
    cfg.next_hop_v6 = s.public_ipv6;
    // ECMP: read once; a change takes a restart of plexusd.
    cfg.max_paths = bgp.max_paths.map_or(1, |m| m.max(1) as usize);
    // BGP is the node's, on its underlay address: a pod reaching the
    // node's address on its veth must find no listener.
    let listen: Vec<IpAddr> = if s.bgp_listen.is_empty() {
        [Some(address), s.public_ipv6.map(IpAddr::V6)]
            .into_iter()
            .flatten()
            .collect()
    } else {
        s.bgp_listen.clone()
    };
    cfg.listen = listen
        .iter()
        .map(|a| std::net::SocketAddr::new(*a, plexus_bgp::speaker::BGP_PORT))
        .collect();
    cfg.guard = guard(&*view, &nodes0, &[], &BTreeMap::new(), s).await;
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
    // Sessions come up while the blocks are still being read: an
    // End-of-RIB before them would have the peers drop our blocks' routes.
    cfg.local_routes_pending = true;
    let (speaker, feed) = Speaker::start(cfg).await.context("start the BGP speaker")?;
    let speaker = Arc::new(speaker);
    tracing::info!(asn, router_id = %s.public_ip, ?listen, restarting, "BGP speaker started");

    let table = PeerTable::default();
    let mut follower = Follower {
        cluster: cluster.clone(),
        node: s.node.clone(),
        address,
        speaker: speaker.clone(),
        table: table.clone(),
        asn: Arc::new(AtomicU32::new(asn)),
        cluster_id: me_cfg.route_reflector_cluster_id,
        keep_missing_until: None,
        secrets: s.secrets.clone(),
    };
    let nodes = follower.peers().await?;
    let bfd_link = Arc::new(bfdlink::BfdLink::new(
        speaker.clone(),
        s.public_ip,
        s.public_ipv6,
    ));
    bfd_link.sync(&table).await;
    cluster.set_protected(protected(underlay, address, &nodes));
    let pool_list = cluster.pools().await.context("read the pools")?;
    let kinds = follower.kinds();
    update_guard(&speaker, &*view, &nodes, &pool_list, &kinds, s).await;
    natout::sync(dp, &pool_list, status).await;

    // The tunnel (if a pool wants IP-in-IP) before any route through it.
    let tunnel = Tunnel::new(dp.clone(), &*view, alloc.clone(), s.public_ip).await?;
    let policy = encap_policy(&tunnel, &pool_list, &nodes, status).await;
    let blocks = Arc::new(Blocks::new(dp.clone(), speaker.clone()).await?);
    blocks.set_advertisements(bgp.prefix_advertisements.clone());
    let services = Arc::new(services::Services::new(speaker.clone()));
    services.sync(&bgp).await;
    let bgp_now = Arc::new(std::sync::Mutex::new(bgp.clone()));
    let _local_services = s.kube_services.clone().map(|k| {
        AbortOnDrop(tokio::spawn(
            svclocal::follow(k, s.node.clone(), services.clone(), bgp_now.clone())
                .in_current_span(),
        ))
    });
    blocks
        .sync(alloc.blocks().await)
        .await
        .context("program this node's blocks")?;
    speaker
        .local_routes_complete()
        .await
        .context("tell the BGP speaker our blocks are announced")?;
    let routing = routing::Routing::new(dp.clone(), status.clone(), policy);
    let _feed = AbortOnDrop(tokio::spawn(routing.clone().follow(feed).in_current_span()));

    let pools = ipam::PoolCache::default();
    *pools.lock().unwrap_or_else(|p| p.into_inner()) = pool_list.clone();
    let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
    *handlers.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(ipam::RoutedHandler {
        cluster: cluster.clone(),
        pools: pools.clone(),
        alloc: alloc.clone(),
        blocks: blocks.clone(),
        peers: table.clone(),
        bfd: Some(bfd_link.clone()),
        router_id: s.public_ip.to_string(),
        ipip_mtu: tunnel.pod_mtu(),
        asn: follower.asn.clone(),
        lost: lost.clone(),
    }));
    status.update(|st| {
        st.add_backend("routed (BGP)");
        st.public_ip = Some(s.public_ip.to_string());
    });
    let node_ready = status.network_ready(&s.run_dir)?;
    tracing::info!(node_ready, "routed network ready");

    let _purge = AbortOnDrop(tokio::spawn(
        routing
            .clone()
            .purge_after_sync(speaker.clone(), previous, s.sync_wait)
            .in_current_span(),
    ));
    let wake = Arc::new(tokio::sync::Notify::new());
    let _watch = AbortOnDrop(tokio::spawn(
        watch::wake_on_change(cluster.clone(), wake.clone(), status.clone()).in_current_span(),
    ));
    let mut round = Round {
        settings: s,
        cluster: &cluster,
        alloc: &alloc,
        speaker: &speaker,
        status,
        lost: &lost,
        address,
        had_pools: !pool_list.is_empty(),
    };
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
        // A store that lost the routed network's records is waited out:
        // sessions, routes and blocks stay as they are.
        let Some(pool_list) = round.pools().await else {
            continue;
        };
        *pools.lock().unwrap_or_else(|p| p.into_inner()) = pool_list.clone();
        round.reassert_if_reset().await;
        let nodes = match follower.peers().await {
            Ok(n) => Some(n),
            Err(e) => {
                status.store_error();
                tracing::warn!(error = %format!("{e:#}"), "following the BGP peers");
                None
            }
        };
        bfd_link.sync(&table).await;
        if let Some(nodes) = &nodes {
            cluster.set_protected(protected(underlay, address, nodes));
            let kinds = follower.kinds();
            update_guard(&speaker, &*view, nodes, &pool_list, &kinds, s).await;
        }
        natout::sync(dp, &pool_list, status).await;
        if let Some(nodes) = nodes {
            let policy = encap_policy(&tunnel, &pool_list, &nodes, status).await;
            routing.set_policy(policy).await;
        }
        round.exclude_announced(&pool_list).await;
        match cluster.bgp_config().await {
            Ok(cfg) => {
                blocks.set_advertisements(cfg.prefix_advertisements.clone());
                services.sync(&cfg).await;
                *bgp_now.lock().unwrap_or_else(|p| p.into_inner()) = cfg;
            }
            Err(e) => {
                tracing::warn!(error = %e, "re-reading the BGP config for services and communities")
            }
        }
        match alloc.resync().await {
            Ok(()) => {
                if let Err(e) = blocks.sync(alloc.blocks().await).await {
                    status.programming_failed(1);
                    tracing::warn!(error = %format!("{e:#}"), "programming the blocks");
                }
            }
            Err(plexus_ipam::IpamError::Reset(why)) => {
                tracing::warn!(%why, "the store was reset");
                round.reassert().await;
                follower.keep_missing_until = Some(std::time::Instant::now() + RESET_GRACE);
            }
            Err(e) => {
                status.store_error();
                tracing::warn!(error = %e, "re-reading this node's blocks");
            }
        }
        status.set_skipped_records(cluster.damage().current());
        status.count(
            crate::status::Event::RecordSkipped,
            cluster
                .damage()
                .reported()
                .saturating_sub(status.counted(crate::status::Event::RecordSkipped)),
        );
    }
}

/// What one round of the routed loop works on.
struct Round<'a> {
    settings: &'a Settings,
    cluster: &'a Cluster,
    alloc: &'a Arc<Allocator>,
    speaker: &'a Arc<Speaker>,
    status: &'a Shared,
    /// Set while the store lacks the routed network's records: the
    /// control socket answers code 11 meanwhile.
    lost: &'a std::sync::atomic::AtomicBool,
    address: IpAddr,
    /// The store held pools at some point (a fresh, empty store is not
    /// one that lost them).
    had_pools: bool,
}

impl Round<'_> {
    /// The pools, or `None` while the store has lost them (or cannot be
    /// read): then nothing else is read or changed this round.
    async fn pools(&mut self) -> Option<Vec<Pool>> {
        let list = match self.cluster.pools().await {
            Ok(p) => p,
            Err(e) => {
                self.status.store_error();
                tracing::warn!(error = %e, "re-reading the pools");
                return None;
            }
        };
        let lost = self.lost.load(Ordering::SeqCst);
        if list.is_empty() && self.had_pools {
            if !lost {
                tracing::warn!("the store holds no pool any more (wiped?): waiting for it, data plane and sessions kept as they are");
                self.lost.store(true, Ordering::SeqCst);
                self.status.count(crate::status::Event::StoreLost, 1);
                self.status.set_waiting(
                    &self.settings.run_dir,
                    "routed",
                    Some("the store holds no pool: waiting for the routed network's records to come back"),
                );
            }
            return None;
        }
        self.had_pools |= !list.is_empty();
        if lost {
            tracing::info!(
                pools = list.len(),
                "the store holds pools again: re-registering this node"
            );
            self.reassert().await;
            if self.lost.load(Ordering::SeqCst) {
                return None;
            }
        }
        Some(list)
    }

    /// Writes back this node's record and blocks (with every allocation)
    /// after the store lost them; the control socket serves again once
    /// that is done.
    async fn reassert(&mut self) {
        let s = self.settings;
        let address = self.address;
        let node = self
            .cluster
            .update_node(&s.node, |n| {
                n.address = Some(address);
                n.router_id = Some(s.public_ip);
            })
            .await;
        let blocks = self.alloc.reassert().await;
        match (node, blocks) {
            (Ok(_), Ok(r)) => {
                self.status
                    .count(crate::status::Event::Reregistered, r.restored as u64 + 1);
                if r.lost > 0 {
                    self.status.programming_failed(r.lost);
                }
                tracing::info!(
                    blocks = r.restored,
                    lost = r.lost,
                    "node record and blocks written back"
                );
                self.lost.store(false, Ordering::SeqCst);
                self.status.set_waiting(&s.run_dir, "routed", None);
            }
            (Err(e), _) | (_, Err(e)) => {
                self.status.store_error();
                tracing::warn!(error = %e, "re-registering this node; retrying");
            }
        }
    }

    /// A reset store with pools already back (re-seeded before this node
    /// looked) shows as a revision below one seen: re-register then too.
    async fn reassert_if_reset(&mut self) {
        if let Err(plexus_ipam::IpamError::Reset(why)) = self.alloc.resync().await {
            tracing::warn!(%why, "the store was reset");
            self.reassert().await;
        }
    }

    /// Blocks other nodes announce are never claimed here, whatever the
    /// store says (it may have lost their records).
    async fn exclude_announced(&self, pools: &[Pool]) {
        let Ok(rib) = self.speaker.loc_rib().await else {
            return;
        };
        let announced: Vec<IpNet> = rib
            .into_iter()
            .filter(|e| e.peer.is_some())
            .map(|e| e.prefix)
            .filter(|p| pools.iter().any(|pool| pool.cidr.contains(p)))
            .collect();
        self.alloc.set_excluded(announced);
    }
}

/// The BGP import guard's data: this node's addresses and underlay
/// subnets (not the subnets of its pod-facing links), every node's
/// address, the pools and cluster networks, and which peers are nodes.
async fn guard(
    view: &dyn NodeView,
    nodes: &[NodeSettings],
    pools: &[Pool],
    kinds: &BTreeMap<IpAddr, PeerKind>,
    s: &Settings,
) -> plexus_bgp::Guard {
    let addrs = match view.addresses().await {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "listing the node's addresses for the BGP guard");
            Vec::new()
        }
    };
    let pod_side = |link: &str| {
        link == "cni0"
            || link.starts_with("flannel.")
            || link.starts_with("flannel-v6.")
            || link == encap::TUNNEL_DEV
            || link.starts_with("plx")
            || link.starts_with("veth")
    };
    let mut g = plexus_bgp::Guard::default();
    for (net, link) in &addrs {
        g.own_addresses.insert(net.addr());
        let host = net.prefix_len() == net.max_prefix_len();
        if !host && !pod_side(link) && !net.addr().is_loopback() {
            g.connected.insert(net.trunc());
        }
    }
    g.own_addresses.insert(IpAddr::V4(s.public_ip));
    g.node_addresses = nodes.iter().filter_map(|n| n.address).collect();
    g.node_addresses.insert(IpAddr::V4(s.public_ip));
    g.pools = pools
        .iter()
        .map(|p| p.cidr)
        .chain(s.cluster_networks.iter().copied())
        .collect();
    g.peers = kinds
        .iter()
        .map(|(a, k)| {
            let kind = match k {
                PeerKind::Mesh | PeerKind::RrClient | PeerKind::RouteReflector => {
                    plexus_bgp::policy::PeerKind::Plexus
                }
                PeerKind::Global | PeerKind::NodeSpecific => plexus_bgp::policy::PeerKind::External,
            };
            (*a, kind)
        })
        .collect();
    g
}

/// A new guard for the speaker when anything it rests on changed (the
/// speaker re-judges every stored route at once).
async fn update_guard(
    speaker: &Speaker,
    view: &dyn NodeView,
    nodes: &[NodeSettings],
    pools: &[Pool],
    kinds: &BTreeMap<IpAddr, PeerKind>,
    s: &Settings,
) {
    let g = guard(view, nodes, pools, kinds, s).await;
    if let Err(e) = speaker.set_guard(g).await {
        tracing::warn!(error = %e, "setting the BGP import guard");
    }
}

/// The prefixes no pool may overlap: the node's underlay subnet and every
/// node's address.
fn protected(underlay: Option<IpNet>, me: IpAddr, nodes: &[NodeSettings]) -> Vec<IpNet> {
    underlay
        .into_iter()
        .chain(
            nodes
                .iter()
                .filter_map(|n| n.address)
                .chain([me])
                .map(IpNet::from),
        )
        .collect()
}

/// The encapsulation policy from the store's pools and nodes, with the
/// tunnel device brought in line first (a failure is counted and logged,
/// and the routes stay direct until the device is up).
async fn encap_policy(
    tunnel: &Tunnel,
    pools: &[Pool],
    nodes: &[NodeSettings],
    status: &Shared,
) -> Policy {
    let want = Policy::new(pools, nodes, tunnel.own_subnet());
    let (policy, r) = tunnel.sync(want, pools).await;
    if let Err(e) = r {
        status.programming_failed(1);
        tracing::error!(error = %format!("{e:#}"), "IP-in-IP tunnel: routes stay direct");
    }
    policy
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

/// Keeps the speaker's neighbours equal to what the store says, and its
/// route-reflector cluster ID: a change of our AS or cluster ID in the
/// store re-establishes the sessions, no restart needed.
pub struct Follower {
    pub cluster: Cluster,
    pub node: String,
    pub address: IpAddr,
    pub speaker: Arc<dyn Announcer>,
    pub table: PeerTable,
    /// Our AS as last applied (shared with `bgp_status`).
    pub asn: Arc<AtomicU32>,
    /// The speaker's cluster ID now.
    pub cluster_id: Option<Ipv4Addr>,
    /// Until then peers whose record is missing are kept (the store was
    /// reset and the nodes are writing their records back).
    pub keep_missing_until: Option<std::time::Instant>,
    /// Reads the Secrets peers' passwords refer to (Kubernetes mode).
    pub secrets: Option<Arc<dyn secrets::SecretReader>>,
}

impl Follower {
    /// Each configured neighbour's kind.
    pub fn kinds(&self) -> BTreeMap<IpAddr, PeerKind> {
        self.table
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(a, d)| (*a, d.kind))
            .collect()
    }

    /// One round: read the BGP config, nodes and peers; add and remove
    /// the speaker's peers to match. Returns the nodes read.
    pub async fn peers(&mut self) -> anyhow::Result<Vec<NodeSettings>> {
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
        let lookups = self.lookups(&bgp, &explicit).await?;
        let want = peers::desired(&me, &bgp, &nodes, &explicit, &lookups);
        let have = self.table.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let new_id = me.cluster_id != self.cluster_id;
        if new_id {
            self.speaker.set_cluster_id(me.cluster_id).await?;
            tracing::info!(cluster_id = ?me.cluster_id, "route-reflector cluster ID changed: sessions re-established");
            self.cluster_id = me.cluster_id;
        }
        let old_as = self.asn.swap(me.asn, Ordering::SeqCst);
        if old_as != me.asn {
            tracing::info!(
                asn = me.asn,
                previous = old_as,
                "our AS changed: sessions re-established"
            );
        }
        let grace = self
            .keep_missing_until
            .is_some_and(|t| std::time::Instant::now() < t);
        for (addr, d) in &have {
            if grace && !new_id && !want.contains_key(addr) {
                continue;
            }
            let Some(w) = want.get(addr).filter(|_| !new_id) else {
                self.speaker.remove_peer(*addr).await?;
                self.table
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(addr);
                tracing::info!(peer = %addr, "BGP peer removed");
                continue;
            };
            if w.config != d.config {
                // The speaker resets the session only when more than its
                // policy (filters, communities, prefix limit) changed.
                self.speaker.update_peer(w.config.clone()).await?;
                tracing::info!(peer = %addr, "BGP peer settings changed");
            }
            if w.problem != d.problem {
                if let Some(why) = &w.problem {
                    tracing::warn!(peer = %addr, problem = %why, "BGP peer settings cannot be applied as written");
                }
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
                if let Some(why) = &d.problem {
                    tracing::warn!(peer = %addr, problem = %why, "BGP peer settings cannot be applied as written");
                }
            }
            self.table
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(addr, d);
        }
        Ok(nodes)
    }

    /// The filters, and the passwords of the Secrets the peers and the
    /// mesh refer to.
    async fn lookups(
        &self,
        bgp: &plexus_ipam::BgpConfig,
        explicit: &[plexus_ipam::Peer],
    ) -> anyhow::Result<peers::Lookups> {
        let mut l = peers::Lookups {
            filters: self.cluster.filters().await?,
            ..Default::default()
        };
        let refs = explicit
            .iter()
            .map(|p| &p.settings)
            .chain([&bgp.mesh])
            .filter_map(|s| s.password.as_ref()?.secret_key_ref.as_ref());
        for r in refs {
            let key = peers::secret_key(r);
            if l.secrets.contains_key(&key) {
                continue;
            }
            let got = match &self.secrets {
                None => Err("no Kubernetes API to read Secrets from (plexusd runs with --store kubernetes or --kubeconfig for that)".to_string()),
                Some(reader) => match reader.read(&key.0, &key.1, &key.2).await {
                    Ok(Some(v)) => Ok(v),
                    Ok(None) => Err("no such Secret or key".to_string()),
                    Err(e) => Err(format!("{e:#}")),
                },
            };
            l.secrets.insert(key, got);
        }
        Ok(l)
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
