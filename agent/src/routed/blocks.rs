//! This node's blocks in the kernel and in BGP: a blackhole route and an
//! announcement per held block (the aggregate, never pod routes), both
//! removed when the block goes (released, `node remove`).

use std::collections::BTreeSet;
use std::sync::Arc;

use ipnet::IpNet;
use tokio::sync::Mutex;

use super::bgp::Announcer;
use super::kernel::{RouteTable, PROTO_BLOCK};

pub struct Blocks {
    routes: Arc<dyn RouteTable>,
    bgp: Arc<dyn Announcer>,
    /// (blackholed in the kernel, announced to BGP) now.
    held: Mutex<(BTreeSet<IpNet>, BTreeSet<IpNet>)>,
}

impl Blocks {
    /// Starts from what the kernel holds of ours (a previous run's), so the
    /// first [`Blocks::sync`] removes blocks that are no longer ours.
    pub async fn new(
        routes: Arc<dyn RouteTable>,
        bgp: Arc<dyn Announcer>,
    ) -> anyhow::Result<Blocks> {
        let held = routes.ours(PROTO_BLOCK).await?;
        Ok(Blocks {
            routes,
            bgp,
            held: Mutex::new((held, BTreeSet::new())),
        })
    }

    pub fn bgp(&self) -> &dyn Announcer {
        &*self.bgp
    }

    /// Makes the routes and announcements match `want`; the first error
    /// stops the round (the next sync retries). A block is announced only
    /// once its blackhole is in (never draw traffic the kernel would loop
    /// back out) and withdrawn before its blackhole goes.
    pub async fn sync(&self, want: Vec<IpNet>) -> anyhow::Result<()> {
        let want: BTreeSet<IpNet> = want.into_iter().collect();
        let mut guard = self.held.lock().await;
        let (routed, announced) = &mut *guard;
        for b in want.iter() {
            if !routed.contains(b) {
                self.routes.add_blackhole(*b).await?;
                routed.insert(*b);
            }
            if !announced.contains(b) {
                self.bgp.originate(*b).await?;
                announced.insert(*b);
            }
        }
        let gone: Vec<IpNet> = routed
            .union(announced)
            .filter(|b| !want.contains(b))
            .copied()
            .collect();
        for b in gone {
            self.bgp.withdraw(b).await?;
            announced.remove(&b);
            self.routes.remove(b, PROTO_BLOCK).await?;
            routed.remove(&b);
            tracing::info!(block = %b, "block released: route and announcement removed");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routed::fakes::{net, FakeBgp, FakeRoutes};

    #[tokio::test]
    async fn blocks_follow_the_allocator() {
        let routes = Arc::new(FakeRoutes::default());
        // A previous run blackholed a block this node no longer holds.
        routes.put(PROTO_BLOCK, "10.96.0.192/26", None);
        let bgp = Arc::new(FakeBgp::default());
        let b = Blocks::new(routes.clone(), bgp.clone()).await.unwrap();
        b.sync(vec![net("10.96.0.0/26")]).await.unwrap();
        assert_eq!(routes.prefixes(PROTO_BLOCK), ["10.96.0.0/26"]);
        assert_eq!(bgp.originated(), ["10.96.0.0/26"]);
        // A second block, then the first goes.
        b.sync(vec![net("10.96.0.0/26"), net("10.96.0.64/26")])
            .await
            .unwrap();
        b.sync(vec![net("10.96.0.64/26")]).await.unwrap();
        assert_eq!(routes.prefixes(PROTO_BLOCK), ["10.96.0.64/26"]);
        assert_eq!(bgp.originated(), ["10.96.0.64/26"]);
        // Syncing the same set again changes nothing.
        let calls = routes.calls();
        b.sync(vec![net("10.96.0.64/26")]).await.unwrap();
        assert_eq!(routes.calls(), calls);
    }

    #[tokio::test]
    async fn no_announcement_without_the_blackhole() {
        let routes = Arc::new(FakeRoutes::default());
        let bgp = Arc::new(FakeBgp::default());
        let b = Blocks::new(routes.clone(), bgp.clone()).await.unwrap();
        routes.fail(true);
        assert!(b.sync(vec![net("10.96.0.0/26")]).await.is_err());
        assert!(bgp.originated().is_empty());
        // The next round retries and succeeds.
        routes.fail(false);
        b.sync(vec![net("10.96.0.0/26")]).await.unwrap();
        assert_eq!(bgp.originated(), ["10.96.0.0/26"]);
    }
}
