//! The control socket's routed commands: `allocate`, `release`, `gc`
//! (plexus-bgp-routes' block IPAM) and `bgp_status` (`plexusctl bgp
//! status`). Addresses come from this node's [`Allocator`]; a new block
//! is blackholed and announced before the address is handed out.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use plexus_agent_api::{Allocation, BgpPeer, BgpStatus, Cidr, GcDone, Released, Request};
use plexus_cni::error::ErrorCode;
use plexus_ipam::{Allocator, Cluster, Encap, Handle, IpamError, Pool};
use serde_json::{json, Value};

use super::blocks::Blocks;
use super::PeerTable;
use crate::answer::{self, error};
use crate::ctlsock::Handler;

pub struct RoutedHandler {
    pub cluster: Cluster,
    /// The pools as last read (the control loop refreshes them), so an ADD
    /// whose block has room costs one store write and no read.
    pub pools: PoolCache,
    pub alloc: Arc<Allocator>,
    pub blocks: Arc<Blocks>,
    pub peers: PeerTable,
    /// The BFD sessions (their state in `bgp_status`).
    pub bfd: Option<Arc<super::bfdlink::BfdLink>>,
    pub router_id: String,
    /// The MTU for pods of IP-in-IP pools (the tunnel's).
    pub ipip_mtu: u32,
    /// Our AS now (the peer loop follows the store).
    pub asn: Arc<std::sync::atomic::AtomicU32>,
    /// The store lost the routed network's records: nothing is allocated
    /// or released (code 11) until this node has written its own back.
    pub lost: Arc<std::sync::atomic::AtomicBool>,
}

fn ipam_error(e: &IpamError) -> Value {
    error(e, answer::routed_code(e))
}

/// The pools, shared by the handler and the control loop that re-reads them.
pub type PoolCache = Arc<std::sync::Mutex<Vec<Pool>>>;

/// The pools an attachment draws from: the named one (by name or CIDR),
/// else the first enabled pool of each family.
pub fn pick_pools(pools: &[Pool], wanted: Option<&str>) -> Result<Vec<Pool>, String> {
    let enabled = pools.iter().filter(|p| !p.disabled);
    if let Some(w) = wanted {
        return enabled
            .clone()
            .find(|p| p.name == w || p.cidr.to_string() == w)
            .map(|p| vec![p.clone()])
            .ok_or_else(|| format!("no enabled pool named {w:?}"));
    }
    let mut out: Vec<Pool> = Vec::new();
    for p in enabled {
        if !out
            .iter()
            .any(|o| o.cidr.addr().is_ipv4() == p.cidr.addr().is_ipv4())
        {
            out.push(p.clone());
        }
    }
    if out.is_empty() {
        return Err("no enabled pool in the store (plexusctl pool add)".into());
    }
    Ok(out)
}

/// The enabled pool (the named one, when `wanted` names one) holding a
/// requested address.
pub fn pool_for<'p>(
    pools: &'p [Pool],
    wanted: Option<&str>,
    addr: IpAddr,
) -> Result<&'p Pool, String> {
    pools
        .iter()
        .filter(|p| !p.disabled)
        .filter(|p| wanted.is_none_or(|w| p.name == w || p.cidr.to_string() == w))
        .find(|p| p.cidr.contains(&addr))
        .ok_or_else(|| match wanted {
            Some(w) => format!("the requested address {addr} is not in the enabled pool {w:?}"),
            None => format!("the requested address {addr} is in no enabled pool"),
        })
}

impl RoutedHandler {
    async fn allocate(&self, handle: Handle, pool: Option<String>, requested: &[IpAddr]) -> Value {
        let cached = self.pools.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let (pools, chosen) = match pick_pools(&cached, pool.as_deref()) {
            Ok(c) => (cached, c),
            // A pool added since the last read: ask the store.
            Err(_) => {
                let fresh = match self.cluster.pools().await {
                    Ok(p) => p,
                    Err(e) => return ipam_error(&e),
                };
                match pick_pools(&fresh, pool.as_deref()) {
                    Ok(c) => {
                        *self.pools.lock().unwrap_or_else(|p| p.into_inner()) = fresh.clone();
                        (fresh, c)
                    }
                    Err(e) => return error(e, Some(ErrorCode::InvalidConfig.code())),
                }
            }
        };
        // What to give: the next free address of each chosen pool, or each
        // requested address from the pool holding it.
        let wants: Vec<(String, Option<IpAddr>)> = if requested.is_empty() {
            chosen.iter().map(|p| (p.name.clone(), None)).collect()
        } else {
            let found: Result<Vec<_>, String> = requested
                .iter()
                .map(|a| pool_for(&pools, pool.as_deref(), *a).map(|p| (p.name.clone(), Some(*a))))
                .collect();
            match found {
                Ok(w) => w,
                Err(e) => return error(e, Some(ErrorCode::InvalidConfig.code())),
            }
        };
        let mut addresses = Vec::new();
        for (name, want) in &wants {
            let got = match want {
                None => self.alloc.allocate(&handle, name).await,
                Some(a) => self.alloc.allocate_address(&handle, name, *a).await,
            };
            match got {
                Ok(ip) => addresses.push(Cidr::host(ip)),
                Err(e) => {
                    // Nothing half-given: the other family's address goes too.
                    let _ = self.alloc.release(&handle).await;
                    return ipam_error(&e);
                }
            }
        }
        // A block claimed just now must be routable before a pod uses it.
        if let Err(e) = self.blocks.sync(self.alloc.blocks().await).await {
            tracing::warn!(error = %format!("{e:#}"), "block routes after allocation");
        }
        let tunneled = chosen
            .iter()
            .any(|p| p.cidr.addr().is_ipv4() && !matches!(p.encap, Encap::None));
        let answer = Allocation {
            mtu: tunneled.then_some(self.ipip_mtu),
            addresses,
            pools: pools
                .iter()
                .filter(|p| !p.disabled)
                .filter_map(|p| Cidr::new(p.cidr.addr(), p.cidr.prefix_len()))
                .collect(),
        };
        serde_json::to_value(answer).unwrap_or_else(|e| error(e, None))
    }

    async fn bgp_status(&self) -> Value {
        let kinds = self.peers.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let status = match self.blocks.bgp().peers().await {
            Ok(s) => s,
            Err(e) => return error(e, None),
        };
        let bfd = match &self.bfd {
            Some(b) => b.status().await,
            None => Default::default(),
        };
        let peers = status
            .into_iter()
            .map(|s| {
                let established = s.state == plexus_bgp::fsm::State::Established;
                BgpPeer {
                    address: s.address.to_string(),
                    asn: s.remote_as,
                    kind: kinds
                        .get(&s.address)
                        .map_or("unknown", |d| d.kind.label())
                        .to_string(),
                    state: s.state.to_string(),
                    since: s
                        .since
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs()),
                    info: match (&s.last_error, established) {
                        (_, true) => {
                            let rejected =
                                s.prefixes_rejected_by_guard + s.prefixes_rejected_by_filter;
                            if rejected > 0 {
                                format!(
                                    "{} received ({rejected} rejected), {} sent",
                                    s.prefixes_received, s.prefixes_sent
                                )
                            } else {
                                format!(
                                    "{} received, {} sent",
                                    s.prefixes_received, s.prefixes_sent
                                )
                            }
                        }
                        (Some(e), false) => e.clone(),
                        (None, false) => String::new(),
                    },
                    prefixes_received: s.prefixes_received,
                    prefixes_sent: s.prefixes_sent,
                    prefixes_accepted: s.prefixes_accepted,
                    prefixes_rejected: s.prefixes_rejected_by_guard + s.prefixes_rejected_by_filter,
                    prefixes_rejected_by_guard: s.prefixes_rejected_by_guard,
                    prefixes_rejected_by_filter: s.prefixes_rejected_by_filter,
                    bfd: kinds.get(&s.address).and_then(|d| d.bfd).map(|_| {
                        bfd.get(&s.address)
                            .map_or("starting".to_string(), |b| format!("{:?}", b.session.state))
                    }),
                    last_error: {
                        let problem = kinds.get(&s.address).and_then(|d| d.problem.clone());
                        match (s.last_error.clone(), problem) {
                            (Some(e), Some(p)) => Some(format!("{e}; {p}")),
                            (e, p) => e.or(p),
                        }
                    },
                }
            })
            .collect();
        serde_json::to_value(BgpStatus {
            router_id: self.router_id.clone(),
            asn: self.asn.load(std::sync::atomic::Ordering::SeqCst),
            peers,
        })
        .unwrap_or_else(|e| error(e, None))
    }
}

impl RoutedHandler {
    async fn bgp_routes(&self, peer: Option<IpAddr>) -> Value {
        let entries = match self.blocks.bgp().adj_rib_in(peer).await {
            Ok(e) => e,
            Err(e) => return error(e, None),
        };
        serde_json::to_value(plexus_agent_api::BgpRoutes {
            routes: entries.iter().map(route_row).collect(),
        })
        .unwrap_or_else(|e| error(e, None))
    }
}

/// One received path as `plexusctl bgp routes` shows it.
pub fn route_row(e: &plexus_bgp::AdjRibInEntry) -> plexus_agent_api::BgpRoute {
    let a = &e.attrs;
    let communities = a
        .communities
        .iter()
        .map(|c| plexus_bgp::Community(*c).to_string())
        .chain(a.large_communities.iter().map(ToString::to_string))
        .collect();
    let as_path = a
        .as_path
        .iter()
        .flat_map(|seg| seg.asns.iter().copied())
        .collect();
    let (verdict, stage, reason) = match e.verdict.reason() {
        None => ("accepted", None, None),
        Some(r) => (
            "rejected",
            Some(match r.stage() {
                plexus_bgp::policy::Stage::Guard => "guard",
                plexus_bgp::policy::Stage::Filter => "filter",
            }),
            Some(r.to_string()),
        ),
    };
    plexus_agent_api::BgpRoute {
        peer: e.peer.to_string(),
        prefix: e.prefix.to_string(),
        next_hop: a.next_hop.map(|n| n.to_string()),
        as_path,
        communities,
        verdict: verdict.into(),
        stage: stage.map(String::from),
        reason,
        best: e.best,
        multipath: e.multipath,
        stale: e.stale,
    }
}

#[async_trait::async_trait]
impl Handler for RoutedHandler {
    async fn handle(&self, request: Request) -> Value {
        let asks_ipam = matches!(
            request,
            Request::Allocate { .. } | Request::Release { .. } | Request::Gc { .. }
        );
        if asks_ipam && self.lost.load(std::sync::atomic::Ordering::SeqCst) {
            return error(
                "the store lost the routed network's records; this node is writing its own back",
                Some(ErrorCode::TryAgainLater.code()),
            );
        }
        match request {
            Request::Allocate {
                network,
                container_id,
                ifname,
                pool,
                addresses,
            } => {
                self.allocate(
                    Handle::new(&network, &container_id, &ifname),
                    pool,
                    &addresses,
                )
                .await
            }
            Request::Release {
                network,
                container_id,
                ifname,
            } => match self
                .alloc
                .release(&Handle::new(&network, &container_id, &ifname))
                .await
            {
                Ok(released) => json!(Released { released }),
                Err(e) => ipam_error(&e),
            },
            Request::Gc { network, valid } => {
                let valid: HashSet<Handle> = valid
                    .iter()
                    .map(|k| Handle::new(&network, &k.container_id, &k.ifname))
                    .collect();
                match self.alloc.gc(&network, &valid).await {
                    Ok(released) => json!(GcDone { released }),
                    Err(e) => ipam_error(&e),
                }
            }
            Request::BgpStatus => self.bgp_status().await,
            Request::BgpRoutes(q) => self.bgp_routes(q.peer).await,
            Request::Status => error("status is answered by the control socket", None),
            // Cluster IPAM has its own handler (crate::clusteripam).
            _ => error(
                "this request is not served by the routed network",
                Some(crate::ctlsock::CODE_TRY_AGAIN),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::fake::FakeKernel;
    use crate::routed::fakes::{data_plane, prefixes, FakeBgp};
    use crate::routed::kernel::PROTO_BLOCK;
    use plexus_agent_api::AttachmentKey;

    async fn handler(dir: &std::path::Path) -> (RoutedHandler, FakeKernel, Arc<FakeBgp>) {
        let kv = plexus_store::FileKv::open(&dir.join("store")).unwrap();
        let cluster = Cluster::new(Arc::new(kv), plexus_ipam::Layout::default());
        cluster
            .add_pool(&pool("p", "10.96.0.0/16", false))
            .await
            .unwrap();
        let alloc = Arc::new(Allocator::load(cluster.clone(), "n1").await.unwrap());
        let (dp, routes) = data_plane();
        let bgp = Arc::new(FakeBgp::default());
        let blocks = Arc::new(Blocks::new(dp, bgp.clone()).await.unwrap());
        let h = RoutedHandler {
            cluster,
            pools: PoolCache::default(),
            alloc,
            blocks,
            peers: PeerTable::default(),
            bfd: None,
            router_id: "10.0.0.1".into(),
            ipip_mtu: 1480,
            asn: Arc::new(64512.into()),
            lost: Arc::default(),
        };
        (h, routes, bgp)
    }

    fn allocate(c: &str) -> Request {
        Request::Allocate {
            network: "routed".into(),
            container_id: c.into(),
            ifname: "eth0".into(),
            pool: None,
            addresses: Vec::new(),
        }
    }

    #[tokio::test]
    async fn requested_addresses_are_given_or_refused_with_a_code() {
        let dir = tempfile::tempdir().unwrap();
        let (h, routes, _bgp) = handler(dir.path()).await;
        let ask = |c: &str, a: &str| Request::Allocate {
            network: "routed".into(),
            container_id: c.into(),
            ifname: "eth0".into(),
            pool: None,
            addresses: vec![a.parse().unwrap()],
        };
        let a = h.handle(ask("c1", "10.96.1.70")).await;
        assert_eq!(a["addresses"], json!(["10.96.1.70/32"]), "{a}");
        assert_eq!(prefixes(&routes, PROTO_BLOCK), ["10.96.1.64/26"]);
        assert_eq!(h.handle(ask("c1", "10.96.1.70")).await, a);
        let taken = h.handle(ask("c2", "10.96.1.70")).await;
        assert_eq!(taken["code"], 102, "{taken}");
        let outside = h.handle(ask("c2", "192.0.2.1")).await;
        assert_eq!(outside["code"], 7, "{outside}");
        assert!(outside["error"]
            .as_str()
            .unwrap()
            .contains("no enabled pool"));
    }

    #[tokio::test]
    async fn allocate_is_idempotent_and_routes_the_block_first() {
        let dir = tempfile::tempdir().unwrap();
        let (h, routes, bgp) = handler(dir.path()).await;
        let a = h.handle(allocate("c1")).await;
        assert_eq!(a["addresses"], json!(["10.96.0.0/32"]), "{a}");
        assert_eq!(a["pools"], json!(["10.96.0.0/16"]));
        assert!(a.get("mtu").is_none(), "no MTU without IP-in-IP: {a}");
        assert_eq!(prefixes(&routes, PROTO_BLOCK), ["10.96.0.0/26"]);
        assert_eq!(bgp.originated(), ["10.96.0.0/26"]);
        assert_eq!(h.handle(allocate("c1")).await, a);
        let b = h.handle(allocate("c2")).await;
        assert_eq!(b["addresses"], json!(["10.96.0.1/32"]));
        let r = h
            .handle(Request::Release {
                network: "routed".into(),
                container_id: "c1".into(),
                ifname: "eth0".into(),
            })
            .await;
        assert_eq!(r, json!({"released": 1}));
        h.handle(allocate("c3")).await;
        let gc = h
            .handle(Request::Gc {
                network: "routed".into(),
                valid: vec![AttachmentKey {
                    container_id: "c3".into(),
                    ifname: "eth0".into(),
                }],
            })
            .await;
        assert_eq!(gc, json!({"released": 1}));
        // The block stays with the node (aggregated routes stay stable).
        assert_eq!(prefixes(&routes, PROTO_BLOCK), ["10.96.0.0/26"]);
    }

    #[tokio::test]
    async fn an_ipip_pool_gives_the_tunnel_mtu() {
        let dir = tempfile::tempdir().unwrap();
        let (h, _, _) = handler(dir.path()).await;
        let mut p = pool("tun", "10.98.0.0/16", false);
        p.encap = Encap::IpipCrossSubnet;
        h.cluster.add_pool(&p).await.unwrap();
        let mut req = allocate("c1");
        if let Request::Allocate { pool, .. } = &mut req {
            *pool = Some("tun".into());
        }
        let a = h.handle(req).await;
        assert_eq!(a["mtu"], 1480, "{a}");
    }

    #[tokio::test]
    async fn a_missing_pool_is_a_config_error() {
        let dir = tempfile::tempdir().unwrap();
        let (h, routes, _) = handler(dir.path()).await;
        let mut req = allocate("c1");
        if let Request::Allocate { pool, .. } = &mut req {
            *pool = Some("nope".into());
        }
        let e = h.handle(req).await;
        assert_eq!(e["code"], json!(ErrorCode::InvalidConfig.code()), "{e}");
        assert!(prefixes(&routes, PROTO_BLOCK).is_empty());
    }

    fn pool(name: &str, cidr: &str, disabled: bool) -> Pool {
        Pool {
            name: name.into(),
            cidr: cidr.parse().unwrap(),
            block_size: 26,
            nat_outgoing: false,
            encap: Default::default(),
            disabled,
        }
    }

    #[test]
    fn default_pools_one_per_family() {
        let pools = [
            pool("off", "10.1.0.0/16", true),
            pool("a", "10.2.0.0/16", false),
            pool("b", "10.3.0.0/16", false),
            pool("v6", "fd00::/64", false),
        ];
        let names = |r: Result<Vec<Pool>, String>| {
            r.unwrap().into_iter().map(|p| p.name).collect::<Vec<_>>()
        };
        assert_eq!(names(pick_pools(&pools, None)), ["a", "v6"]);
        assert_eq!(names(pick_pools(&pools, Some("b"))), ["b"]);
        assert_eq!(names(pick_pools(&pools, Some("10.3.0.0/16"))), ["b"]);
        assert!(pick_pools(&pools, Some("off")).is_err());
        assert!(pick_pools(&[], None).unwrap_err().contains("pool add"));
    }
}
