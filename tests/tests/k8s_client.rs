//! The real kube client (crates/k8s) against the API stand-in: the JSON the
//! stand-in serves must be what the client expects from a real server.

use plexus_k8s::{BlockingK8s, NETWORK_STATUS_ANNOTATION};
use plexus_tests::apiserver::FakeApiServer;
use plexus_tests::{require_root, Netns};
use serde_json::json;
use std::time::Duration;

#[test]
fn pod_nad_and_status_round_trip() {
    require_root!();
    let node = Netns::new("api");
    let api = FakeApiServer::start_in(&node);
    api.add_pod(
        "ns1",
        "web",
        json!({"k8s.v1.cni.cncf.io/networks": "storage"}),
    );
    api.add_nad(
        "ns1",
        "storage",
        &json!({"cniVersion": "1.0.0", "type": "bridge"}),
    );
    // The client runs where the plugin would: inside the node namespace.
    node.run(|| {
        let k = BlockingK8s::from_kubeconfig(&api.kubeconfig, Duration::from_secs(5)).unwrap();

        let pod = k.pod("ns1", "web").unwrap().unwrap();
        assert_eq!(pod.uid, "uid-ns1-web");
        assert_eq!(pod.annotations["k8s.v1.cni.cncf.io/networks"], "storage");
        assert!(k.pod("ns1", "gone").unwrap().is_none());

        let conf = k.nad_config("ns1", "storage").unwrap().unwrap();
        assert!(conf.contains("bridge"));
        assert!(k.nad_config("ns1", "nope").unwrap().is_none());

        k.set_network_status("ns1", "web", r#"[{"name":"x"}]"#)
            .unwrap();
        assert_eq!(
            api.pod_annotation("ns1", "web", NETWORK_STATUS_ANNOTATION)
                .as_deref(),
            Some(r#"[{"name":"x"}]"#)
        );
        // The other annotation survived the merge patch.
        assert_eq!(
            api.pod_annotation("ns1", "web", "k8s.v1.cni.cncf.io/networks")
                .as_deref(),
            Some("storage")
        );
        assert!(k.set_network_status("ns1", "gone", "[]").is_err());
    });
}

#[test]
fn wrong_token_is_an_error() {
    require_root!();
    let node = Netns::new("api");
    let api = FakeApiServer::start_in(&node);
    api.add_pod("ns1", "web", json!({}));
    let bad = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        bad.path(),
        std::fs::read_to_string(&api.kubeconfig)
            .unwrap()
            .replace(&api.token, "wrong"),
    )
    .unwrap();
    let e = node.run(|| {
        let k = BlockingK8s::from_kubeconfig(bad.path(), Duration::from_secs(5)).unwrap();
        k.pod("ns1", "web").unwrap_err()
    });
    assert!(e.to_string().contains("get pod ns1/web"), "{e}");
    assert!(
        e.to_string().contains("401") || e.to_string().contains("Unauthorized"),
        "{e}"
    );
}
