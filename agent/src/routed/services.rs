//! Service advertisement (Calico's BGPConfiguration serviceClusterIPs,
//! serviceExternalIPs, serviceLoadBalancerIPs): every node announces the
//! configured ranges to its external peers, with the communities of the
//! prefixAdvertisements. The ranges are never exported to other nodes
//! ([`mesh_filter`]): each node reaches services through its own
//! kube-proxy, and a node's route to a service range would pull that
//! traffic to another node.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use ipnet::IpNet;
use plexus_bgp::policy::{FilterAction, FilterRule, MatchOperator};
use plexus_bgp::{BgpFilter, CommunitySet};
use plexus_ipam::BgpConfig;
use tokio::sync::Mutex;

use super::bgp::Announcer;

/// The name of the filter that keeps service ranges off node sessions.
pub const MESH_FILTER: &str = "plexus-services-not-to-nodes";

pub struct Services {
    bgp: Arc<dyn Announcer>,
    announced: Mutex<BTreeMap<IpNet, CommunitySet>>,
    /// The config last synced, and the Local services' host routes this
    /// node announces (Kubernetes mode, [`super::svclocal`]).
    state: std::sync::Mutex<(BgpConfig, BTreeSet<IpNet>)>,
}

/// What `cfg` says to announce, with communities, and `local` (host
/// routes of Local services with an endpoint here).
pub fn wanted(cfg: &BgpConfig, local: &BTreeSet<IpNet>) -> BTreeMap<IpNet, CommunitySet> {
    cfg.service_ranges()
        .map(|(_, net)| *net)
        .chain(local.iter().copied())
        .map(|net| (net, cfg.communities_for(&net)))
        .collect()
}

/// Rejects the service ranges (and anything inside them) both ways, for
/// the sessions between nodes; None without service ranges.
pub fn mesh_filter(cfg: &BgpConfig) -> Option<BgpFilter> {
    let mut f = BgpFilter {
        name: MESH_FILTER.into(),
        ..Default::default()
    };
    for (_, net) in cfg.service_ranges() {
        let r = FilterRule::new(FilterAction::Reject).cidr(MatchOperator::In, *net);
        match net {
            IpNet::V4(_) => {
                f.export_v4.push(r.clone());
                f.import_v4.push(r);
            }
            IpNet::V6(_) => {
                f.export_v6.push(r.clone());
                f.import_v6.push(r);
            }
        }
    }
    let any = !(f.export_v4.is_empty() && f.export_v6.is_empty());
    any.then_some(f)
}

impl Services {
    pub fn new(bgp: Arc<dyn Announcer>) -> Services {
        Services {
            bgp,
            announced: Mutex::new(BTreeMap::new()),
            state: Default::default(),
        }
    }

    /// The Local services' host routes to announce from now on.
    pub async fn set_local(&self, local: BTreeSet<IpNet>) {
        let cfg = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if st.1 == local {
                return;
            }
            st.1 = local;
            st.0.clone()
        };
        self.sync(&cfg).await;
    }

    /// Announce what `cfg` says (and the Local services' host routes),
    /// withdraw the rest.
    pub async fn sync(&self, cfg: &BgpConfig) {
        let want = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            st.0 = cfg.clone();
            wanted(cfg, &st.1)
        };
        let mut have = self.announced.lock().await;
        let gone: Vec<IpNet> = have
            .keys()
            .filter(|n| !want.contains_key(n))
            .copied()
            .collect();
        for n in gone {
            match self.bgp.withdraw(n).await {
                Ok(()) => {
                    have.remove(&n);
                    tracing::info!(range = %n, "service range no longer announced");
                }
                Err(e) => tracing::warn!(range = %n, error = %e, "withdrawing a service range"),
            }
        }
        for (n, c) in want {
            if have.get(&n) == Some(&c) {
                continue;
            }
            match self.bgp.originate_with(n, c.clone()).await {
                Ok(()) => {
                    tracing::info!(range = %n, "service range announced");
                    have.insert(n, c);
                }
                Err(e) => tracing::warn!(range = %n, error = %e, "announcing a service range"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routed::fakes::FakeBgp;

    #[tokio::test]
    async fn ranges_follow_the_config_and_stay_off_node_sessions() {
        let bgp = Arc::new(FakeBgp::default());
        let s = Services::new(bgp.clone());
        let mut cfg = BgpConfig {
            service_cluster_ips: vec!["10.96.0.0/12".parse().unwrap()],
            service_external_ips: vec!["192.0.2.0/24".parse().unwrap()],
            ..Default::default()
        };
        s.sync(&cfg).await;
        assert_eq!(bgp.originated(), ["10.96.0.0/12", "192.0.2.0/24"]);
        let f = mesh_filter(&cfg).unwrap();
        assert_eq!((f.export_v4.len(), f.import_v4.len()), (2, 2));
        cfg.service_external_ips.clear();
        s.sync(&cfg).await;
        assert_eq!(bgp.originated(), ["10.96.0.0/12"]);
        cfg.service_cluster_ips.clear();
        s.sync(&cfg).await;
        assert!(bgp.originated().is_empty());
        s.set_local(["192.0.2.7/32".parse().unwrap()].into()).await;
        assert_eq!(bgp.originated(), ["192.0.2.7/32"]);
        s.set_local(BTreeSet::new()).await;
        assert!(bgp.originated().is_empty());
        assert!(mesh_filter(&cfg).is_none());
    }
}
