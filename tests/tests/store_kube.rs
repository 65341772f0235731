//! plexus-store's Kubernetes lease registry against the API stand-in
//! (tests/src/apiserver.rs), listening inside a namespace this test creates;
//! the client runs on a thread inside it.

use plexus_store::kube::{BACKEND_DATA, BACKEND_TYPE, PUBLIC_IP, SUBNET_KUBE_MANAGED};
use plexus_store::{
    open_lease_registry, AcquireRequest, Event as LeaseChange, StoreError, StoreOptions,
};
use plexus_subnet::{Lease, LeaseAttrs, VxlanBackendData};
use plexus_tests::apiserver::FakeApiServer;
use plexus_tests::{require_root, Netns};
use serde_json::json;

/// flannel's annotations for a node it manages.
fn flannel_annotations(ip: &str, mac: &str) -> serde_json::Value {
    json!({
        SUBNET_KUBE_MANAGED: "true",
        BACKEND_TYPE: "vxlan",
        BACKEND_DATA: format!(r#"{{"VNI":1,"VtepMAC":"{mac}"}}"#),
        PUBLIC_IP: ip,
    })
}

fn request() -> AcquireRequest {
    AcquireRequest {
        node_name: "n1".into(),
        public_ip: Some("192.168.0.1".parse().unwrap()),
        public_ipv6: None,
        previous: None,
        previous_public_ip: None,
        attrs: LeaseAttrs {
            public_ip: Some("192.168.0.1".parse().unwrap()),
            backend_type: "vxlan".into(),
            backend_data: Some(VxlanBackendData {
                vni: 1,
                vtep_mac: [0x0a, 0x58, 0, 0, 0, 1],
            }),
            ..Default::default()
        },
    }
}

struct Cluster {
    ns: Netns,
    api: FakeApiServer,
    _dir: tempfile::TempDir,
    opts: StoreOptions,
}

fn cluster() -> Cluster {
    let ns = Netns::new("kube");
    let api = FakeApiServer::start_in(&ns);
    let dir = tempfile::tempdir().unwrap();
    let net_conf = dir.path().join("net-conf.json");
    std::fs::write(
        &net_conf,
        r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#,
    )
    .unwrap();
    let opts = StoreOptions {
        kubeconfig: Some(api.kubeconfig.clone()),
        node_name: "n1".into(),
        net_config: Some(net_conf),
        ..Default::default()
    };
    Cluster {
        ns,
        api,
        _dir: dir,
        opts,
    }
}

#[test]
fn acquire_publishes_flannels_annotations_and_lists_flannel_nodes() {
    require_root!();
    let c = cluster();
    c.api.add_node("n1", &["10.5.1.0/24"], json!({}));
    c.api.add_node(
        "n2",
        &["10.5.2.0/24"],
        flannel_annotations("192.168.0.2", "0a:58:00:00:00:02"),
    );
    // Not managed by flannel or Plexus: not a lease.
    c.api.add_node("n3", &["10.5.3.0/24"], json!({}));
    let (lease, snap) = c.ns.block_on(async {
        let r = open_lease_registry("kubernetes", &c.opts).await.unwrap();
        assert_eq!(r.network_config().await.unwrap().subnet_len, 24);
        let lease = r.acquire(&request()).await.unwrap();
        r.renew(&lease).await.unwrap();
        (lease, r.list().await.unwrap())
    });
    assert_eq!(lease.subnet, Some("10.5.1.0/24".parse().unwrap()));
    assert_eq!(
        c.api.node_annotation("n1", BACKEND_DATA).as_deref(),
        Some(r#"{"VNI":1,"VtepMAC":"0a:58:00:00:00:01"}"#)
    );
    assert_eq!(
        c.api.node_annotation("n1", BACKEND_TYPE).as_deref(),
        Some("vxlan")
    );
    assert_eq!(
        c.api.node_annotation("n1", PUBLIC_IP).as_deref(),
        Some("192.168.0.1")
    );
    assert_eq!(
        c.api.node_annotation("n1", SUBNET_KUBE_MANAGED).as_deref(),
        Some("true")
    );
    // Renewing with unchanged annotations patches nothing more.
    assert_eq!(c.api.state.lock().unwrap().node_patches.len(), 1);
    let mut keys: Vec<String> = snap.leases.iter().map(|l| l.key()).collect();
    keys.sort();
    assert_eq!(keys, ["10.5.1.0-24", "10.5.2.0-24"]);
    let n2 = snap
        .leases
        .iter()
        .find(|l| l.key() == "10.5.2.0-24")
        .unwrap();
    assert_eq!(n2.attrs.public_ip, Some("192.168.0.2".parse().unwrap()));
    assert_eq!(n2.attrs.backend_data.as_ref().unwrap().vtep_mac[5], 2);
}

/// The next lease event that is not a `Synced`.
async fn next_change(f: &mut plexus_store::Informer<Lease>) -> LeaseChange<Lease> {
    loop {
        let ev = tokio::time::timeout(std::time::Duration::from_secs(60), f.next())
            .await
            .expect("an event within 60 s");
        if ev != LeaseChange::Synced {
            return ev;
        }
    }
}

#[test]
fn follow_tracks_nodes_and_lists_again_after_expiry() {
    require_root!();
    let c = cluster();
    c.api.add_node("n1", &["10.5.1.0/24"], json!({}));
    c.api.add_node(
        "n2",
        &["10.5.2.0/24"],
        flannel_annotations("192.168.0.2", "0a:58:00:00:00:02"),
    );
    c.ns.block_on(async {
        let r = open_lease_registry("kubernetes", &c.opts).await.unwrap();
        let mut f = r.follow();
        // n1 is no lease (not managed): absent, and not a refusal.
        match f.next().await {
            LeaseChange::Added(_, l) => assert_eq!(l.key(), "10.5.2.0-24"),
            e => panic!("expected Added, got {e:?}"),
        }
        assert_eq!(f.next().await, LeaseChange::Synced);
        c.api.add_node(
            "n4",
            &["10.5.4.0/24"],
            flannel_annotations("192.168.0.4", "0a:58:00:00:00:04"),
        );
        match next_change(&mut f).await {
            LeaseChange::Added(_, l) => assert_eq!(l.key(), "10.5.4.0-24"),
            e => panic!("expected Added, got {e:?}"),
        }
        c.api.delete_node("n2");
        match next_change(&mut f).await {
            LeaseChange::Deleted(_, l) => {
                assert_eq!(l.key(), "10.5.2.0-24");
                assert_eq!(l.attrs.public_ip, Some("192.168.0.2".parse().unwrap()));
            }
            e => panic!("expected Deleted, got {e:?}"),
        }
        // A node that stops being managed (annotation removed) is deleted.
        c.api
            .annotate_node("n4", json!({SUBNET_KUBE_MANAGED: null}));
        match next_change(&mut f).await {
            LeaseChange::Deleted(_, l) => assert_eq!(l.key(), "10.5.4.0-24"),
            e => panic!("expected Deleted, got {e:?}"),
        }
        assert_eq!(f.stats().counts().refused_total, 0);
        // History gone (410 Expired) while n5 came and n4 went for good:
        // the informer lists again and hands out just the difference.
        c.api.add_node(
            "n5",
            &["10.5.5.0/24"],
            flannel_annotations("192.168.0.5", "0a:58:00:00:00:05"),
        );
        c.api.compact_nodes();
        match next_change(&mut f).await {
            LeaseChange::Added(_, l) => assert_eq!(l.key(), "10.5.5.0-24"),
            e => panic!("expected Added, got {e:?}"),
        }
        c.api.delete_node("n5");
        assert!(
            matches!(next_change(&mut f).await, LeaseChange::Deleted(_, l) if l.key() == "10.5.5.0-24")
        );
    });
}

#[test]
fn missing_pieces_are_clear_errors() {
    require_root!();
    let c = cluster();
    c.api.add_node("n1", &[], json!({}));
    c.ns.block_on(async {
        let r = open_lease_registry("kubernetes", &c.opts).await.unwrap();
        match r.acquire(&request()).await {
            Err(StoreError::Unavailable(m)) => assert!(m.contains("no spec.podCIDR"), "{m}"),
            other => panic!("expected Unavailable, got {other:?}"),
        }
        let mut o = c.opts.clone();
        o.node_name = "ghost".into();
        let e = open_lease_registry("kubernetes", &o)
            .await
            .err()
            .expect("an error")
            .to_string();
        assert!(e.contains("node \"ghost\" not found"), "{e}");
        o.net_config = None;
        let e = open_lease_registry("kubernetes", &o)
            .await
            .err()
            .expect("an error")
            .to_string();
        assert!(e.contains("--net-config"), "{e}");
    });
    // A podCIDR outside the configured Network is refused.
    c.api.add_node("n1", &["10.9.1.0/24"], json!({}));
    let e = c.ns.block_on(async {
        let r = open_lease_registry("kubernetes", &c.opts).await.unwrap();
        r.acquire(&request()).await.unwrap_err().to_string()
    });
    assert!(
        e.contains("does not contain node n1's podCIDR 10.9.1.0/24"),
        "{e}"
    );
    assert_eq!(
        c.api.node_annotation("n1", PUBLIC_IP),
        None,
        "nothing patched"
    );
}

#[test]
fn an_unreachable_api_server_is_a_clear_error() {
    require_root!();
    let c = cluster();
    // The stand-in's kubeconfig, pointed at a port nothing listens on.
    let text = std::fs::read_to_string(&c.api.kubeconfig).unwrap();
    let dead = c._dir.path().join("dead-kubeconfig");
    std::fs::write(&dead, text.replace(&format!(":{}", c.api.port), ":1")).unwrap();
    let opts = StoreOptions {
        kubeconfig: Some(dead),
        ..c.opts.clone()
    };
    let e =
        c.ns.block_on(async { open_lease_registry("kubernetes", &opts).await.err() });
    match e {
        Some(StoreError::Unavailable(m)) => assert!(m.contains("get node n1"), "{m}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}
