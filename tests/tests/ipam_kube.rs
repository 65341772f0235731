//! The routed network's store in Kubernetes (`--store kubernetes`):
//! plexus-store's `KubeKv` (PlexusKey objects, resourceVersion as the
//! revision) against the API stand-in (tests/src/apiserver.rs) listening in
//! a namespace this test creates; every client runs on threads inside it.
//! Then block IPAM over it: three nodes claiming at once never share a
//! block or an address, as tests/tests/ipam_etcd.rs checks against etcd;
//! and plexusctl's routed commands with `--store kubernetes`.

use std::collections::HashSet;
use std::sync::{Arc, Barrier};

use plexus_ipam::{Allocator, Cluster, Encap, Handle, Layout, Pool};
use plexus_store::kubekv::{self, GROUP, PLURAL, VERSION};
use plexus_store::{Kv, KvEvent, StoreError, StoreOptions};
use plexus_tests::apiserver::FakeApiServer;
use plexus_tests::ipam::{assert_disjoint_claims, NodeClaims};
use plexus_tests::{next_event, require_root, Netns};
use serde_json::Value;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn api(ns: &Netns) -> FakeApiServer {
    let api = FakeApiServer::start_in(ns);
    api.serve_resource(GROUP, VERSION, PLURAL, "PlexusKey");
    api
}

async fn kv(api: &FakeApiServer) -> Arc<dyn Kv> {
    let opts = StoreOptions {
        kubeconfig: Some(api.kubeconfig.clone()),
        ..Default::default()
    };
    plexus_store::open_kv("kubernetes", &opts).await.unwrap()
}

#[test]
fn keys_as_objects_with_resource_version_compare_and_swap() {
    require_root!();
    let ns = Netns::new("kubekv");
    let api = api(&ns);
    ns.block_on(async {
        let kv = kv(&api).await;
        let r1 = kv.create("/p/a", b"one", None).await.unwrap().unwrap();
        assert_eq!(kv.create("/p/a", b"again", None).await.unwrap(), None);
        let got = kv.get("/p/a").await.unwrap().unwrap();
        assert_eq!((got.value.as_slice(), got.mod_revision), (&b"one"[..], r1));
        // Compare-and-swap: the current revision wins, a stale one changes
        // nothing.
        let r2 = kv.put("/p/a", b"two", None, Some(r1)).await.unwrap().unwrap();
        assert!(r2 > r1);
        assert_eq!(kv.put("/p/a", b"x", None, Some(r1)).await.unwrap(), None);
        assert_eq!(kv.put("/p/a", b"x", None, Some(0)).await.unwrap(), None);
        assert!(!kv.delete("/p/a", Some(r1)).await.unwrap());
        assert_eq!(kv.get("/p/a").await.unwrap().unwrap().value, b"two");
        let got = kv.get("/p/a").await.unwrap().unwrap();
        assert_eq!((got.version, got.create_revision), (2, 1));
        // Unconditional put, binary values, ranges by prefix in key order.
        kv.put("/p/b", &[0xff, 0], None, None).await.unwrap().unwrap();
        kv.put("/q/c", b"other", None, None).await.unwrap().unwrap();
        kv.put("/p/x/deep", b"nested", None, None).await.unwrap().unwrap();
        // A directory's range is label-selected by the server (a key's
        // labels name every directory above it), nested keys included.
        let r = kv.range("/p/").await.unwrap();
        let keys: Vec<&str> = r.kvs.iter().map(|k| k.key.as_str()).collect();
        assert_eq!(keys, ["/p/a", "/p/b", "/p/x/deep"]);
        assert_eq!(kv.range("/p/x/").await.unwrap().kvs.len(), 1);
        // A prefix that is no directory: every key, filtered here.
        assert_eq!(kv.range("/p/a").await.unwrap().kvs.len(), 1);
        assert_eq!(r.kvs[1].value, vec![0xff, 0]);
        // A watch from the range's revision sees later changes under the
        // prefix only, deletes with their last value.
        let mut w = kv.watch("/p/", r.revision + 1).await.unwrap();
        kv.put("/q/c", b"ignored", None, None).await.unwrap();
        let r3 = kv.put("/p/a", b"three", None, Some(r2)).await.unwrap().unwrap();
        assert!(kv.delete("/p/b", None).await.unwrap());
        assert!(!kv.delete("/p/b", None).await.unwrap());
        let ev = next_event(&mut w).await.unwrap();
        assert!(matches!(&ev[..], [KvEvent::Put(k)] if k.key == "/p/a" && k.mod_revision == r3 && k.value == b"three"), "{ev:?}");
        let ev = next_event(&mut w).await.unwrap();
        assert!(matches!(&ev[..], [KvEvent::Delete { key, prev: Some(p), .. }] if key == "/p/b" && p.value == [0xff, 0]), "{ev:?}");
        // Lost history is Compacted (as the stream's first item: the API
        // answers a watch with a 410 ERROR event), so the caller relists.
        api.compact_resource(GROUP, VERSION, PLURAL);
        let first = match kv.watch("/p/", r.revision + 1).await {
            Ok(mut w) => next_event(&mut w).await.err(),
            Err(e) => Some(e),
        };
        assert!(matches!(first, Some(StoreError::Compacted(_))), "{first:?}");
        // TTL leases do not exist here: a clear error, nothing written.
        assert!(kv.grant(std::time::Duration::from_secs(5)).await.is_err());
    });
    // What the API holds: one object per key, named by its digest.
    let objs = api.objects(GROUP, VERSION, PLURAL);
    let keys: HashSet<&str> = objs
        .values()
        .map(|o| o["spec"]["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, HashSet::from(["/p/a", "/p/x/deep", "/q/c"]));
    assert!(objs.contains_key(&kubekv::object_name("/p/a")));
}

#[test]
fn without_the_crd_the_store_says_so() {
    require_root!();
    let ns = Netns::new("kubekvnocrd");
    let stand_in = FakeApiServer::start_in(&ns);
    ns.block_on(async {
        let kv = kv(&stand_in).await;
        let e = kv.range("/plexus/").await.unwrap_err();
        assert!(
            matches!(&e, StoreError::NoConfig(m) if m.contains("plexuskeys.plexus.io")),
            "{e}"
        );
    });
}

fn handle(node: usize, i: usize) -> Handle {
    Handle::new("routed", &format!("n{node}-c{i}"), "eth0")
}

const PER_NODE: usize = 60;

#[test]
fn three_nodes_claiming_concurrently_never_share_a_block_or_an_address() {
    require_root!();
    let ns = Netns::new("ipamkube");
    let api = api(&ns);
    ns.block_on(async {
        let c = Cluster::new(kv(&api).await, Layout::default());
        c.add_pool(&Pool {
            name: "p".into(),
            cidr: "10.62.0.0/22".parse().unwrap(),
            block_size: 29,
            nat_outgoing: false,
            encap: Encap::None,
            disabled: false,
        })
        .await
        .unwrap();
    });
    // Each node on its own thread with its own client, released together:
    // every claim races the two others for the lowest free block.
    let start = Barrier::new(3);
    let results: Vec<NodeClaims> = ns.run(|| {
        std::thread::scope(|s| {
            let threads: Vec<_> = (0..3)
                .map(|n| {
                    let (start, api) = (&start, &api);
                    s.spawn(move || {
                        runtime().block_on(async move {
                            let c = Cluster::new(kv(api).await, Layout::default());
                            let a = Allocator::load(c, &format!("n{n}")).await.unwrap();
                            start.wait();
                            let mut got = Vec::new();
                            for i in 0..PER_NODE {
                                got.push(a.allocate(&handle(n, i), "p").await.unwrap());
                            }
                            (got, a.blocks().await)
                        })
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        })
    });
    assert!(results.iter().all(|r| r.0.len() == PER_NODE));
    // What the API holds: every block one owner, every allocation once.
    let stored: Vec<Value> = api
        .objects(GROUP, VERSION, PLURAL)
        .into_values()
        .filter(|o| {
            o["spec"]["key"]
                .as_str()
                .unwrap()
                .starts_with("/plexus/routed/blocks/")
        })
        .map(|o| serde_json::from_str(o["spec"]["value"].as_str().unwrap()).unwrap())
        .collect();
    assert_disjoint_claims(&results, &stored);
    // n1 restarts and gets its addresses back from the API alone; n2 leaves.
    ns.block_on(async {
        let c = Cluster::new(kv(&api).await, Layout::default());
        let a = Allocator::load(c.clone(), "n1").await.unwrap();
        for (i, addr) in results[1].0.iter().enumerate() {
            assert_eq!(a.allocate(&handle(1, i), "p").await.unwrap(), *addr);
        }
        let freed = c.remove_node("n2").await.unwrap();
        assert_eq!(freed.addresses, PER_NODE);
        assert!(c.blocks_of("n2").await.unwrap().is_empty());
    });
}

/// `plexusctl --store kubernetes --kubeconfig FILE ...` inside `ns`.
fn plexusctl(ns: &Netns, api: &FakeApiServer, args: &[&str]) -> std::process::Output {
    ns.cmd(plexus_tests::bin_dir().join("plexusctl"))
        .args(["--store", "kubernetes", "--kubeconfig"])
        .arg(&api.kubeconfig)
        .args(args)
        .output()
        .expect("spawn plexusctl")
}

#[test]
fn plexusctl_edits_the_routed_records_in_the_api() {
    require_root!();
    let ns = Netns::new("ctlkube");
    let api = api(&ns);
    let ok = |args: &[&str]| {
        let out = plexusctl(&ns, &api, args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    ok(&["pool", "add", "blue", "10.70.0.0/16", "--block-size", "28"]);
    ok(&["bgp", "set", "--as", "65010"]);
    // Checked as with any store, and nothing written when refused.
    let out = plexusctl(&ns, &api, &["pool", "add", "red", "10.70.8.0/24"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("overlaps pool blue"));
    let pools: Value = serde_json::from_str(&ok(&["pool", "list", "--json"])).unwrap();
    assert_eq!(pools[0]["name"], "blue");
    assert_eq!(pools.as_array().unwrap().len(), 1);
    // What the agent reads: the same records, through the same Kv.
    ns.block_on(async {
        let c = Cluster::new(kv(&api).await, Layout::default());
        assert_eq!(c.bgp_config().await.unwrap().asn, 65010);
        assert_eq!(c.pools().await.unwrap()[0].block_size, 28);
    });
    assert_eq!(api.objects(GROUP, VERSION, PLURAL).len(), 2);
}
