//! The policy producer against the data plane's fake kernel: informer
//! events and attachments in, one table entry per isolated pod interface
//! out; attach answered only once programmed (and refused with code 11
//! when the API does not know the pod); detach removes; a policy edited
//! or deleted converges; fail-closed problems counted.

use std::time::Duration;

use plexus_agent_api::policy::{PolicyAttach, PolicyDetach, PolicyInterface, PolicyShow};
use plexus_agent_api::PodRef;
use plexus_policy::{api, Kind, NamespaceInfo, PodInfo, Policy};
use plexus_store::Event;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use super::*;
use crate::dataplane::fake::FakeKernel;
use crate::dataplane::{Entry, Kind as EntryKind};

fn dp(k: &FakeKernel) -> DataPlane {
    DataPlane::start(
        k.clone(),
        None,
        crate::dataplane::Settings {
            resync_every: Duration::from_secs(3600),
            settle: Duration::from_millis(1),
        },
    )
}

fn producer(k: &FakeKernel) -> Producer {
    let settings = Settings {
        node: "n1".into(),
        run_dir: std::env::temp_dir().join("plexus-policy-unit-never-written"),
        resync_every: Duration::from_secs(3600),
    };
    Producer::new(settings, dp(k), Shared::default())
        .with_node_addrs(vec!["10.5.1.1".parse().unwrap()])
}

fn pod(ns: &str, name: &str, node: &str, ip: &str, labels: Value) -> Event<PodInfo> {
    let p: api::Pod = serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": name, "uid": format!("uid-{name}"), "labels": labels},
        "spec": {"nodeName": node},
        "status": {"podIPs": [{"ip": ip}]}
    }))
    .unwrap();
    Event::Added(format!("{ns}/{name}"), Arc::new(PodInfo::new(&p)))
}

fn namespace(name: &str) -> Event<NamespaceInfo> {
    Event::Added(
        name.into(),
        Arc::new(NamespaceInfo::with_labels(name, Default::default())),
    )
}

fn policy(kind: Kind, ns: &str, name: &str, spec: Value, annotations: Value) -> CheckedPolicy {
    let o: api::PolicyObject = serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": name, "annotations": annotations},
        "spec": spec
    }))
    .unwrap();
    Policy::new(kind, &o)
}

fn deny_all(ns: &str) -> CheckedPolicy {
    policy(
        Kind::NetworkPolicy,
        ns,
        "deny",
        json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
        json!({}),
    )
}

fn attach(ns: &str, name: &str, netns: &str, ifs: &[(&str, &str, &str, bool)]) -> PolicyAttach {
    PolicyAttach {
        container_id: format!("c-{name}"),
        netns: netns.into(),
        pod: PodRef {
            namespace: ns.into(),
            name: name.into(),
            uid: format!("uid-{name}"),
        },
        interfaces: ifs
            .iter()
            .map(|(net, ifname, ip, default)| PolicyInterface {
                name: net.to_string(),
                interface: ifname.to_string(),
                ips: vec![ip.to_string()],
                default: *default,
            })
            .collect(),
    }
}

fn synced(p: &mut Producer) {
    for s in Source::ALL {
        p.input(Input::Synced(s));
    }
}

fn tables(k: &FakeKernel) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = k
        .of_kind(EntryKind::Nft)
        .into_iter()
        .filter_map(|e| match e {
            Entry::Table(t) => Some((t.netns.display().to_string(), t.name)),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

async fn attach_now(p: &mut Producer, a: PolicyAttach) -> oneshot::Receiver<Value> {
    let (tx, rx) = oneshot::channel();
    p.command(Cmd::Attach(a, tx));
    p.program().await;
    rx
}

#[tokio::test]
async fn isolated_interfaces_become_tables_in_the_pods_namespace() {
    let k = FakeKernel::default();
    let mut p = producer(&k);
    p.input(Input::Namespace(namespace("x")));
    p.input(Input::Pod(pod(
        "x",
        "a",
        "n1",
        "10.5.1.2",
        json!({"app": "a"}),
    )));
    p.input(Input::Pod(pod("x", "b", "n2", "10.5.2.2", json!({}))));
    synced(&mut p);
    p.program().await;
    // Nothing attached yet: nothing enforced.
    assert!(tables(&k).is_empty());

    // Attached while no policy selects it: answered at once, no table.
    let mut rx = attach_now(
        &mut p,
        attach(
            "x",
            "a",
            "/run/netns/a",
            &[("cluster", "eth0", "10.5.1.2", true)],
        ),
    )
    .await;
    let v = rx.try_recv().expect("answered");
    assert_eq!(v["isolated"], json!([]), "{v}");
    assert!(tables(&k).is_empty());

    // A policy isolating the namespace: a table in a's namespace.
    p.input(Input::Policy(Event::Added(
        "x/deny".into(),
        Arc::new(deny_all("x")),
    )));
    p.program().await;
    assert_eq!(
        tables(&k),
        [("/run/netns/a".to_string(), "plexus_policy_eth0".to_string())]
    );
    let st = p.show(&PolicyShow::default());
    assert_eq!(st.interfaces.len(), 1);
    assert!(st.interfaces[0].ingress_isolated && !st.interfaces[0].egress_isolated);
    assert_eq!(st.interfaces[0].policies, ["NetworkPolicy x/deny"]);
    assert!(p.metrics().contains("plexusd_policy_selected_pods 1"));
    assert!(p
        .metrics()
        .contains("plexusd_policy_policies{kind=\"NetworkPolicy\"} 1"));

    // Edited to select nothing: the table goes.
    let none = policy(
        Kind::NetworkPolicy,
        "x",
        "deny",
        json!({"podSelector": {"matchLabels": {"app": "other"}}, "policyTypes": ["Ingress"]}),
        json!({}),
    );
    let old = Arc::new(deny_all("x"));
    p.input(Input::Policy(Event::Updated(
        "x/deny".into(),
        old,
        Arc::new(none.clone()),
    )));
    p.program().await;
    assert!(tables(&k).is_empty());
    // Back, then deleted: gone again.
    p.input(Input::Policy(Event::Added(
        "x/deny".into(),
        Arc::new(deny_all("x")),
    )));
    p.program().await;
    assert_eq!(tables(&k).len(), 1);
    p.input(Input::Policy(Event::Deleted(
        "x/deny".into(),
        Arc::new(deny_all("x")),
    )));
    p.program().await;
    assert!(tables(&k).is_empty());
}

#[tokio::test]
async fn attach_waits_for_the_api_and_is_refused_when_it_does_not_know_the_pod() {
    let k = FakeKernel::default();
    let mut p = producer(&k);
    p.input(Input::Namespace(namespace("x")));
    p.input(Input::Policy(Event::Added(
        "x/deny".into(),
        Arc::new(deny_all("x")),
    )));
    // Not synced, pod not known: the ADD waits.
    let mut rx = attach_now(
        &mut p,
        attach(
            "x",
            "a",
            "/run/netns/a",
            &[("cluster", "eth0", "10.5.1.2", true)],
        ),
    )
    .await;
    assert!(rx.try_recv().is_err(), "answered before the API was listed");
    synced(&mut p);
    p.program().await;
    assert!(
        rx.try_recv().is_err(),
        "answered before the API knew the pod"
    );
    // The pod arrives: its table is programmed before the answer.
    p.input(Input::Pod(pod("x", "a", "n1", "10.5.1.2", json!({}))));
    p.program().await;
    let v = rx.try_recv().expect("answered once programmed");
    assert_eq!(v["isolated"], json!(["eth0"]), "{v}");
    assert_eq!(tables(&k).len(), 1);

    // Another pod the API never shows: refused with code 11 at the deadline.
    let (tx, mut rx) = oneshot::channel();
    p.command(Cmd::Attach(
        attach(
            "x",
            "ghost",
            "/run/netns/g",
            &[("cluster", "eth0", "10.5.1.9", true)],
        ),
        tx,
    ));
    p.program().await;
    for q in &mut p.pending {
        q.deadline = Instant::now();
    }
    p.expire();
    let v = rx.try_recv().expect("refused");
    assert_eq!(v["code"], 11, "{v}");

    // A pod re-created with another UID is not the attached one.
    let mut a = attach(
        "x",
        "a",
        "/run/netns/a2",
        &[("cluster", "eth0", "10.5.1.3", true)],
    );
    a.pod.uid = "uid-new".into();
    assert!(p.st.api_pod(&a).is_none());

    // Detach: its table goes before the answer.
    let (tx, mut rx) = oneshot::channel();
    p.command(Cmd::Detach(
        PolicyDetach {
            container_id: "c-a".into(),
        },
        tx,
    ));
    p.program().await;
    let v = rx.try_recv().expect("detached");
    assert_eq!(v["removed"], 1, "{v}");
    assert!(tables(&k).is_empty());
    assert!(!p.st.attached.contains_key("c-a"));
}

#[tokio::test]
async fn multi_network_policy_takes_the_networks_it_names_only() {
    let k = FakeKernel::default();
    let mut p = producer(&k);
    p.input(Input::Namespace(namespace("x")));
    p.input(Input::Pod(pod("x", "a", "n1", "10.5.1.2", json!({}))));
    synced(&mut p);
    let mnp = policy(
        Kind::MultiNetworkPolicy,
        "x",
        "m",
        json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
               "ingress": [{"from": [{"ipBlock": {"cidr": "not-a-cidr"}}]}]}),
        json!({"k8s.v1.cni.cncf.io/policy-for": "macvlan1"}),
    );
    assert!(!mnp.1.is_empty(), "an invalid rule is a problem");
    p.input(Input::Policy(Event::Added("x/m".into(), Arc::new(mnp))));
    let a = attach(
        "x",
        "a",
        "/run/netns/a",
        &[
            ("cluster", "eth0", "10.5.1.2", true),
            ("macvlan1", "net1", "192.168.1.2", false),
            ("other", "net2", "192.168.2.2", false),
        ],
    );
    let mut rx = attach_now(&mut p, a).await;
    let v = rx.try_recv().expect("answered");
    assert_eq!(v["isolated"], json!(["net1"]), "{v}");
    assert_eq!(
        tables(&k),
        [("/run/netns/a".to_string(), "plexus_policy_net1".to_string())]
    );
    let st = p.show(&PolicyShow {
        pod: Some("x/a".into()),
    });
    assert_eq!(st.interfaces.len(), 3);
    let net1 = st
        .interfaces
        .iter()
        .find(|i| i.interface == "net1")
        .unwrap();
    assert!(net1.ingress_isolated && net1.egress_isolated);
    assert_eq!(net1.network, "x/macvlan1");
    assert_eq!(st.problems.len(), 1, "{:?}", st.problems);
    assert_eq!(p.st.problems_total, 1);
    assert!(p
        .show(&PolicyShow {
            pod: Some("y/z".into())
        })
        .interfaces
        .is_empty());
}

#[tokio::test]
async fn a_table_deleted_by_hand_is_put_back_and_nothing_else_is_touched() {
    let k = FakeKernel::default();
    let (changes, rx) = tokio::sync::mpsc::unbounded_channel();
    let dp = DataPlane::start(
        k.clone(),
        Some(rx),
        crate::dataplane::Settings {
            resync_every: Duration::from_secs(3600),
            settle: Duration::from_millis(1),
        },
    );
    let settings = Settings {
        node: "n1".into(),
        run_dir: std::env::temp_dir().join("plexus-policy-unit-never-written"),
        resync_every: Duration::from_secs(3600),
    };
    let mut p = Producer::new(settings, dp.clone(), Shared::default())
        .with_node_addrs(vec!["10.5.1.1".parse().unwrap()]);
    p.input(Input::Namespace(namespace("x")));
    p.input(Input::Pod(pod("x", "a", "n1", "10.5.1.2", json!({}))));
    p.input(Input::Policy(Event::Added(
        "x/deny".into(),
        Arc::new(deny_all("x")),
    )));
    synced(&mut p);
    let _rx = attach_now(
        &mut p,
        attach(
            "x",
            "a",
            "/run/netns/a",
            &[("cluster", "eth0", "10.5.1.2", true)],
        ),
    )
    .await;
    let ours = tables(&k);
    assert_eq!(ours.len(), 1);
    // Someone else's table in the same namespace, and ours deleted by hand.
    let foreign = Entry::Table(crate::dataplane::Table {
        netns: "/run/netns/a".into(),
        name: "theirs".into(),
        batch: Default::default(),
        fingerprint: 7,
    });
    k.put(foreign.clone());
    let key = Key::NftTable {
        netns: ours[0].0.clone().into(),
        table: ours[0].1.clone(),
    };
    k.delete(&key);
    // A listing (kernel notification here; for a pod's namespace, the
    // periodic resync) finds it gone and the data plane re-sends it.
    changes
        .send(vec![plexus_netlink::monitor::Change::Nft])
        .unwrap();
    for _ in 0..200 {
        if k.get(&key).is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(k.get(&key).is_some(), "not put back");
    assert!(k.get(&foreign.key()).is_some());
    assert_eq!(dp.stats().repaired, 1);
}

#[tokio::test]
async fn a_previous_runs_tables_are_taken_over_or_removed_once_everything_is_listed() {
    let k = FakeKernel::default();
    // A previous run left tables on a's eth0 (still isolated) and on b's
    // eth0 (no policy isolates it any more).
    for pod in ["a", "b"] {
        k.put(Entry::Table(crate::dataplane::Table {
            netns: format!("/run/netns/{pod}").into(),
            name: "plexus_policy_eth0".into(),
            batch: Default::default(),
            fingerprint: 1,
        }));
    }
    let mut p = producer(&k);
    p.input(Input::Namespace(namespace("x")));
    p.input(Input::Namespace(namespace("y")));
    p.input(Input::Pod(pod("x", "a", "n1", "10.5.1.2", json!({}))));
    p.input(Input::Pod(pod("y", "b", "n1", "10.5.1.3", json!({}))));
    p.input(Input::Policy(Event::Added(
        "x/deny".into(),
        Arc::new(deny_all("x")),
    )));
    for (ns, name) in [("x", "a"), ("y", "b")] {
        let a = attach(
            ns,
            name,
            &format!("/run/netns/{name}"),
            &[("cluster", "eth0", "10.5.1.2", true)],
        );
        p.st.attached.insert(a.container_id.clone(), a);
    }
    // Not everything listed yet: nothing of the previous run is touched.
    p.touch();
    p.program().await;
    assert_eq!(tables(&k).len(), 2);
    synced(&mut p);
    p.program().await;
    // A listing pass of the data plane happens on its next command.
    p.dp.update(Owner::Policy, Vec::new(), Vec::new()).await;
    assert_eq!(
        tables(&k),
        [("/run/netns/a".to_string(), "plexus_policy_eth0".to_string())]
    );
    let Some(Entry::Table(t)) = k.get(&Key::NftTable {
        netns: "/run/netns/a".into(),
        table: "plexus_policy_eth0".into(),
    }) else {
        panic!("a's table gone")
    };
    assert_ne!(t.fingerprint, 1, "a's table re-sent as this run renders it");
}
