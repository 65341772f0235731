//! Cluster-IPAM pools on the embedded store (FileKv): several "nodes" (one
//! allocator each) over one store, as the agents of a cluster share etcd.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use plexus_ipam::clusterpool::{
    check, usage, AllocRequest, Attachment, ClusterAllocator, ClusterLayout, ClusterPools, Given,
    LocalAttachments, Range,
};
use plexus_ipam::IpamError;
use plexus_store::{FileKv, Kv};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(3)
        .enable_all()
        .build()
        .unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn range(cidr: &str) -> Range {
    Range::new(net(cidr), None, None, &[], None).unwrap()
}

struct Fixture {
    _dir: tempfile::TempDir,
    kv: Arc<dyn Kv>,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let kv: Arc<dyn Kv> = Arc::new(FileKv::open(&dir.path().join("store.json")).unwrap());
        Fixture { _dir: dir, kv }
    }

    async fn node(&self, name: &str) -> ClusterAllocator {
        ClusterAllocator::load(self.kv.clone(), ClusterLayout::default(), name)
            .await
            .unwrap()
    }

    fn pools(&self) -> ClusterPools {
        ClusterPools::new(self.kv.clone(), ClusterLayout::default())
    }

    /// Every address the store holds, with its holder's (node, container).
    async fn stored(&self) -> HashMap<IpAddr, (String, String)> {
        let snap = self.pools().snapshot().await.unwrap();
        let mut out = HashMap::new();
        for lb in snap.blocks {
            for (o, h) in &lb.block.allocations {
                let prev = out.insert(
                    lb.block.address(*o),
                    (h.node.clone(), h.container_id.clone()),
                );
                assert!(prev.is_none(), "{} recorded twice", lb.block.address(*o));
            }
        }
        out
    }
}

fn req(cid: &str, ranges: Vec<Range>) -> AllocRequest {
    AllocRequest {
        attachment: Attachment {
            network: "net1conf".into(),
            container_id: cid.into(),
            ifname: "net1".into(),
            pod_namespace: "default".into(),
            pod_name: format!("pod-{cid}"),
            pod_uid: format!("uid-{cid}"),
        },
        network_name: String::new(),
        overlapping: true,
        ranges,
        requested: Vec::new(),
        block_size_v4: None,
        block_size_v6: None,
    }
}

async fn one(a: &ClusterAllocator, r: &AllocRequest) -> Result<IpAddr, IpamError> {
    a.allocate(r).await.map(|g| {
        assert_eq!(g.len(), 1);
        g[0].address
    })
}

#[test]
fn allocates_from_blocks_skipping_network_gateway_and_is_idempotent() {
    rt().block_on(async {
        let f = Fixture::new();
        let n1 = f.node("n1").await;
        let r = Range::new(
            net("192.168.2.0/24"),
            None,
            None,
            &[],
            Some(ip("192.168.2.1")),
        )
        .unwrap();
        let got = n1.allocate(&req("c1", vec![r.clone()])).await.unwrap();
        assert_eq!(
            got,
            [Given {
                address: ip("192.168.2.2"),
                range: net("192.168.2.0/24"),
                gateway: Some(ip("192.168.2.1"))
            }],
            "not .0 (network), not .1 (gateway)"
        );
        // Asking again: the same address, nothing new written.
        let rev = f.kv.range("/").await.unwrap().revision;
        assert_eq!(n1.allocate(&req("c1", vec![r.clone()])).await.unwrap(), got);
        assert_eq!(f.kv.range("/").await.unwrap().revision, rev);
        assert_eq!(
            one(&n1, &req("c2", vec![r.clone()])).await.unwrap(),
            ip("192.168.2.3")
        );
        // A /24 gets /28 blocks: one claimed so far.
        assert_eq!(
            n1.blocks().await,
            [("-/shared".to_string(), net("192.168.2.0/28"))]
        );
        // The record says who holds it.
        let held = n1.held("c2", "net1").await;
        assert_eq!(held.len(), 1);
        let h = &held[0].1;
        assert_eq!(
            (
                h.node.as_str(),
                h.pod_name.as_str(),
                h.pod_uid.as_str(),
                h.network.as_str()
            ),
            ("n1", "pod-c2", "uid-c2", "net1conf")
        );
        // A new allocation needs only the block write: one revision.
        let rev = f.kv.range("/").await.unwrap().revision;
        one(&n1, &req("c3", vec![r.clone()])).await.unwrap();
        assert_eq!(f.kv.range("/").await.unwrap().revision, rev + 1);
    });
}

#[test]
fn three_nodes_allocating_at_once_never_share_an_address() {
    rt().block_on(async {
        let f = Arc::new(Fixture::new());
        let r = range("10.50.0.0/22");
        let mut tasks = Vec::new();
        for n in 0..3 {
            let (f, r) = (f.clone(), r.clone());
            tasks.push(tokio::spawn(async move {
                let a = f.node(&format!("n{n}")).await;
                let mut got = Vec::new();
                for i in 0..100 {
                    got.push(
                        one(&a, &req(&format!("n{n}-c{i}"), vec![r.clone()]))
                            .await
                            .unwrap(),
                    );
                }
                (got, a.stats())
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            let (got, stats) = t.await.unwrap();
            eprintln!("{stats:?}");
            all.extend(got);
        }
        assert_eq!(
            all.iter().collect::<HashSet<_>>().len(),
            300,
            "an address given twice"
        );
        let stored = f.stored().await;
        assert_eq!(stored.len(), 300);
        for a in &all {
            assert!(stored.contains_key(a), "{a} handed out but not stored");
        }
    });
}

#[test]
fn a_small_range_shared_by_more_nodes_than_blocks_is_fully_used_then_exhausted() {
    rt().block_on(async {
        let f = Fixture::new();
        // A /28: 14 usable addresses in four /30 blocks; six nodes.
        let r = range("10.60.0.0/28");
        let mut nodes = Vec::new();
        for n in 0..6 {
            nodes.push(f.node(&format!("n{n}")).await);
        }
        let mut got = HashSet::new();
        for i in 0..14 {
            let a = &nodes[i % 6];
            let addr = one(a, &req(&format!("c{i}"), vec![r.clone()]))
                .await
                .unwrap();
            assert!(got.insert(addr), "{addr} given twice");
        }
        let want: HashSet<IpAddr> = (1..=14).map(|i| ip(&format!("10.60.0.{i}"))).collect();
        assert_eq!(got, want, "every usable address of the /28 used");
        let borrows: u64 = nodes.iter().map(|n| n.stats().borrows).sum();
        assert!(borrows > 0, "nodes without a block borrowed");
        // The next ADD, on any node: code 100, saying the range is exhausted,
        // and nothing left behind for it.
        let before = f.stored().await;
        for n in &nodes {
            let e = one(n, &req("late", vec![r.clone()])).await.unwrap_err();
            assert!(matches!(e, IpamError::Exhausted(_)), "{e}");
            let msg = e.to_string();
            assert!(
                msg.contains("10.60.0.0/28") && msg.contains("exhausted"),
                "{msg}"
            );
        }
        assert_eq!(f.stored().await, before);
        // Freed on one node, usable from another.
        assert_eq!(nodes[3].release("c3", "net1").await.unwrap(), 1);
        let again = one(&nodes[5], &req("late", vec![r.clone()])).await.unwrap();
        assert!(want.contains(&again));
        let u = usage(&f.pools().snapshot().await.unwrap());
        let ru = &u.ranges[0];
        assert_eq!(
            (
                ru.range.as_str(),
                ru.used,
                ru.free.as_str(),
                ru.size.as_str()
            ),
            ("10.60.0.0/28", 14, "0", "14")
        );
        assert!(ru.borrowed > 0);
        assert_eq!(ru.blocks_per_node.values().sum::<usize>(), 4);
    });
}

#[test]
fn overlapping_ranges_with_and_without_network_name() {
    rt().block_on(async {
        let f = Fixture::new();
        let n1 = f.node("n1").await;
        let n2 = f.node("n2").await;
        let wide = range("10.70.0.0/24");
        let narrow = range("10.70.0.0/26");
        // One network name, overlap protection on: one space, no address twice.
        let mut got = HashSet::new();
        for i in 0..20 {
            let (a, r) = if i % 2 == 0 {
                (&n1, &wide)
            } else {
                (&n2, &narrow)
            };
            let addr = one(a, &req(&format!("o{i}"), vec![r.clone()]))
                .await
                .unwrap();
            assert!(
                got.insert(addr),
                "{addr} given twice across overlapping ranges"
            );
            assert!(r.cidr.contains(&addr));
        }
        // Another network name: the same range, independent.
        let mut blue = req("b0", vec![wide.clone()]);
        blue.network_name = "blue".into();
        assert_eq!(one(&n1, &blue).await.unwrap(), ip("10.70.0.1"));
        // Overlap protection off: each range its own, so the narrow range
        // gives .1 again although the shared space holds it.
        let mut apart = req("a0", vec![narrow.clone()]);
        apart.overlapping = false;
        assert_eq!(one(&n2, &apart).await.unwrap(), ip("10.70.0.1"));
        // n1 claims a block of its own in that range (/28 blocks for a /26)
        // rather than borrowing from n2's.
        let mut apart2 = req("a1", vec![narrow.clone()]);
        apart2.overlapping = false;
        assert_eq!(one(&n1, &apart2).await.unwrap(), ip("10.70.0.16"));
        // A bad network name never reaches the store.
        let mut bad = req("x", vec![wide.clone()]);
        bad.network_name = "a/b".into();
        let e = one(&n1, &bad).await.unwrap_err();
        assert!(
            matches!(e, IpamError::Invalid(_) | IpamError::NotFound(_)),
            "{e}"
        );
    });
}

#[test]
fn requested_addresses_are_granted_only_when_free() {
    rt().block_on(async {
        let f = Fixture::new();
        let n1 = f.node("n1").await;
        let n2 = f.node("n2").await;
        let r = Range::new(
            net("10.80.0.0/24"),
            None,
            None,
            &[net("10.80.0.128/25")],
            Some(ip("10.80.0.1")),
        )
        .unwrap();
        let ask = |cid: &str, a: &str| {
            let mut q = req(cid, vec![r.clone()]);
            q.requested = vec![ip(a)];
            q
        };
        assert_eq!(
            one(&n1, &ask("c1", "10.80.0.50")).await.unwrap(),
            ip("10.80.0.50")
        );
        assert_eq!(
            one(&n1, &ask("c1", "10.80.0.50")).await.unwrap(),
            ip("10.80.0.50")
        );
        // Taken (n2 asks for it: it is in n1's block): 102.
        let e = one(&n2, &ask("c2", "10.80.0.50")).await.unwrap_err();
        assert!(matches!(e, IpamError::InUse(_)), "{e}");
        // In n1's block but free: n2 borrows it.
        assert_eq!(
            one(&n2, &ask("c2", "10.80.0.51")).await.unwrap(),
            ip("10.80.0.51")
        );
        assert_eq!(n2.stats().borrows, 1);
        // The gateway, an excluded one, the network address: 102 with why.
        for (a, says) in [
            ("10.80.0.1", "gateway"),
            ("10.80.0.200", "excluded"),
            ("10.80.0.0", "network"),
        ] {
            let e = one(&n2, &ask("c3", a)).await.unwrap_err();
            assert!(matches!(e, IpamError::InUse(_)), "{e}");
            assert!(e.to_string().contains(says), "{e}");
        }
        // Outside every range: 7.
        let e = one(&n2, &ask("c3", "10.81.0.5")).await.unwrap_err();
        assert!(
            matches!(e, IpamError::Invalid(_) | IpamError::NotFound(_)),
            "{e}"
        );
        // The same attachment asking for another one: refused.
        let e = one(&n1, &ask("c1", "10.80.0.60")).await.unwrap_err();
        assert!(matches!(e, IpamError::InUse(_)), "{e}");
        // A requested address in no block yet: that block is claimed.
        assert_eq!(
            one(&n2, &ask("c4", "10.80.0.100")).await.unwrap(),
            ip("10.80.0.100")
        );
        assert!(n2
            .blocks()
            .await
            .iter()
            .any(|(_, b)| *b == net("10.80.0.96/28")));
        // Nothing left of the refused ones.
        let stored = f.stored().await;
        assert_eq!(stored.len(), 3, "{stored:?}");
    });
}

#[test]
fn exclude_range_start_and_end_and_dual_stack() {
    rt().block_on(async {
        let f = Fixture::new();
        let n1 = f.node("n1").await;
        let v4 = Range::new(
            net("10.90.0.0/24"),
            Some(ip("10.90.0.10")),
            Some(ip("10.90.0.19")),
            &[net("10.90.0.12/31"), net("10.90.0.16/32")],
            None,
        )
        .unwrap();
        let v6 = Range::new(
            net("fd00:90::/120"),
            Some(ip("fd00:90::f0")),
            None,
            &[],
            None,
        )
        .unwrap();
        let mut got4 = Vec::new();
        let mut got6 = Vec::new();
        for i in 0..7 {
            let g = n1
                .allocate(&req(&format!("c{i}"), vec![v4.clone(), v6.clone()]))
                .await
                .unwrap();
            assert_eq!(g.len(), 2);
            got4.push(g[0].address);
            got6.push(g[1].address);
            assert_eq!(g[1].range, net("fd00:90::/120"));
        }
        let want4: Vec<IpAddr> = [10, 11, 14, 15, 17, 18, 19]
            .iter()
            .map(|i| ip(&format!("10.90.0.{i}")))
            .collect();
        assert_eq!(got4, want4);
        let want6: Vec<IpAddr> = (0xf0..0xf7)
            .map(|i| ip(&format!("fd00:90::{i:x}")))
            .collect();
        assert_eq!(got6, want6);
        // The IPv4 range is full: the dual-stack ADD fails and leaves
        // nothing, its IPv6 address included.
        let before = f.stored().await;
        let e = n1
            .allocate(&req("c9", vec![v4.clone(), v6.clone()]))
            .await
            .unwrap_err();
        assert!(matches!(e, IpamError::Exhausted(_)), "{e}");
        let e = n1
            .allocate(&req("c9", vec![v6.clone(), v4.clone()]))
            .await
            .unwrap_err();
        assert!(matches!(e, IpamError::Exhausted(_)), "{e}");
        assert_eq!(f.stored().await, before, "a failed ADD left an address");
    });
}

#[test]
fn release_gc_restart_and_node_removal() {
    rt().block_on(async {
        let f = Fixture::new();
        let r = range("10.100.0.0/28");
        let n1 = f.node("n1").await;
        let n2 = f.node("n2").await;
        let n3 = f.node("n3").await;
        // n1 and n2 claim the four /30s between them, n3 borrows.
        for i in 0..3 {
            one(&n1, &req(&format!("a{i}"), vec![r.clone()]))
                .await
                .unwrap();
            one(&n2, &req(&format!("b{i}"), vec![r.clone()]))
                .await
                .unwrap();
        }
        // .1-.3 (.0 is the network address), .8-.11, then .12: n1 holds
        // three blocks, n2 one, none is left.
        for i in 0..5 {
            one(&n1, &req(&format!("a{}", i + 3), vec![r.clone()]))
                .await
                .unwrap();
        }
        let b0 = one(&n3, &req("z0", vec![r.clone()])).await.unwrap();
        let b1 = one(&n3, &req("z1", vec![r.clone()])).await.unwrap();
        assert!(n3.blocks().await.is_empty() && n3.stats().borrows == 2);

        // A restart: the same addresses, borrowed ones too.
        let n3b = f.node("n3").await;
        assert_eq!(one(&n3b, &req("z0", vec![r.clone()])).await.unwrap(), b0);
        assert_eq!(n3b.allocations().await.len(), 2);

        // DEL of a borrowed address; DEL again is no error.
        assert_eq!(n3b.release("z0", "net1").await.unwrap(), 1);
        assert_eq!(n3b.release("z0", "net1").await.unwrap(), 0);
        // GC on n1: only n1's addresses of this network not in the valid
        // list; n2's and n3's untouched even in n1's blocks.
        let valid: HashSet<(String, String)> = [("a0".to_string(), "net1".to_string())].into();
        let before = f.stored().await;
        let freed = n1.gc("net1conf", &valid).await.unwrap();
        assert_eq!(freed, 7);
        let after = f.stored().await;
        assert_eq!(after.len(), before.len() - 7);
        assert!(after.values().all(|(n, c)| n != "n1" || c == "a0"));
        assert!(
            after.contains_key(&b1),
            "n3's borrowed address survived n1's GC"
        );
        // GC of another network frees nothing.
        assert_eq!(n2.gc("other", &HashSet::new()).await.unwrap(), 0);
        // GC on n3 collects its borrowed address.
        assert_eq!(n3b.gc("net1conf", &HashSet::new()).await.unwrap(), 1);

        // n2 leaves while n3 holds an address borrowed from n2's block.
        let b2 = one(&n3b, &req("z2", vec![r.clone()])).await.unwrap();
        let owner = f
            .pools()
            .snapshot()
            .await
            .unwrap()
            .blocks
            .into_iter()
            .find(|b| b.block.cidr.contains(&b2))
            .unwrap()
            .block
            .node;
        let freed = f.pools().remove_node(&owner).await.unwrap();
        assert!(freed.addresses >= 1, "{freed:?}");
        let after = f.stored().await;
        assert!(after.values().all(|(n, _)| *n != owner), "{after:?}");
        assert!(after.contains_key(&b2), "another node's address stays");
        let snap = f.pools().snapshot().await.unwrap();
        let orphan = snap
            .blocks
            .iter()
            .find(|b| b.block.cidr.contains(&b2))
            .unwrap();
        assert_eq!(orphan.block.node, "", "kept for no node while in use");
        // A node with no room adopts it.
        let n4 = f.node("n4").await;
        let mut more = 0;
        while one(&n4, &req(&format!("d{more}"), vec![r.clone()]))
            .await
            .is_ok()
        {
            more += 1;
        }
        assert!(more > 0);
        assert!(n4.stats().adoptions + n4.stats().claims > 0);
        let snap = f.pools().snapshot().await.unwrap();
        assert!(
            snap.blocks.iter().all(|b| !b.block.node.is_empty()),
            "{:?}",
            snap.blocks
        );
    });
}

#[test]
fn check_finds_stale_nodes_and_orphaned_addresses_and_release_frees_them() {
    rt().block_on(async {
        let f = Fixture::new();
        let layout = ClusterLayout::default();
        let r = range("10.110.0.0/24");
        let n1 = f.node("n1").await;
        let n2 = f.node("n2").await;
        n1.touch(1_000).await.unwrap();
        n2.touch(1_000).await.unwrap();
        for i in 0..3 {
            one(&n1, &req(&format!("a{i}"), vec![r.clone()]))
                .await
                .unwrap();
            one(&n2, &req(&format!("b{i}"), vec![r.clone()]))
                .await
                .unwrap();
        }
        let pools = f.pools();
        let snap = pools.snapshot().await.unwrap();
        assert!(check(&snap, &layout, 1_100, 600, None).is_clean());
        // n2 not seen for longer than the grace period: reported.
        n1.touch(2_000).await.unwrap();
        let snap = pools.snapshot().await.unwrap();
        let rep = check(&snap, &layout, 2_000, 600, None);
        assert_eq!(rep.stale_nodes.len(), 1);
        assert_eq!(rep.stale_nodes[0].node, "n2");
        assert_eq!(rep.stale_nodes[0].addresses, 3);
        // On n1 only a0 still exists.
        let local = LocalAttachments {
            node: "n1".into(),
            live: [("a0".to_string(), "net1".to_string())].into(),
        };
        let rep = check(&snap, &layout, 2_000, 600, Some(&local));
        let mut orphans: Vec<&str> = rep
            .orphaned_addresses
            .iter()
            .map(|o| o.address.container_id.as_str())
            .collect();
        orphans.sort();
        assert_eq!(orphans, ["a1", "a2"]);
        let released = pools.release(&rep).await.unwrap();
        assert_eq!((released.nodes, released.addresses), (1, 5), "{released:?}");
        let left = f.stored().await;
        assert_eq!(left.len(), 1);
        assert_eq!(left.values().next().unwrap().1, "a0");
        let snap = pools.snapshot().await.unwrap();
        assert!(check(&snap, &layout, 2_000, 600, Some(&local)).is_clean());
        // n1's allocator sees the change at its next write.
        n1.resync().await.unwrap();
        assert_eq!(n1.allocations().await.len(), 1);
    });
}
