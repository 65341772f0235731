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
use std::future::Future;
use std::process::Stdio;

use plexus_ipam::{BgpConfig, Cluster as Ipam, Layout, Peer, Pool};
use plexus_tests::bin_dir;
use plexus_tests::cluster::{wait_for, Cluster, Daemon, Node};
use plexus_tests::require_overlay;
use plexus_tests::routers::{tool_available, Bird, GoBgp};
use serde_json::{json, Value};

const NET: &str = "routed";
const POOL: &str = "10.96.0.0/16";
/// plexusd's protocol numbers (agent/src/routed/kernel.rs).
const PROTO_BLOCK: &str = "113";
const PROTO_BGP: &str = "114";

/// Runs `f` against the cluster's store, from inside the etcd netns.
fn store<T: Send, F: Future<Output = T>>(c: &Cluster, f: impl FnOnce(Ipam) -> F + Send) -> T {
    let url = c.etcd.url();
    c.etcd_ns.run(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let kv = plexus_store::open_kv(&url, &Default::default())
                .await
                .expect("open etcd")
                .expect("a kv store");
            f(Ipam::new(kv, Layout::default())).await
        })
    })
}

fn add_pool(c: &Cluster, block_size: u8) {
    store(c, move |s| async move {
        s.set_bgp_config(&BgpConfig::default()).await.unwrap();
        s.add_pool(&Pool {
            name: "default".into(),
            cidr: POOL.parse().unwrap(),
            block_size,
            nat_outgoing: false,
            encap: Default::default(),
            disabled: false,
        })
        .await
        .unwrap();
    });
}

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
    n.cni.write_conf(
        "10-routed.conflist",
        &json!({"cniVersion": "1.1.0", "name": NET,
                "plugins": [{"type": "plexus-bgp-routes", "runDir": n.run_dir}]}),
    );
}

/// ADD through plexus-bgp-routes; the pod's IPv4 address.
fn add_pod(n: &Node, pod: &plexus_tests::Netns, ifname: &str) -> String {
    let out = n
        .cni
        .ctl(
            &n.ns,
            "add",
            NET,
            Some(&pod.path()),
            &[("CNI_IFNAME", ifname)],
        )
        .ok()
        .json();
    let a = out["ips"][0]["address"].as_str().expect("an address");
    a.split('/').next().unwrap().to_string()
}

/// `plexusctl bgp status --json` in the node.
fn bgp_status(n: &Node) -> Value {
    let out =
        n.ns.cmd(bin_dir().join("plexusctl"))
            .args(["bgp", "status", "--json", "--run-dir"])
            .arg(&n.run_dir)
            .output()
            .expect("spawn plexusctl");
    assert!(
        out.status.success(),
        "plexusctl bgp status: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

/// `plexusctl ARGS <run-dir>` in the node: its stdout.
fn plexusctl(n: &Node, args: &[&str]) -> String {
    let out =
        n.ns.cmd(bin_dir().join("plexusctl"))
            .args(args)
            .arg(&n.run_dir)
            .output()
            .expect("spawn plexusctl");
    assert!(
        out.status.success(),
        "plexusctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// GET /metrics from the agent's --metrics-addr, inside the node.
fn metrics(n: &Node) -> String {
    n.ns.http_get("127.0.0.1:9464", "/metrics")
}

fn established(n: &Node, want: usize) -> bool {
    let st = bgp_status(n);
    let peers = st["peers"].as_array().unwrap();
    peers.len() == want && peers.iter().all(|p| p["state"] == "Established")
}

/// The node's routes with `proto`, as (dst, gateway or "").
fn routes(n: &Node, proto: &str) -> Vec<(String, String)> {
    n.ip_json(&["route", "show", "proto", proto])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["dst"].as_str().unwrap_or("").to_string(),
                r["gateway"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
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

#[test]
fn mesh_bird_pods_restart_and_node_remove() {
    require_overlay!();
    if !tool_available("bird") {
        plexus_tests::skip("bird2 is not installed (scripts/install-deps.sh)");
        return;
    }
    let (c, router, dir) = cluster_with_router();
    store(&c, |s| async move {
        s.add_peer(&Peer {
            address: "10.200.0.13".parse().unwrap(),
            asn: 65000,
            node: None,
        })
        .await
        .unwrap();
    });
    let bird = Bird::start(&router.ns, dir.path(), BIRD_CONF);
    let mut agents: Vec<Daemon> = c.start_agents(&["--metrics-addr", "127.0.0.1:9464"]);
    for n in &c.nodes {
        write_conf(n);
    }

    // Sessions: two mesh peers and BIRD on every node.
    for n in &c.nodes {
        wait_for(&format!("{}: 3 sessions Established", n.name), || {
            established(n, 3)
        });
        let kinds = peer_kinds(n);
        let mut want: BTreeSet<String> = c
            .nodes
            .iter()
            .filter(|o| o.name != n.name)
            .map(|o| format!("{} node-to-node mesh", o.ip))
            .collect();
        want.insert("10.200.0.13 global".into());
        assert_eq!(kinds, want);
    }

    // The table for people, and the metrics.
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

    // One pod per node; each node holds one block.
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
        "{blocks:?}"
    );

    // Every node routes the others' blocks via their underlay address,
    // with our protocol and no tunnel.
    for (i, n) in c.nodes.iter().enumerate() {
        wait_for(&format!("{}: routes to the other blocks", n.name), || {
            let r = routes(n, PROTO_BGP);
            c.nodes
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .all(|(j, o)| r.contains(&(blocks[j].clone(), o.ip.clone())))
        });
        let links = n.ns.links();
        assert!(
            links
                .iter()
                .all(|l| l == "lo" || l == "eth0" || l.starts_with("plx")),
            "no encapsulation device on {}: {links:?}",
            n.name
        );
    }
    for (i, p) in pods.iter().enumerate() {
        for (j, ip) in ips.iter().enumerate() {
            if i != j {
                assert!(p.ping(ip), "pod{i} → pod{j} ({ip})");
            }
        }
    }

    // BIRD learns every block; its prefix reaches every node.
    for b in &blocks {
        wait_for(&format!("BIRD learns {b}"), || bird.route(b).is_some());
    }
    for n in &c.nodes {
        wait_for(&format!("{} learns BIRD's prefix", n.name), || {
            routes(n, PROTO_BGP).contains(&("198.51.100.0/24".into(), "10.200.0.13".into()))
        });
    }

    // An agent restart under a running ping loses nothing.
    let ping = pods[0]
        .cmd("ping")
        .args(["-q", "-i", "0.05", "-c", "120", &ips[1]])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn ping");
    std::thread::sleep(std::time::Duration::from_millis(500));
    // A route of ours no peer confirms: stale, removed after the resync.
    let st = agents[1].stop();
    assert!(st.success(), "plexusd exits 0 on SIGTERM");
    c.nodes[1].ns.ip(&[
        "route",
        "add",
        "203.0.113.0/24",
        "via",
        "10.200.0.10",
        "proto",
        PROTO_BGP,
    ]);
    agents[1].start_again();
    agents[1].wait_ready();
    let out = ping.wait_with_output().expect("ping");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(" 0% packet loss"),
        "ping across the restart lost packets:\n{text}\nlog:\n{}",
        agents[1].log_text()
    );
    wait_for("node1 back in the mesh", || established(&c.nodes[1], 3));
    assert!(agents[1].log_text().contains("restarting=true"));
    wait_for("the stale route goes", || {
        !routes(&c.nodes[1], PROTO_BGP)
            .iter()
            .any(|(d, _)| d == "203.0.113.0/24")
    });
    assert!(routes(&c.nodes[1], PROTO_BGP).contains(&(blocks[0].clone(), c.nodes[0].ip.clone())));
    wait_for("metrics: prefixes received", || {
        metrics(&c.nodes[0]).lines().any(|l| {
            l.starts_with("plexusd_bgp_prefixes_received ")
                && l != "plexusd_bgp_prefixes_received 0"
        })
    });

    // node remove node2: its block is withdrawn everywhere.
    let gone = blocks[2].clone();
    store(&c, |s| async move {
        s.remove_node("node2").await.unwrap();
    });
    for n in &c.nodes[..2] {
        wait_for(&format!("{} drops {gone}", n.name), || {
            !routes(n, PROTO_BGP).iter().any(|(d, _)| *d == gone)
        });
    }
    wait_for("BIRD drops node2's block", || bird.route(&gone).is_none());
    wait_for("node2's blackhole goes", || {
        routes(&c.nodes[2], PROTO_BLOCK).is_empty()
    });
    drop(agents);
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
        let st: Value =
            serde_json::from_str(&plexusctl(n, &["node", "status", "--json", "--run-dir"]))
                .expect("node status JSON");
        assert_eq!(st["backend"], "vxlan + routed (BGP)", "{st}");
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

#[test]
fn route_reflector_and_a_gobgp_node_peer() {
    require_overlay!();
    if !tool_available("gobgpd") {
        plexus_tests::skip("gobgpd is not installed (scripts/install-deps.sh)");
        return;
    }
    // node0 reflects for node1 and node2 (no mesh); GoBGP is node1's own peer.
    let (c, router, dir) = cluster_with_router();
    store(&c, |s| async move {
        s.set_bgp_config(&BgpConfig {
            asn: 64512,
            node_to_node_mesh: false,
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
    // Polling once in ten minutes: what follows the store here is its watch.
    let _agents: Vec<Daemon> = c.start_agents(&["--routed-poll-interval", "600"]);
    for n in &c.nodes {
        write_conf(n);
    }
    for (i, want) in [2, 2, 1].into_iter().enumerate() {
        let n = &c.nodes[i];
        wait_for(&format!("{}: {want} sessions Established", n.name), || {
            established(n, want)
        });
    }
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
    wait_for("GoBGP Established", || gobgp.established("10.200.0.11"));

    let pods: Vec<_> = (1..3)
        .map(|i| plexus_tests::Netns::new(&format!("rrpod{i}")))
        .collect();
    let ip1 = add_pod(&c.nodes[1], &pods[0], "eth0");
    let ip2 = add_pod(&c.nodes[2], &pods[1], "eth0");
    let (b1, b2) = (block_of(&c.nodes[1]), block_of(&c.nodes[2]));
    // Reflected routes keep the originating node as next hop.
    wait_for("node2 routes node1's block via node1", || {
        routes(&c.nodes[2], PROTO_BGP).contains(&(b1.clone(), c.nodes[1].ip.clone()))
    });
    wait_for("node1 routes node2's block via node2", || {
        routes(&c.nodes[1], PROTO_BGP).contains(&(b2.clone(), c.nodes[2].ip.clone()))
    });
    assert!(pods[0].ping(&ip2), "pod on node1 → pod on node2");
    assert!(pods[1].ping(&ip1), "pod on node2 → pod on node1");

    // GoBGP learns both blocks from node1; its prefix reaches node2
    // through node1 (next-hop-self) and the reflector.
    for b in [&b1, &b2] {
        wait_for(&format!("GoBGP learns {b}"), || {
            gobgp
                .cli(&["global", "rib", "-a", "ipv4"])
                .contains(b.as_str())
        });
    }
    gobgp.cli(&["global", "rib", "add", "192.0.2.0/24", "-a", "ipv4"]);
    wait_for("node1 learns GoBGP's prefix", || {
        routes(&c.nodes[1], PROTO_BGP).contains(&("192.0.2.0/24".into(), "10.200.0.13".into()))
    });
    wait_for("node2 learns GoBGP's prefix via node1", || {
        routes(&c.nodes[2], PROTO_BGP).contains(&("192.0.2.0/24".into(), c.nodes[1].ip.clone()))
    });

    // The watch, not the poll, makes node remove take effect.
    store(&c, |s| async move {
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
