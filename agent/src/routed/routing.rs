//! The routing component: the speaker's best-route changes, in order, into
//! the kernel with our protocol number (next hop as learned, through the
//! IP-in-IP tunnel where the [`Policy`] says so; a new policy moves the
//! installed routes it changes); and after a restart, the purge of the
//! previous run's routes no peer confirmed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use plexus_bgp::{RouteChange, RouteFeed};
use tokio::sync::Mutex;

use super::bgp::Announcer;
use super::encap::{Hop, Policy};
use super::kernel::{BgpChange, RouteTable, PROTO_BGP};

/// At most this many changes per kernel batch.
const MAX_BATCH: usize = 10_000;
use crate::status::{Event, Shared};

#[derive(Clone)]
pub struct Routing {
    routes: Arc<dyn RouteTable>,
    status: Shared,
    /// What the feed installed: prefix → how. Its lock also orders the
    /// kernel changes (feed rounds and policy changes).
    installed: Arc<Mutex<BTreeMap<IpNet, Hop>>>,
    policy: Arc<std::sync::Mutex<Policy>>,
    /// Routes of ours a previous run left in the kernel (graceful
    /// restart): replaced in place when the RIB has them again, removed by
    /// the purge when it does not.
    inherited: Arc<std::sync::Mutex<BTreeSet<IpNet>>>,
}

impl Routing {
    pub fn new(routes: Arc<dyn RouteTable>, status: Shared, policy: Policy) -> Routing {
        Routing {
            routes,
            status,
            installed: Arc::default(),
            policy: Arc::new(std::sync::Mutex::new(policy)),
            inherited: Arc::default(),
        }
    }

    /// Routes of ours in the kernel from a previous run: ours to replace.
    pub fn inherit(self, routes: BTreeSet<IpNet>) -> Routing {
        *self.inherited.lock().unwrap_or_else(|p| p.into_inner()) = routes;
        self
    }

    /// Takes a new encapsulation policy (pools, nodes or the tunnel
    /// changed): the installed routes whose hop it changes move at once.
    pub async fn set_policy(&self, policy: Policy) {
        let installed = self.installed.lock().await;
        {
            let mut p = self.policy.lock().unwrap_or_else(|p| p.into_inner());
            if *p == policy {
                return;
            }
            *p = policy.clone();
        }
        let moved: Vec<(IpNet, Option<IpAddr>)> = installed
            .iter()
            .filter(|(prefix, hop)| policy.hop(prefix, hop.next_hop) != **hop)
            .map(|(prefix, hop)| (*prefix, Some(hop.next_hop)))
            .collect();
        drop(installed);
        if !moved.is_empty() {
            tracing::info!(routes = moved.len(), "encapsulation changed: routes move");
            self.program(moved, Instant::now()).await;
        }
    }

    /// Applies the feed until it ends (the speaker stopped). What has
    /// arrived together (a peer's whole table) goes in one batch.
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

    /// Changes into the kernel, the last one per prefix; failures are
    /// counted and logged (the kernel is compared with the RIB again only
    /// after a restart).
    pub async fn apply(&self, changes: Vec<RouteChange>) {
        let started = Instant::now();
        let last: BTreeMap<IpNet, Option<IpAddr>> = changes
            .into_iter()
            .map(|c| (c.prefix, c.route.map(|r| r.next_hop)))
            .collect();
        self.program(last.into_iter().collect(), started).await;
    }

    /// Next hops into the kernel and into `installed`, each made a [`Hop`]
    /// by the policy of now (read under the lock that orders the changes,
    /// so a policy change never loses to a feed round that read the old one).
    async fn program(&self, next_hops: Vec<(IpNet, Option<IpAddr>)>, started: Instant) {
        let mut installed = self.installed.lock().await;
        let list: Vec<BgpChange> = {
            let policy = self.policy.lock().unwrap_or_else(|p| p.into_inner());
            let inherited = self.inherited.lock().unwrap_or_else(|p| p.into_inner());
            next_hops
                .into_iter()
                .map(|(prefix, nh)| BgpChange {
                    prefix,
                    to: nh.map(|nh| policy.hop(&prefix, nh)),
                    ours_now: installed.contains_key(&prefix) || inherited.contains(&prefix),
                })
                .collect()
        };
        let refused = match self.routes.apply_bgp(&list).await {
            Ok(r) => r,
            Err(e) => {
                self.status.dataplane_errors(list.len());
                tracing::warn!(error = %format!("{e:#}"), changes = list.len(), "route changes failed");
                return;
            }
        };
        for (i, c) in list.iter().enumerate() {
            if refused.iter().any(|r| r.index == i) {
                continue;
            }
            match c.to {
                Some(hop) => installed.insert(c.prefix, hop),
                None => installed.remove(&c.prefix),
            };
            self.inherited
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&c.prefix);
        }
        drop(installed);
        self.status.programmed_in(started.elapsed());
        let not_ours = refused.iter().filter(|r| r.not_ours).count();
        self.status.dataplane_errors(refused.len() - not_ours);
        self.status.count(Event::NotOurs, not_ours as u64);
        for r in &refused {
            let prefix = list[r.index].prefix;
            if r.not_ours {
                tracing::warn!(%prefix, "learned route not installed: a route that is not ours holds its place");
            } else {
                tracing::warn!(%prefix, error = %r.why, "route change refused");
            }
        }
        tracing::debug!(
            changes = list.len(),
            refused = refused.len(),
            "routes programmed"
        );
    }

    /// After a restart the kernel still holds the previous run's routes
    /// (graceful restart: forwarding went on). Once every peer has sent
    /// its End-of-RIB (or after `wait`), those the new RIB did not
    /// install again are stale: remove them.
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
        for p in stale {
            self.inherited
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&p);
            match self.routes.remove(p, PROTO_BGP).await {
                Ok(()) => tracing::info!(prefix = %p, "stale route of the previous run removed"),
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "removing a stale route"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routed::fakes::{best, net, FakeBgp, FakeRoutes};

    #[tokio::test]
    async fn changes_become_routes_with_our_protocol() {
        let routes = Arc::new(FakeRoutes::default());
        let status = Shared::default();
        let r = Routing::new(routes.clone(), status.clone(), Policy::default());
        r.apply(vec![best("10.96.0.64/26", Some("10.0.0.2"))]).await;
        // In one batch the last change of a prefix wins.
        r.apply(vec![
            best("198.51.100.0/24", Some("10.0.0.9")),
            best("10.96.0.64/26", Some("10.0.0.4")),
            best("10.96.0.64/26", Some("10.0.0.3")),
        ])
        .await;
        assert_eq!(
            routes.table(PROTO_BGP),
            [
                ("10.96.0.64/26".to_string(), Some("10.0.0.3".to_string())),
                ("198.51.100.0/24".to_string(), Some("10.0.0.9".to_string()))
            ]
        );
        r.apply(vec![best("198.51.100.0/24", None)]).await;
        assert_eq!(routes.prefixes(PROTO_BGP), ["10.96.0.64/26"]);
        assert_eq!(status.rounds(), 3);
        // A refused change is not recorded as installed.
        routes.fail(true);
        r.apply(vec![best("192.0.2.0/24", Some("10.0.0.9"))]).await;
        assert!(!r
            .installed
            .lock()
            .await
            .contains_key(&"192.0.2.0/24".parse().unwrap()));
    }

    #[tokio::test]
    async fn ipip_routes_go_through_the_tunnel_and_move_with_the_policy() {
        use plexus_ipam::{Encap, NodeSettings, Pool};
        let routes = Arc::new(FakeRoutes::default());
        routes
            .tunnel_up("10.96.0.1".parse().unwrap(), 1500)
            .await
            .unwrap();
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
        let r = Routing::new(routes.clone(), Shared::default(), ipip);
        r.apply(vec![
            best("10.96.0.64/26", Some("10.0.0.2")),
            best("198.51.100.0/24", Some("10.0.0.9")),
        ])
        .await;
        assert_eq!(
            routes.table(PROTO_BGP),
            [
                ("10.96.0.64/26".into(), Some("10.0.0.2 tunl0".into())),
                ("198.51.100.0/24".into(), Some("10.0.0.9".into()))
            ]
        );
        // Cross-subnet: the node shares our subnet, the route moves off
        // the tunnel; the external one is not touched again.
        let calls = routes.calls();
        let cross = Policy::new(&[pool(Encap::IpipCrossSubnet)], &nodes, own);
        r.set_policy(cross.clone()).await;
        assert_eq!(
            routes.table(PROTO_BGP)[0],
            ("10.96.0.64/26".into(), Some("10.0.0.2".into()))
        );
        assert_eq!(routes.calls(), calls + 1);
        // The same policy again changes nothing.
        r.set_policy(cross).await;
        assert_eq!(routes.calls(), calls + 1);
    }

    #[tokio::test]
    async fn purge_waits_for_end_of_rib_then_removes_the_unconfirmed() {
        let routes = Arc::new(FakeRoutes::default());
        routes.put(PROTO_BGP, "10.96.0.64/26", Some("10.0.0.2"));
        routes.put(PROTO_BGP, "203.0.113.0/24", Some("10.0.0.2"));
        let previous = routes.ours(PROTO_BGP).await.unwrap();
        let bgp = Arc::new(FakeBgp::default());
        bgp.set_synced(false);
        let r = Routing::new(routes.clone(), Shared::default(), Policy::default());
        let purge = tokio::spawn(r.clone().purge_after_sync(
            bgp.clone(),
            previous,
            Duration::from_secs(3600),
        ));
        // The peer re-announces one of them; nothing goes before End-of-RIB.
        r.apply(vec![best("10.96.0.64/26", Some("10.0.0.2"))]).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(routes.prefixes(PROTO_BGP).len(), 2);
        bgp.set_synced(true);
        purge.await.unwrap();
        assert_eq!(routes.prefixes(PROTO_BGP), ["10.96.0.64/26"]);
    }
}
