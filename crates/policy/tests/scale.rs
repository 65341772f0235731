//! How long a full recompute takes with 1,000 pods and 500 policies, and
//! rendering every interface's batch. Prints the figures (run with
//! `--nocapture`); asserts only what the result must hold, never a time.
//!
//! The cluster: 50 namespaces of 20 pods (labels app=app0..app9,
//! team=t0..t4 on namespaces), 10 policies per namespace of every shape
//! (pod selector peers, namespace selector peers, both, ipBlock with
//! except, numeric, range and named ports, egress), spread over 10 nodes.

use std::time::{Duration, Instant};

use plexus_policy::{api, compute, render, Kind, NamespaceInfo, PodInfo, Policy};
use serde_json::json;

const NAMESPACES: usize = 50;
const PODS_PER_NS: usize = 20;
const NODES: usize = 10;

fn cluster(all_on_one_node: bool) -> (Vec<PodInfo>, Vec<NamespaceInfo>, Vec<Policy>) {
    let mut pods = Vec::new();
    let mut namespaces = Vec::new();
    let mut policies = Vec::new();
    for n in 0..NAMESPACES {
        let ns = format!("ns{n}");
        namespaces.push(NamespaceInfo::with_labels(
            &ns,
            [("team".to_string(), format!("t{}", n % 5))].into(),
        ));
        for p in 0..PODS_PER_NS {
            let i = n * PODS_PER_NS + p;
            let node = if all_on_one_node { 0 } else { i % NODES };
            let ip = format!("10.{}.{}.{}", 100 + n / 200, n % 200, p + 1);
            let status = json!([{"name": "cbr0", "interface": "eth0", "ips": [ip], "default": true},
                                {"name": "default/macvlan1", "interface": "net1",
                                 "ips": [format!("192.168.{n}.{}", p + 1)]}]);
            let pod: api::Pod = serde_json::from_value(json!({
                "metadata": {"name": format!("pod{p}"), "namespace": ns, "uid": format!("u{i}"),
                             "labels": {"app": format!("app{}", p % 10), "tier": if p % 2 == 0 { "web" } else { "db" }},
                             "annotations": {api::NETWORK_STATUS: status.to_string()}},
                "spec": {"nodeName": format!("node{node}"),
                         "containers": [{"ports": [{"name": "http", "containerPort": 8000 + p}]}]},
                "status": {"phase": "Running", "podIPs": [{"ip": ip}]}
            }))
            .unwrap();
            pods.push(PodInfo::new(&pod));
        }
        for k in 0..10 {
            let app = format!("app{k}");
            let spec = match k % 5 {
                0 => json!({"podSelector": {"matchLabels": {"app": app}},
                            "ingress": [{"from": [{"podSelector": {"matchLabels": {"tier": "web"}}}],
                                         "ports": [{"port": 80}, {"port": "http"}]}]}),
                1 => json!({"podSelector": {"matchLabels": {"app": app}},
                            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": format!("t{}", k % 5)}}}]}]}),
                2 => {
                    json!({"podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": [app]}]},
                            "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"tier": "db"}}}],
                                         "ports": [{"port": 5000, "endPort": 5100, "protocol": "UDP"}]}]})
                }
                3 => json!({"podSelector": {"matchLabels": {"app": app}},
                            "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.100.7.0/24"]}}],
                                        "ports": [{"port": 443}]},
                                       {"to": [{"namespaceSelector": {"matchLabels": {"team": "t1"}}}],
                                        "ports": [{"port": "http"}]}],
                            "policyTypes": ["Ingress", "Egress"]}),
                _ => json!({"podSelector": {"matchLabels": {"app": app}}, "ingress": [{}]}),
            };
            let kind = if k == 9 {
                Kind::MultiNetworkPolicy
            } else {
                Kind::NetworkPolicy
            };
            let obj: api::PolicyObject = serde_json::from_value(json!({
                "metadata": {"name": format!("p{k}"), "namespace": ns,
                             "annotations": {api::POLICY_FOR: "default/macvlan1"}},
                "spec": spec
            }))
            .unwrap();
            policies.push(Policy::new(kind, &obj).0);
        }
    }
    (pods, namespaces, policies)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
fn thousand_pods_five_hundred_policies() {
    for all_on_one_node in [false, true] {
        let (pods, namespaces, policies) = cluster(all_on_one_node);
        assert_eq!((pods.len(), policies.len()), (1000, 500));
        let mut times = Vec::new();
        let mut desired = None;
        for _ in 0..5 {
            let t = Instant::now();
            desired = Some(compute("node0", &pods, &namespaces, &policies));
            times.push(t.elapsed());
        }
        let d = desired.unwrap();
        let local = if all_on_one_node { 1000 } else { 100 };
        assert_eq!(d.interfaces.len(), 2 * local);
        let isolated = d.interfaces.iter().filter(|i| i.is_isolated()).count();
        assert!(isolated > 0 && isolated < d.interfaces.len());
        let boxes: usize = d
            .interfaces
            .iter()
            .map(|i| i.ingress.ports.len() + i.egress.ports.len())
            .sum();

        let t = Instant::now();
        let msgs: usize = d
            .interfaces
            .iter()
            .map(|i| render::render(i, &["10.255.0.1".parse().unwrap()]).len())
            .sum();
        let render_time = t.elapsed();
        eprintln!(
            "compute, {local} local pods of 1000, 500 policies: median {:?} of 5 ({isolated} of {} interfaces isolated, {boxes} port boxes); render all: {:?} ({msgs} messages)",
            median(times),
            d.interfaces.len(),
            render_time
        );
    }
}
