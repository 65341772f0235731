//! The calico-style routed network end to end on the simulated cluster
//! (tests/src/cluster): plexusd on three nodes against a real etcd, pools
//! and peers set through plexus-ipam's API, pods attached by
//! plexus-bgp-routes with the agent's block IPAM, BIRD as a global peer.
//!
//! Covered: the iBGP mesh and BIRD Established (`plexusctl bgp status`);
//! cross-node pod pings with no encapsulation (no tunnel device, routes
//! via the other node's underlay address with plexusd's protocol); BIRD
//! learns every node's block and its own prefix reaches every node's
//! kernel; an agent restart under a running ping loses nothing (graceful
//! restart); `node remove` withdraws the node's routes; concurrent ADDs on
//! three nodes never duplicate an address; a route reflector topology with
//! GoBGP as one node's own peer, where `node remove` takes effect through
//! the store watch (the poll set to ten minutes); malformed BGP messages
//! from a hostile peer are answered with a NOTIFICATION while the agent and
//! its other sessions carry on.

use std::collections::BTreeSet;
use std::process::Stdio;

use plexus_ipam::{BgpConfig, Peer, Pool};
use plexus_tests::cluster::routed::{
    add_pool, add_pool_with, add_routed_pod, bgp_status, established, first_ip, plexusctl, routes,
    routes_of, store, write_routed_conf, PROTO_BGP, PROTO_BLOCK,
};
use plexus_tests::cluster::{wait_for, Cluster, Daemon, Node};
use plexus_tests::require_overlay;
use plexus_tests::routers::{tool_available, Bird, GoBgp};

/// Three nodes with a pool of /26 blocks, and a fourth netns on the
/// underlay (10.200.0.13, no agent) for a router.
fn cluster_with_router() -> (Cluster, Node, tempfile::TempDir) {
    let mut c = Cluster::new(4);
    let router = c.nodes.pop().unwrap();
    add_pool(&c, 26);
    (c, router, tempfile::tempdir().unwrap())
}

/// "address type" of each peer `plexusctl bgp status` shows.
fn peer_kinds(n: &Node) -> BTreeSet<String> {
    bgp_status(n)["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{} {}",
                p["address"].as_str().unwrap(),
                p["type"].as_str().unwrap()
            )
        })
        .collect()
}

fn write_conf(n: &Node) {
    write_routed_conf(n);
}

/// ADD through plexus-bgp-routes; the pod's IPv4 address.
fn add_pod(n: &Node, pod: &plexus_tests::Netns, ifname: &str) -> String {
    first_ip(&add_routed_pod(n, pod, ifname))
}

/// GET /metrics from the agent's --metrics-addr, inside the node.
fn metrics(n: &Node) -> String {
    n.ns.http_get("127.0.0.1:9464", "/metrics")
}

fn block_of(n: &Node) -> String {
    let b = routes(n, PROTO_BLOCK);
    assert_eq!(b.len(), 1, "one block on {}: {b:?}", n.name);
    b[0].0.clone()
}

const BIRD_CONF: &str = r#"
router id 10.200.0.13;
protocol device {}
protocol kernel k4 { ipv4 { import none; export none; }; }
protocol static announce4 { ipv4; route 198.51.100.0/24 blackhole; }
template bgp plexus {
  local as 65000;
  ipv4 { import all; export where proto = "announce4"; };
}
protocol bgp n0 from plexus { neighbor 10.200.0.10 as 64512; }
protocol bgp n1 from plexus { neighbor 10.200.0.11 as 64512; }
protocol bgp n2 from plexus { neighbor 10.200.0.12 as 64512; }
"#;

/// Return early (SKIP, or a failure under `PLEXUS_REQUIRE_ALL=1`) without
/// BIRD.
macro_rules! require_bird {
    () => {
        if !tool_available("bird") {
            plexus_tests::skip("bird2 is not installed (scripts/install-deps.sh)");
            return;
        }
    };
}

/// Return early (SKIP, or a failure under `PLEXUS_REQUIRE_ALL=1`) without
/// GoBGP.
macro_rules! require_gobgp {
    () => {
        if !tool_available("gobgpd") {
            plexus_tests::skip("gobgpd is not installed (scripts/install-deps.sh)");
            return;
        }
    };
}

/// Three agents (metrics on 127.0.0.1:9464) with the routed conflist, BIRD
/// on the underlay as everyone's global peer, and every node's three
/// sessions (two mesh peers, BIRD) Established. Each test below builds its
/// own, so one failure does not hide another's result.
struct MeshWithBird {
    // Dropped in this order: the agents, BIRD, then the namespaces.
    agents: Vec<Daemon>,
    bird: Bird,
    _router: Node,
    _dir: tempfile::TempDir,
    c: Cluster,
}

/// One pod per node, their addresses, and each node's one block, with
/// every node routing the others' blocks.
struct PodPerNode {
    pods: Vec<plexus_tests::Netns>,
    ips: Vec<String>,
    blocks: Vec<String>,
}

impl MeshWithBird {
    fn start() -> MeshWithBird {
        let (c, router, dir) = cluster_with_router();
        store(&c, |s| async move {
            s.add_peer(&Peer {
                address: "10.200.0.13".parse().unwrap(),
                asn: 65000,
                node: None,
                settings: Default::default(),
            })
            .await
            .unwrap();
        });
        let bird = Bird::start(&router.ns, dir.path(), BIRD_CONF);
        let agents = c.start_agents(&["--metrics-addr", "127.0.0.1:9464"]);
        for n in &c.nodes {
            write_conf(n);
        }
        for n in &c.nodes {
            wait_for(&format!("{}: 3 sessions Established", n.name), || {
                established(n, 3)
            });
        }
        MeshWithBird {
            agents,
            bird,
            _router: router,
            _dir: dir,
            c,
        }
    }

    /// ADD one pod on each node; wait until every node routes the other
    /// nodes' blocks.
    fn pod_per_node(&self) -> PodPerNode {
        let c = &self.c;
        let pods: Vec<_> = (0..3)
            .map(|i| plexus_tests::Netns::new(&format!("pod{i}")))
            .collect();
        let ips: Vec<String> = c
            .nodes
            .iter()
            .zip(&pods)
            .map(|(n, p)| add_pod(n, p, "eth0"))
            .collect();
        let blocks: Vec<String> = c.nodes.iter().map(block_of).collect();
        assert_eq!(
            blocks.iter().collect::<BTreeSet<_>>().len(),
            3,
            "one block per node: {blocks:?}"
        );
        for (i, n) in c.nodes.iter().enumerate() {
            wait_for(&format!("{}: routes to the other blocks", n.name), || {
                let r = routes(n, PROTO_BGP);
                c.nodes
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .all(|(j, o)| r.contains(&(blocks[j].clone(), o.ip.clone())))
            });
        }
        PodPerNode { pods, ips, blocks }
    }
}

#[test]
fn mesh_and_bird_sessions_show_in_bgp_status_and_metrics() {
    require_overlay!();
    require_bird!();
    let m = MeshWithBird::start();
    let c = &m.c;
    for n in &c.nodes {
        let mut want: BTreeSet<String> = c
            .nodes
            .iter()
            .filter(|o| o.name != n.name)
            .map(|o| format!("{} node-to-node mesh", o.ip))
            .collect();
        want.insert("10.200.0.13 global".into());
        assert_eq!(peer_kinds(n), want, "{}", n.name);
    }
    // The table for people.
    let table = plexusctl(&c.nodes[0], &["bgp", "status", "--run-dir"]);
    assert!(
        table.lines().any(|l| l.starts_with("10.200.0.11")
            && l.contains("node-to-node mesh")
            && l.contains("Established")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("10.200.0.13") && l.contains("global")),
        "{table}"
    );
    // The gauges follow the sessions at the agent's next poll.
    wait_for("metrics: 3 sessions Established", || {
        metrics(&c.nodes[0])
            .lines()
            .any(|l| l == "plexusd_bgp_sessions{state=\"Established\"} 3")
    });
}

#[test]
fn pods_on_three_nodes_ping_over_plain_routes_without_a_tunnel() {
    require_overlay!();
    require_bird!();
    let m = MeshWithBird::start();
    let p = m.pod_per_node();
    // Routes via the other nodes' underlay address with our protocol
    // (pod_per_node waited for them), and no encapsulation device.
    for n in &m.c.nodes {
        let links = n.ns.links();
        assert!(
            links
                .iter()
                .all(|l| l == "lo" || l == "eth0" || l.starts_with("plx")),
            "no encapsulation device on {}: {links:?}",
            n.name
        );
    }
    for (i, pod) in p.pods.iter().enumerate() {
        for (j, ip) in p.ips.iter().enumerate() {
            if i != j {
                assert!(pod.ping(ip), "pod{i} → pod{j} ({ip})");
            }
        }
    }
}

#[test]
fn bird_learns_every_block_and_its_prefix_reaches_every_node() {
    require_overlay!();
    require_bird!();
    let m = MeshWithBird::start();
    let p = m.pod_per_node();
    for b in &p.blocks {
        wait_for(&format!("BIRD learns {b}"), || m.bird.route(b).is_some());
    }
    for n in &m.c.nodes {
        wait_for(&format!("{} learns BIRD's prefix", n.name), || {
            routes(n, PROTO_BGP).contains(&("198.51.100.0/24".into(), "10.200.0.13".into()))
        });
    }
    wait_for("metrics: prefixes received", || {
        metrics(&m.c.nodes[0]).lines().any(|l| {
            l.starts_with("plexusd_bgp_prefixes_received ")
                && l != "plexusd_bgp_prefixes_received 0"
        })
    });
}

#[test]
fn an_agent_restart_under_a_running_ping_loses_nothing_and_drops_stale_routes() {
    require_overlay!();
    require_bird!();
    let mut m = MeshWithBird::start();
    let p = m.pod_per_node();
    let c = &m.c;
    let ping = p.pods[0]
        .cmd("ping")
        .args(["-q", "-i", "0.05", "-c", "120", &p.ips[1]])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn ping");
    std::thread::sleep(std::time::Duration::from_millis(500));
    // A route of ours no peer confirms: stale, removed after the resync.
    let st = m.agents[1].stop();
    assert!(st.success(), "plexusd exits 0 on SIGTERM");
    c.nodes[1].ns.ip(&[
        "route",
        "add",
        "203.0.113.0/24",
        "via",
        "10.200.0.10",
        "proto",
        PROTO_BGP,
        "metric",
        "4000000000",
    ]);
    m.agents[1].start_again();
    m.agents[1].wait_ready();
    let out = ping.wait_with_output().expect("ping");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(" 0% packet loss"),
        "ping across the restart lost packets:\n{text}\nlog:\n{}",
        m.agents[1].log_text()
    );
    wait_for("node1 back in the mesh", || established(&c.nodes[1], 3));
    assert!(m.agents[1].log_text().contains("restarting=true"));
    wait_for("the stale route goes", || {
        !routes(&c.nodes[1], PROTO_BGP)
            .iter()
            .any(|(d, _)| d == "203.0.113.0/24")
    });
    assert!(routes(&c.nodes[1], PROTO_BGP).contains(&(p.blocks[0].clone(), c.nodes[0].ip.clone())));
}

#[test]
fn node_remove_withdraws_the_nodes_block_everywhere() {
    require_overlay!();
    require_bird!();
    let m = MeshWithBird::start();
    let p = m.pod_per_node();
    let c = &m.c;
    let gone = p.blocks[2].clone();
    for b in &p.blocks {
        wait_for(&format!("BIRD learns {b}"), || m.bird.route(b).is_some());
    }
    store(c, |s| async move {
        s.remove_node("node2").await.unwrap();
    });
    for n in &c.nodes[..2] {
        wait_for(&format!("{} drops {gone}", n.name), || {
            !routes(n, PROTO_BGP).iter().any(|(d, _)| *d == gone)
        });
        // The remaining node's block stays.
        let other = if n.name == "node0" { 1 } else { 0 };
        assert!(
            routes(n, PROTO_BGP).contains(&(p.blocks[other].clone(), c.nodes[other].ip.clone())),
            "{} lost {}",
            n.name,
            p.blocks[other]
        );
    }
    wait_for("BIRD drops node2's block", || m.bird.route(&gone).is_none());
    wait_for("node2's blackhole goes", || {
        routes(&c.nodes[2], PROTO_BLOCK).is_empty()
    });
}

#[test]
fn concurrent_adds_on_three_nodes_never_share_an_address() {
    require_overlay!();
    // /30 blocks: six pods per node need two blocks each, so the three
    // agents claim blocks while the others do.
    let c = Cluster::new(3);
    add_pool(&c, 30);
    let _agents = c.start_agents(&[]);
    for n in &c.nodes {
        write_conf(n);
    }
    let pods: Vec<(usize, plexus_tests::Netns)> = (0..18)
        .map(|i| (i % 3, plexus_tests::Netns::new(&format!("cpod{i}"))))
        .collect();
    let ips: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .map(|(n, p)| {
                let node = &c.nodes[*n];
                s.spawn(move || add_pod(node, p, "eth0"))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let unique: BTreeSet<&String> = ips.iter().collect();
    assert_eq!(unique.len(), ips.len(), "duplicate addresses: {ips:?}");
    // The store agrees: six allocations per node, in that node's blocks,
    // and every node blackholes exactly the blocks it holds.
    for n in &c.nodes {
        let name = n.name.clone();
        let blocks = store(
            &c,
            move |s| async move { s.blocks_of(&name).await.unwrap() },
        );
        let used: usize = blocks.iter().map(|b| b.allocations.len()).sum();
        assert_eq!(used, 6, "{}: {blocks:?}", n.name);
        let mut held: Vec<String> = blocks.iter().map(|b| b.cidr.to_string()).collect();
        held.sort();
        let mut routed: Vec<String> = routes(n, PROTO_BLOCK).into_iter().map(|(d, _)| d).collect();
        routed.sort();
        assert_eq!(routed, held, "{}", n.name);
    }
}

#[test]
fn one_agent_serves_the_overlay_and_the_routed_network() {
    require_overlay!();
    // The store holds both: flannel's config and a routed pool. Each agent
    // runs both; its ready file means both are up (a subnet lease and
    // addresses from its blocks).
    let c = Cluster::new(2);
    c.set_config(&plexus_tests::cluster::vxlan_config("10.244.0.0/16"));
    add_pool(&c, 26);
    let _agents = c.start_agents(&[]);
    let mut pods = Vec::new();
    for n in &c.nodes {
        assert!(
            n.subnet_env("FLANNEL_SUBNET").is_some(),
            "{}: no subnet.env",
            n.name
        );
        let st: serde_json::Value =
            serde_json::from_str(&plexusctl(n, &["node", "status", "--json", "--run-dir"]))
                .expect("node status JSON");
        assert_eq!(st["backend"], "routed (BGP) + vxlan", "{st}");
        write_conf(n);
        let pod = n.add_pod(&format!("both-{}", n.name));
        let routed = add_pod(n, &pod.ns, "net1");
        pods.push((pod, routed));
    }
    for n in &c.nodes {
        wait_for(&format!("{}: mesh Established", n.name), || {
            established(n, 1)
        });
        assert!(n.ns.has_link("flannel.1"), "{}: no VXLAN device", n.name);
    }
    let (a, b) = (&pods[0], &pods[1]);
    for (from, to) in [(a, b), (b, a)] {
        let overlay = to.0.ip4();
        assert!(from.0.ns.ping(overlay), "overlay: {overlay}");
        let routed = &to.1;
        assert!(routed.starts_with("10.96."), "{routed}");
        wait_for(&format!("routed: {routed}"), || from.0.ns.ping(routed));
    }
}

/// node0 reflects for node1 and node2 (no mesh); GoBGP on the underlay is
/// node1's own peer; the agents poll the store once in ten minutes, so
/// what follows the store is its watch. Every session Established.
struct ReflectorWithGoBgp {
    _agents: Vec<Daemon>,
    gobgp: GoBgp,
    _router: Node,
    _dir: tempfile::TempDir,
    c: Cluster,
}

/// A pod on node1 and one on node2, their addresses and blocks, with each
/// node routing the other's block via the other node (reflected routes
/// keep the originating next hop).
struct ReflectedPods {
    pods: Vec<plexus_tests::Netns>,
    ips: [String; 2],
    blocks: [String; 2],
}

impl ReflectorWithGoBgp {
    fn start() -> ReflectorWithGoBgp {
        let (c, router, dir) = cluster_with_router();
        store(&c, |s| async move {
            s.set_bgp_config(&BgpConfig {
                asn: 64512,
                node_to_node_mesh: false,
                ..Default::default()
            })
            .await
            .unwrap();
            s.update_node("node0", |n| {
                n.route_reflector_cluster_id = Some("1.0.0.1".parse().unwrap())
            })
            .await
            .unwrap();
            s.add_peer(&Peer {
                address: "10.200.0.13".parse().unwrap(),
                asn: 65010,
                node: Some("node1".into()),
                settings: Default::default(),
            })
            .await
            .unwrap();
        });
        let gobgp = GoBgp::start(
            &router.ns,
            dir.path(),
            r#"[global.config]
  as = 65010
  router-id = "10.200.0.13"
  local-address-list = ["10.200.0.13"]
[[neighbors]]
  [neighbors.config]
    neighbor-address = "10.200.0.11"
    peer-as = 64512
  [neighbors.timers.config]
    connect-retry = 2
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
"#,
        );
        let agents: Vec<Daemon> = c.start_agents(&["--routed-poll-interval", "600"]);
        for n in &c.nodes {
            write_conf(n);
        }
        for (i, want) in [2, 2, 1].into_iter().enumerate() {
            let n = &c.nodes[i];
            wait_for(&format!("{}: {want} sessions Established", n.name), || {
                established(n, want)
            });
        }
        wait_for("GoBGP Established", || gobgp.established("10.200.0.11"));
        ReflectorWithGoBgp {
            _agents: agents,
            gobgp,
            _router: router,
            _dir: dir,
            c,
        }
    }

    fn reflected_pods(&self) -> ReflectedPods {
        let c = &self.c;
        let pods: Vec<_> = (1..3)
            .map(|i| plexus_tests::Netns::new(&format!("rrpod{i}")))
            .collect();
        let ips = [
            add_pod(&c.nodes[1], &pods[0], "eth0"),
            add_pod(&c.nodes[2], &pods[1], "eth0"),
        ];
        let blocks = [block_of(&c.nodes[1]), block_of(&c.nodes[2])];
        wait_for("node2 routes node1's block via node1", || {
            routes(&c.nodes[2], PROTO_BGP).contains(&(blocks[0].clone(), c.nodes[1].ip.clone()))
        });
        wait_for("node1 routes node2's block via node2", || {
            routes(&c.nodes[1], PROTO_BGP).contains(&(blocks[1].clone(), c.nodes[2].ip.clone()))
        });
        ReflectedPods { pods, ips, blocks }
    }
}

#[test]
fn route_reflector_and_node_specific_peers_show_in_bgp_status() {
    require_overlay!();
    require_gobgp!();
    let r = ReflectorWithGoBgp::start();
    let c = &r.c;
    assert_eq!(
        peer_kinds(&c.nodes[0]),
        BTreeSet::from([
            "10.200.0.11 route reflector client".to_string(),
            "10.200.0.12 route reflector client".to_string()
        ])
    );
    assert_eq!(
        peer_kinds(&c.nodes[1]),
        BTreeSet::from([
            "10.200.0.10 route reflector".to_string(),
            "10.200.0.13 node specific".to_string()
        ])
    );
    assert_eq!(
        peer_kinds(&c.nodes[2]),
        BTreeSet::from(["10.200.0.10 route reflector".to_string()])
    );
}

#[test]
fn pods_ping_over_reflected_routes() {
    require_overlay!();
    require_gobgp!();
    let r = ReflectorWithGoBgp::start();
    let p = r.reflected_pods();
    assert!(p.pods[0].ping(&p.ips[1]), "pod on node1 → pod on node2");
    assert!(p.pods[1].ping(&p.ips[0]), "pod on node2 → pod on node1");
}

#[test]
fn a_node_specific_gobgp_peer_exchanges_routes_through_the_reflector() {
    require_overlay!();
    require_gobgp!();
    let r = ReflectorWithGoBgp::start();
    let p = r.reflected_pods();
    let c = &r.c;
    // GoBGP learns both blocks from node1; its prefix reaches node2
    // through node1 (next-hop-self) and the reflector.
    for b in &p.blocks {
        wait_for(&format!("GoBGP learns {b}"), || {
            r.gobgp
                .cli(&["global", "rib", "-a", "ipv4"])
                .contains(b.as_str())
        });
    }
    r.gobgp
        .cli(&["global", "rib", "add", "192.0.2.0/24", "-a", "ipv4"]);
    wait_for("node1 learns GoBGP's prefix", || {
        routes(&c.nodes[1], PROTO_BGP).contains(&("192.0.2.0/24".into(), "10.200.0.13".into()))
    });
    wait_for("node2 learns GoBGP's prefix via node1", || {
        routes(&c.nodes[2], PROTO_BGP).contains(&("192.0.2.0/24".into(), c.nodes[1].ip.clone()))
    });
}

#[test]
fn node_remove_takes_effect_through_the_store_watch() {
    require_overlay!();
    require_gobgp!();
    let r = ReflectorWithGoBgp::start();
    let p = r.reflected_pods();
    let c = &r.c;
    // The poll is ten minutes away: only the watch can make this happen.
    let b2 = p.blocks[1].clone();
    store(c, |s| async move {
        s.remove_node("node2").await.unwrap();
    });
    wait_for("node1 drops node2's block", || {
        !routes(&c.nodes[1], PROTO_BGP).iter().any(|(d, _)| *d == b2)
    });
    wait_for("node2's blackhole goes", || {
        routes(&c.nodes[2], PROTO_BLOCK).is_empty()
    });
}

/// A peer sending malformed messages to plexusd itself (not just the
/// speaker library): each gets its NOTIFICATION, the connection closes, and
/// the agent keeps running with its mesh session untouched.
#[test]
fn malformed_bgp_messages_get_notifications_and_the_agent_carries_on() {
    use plexus_tests::routers::wire::{header, message, open, read_msg};
    use std::io::Write;
    use std::net::{SocketAddr, TcpStream};
    use std::time::Duration;

    require_overlay!();
    let mut c = Cluster::new(3);
    let evil = c.nodes.pop().unwrap(); // 10.200.0.12, no agent
    add_pool(&c, 26);
    // A configured global peer, so the agent opens a session with what
    // connects from there instead of refusing it outright.
    store(&c, |s| async move {
        s.add_peer(&Peer {
            address: "10.200.0.12".parse().unwrap(),
            asn: 65099,
            node: None,
            settings: Default::default(),
        })
        .await
        .unwrap();
    });
    let mut agents: Vec<Daemon> = c.start_agents(&[]);
    let n0 = &c.nodes[0];
    let mesh_peer = c.nodes[1].ip.clone();
    let mesh_state = |n: &Node| {
        bgp_status(n)["peers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["address"] == mesh_peer.as_str())
            .map(|p| {
                (
                    p["state"].as_str().unwrap_or("").to_string(),
                    p["since"].clone(),
                )
            })
    };
    wait_for("node0's mesh session Established", || {
        mesh_state(n0).is_some_and(|(st, _)| st == "Established")
    });
    let before = mesh_state(n0);

    let mut bad_marker = message(4, &[]);
    bad_marker[0] = 0;
    let cases: [(&str, Vec<u8>, (u8, u8)); 5] = [
        ("bad marker", bad_marker, (1, 1)),
        ("length above 4096", header(5000, 2), (1, 2)),
        ("unknown type", message(9, &[]), (1, 3)),
        (
            "BGP version 3",
            open(3, 65099, 90, [10, 200, 0, 12]),
            (2, 1),
        ),
        (
            "wrong peer AS",
            open(4, 65098, 90, [10, 200, 0, 12]),
            (2, 2),
        ),
    ];
    for (what, bad, want) in cases {
        let got = evil.ns.run(|| {
            let to: SocketAddr = format!("{}:179", n0.ip).parse().unwrap();
            let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(10)).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            s.write_all(&bad).unwrap();
            loop {
                let (kind, body) = read_msg(&mut s)
                    .unwrap_or_else(|| panic!("{what}: closed without a NOTIFICATION"));
                if kind == 3 {
                    assert!(
                        read_msg(&mut s).is_none(),
                        "{what}: not closed after the NOTIFICATION"
                    );
                    return (body[0], body[1]);
                }
            }
        });
        assert_eq!(got, want, "{what}: NOTIFICATION code/subcode");
    }
    for a in &mut agents {
        assert!(
            a.try_wait().is_none(),
            "an agent died; log:\n{}",
            a.log_text()
        );
    }
    assert_eq!(mesh_state(n0), before, "the mesh session was disturbed");
}

// ---------------------------------------------------------------- IP-in-IP
// (helpers for the tests below)

/// One pod per node through plexus-bgp-routes (netns named TAG0, TAG1...):
/// the pods and their IPv4 addresses, in node order.
fn pods_on(c: &Cluster, tag: &str) -> (Vec<plexus_tests::Netns>, Vec<String>) {
    let pods: Vec<_> = (0..c.nodes.len())
        .map(|i| plexus_tests::Netns::new(&format!("{tag}{i}")))
        .collect();
    let ips = c
        .nodes
        .iter()
        .zip(&pods)
        .map(|(n, p)| add_pod(n, p, "eth0"))
        .collect();
    (pods, ips)
}

/// The agents started, the routed conflist written on every node.
fn agents_with_conf(c: &Cluster) -> Vec<Daemon> {
    let agents = c.start_agents(&[]);
    for n in &c.nodes {
        write_conf(n);
    }
    agents
}

// The kernel of the development machines has no ipip module: these tests
// skip there (skip_kernel_feature) and run in the QEMU VM with the Debian
// kernel (tests/vm/kernel-tests.sh runs the tests tests/vm/kernel-tests.list
// names).

/// Whether this kernel makes IP-in-IP devices (the ipip module gives every
/// netns a `tunl0`; without it, creating one fails).
fn ipip_supported() -> bool {
    let ns = plexus_tests::Netns::new("ipipcheck");
    ns.has_link("tunl0")
        || ns
            .cmd("ip")
            .args(["link", "add", "ipipcheck", "type", "ipip"])
            .output()
            .is_ok_and(|o| o.status.success())
}

/// Return early (SKIP here, fail in the VM) without IP-in-IP.
macro_rules! require_ipip {
    () => {
        require_overlay!();
        if !ipip_supported() {
            assert!(
                std::env::var_os("PLEXUS_IN_VM").is_none(),
                "PLEXUS_IN_VM=1 but this kernel cannot create ipip links (is ipip.ko loaded?)"
            );
            plexus_tests::skip_kernel_feature(
                "this kernel has no ipip module (the QEMU VM runs the IP-in-IP tests)",
            );
            return;
        }
    };
}

fn add_encap_pool(c: &Cluster, encap: plexus_ipam::Encap) {
    add_pool_with(c, 26, encap);
}

/// The node's route to `dst`: (gateway, device, onlink).
fn route_to(n: &Node, dst: &str) -> Option<(String, String, bool)> {
    let r = n.ip_json(&["route", "show", "exact", dst, "proto", PROTO_BGP]);
    let r = r.as_array()?.first()?.clone();
    let onlink = r["flags"]
        .as_array()
        .is_some_and(|f| f.iter().any(|f| f == "onlink"));
    Some((
        r["gateway"].as_str().unwrap_or("").to_string(),
        r["dev"].as_str().unwrap_or("").to_string(),
        onlink,
    ))
}

/// tunl0's (tx packets, rx packets).
fn tunnel_packets(n: &Node) -> (u64, u64) {
    let l = n.ip_json(&["-s", "link", "show", "dev", "tunl0"]);
    let s = &l[0]["stats64"];
    (
        s["tx"]["packets"].as_u64().expect("tx packets"),
        s["rx"]["packets"].as_u64().expect("rx packets"),
    )
}

/// `count` pings from `pod` to `ip`, all answered.
fn ping_n(pod: &plexus_tests::Netns, ip: &str, count: u32) {
    let out = pod
        .cmd("ping")
        .args(["-q", "-i", "0.2", "-W", "2", "-c", &count.to_string(), ip])
        .output()
        .expect("spawn ping");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(" 0% packet loss"), "ping {ip}:\n{text}");
}

#[test]
fn ipip_pods_ping_across_nodes_through_tunl0() {
    require_ipip!();
    let c = Cluster::new(2);
    add_encap_pool(&c, plexus_ipam::Encap::Ipip);
    let _agents = agents_with_conf(&c);
    let (pods, ips) = pods_on(&c, "ipod");
    let blocks: Vec<String> = c.nodes.iter().map(block_of).collect();

    for (i, n) in c.nodes.iter().enumerate() {
        let (j, other) = (1 - i, &c.nodes[1 - i]);
        // The other node's block through tunl0, onlink via its underlay address.
        wait_for(
            &format!("{}: route to {} via tunl0", n.name, blocks[j]),
            || route_to(n, &blocks[j]) == Some((other.ip.clone(), "tunl0".into(), true)),
        );
        // tunl0: up, MTU of eth0 − 20, one address from the node's own block.
        let l = n.ip_json(&["link", "show", "dev", "tunl0"]);
        assert_eq!(l[0]["mtu"], 1480, "{l}");
        assert!(
            l[0]["flags"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f == "UP")),
            "{l}"
        );
        let addrs = n.ns.addrs("tunl0");
        assert_eq!(addrs.len(), 1, "{addrs:?}");
        let (addr, len) = addrs[0].split_once('/').unwrap();
        assert_eq!(len, "32");
        let block: ipnet::IpNet = blocks[i].parse().unwrap();
        assert!(block.contains(&addr.parse::<std::net::IpAddr>().unwrap()));
        // Held in IPAM: never a pod's.
        assert!(!ips.contains(&addr.to_string()));
        // The pod's MTU leaves room for the tunnel's header (the agent's,
        // the conflist names none).
        let pl = pods[i].ip_json(&["link", "show", "dev", "eth0"]);
        assert_eq!(pl[0]["mtu"], 1480, "{pl}");
    }

    // Pods ping across nodes, and the packets go through the tunnels.
    let (tx0, _) = tunnel_packets(&c.nodes[0]);
    let (_, rx1) = tunnel_packets(&c.nodes[1]);
    ping_n(&pods[0], &ips[1], 5);
    ping_n(&pods[1], &ips[0], 5);
    let (tx0b, rx0b) = tunnel_packets(&c.nodes[0]);
    let (tx1b, rx1b) = tunnel_packets(&c.nodes[1]);
    assert!(tx0b >= tx0 + 10, "node0 tunl0 tx {tx0} → {tx0b}");
    assert!(rx1b >= rx1 + 10, "node1 tunl0 rx {rx1} → {rx1b}");
    assert!(tx1b >= 10 && rx0b >= 10);
    // The node itself reaches a remote pod: its source is tunl0's address,
    // which the other node routes back through its tunnel.
    assert!(c.nodes[0].ns.ping(&ips[1]), "node0 → pod1 ({})", ips[1]);
}

/// tunl0 is one of plexusd's data plane entries (the device, its MTU, its
/// address from the node's block) and so are the routes through it: each
/// deleted or changed by hand comes back, without an agent restart, and
/// the pods ping again. Deleting the device itself is not among them: tunl0
/// is the fallback device ipip.ko makes in every namespace, and the kernel
/// ignores a delete of it (ip_tunnel_dellink skips the fallback device), so
/// only its state can drift.
#[test]
fn ipip_tunnel_changed_by_hand_is_put_back() {
    require_ipip!();
    let c = Cluster::new(2);
    add_encap_pool(&c, plexus_ipam::Encap::Ipip);
    let _agents = agents_with_conf(&c);
    let (pods, ips) = pods_on(&c, "dpod");
    let blocks: Vec<String> = c.nodes.iter().map(block_of).collect();
    let (n0, n1) = (&c.nodes[0], &c.nodes[1]);
    wait_for("node0: node1's block via tunl0", || {
        route_to(n0, &blocks[1]) == Some((n1.ip.clone(), "tunl0".into(), true))
    });
    let addrs = n0.ns.addrs("tunl0");
    assert_eq!(addrs.len(), 1, "{addrs:?}");
    let addr = addrs[0].clone();
    let mtu = |n: &Node| n.ip_json(&["link", "show", "dev", "tunl0"])[0]["mtu"].clone();
    let up = |n: &Node| {
        n.ip_json(&["link", "show", "dev", "tunl0"])[0]["flags"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f == "UP"))
    };

    // Its address deleted.
    n0.ns.ip(&["addr", "del", &addr, "dev", "tunl0"]);
    wait_for("tunl0's address put back", || {
        n0.ns.addrs("tunl0") == vec![addr.clone()]
    });
    // Its MTU changed, then the device set down (which also takes the
    // routes through it out of the kernel).
    n0.ns.ip(&["link", "set", "tunl0", "mtu", "1300"]);
    wait_for("tunl0's MTU put back", || mtu(n0) == 1480);
    n0.ns.ip(&["link", "set", "tunl0", "down"]);
    wait_for("tunl0 up again", || up(n0));
    wait_for(
        "the route through tunl0 back after the link was down",
        || route_to(n0, &blocks[1]) == Some((n1.ip.clone(), "tunl0".into(), true)),
    );
    // The learned route through it deleted, then moved off the tunnel.
    n0.ns.ip(&["route", "del", &blocks[1]]);
    wait_for("the learned route through tunl0 put back", || {
        route_to(n0, &blocks[1]) == Some((n1.ip.clone(), "tunl0".into(), true))
    });
    // In place: same destination, protocol and metric (a route at another
    // metric is another route, and not ours).
    n0.ns.ip(&[
        "route",
        "replace",
        &blocks[1],
        "via",
        &n1.ip,
        "dev",
        "eth0",
        "proto",
        "114",
        "metric",
        "4000000000",
    ]);
    wait_for("the learned route back on tunl0", || {
        route_to(n0, &blocks[1]) == Some((n1.ip.clone(), "tunl0".into(), true))
    });
    // Still one address, and the pods talk through the tunnel.
    assert_eq!(n0.ns.addrs("tunl0"), vec![addr]);
    let (tx0, _) = tunnel_packets(n0);
    ping_n(&pods[0], &ips[1], 3);
    let (tx0b, _) = tunnel_packets(n0);
    assert!(tx0b >= tx0 + 3, "node0 tunl0 tx {tx0} → {tx0b}");
}

#[test]
fn ipip_cross_subnet_tunnels_only_to_the_other_subnet() {
    require_ipip!();
    let mut c = Cluster::new(3);
    // node2 moves to another subnet on the same wire: every other namespace
    // reaches 10.201.0.0/24 on-link, and node2 reaches 10.200.0.0/24.
    {
        let n2 = &mut c.nodes[2];
        n2.ns.ip(&["addr", "del", "10.200.0.12/24", "dev", "eth0"]);
        n2.ns.ip(&["addr", "add", "10.201.0.12/24", "dev", "eth0"]);
        n2.ns.ip(&["route", "add", "10.200.0.0/24", "dev", "eth0"]);
        n2.ip = "10.201.0.12".into();
    }
    for ns in [&c.nodes[0].ns, &c.nodes[1].ns, &c.etcd_ns] {
        ns.ip(&["route", "add", "10.201.0.0/24", "dev", "eth0"]);
    }
    add_encap_pool(&c, plexus_ipam::Encap::IpipCrossSubnet);
    let _agents = agents_with_conf(&c);
    let (pods, ips) = pods_on(&c, "xpod");
    let blocks: Vec<String> = c.nodes.iter().map(block_of).collect();
    let (n0, n1, n2) = (&c.nodes[0], &c.nodes[1], &c.nodes[2]);

    // node0 → node1 (same subnet): direct; node0 ↔ node2: tunnel.
    wait_for("node0: node1's block direct", || {
        route_to(n0, &blocks[1]) == Some((n1.ip.clone(), "eth0".into(), false))
    });
    wait_for("node0: node2's block via tunl0", || {
        route_to(n0, &blocks[2]) == Some((n2.ip.clone(), "tunl0".into(), true))
    });
    for j in [0, 1] {
        let o = &c.nodes[j];
        wait_for(&format!("node2: {}'s block via tunl0", o.name), || {
            route_to(n2, &blocks[j]) == Some((o.ip.clone(), "tunl0".into(), true))
        });
    }
    // Same subnet: no tunnel traffic; across: through the tunnel.
    let (tx0, _) = tunnel_packets(n0);
    ping_n(&pods[0], &ips[1], 5);
    let (tx0b, _) = tunnel_packets(n0);
    assert_eq!(tx0b, tx0, "pod0 → pod1 stays off the tunnel");
    let (_, rx2) = tunnel_packets(n2);
    ping_n(&pods[0], &ips[2], 5);
    ping_n(&pods[1], &ips[2], 5);
    let (tx0c, _) = tunnel_packets(n0);
    let (_, rx2b) = tunnel_packets(n2);
    assert!(tx0c >= tx0b + 5, "node0 tunl0 tx {tx0b} → {tx0c}");
    assert!(rx2b >= rx2 + 10, "node2 tunl0 rx {rx2} → {rx2b}");

    // The pool's encapsulation off in the store: routes move to the
    // underlay and tunl0 loses its address, no agent restart.
    store(&c, |s| async move {
        s.update_pool("default", |p| p.encap = plexus_ipam::Encap::None)
            .await
            .unwrap();
    });
    wait_for("node0: node2's block direct", || {
        route_to(n0, &blocks[2]) == Some((n2.ip.clone(), "eth0".into(), false))
    });
    wait_for("node2's tunl0 has no address", || {
        n2.ns.addrs("tunl0").is_empty()
    });
    ping_n(&pods[0], &ips[2], 3);
}

// ---------------------------------------------------------------- IPv6
/// The node's IPv6 routes with our BGP protocol, as (dst, gateway).
fn routes6(n: &Node) -> Vec<(String, String)> {
    routes_of(n, "-6", PROTO_BGP)
}

#[test]
fn bgp_learned_ipv6_routes_reach_the_kernel_and_leave_on_withdraw() {
    require_overlay!();
    if !tool_available("bird") {
        plexus_tests::skip("bird2 is not installed (scripts/install-deps.sh)");
        return;
    }
    let (c, router, dir) = cluster_with_router();
    let router_ip = router.ip.clone();
    store(&c, |s| async move {
        let address = router_ip.parse().unwrap();
        s.add_peer(&Peer {
            address,
            asn: 65000,
            node: None,
            settings: Default::default(),
        })
        .await
        .unwrap();
    });
    // IPv6 unicast over the IPv4 sessions, BIRD's underlay IPv6 address as
    // the next hop.
    let conf = format!(
        r#"
router id 10.200.0.13;
protocol device {{}}
protocol static announce6 {{ ipv6; route 2001:db8:60::/48 blackhole; route 2001:db8:61::/64 blackhole; }}
template bgp plexus {{
  local as 65000;
  ipv4 {{ import none; export none; }};
  ipv6 {{ import none; export where proto = "announce6"; next hop address {}; }};
}}
protocol bgp n0 from plexus {{ neighbor 10.200.0.10 as 64512; }}
protocol bgp n1 from plexus {{ neighbor 10.200.0.11 as 64512; }}
protocol bgp n2 from plexus {{ neighbor 10.200.0.12 as 64512; }}
"#,
        router.ip6
    );
    let bird = Bird::start(&router.ns, dir.path(), &conf);
    let _agents: Vec<Daemon> = c.start_agents(&[]);
    let want: Vec<(String, String)> = ["2001:db8:60::/48", "2001:db8:61::/64"]
        .iter()
        .map(|p| (p.to_string(), router.ip6.clone()))
        .collect();
    for n in &c.nodes {
        wait_for(
            &format!("{}: BIRD's IPv6 prefixes via {}", n.name, router.ip6),
            || {
                let r = routes6(n);
                want.iter().all(|w| r.contains(w))
            },
        );
        // The kernel forwards by them: the route resolves to the underlay.
        let got = n.ip_json(&["-6", "route", "get", "2001:db8:60::1"]);
        assert_eq!(got[0]["gateway"], router.ip6.as_str(), "{got}");
        assert_eq!(got[0]["dev"], "eth0", "{got}");
    }
    // BIRD withdraws them: they leave every node's kernel.
    bird.birdc(&["disable", "announce6"]);
    for n in &c.nodes {
        wait_for(&format!("{}: the IPv6 routes go", n.name), || {
            routes6(n).is_empty()
        });
    }
    // And come back when announced again.
    bird.birdc(&["enable", "announce6"]);
    for n in &c.nodes {
        wait_for(&format!("{}: the IPv6 routes are back", n.name), || {
            routes6(n).len() == 2
        });
    }
}

// ---------------------------------------------------------------- AS change
#[test]
fn a_node_as_change_in_the_store_takes_effect_without_a_restart() {
    require_overlay!();
    let c = Cluster::new(2);
    add_pool(&c, 26);
    let agents = agents_with_conf(&c);
    let (pods, ips) = pods_on(&c, "apod");
    for n in &c.nodes {
        wait_for(&format!("{}: mesh Established", n.name), || {
            established(n, 1)
        });
    }
    let (n0, n1) = (&c.nodes[0], &c.nodes[1]);
    assert_eq!(bgp_status(n0)["asn"], 64512);

    store(&c, |s| async move {
        s.update_node("node0", |n| n.asn = Some(64600))
            .await
            .unwrap();
    });
    // node0 speaks as AS 64600 now, node1 peers with it as such (eBGP).
    wait_for("node0 runs as AS 64600", || bgp_status(n0)["asn"] == 64600);
    wait_for("node1 peers with AS 64600, Established", || {
        bgp_status(n1)["peers"].as_array().unwrap().iter().any(|p| {
            p["address"] == n0.ip.as_str() && p["asn"] == 64600 && p["state"] == "Established"
        })
    });
    wait_for("node0's session Established again", || established(n0, 1));
    // Routes flow over the new session both ways; no agent restarted.
    let b0 = block_of(n0);
    let b1 = block_of(n1);
    wait_for("node1 routes node0's block", || {
        routes(n1, PROTO_BGP).contains(&(b0.clone(), n0.ip.clone()))
    });
    wait_for("node0 routes node1's block", || {
        routes(n0, PROTO_BGP).contains(&(b1.clone(), n1.ip.clone()))
    });
    assert!(pods[0].ping(&ips[1]));
    assert!(agents[0].log_text().contains("our AS changed"));
    assert!(agents.iter().all(|a| a.pid().is_some()));
}

#[test]
fn ipv6_blocks_are_announced_with_the_public_ipv6_and_pods_ping_over_ipv6() {
    require_overlay!();
    let c = Cluster::new(2);
    add_pool(&c, 26);
    store(&c, |s| async move {
        s.add_pool(&Pool {
            name: "v6".into(),
            cidr: "fd96::/48".parse().unwrap(),
            block_size: 122,
            nat_outgoing: false,
            encap: Default::default(),
            disabled: false,
        })
        .await
        .unwrap();
    });
    // Each agent with its underlay IPv6 address: the next hop of its IPv6
    // blocks on the (IPv4) mesh sessions.
    let agents: Vec<Daemon> = c
        .nodes
        .iter()
        .map(|n| n.start_agent(&c.etcd.url(), &["--public-ipv6", &n.ip6]))
        .collect();
    for n in &c.nodes {
        write_conf(n);
    }
    let pods: Vec<_> = (0..2)
        .map(|i| plexus_tests::Netns::new(&format!("v6pod{i}")))
        .collect();
    let ip6: Vec<String> = c
        .nodes
        .iter()
        .zip(&pods)
        .map(|(n, p)| {
            let out = add_routed_pod(n, p, "eth0");
            let v6 = out["ips"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|i| i["address"].as_str())
                .find(|a| a.contains(':'))
                .expect("an IPv6 address");
            v6.split('/').next().unwrap().to_string()
        })
        .collect();
    for (i, n) in c.nodes.iter().enumerate() {
        let o = &c.nodes[1 - i];
        let other: ipnet::IpNet = format!("{}/128", ip6[1 - i]).parse().unwrap();
        wait_for(
            &format!("{}: the other node's IPv6 block via {}", n.name, o.ip6),
            || {
                routes6(n).iter().any(|(d, gw)| {
                    gw == &o.ip6
                        && d.parse::<ipnet::IpNet>()
                            .is_ok_and(|b| b.contains(&other.addr()))
                })
            },
        );
    }
    // The first packets may wait on neighbour discovery along the way.
    wait_for(&format!("pod0 → pod1 over IPv6 ({})", ip6[1]), || {
        pods[0].ping(&ip6[1])
    });
    assert!(pods[1].ping(&ip6[0]), "pod1 → pod0 over IPv6 ({})", ip6[0]);
    drop(agents);
}

/// Turns the default pool's nat-outgoing on or off in the store.
fn set_nat_outgoing(c: &Cluster, on: bool) {
    store(c, move |s| async move {
        s.update_pool("default", |p| p.nat_outgoing = on)
            .await
            .unwrap();
    });
}

#[test]
fn nat_outgoing_masquerades_what_leaves_the_pools_and_follows_the_store() {
    require_overlay!();
    // node0 runs the routed network; node1 stays a plain host on the
    // underlay with no route to the pools (the world outside the cluster).
    let mut c = Cluster::new(2);
    let outside = c.nodes.pop().unwrap();
    add_pool(&c, 26);
    let _agents = agents_with_conf(&c);
    let n0 = &c.nodes[0];
    let pod = plexus_tests::Netns::new("natpod");
    add_pod(n0, &pod, "eth0");
    let chain = || {
        n0.ns
            .nft_table("inet", "plexusd")
            .contains("routed-nat-outgoing")
    };
    // Without NAT the outside host answers the pod's own address, which it
    // cannot route: nothing comes back.
    assert!(!chain(), "no chain while no pool asks for NAT");
    assert!(!pod.ping(&outside.ip));

    set_nat_outgoing(&c, true);
    wait_for("the nat-outgoing chain", chain);
    let rules = n0.ns.nft_table("inet", "plexusd");
    assert!(rules.contains("ip daddr 10.96.0.0/16 accept"), "{rules}");
    assert!(rules.contains("ip saddr 10.96.0.0/16"), "{rules}");
    assert!(rules.contains("masquerade"), "{rules}");
    assert!(
        pod.ping(&outside.ip),
        "the pod reaches the outside host as the node"
    );

    set_nat_outgoing(&c, false);
    wait_for("the chain removed", || !chain());
    assert!(!pod.ping(&outside.ip));
}
