//! This node's blocks in the kernel and in BGP: a blackhole route and an
//! announcement per held block (the aggregate, never pod routes), both
//! removed when the block goes (released, `node remove`). The blackholes
//! are the data plane's entries of [`Owner::Blocks`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use ipnet::IpNet;
use tokio::sync::Mutex;

use plexus_bgp::CommunitySet;
use plexus_ipam::PrefixAdvertisement;

use super::bgp::Announcer;
use super::kernel::PROTO_BLOCK;
use crate::dataplane::{DataPlane, Entry, Key, Owner, Route};

pub struct Blocks {
    dp: DataPlane,
    bgp: Arc<dyn Announcer>,
    /// Announced to BGP now, with the communities.
    announced: Mutex<BTreeMap<IpNet, CommunitySet>>,
    /// Communities by prefix (the BGP config's prefixAdvertisements).
    advertisements: std::sync::Mutex<Vec<PrefixAdvertisement>>,
}

fn blackhole(block: IpNet) -> Entry {
    Entry::Route(Route::blackhole(block, PROTO_BLOCK))
}

impl Blocks {
    /// Takes over the blackholes a previous run left (they stay until the
    /// first [`Blocks::sync`] says which are still ours), so a restart
    /// never leaves a block's addresses routed out of the node.
    pub async fn new(dp: DataPlane, bgp: Arc<dyn Announcer>) -> anyhow::Result<Blocks> {
        let kept = dp.adopt(Owner::Blocks).await;
        if !kept.is_empty() {
            tracing::info!(
                blocks = kept.len(),
                "blackholes of a previous run kept until the blocks are read"
            );
        }
        Ok(Blocks {
            dp,
            bgp,
            announced: Mutex::new(BTreeMap::new()),
            advertisements: Default::default(),
        })
    }

    /// The communities our blocks carry from now on (the next
    /// [`Blocks::sync`] announces the changed ones again).
    pub fn set_advertisements(&self, ads: Vec<PrefixAdvertisement>) {
        *self
            .advertisements
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = ads;
    }

    pub fn bgp(&self) -> &dyn Announcer {
        &*self.bgp
    }

    /// Makes the blackholes and announcements match `want`. A block is
    /// announced only once its blackhole is in (never draw traffic the
    /// kernel would loop back out) and withdrawn before its blackhole
    /// goes. Returns an error when a wanted blackhole is not in the kernel
    /// (the data plane retries it; the next sync announces it).
    pub async fn sync(&self, want: Vec<IpNet>) -> anyhow::Result<()> {
        let want: BTreeSet<IpNet> = want.into_iter().collect();
        let mut announced = self.announced.lock().await;
        let gone: Vec<IpNet> = announced
            .keys()
            .filter(|b| !want.contains(b))
            .copied()
            .collect();
        let ads = self
            .advertisements
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for b in &gone {
            self.bgp.withdraw(*b).await?;
            announced.remove(b);
        }
        let outcome = self
            .dp
            .set(Owner::Blocks, want.iter().map(|b| blackhole(*b)).collect())
            .await;
        for b in gone {
            tracing::info!(block = %b, "block released: route and announcement removed");
        }
        let missing = outcome.missing();
        let mut failed = Vec::new();
        for b in &want {
            if missing.contains(&blackhole(*b).key()) {
                failed.push(*b);
                continue;
            }
            let communities = PrefixAdvertisement::lookup(&ads, b);
            if announced.get(b) != Some(&communities) {
                self.bgp.originate_with(*b, communities.clone()).await?;
                announced.insert(*b, communities);
            }
        }
        if !failed.is_empty() {
            let why: Vec<String> = outcome
                .failed
                .iter()
                .map(|(k, w)| format!("{k}: {w}"))
                .chain(
                    outcome
                        .not_ours
                        .iter()
                        .map(|k| format!("{k}: a route that is not ours is there")),
                )
                .collect();
            anyhow::bail!(
                "blackholes not in the kernel ({failed:?}): {}",
                why.join("; ")
            );
        }
        Ok(())
    }

    /// The key of a block's blackhole, for callers that wait on it.
    pub fn key(block: IpNet) -> Key {
        blackhole(block).key()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routed::fakes::{data_plane, net, prefixes, FakeBgp};

    #[tokio::test]
    async fn blocks_follow_the_allocator() {
        let (dp, k) = data_plane();
        // A previous run blackholed a block this node no longer holds.
        k.put(blackhole(net("10.96.0.192/26")));
        let bgp = Arc::new(FakeBgp::default());
        let b = Blocks::new(dp, bgp.clone()).await.unwrap();
        assert_eq!(
            prefixes(&k, PROTO_BLOCK),
            ["10.96.0.192/26"],
            "kept until the first sync"
        );
        b.sync(vec![net("10.96.0.0/26")]).await.unwrap();
        assert_eq!(prefixes(&k, PROTO_BLOCK), ["10.96.0.0/26"]);
        assert_eq!(bgp.originated(), ["10.96.0.0/26"]);
        // A second block, then the first goes.
        b.sync(vec![net("10.96.0.0/26"), net("10.96.0.64/26")])
            .await
            .unwrap();
        b.sync(vec![net("10.96.0.64/26")]).await.unwrap();
        assert_eq!(prefixes(&k, PROTO_BLOCK), ["10.96.0.64/26"]);
        assert_eq!(bgp.originated(), ["10.96.0.64/26"]);
        // Syncing the same set again changes nothing.
        let calls = k.applied();
        b.sync(vec![net("10.96.0.64/26")]).await.unwrap();
        assert_eq!(k.applied(), calls);
    }

    #[tokio::test]
    async fn no_announcement_without_the_blackhole() {
        let (dp, k) = data_plane();
        let bgp = Arc::new(FakeBgp::default());
        let b = Blocks::new(dp, bgp.clone()).await.unwrap();
        k.fail(true);
        assert!(b.sync(vec![net("10.96.0.0/26")]).await.is_err());
        assert!(bgp.originated().is_empty());
        // The next round retries it and announces it.
        k.fail(false);
        b.sync(vec![net("10.96.0.0/26")]).await.unwrap();
        assert_eq!(bgp.originated(), ["10.96.0.0/26"]);
    }
}
