//! The routed network's block IPAM and plexusctl's routed commands against
//! a real etcd (Debian's etcd-server) in a namespace this test creates;
//! every client runs on threads inside that namespace.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Barrier};

use plexus_ipam::{Allocator, Cluster, Encap, Handle, Layout, Pool};
use plexus_store::{EtcdKv, Kv};
use plexus_tests::etcd::Etcd;
use plexus_tests::ipam::{assert_disjoint_claims, NodeClaims};
use plexus_tests::{bin_dir, require_etcd, require_root, Netns};
use serde_json::Value;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn cluster(etcd_ip: &str) -> Cluster {
    let kv: Arc<dyn Kv> = Arc::new(
        EtcdKv::connect(vec![format!("http://{etcd_ip}:2379")], None)
            .await
            .unwrap(),
    );
    Cluster::new(kv, Layout::default())
}

fn handle(node: usize, i: usize) -> Handle {
    Handle::new("routed", &format!("n{node}-c{i}"), "eth0")
}

const PER_NODE: usize = 200;

/// Add pools `(name, cidr, block size)` through a client in `ns`.
fn add_pools(ns: &Netns, pools: &[(&str, &str, u8)]) {
    ns.run(|| {
        runtime().block_on(async {
            let c = cluster("127.0.0.1").await;
            for (name, cidr, block_size) in pools {
                c.add_pool(&Pool {
                    name: name.to_string(),
                    cidr: cidr.parse().unwrap(),
                    block_size: *block_size,
                    nat_outgoing: false,
                    encap: Encap::None,
                    disabled: false,
                })
                .await
                .unwrap();
            }
        })
    });
}

/// Run `work(n, allocator of node n)` for nodes n0, n1, n2 at once: each on
/// its own thread inside `ns` (a thread started there inherits the
/// namespace) with its own etcd connection, released together.
fn on_three_nodes<T, F, Fut>(ns: &Netns, work: F) -> Vec<T>
where
    T: Send,
    F: Fn(usize, Allocator) -> Fut + Sync,
    Fut: std::future::Future<Output = T>,
{
    let start = Barrier::new(3);
    ns.run(|| {
        std::thread::scope(|s| {
            let threads: Vec<_> = (0..3)
                .map(|n| {
                    let (start, work) = (&start, &work);
                    s.spawn(move || {
                        runtime().block_on(async move {
                            let a = Allocator::load(cluster("127.0.0.1").await, &format!("n{n}"))
                                .await
                                .unwrap();
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

#[test]
fn three_nodes_claiming_concurrently_never_share_a_block_or_an_address() {
    require_root!();
    require_etcd!();
    let ns = Netns::new("ipam");
    let etcd = Etcd::start(&ns, "127.0.0.1");
    // 512 blocks of 8 addresses: 600 allocations claim ~75 of them, every
    // claim racing the two other nodes for the lowest free one.
    add_pools(&ns, &[("p", "10.60.0.0/20", 29)]);
    let results: Vec<NodeClaims> = on_three_nodes(&ns, |n, a| async move {
        let mut got = Vec::new();
        for i in 0..PER_NODE {
            got.push(a.allocate(&handle(n, i), "p").await.unwrap());
        }
        eprintln!("n{n}: {:?}", a.stats());
        (got, a.blocks().await)
    });
    assert!(results.iter().all(|r| r.0.len() == PER_NODE));
    // What etcd holds: every block one owner, every allocation recorded
    // once.
    let stored: Vec<Value> = etcd
        .get_prefix("/plexus/routed/blocks/")
        .into_iter()
        .map(|(_, v)| serde_json::from_str(&v).unwrap())
        .collect();
    assert_disjoint_claims(&results, &stored);

    // n1 restarts: it gets its addresses back from etcd alone; n2 leaves.
    ns.run(|| {
        runtime().block_on(async {
            let c = cluster("127.0.0.1").await;
            let a = Allocator::load(c.clone(), "n1").await.unwrap();
            for (i, addr) in results[1].0.iter().enumerate() {
                assert_eq!(a.allocate(&handle(1, i), "p").await.unwrap(), *addr);
            }
            let freed = c.remove_node("n2").await.unwrap();
            assert_eq!(freed.addresses, PER_NODE);
            assert_eq!(freed.blocks, results[2].1.len());
            assert!(c.blocks_of("n2").await.unwrap().is_empty());
        })
    });
}

#[test]
fn concurrent_allocate_and_release_on_three_nodes_match_the_store_exactly() {
    require_root!();
    require_etcd!();
    let ns = Netns::new("ipamchurn");
    let etcd = Etcd::start(&ns, "127.0.0.1");
    add_pools(
        &ns,
        &[("p", "10.61.0.0/22", 29), ("p6", "fd00:61::/112", 125)],
    );
    // Each node: 200 attachments, both families; every 4th step it
    // releases an earlier attachment, whose addresses are then reused.
    let live: Vec<HashMap<IpAddr, Handle>> = on_three_nodes(&ns, |n, a| async move {
        let mut live = HashMap::new();
        for i in 0..PER_NODE {
            for pool in ["p", "p6"] {
                let addr = a.allocate(&handle(n, i), pool).await.unwrap();
                let prev = live.insert(addr, handle(n, i));
                assert_eq!(prev, None, "n{n}: {addr} given twice");
            }
            if i % 4 == 3 {
                assert_eq!(a.release(&handle(n, i - 2)).await.unwrap(), 2);
                live.retain(|_, h| *h != handle(n, i - 2));
            }
        }
        live
    });
    let mut want: HashMap<IpAddr, Handle> = HashMap::new();
    for l in &live {
        for (a, h) in l {
            assert!(
                want.insert(*a, h.clone()).is_none(),
                "{a} live on two nodes"
            );
        }
    }
    assert_eq!(want.len(), 3 * 2 * (PER_NODE - PER_NODE / 4));
    // The store holds exactly the live attachments, address for address.
    let got: HashMap<IpAddr, Handle> = ns.run(|| {
        runtime().block_on(async {
            cluster("127.0.0.1")
                .await
                .blocks()
                .await
                .unwrap()
                .into_iter()
                .flat_map(|b| {
                    let b = b.value;
                    b.allocations
                        .iter()
                        .map(|(o, h)| (b.address(*o), h.clone()))
                        .collect::<Vec<_>>()
                })
                .collect()
        })
    });
    assert_eq!(got, want);
    drop(etcd);
}

/// `plexusctl --store etcd://... ARGS` in the namespace: (exit ok, stdout, stderr).
fn ctl(ns: &Netns, etcd: &Etcd, args: &[&str]) -> (bool, String, String) {
    let out = ns
        .cmd(bin_dir().join("plexusctl"))
        .args(["--store", &etcd.url()])
        .args(args)
        .output()
        .expect("spawn plexusctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ctl_ok(ns: &Netns, etcd: &Etcd, args: &[&str]) -> String {
    let (ok, out, err) = ctl(ns, etcd, args);
    assert!(ok, "plexusctl {args:?} failed: {err}");
    out
}

/// The command fails, says `want` on stderr, prints nothing on stdout and
/// leaves the store as it was.
fn ctl_refused(ns: &Netns, etcd: &Etcd, args: &[&str], want: &str) {
    let rev = etcd.revision();
    let (ok, out, err) = ctl(ns, etcd, args);
    assert!(!ok, "plexusctl {args:?} succeeded: {out}");
    assert!(err.contains(want), "plexusctl {args:?}: {err}");
    assert!(out.is_empty(), "{out}");
    assert_eq!(etcd.revision(), rev, "plexusctl {args:?} changed the store");
}

/// A netns with its own etcd for the plexusctl tests below (each test
/// its own, so one failure does not hide another's result).
fn ctl_env() -> (Netns, Etcd) {
    let ns = Netns::new("ctl");
    let etcd = Etcd::start(&ns, "127.0.0.1");
    (ns, etcd)
}

/// `pool add` of blue (10.70.0.0/16, natOutgoing, ipip) and v6
/// (fd00:70::/64 in /124 blocks) through plexusctl.
fn ctl_pools(ns: &Netns, e: &Etcd) {
    ctl_ok(
        ns,
        e,
        &[
            "pool",
            "add",
            "blue",
            "10.70.0.0/16",
            "--nat-outgoing",
            "--encap",
            "ipip",
        ],
    );
    ctl_ok(
        ns,
        e,
        &["pool", "add", "v6", "fd00:70::/64", "--block-size", "124"],
    );
}

/// [`ctl_pools`], then n1 allocates 70 addresses of blue (two blocks)
/// and n2 three of blue and three of v6, through plexus-ipam.
fn ctl_pools_in_use(ns: &Netns, e: &Etcd) {
    ctl_pools(ns, e);
    ns.run(|| {
        runtime().block_on(async {
            let c = cluster("127.0.0.1").await;
            let n1 = Allocator::load(c.clone(), "n1").await.unwrap();
            let n2 = Allocator::load(c.clone(), "n2").await.unwrap();
            for i in 0..70 {
                n1.allocate(&handle(1, i), "blue").await.unwrap();
            }
            for i in 0..3 {
                n2.allocate(&handle(2, i), "blue").await.unwrap();
                n2.allocate(&handle(2, i), "v6").await.unwrap();
            }
        })
    });
}

#[test]
fn plexusctl_pool_add_refuses_bad_pools_and_lists_the_good_ones() {
    require_root!();
    require_etcd!();
    let (ns, etcd) = ctl_env();
    let e = &etcd;
    ctl_pools(&ns, e);
    for (args, why) in [
        (
            &["pool", "add", "red", "10.70.8.0/24"][..],
            "overlaps pool blue",
        ),
        (
            &["pool", "add", "red", "10.71.0.0/16", "--block-size", "33"],
            "outside 20..32",
        ),
        (
            &["pool", "add", "red", "fd00:71::/64", "--block-size", "64"],
            "outside 116..128",
        ),
        (
            &["pool", "add", "red", "10.71.0.0/16", "--encap", "gre"],
            "unknown encapsulation",
        ),
        (&["pool", "add", "red", "10.71.0.300/16"], "not a CIDR"),
        (&["pool", "add", "blue", "10.72.0.0/16"], "already exists"),
        (&["pool", "remove", "green"], "no pool named green"),
    ] {
        ctl_refused(&ns, e, args, why);
    }
    assert_eq!(
        etcd.get_prefix("/plexus/routed/pools/")
            .into_iter()
            .map(|(k, _)| k)
            .collect::<Vec<_>>(),
        ["/plexus/routed/pools/blue", "/plexus/routed/pools/v6"],
        "a refused pool was stored"
    );

    let list = ctl_ok(&ns, e, &["pool", "list"]);
    assert!(list.starts_with("NAME"), "{list}");
    assert!(
        list.contains("blue") && list.contains("10.70.0.0/16") && list.contains("ipip"),
        "{list}"
    );
    let pools: Value = serde_json::from_str(&ctl_ok(&ns, e, &["pool", "list", "--json"])).unwrap();
    assert_eq!(pools[0]["name"], "blue");
    assert_eq!(pools[0]["blockSize"], 26);
    assert_eq!(pools[0]["natOutgoing"], true);
    assert_eq!(pools[1]["cidr"], "fd00:70::/64");
    assert_eq!(pools[1]["blockSize"], 124);
}

#[test]
fn plexusctl_concurrent_overlapping_pool_adds_leave_exactly_one() {
    require_root!();
    require_etcd!();
    let (ns, etcd) = ctl_env();
    let e = &etcd;
    let racers: Vec<bool> = std::thread::scope(|s| {
        let t: Vec<_> = (0..6)
            .map(|i| {
                let (ns, e) = (&ns, e);
                s.spawn(move || {
                    let cidr = format!("10.80.0.0/{}", 16 + i); // all nested
                    ctl(
                        ns,
                        e,
                        &[
                            "pool",
                            "add",
                            &format!("race{i}"),
                            &cidr,
                            "--block-size",
                            "28",
                        ],
                    )
                    .0
                })
            })
            .collect();
        t.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let raced: Vec<String> = etcd
        .get_prefix("/plexus/routed/pools/race")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(raced.len(), 1, "{raced:?}");
    assert_eq!(racers.iter().filter(|ok| **ok).count(), 1, "{racers:?}");
    let winner = raced[0].rsplit('/').next().unwrap().to_string();
    ctl_ok(&ns, e, &["pool", "remove", &winner]);
    assert!(etcd.get_prefix("/plexus/routed/pools/").is_empty());
}

#[test]
fn plexusctl_pool_set_changes_only_what_it_names() {
    require_root!();
    require_etcd!();
    let (ns, etcd) = ctl_env();
    let e = &etcd;
    ctl_pools(&ns, e);
    ctl_ok(&ns, e, &["pool", "set", "blue", "--disabled", "true"]);
    let blue: Value =
        serde_json::from_str(&etcd.get("/plexus/routed/pools/blue").unwrap()).unwrap();
    assert_eq!(
        (blue["disabled"].as_bool(), blue["encap"].as_str()),
        (Some(true), Some("ipip"))
    );
    ctl_ok(&ns, e, &["pool", "set", "blue", "--disabled", "false"]);
    let blue: Value =
        serde_json::from_str(&etcd.get("/plexus/routed/pools/blue").unwrap()).unwrap();
    assert!(!blue["disabled"].as_bool().unwrap_or(false), "{blue}");
    ctl_refused(
        &ns,
        e,
        &["pool", "set", "v6", "--encap", "ipip"],
        "IPv4 only",
    );
    ctl_refused(&ns, e, &["pool", "set", "blue"], "nothing to set");
}

#[test]
fn plexusctl_bgp_and_node_settings_reach_the_store() {
    require_root!();
    require_etcd!();
    let (ns, etcd) = ctl_env();
    let e = &etcd;
    for (args, why) in [
        (&["bgp", "set", "--as", "0"][..], "reserved"),
        (&["bgp", "set", "--as", "4294967296"], "out of range"),
        (
            &["bgp", "peer", "add", "192.0.2.300", "--as", "65001"],
            "not an IPv4 or IPv6 address",
        ),
        (
            &["node", "set", "n1", "--route-reflector", "x"],
            "cluster ID",
        ),
    ] {
        ctl_refused(&ns, e, args, why);
    }
    assert!(
        etcd.get_prefix("/plexus/routed/").is_empty(),
        "a refused setting was stored"
    );

    ctl_ok(&ns, e, &["bgp", "set", "--as", "4200000000", "--no-mesh"]);
    let cfg = etcd.get("/plexus/routed/bgp/config").unwrap();
    let cfg: Value = serde_json::from_str(&cfg).unwrap();
    assert_eq!(cfg["asn"], 4_200_000_000u64);
    assert_eq!(cfg["nodeToNodeMesh"], false);
    ctl_ok(
        &ns,
        e,
        &["bgp", "peer", "add", "192.0.2.1", "--as", "65001"],
    );
    ctl_ok(
        &ns,
        e,
        &[
            "bgp",
            "peer",
            "add",
            "2001:db8::2",
            "--as",
            "65002",
            "--node",
            "n1",
        ],
    );
    let peers: Value =
        serde_json::from_str(&ctl_ok(&ns, e, &["bgp", "peer", "list", "--json"])).unwrap();
    assert_eq!(peers.as_array().unwrap().len(), 2);
    assert!(ctl_ok(&ns, e, &["bgp", "peer", "list"]).contains("(global)"));
    ctl_ok(&ns, e, &["bgp", "peer", "remove", "192.0.2.1"]);
    ctl_refused(
        &ns,
        e,
        &["bgp", "peer", "remove", "192.0.2.1"],
        "no peer 192.0.2.1",
    );
    let peers: Value =
        serde_json::from_str(&ctl_ok(&ns, e, &["bgp", "peer", "list", "--json"])).unwrap();
    assert_eq!(peers.as_array().unwrap().len(), 1, "{peers}");
    ctl_ok(&ns, e, &["node", "set", "n1", "--as", "65010"]);
    ctl_ok(
        &ns,
        e,
        &["node", "set", "n1", "--route-reflector", "244.0.0.1"],
    );
    let n1: Value = serde_json::from_str(&etcd.get("/plexus/routed/nodes/n1").unwrap()).unwrap();
    assert_eq!(
        (n1["asn"].as_u64(), n1["routeReflectorClusterId"].as_str()),
        (Some(65010), Some("244.0.0.1"))
    );
}

#[test]
fn plexusctl_ipam_show_reports_every_block_with_its_node() {
    require_root!();
    require_etcd!();
    let (ns, etcd) = ctl_env();
    let e = &etcd;
    ctl_pools_in_use(&ns, e);
    let show: Value =
        serde_json::from_str(&ctl_ok(&ns, e, &["ipam", "show", "--blocks", "--json"])).unwrap();
    let blocks: Vec<(String, String, u64, u64)> = show["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["cidr"].as_str().unwrap().to_string(),
                b["node"].as_str().unwrap().to_string(),
                b["used"].as_u64().unwrap(),
                b["free"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        blocks,
        [
            ("10.70.0.0/26".to_string(), "n1".to_string(), 64, 0),
            ("10.70.0.64/26".into(), "n1".into(), 6, 58),
            ("10.70.0.128/26".into(), "n2".into(), 3, 61),
            ("fd00:70::/124".into(), "n2".into(), 3, 13),
        ]
    );
    assert_eq!(show["pools"][0]["inUse"], 73);
    assert_eq!(show["pools"][0]["blocks"], 3);
    let text = ctl_ok(&ns, e, &["ipam", "show", "--blocks"]);
    assert!(
        text.contains("BLOCK") && text.contains("10.70.0.128/26  blue  n2    3     61"),
        "{text}"
    );
    assert!(!ctl_ok(&ns, e, &["ipam", "show"]).contains("NODE"));
}

#[test]
fn plexusctl_pool_and_node_remove_free_their_addresses() {
    require_root!();
    require_etcd!();
    let (ns, etcd) = ctl_env();
    let e = &etcd;
    ctl_pools_in_use(&ns, e);
    // Addresses in use: removal refused, then forced.
    ctl_refused(&ns, e, &["pool", "remove", "v6"], "3 address(es) in use");
    assert!(
        etcd.get("/plexus/routed/pools/v6").is_some(),
        "removed anyway"
    );
    let out = ctl_ok(&ns, e, &["pool", "remove", "v6", "--force"]);
    assert!(out.contains("1 block(s), 3 address(es) freed"), "{out}");
    assert_eq!(etcd.get("/plexus/routed/pools/v6"), None);
    // A node leaves.
    ctl_ok(&ns, e, &["node", "set", "n1", "--as", "65010"]);
    let out = ctl_ok(&ns, e, &["node", "remove", "n1"]);
    assert!(out.contains("2 block(s), 70 address(es) freed"), "{out}");
    assert_eq!(etcd.get("/plexus/routed/nodes/n1"), None);
    let left: Vec<String> = etcd
        .get_prefix("/plexus/routed/blocks/")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(left, ["/plexus/routed/blocks/10.70.0.128-26"]);
}
