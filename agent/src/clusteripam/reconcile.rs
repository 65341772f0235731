//! The Kubernetes-mode reconciler of cluster IPAM: this node's addresses
//! whose pod, by UID, no longer exists are released after a grace period.
//!
//! Each agent judges only its own node's holders (the attachments it gave
//! addresses to, in its blocks or borrowed), against an informer over the
//! pods scheduled on it (`spec.nodeName`): a pod never moves, so a holder on
//! this node belongs to a pod that is, or was, here. A deleted node's
//! holders are node cleanup's (`--node-cleanup`, `plexusctl node remove`).
//!
//! The decision is [`plexus_ipam::clusterpool::Reconciler`] (pure, unit
//! tested): missing from the informer's complete list for `grace`. Before a
//! release the pod is read directly, and a pod of that name with the
//! holder's UID keeps its address (a lagging cache); the release itself is
//! conditional on the store still holding that exact holder.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use plexus_ipam::clusterpool::{confirm, ClusterAllocator, PodNow, Reconciler};
use plexus_store::{Event, Informer, KubePods, StoreError};

use crate::status::Shared;

/// The pods of a node as the reconciler needs them (the Kubernetes API; a
/// fake in unit tests).
#[async_trait::async_trait]
pub trait Pods: Send + Sync {
    /// The pods on `node` as UIDs, keyed `namespace/name`.
    fn follow(&self, node: &str) -> Informer<String>;
    /// The UID of pod `namespace/name` now.
    async fn uid(&self, namespace: &str, name: &str) -> Result<Option<String>, StoreError>;
}

#[async_trait::async_trait]
impl Pods for KubePods {
    fn follow(&self, node: &str) -> Informer<String> {
        KubePods::follow(self, node)
    }
    async fn uid(&self, namespace: &str, name: &str) -> Result<Option<String>, StoreError> {
        KubePods::uid(self, namespace, name).await
    }
}

/// Releases this node's cluster-IPAM addresses of pods that are gone.
pub struct PodReconciler {
    pub alloc: Arc<ClusterAllocator>,
    pub grace: Duration,
}

impl PodReconciler {
    /// How often the holders are compared with the pods: a few times per
    /// grace period, at most once a second, at least once a minute.
    pub fn every(&self) -> Duration {
        (self.grace / 4).clamp(Duration::from_secs(1), Duration::from_secs(60))
    }

    /// One comparison: what `rec` condemns, confirmed by a direct read of
    /// each pod, released. Returns how many addresses went.
    pub async fn round(
        &self,
        rec: &mut Reconciler,
        pods: &dyn Pods,
        uids: &HashSet<String>,
        synced: bool,
        now: Instant,
    ) -> usize {
        let held = self.alloc.allocations().await;
        let condemned = rec.decide(&held, uids, synced, now);
        let mut doomed = Vec::new();
        for h in condemned {
            let (ns, name) = (&h.1.pod_namespace, &h.1.pod_name);
            let seen = if ns.is_empty() || name.is_empty() {
                PodNow::Unnamed
            } else {
                match pods.uid(ns, name).await {
                    Ok(None) => PodNow::Absent,
                    Ok(Some(uid)) => PodNow::Uid(uid),
                    Err(e) => {
                        tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "cluster IPAM reconciler: cannot read the pod; trying again later");
                        continue;
                    }
                }
            };
            if confirm(&h.1, &seen) {
                doomed.push(h);
            } else {
                rec.exists(&h);
            }
        }
        if doomed.is_empty() {
            return 0;
        }
        match self.alloc.release_holders(&doomed).await {
            Ok(n) => {
                for h in &doomed {
                    tracing::info!(
                        address = %h.0,
                        pod = %format!("{}/{}", h.1.pod_namespace, h.1.pod_name),
                        pod_uid = %h.1.pod_uid,
                        container = %h.1.container_id,
                        ifname = %h.1.ifname,
                        network = %h.1.network,
                        "cluster IPAM: released the address of a pod that no longer exists"
                    );
                    rec.released(h);
                }
                n
            }
            Err(e) => {
                tracing::warn!(error = %e, "cluster IPAM reconciler: release failed; trying again");
                0
            }
        }
    }

    /// Follow the node's pods and compare every [`PodReconciler::every`]
    /// and after each (re)list.
    pub async fn run(self, pods: impl Pods, status: Shared) {
        let mut events = pods.follow(self.alloc.node());
        status.add_informer("pods", events.stats());
        let cache = events.cache();
        let mut rec = Reconciler::new(self.grace);
        let mut tick = tokio::time::interval(self.every());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tracing::info!(grace = ?self.grace, "cluster IPAM reconciler started");
        loop {
            tokio::select! {
                ev = events.next() => {
                    if !matches!(ev, Event::Synced) {
                        continue;
                    }
                }
                _ = tick.tick() => {}
            }
            let uids: HashSet<String> = cache.values().iter().map(|u| (**u).clone()).collect();
            self.round(&mut rec, &pods, &uids, cache.is_synced(), Instant::now())
                .await;
        }
    }
}
