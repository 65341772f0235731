//! The informer over the Kubernetes API stand-in (tests/src/apiserver.rs)
//! in a namespace this test creates: the kinds Plexus watches (pods by
//! node, namespaces, NetworkPolicies, MultiNetworkPolicies in both
//! versions, Services, EndpointSlices, PlexusKeys through KubeKv), with
//! 410 Gone, cut and silent streams, bookmarks, a change during the list
//! and records that do not decode.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use plexus_store::informer::{resources, typed, Event, Informer, KubeObject, KubeSource, KvSource};
use plexus_store::{KubeKv, Kv};
use plexus_tests::apiserver::FakeApiServer;
use plexus_tests::informer::{next, next_sorted, sorted, AfterList, Hook};
use plexus_tests::{require_root, Netns};
use serde_json::{json, Value};

struct Setup {
    ns: Netns,
    api: Arc<FakeApiServer>,
}

fn setup() -> Setup {
    let ns = Netns::new("inf-kube");
    let api = Arc::new(FakeApiServer::start_in(&ns));
    Setup { ns, api }
}

async fn client(api: &FakeApiServer) -> kube::Client {
    plexus_k8s::K8s::connect(
        Some(&api.kubeconfig),
        Duration::from_secs(5),
        Some(Duration::from_secs(320)),
    )
    .await
    .unwrap()
    .client()
}

/// What a test reads of a pod.
#[derive(Debug, Clone, PartialEq)]
struct PodView {
    node: String,
    ip: Option<String>,
}

fn pod_view(_key: &str, o: &KubeObject) -> Result<PodView, serde_json::Error> {
    let p: Pod = typed(o)?;
    let spec = p.spec.unwrap_or_default();
    Ok(PodView {
        node: spec.node_name.unwrap_or_default(),
        ip: p.status.and_then(|s| s.pod_ip),
    })
}

fn pod(ns: &str, name: &str, node: &str) -> Value {
    json!({
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
        "status": {"phase": "Pending"}
    })
}

fn view(node: &str, ip: Option<&str>) -> Arc<PodView> {
    Arc::new(PodView {
        node: node.into(),
        ip: ip.map(String::from),
    })
}

#[test]
fn a_nodes_pods_by_field_selector_with_moves_updates_and_deletes() {
    require_root!();
    let s = setup();
    for (name, node) in [("a", "n1"), ("b", "n2"), ("c", "n1"), ("pending", "")] {
        s.api.create("pods", pod("x", name, node));
    }
    s.ns.block_on(async {
        let c = client(&s.api).await;
        let src = KubeSource::new(c, &resources::pods()).fields("spec.nodeName=n1");
        let mut i = Informer::new(src, pod_view);
        assert_eq!(
            next(&mut i).await,
            Event::Added("x/a".into(), view("n1", None))
        );
        assert_eq!(
            next(&mut i).await,
            Event::Added("x/c".into(), view("n1", None))
        );
        assert_eq!(next(&mut i).await, Event::Synced);
        // Scheduled onto n1: it enters the selection (ADDED for this watch).
        s.api
            .patch("pods", "x", "pending", json!({"spec": {"nodeName": "n1"}}));
        assert_eq!(
            next(&mut i).await,
            Event::Added("x/pending".into(), view("n1", None))
        );
        // Its address is known: an update with both views.
        s.api
            .patch("pods", "x", "a", json!({"status": {"podIP": "10.0.0.5"}}));
        assert_eq!(
            next(&mut i).await,
            Event::Updated("x/a".into(), view("n1", None), view("n1", Some("10.0.0.5")))
        );
        // A label change this view ignores is no event; a pod on another
        // node neither.
        s.api.patch(
            "pods",
            "x",
            "a",
            json!({"metadata": {"labels": {"v": "2"}}}),
        );
        s.api
            .patch("pods", "x", "b", json!({"status": {"podIP": "10.0.0.6"}}));
        // Leaving the selection is a delete, as is a delete.
        s.api
            .patch("pods", "x", "c", json!({"spec": {"nodeName": "n2"}}));
        assert_eq!(
            next(&mut i).await,
            Event::Deleted("x/c".into(), view("n1", None))
        );
        s.api.delete("pods", "x", "pending");
        assert_eq!(
            next(&mut i).await,
            Event::Deleted("x/pending".into(), view("n1", None))
        );
        let keys: Vec<String> = i.cache().snapshot().into_keys().collect();
        assert_eq!(keys, ["x/a"]);
        assert_eq!(i.stats().counts().lists, 1);
    });
}

/// A name and a spec, for the kinds whose spec the test only compares.
fn spec_of(_key: &str, o: &KubeObject) -> Result<(String, String, Value), String> {
    Ok((
        o.types
            .as_ref()
            .map(|t| t.api_version.clone())
            .unwrap_or_default(),
        o.metadata.name.clone().unwrap_or_default(),
        o.data.get("spec").cloned().ok_or("no spec")?,
    ))
}

#[test]
fn every_kind_plexus_watches_lists_and_follows() {
    require_root!();
    let s = setup();
    s.api.create(
        "namespaces",
        json!({"metadata": {"name": "x", "labels": {"team": "a"}}}),
    );
    s.api.create(
        "networkpolicies.networking.k8s.io",
        json!({"metadata": {"name": "deny", "namespace": "x"}, "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}),
    );
    let mnp_spec = json!({"podSelector": {"matchLabels": {"app": "a"}}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]});
    s.api.create(
        "multi-networkpolicies.k8s.cni.cncf.io",
        json!({"metadata": {"name": "m", "namespace": "x", "annotations": {"k8s.v1.cni.cncf.io/policy-for": "net1"}}, "spec": mnp_spec}),
    );
    s.api.create(
        "services",
        json!({"metadata": {"name": "web", "namespace": "x"}, "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}}),
    );
    s.api.create(
        "endpointslices.discovery.k8s.io",
        json!({"metadata": {"name": "web-1", "namespace": "x", "labels": {"kubernetes.io/service-name": "web"}},
               "addressType": "IPv4", "endpoints": [{"addresses": ["10.1.0.5"]}], "ports": [{"port": 80}]}),
    );
    s.ns.block_on(async {
        let c = client(&s.api).await;
        let mut nss = Informer::new(KubeSource::new(c.clone(), &resources::namespaces()), |_, o| {
            typed::<Namespace>(o)
        });
        match next(&mut nss).await {
            Event::Added(k, n) => {
                assert_eq!(k, "x");
                assert_eq!(n.metadata.labels.as_ref().unwrap()["team"], "a");
            }
            e => panic!("{e:?}"),
        }
        assert_eq!(next(&mut nss).await, Event::Synced);
        let mut nps = Informer::new(
            KubeSource::namespaced(c.clone(), &resources::network_policies(), "x"),
            |_, o| typed::<NetworkPolicy>(o),
        );
        match next(&mut nps).await {
            Event::Added(k, p) => {
                assert_eq!(k, "x/deny");
                assert_eq!(p.spec.as_ref().unwrap().policy_types.as_deref(), Some(&["Ingress".to_string()][..]));
            }
            e => panic!("{e:?}"),
        }
        let mut svcs = Informer::new(KubeSource::new(c.clone(), &resources::services()), |_, o| {
            typed::<Service>(o)
        });
        assert!(matches!(next(&mut svcs).await, Event::Added(k, _) if k == "x/web"));
        let mut eps = Informer::new(
            KubeSource::new(c.clone(), &resources::endpoint_slices()).labels("kubernetes.io/service-name=web"),
            |_, o| typed::<EndpointSlice>(o),
        );
        match next(&mut eps).await {
            Event::Added(_, e) => assert_eq!(e.endpoints[0].addresses, ["10.1.0.5"]),
            e => panic!("{e:?}"),
        }
        // One MultiNetworkPolicy, seen through either version.
        for version in ["v1beta1", "v1beta2"] {
            let mut m = Informer::new(
                KubeSource::new(c.clone(), &resources::multi_network_policies(version)),
                spec_of,
            );
            let want = (format!("k8s.cni.cncf.io/{version}"), "m".to_string(), mnp_spec.clone());
            assert_eq!(next(&mut m).await, Event::Added("x/m".into(), Arc::new(want)));
            assert_eq!(next(&mut m).await, Event::Synced);
            s.api.patch(
                "multi-networkpolicies.k8s.cni.cncf.io",
                "x",
                "m",
                json!({"spec": {"ingress": []}}),
            );
            assert!(matches!(next(&mut m).await, Event::Updated(k, _, new) if k == "x/m" && new.2["ingress"] == json!([])));
            s.api.patch(
                "multi-networkpolicies.k8s.cni.cncf.io",
                "x",
                "m",
                json!({"spec": mnp_spec.clone()}),
            );
            assert!(matches!(next(&mut m).await, Event::Updated(..)));
        }
        // Deleting the namespace deletes what is in it, every watch says so.
        s.api.delete("namespaces", "", "x");
        assert!(matches!(next(&mut nss).await, Event::Deleted(k, _) if k == "x"));
        assert_eq!(next(&mut nps).await, Event::Synced);
        assert!(matches!(next(&mut nps).await, Event::Deleted(k, _) if k == "x/deny"));
    });
}

fn ns_obj(name: &str, team: &str) -> Value {
    json!({"metadata": {"name": name, "labels": {"team": team}}})
}

/// A namespace as its `team` label.
fn team(_key: &str, o: &KubeObject) -> Result<String, String> {
    let n: Namespace = typed(o).map_err(|e| e.to_string())?;
    n.metadata
        .labels
        .and_then(|l| l.get("team").cloned())
        .ok_or_else(|| "no team label".into())
}

fn added(k: &str, v: &str) -> Event<String> {
    Event::Added(k.into(), Arc::new(v.into()))
}

#[test]
fn gone_history_410_relists_with_exact_differences() {
    require_root!();
    let s = setup();
    for (n, t) in [("a", "1"), ("b", "2"), ("c", "3")] {
        s.api.create("namespaces", ns_obj(n, t));
    }
    s.ns.block_on(async {
        let c = client(&s.api).await;
        // Between the first list and its watch: changes, then the history
        // is compacted away (the watch gets 410 Gone).
        let api = s.api.clone();
        let hook: Hook = Box::new(move || {
            Box::pin(async move {
                api.delete("namespaces", "", "a");
                api.patch(
                    "namespaces",
                    "",
                    "b",
                    json!({"metadata": {"labels": {"team": "20"}}}),
                );
                api.create("namespaces", ns_obj("d", "4"));
                api.compact("namespaces");
            })
        });
        let src = AfterList::new(KubeSource::new(c, &resources::namespaces()), hook);
        let mut i = Informer::new(src, team);
        for want in [
            added("a", "1"),
            added("b", "2"),
            added("c", "3"),
            Event::Synced,
        ] {
            assert_eq!(next(&mut i).await, want);
        }
        assert_eq!(
            next(&mut i).await,
            Event::Deleted("a".into(), Arc::new("1".into()))
        );
        assert_eq!(
            next(&mut i).await,
            Event::Updated("b".into(), Arc::new("2".into()), Arc::new("20".into()))
        );
        assert_eq!(next(&mut i).await, added("d", "4"));
        assert_eq!(next(&mut i).await, Event::Synced);
        assert_eq!(i.stats().counts().compacted, 1);
        // 410 as an ERROR event on the open watch: listed again, and only
        // what changed meanwhile is handed out.
        s.api.expire_watches("namespaces");
        s.api.delete("namespaces", "", "c");
        assert_eq!(
            next_sorted(&mut i, 2).await,
            sorted(&[
                Event::Deleted("c".into(), Arc::new("3".to_string())),
                Event::Synced
            ])
        );
        let c = i.stats().counts();
        assert_eq!((c.lists, c.compacted), (3, 2));
    });
}

#[test]
fn a_change_made_during_the_list_comes_through_the_watch() {
    require_root!();
    let s = setup();
    s.api.create("namespaces", ns_obj("a", "1"));
    s.ns.block_on(async {
        let c = client(&s.api).await;
        let api = s.api.clone();
        let hook: Hook = Box::new(move || {
            Box::pin(async move {
                api.create("namespaces", ns_obj("z", "26"));
            })
        });
        let src = AfterList::new(KubeSource::new(c, &resources::namespaces()), hook);
        let mut i = Informer::new(src, team);
        assert_eq!(next(&mut i).await, added("a", "1"));
        assert_eq!(next(&mut i).await, Event::Synced);
        assert_eq!(next(&mut i).await, added("z", "26"));
        assert_eq!(i.stats().counts().lists, 1);
    });
}

#[test]
fn a_cut_stream_is_resumed_or_listed_again_and_nothing_is_handed_out_twice() {
    require_root!();
    let s = setup();
    s.api.create("namespaces", ns_obj("a", "1"));
    s.api.create("namespaces", ns_obj("b", "2"));
    s.ns.block_on(async {
        let c = client(&s.api).await;
        let mut i = Informer::new(KubeSource::new(c, &resources::namespaces()), team);
        for _ in 0..3 {
            next(&mut i).await;
        }
        s.api.cut_watches();
        s.api.create("namespaces", ns_obj("c", "3"));
        s.api.delete("namespaces", "", "b");
        // kube ends a watch cut mid-stream as resumable (an unexpected
        // EOF): the call is made again from the last version seen, or, if
        // it ended at once, the informer lists again (a Synced among the
        // events). Either way exactly these changes.
        let mut got = Vec::new();
        while got.iter().filter(|e| !matches!(e, Event::Synced)).count() < 2 {
            got.push(next(&mut i).await);
        }
        let changes: Vec<_> = got
            .iter()
            .filter(|e| !matches!(e, Event::Synced))
            .cloned()
            .collect();
        assert_eq!(
            sorted(&changes),
            sorted(&[
                added("c", "3"),
                Event::Deleted("b".into(), Arc::new("2".into()))
            ])
        );
        s.api.delete("namespaces", "", "a");
        loop {
            match next(&mut i).await {
                Event::Synced => continue,
                e => {
                    assert_eq!(e, Event::Deleted("a".into(), Arc::new("1".into())));
                    break;
                }
            }
        }
        let c = i.stats().counts();
        assert_eq!(c.lists, 1 + c.broken, "{c:?}");
    });
}

#[test]
fn bookmarks_keep_a_quiet_stream_and_a_silent_one_is_replaced() {
    require_root!();
    let s = setup();
    s.api.set_bookmark_interval(Duration::from_millis(200));
    s.api.create("namespaces", ns_obj("a", "1"));
    s.ns.block_on(async {
        let c = client(&s.api).await;
        let mut i = Informer::new(KubeSource::new(c, &resources::namespaces()), team)
            .idle_timeout(Duration::from_secs(2));
        for _ in 0..2 {
            next(&mut i).await;
        }
        // Quiet for three idle timeouts: bookmarks keep the watch.
        let quiet = tokio::time::timeout(Duration::from_secs(6), i.next()).await;
        assert!(
            quiet.is_err(),
            "nothing happened, nothing handed out: {quiet:?}"
        );
        assert_eq!(i.stats().counts().silent, 0);
        // Silenced: only a new list after the idle timeout sees this.
        s.api.stall_watches();
        s.api.create("namespaces", ns_obj("b", "2"));
        assert_eq!(
            next_sorted(&mut i, 2).await,
            sorted(&[added("b", "2"), Event::Synced])
        );
        let c = i.stats().counts();
        assert_eq!((c.lists, c.silent), (2, 1));
        s.api.create("namespaces", ns_obj("c", "3"));
        assert_eq!(next(&mut i).await, added("c", "3"));
    });
}

#[test]
fn a_bad_record_is_skipped_and_counted_once() {
    require_root!();
    let s = setup();
    let np = |name: &str, spec: Value| json!({"metadata": {"name": name, "namespace": "x"}, "spec": spec});
    s.api.create(
        "networkpolicies.networking.k8s.io",
        np("good", json!({"podSelector": {}})),
    );
    // A podSelector that is no label selector: no NetworkPolicy decodes.
    s.api.create(
        "networkpolicies.networking.k8s.io",
        np("bad", json!({"podSelector": 5})),
    );
    s.ns.block_on(async {
        let c = client(&s.api).await;
        let mut i = Informer::new(
            KubeSource::new(c, &resources::network_policies()),
            |_, o| typed::<NetworkPolicy>(o),
        );
        assert!(matches!(next(&mut i).await, Event::Added(k, _) if k == "x/good"));
        assert_eq!(next(&mut i).await, Event::Synced);
        let c = i.stats().counts();
        assert_eq!((c.refused_total, c.refused), (1, 1));
        s.api.expire_watches("networkpolicies.networking.k8s.io");
        assert_eq!(next(&mut i).await, Event::Synced);
        assert_eq!(i.stats().counts().refused_total, 1, "not counted again");
        s.api.patch(
            "networkpolicies.networking.k8s.io",
            "x",
            "bad",
            json!({"spec": {"podSelector": {}}}),
        );
        assert!(matches!(next(&mut i).await, Event::Added(k, _) if k == "x/bad"));
        assert_eq!(i.stats().counts().refused, 0);
    });
}

#[test]
fn plexus_keys_through_kubekv_relist_after_410() {
    require_root!();
    let s = setup();
    s.api
        .serve_resource("plexus.io", "v1", "plexuskeys", "PlexusKey");
    s.ns.block_on(async {
        let c = client(&s.api).await;
        let kv: Arc<dyn Kv> = Arc::new(KubeKv::new(c));
        kv.put("/p/a", b"1", None, None).await.unwrap();
        kv.put("/q/x", b"elsewhere", None, None).await.unwrap();
        let decode = |_: &str, kv: &plexus_store::KeyValue| String::from_utf8(kv.value.clone());
        let kv2 = kv.clone();
        let api = s.api.clone();
        let hook: Hook = Box::new(move || {
            Box::pin(async move {
                kv2.put("/p/b", b"2", None, None).await.unwrap();
                kv2.delete("/p/a", None).await.unwrap();
                api.compact("plexuskeys.plexus.io");
            })
        });
        let mut i = Informer::new(
            AfterList::new(KvSource::new(kv.clone(), "/p/"), hook),
            decode,
        );
        assert_eq!(next(&mut i).await, added("/p/a", "1"));
        assert_eq!(next(&mut i).await, Event::Synced);
        assert_eq!(
            next(&mut i).await,
            Event::Deleted("/p/a".into(), Arc::new("1".into()))
        );
        assert_eq!(next(&mut i).await, added("/p/b", "2"));
        assert_eq!(next(&mut i).await, Event::Synced);
        assert_eq!(i.stats().counts().compacted, 1);
        kv.put("/p/c", b"3", None, None).await.unwrap();
        assert_eq!(next(&mut i).await, added("/p/c", "3"));
    });
}
