//! Cluster IPAM (plexus-ipam's clusterpool) against a real etcd in a
//! namespace this test creates: "nodes" are allocators on their own
//! threads with their own etcd connections, as the agents of a cluster;
//! then plexusctl's `ipam show` and `ipam check` on what they left.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Barrier};

use ipnet::IpNet;
use plexus_ipam::clusterpool::{
    AllocRequest, Attachment, ClusterAllocator, ClusterLayout, ClusterPools, Range,
};
use plexus_store::{EtcdKv, Kv};
use plexus_tests::etcd::Etcd;
use plexus_tests::{bin_dir, require_etcd, require_root, Netns};
use plexusd::answer::cluster_code;
use serde_json::Value;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn kv() -> Arc<dyn Kv> {
    Arc::new(
        EtcdKv::connect(vec!["http://127.0.0.1:2379".into()], None)
            .await
            .unwrap(),
    )
}

async fn node(name: &str) -> ClusterAllocator {
    ClusterAllocator::load(kv().await, ClusterLayout::default(), name)
        .await
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

fn req(cid: &str, ranges: Vec<Range>) -> AllocRequest {
    AllocRequest {
        attachment: Attachment {
            network: "macvlan-net".into(),
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

/// Run `work(n)` for nodes 0..count at once, each on its own thread in
/// `ns` with its own runtime (and so its own etcd connections), released
/// together.
fn on_nodes<T, F, Fut>(ns: &Netns, count: usize, work: F) -> Vec<T>
where
    T: Send,
    F: Fn(usize, ClusterAllocator) -> Fut + Sync,
    Fut: std::future::Future<Output = T>,
{
    let start = Barrier::new(count);
    ns.run(|| {
        std::thread::scope(|s| {
            let threads: Vec<_> = (0..count)
                .map(|n| {
                    let (start, work) = (&start, &work);
                    s.spawn(move || {
                        runtime().block_on(async move {
                            let a = node(&format!("n{n}")).await;
                            start.wait();
                            work(n, a).await
                        })
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        })
    })
}

/// Every address etcd holds → (holder node, container ID); each once.
fn stored(etcd: &Etcd) -> HashMap<IpAddr, (String, String)> {
    let mut out = HashMap::new();
    for (_, v) in etcd.get_prefix("/plexus/clusteripam/blocks/") {
        let b: Value = serde_json::from_str(&v).unwrap();
        let cidr: IpNet = b["cidr"].as_str().unwrap().parse().unwrap();
        for (o, h) in b["allocations"].as_object().unwrap() {
            let o: u32 = o.parse().unwrap();
            let addr = plexus_ipam::arith::offset(cidr.network(), u128::from(o));
            let prev = out.insert(
                addr,
                (
                    h["node"].as_str().unwrap().to_string(),
                    h["containerID"].as_str().unwrap().to_string(),
                ),
            );
            assert!(prev.is_none(), "{addr} recorded twice");
        }
    }
    out
}

#[test]
fn three_nodes_allocating_concurrently_never_share_an_address() {
    require_root!();
    require_etcd!();
    let ns = Netns::new("cipam3");
    let etcd = Etcd::start(&ns, "127.0.0.1");
    const PER_NODE: usize = 150;
    let r = range("10.150.0.0/22");
    let got: Vec<Vec<IpAddr>> = on_nodes(&ns, 3, |n, a| {
        let r = r.clone();
        async move {
            let mut got = Vec::new();
            for i in 0..PER_NODE {
                let g = a
                    .allocate(&req(&format!("n{n}-c{i}"), vec![r.clone()]))
                    .await
                    .unwrap();
                got.push(g[0].address);
            }
            eprintln!("n{n}: {:?}", a.stats());
            got
        }
    });
    let all: Vec<IpAddr> = got.iter().flatten().copied().collect();
    assert_eq!(
        all.iter().collect::<HashSet<_>>().len(),
        3 * PER_NODE,
        "an address given twice"
    );
    let st = stored(&etcd);
    assert_eq!(st.len(), 3 * PER_NODE);
    for (n, addrs) in got.iter().enumerate() {
        for a in addrs {
            assert_eq!(st[a].0, format!("n{n}"), "{a} stored for another node");
        }
    }
    // A restart of n1 gives its attachments their addresses back, from
    // etcd alone.
    ns.block_on(async {
        let a = node("n1").await;
        for (i, addr) in got[1].iter().enumerate() {
            let g = a
                .allocate(&req(&format!("n1-c{i}"), vec![r.clone()]))
                .await
                .unwrap();
            assert_eq!(g[0].address, *addr);
        }
    });
    assert_eq!(
        stored(&etcd).len(),
        3 * PER_NODE,
        "the restart allocated nothing new"
    );
}

#[test]
fn a_28_across_more_nodes_than_blocks_is_fully_used_then_exhausted() {
    require_root!();
    require_etcd!();
    let ns = Netns::new("cipam28");
    let etcd = Etcd::start(&ns, "127.0.0.1");
    // Four /30 blocks, 14 usable addresses, eight nodes asking at once
    // until the range says it is exhausted.
    let r = range("10.151.0.0/28");
    let got: Vec<(Vec<IpAddr>, Vec<String>)> = on_nodes(&ns, 8, |n, a| {
        let r = r.clone();
        async move {
            let mut got = Vec::new();
            let mut errors = Vec::new();
            for i in 0.. {
                match a
                    .allocate(&req(&format!("n{n}-c{i}"), vec![r.clone()]))
                    .await
                {
                    Ok(g) => got.push(g[0].address),
                    Err(e) => {
                        assert_eq!(cluster_code(&e), Some(100), "{e}");
                        errors.push(e.to_string());
                        break;
                    }
                }
            }
            (got, errors)
        }
    });
    let all: Vec<IpAddr> = got.iter().flat_map(|g| g.0.clone()).collect();
    let want: HashSet<IpAddr> = (1..=14).map(|i| ip(&format!("10.151.0.{i}"))).collect();
    assert_eq!(all.len(), 14, "{all:?}");
    assert_eq!(all.iter().copied().collect::<HashSet<_>>(), want);
    for (_, errors) in &got {
        assert!(
            errors[0].contains("10.151.0.0/28") && errors[0].contains("exhausted"),
            "{errors:?}"
        );
    }
    // Nothing is stored for the refused ADDs.
    let st = stored(&etcd);
    assert_eq!(st.len(), 14);
    let blocks = etcd.get_prefix("/plexus/clusteripam/blocks/");
    assert_eq!(blocks.len(), 4, "four /30 blocks");
}

#[test]
fn overlapping_ranges_requested_addresses_and_filters_on_etcd() {
    require_root!();
    require_etcd!();
    let ns = Netns::new("cipamsem");
    let _etcd = Etcd::start(&ns, "127.0.0.1");
    ns.block_on(async {
        let n1 = node("n1").await;
        let n2 = node("n2").await;
        let one = |g: Vec<plexus_ipam::clusterpool::Given>| g[0].address;
        // Overlapping ranges, one network name: never one address twice.
        let wide = range("10.152.0.0/24");
        let narrow = range("10.152.0.0/27");
        let mut seen = HashSet::new();
        for i in 0..30 {
            let (a, r) = if i % 2 == 0 {
                (&n1, &wide)
            } else {
                (&n2, &narrow)
            };
            let addr = one(a
                .allocate(&req(&format!("o{i}"), vec![r.clone()]))
                .await
                .unwrap());
            assert!(seen.insert(addr), "{addr} twice across overlapping ranges");
        }
        // Another network name: independent of them.
        let mut blue = req("b0", vec![narrow.clone()]);
        blue.network_name = "blue".into();
        assert_eq!(one(n1.allocate(&blue).await.unwrap()), ip("10.152.0.1"));
        // enable_overlapping_ranges false: independent too.
        let mut apart = req("p0", vec![narrow.clone()]);
        apart.overlapping = false;
        assert_eq!(one(n2.allocate(&apart).await.unwrap()), ip("10.152.0.1"));

        // Requested addresses: granted if free, 102 if taken, 7 outside.
        let r = range("10.153.0.0/24");
        let mut want = req("q0", vec![r.clone()]);
        want.requested = vec![ip("10.153.0.77")];
        assert_eq!(one(n1.allocate(&want).await.unwrap()), ip("10.153.0.77"));
        let mut again = req("q1", vec![r.clone()]);
        again.requested = vec![ip("10.153.0.77")];
        let e = n2.allocate(&again).await.unwrap_err();
        assert_eq!(cluster_code(&e), Some(102), "{e}");
        again.requested = vec![ip("10.154.0.1")];
        assert_eq!(
            cluster_code(&n2.allocate(&again).await.unwrap_err()),
            Some(7)
        );

        // exclude, range_start/range_end, gateway; dual stack.
        let v4 = Range::new(
            net("10.155.0.0/24"),
            Some(ip("10.155.0.100")),
            Some(ip("10.155.0.104")),
            &[net("10.155.0.101/32")],
            Some(ip("10.155.0.102")),
        )
        .unwrap();
        let v6 = range("fd00:155::/64");
        let mut got = Vec::new();
        for i in 0..3 {
            let g = n1
                .allocate(&req(&format!("d{i}"), vec![v4.clone(), v6.clone()]))
                .await
                .unwrap();
            assert_eq!(g[1].range, net("fd00:155::/64"));
            assert!(g[1].address.is_ipv6());
            got.push(g[0].address);
        }
        assert_eq!(
            got,
            [ip("10.155.0.100"), ip("10.155.0.103"), ip("10.155.0.104")]
        );
        let e = n2
            .allocate(&req("d9", vec![v4.clone(), v6.clone()]))
            .await
            .unwrap_err();
        assert_eq!(cluster_code(&e), Some(100), "{e}");
        assert!(
            n2.held("d9", "net1").await.is_empty(),
            "the failed ADD left its IPv6 address"
        );
    });
}

/// `plexusctl --store etcd://... ARGS` in the namespace: stdout, asserting success.
fn ctl(ns: &Netns, etcd: &Etcd, args: &[&str]) -> String {
    let out = ns
        .cmd(bin_dir().join("plexusctl"))
        .args(["--store", &etcd.url()])
        .args(args)
        .output()
        .expect("spawn plexusctl");
    assert!(
        out.status.success(),
        "plexusctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn plexusctl_ipam_show_and_check_for_cluster_pools() {
    require_root!();
    require_etcd!();
    let ns = Netns::new("cipamctl");
    let etcd = Etcd::start(&ns, "127.0.0.1");
    let r = range("10.156.0.0/28");
    ns.block_on(async {
        let n1 = node("n1").await;
        let n2 = node("n2").await;
        let n3 = node("n3").await;
        n1.touch(now()).await.unwrap();
        n2.touch(now()).await.unwrap();
        // n3 was last seen an hour ago.
        n3.touch(now() - 3600).await.unwrap();
        for i in 0..6 {
            n1.allocate(&req(&format!("a{i}"), vec![r.clone()]))
                .await
                .unwrap();
        }
        // n1: .1-.3 and .4-.6; n2: .8-.11 and .12: every /30 is taken.
        for i in 0..5 {
            n2.allocate(&req(&format!("b{i}"), vec![r.clone()]))
                .await
                .unwrap();
        }
        // So n3 borrows.
        for i in 0..2 {
            n3.allocate(&req(&format!("z{i}"), vec![r.clone()]))
                .await
                .unwrap();
        }
        assert_eq!(n3.stats().borrows, 2, "{:?}", n3.stats());
    });

    let show: Value = serde_json::from_str(&ctl(&ns, &etcd, &["ipam", "show", "--json"])).unwrap();
    let cr = &show["clusterRanges"][0];
    assert_eq!(cr["range"], "10.156.0.0/28");
    assert_eq!(cr["used"], 13);
    assert_eq!(cr["free"], "1");
    assert_eq!(cr["borrowed"], 2);
    let addrs = cr["addresses"].as_array().unwrap();
    assert_eq!(addrs.len(), 13);
    let z0 = addrs.iter().find(|a| a["containerID"] == "z0").unwrap();
    assert_eq!(z0["node"], "n3");
    assert_eq!(z0["interface"], "net1");
    assert_eq!(z0["podNamespace"], "default");
    assert_eq!(z0["podName"], "pod-z0");
    assert_eq!(z0["podUid"], "uid-z0");
    assert_eq!(z0["borrowed"], true);
    assert!(
        show["pools"].as_array().unwrap().is_empty(),
        "no routed pool: {show}"
    );
    let text = ctl(&ns, &etcd, &["ipam", "show", "--blocks"]);
    assert!(
        text.contains("CLUSTER RANGE") && text.contains("CLUSTER BLOCK"),
        "{text}"
    );
    assert!(text.contains("borrowed from"), "{text}");

    // n3 is stale: its two borrowed addresses are reported and released;
    // n1 and n2 are not touched.
    let rep: Value = serde_json::from_str(&ctl(&ns, &etcd, &["ipam", "check", "--json"])).unwrap();
    let stale = rep["report"]["staleNodes"].as_array().unwrap();
    assert_eq!(stale.len(), 1, "{rep}");
    assert_eq!(stale[0]["node"], "n3");
    assert_eq!(stale[0]["addresses"], 2);
    assert_eq!(stored(&etcd).len(), 13, "check alone changes nothing");
    let rel: Value =
        serde_json::from_str(&ctl(&ns, &etcd, &["ipam", "check", "--release", "--json"])).unwrap();
    assert_eq!(rel["released"]["addresses"], 2, "{rel}");
    let st = stored(&etcd);
    assert_eq!(st.len(), 11);
    assert!(st.values().all(|(n, _)| n != "n3"));
    let clean = ctl(&ns, &etcd, &["ipam", "check"]);
    assert!(clean.contains("no leaked"), "{clean}");
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The pools' admin view sees exactly what the allocators wrote.
#[test]
fn node_removal_on_etcd_frees_its_blocks_and_borrowed_addresses() {
    require_root!();
    require_etcd!();
    let ns = Netns::new("cipamrm");
    let etcd = Etcd::start(&ns, "127.0.0.1");
    let r = range("10.157.0.0/28");
    ns.block_on(async {
        let n1 = node("n1").await;
        let n2 = node("n2").await;
        for i in 0..14 {
            let a = if i < 10 { &n1 } else { &n2 };
            a.allocate(&req(&format!("c{i}"), vec![r.clone()]))
                .await
                .unwrap();
        }
        let pools = ClusterPools::new(kv().await, ClusterLayout::default());
        let freed = pools.remove_node("n1").await.unwrap();
        assert_eq!(freed.addresses, 10, "{freed:?}");
        // n2's addresses stay, in blocks left to no node where n1 had them.
        let st = stored(&etcd);
        assert_eq!(st.len(), 4);
        assert!(st.values().all(|(n, _)| n == "n2"));
        n2.resync().await.unwrap();
        // The freed addresses are usable again (n2 adopts or claims).
        for i in 0..10 {
            n2.allocate(&req(&format!("again{i}"), vec![r.clone()]))
                .await
                .unwrap();
        }
        assert!(n2.allocate(&req("late", vec![r.clone()])).await.is_err());
    });
}
