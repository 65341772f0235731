//! A hostile or careless router never takes over the node's own routes
//! (issue 18): plexusd on two nodes against a real etcd, GoBGP in a third
//! netns of the underlay (10.200.0.12) as everyone's global peer,
//! announcing what ToRs and broken routers announce.
//!
//! Covered: the node's underlay subnet, a local pod's /32 and the default
//! route announced by the router do not replace the node's own routes, nor
//! does their withdrawal delete them; a learned default route is used only
//! where the node has none (it sits behind at a metric that never wins); a
//! route to another node's address and routes with martian next hops
//! (loopback, the node's own address) are rejected, counted in `plexusctl
//! bgp status`, and not passed on through the mesh; BGP listens on the
//! node's address only.

use std::process::Command;

use plexus_ipam::Peer;
use plexus_tests::cluster::routed::{
    add_pool, add_routed_pod, bgp_status, established, first_ip, routes, store, write_routed_conf,
};
use plexus_tests::cluster::{wait_for, Cluster, Daemon, Node};
use plexus_tests::require_overlay;
use plexus_tests::routers::{tool_available, GoBgp};

const ROUTER: &str = "10.200.0.12";

struct Hostile {
    // Drop order: agents and the router before the cluster.
    agents: Vec<Daemon>,
    gobgp: GoBgp,
    router: Node,
    c: Cluster,
    _dir: tempfile::TempDir,
}

/// Two nodes with agents, GoBGP (AS 65010) peering with both.
fn hostile() -> Option<Hostile> {
    if !tool_available("gobgpd") {
        plexus_tests::skip("gobgpd is not installed (scripts/install-deps.sh)");
        return None;
    }
    let mut c = Cluster::new(3);
    let router = c.nodes.pop().unwrap();
    add_pool(&c, 26);
    store(&c, |s| async move {
        s.add_peer(&Peer {
            address: ROUTER.parse().unwrap(),
            asn: 65010,
            node: None,
            settings: Default::default(),
        })
        .await
        .unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let gobgp = GoBgp::start(
        &router.ns,
        dir.path(),
        &format!(
            r#"[global.config]
  as = 65010
  router-id = "{ROUTER}"
  local-address-list = ["{ROUTER}"]
{}"#,
            ["10.200.0.10", "10.200.0.11"]
                .iter()
                .map(|n| format!(
                    r#"[[neighbors]]
  [neighbors.config]
    neighbor-address = "{n}"
    peer-as = 64512
  [neighbors.timers.config]
    connect-retry = 2
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
"#
                ))
                .collect::<String>()
        ),
    );
    let agents = c.start_agents(&[]);
    for n in &c.nodes {
        write_routed_conf(n);
        wait_for(&format!("{}: mesh and router Established", n.name), || {
            established(n, 2)
        });
    }
    Some(Hostile {
        agents,
        gobgp,
        router,
        c,
        _dir: dir,
    })
}

impl Hostile {
    fn announce(&self, prefix: &str, next_hop: &str) {
        self.gobgp.cli(&[
            "global", "rib", "add", prefix, "nexthop", next_hop, "-a", "ipv4",
        ]);
    }

    fn withdraw(&self, prefix: &str) {
        self.gobgp
            .cli(&["global", "rib", "del", prefix, "-a", "ipv4"]);
    }

    fn node(&self, i: usize) -> &Node {
        &self.c.nodes[i]
    }
}

/// `ip -j route show exact DST` in the node: (protocol, gateway or "",
/// metric) of each route.
fn routes_to(n: &Node, dst: &str) -> Vec<(String, String, u64)> {
    n.ip_json(&["route", "show", "exact", dst])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["protocol"].as_str().unwrap_or("").to_string(),
                r["gateway"].as_str().unwrap_or("").to_string(),
                r["metric"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// The route the node uses for `ip` now: (gateway or "", device,
/// protocol) of the FIB entry that matches.
fn route_get(n: &Node, ip: &str) -> (String, String, String) {
    try_route_get(n, ip).unwrap_or_else(|| panic!("{}: no route to {ip}", n.name))
}

/// [`route_get`], or `None` while the node has no route to `ip`.
fn try_route_get(n: &Node, ip: &str) -> Option<(String, String, String)> {
    let out = n.ns.sh(&format!("ip -j route get fibmatch {ip}"));
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let r = &v[0];
    Some((
        r["gateway"].as_str().unwrap_or("").to_string(),
        r["dev"].as_str().unwrap_or("").to_string(),
        r["protocol"].as_str().unwrap_or("").to_string(),
    ))
}

/// The peer entry of `plexusctl bgp status --json` for `addr`.
fn peer_status(n: &Node, addr: &str) -> serde_json::Value {
    bgp_status(n)["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["address"] == addr)
        .cloned()
        .unwrap_or_else(|| panic!("no peer {addr} on {}", n.name))
}

#[test]
fn learned_routes_never_displace_the_nodes_own_routes() {
    require_overlay!();
    let Some(h) = hostile() else { return };
    let n0 = h.node(0);
    let pod = plexus_tests::Netns::new("hpod");
    let pod_ip = first_ip(&add_routed_pod(n0, &pod, "eth0"));
    n0.ns
        .ip(&["route", "add", "default", "via", ROUTER, "proto", "static"]);
    let own_default = routes_to(n0, "0.0.0.0/0");
    let own_pod = routes_to(n0, &pod_ip);
    assert_eq!(own_pod.len(), 1, "{own_pod:?}");

    // The router announces the underlay, the pod's /32 and a default
    // route, and a prefix of its own to know when the others have come.
    for p in [
        "10.200.0.0/24",
        &format!("{pod_ip}/32"),
        "0.0.0.0/0",
        "198.18.7.0/24",
    ] {
        h.announce(p, ROUTER);
    }
    wait_for("node0 learns the router's own prefix", || {
        routes(n0, "114").iter().any(|(d, _)| d == "198.18.7.0/24")
    });
    // What the node routes by is as before: the connected subnet, the pod
    // route, its own default route (a learned one may sit behind it).
    assert_eq!(
        route_get(n0, "10.200.0.11"),
        (String::new(), "eth0".into(), "kernel".into())
    );
    assert_eq!(route_get(n0, &pod_ip).2, "112");
    assert_eq!(routes_to(n0, &pod_ip)[0], own_pod[0]);
    let defaults = routes_to(n0, "0.0.0.0/0");
    assert!(defaults.contains(&own_default[0]), "{defaults:?}");
    assert!(
        defaults
            .iter()
            .all(|(proto, _, metric)| proto != "114" || *metric == 4_000_000_000),
        "a learned default sits behind the node's own: {defaults:?}"
    );
    assert_eq!(route_get(n0, "198.18.200.1").2, "static");

    // Withdrawing them deletes nothing of the node's.
    for p in ["10.200.0.0/24", &format!("{pod_ip}/32"), "0.0.0.0/0"] {
        h.withdraw(p);
    }
    h.withdraw("198.18.7.0/24");
    wait_for("node0 drops the router's own prefix", || {
        !routes(n0, "114").iter().any(|(d, _)| d == "198.18.7.0/24")
    });
    assert_eq!(routes_to(n0, "0.0.0.0/0"), own_default);
    assert_eq!(routes_to(n0, &pod_ip), own_pod);
    assert_eq!(
        route_get(n0, "10.200.0.11"),
        (String::new(), "eth0".into(), "kernel".into())
    );

    // Where the node has no default route of its own, the learned one is
    // used (and goes with its withdrawal).
    n0.ns
        .ip(&["route", "del", "default", "via", ROUTER, "proto", "static"]);
    h.announce("0.0.0.0/0", ROUTER);
    wait_for("node0 routes by the learned default", || {
        try_route_get(n0, "198.18.200.1") == Some((ROUTER.to_string(), "eth0".into(), "114".into()))
    });
    h.withdraw("0.0.0.0/0");
    wait_for("the learned default goes", || {
        routes_to(n0, "0.0.0.0/0").is_empty()
    });
    drop(h.agents);
    drop(h.router);
}

#[test]
fn routes_to_node_addresses_and_martian_next_hops_are_rejected() {
    require_overlay!();
    let Some(h) = hostile() else { return };
    let (n0, n1) = (h.node(0), h.node(1));
    // A route to a node's own address, martian next hops (loopback, the
    // receiving node's own address), and one good route to know they came.
    h.announce("10.200.0.11/32", ROUTER);
    h.announce("203.0.113.0/24", "127.0.0.1");
    h.announce("198.51.100.0/24", &n0.ip);
    h.announce("198.18.9.0/24", ROUTER);
    for n in [n0, n1] {
        wait_for(&format!("{} learns the good route", n.name), || {
            routes(n, "114").iter().any(|(d, _)| d == "198.18.9.0/24")
        });
    }
    for n in [n0, n1] {
        let learned = routes(n, "114");
        for bad in ["10.200.0.11", "203.0.113.0/24"] {
            assert!(
                !learned.iter().any(|(d, _)| d == bad),
                "{}: {bad} installed: {learned:?}",
                n.name
            );
        }
        // Both reach node1's address over the connected subnet.
        assert_eq!(route_get(n, "10.200.0.11").2, "kernel");
    }
    assert!(!routes(n0, "114")
        .iter()
        .any(|(d, _)| d == "198.51.100.0/24"));
    // Counted per peer, and shown.
    wait_for("node0 counts what it rejected", || {
        peer_status(n0, ROUTER)["prefixes_rejected"]
            .as_u64()
            .is_some_and(|r| r >= 3)
    });
    // Not passed on: node1 learned nothing of them from node0 over the mesh.
    let via_n0: Vec<_> = routes(n1, "114")
        .into_iter()
        .filter(|(_, gw)| *gw == n0.ip)
        .filter(|(d, _)| {
            d.starts_with("10.200.") || d.starts_with("203.0.113") || d.starts_with("198.51.100")
        })
        .collect();
    assert!(via_n0.is_empty(), "{via_n0:?}");
    drop(h.agents);
}

#[test]
fn bgp_listens_on_the_nodes_address_only() {
    require_overlay!();
    let Some(h) = hostile() else { return };
    let n0 = h.node(0);
    // Another address of the node (a pod's side of it would be one).
    n0.ns.ip(&["addr", "add", "10.250.0.1/32", "dev", "lo"]);
    let connects = |addr: &str| {
        Command::new("ip")
            .args(["netns", "exec", &n0.ns.name, "bash", "-c"])
            .arg(format!("exec 3<>/dev/tcp/{addr}/179"))
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(connects(&n0.ip), "BGP listens on the node's address");
    assert!(!connects("10.250.0.1"), "BGP listens on every address");
    drop(h.agents);
}
