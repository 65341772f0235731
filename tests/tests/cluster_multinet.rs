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
    macvlan_ip, networks, reaches_all, Ask, Attached, MultiNet, Options,
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

/// What an ADD on `node` with the routed network gave the pod: exactly
/// `links`, eth0 in the node's overlay subnet and as the meta result's
/// address, net1 a /32 of the routed pool. Returns eth0's address.
fn assert_eth0_and_net1(
    net: &MultiNet,
    node: usize,
    pod: &str,
    got: &Attached,
    links: &[&str],
) -> String {
    let have: Vec<&String> = got.addrs.keys().collect();
    assert_eq!(have, links, "{pod}: {:?}", got.addrs);
    let overlay = net
        .node(node)
        .subnet_env("FLANNEL_SUBNET")
        .expect("subnet.env");
    let eth0 = got.ip("eth0");
    // FLANNEL_SUBNET is the node's /24 with the gateway's address.
    let prefix = overlay.rsplit_once('.').unwrap().0;
    assert!(
        eth0.starts_with(&format!("{prefix}.")),
        "{pod}: {eth0} in {overlay}"
    );
    assert!(
        got.ip("net1").starts_with("10.96."),
        "{pod}: {:?}",
        got.addrs
    );
    assert_eq!(got.addrs["net1"][0].split('/').nth(1), Some("32"), "{pod}");
    // The meta result is the cluster network's.
    assert_eq!(
        got.result["ips"][0]["address"]
            .as_str()
            .unwrap_or_default()
            .split('/')
            .next(),
        Some(eth0.as_str()),
        "{pod}: {}",
        got.result
    );
    eth0
}

fn three_networks_everywhere(opts: Options) {
    let net = MultiNet::start(NODES, opts);
    let pods = add_pods(&net);
    for p in &pods {
        let eth0 =
            assert_eth0_and_net1(&net, p.node, &p.ns.name, &p.got, &["eth0", "net1", "net2"]);
        // The requested macvlan address, as asked.
        let j = pods
            .iter()
            .filter(|q| q.node == p.node)
            .position(|q| q.ns.name == p.ns.name)
            .unwrap();
        assert_eq!(p.got.addrs["net2"], [macvlan_ip(p.node, j)]);
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
    // CHECK through the meta plugin checks every delegate's attachment.
    for p in &pods {
        net.run("check", p.node, &p.ns, &p.annotation)
            .expect_success();
    }
    // ...and fails when one of them is broken (net1 lost its address).
    let p = &pods[0];
    p.ns.ip(&["addr", "flush", "dev", "net1"]);
    let err = net.run("check", p.node, &p.ns, &p.annotation).err();
    assert!(err["msg"].as_str().unwrap_or("").contains("net1"), "{err}");
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
        ..Options::default()
    });
}

/// ADD on node0 while its agent is away fails with code 11 and leaves
/// nothing on the node or in the store; the pod's links are gone too.
fn add_fails_and_leaves_nothing(net: &MultiNet, pod: &Netns, annotation: &str, says: &str) {
    let err = net.run("add", 0, pod, annotation).err();
    assert_eq!(err["code"], 11, "{err}");
    let msg = err["msg"].as_str().unwrap_or("");
    assert!(msg.contains(says), "{says:?} not in {err}");
    let left = net.leftovers(0);
    assert!(left.is_empty(), "a failed ADD left {left:?}");
    let links: Vec<String> = pod.links().into_iter().filter(|l| l != "lo").collect();
    assert!(links.is_empty(), "pod links left: {links:?}");
}

/// The same ADD once the agent is back: it succeeds with eth0 and net1 as
/// they should be, and the pod reaches `peer` over both; then DEL, leaving
/// nothing.
fn add_succeeds_after(net: &MultiNet, pod: &Netns, annotation: &str, peer: &Attached) {
    let got = net.add(0, pod, annotation);
    let eth0 = assert_eth0_and_net1(net, 0, &pod.name, &got, &["eth0", "net1"]);
    for ifname in ["eth0", "net1"] {
        let target = [peer.ip(ifname)];
        wait_for(&format!("{} reaches {target:?}", pod.name), || {
            reaches_all(pod, &target)
        });
    }
    let st = net.network_status(0, pod).expect("network status");
    let st: Vec<(&str, &str)> = st
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["interface"].as_str().unwrap_or(""),
                s["ips"][0].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        st,
        [("eth0", eth0.as_str()), ("net1", got.ip("net1").as_str())],
        "{}",
        pod.name
    );
    net.del(0, pod, annotation);
    let left = net.leftovers(0);
    assert!(left.is_empty(), "DEL left {left:?}");
}

fn wait_back(net: &mut MultiNet) {
    net.agents[0].start_again();
    net.agents[0].wait_ready();
    let peers = NODES - 1;
    let n = net.node(0);
    wait_for("node0 back in the BGP mesh", || {
        plexus_tests::cluster::routed::established(n, peers)
    });
}

#[test]
fn agent_away_during_add_fails_with_11_and_leaves_nothing() {
    require_overlay!();
    require_reference_plugins!();
    let mut net = MultiNet::start(NODES, Options::default());
    let both = networks(true, None);
    // A pod on node1 to reach afterwards.
    let peer_ns = Netns::new("peer");
    let peer = net.add(1, &peer_ns, &both);

    // eth0: node0's agent has no overlay lease (stopped before it wrote
    // subnet.env, as on a node whose agent has not started yet).
    let st = net.agents[0].stop();
    assert!(st.success(), "plexusd exits 0 on SIGTERM");
    std::fs::remove_file(net.node(0).subnet_env_path()).unwrap();
    let pod = Netns::new("nolease");
    add_fails_and_leaves_nothing(&net, &pod, &both, "subnet.env");
    wait_back(&mut net);
    add_succeeds_after(&net, &pod, &both, &peer);

    // net1: the agent is stopped, its socket gone: eth0 is rolled back.
    net.agents[0].stop();
    let pod = Netns::new("nosocket");
    add_fails_and_leaves_nothing(&net, &pod, &both, "plexusd");
    wait_back(&mut net);
    add_succeeds_after(&net, &pod, &both, &peer);

    // net1: the agent is frozen (SIGSTOP): the socket is there but
    // nothing answers. The plugin gives up at its deadline.
    net.agents[0].pause();
    let pod = Netns::new("frozen");
    add_fails_and_leaves_nothing(&net, &pod, &both, "did not answer");
    net.agents[0].resume();
    // The requests the frozen agent queued are stale once it thaws: they
    // must not leave an allocation behind.
    let agent = &net.agents[0];
    wait_for("the thawed agent drops the stale requests", || {
        agent.log_text().matches("client gone").count() >= 1
    });
    let left = net.leftovers(0);
    assert!(left.is_empty(), "stale requests left {left:?}");
    add_succeeds_after(&net, &pod, &both, &peer);

    net.del(1, &peer_ns, &both);
    net.assert_clean();
}

/// net1 with a requested address and MAC (CNI `ips` / `mac` through the
/// annotation): given as asked, shown in the network status, CHECK passes
/// for all three interfaces; an address in another node's block is
/// refused and leaves nothing.
#[test]
fn routed_net1_with_requested_ip_and_mac() {
    require_overlay!();
    require_reference_plugins!();
    let net = MultiNet::start(NODES, Options::default());
    let mut pods = Vec::new();
    for node in 0..NODES {
        let ns = Netns::new(&format!("ask{node}"));
        let ask = Ask {
            routed: true,
            // Each in a block of its own: a block is one node's.
            routed_ip: Some(format!("10.96.{}.5/32", 100 + node)),
            routed_mac: Some(format!("02:42:0a:60:{node:02x}:05")),
            macvlan_ip: Some(macvlan_ip(node, 0)),
        };
        let annotation = ask.annotation();
        let got = net.add(node, &ns, &annotation);
        assert_eq!(got.addrs["net1"], [ask.routed_ip.clone().unwrap()]);
        let mac = ns.ip_json(&["link", "show", "net1"])[0]["address"].clone();
        assert_eq!(mac, ask.routed_mac.clone().unwrap().as_str());
        let st = net.network_status(node, &ns).expect("network status");
        assert_eq!(st[1]["interface"], "net1", "{st}");
        assert_eq!(
            st[1]["mac"],
            ask.routed_mac.clone().unwrap().as_str(),
            "{st}"
        );
        net.run("check", node, &ns, &annotation).expect_success();
        pods.push(Pod {
            node,
            ns,
            annotation,
            got,
        });
    }
    for ifname in ["eth0", "net1", "net2"] {
        all_pairs_reach(&pods, ifname);
    }

    // 10.96.101.9 is in node1's block: node0 may not have it.
    let thief = Netns::new("thief");
    let ask = Ask {
        routed: true,
        routed_ip: Some("10.96.101.9/32".into()),
        ..Ask::default()
    };
    let err = net.run("add", 0, &thief, &ask.annotation()).err();
    assert_eq!(err["code"], 102, "{err}");
    assert!(
        err["msg"]
            .as_str()
            .unwrap_or("")
            .contains("held by node node1"),
        "{err}"
    );
    assert!(thief.links().iter().all(|l| l == "lo"));

    for p in &pods {
        net.del(p.node, &p.ns, &p.annotation);
    }
    net.assert_clean();
}
