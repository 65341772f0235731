//! The API stand-in (tests/src/apiserver.rs) through the real `kube`
//! client: the calls, answers and errors a client sees from a real API
//! server, for the kinds Plexus reads and writes.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use plexus_tests::apiserver::FakeApiServer;
use plexus_tests::{require_root, Netns};
use serde_json::json;

fn code(e: kube::Error) -> u16 {
    match e {
        kube::Error::Api(s) => s.code,
        e => panic!("not an API error: {e}"),
    }
}

#[test]
fn pods_through_the_kube_client() {
    require_root!();
    let ns = Netns::new("standin");
    let api = FakeApiServer::start_in(&ns);
    ns.block_on(async {
        let client = plexus_k8s::K8s::connect(Some(&api.kubeconfig), Duration::from_secs(5), None)
            .await
            .unwrap()
            .client();
        let pods: Api<Pod> = Api::namespaced(client.clone(), "x");
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web", "labels": {"app": "web", "tier": "front"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]},
        }))
        .unwrap();
        let created = pods.create(&PostParams::default(), &p).await.unwrap();
        assert_eq!(created.metadata.namespace.as_deref(), Some("x"));
        assert!(created.metadata.uid.is_some() && created.metadata.resource_version.is_some());
        assert_eq!(
            code(pods.create(&PostParams::default(), &p).await.unwrap_err()),
            409
        );
        // A stale resourceVersion is a conflict; the current one goes.
        let mut stale = created.clone();
        stale.metadata.resource_version = Some("1".into());
        pods.patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"v": "1"}}})),
        )
        .await
        .unwrap();
        assert_eq!(
            code(
                pods.replace("web", &PostParams::default(), &stale)
                    .await
                    .unwrap_err()
            ),
            409
        );
        // A strategic merge patch, a status patch (the spec stays),
        // selectors.
        let p = pods
            .patch(
                "web",
                &PatchParams::default(),
                &Patch::Strategic(json!({"metadata": {"labels": {"tier": "back"}}})),
            )
            .await
            .unwrap();
        assert_eq!(p.metadata.labels.as_ref().unwrap()["tier"], "back");
        let p = pods
            .patch_status(
                "web",
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"podIP": "10.0.0.5"}, "spec": {"nodeName": "n9"}})),
            )
            .await
            .unwrap();
        assert_eq!(p.status.unwrap().pod_ip.as_deref(), Some("10.0.0.5"));
        assert_eq!(p.spec.unwrap().node_name.as_deref(), Some("n1"));
        let all: Api<Pod> = Api::all(client.clone());
        for (sel, fields, n) in [
            ("tier in (back,db)", "", 1),
            ("tier notin (back)", "", 0),
            ("", "spec.nodeName=n1", 1),
            ("", "spec.nodeName=n2", 0),
        ] {
            let mut lp = ListParams::default();
            if !sel.is_empty() {
                lp = lp.labels(sel);
            }
            if !fields.is_empty() {
                lp = lp.fields(fields);
            }
            assert_eq!(
                all.list(&lp).await.unwrap().items.len(),
                n,
                "{sel} {fields}"
            );
        }
        assert_eq!(
            code(
                all.list(&ListParams::default().fields("spec.bogus=1"))
                    .await
                    .unwrap_err()
            ),
            400
        );
        // Delete with a uid precondition that does not hold, then for real.
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some("other".into()),
                resource_version: None,
            }),
            ..Default::default()
        };
        assert_eq!(code(pods.delete("web", &dp).await.unwrap_err()), 409);
        pods.delete("web", &DeleteParams::default()).await.unwrap();
        assert_eq!(code(pods.get("web").await.unwrap_err()), 404);
        // Namespaces are cluster-scoped objects at /api/v1/namespaces/NAME.
        let nss: Api<Namespace> = Api::all(client);
        nss.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "x"}})).unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(
            nss.get("x").await.unwrap().metadata.name.as_deref(),
            Some("x")
        );
    });
}
