//! Rendering and merging from hand-built inputs: no store, no agent, no root.

use std::collections::BTreeMap;

use plexus_agent_api::{BgpPeer, BgpStatus};
use plexus_ipam::{BlockUsage, NodeSettings, Peer as StorePeer};

use super::agents::AgentView;
use super::model::*;
use super::store::{LeaseView, StoreView};
use super::{build, dot, parse_cache_dir, parse_run_dir, text};
use crate::status::Row;

fn node_settings(name: &str, ip: &str) -> NodeSettings {
    NodeSettings {
        name: name.into(),
        address: Some(ip.parse().unwrap()),
        ..Default::default()
    }
}

fn block(cidr: &str, node: &str) -> BlockUsage {
    BlockUsage {
        cidr: cidr.into(),
        pool: "pods".into(),
        node: node.into(),
        used: 1,
        free: 63,
    }
}

fn row(pod: &str, cid: &str, iface: &str, model: &str, ip: &str) -> Row {
    Row {
        pod: pod.into(),
        container_id: cid.into(),
        interface: iface.into(),
        network: format!("{model}-net"),
        plugin: String::new(),
        model: model.into(),
        ips: vec![ip.into()],
        mac: String::new(),
        default: iface == "eth0",
        state: "attached",
    }
}

fn live(address: &str, kind: &str, state: &str) -> BgpPeer {
    BgpPeer {
        address: address.into(),
        asn: 64512,
        kind: kind.into(),
        state: state.into(),
        since: 0,
        info: String::new(),
        prefixes_received: 0,
        prefixes_sent: 0,
        prefixes_accepted: 0,
        prefixes_rejected: 0,
        prefixes_rejected_by_guard: 0,
        prefixes_rejected_by_filter: 0,
        bfd: None,
        last_error: None,
    }
}

/// Two routed nodes in the mesh with a global router, overlay leases for
/// both, a node only the overlay knows, n1's agent and n1's pods.
fn sample() -> Topology {
    let store = StoreView {
        overlay: Some(Overlay {
            network: "10.5.0.0/16".into(),
            backend: "vxlan".into(),
        }),
        leases: vec![
            LeaseView {
                public_ip: Some("10.99.0.1".into()),
                subnet: "10.5.1.0/24".into(),
            },
            LeaseView {
                public_ip: Some("10.99.0.2".into()),
                subnet: "10.5.2.0/24".into(),
            },
            LeaseView {
                public_ip: Some("10.99.0.9".into()),
                subnet: "10.5.9.0/24".into(),
            },
        ],
        pools: vec!["pods 10.244.0.0/16".into()],
        bgp: Some(Bgp {
            asn: 64512,
            mesh: true,
        }),
        nodes: vec![
            node_settings("n1", "10.99.0.1"),
            node_settings("n2", "10.99.0.2"),
        ],
        peers: vec![StorePeer {
            address: "10.99.0.100".parse().unwrap(),
            asn: 65000,
            node: None,
            settings: Default::default(),
        }],
        blocks: vec![block("10.244.0.0/26", "n1"), block("10.244.0.64/26", "n2")],
        warnings: vec!["agent at /run/n2: not there".into()],
    };
    let agents = vec![AgentView {
        node: "n1".into(),
        run_dir: "/run/n1".into(),
        public_ip: Some("10.99.0.1".into()),
        overlay_subnet: None,
        backend: "routed (BGP)".into(),
        ready: true,
        bgp: Some(BgpStatus {
            router_id: "10.99.0.1".into(),
            asn: 64512,
            peers: vec![
                live("10.99.0.2", "node-to-node mesh", "Established"),
                live("10.99.0.100", "global", "Established"),
            ],
        }),
    }];
    let pods = vec![(
        "n1".to_string(),
        vec![
            row(
                "default/web",
                "c1c1c1c1c1c1c1c1c1c1",
                "eth0",
                "overlay",
                "10.5.1.2",
            ),
            row(
                "default/web",
                "c1c1c1c1c1c1c1c1c1c1",
                "net1",
                "routed",
                "10.244.0.1",
            ),
        ],
    )];
    build::build(store, agents, pods)
}

#[test]
fn merges_store_agents_and_caches() {
    let t = sample();
    let names: Vec<&str> = t.nodes.iter().map(|n| n.name.as_str()).collect();
    // The lease no routed node explains stands as a node named by its IP.
    assert_eq!(names, ["10.99.0.9", "n1", "n2"]);
    let n1 = t.node("n1").unwrap();
    assert_eq!(n1.overlay_subnet.as_deref(), Some("10.5.1.0/24"));
    assert_eq!(n1.blocks[0].cidr, "10.244.0.0/26");
    assert_eq!(n1.pods.len(), 1);
    assert_eq!(n1.pods[0].interfaces.len(), 2);
    assert_eq!(t.routers.len(), 1);
    // One mesh session per pair, the router's for each node with an address.
    let mut got: Vec<(String, Peer, String, String)> = t
        .sessions
        .iter()
        .map(|s| {
            (
                s.node.clone(),
                s.peer.clone(),
                s.kind.clone(),
                s.state_label(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            (
                "n1".into(),
                Peer::Node("n2".into()),
                "node-to-node mesh".into(),
                "Established".into()
            ),
            (
                "n1".into(),
                Peer::Router("10.99.0.100".into()),
                "global".into(),
                "Established".into()
            ),
            (
                "n2".into(),
                Peer::Router("10.99.0.100".into()),
                "global".into(),
                "?".into()
            ),
        ]
    );
}

#[test]
fn route_reflectors_without_the_mesh() {
    let mut rr = node_settings("rr", "10.99.0.3");
    rr.route_reflector_cluster_id = Some("1.1.1.1".parse().unwrap());
    let store = StoreView {
        bgp: Some(Bgp {
            asn: 64512,
            mesh: false,
        }),
        nodes: vec![
            node_settings("a", "10.99.0.1"),
            node_settings("b", "10.99.0.2"),
            rr,
        ],
        ..Default::default()
    };
    let t = build::build(store, Vec::new(), Vec::new());
    let pairs: Vec<(&str, Peer)> = t
        .sessions
        .iter()
        .map(|s| (s.node.as_str(), s.peer.clone()))
        .collect();
    assert_eq!(
        pairs,
        [
            ("a", Peer::Node("rr".into())),
            ("b", Peer::Node("rr".into()))
        ]
    );
    assert!(t.sessions.iter().all(|s| s.kind == "route reflector"));
}

#[test]
fn text_is_a_tree_per_node() {
    let out = text::render(&sample());
    let want = "\
overlay network 10.5.0.0/16 (vxlan)
routed pools pods 10.244.0.0/16
BGP AS 64512, node-to-node mesh
node 10.99.0.9  public IP 10.99.0.9
  overlay subnet 10.5.9.0/24
node n1  public IP 10.99.0.1
  agent /run/n1: routed (BGP), ready
  overlay subnet 10.5.1.0/24
  routed block 10.244.0.0/26 (pool pods, 1 used)
  BGP sessions
    node n2 (10.99.0.2)  node-to-node mesh  Established
    router 10.99.0.100  global  Established
  pods
    default/web (c1c1c1c1c1c1c1c1)
      eth0  overlay  overlay-net  10.5.1.2
      net1  routed  routed-net  10.244.0.1
node n2  public IP 10.99.0.2
  overlay subnet 10.5.2.0/24
  routed block 10.244.0.64/26 (pool pods, 1 used)
  BGP sessions
    node n1 (10.99.0.1)  node-to-node mesh  Established
    router 10.99.0.100  global  ?
router 10.99.0.100  AS 65000
";
    assert_eq!(out, want, "{out}");
}

#[test]
fn dot_has_clusters_routers_and_labelled_sessions() {
    let out = dot::render(&sample());
    assert!(out.starts_with("digraph plexus {\n"), "{out}");
    assert!(out.ends_with("}\n"), "{out}");
    assert_eq!(out.matches("subgraph cluster_").count(), 3, "{out}");
    for want in [
        "label=\"node n1\";",
        "\"node:n1\" [shape=box",
        "public IP 10.99.0.1\\noverlay 10.5.1.0/24\\nblock 10.244.0.0/26 (pods)",
        "\"pod:n1/c1c1c1c1c1c1c1c1c1c1\" [shape=note, label=\"default/web (c1c1c1c1c1c1c1c1)\\neth0 overlay overlay-net 10.5.1.2\\nnet1 routed routed-net 10.244.0.1\"];",
        "\"router:10.99.0.100\" [shape=doubleoctagon",
        "\"node:n1\" -> \"node:n2\" [label=\"BGP node-to-node mesh\\nEstablished\", color=\"#2e7d32\"",
        "\"node:n2\" -> \"router:10.99.0.100\" [label=\"BGP global\\n?\", color=\"#777777\"",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
    // Braces balance: every cluster is closed.
    assert_eq!(out.matches('{').count(), out.matches('}').count());
}

#[test]
fn dot_quotes_what_would_break_it() {
    assert_eq!(dot::quote("a\"b\\c\nd"), "\"a\\\"b\\\\c\\nd\"");
}

#[test]
fn an_empty_picture_still_renders() {
    let t = Topology::default();
    assert_eq!(text::render(&t), "no nodes\n");
    let d = dot::render(&t);
    assert!(d.contains("label=\"Plexus\""), "{d}");
}

#[test]
fn live_sessions_the_store_does_not_explain_are_kept() {
    let agents = vec![AgentView {
        node: "n1".into(),
        bgp: Some(BgpStatus {
            router_id: "10.99.0.1".into(),
            asn: 64512,
            peers: vec![live("192.168.7.1", "node specific", "Active")],
        }),
        ..Default::default()
    }];
    let t = build::build(StoreView::default(), agents, Vec::new());
    assert_eq!(t.routers[0].address, "192.168.7.1");
    assert_eq!(t.sessions[0].kind, "node specific");
    assert_eq!(
        t.sessions[0].states,
        BTreeMap::from([("n1".to_string(), "Active".to_string())])
    );
}

#[test]
fn flags() {
    let rd = parse_run_dir("n1=/run/plexus").unwrap();
    assert_eq!(rd.node.as_deref(), Some("n1"));
    assert_eq!(rd.dir, std::path::Path::new("/run/plexus"));
    let rd = parse_run_dir("/run/a=b").unwrap();
    assert_eq!(rd.node, None);
    assert_eq!(rd.dir, std::path::Path::new("/run/a=b"));
    assert!(parse_run_dir("").is_err());
    assert!(parse_run_dir("n1=").is_err());
    assert_eq!(
        parse_cache_dir("n1=/var/lib/cni/plexus").unwrap(),
        ("n1".to_string(), "/var/lib/cni/plexus".into())
    );
    for bad in ["/var/lib/cni/plexus", "=x", "n1=", ""] {
        let e = parse_cache_dir(bad).unwrap_err();
        assert!(e.contains("NODE=DIR"), "{bad}: {e}");
    }
}
