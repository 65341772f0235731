//! The block allocator against the embedded store (FileKv): blocks, CAS
//! conflicts, exhaustion, release, GC, restarts, node removal.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use plexus_ipam::{Allocator, Block, Cluster, Encap, Handle, IpamError, Journal, Layout, Pool};
use plexus_store::{FileKv, Kv};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(3)
        .enable_all()
        .build()
        .unwrap()
}

fn pool(name: &str, cidr: &str, block_size: u8) -> Pool {
    Pool {
        name: name.into(),
        cidr: cidr.parse().unwrap(),
        block_size,
        nat_outgoing: false,
        encap: Encap::None,
        disabled: false,
    }
}

fn h(cid: &str) -> Handle {
    Handle::new("routed", cid, "eth0")
}

struct Fixture {
    _dir: tempfile::TempDir,
    kv: Arc<dyn Kv>,
    cluster: Cluster,
}

async fn fixture(pools: &[Pool]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let kv: Arc<dyn Kv> = Arc::new(FileKv::open(&dir.path().join("store.json")).unwrap());
    let cluster = Cluster::new(kv.clone(), Layout::default());
    for p in pools {
        cluster.add_pool(p).await.unwrap();
    }
    Fixture {
        _dir: dir,
        kv,
        cluster,
    }
}

async fn stored_blocks(c: &Cluster) -> Vec<Block> {
    c.blocks()
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.value)
        .collect()
}

#[test]
fn allocates_inside_claimed_blocks_and_claims_more_when_full() {
    rt().block_on(async {
        let f = fixture(&[pool("p", "10.1.0.0/24", 30)]).await;
        let a = Allocator::load(f.cluster.clone(), "n1").await.unwrap();
        let mut got = Vec::new();
        for i in 0..6 {
            got.push(a.allocate(&h(&format!("c{i}")), "p").await.unwrap());
        }
        let want: Vec<IpAddr> = [
            "10.1.0.0", "10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        assert_eq!(got, want, "lowest free address of the lowest held block");
        assert_eq!(
            a.blocks().await,
            vec![
                "10.1.0.0/30".parse().unwrap(),
                "10.1.0.4/30".parse().unwrap()
            ]
        );
        let blocks = stored_blocks(&f.cluster).await;
        assert_eq!(blocks.len(), 2);
        assert!(blocks.iter().all(|b| b.node == "n1" && b.pool == "p"));
        assert_eq!(blocks[0].used(), 4);
        assert_eq!(blocks[1].allocations[&1], h("c5"));
        assert_eq!(f.cluster.blocks_of("n1").await.unwrap().len(), 2);
        assert!(f.cluster.blocks_of("n2").await.unwrap().is_empty());
    });
}

#[test]
fn allocate_is_idempotent_per_handle_and_release_is_too() {
    rt().block_on(async {
        let f = fixture(&[
            pool("p", "10.1.0.0/24", 28),
            pool("p6", "fd00:1::/120", 124),
        ])
        .await;
        let a = Allocator::load(f.cluster.clone(), "n1").await.unwrap();
        let x = a.allocate(&h("c1"), "p").await.unwrap();
        assert_eq!(a.allocate(&h("c1"), "p").await.unwrap(), x);
        let x6 = a.allocate(&h("c1"), "p6").await.unwrap();
        assert!(x6.is_ipv6());
        let y = a.allocate(&h("c2"), "p").await.unwrap();
        assert_ne!(x, y);
        assert_eq!(a.release(&h("c1")).await.unwrap(), 2, "both families");
        assert_eq!(a.release(&h("c1")).await.unwrap(), 0, "twice is fine");
        assert_eq!(a.release(&h("never")).await.unwrap(), 0);
        // The freed address is given again.
        assert_eq!(a.allocate(&h("c3"), "p").await.unwrap(), x);
        let e = a.allocate(&h("c4"), "nope").await.unwrap_err();
        assert!(matches!(e, IpamError::NotFound(_)), "{e}");
    });
}

#[test]
fn exhaustion_is_a_clear_error_and_changes_nothing() {
    rt().block_on(async {
        let f = fixture(&[pool("tiny", "10.2.0.0/30", 31)]).await;
        let a = Allocator::load(f.cluster.clone(), "n1").await.unwrap();
        let b = Allocator::load(f.cluster.clone(), "n2").await.unwrap();
        a.allocate(&h("a1"), "tiny").await.unwrap();
        b.allocate(&h("b1"), "tiny").await.unwrap();
        a.allocate(&h("a2"), "tiny").await.unwrap();
        let before = f.kv.range("/").await.unwrap().revision;
        let e = a.allocate(&h("a3"), "tiny").await.unwrap_err();
        assert!(
            matches!(&e, IpamError::Exhausted(m) if m.contains("no free block")),
            "{e}"
        );
        assert_eq!(f.kv.range("/").await.unwrap().revision, before);
        // n2 still has room in its own block.
        b.allocate(&h("b2"), "tiny").await.unwrap();
    });
}

#[test]
fn disabled_pool_gives_no_new_block() {
    rt().block_on(async {
        let mut p = pool("off", "10.3.0.0/24", 28);
        p.disabled = true;
        let f = fixture(&[p]).await;
        let a = Allocator::load(f.cluster.clone(), "n1").await.unwrap();
        let e = a.allocate(&h("c"), "off").await.unwrap_err().to_string();
        assert!(e.contains("disabled"), "{e}");
    });
}

#[test]
fn a_restart_keeps_every_address_with_its_attachment() {
    rt().block_on(async {
        let f = fixture(&[pool("p", "10.4.0.0/24", 29)]).await;
        let a = Allocator::load(f.cluster.clone(), "n1").await.unwrap();
        let mut before = Vec::new();
        for i in 0..12 {
            before.push(a.allocate(&h(&format!("c{i}")), "p").await.unwrap());
        }
        a.release(&h("c3")).await.unwrap();
        drop(a);
        // The agent restarts: a new allocator from the store alone.
        let a = Allocator::load(f.cluster.clone(), "n1").await.unwrap();
        for (i, addr) in before.iter().enumerate() {
            if i == 3 {
                continue;
            }
            assert_eq!(
                a.allocate(&h(&format!("c{i}")), "p").await.unwrap(),
                *addr,
                "c{i}"
            );
        }
        // New attachments never get an address still held.
        let fresh = a.allocate(&h("new"), "p").await.unwrap();
        assert_eq!(fresh, before[3], "only the released address is free");
        let next = a.allocate(&h("new2"), "p").await.unwrap();
        assert!(!before.contains(&next));
    });
}

#[test]
fn gc_frees_only_stale_handles_of_that_network() {
    rt().block_on(async {
        let f = fixture(&[pool("p", "10.5.0.0/24", 28)]).await;
        let a = Allocator::load(f.cluster.clone(), "n1").await.unwrap();
        for c in ["live", "dead1", "dead2"] {
            a.allocate(&h(c), "p").await.unwrap();
        }
        let other = Handle::new("othernet", "dead3", "eth0");
        a.allocate(&other, "p").await.unwrap();
        let valid: HashSet<Handle> = [h("live")].into();
        assert_eq!(a.gc("routed", &valid).await.unwrap(), 2);
        let left: HashSet<Handle> = a
            .allocations()
            .await
            .into_iter()
            .map(|(_, h, _)| h)
            .collect();
        assert_eq!(left, [h("live"), other].into());
        assert_eq!(a.gc("routed", &valid).await.unwrap(), 0);
    });
}

#[test]
fn two_writers_of_one_block_never_give_one_address_twice() {
    // Two allocators believing they are n1 (a stale agent beside a new
    // one): every write is a CAS, so each loser re-reads and moves on.
    rt().block_on(async {
        let f = fixture(&[pool("p", "10.6.0.0/24", 26)]).await;
        let a = Allocator::load(f.cluster.clone(), "n1").await.unwrap();
        a.allocate(&h("seed"), "p").await.unwrap();
        let b = Allocator::load(f.cluster.clone(), "n1").await.unwrap();
        let mut all = vec![];
        for i in 0..20 {
            all.push(a.allocate(&h(&format!("a{i}")), "p").await.unwrap());
            all.push(b.allocate(&h(&format!("b{i}")), "p").await.unwrap());
        }
        let uniq: HashSet<_> = all.iter().collect();
        assert_eq!(uniq.len(), all.len(), "{all:?}");
        // Each wrote over the other's revision every time but the first.
        assert!(a.stats().write_conflicts >= 19, "{:?}", a.stats());
        assert!(b.stats().write_conflicts >= 20, "{:?}", b.stats());
        let stored: usize = stored_blocks(&f.cluster)
            .await
            .iter()
            .map(|b| b.allocations.len())
            .sum();
        assert_eq!(stored, 41);
    });
}

#[test]
fn concurrent_nodes_never_share_a_block() {
    rt().block_on(async {
        // 16 blocks of 4 for 3 nodes × 20 addresses: every claim races.
        let f = fixture(&[pool("p", "10.7.0.0/26", 30)]).await;
        let mut nodes: Vec<Arc<Allocator>> = Vec::new();
        for i in 0..3 {
            let a = Allocator::load(f.cluster.clone(), &format!("n{i}")).await;
            nodes.push(Arc::new(a.unwrap()));
        }
        let tasks = nodes.iter().enumerate().map(|(i, a)| {
            let a = a.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                for j in 0..20 {
                    got.push(a.allocate(&h(&format!("n{i}-{j}")), "p").await.unwrap());
                }
                got
            })
        });
        let results: Vec<Vec<IpAddr>> = futures::future::join_all(tasks)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let all: Vec<IpAddr> = results.iter().flatten().copied().collect();
        assert_eq!(all.iter().collect::<HashSet<_>>().len(), 60);
        let blocks = stored_blocks(&f.cluster).await;
        assert_eq!(blocks.len(), 15);
        for (i, a) in nodes.iter().enumerate() {
            let mine = a.blocks().await;
            for b in &blocks {
                assert_eq!(mine.contains(&b.cidr), b.node == format!("n{i}"));
            }
            for addr in &results[i] {
                assert!(
                    mine.iter().any(|c| c.contains(addr)),
                    "{addr} outside n{i}'s blocks"
                );
            }
        }
    });
}

#[test]
fn node_remove_frees_its_blocks_and_the_agent_notices() {
    rt().block_on(async {
        let f = fixture(&[pool("p", "10.8.0.0/24", 28)]).await;
        let a = Allocator::load(f.cluster.clone(), "n1").await.unwrap();
        let b = Allocator::load(f.cluster.clone(), "n2").await.unwrap();
        for i in 0..20 {
            a.allocate(&h(&format!("a{i}")), "p").await.unwrap();
        }
        b.allocate(&h("b0"), "p").await.unwrap();
        f.cluster
            .update_node("n1", |n| n.asn = Some(65001))
            .await
            .unwrap();
        let freed = f.cluster.remove_node("n1").await.unwrap();
        assert_eq!((freed.blocks, freed.addresses), (2, 20));
        assert!(f.cluster.blocks_of("n1").await.unwrap().is_empty());
        assert_eq!(f.cluster.node("n1").await.unwrap(), None);
        assert_eq!(f.cluster.blocks_of("n2").await.unwrap().len(), 1);
        // A still-running n1 agent finds its block gone on its next write
        // and claims a free block instead of writing into a dead one.
        let addr = a.allocate(&h("late"), "p").await.unwrap();
        let now = f.cluster.blocks_of("n1").await.unwrap();
        assert_eq!(now.len(), 1);
        assert!(now[0].cidr.contains(&addr));
        assert_eq!(now[0].used(), 1);
        assert_eq!(f.cluster.remove_node("gone").await.unwrap().blocks, 0);
        // resync: the agent's view follows the store at once.
        f.cluster.remove_node("n1").await.unwrap();
        assert_eq!(a.blocks().await.len(), 1, "stale until resync");
        a.resync().await.unwrap();
        assert!(a.blocks().await.is_empty());
    });
}

#[test]
fn a_stale_copy_of_a_block_now_held_by_another_node_is_dropped() {
    rt().block_on(async {
        let f = fixture(&[pool("p", "10.9.0.0/24", 28)]).await;
        let a = Allocator::load(f.cluster.clone(), "n1").await.unwrap();
        let b = Allocator::load(f.cluster.clone(), "n2").await.unwrap();
        for i in 0..20 {
            a.allocate(&h(&format!("a{i}")), "p").await.unwrap();
        }
        // n1 is removed behind its agent's back; n2 then takes both freed
        // blocks (the lowest free ones) and fills them.
        f.cluster.remove_node("n1").await.unwrap();
        let mut theirs = HashSet::new();
        for i in 0..32 {
            theirs.insert(b.allocate(&h(&format!("b{i}")), "p").await.unwrap());
        }
        assert_eq!(
            b.blocks().await,
            vec![
                "10.9.0.0/28".parse().unwrap(),
                "10.9.0.16/28".parse().unwrap()
            ]
        );
        // n1 still believes it holds 10.9.0.16/28 with room: its write fails,
        // it sees n2 owns the block now, drops it and claims a free one.
        let late = a.allocate(&h("late"), "p").await.unwrap();
        assert!(!theirs.contains(&late));
        assert_eq!(a.blocks().await, vec!["10.9.0.32/28".parse().unwrap()]);
        assert!(a.stats().write_conflicts >= 1);
        let stored = f.cluster.blocks_of("n2").await.unwrap();
        assert_eq!(
            stored.iter().map(|b| b.used()).sum::<u32>(),
            32,
            "n2's blocks untouched"
        );
    });
}

#[test]
fn requested_addresses_come_from_their_block_claimed_if_free() {
    rt().block_on(async {
        let f = fixture(&[pool("p", "10.1.0.0/24", 28)]).await;
        let n1 = Allocator::load(f.cluster.clone(), "n1").await.unwrap();
        let n2 = Allocator::load(f.cluster.clone(), "n2").await.unwrap();
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        // A free block: claimed for the requested address.
        let got = n1.allocate_address(&h("c1"), "p", ip("10.1.0.37")).await;
        assert_eq!(got.unwrap(), ip("10.1.0.37"));
        assert_eq!(n1.blocks().await, vec!["10.1.0.32/28".parse().unwrap()]);
        // Asked again: the same; the next free address is not it.
        let again = n1.allocate_address(&h("c1"), "p", ip("10.1.0.37")).await;
        assert_eq!(again.unwrap(), ip("10.1.0.37"));
        assert_eq!(n1.allocate(&h("c2"), "p").await.unwrap(), ip("10.1.0.32"));
        // Refused, changing nothing: taken, another node's block, outside
        // the pool, a second address for the same handle.
        for (a, handle, node, says) in [
            ("10.1.0.37", "c3", &n1, "held by"),
            ("10.1.0.40", "c3", &n2, "held by node n1"),
            ("10.2.0.1", "c3", &n1, "not in pool"),
            ("10.1.0.38", "c1", &n1, "already holds 10.1.0.37"),
        ] {
            let e = node
                .allocate_address(&h(handle), "p", ip(a))
                .await
                .unwrap_err();
            assert!(e.to_string().contains(says), "{a}: {e}");
            // A refusal the operator can act on, not a failure of the store.
            assert!(
                !matches!(e, IpamError::Store(_) | IpamError::Corrupt { .. }),
                "{a}: {e}"
            );
        }
        let blocks = stored_blocks(&f.cluster).await;
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].used(), 2);
        assert_eq!(n1.release(&h("c1")).await.unwrap(), 1);
    });
}

/// A journal in memory (the agent keeps it in its run directory).
#[derive(Default)]
struct MemJournal(std::sync::Mutex<Vec<Block>>);

impl Journal for MemJournal {
    fn load(&self) -> Vec<Block> {
        self.0.lock().unwrap().clone()
    }
    fn save(&self, blocks: &[Block]) {
        *self.0.lock().unwrap() = blocks.to_vec();
    }
}

#[test]
fn damaged_records_are_skipped_and_never_stop_a_claim() {
    rt().block_on(async {
        let f = fixture(&[pool("p", "10.96.0.0/24", 26)]).await;
        let l = Layout::default();
        // Garbage where the first block would go, a record whose key and
        // CIDR disagree, and one naming the underlay with this node.
        let first = l.block(&"10.96.0.0/26".parse().unwrap());
        f.kv.put(&first, b"{not json", None, None).await.unwrap();
        let liar = l.block(&"10.96.0.64/26".parse().unwrap());
        let lie = br#"{"cidr":"10.96.0.192/26","pool":"p","node":"n1","allocations":{}}"#;
        f.kv.put(&liar, lie, None, None).await.unwrap();
        let under = l.block(&"10.200.0.0/26".parse().unwrap());
        let u = br#"{"cidr":"10.200.0.0/26","pool":"p","node":"n1","allocations":{}}"#;
        f.kv.put(&under, u, None, None).await.unwrap();
        // A pool record with an invalid CIDR.
        f.kv.put(
            &l.pool("bad"),
            br#"{"name":"bad","cidr":"10.1.2.3/99","blockSize":26}"#,
            None,
            None,
        )
        .await
        .unwrap();

        let a = Allocator::load(f.cluster.clone(), "n1").await.unwrap();
        assert!(a.blocks().await.is_empty(), "no damaged record is held");
        let ip = a.allocate(&h("c1"), "p").await.unwrap();
        // Neither occupied key is tried: the free blocks are the third and fourth.
        let held = a.blocks().await;
        assert_eq!(held.len(), 1);
        assert!(held[0].contains(&ip));
        assert!(
            !["10.96.0.0/26", "10.96.0.64/26"].contains(&held[0].to_string().as_str()),
            "{held:?}"
        );
        let bad = f.cluster.damage().current();
        for k in [&first, &liar, &under, &l.pool("bad")] {
            assert!(bad.contains_key(k.as_str()), "{k} not reported: {bad:?}");
        }
        assert_eq!(f.cluster.pools().await.unwrap().len(), 1);
        // Fixed records are forgotten.
        f.kv.delete(&first, None).await.unwrap();
        f.cluster.blocks().await.unwrap();
        assert!(!f.cluster.damage().current().contains_key(first.as_str()));
    });
}

#[test]
fn a_wiped_store_gets_the_nodes_blocks_back_from_its_journal() {
    rt().block_on(async {
        let f = fixture(&[pool("p", "10.96.0.0/24", 26)]).await;
        let journal = Arc::new(MemJournal::default());
        let a = Allocator::load_with(f.cluster.clone(), "n1", Some(journal.clone()))
            .await
            .unwrap();
        let ip1 = a.allocate(&h("c1"), "p").await.unwrap();
        let ip2 = a.allocate(&h("c2"), "p").await.unwrap();
        assert_eq!(journal.load()[0].allocations.len(), 2);

        // The store loses everything, then is re-seeded with the pool.
        for kv in f.kv.range("/").await.unwrap().kvs {
            f.kv.delete(&kv.key, None).await.unwrap();
        }
        f.cluster
            .add_pool(&pool("p", "10.96.0.0/24", 26))
            .await
            .unwrap();
        // The running agent puts its blocks back...
        let r = a.reassert().await.unwrap();
        assert_eq!((r.restored, r.lost), (1, 0));
        let stored = stored_blocks(&f.cluster).await;
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].allocations.len(), 2);
        // ...and another node's next claim does not take them.
        let b = Allocator::load(f.cluster.clone(), "n2").await.unwrap();
        let other = b.allocate(&h("c3"), "p").await.unwrap();
        assert!(![ip1, ip2].contains(&other));
        assert!(!stored[0].cidr.contains(&other));

        // A restarted agent on an empty store does the same from its journal.
        for kv in f.kv.range("/").await.unwrap().kvs {
            f.kv.delete(&kv.key, None).await.unwrap();
        }
        f.cluster
            .add_pool(&pool("p", "10.96.0.0/24", 26))
            .await
            .unwrap();
        let again = Allocator::load_with(f.cluster.clone(), "n1", Some(journal.clone()))
            .await
            .unwrap();
        assert_eq!(again.allocate(&h("c1"), "p").await.unwrap(), ip1);
        assert_eq!(again.allocate(&h("c2"), "p").await.unwrap(), ip2);
        let fresh = again.allocate(&h("c9"), "p").await.unwrap();
        assert!(![ip1, ip2].contains(&fresh));
    });
}

#[test]
fn blocks_other_nodes_announce_are_never_claimed() {
    rt().block_on(async {
        let f = fixture(&[pool("p", "10.96.0.0/24", 26)]).await;
        let a = Allocator::load(f.cluster.clone(), "n1").await.unwrap();
        a.set_excluded(vec![
            "10.96.0.0/26".parse().unwrap(),
            "10.96.0.64/26".parse().unwrap(),
        ]);
        let ip = a.allocate(&h("c1"), "p").await.unwrap();
        assert!(ip.to_string().starts_with("10.96.0.1"), "{ip}");
        let asked: IpAddr = "10.96.0.5".parse().unwrap();
        let e = a.allocate_address(&h("c2"), "p", asked).await.unwrap_err();
        assert!(e.to_string().contains("another node announces"), "{e}");
    });
}

/// A store whose writes land but whose answers are lost while `lose` is
/// set (etcd frozen mid-request, then thawed): the caller sees an error.
struct LostAnswers {
    inner: Arc<dyn Kv>,
    lose: std::sync::atomic::AtomicBool,
    /// After applying a write, never answer (the caller gives up).
    hang: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl Kv for LostAnswers {
    async fn get(
        &self,
        key: &str,
    ) -> Result<Option<plexus_store::KeyValue>, plexus_store::StoreError> {
        self.inner.get(key).await
    }
    async fn range(
        &self,
        prefix: &str,
    ) -> Result<plexus_store::RangeResult, plexus_store::StoreError> {
        self.inner.range(prefix).await
    }
    async fn create(
        &self,
        key: &str,
        value: &[u8],
        lease: Option<i64>,
    ) -> Result<Option<i64>, plexus_store::StoreError> {
        self.inner.create(key, value, lease).await
    }
    async fn put(
        &self,
        key: &str,
        value: &[u8],
        lease: Option<i64>,
        expect: Option<i64>,
    ) -> Result<Option<i64>, plexus_store::StoreError> {
        let r = self.inner.put(key, value, lease, expect).await;
        if self.hang.load(std::sync::atomic::Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if self.lose.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(plexus_store::StoreError::Unavailable(
                "the answer was lost".into(),
            ));
        }
        r
    }
    async fn delete(
        &self,
        key: &str,
        expect: Option<i64>,
    ) -> Result<bool, plexus_store::StoreError> {
        self.inner.delete(key, expect).await
    }
    async fn grant(&self, ttl: std::time::Duration) -> Result<i64, plexus_store::StoreError> {
        self.inner.grant(ttl).await
    }
    async fn keepalive(
        &self,
        lease: i64,
    ) -> Result<Option<std::time::Duration>, plexus_store::StoreError> {
        self.inner.keepalive(lease).await
    }
    async fn revoke(&self, lease: i64) -> Result<(), plexus_store::StoreError> {
        self.inner.revoke(lease).await
    }
    async fn watch(
        &self,
        prefix: &str,
        from: i64,
    ) -> Result<plexus_store::kv::KvWatchStream, plexus_store::StoreError> {
        self.inner.watch(prefix, from).await
    }
    async fn compact(&self, revision: i64) -> Result<(), plexus_store::StoreError> {
        self.inner.compact(revision).await
    }
}

#[test]
fn a_write_whose_answer_was_lost_is_released_by_the_del_that_follows() {
    rt().block_on(async {
        let f = fixture(&[pool("p", "10.96.0.0/24", 26)]).await;
        let kv = Arc::new(LostAnswers {
            inner: f.kv.clone(),
            lose: Default::default(),
            hang: Default::default(),
        });
        let cluster = Cluster::new(kv.clone(), Layout::default());
        let a = Allocator::load(cluster.clone(), "n1").await.unwrap();
        a.allocate(&h("c0"), "p").await.unwrap();
        kv.lose.store(true, std::sync::atomic::Ordering::SeqCst);
        // The ADD fails (the plugin answers 11), but the write landed.
        assert!(a.allocate(&h("c1"), "p").await.is_err());
        kv.lose.store(false, std::sync::atomic::Ordering::SeqCst);
        let held = |blocks: Vec<Block>| -> Vec<Handle> {
            blocks
                .iter()
                .flat_map(|b| b.allocations.values().cloned())
                .collect()
        };
        let landed = held(stored_blocks(&f.cluster).await);
        assert!(landed.contains(&h("c1")), "the write landed");
        // The runtime's DEL after the failed ADD frees what landed.
        assert_eq!(a.release(&h("c1")).await.unwrap(), 1);
        assert_eq!(held(stored_blocks(&f.cluster).await), [h("c0")]);

        // The caller gives up while the write is under way (the control
        // socket's deadline): the write landed, the DEL frees it too.
        kv.hang.store(true, std::sync::atomic::Ordering::SeqCst);
        let gave_up = tokio::time::timeout(
            std::time::Duration::from_millis(200),
            a.allocate(&h("c2"), "p"),
        )
        .await;
        assert!(gave_up.is_err());
        kv.hang.store(false, std::sync::atomic::Ordering::SeqCst);
        assert!(held(stored_blocks(&f.cluster).await).contains(&h("c2")));
        assert_eq!(a.release(&h("c2")).await.unwrap(), 1);
        assert_eq!(held(stored_blocks(&f.cluster).await), [h("c0")]);
    });
}
