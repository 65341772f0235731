//! Wakes the control loop when the routed network's records change (pools,
//! BGP config, peers, nodes), so a new peer or a `node remove` takes effect
//! at once instead of at the next poll. Block records are left out: every
//! ADD writes one, and other nodes' blocks arrive over BGP. The poll stays
//! as the fallback.

use std::sync::Arc;

use plexus_ipam::{Cluster, Kinds, RecordEvent};
use tokio::sync::Notify;

use crate::status::Shared;

/// Runs until dropped; `wake` is notified after each change and after each
/// (re)list (a change may have been missed in between).
pub async fn wake_on_change(cluster: Cluster, wake: Arc<Notify>, status: Shared) {
    let mut records = cluster.follow(Kinds::CONFIG);
    status.add_informer("routed records", records.stats());
    loop {
        match records.next().await {
            RecordEvent::Synced => tracing::debug!("routed records listed"),
            ev => tracing::trace!(?ev, "routed record changed"),
        }
        wake.notify_one();
    }
}
