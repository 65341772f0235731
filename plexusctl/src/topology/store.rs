//! What the cluster store says: the overlay's config and leases (flannel's
//! layout, through plexus-store's registry) and the routed network's pools,
//! blocks, nodes, BGP settings and peers (plexus-ipam). Every part that
//! cannot be read becomes a warning; the rest is still returned.

use plexus_ipam::{BgpConfig, BlockUsage, NodeSettings, Peer};
use plexus_subnet::registry::{KvLeaseRegistry, LeaseRegistry};

use crate::routed::StoreArgs;

use super::model::{Bgp, Overlay};

/// One overlay lease: who holds which subnet.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseView {
    pub public_ip: Option<String>,
    pub subnet: String,
}

/// The store's records, as read.
#[derive(Debug, Clone, Default)]
pub struct StoreView {
    pub overlay: Option<Overlay>,
    pub leases: Vec<LeaseView>,
    pub pools: Vec<String>,
    pub bgp: Option<Bgp>,
    pub nodes: Vec<NodeSettings>,
    pub peers: Vec<Peer>,
    pub blocks: Vec<BlockUsage>,
    pub warnings: Vec<String>,
}

/// Read everything; `etcd_prefix` is the overlay's (flannel's) prefix.
pub async fn read(args: &StoreArgs, etcd_prefix: &str) -> StoreView {
    let mut v = StoreView::default();
    let Some(url) = args.url() else {
        v.warnings
            .push("no --store given: no leases, blocks or BGP settings".into());
        return v;
    };
    let kv = match args.open_kv().await {
        Ok(kv) => kv,
        Err(e) => {
            v.warnings.push(format!("store {url}: {e:#}"));
            return v;
        }
    };
    let leases = KvLeaseRegistry::new(kv.clone(), etcd_prefix);
    match leases.network_config().await {
        Ok(c) => {
            v.overlay = Some(Overlay {
                network: c.network.map_or_else(
                    || c.ipv6_network.map_or_else(|| "-".into(), |n| n.to_string()),
                    |n| n.to_string(),
                ),
                backend: c.backend.type_name().into(),
            })
        }
        // No overlay configured is normal for a routed-only cluster.
        Err(plexus_store::StoreError::NoConfig(_)) => {}
        Err(e) => v.warnings.push(format!("overlay config: {e}")),
    }
    match leases.list().await {
        Ok(s) => {
            v.leases = s
                .leases
                .iter()
                .map(|l| LeaseView {
                    public_ip: l
                        .attrs
                        .public_ip
                        .map(|ip| ip.to_string())
                        .or_else(|| l.attrs.public_ipv6.map(|ip| ip.to_string())),
                    subnet: match (l.subnet, l.subnet6) {
                        (Some(s), Some(s6)) => format!("{s} {s6}"),
                        (Some(s), None) => s.to_string(),
                        (None, Some(s6)) => s6.to_string(),
                        (None, None) => "-".into(),
                    },
                })
                .collect()
        }
        Err(e) => v.warnings.push(format!("overlay leases: {e}")),
    }
    let cluster = args.cluster(kv);
    match cluster.usage().await {
        Ok(u) => {
            v.pools = u
                .pools
                .iter()
                .map(|p| format!("{} {}", p.pool, p.cidr))
                .collect();
            v.blocks = u.blocks;
        }
        Err(e) => v.warnings.push(format!("routed pools and blocks: {e}")),
    }
    // BGP settings matter only when there is a routed network.
    if !v.pools.is_empty() {
        match cluster.bgp_config().await {
            Ok(BgpConfig {
                asn,
                node_to_node_mesh,
                ..
            }) => {
                v.bgp = Some(Bgp {
                    asn,
                    mesh: node_to_node_mesh,
                })
            }
            Err(e) => v.warnings.push(format!("BGP config: {e}")),
        }
    }
    match cluster.nodes().await {
        Ok(n) => v.nodes = n,
        Err(e) => v.warnings.push(format!("routed nodes: {e}")),
    }
    match cluster.peers().await {
        Ok(p) => v.peers = p,
        Err(e) => v.warnings.push(format!("BGP peers: {e}")),
    }
    v
}
