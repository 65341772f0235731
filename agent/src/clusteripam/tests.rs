//! The handler on the file store, as the control socket calls it.

use super::*;
use plexus_agent_api::{
    AttachmentKey, ClusterCheck, ClusterGc, ClusterRange, ClusterRelease, PodRef,
};

async fn handler(dir: &std::path::Path, node: &str) -> (Arc<dyn Kv>, ClusterIpamHandler) {
    let kv: Arc<dyn Kv> = Arc::new(plexus_store::FileKv::open(&dir.join("store")).unwrap());
    let h = ClusterIpamHandler::open(kv.clone(), ClusterLayout::default(), node)
        .await
        .unwrap();
    (kv, h)
}

fn range(cidr: &str) -> ClusterRange {
    ClusterRange {
        range: cidr.parse().unwrap(),
        range_start: None,
        range_end: None,
        exclude: Vec::new(),
        gateway: None,
    }
}

fn allocate(cid: &str, ranges: Vec<ClusterRange>) -> Request {
    Request::ClusterIpamAllocate(ClusterAllocate {
        network: "macvlan-net".into(),
        container_id: cid.into(),
        ifname: "net1".into(),
        network_name: String::new(),
        overlapping: true,
        ranges,
        requested: Vec::new(),
        pod: PodRef {
            namespace: "default".into(),
            name: format!("pod-{cid}"),
            uid: format!("uid-{cid}"),
        },
        block_size_v4: None,
        block_size_v6: None,
    })
}

#[tokio::test]
async fn allocate_check_release_gc() {
    let dir = tempfile::tempdir().unwrap();
    let (kv, h) = handler(dir.path(), "n1").await;
    // No last-seen record before the node holds anything.
    assert!(kv
        .get("/plexus/clusteripam/nodes/n1")
        .await
        .unwrap()
        .is_none());
    let mut r = range("192.168.60.0/24");
    r.gateway = Some("192.168.60.1".parse().unwrap());
    let a = h
        .handle(allocate("c1", vec![r.clone(), range("fd00:60::/64")]))
        .await;
    assert_eq!(
        a,
        json!({"ips": [
            {"address": "192.168.60.2/24", "gateway": "192.168.60.1", "range": "192.168.60.0/24"},
            {"address": "fd00:60::1/64", "range": "fd00:60::/64"}
        ]}),
        "{a}"
    );
    // The node says it is alive once it holds addresses.
    let seen = kv
        .get("/plexus/clusteripam/nodes/n1")
        .await
        .unwrap()
        .expect("a last-seen record after the first allocation");
    let seen: Value = serde_json::from_slice(&seen.value).unwrap();
    assert!(seen["lastSeen"].as_u64().unwrap() > 0, "{seen}");
    assert_eq!(
        h.handle(allocate("c1", vec![r.clone(), range("fd00:60::/64")]))
            .await,
        a
    );
    let check = |cid: &str| {
        Request::ClusterIpamCheck(ClusterCheck {
            network: "macvlan-net".into(),
            container_id: cid.into(),
            ifname: "net1".into(),
        })
    };
    let held = h.handle(check("c1")).await;
    assert_eq!(held["ips"].as_array().unwrap().len(), 2, "{held}");
    assert_eq!(h.handle(check("nobody")).await, json!({"ips": []}));

    let rel = Request::ClusterIpamRelease(ClusterRelease {
        network: "macvlan-net".into(),
        container_id: "c1".into(),
        ifname: "net1".into(),
    });
    assert_eq!(h.handle(rel.clone()).await, json!({"released": 2}));
    assert_eq!(h.handle(rel).await, json!({"released": 0}));

    h.handle(allocate("c2", vec![r.clone()])).await;
    h.handle(allocate("c3", vec![r.clone()])).await;
    let gc = Request::ClusterIpamGc(ClusterGc {
        network: "macvlan-net".into(),
        valid: vec![AttachmentKey {
            container_id: "c3".into(),
            ifname: "net1".into(),
        }],
    });
    assert_eq!(h.handle(gc).await, json!({"released": 1}));
}

#[tokio::test]
async fn refusals_carry_their_codes() {
    let dir = tempfile::tempdir().unwrap();
    let (_kv, h) = handler(dir.path(), "n1").await;
    // A /30: two usable addresses.
    let tiny = range("10.9.0.0/30");
    h.handle(allocate("c1", vec![tiny.clone()])).await;
    h.handle(allocate("c2", vec![tiny.clone()])).await;
    let e = h.handle(allocate("c3", vec![tiny.clone()])).await;
    assert_eq!(e["code"], 100, "{e}");
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("10.9.0.0/30 is exhausted"),
        "{e}"
    );

    let mut want = allocate("c4", vec![range("10.9.1.0/24")]);
    if let Request::ClusterIpamAllocate(a) = &mut want {
        a.requested = vec!["10.9.0.1".parse().unwrap()];
    }
    let e = h.handle(want).await;
    assert_eq!(e["code"], 7, "outside every range: {e}");

    let mut taken = allocate("c4", vec![tiny.clone()]);
    if let Request::ClusterIpamAllocate(a) = &mut taken {
        a.requested = vec!["10.9.0.1".parse().unwrap()];
    }
    assert_eq!(h.handle(taken).await["code"], 102);

    let mut bad = range("10.9.2.0/24");
    bad.range_start = Some("10.9.3.1".parse().unwrap());
    let e = h.handle(allocate("c5", vec![bad])).await;
    assert_eq!(e["code"], 7, "{e}");
    assert!(e["error"].as_str().unwrap().contains("range_start"), "{e}");
    assert_eq!(h.handle(allocate("c5", Vec::new())).await["code"], 7);
    let mut odd = allocate("c5", vec![range("10.9.2.0/24")]);
    if let Request::ClusterIpamAllocate(a) = &mut odd {
        a.block_size_v4 = Some(8);
    }
    assert_eq!(h.handle(odd).await["code"], 7);
}

/// Answers every request it gets with `{"released": 7}`.
struct Routed;

#[async_trait::async_trait]
impl Handler for Routed {
    async fn handle(&self, _: Request) -> Value {
        json!({"released": 7})
    }
}

#[tokio::test]
async fn cluster_ipam_is_served_whatever_else_the_node_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (_kv, h) = handler(dir.path(), "n1").await;
    let h = Arc::new(h);
    let w = WithClusterIpam::new(Handlers::default());
    // Before the store gave this node's allocations: try again later.
    let early = w.handle(allocate("c0", vec![range("10.9.0.0/24")])).await;
    assert_eq!(early["code"], CODE_TRY_AGAIN, "{early}");
    w.set_cluster(h.clone());
    let routed = Request::Release {
        network: "routed".into(),
        container_id: "c".into(),
        ifname: "eth0".into(),
    };
    // No routed network: cluster IPAM works, the routed commands wait.
    let a = w.handle(allocate("c1", vec![range("10.9.0.0/24")])).await;
    assert_eq!(a["ips"][0]["address"], "10.9.0.1/24", "{a}");
    assert_eq!(w.handle(routed.clone()).await["code"], CODE_TRY_AGAIN);
    // Through the socket's dispatch, the wrapper in the slot.
    let slot = Handlers::default();
    let again = WithClusterIpam::new(w.rest.clone());
    again.set_cluster(h.clone());
    *slot.lock().unwrap() = Some(Arc::new(again));
    let line = String::from_utf8(allocate("c1", vec![range("10.9.0.0/24")]).to_line()).unwrap();
    let v = crate::ctlsock::dispatch(&line, &crate::status::Shared::default(), &slot).await;
    assert_eq!(v, a);
    // Once the routed network installs its handler, it gets the rest.
    *w.rest.lock().unwrap() = Some(Arc::new(Routed));
    assert_eq!(w.handle(routed).await, json!({"released": 7}));
    // And the cluster handler refuses what is not its own.
    assert_eq!(h.handle(Request::BgpStatus).await["code"], CODE_TRY_AGAIN);
}

/// Pods as a map `namespace/name` → UID, read directly by the reconciler.
struct FakePods(std::sync::Mutex<std::collections::HashMap<String, String>>);

#[async_trait::async_trait]
impl reconcile::Pods for FakePods {
    fn follow(&self, _node: &str) -> plexus_store::Informer<String> {
        unreachable!("the test calls round() with the UIDs itself")
    }
    async fn uid(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<String>, plexus_store::StoreError> {
        Ok(self
            .0
            .lock()
            .unwrap()
            .get(&format!("{namespace}/{name}"))
            .cloned())
    }
}

fn allocate_for(cid: &str, pod: &str, uid: &str) -> Request {
    let Request::ClusterIpamAllocate(mut a) = allocate(cid, vec![range("192.168.61.0/24")]) else {
        unreachable!()
    };
    a.pod.name = pod.into();
    a.pod.uid = uid.into();
    Request::ClusterIpamAllocate(a)
}

#[tokio::test]
async fn the_reconciler_releases_by_uid_after_grace_and_never_a_live_pod() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let (_kv, h) = handler(dir.path(), "n1").await;
    // web-0 (uid-old) here, gone; web-0 re-created as uid-new elsewhere;
    // db-0 alive here but not yet in the (lagging) informer's cache.
    h.handle(allocate_for("c-old", "web-0", "uid-old")).await;
    h.handle(allocate_for("c-db", "db-0", "uid-db")).await;
    let pods = FakePods(std::sync::Mutex::new(
        [
            ("default/web-0".to_string(), "uid-new".to_string()),
            ("default/db-0".to_string(), "uid-db".to_string()),
        ]
        .into(),
    ));
    let grace = Duration::from_secs(30);
    let r = reconcile::PodReconciler {
        alloc: h.allocator().clone(),
        grace,
    };
    let mut rec = plexus_ipam::clusterpool::Reconciler::new(grace);
    let t0 = Instant::now();
    let cache: HashSet<String> = ["uid-new".to_string()].into();
    assert_eq!(r.round(&mut rec, &pods, &cache, true, t0).await, 0);
    assert_eq!(h.allocator().allocations().await.len(), 2);
    // After the grace period: the old web-0 goes; db-0's direct read
    // finds it alive, so it stays.
    assert_eq!(r.round(&mut rec, &pods, &cache, true, t0 + grace).await, 1);
    let left: Vec<String> = h
        .allocator()
        .allocations()
        .await
        .into_iter()
        .map(|(_, h)| h.pod_uid)
        .collect();
    assert_eq!(left, vec!["uid-db".to_string()]);
    // However often it runs, the live pod keeps its address.
    for i in 2..6 {
        assert_eq!(
            r.round(&mut rec, &pods, &cache, true, t0 + grace * i).await,
            0
        );
    }
    // db-0 deleted for good: it goes one grace period after it is missed.
    pods.0.lock().unwrap().clear();
    assert_eq!(
        r.round(&mut rec, &pods, &cache, true, t0 + grace * 6).await,
        0
    );
    assert_eq!(
        r.round(&mut rec, &pods, &cache, true, t0 + grace * 7).await,
        1
    );
    assert!(h.allocator().allocations().await.is_empty());
}

#[test]
fn the_reconciler_and_node_cleanup_run_only_with_an_api() {
    let opts = |reconcile| Opts {
        cluster_ipam_reconcile: reconcile,
        cluster_ipam_reconcile_grace: 30,
    };
    let store = plexus_store::StoreOptions::default();
    let with_kubeconfig = plexus_store::StoreOptions {
        kubeconfig: Some("/k".into()),
        ..Default::default()
    };
    // etcd without a kubeconfig: nothing of the API's.
    assert!(opts(Switch::Auto)
        .duties("etcd://10.0.0.1:2379", &store, false)
        .is_none());
    // Kubernetes mode, or etcd with a kubeconfig: the reconciler.
    for (url, o) in [("kubernetes", &store), ("etcd://e:2379", &with_kubeconfig)] {
        let d = opts(Switch::Auto).duties(url, o, false).unwrap();
        assert_eq!(d.reconcile, Some(std::time::Duration::from_secs(30)));
        assert!(!d.node_cleanup);
    }
    // Off stays off; node cleanup alone still needs the API.
    assert!(opts(Switch::Off)
        .duties("kubernetes", &store, false)
        .is_none());
    let d = opts(Switch::Off)
        .duties("kubernetes", &store, true)
        .unwrap();
    assert_eq!((d.reconcile, d.node_cleanup), (None, true));
}
