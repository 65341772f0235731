//! Wakes the control loop when the routed network's records change (pools,
//! BGP config, peers, nodes), so a new peer or a `node remove` takes effect
//! at once instead of at the next poll. Block records are left out: every
//! ADD writes one, and other nodes' blocks arrive over BGP. The poll stays
//! as the fallback (a broken watch, a missed event).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use plexus_ipam::Cluster;
use tokio::sync::Notify;

/// Runs until dropped; `wake` is notified after each relevant change and
/// whenever the watch has to be set up again (a change may have been
/// missed in between).
pub async fn wake_on_change(cluster: Cluster, wake: Arc<Notify>) {
    let prefix = format!("{}/", cluster.layout().prefix());
    let blocks = cluster.layout().blocks();
    let kv = cluster.kv().clone();
    loop {
        // The store's revision now: a cheap range of one key.
        let from = match kv.range(&cluster.layout().bgp_config()).await {
            Ok(r) => r.revision + 1,
            Err(e) => {
                tracing::debug!(error = %e, "store watch: no revision yet");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        match kv.watch(&prefix, from).await {
            Ok(mut events) => {
                wake.notify_one();
                while let Some(batch) = events.next().await {
                    match batch {
                        Ok(evs) if evs.iter().any(|e| !e.key().starts_with(&blocks)) => {
                            wake.notify_one();
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::debug!(error = %e, "store watch broke");
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "store watch failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
