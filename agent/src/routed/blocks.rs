//! This node's blocks in the kernel and in BGP: a blackhole route and an
//! announcement per held block (the aggregate, never pod routes), both
//! removed when the block goes (released, `node remove`).

use std::collections::BTreeSet;
use std::sync::Arc;

use ipnet::IpNet;
use plexus_bgp::Speaker;
use plexus_netlink::Netlink;
use tokio::sync::Mutex;

use super::kernel::{self, PROTO_BLOCK};

pub struct Blocks {
    nl: Arc<Netlink>,
    speaker: Arc<Speaker>,
    /// (blackholed in the kernel, announced to BGP) now.
    held: Mutex<(BTreeSet<IpNet>, BTreeSet<IpNet>)>,
}

impl Blocks {
    /// Starts from what the kernel holds of ours (a previous run's), so the
    /// first [`Blocks::sync`] removes blocks that are no longer ours.
    pub async fn new(nl: Arc<Netlink>, speaker: Arc<Speaker>) -> anyhow::Result<Blocks> {
        let held = kernel::ours(&nl, PROTO_BLOCK).await?;
        Ok(Blocks {
            nl,
            speaker,
            held: Mutex::new((held, BTreeSet::new())),
        })
    }

    pub fn speaker(&self) -> &Speaker {
        &self.speaker
    }

    /// Makes the routes and announcements match `want`; the first error
    /// stops the round (the next sync retries). Announcements follow the
    /// blackhole (never announce what the kernel would not drop/deliver).
    pub async fn sync(&self, want: Vec<IpNet>) -> anyhow::Result<()> {
        let want: BTreeSet<IpNet> = want.into_iter().collect();
        let mut guard = self.held.lock().await;
        let (routed, announced) = &mut *guard;
        for b in want.iter() {
            if routed.insert(*b) {
                if let Err(e) = kernel::add_blackhole(&self.nl, *b).await {
                    routed.remove(b);
                    return Err(e);
                }
            }
            if announced.insert(*b) {
                self.speaker.originate(*b).await?;
            }
        }
        let gone: Vec<IpNet> = routed
            .union(announced)
            .filter(|b| !want.contains(b))
            .copied()
            .collect();
        for b in gone {
            self.speaker.withdraw(b).await?;
            announced.remove(&b);
            kernel::remove(&self.nl, b, PROTO_BLOCK).await?;
            routed.remove(&b);
            tracing::info!(block = %b, "block released: route and announcement removed");
        }
        Ok(())
    }
}
