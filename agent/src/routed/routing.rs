//! The routing component: the speaker's best-route changes, in order, into
//! the kernel with our protocol number (next hop as learned); and after a
//! restart, the purge of the previous run's routes no peer confirmed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use plexus_bgp::{RouteFeed, Speaker};
use plexus_netlink::Netlink;
use tokio::sync::Mutex;

use super::kernel::{self, PROTO_BGP};
use crate::status::Shared;

#[derive(Clone)]
pub struct Routing {
    nl: Arc<Netlink>,
    status: Shared,
    /// What the feed installed: prefix → next hop.
    installed: Arc<Mutex<BTreeMap<IpNet, IpAddr>>>,
}

impl Routing {
    pub fn new(nl: Arc<Netlink>, status: Shared) -> Routing {
        Routing {
            nl,
            status,
            installed: Arc::default(),
        }
    }

    /// Applies the feed until it ends (the speaker stopped).
    pub async fn follow(self, mut feed: RouteFeed) {
        while let Some(change) = feed.recv().await {
            let started = Instant::now();
            let mut installed = self.installed.lock().await;
            let result = match &change.route {
                Some(best) => kernel::install(&self.nl, change.prefix, best.next_hop)
                    .await
                    .map(|()| {
                        installed.insert(change.prefix, best.next_hop);
                    }),
                None => kernel::remove(&self.nl, change.prefix, PROTO_BGP)
                    .await
                    .map(|()| {
                        installed.remove(&change.prefix);
                    }),
            };
            drop(installed);
            match result {
                Ok(()) => {
                    self.status.programmed_in(started.elapsed());
                    tracing::debug!(prefix = %change.prefix, via = ?change.route.as_ref().map(|r| r.next_hop), "route programmed");
                }
                Err(e) => {
                    self.status.dataplane_errors(1);
                    tracing::warn!(error = %format!("{e:#}"), "route change failed");
                }
            }
        }
    }

    /// After a restart the kernel still holds the previous run's routes
    /// (graceful restart: forwarding went on). Once every peer has sent
    /// its End-of-RIB (or after `wait`), those the new RIB did not
    /// install again are stale: remove them.
    pub async fn purge_after_sync(
        self,
        speaker: Arc<Speaker>,
        previous: BTreeSet<IpNet>,
        wait: Duration,
    ) {
        if previous.is_empty() {
            return;
        }
        let deadline = Instant::now() + wait;
        loop {
            let synced = match speaker.status().await {
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
            match kernel::remove(&self.nl, p, PROTO_BGP).await {
                Ok(()) => tracing::info!(prefix = %p, "stale route of the previous run removed"),
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "removing a stale route"),
            }
        }
    }
}
