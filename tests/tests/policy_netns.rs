//! plexus-policy end to end without the agent: three pod namespaces on a
//! node namespace (eth0 on bridge br0, the cluster network; net1 on br1, a
//! secondary network), a NetworkPolicy and a MultiNetworkPolicy compiled by
//! the engine, rendered and committed into each pod's namespace exactly as
//! plexusd will; then every pair of pods probes TCP 80, TCP 81 and UDP 53
//! on both networks with real packets, and each answer must be what the
//! engine's evaluator says. Also: the node's own address passes, drop
//! counters count, re-rendering is idempotent, and a pod no policy
//! isolates any more loses its table.

use std::collections::BTreeMap;
use std::net::IpAddr;

use plexus_netlink::nft;
use plexus_policy::{
    api, compute, render, Direction, InterfaceRules, Kind, NamespaceInfo, PodInfo, Policy,
};
use plexus_tests::{probe, require_root, Netns};
use serde_json::{json, Value};

const PODS: [&str; 3] = ["a", "b", "c"];
const NODE_ADDR: &str = "10.77.0.254";

fn eth0(p: &str) -> IpAddr {
    format!("10.77.0.{}", PODS.iter().position(|x| *x == p).unwrap() + 1)
        .parse()
        .unwrap()
}

fn net1(p: &str) -> IpAddr {
    format!("10.78.0.{}", PODS.iter().position(|x| *x == p).unwrap() + 1)
        .parse()
        .unwrap()
}

struct Cluster {
    node: Netns,
    pods: BTreeMap<&'static str, Netns>,
}

fn build() -> Cluster {
    let node = Netns::new("polnode");
    for (br, addr) in [("br0", Some(format!("{NODE_ADDR}/24"))), ("br1", None)] {
        node.ip(&["link", "add", br, "type", "bridge"]);
        node.ip(&["link", "set", br, "up"]);
        if let Some(a) = addr {
            node.ip(&["addr", "add", &a, "dev", br]);
        }
    }
    let mut pods = BTreeMap::new();
    for p in PODS {
        let ns = Netns::new(&format!("pol{p}"));
        for (ifname, br, addr) in [("eth0", "br0", eth0(p)), ("net1", "br1", net1(p))] {
            let host = format!("v{p}{ifname}");
            node.ip(&[
                "link", "add", &host, "type", "veth", "peer", "name", ifname, "netns", &ns.name,
            ]);
            node.ip(&["link", "set", &host, "master", br, "up"]);
            ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", ifname]);
            ns.ip(&["link", "set", ifname, "up"]);
        }
        pods.insert(p, ns);
    }
    Cluster { node, pods }
}

fn pod_json(p: &str) -> Value {
    let status = json!([
        {"name": "cbr0", "interface": "eth0", "ips": [eth0(p).to_string()], "default": true},
        {"name": "x/net1", "interface": "net1", "ips": [net1(p).to_string()]},
    ]);
    json!({
        "metadata": {"name": p, "namespace": "x", "uid": format!("uid-{p}"),
                     "labels": {"pod": p},
                     "annotations": {api::NETWORK_STATUS: status.to_string()}},
        "spec": {"nodeName": "node1",
                 "containers": [{"ports": [{"name": "http", "containerPort": 80}]}]},
        "status": {"phase": "Running", "podIPs": [{"ip": eth0(p).to_string()}]}
    })
}

fn policy(kind: Kind, name: &str, spec: Value) -> Policy {
    let obj: api::PolicyObject = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "x",
                     "annotations": {api::POLICY_FOR: "net1"}},
        "spec": spec
    }))
    .unwrap();
    let (p, problems) = Policy::new(kind, &obj);
    assert!(problems.is_empty(), "{problems:?}");
    p
}

/// The engine's rules for every interface of the node, by (pod, ifname).
fn desired(policies: &[Policy]) -> BTreeMap<(String, String), InterfaceRules> {
    let pods: Vec<PodInfo> = PODS
        .iter()
        .map(|p| PodInfo::new(&serde_json::from_value(pod_json(p)).unwrap()))
        .collect();
    let namespaces = [NamespaceInfo::with_labels("x", Default::default())];
    compute("node1", &pods, &namespaces, policies)
        .interfaces
        .into_iter()
        .map(|r| ((r.pod.name.clone(), r.ifname.clone()), r))
        .collect()
}

fn node_addrs() -> Vec<IpAddr> {
    vec![NODE_ADDR.parse().unwrap()]
}

/// Renders and commits every interface's batch in its pod's namespace.
fn apply(c: &Cluster, rules: &BTreeMap<(String, String), InterfaceRules>) {
    for ((pod, _), r) in rules {
        let batch = render::render(r, &node_addrs());
        c.pods[pod.as_str()].run(|| batch.commit(&nft::Socket::open().unwrap()).unwrap());
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum P {
    Tcp(u16),
    Udp(u16),
}

fn probe_once(c: &Cluster, from: &str, to: IpAddr, p: P) -> bool {
    let ns = &c.pods[from];
    match p {
        P::Tcp(port) => probe::tcp(ns, None, to, port),
        P::Udp(port) => probe::udp(ns, None, to, port),
    }
}

/// Every pair on both networks and every probe: real answer == evaluator.
/// Returns how many were blocked (so a caller can tell the rules did bite).
fn compare(c: &Cluster, rules: &BTreeMap<(String, String), InterfaceRules>) -> usize {
    let mut blocked = 0;
    let mut mismatches = Vec::new();
    for (ifname, addr) in [("eth0", eth0 as fn(&str) -> IpAddr), ("net1", net1)] {
        for from in PODS {
            for to in PODS.iter().filter(|t| **t != from) {
                let (src, dst) = (addr(from), addr(to));
                let out = &rules[&(from.to_string(), ifname.to_string())];
                let inn = &rules[&(to.to_string(), ifname.to_string())];
                for p in [P::Tcp(80), P::Tcp(81), P::Udp(53)] {
                    let (proto, port) = match p {
                        P::Tcp(n) => (6, n),
                        P::Udp(n) => (17, n),
                    };
                    let want = out.allows(&node_addrs(), Direction::Egress, src, dst, proto, port)
                        && inn.allows(&node_addrs(), Direction::Ingress, src, dst, proto, port);
                    let got = probe_once(c, from, dst, p);
                    if !got {
                        blocked += 1;
                    }
                    if got != want {
                        mismatches.push(format!(
                            "{ifname} {from} -> {to} {p:?}: evaluator {want}, packets {got}"
                        ));
                    }
                }
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    blocked
}

fn drops(c: &Cluster, pod: &str, ifname: &str) -> render::Drops {
    c.pods[pod].run(|| {
        let sock = nft::Socket::open().unwrap();
        render::drops(
            &nft::list_counters(&sock, nft::Family::Inet, &render::table_name(ifname)).unwrap(),
        )
    })
}

fn tables(c: &Cluster, pod: &str) -> Vec<String> {
    c.pods[pod].run(|| nft::list_tables(&nft::Socket::open().unwrap(), nft::Family::Inet).unwrap())
}

#[test]
fn rendered_rules_match_the_evaluator() {
    require_root!();
    let c = build();
    let mut servers = Vec::new();
    for p in PODS {
        for addr in [eth0(p), net1(p)] {
            servers.push(probe::Server::start(&c.pods[p], addr, &[80, 81], &[53]));
        }
    }

    let policies = vec![
        // eth0: a takes TCP on its named port "http" from b only.
        policy(
            Kind::NetworkPolicy,
            "a-from-b",
            json!({"podSelector": {"matchLabels": {"pod": "a"}},
                   "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}],
                                "ports": [{"port": "http"}]}]}),
        ),
        // eth0: c may only send UDP 53 to b's address, and TCP 81 anywhere.
        policy(
            Kind::NetworkPolicy,
            "c-out",
            json!({"podSelector": {"matchLabels": {"pod": "c"}},
                   "egress": [{"to": [{"ipBlock": {"cidr": "10.77.0.0/24", "except": ["10.77.0.1/32"]}}],
                               "ports": [{"port": 53, "protocol": "UDP"}]},
                              {"ports": [{"port": 81}]}],
                   "policyTypes": ["Egress"]}),
        ),
        // net1: b takes anything from c only.
        policy(
            Kind::MultiNetworkPolicy,
            "b-from-c",
            json!({"podSelector": {"matchLabels": {"pod": "b"}},
                   "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "c"}}}]}]}),
        ),
    ];
    let rules = desired(&policies);
    apply(&c, &rules);
    // Twice: idempotent.
    apply(&c, &rules);

    let blocked = compare(&c, &rules);
    assert!(
        blocked >= 8,
        "only {blocked} probes blocked: the rules did not bite"
    );

    // The node itself always passes (kubelet probes), even to ports
    // nothing allows.
    assert!(!probe::tcp(&c.pods["c"], None, eth0("a"), 81));
    assert!(probe::tcp(&c.node, None, eth0("a"), 81));
    // Drops were counted where they happened, and only there.
    let a = drops(&c, "a", "eth0");
    assert!(a.ingress.packets > 0 && a.egress.packets == 0, "{a:?}");
    let c_out = drops(&c, "c", "eth0");
    assert!(
        c_out.egress.packets > 0 && c_out.ingress.packets == 0,
        "{c_out:?}"
    );
    assert!(drops(&c, "b", "net1").ingress.packets > 0);
    // A table per isolated interface, none for the others.
    assert_eq!(tables(&c, "a"), [render::table_name("eth0")]);
    assert_eq!(tables(&c, "b"), [render::table_name("net1")]);

    // Re-rendering keeps the counters counting.
    let before = drops(&c, "a", "eth0").ingress.packets;
    apply(&c, &rules);
    assert_eq!(drops(&c, "a", "eth0").ingress.packets, before);

    // a-from-b deleted: nothing isolates a any more, its table goes; the
    // rest still matches.
    let without = desired(&policies[1..]);
    apply(&c, &without);
    assert!(tables(&c, "a").is_empty());
    compare(&c, &without);

    // Back: a fresh table, counting from zero.
    apply(&c, &rules);
    assert_eq!(drops(&c, "a", "eth0").ingress.packets, 0);
    assert!(compare(&c, &rules) >= 8);
    assert!(drops(&c, "a", "eth0").ingress.packets > 0);

    // The pod's DEL: the tables go, whether or not they were there.
    for ifname in ["eth0", "net1"] {
        let b = render::remove(ifname);
        c.pods["b"].run(|| {
            let sock = nft::Socket::open().unwrap();
            b.commit(&sock).unwrap();
            b.commit(&sock).unwrap();
        });
    }
    assert!(tables(&c, "b").is_empty());
    drop(servers);
}
