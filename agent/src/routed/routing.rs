//! The routing component: the speaker's best-route changes, in order, into
//! the data plane as learned routes (proto 114 at the learned metric; next
//! hop as learned, through the IP-in-IP tunnel where the [`Policy`] says
//! so; several next hops as one multipath route for ECMP; a new policy
//! moves the routes it changes); and after a restart, the purge of the
//! previous run's routes no peer confirmed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use plexus_bgp::{RouteChange, RouteFeed};
use tokio::sync::Mutex;

use super::bgp::Announcer;
use super::encap::{Hop, Policy, TUNNEL_DEV};
use super::kernel::{LEARNED_METRIC, PROTO_BGP};
use crate::dataplane::{self, DataPlane, Entry, Key, Owner};
use crate::status::{Event, Shared};

/// At most this many changes per data plane call.
const MAX_BATCH: usize = 10_000;

#[derive(Clone)]
pub struct Routing {
    dp: DataPlane,
    status: Shared,
    /// What the feed installed: prefix → how (one hop per next hop). Its
    /// lock also orders the changes (feed rounds and policy changes).
    installed: Arc<Mutex<BTreeMap<IpNet, Vec<Hop>>>>,
    /// The next hops as learned, before the policy made hops of them.
    learned: Arc<Mutex<BTreeMap<IpNet, Vec<IpAddr>>>>,
    policy: Arc<std::sync::Mutex<Policy>>,
}

/// The learned route to `prefix` through `hops`.
pub fn route_entry(prefix: IpNet, hops: &[Hop]) -> Entry {
    let mut r = dataplane::Route {
        table: dataplane::entry::MAIN,
        dst: prefix.trunc(),
        metric: LEARNED_METRIC,
        proto: Some(PROTO_BGP),
        blackhole: false,
        hops: Vec::new(),
    };
    for h in hops {
        let hop = dataplane::Hop::via(h.next_hop);
        r.hops.push(if h.tunnel {
            hop.dev(TUNNEL_DEV).onlink()
        } else {
            hop
        });
    }
    Entry::Route(r)
}

fn route_key(prefix: IpNet) -> Key {
    Key::Route {
        table: dataplane::entry::MAIN,
        dst: prefix.trunc(),
        metric: LEARNED_METRIC,
    }
}

impl Routing {
    pub fn new(dp: DataPlane, status: Shared, policy: Policy) -> Routing {
        Routing {
            dp,
            status,
            installed: Arc::default(),
            learned: Arc::default(),
            policy: Arc::new(std::sync::Mutex::new(policy)),
        }
    }

    /// Takes a new encapsulation policy (pools, nodes or the tunnel
    /// changed): the installed routes whose hop it changes move at once.
    pub async fn set_policy(&self, policy: Policy) {
        let learned = self.learned.lock().await;
        {
            let mut p = self.policy.lock().unwrap_or_else(|p| p.into_inner());
            if *p == policy {
                return;
            }
            *p = policy.clone();
        }
        let installed = self.installed.lock().await;
        let moved: Vec<(IpNet, Option<Vec<IpAddr>>)> = learned
            .iter()
            .filter(|(prefix, nhs)| {
                let hops: Vec<Hop> = nhs.iter().map(|nh| policy.hop(prefix, *nh)).collect();
                installed.get(*prefix) != Some(&hops)
            })
            .map(|(prefix, nhs)| (*prefix, Some(nhs.clone())))
            .collect();
        drop(installed);
        drop(learned);
        if !moved.is_empty() {
            tracing::info!(routes = moved.len(), "encapsulation changed: routes move");
            self.program(moved, Instant::now()).await;
        }
    }

    /// Applies the feed until it ends (the speaker stopped). What has
    /// arrived together (a peer's whole table) goes in one call.
    pub async fn follow(self, mut feed: RouteFeed) {
        while let Some(first) = feed.recv().await {
            let mut changes = vec![first];
            while changes.len() < MAX_BATCH {
                match feed.try_recv() {
                    Ok(c) => changes.push(c),
                    Err(_) => break,
                }
            }
            self.apply(changes).await;
        }
    }

    /// Changes into the data plane, the last one per prefix.
    pub async fn apply(&self, changes: Vec<RouteChange>) {
        let started = Instant::now();
        let last: BTreeMap<IpNet, Option<Vec<IpAddr>>> = changes
            .into_iter()
            .map(|c| {
                let hops = c.route.map(|r| {
                    if r.next_hops.is_empty() {
                        vec![r.next_hop]
                    } else {
                        r.next_hops
                    }
                });
                (c.prefix, hops)
            })
            .collect();
        self.program(last.into_iter().collect(), started).await;
    }

    /// Next hops into the data plane, each made a [`Hop`] by the policy of
    /// now (read under the lock that orders the changes, so a policy
    /// change never loses to a feed round that read the old one).
    async fn program(&self, next_hops: Vec<(IpNet, Option<Vec<IpAddr>>)>, started: Instant) {
        let mut learned = self.learned.lock().await;
        let mut installed = self.installed.lock().await;
        let (mut put, mut remove) = (Vec::new(), Vec::new());
        {
            let policy = self.policy.lock().unwrap_or_else(|p| p.into_inner());
            for (prefix, nhs) in next_hops {
                match nhs {
                    Some(nhs) => {
                        let hops: Vec<Hop> =
                            nhs.iter().map(|nh| policy.hop(&prefix, *nh)).collect();
                        put.push(route_entry(prefix, &hops));
                        installed.insert(prefix, hops);
                        learned.insert(prefix, nhs);
                    }
                    None => {
                        remove.push(route_key(prefix));
                        installed.remove(&prefix);
                        learned.remove(&prefix);
                    }
                }
            }
        }
        let changes = put.len() + remove.len();
        let o = self.dp.update(Owner::Learned, put, remove).await;
        drop(installed);
        drop(learned);
        self.status.programmed_in(started.elapsed());
        self.status.dataplane_errors(o.failed.len());
        self.status.count(Event::NotOurs, o.not_ours.len() as u64);
        for k in &o.not_ours {
            tracing::warn!(key = %k, "learned route not installed: a route that is not ours holds its place");
        }
        for (k, why) in &o.failed {
            tracing::warn!(key = %k, error = %why, "route change refused; the data plane retries it");
        }
        tracing::debug!(changes, failed = o.failed.len(), "routes programmed");
    }

    /// After a restart the kernel still holds the previous run's routes
    /// (graceful restart: forwarding went on; the data plane keeps them
    /// as adopted). Once every peer has sent its End-of-RIB (or after
    /// `wait`), those the new RIB did not install again are stale: remove
    /// them.
    pub async fn purge_after_sync(
        self,
        bgp: Arc<dyn Announcer>,
        previous: BTreeSet<IpNet>,
        wait: Duration,
    ) {
        if previous.is_empty() {
            return;
        }
        let deadline = Instant::now() + wait;
        loop {
            let synced = match bgp.peers().await {
                Ok(peers) => peers.iter().all(|p| p.synced),
                Err(_) => return,
            };
            if synced || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let installed = self.installed.lock().await;
        let stale: Vec<IpNet> = previous
            .into_iter()
            .filter(|p| !installed.contains_key(p))
            .collect();
        drop(installed);
        if stale.is_empty() {
            return;
        }
        for p in &stale {
            tracing::info!(prefix = %p, "stale route of the previous run removed");
        }
        self.dp
            .update(
                Owner::Learned,
                Vec::new(),
                stale.into_iter().map(route_key).collect(),
            )
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routed::fakes::{best, data_plane, net, prefixes, table, FakeBgp};

    #[tokio::test]
    async fn changes_become_routes_with_our_protocol() {
        let (dp, k) = data_plane();
        let status = Shared::default();
        let r = Routing::new(dp, status.clone(), Policy::default());
        r.apply(vec![best("10.96.0.64/26", Some("10.0.0.2"))]).await;
        // In one batch the last change of a prefix wins.
        r.apply(vec![
            best("198.51.100.0/24", Some("10.0.0.9")),
            best("10.96.0.64/26", Some("10.0.0.4")),
            best("10.96.0.64/26", Some("10.0.0.3")),
        ])
        .await;
        assert_eq!(
            table(&k, PROTO_BGP),
            [
                ("10.96.0.64/26".to_string(), Some("10.0.0.3".to_string())),
                ("198.51.100.0/24".to_string(), Some("10.0.0.9".to_string()))
            ]
        );
        r.apply(vec![best("198.51.100.0/24", None)]).await;
        assert_eq!(prefixes(&k, PROTO_BGP), ["10.96.0.64/26"]);
        assert_eq!(status.rounds(), 3);
        // A refused change is counted; the data plane keeps trying it.
        k.fail(true);
        r.apply(vec![best("192.0.2.0/24", Some("10.0.0.9"))]).await;
        assert!(!prefixes(&k, PROTO_BGP).contains(&"192.0.2.0/24".to_string()));
        k.fail(false);
        for _ in 0..300 {
            if prefixes(&k, PROTO_BGP).contains(&"192.0.2.0/24".to_string()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(prefixes(&k, PROTO_BGP).contains(&"192.0.2.0/24".to_string()));
    }

    #[tokio::test]
    async fn equal_paths_are_one_multipath_route() {
        let (dp, k) = data_plane();
        let r = Routing::new(dp, Shared::default(), Policy::default());
        let mut c = best("198.51.100.0/24", Some("10.0.0.2"));
        c.route.as_mut().unwrap().next_hops =
            vec!["10.0.0.2".parse().unwrap(), "10.0.0.3".parse().unwrap()];
        r.apply(vec![c]).await;
        assert_eq!(
            table(&k, PROTO_BGP),
            [(
                "198.51.100.0/24".to_string(),
                Some("10.0.0.2,10.0.0.3".to_string())
            )]
        );
    }

    #[tokio::test]
    async fn ipip_routes_go_through_the_tunnel_and_move_with_the_policy() {
        use plexus_ipam::{Encap, NodeSettings, Pool};
        let (dp, k) = data_plane();
        let pool = |encap| Pool {
            name: "p".into(),
            cidr: net("10.96.0.0/16"),
            block_size: 26,
            nat_outgoing: false,
            encap,
            disabled: false,
        };
        let nodes = [NodeSettings {
            name: "n2".into(),
            address: Some("10.0.0.2".parse().unwrap()),
            ..Default::default()
        }];
        let own = Some("10.0.0.1/24".parse().unwrap());
        let ipip = Policy::new(&[pool(Encap::Ipip)], &nodes, own);
        let r = Routing::new(dp, Shared::default(), ipip);
        r.apply(vec![
            best("10.96.0.64/26", Some("10.0.0.2")),
            best("198.51.100.0/24", Some("10.0.0.9")),
        ])
        .await;
        assert_eq!(
            table(&k, PROTO_BGP),
            [
                ("10.96.0.64/26".into(), Some("10.0.0.2 tunl0".into())),
                ("198.51.100.0/24".into(), Some("10.0.0.9".into()))
            ]
        );
        // Cross-subnet: the node shares our subnet, the route moves off
        // the tunnel; the external one is not touched again.
        let calls = k.applied();
        let cross = Policy::new(&[pool(Encap::IpipCrossSubnet)], &nodes, own);
        r.set_policy(cross.clone()).await;
        assert_eq!(
            table(&k, PROTO_BGP)[0],
            ("10.96.0.64/26".into(), Some("10.0.0.2".into()))
        );
        assert_eq!(k.applied(), calls + 1);
        // The same policy again changes nothing.
        r.set_policy(cross).await;
        assert_eq!(k.applied(), calls + 1);
    }

    #[tokio::test]
    async fn purge_waits_for_end_of_rib_then_removes_the_unconfirmed() {
        let (dp, k) = data_plane();
        let hop = |nh: &str| vec![Hop::direct(nh.parse().unwrap())];
        k.put(route_entry(net("10.96.0.64/26"), &hop("10.0.0.2")));
        k.put(route_entry(net("203.0.113.0/24"), &hop("10.0.0.2")));
        let previous: BTreeSet<IpNet> = dp
            .adopt(Owner::Learned)
            .await
            .iter()
            .map(|e| match e {
                Entry::Route(r) => r.dst,
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(previous.len(), 2);
        let bgp = Arc::new(FakeBgp::default());
        bgp.set_synced(false);
        let r = Routing::new(dp, Shared::default(), Policy::default());
        let purge = tokio::spawn(r.clone().purge_after_sync(
            bgp.clone(),
            previous,
            Duration::from_secs(3600),
        ));
        // The peer re-announces one of them; nothing goes before End-of-RIB.
        r.apply(vec![best("10.96.0.64/26", Some("10.0.0.2"))]).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(prefixes(&k, PROTO_BGP).len(), 2);
        bgp.set_synced(true);
        purge.await.unwrap();
        assert_eq!(prefixes(&k, PROTO_BGP), ["10.96.0.64/26"]);
    }
}
