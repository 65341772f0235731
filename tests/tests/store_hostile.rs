//! Store records are checked before they reach the kernel (issue 18):
//! plexusd on simulated nodes against a real etcd into which the tests
//! write what a careless or hostile writer would.
//!
//! Covered, the overlay: leases outside the Network, inside a node's own
//! subnet or inside the underlay are skipped (logged, counted) and never
//! routed; a node's own lease overwritten by another writer is noticed
//! within seconds and written back; a planted lease carrying a node's
//! public IP whose key sorts first is not taken at restart, and the node's
//! own subnet is never programmed as a remote. The routed network: a block
//! record whose key and CIDR disagree or that lies in the underlay is not
//! blackholed nor announced, a pool covering the underlay is refused; one
//! garbage block record and a pool with an invalid CIDR stop neither block
//! claims nor an agent's restart.

use plexus_tests::cluster::routed::{
    add_pool, add_routed_pod, established, first_ip, routes, write_routed_conf,
};
use plexus_tests::cluster::{key_to_cidr, wait_for, Cluster, Daemon, Node, PREFIX};
use plexus_tests::require_overlay;
use serde_json::{json, Value};

/// flannel's config with a Network that holds the underlay (10.200.0.0/24):
/// agents lease between 10.0.1.0 and 10.0.239.0.
fn wide_config() -> Value {
    json!({"Network": "10.0.0.0/8", "SubnetMax": "10.0.239.0", "Backend": {"Type": "vxlan"}})
}

fn metrics(n: &Node) -> String {
    n.ns.http_get("127.0.0.1:9464", "/metrics")
}

/// A counter or gauge of the agent's /metrics.
fn metric(n: &Node, name: &str) -> u64 {
    metrics(n)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn lease_value(ip: &str, mac: &str) -> Value {
    json!({"PublicIP": ip, "PublicIPv6": null, "BackendType": "vxlan",
           "BackendData": {"VNI": 1, "VtepMAC": mac}})
}

fn overlay_cluster(nodes: usize) -> (Cluster, Vec<Daemon>) {
    let c = Cluster::new(nodes);
    c.set_config(&wide_config());
    let agents = c.start_agents(&["--metrics-addr", "127.0.0.1:9464"]);
    (c, agents)
}

/// The node's own lease key and value.
fn own_lease(c: &Cluster, n: &Node) -> (String, Value) {
    c.lease_of(&n.ip).expect("the node's lease")
}

#[test]
fn overlay_leases_outside_the_network_or_over_a_node_or_the_underlay_are_skipped() {
    require_overlay!();
    let (c, agents) = overlay_cluster(2);
    let (n0, n1) = (&c.nodes[0], &c.nodes[1]);
    let (k0, _) = own_lease(&c, n0);
    let sub0 = key_to_cidr(&k0);
    let half = format!("{}/25", sub0.split('/').next().unwrap());
    let half_key = half.replace('/', "-");
    let phantom = "10.200.0.99";
    // Outside the Network, half of node0's /24, the underlay itself, and
    // one good lease to know the agents have seen the others.
    for (key, mac) in [
        ("172.31.7.0-24", "02:00:00:00:07:01"),
        (half_key.as_str(), "02:00:00:00:07:02"),
        ("10.200.0.0-24", "02:00:00:00:07:03"),
        ("10.0.240.0-24", "02:00:00:00:07:04"),
    ] {
        c.put_lease(key, &lease_value(phantom, mac));
    }
    for n in [n0, n1] {
        wait_for(&format!("{} programs the good lease", n.name), || {
            n.vxlan_entries("flannel.1", "10.0.240.0/24", "02:00:00:00:07:04", phantom)
                .all()
        });
        for bad in ["172.31.7.0/24", half.as_str(), "10.200.0.0/24"] {
            let r = n.route_to(bad);
            assert!(
                r.as_ref()
                    .is_none_or(|r| r["dev"] != "flannel.1" && r["gateway"].is_null()),
                "{}: {bad} routed: {r:?}",
                n.name
            );
        }
        assert_eq!(
            n.route_to("10.200.0.0/24").map(|r| r["protocol"].clone()),
            Some(json!("kernel")),
            "{}: the underlay stays connected",
            n.name
        );
        wait_for(&format!("{} counts the skipped leases", n.name), || {
            metric(n, "plexusd_store_records_skipped_total") >= 3
        });
    }
    let log = std::fs::read_to_string(&n1.log).unwrap();
    assert!(log.contains("lease skipped"), "{log}");
    drop(agents);
}

#[test]
fn a_nodes_own_lease_overwritten_by_another_writer_is_written_back() {
    require_overlay!();
    let (c, agents) = overlay_cluster(2);
    let (n0, n1) = (&c.nodes[0], &c.nodes[1]);
    let (k0, v0) = own_lease(&c, n0);
    let sub0 = key_to_cidr(&k0);
    let mac0 = v0["BackendData"]["VtepMAC"].as_str().unwrap().to_string();
    wait_for("node1 programs node0", || {
        n1.vxlan_entries("flannel.1", &sub0, &mac0, &n0.ip).all()
    });
    // Another writer puts its own address and VTEP MAC under node0's key.
    c.etcd.put(
        &format!("{PREFIX}/subnets/{k0}"),
        &lease_value("10.200.0.77", "02:00:00:00:77:77").to_string(),
    );
    wait_for("node0 writes its lease back", || {
        own_lease(&c, n0).0 == k0
            && c.leases()
                .iter()
                .any(|(k, v)| *k == k0 && v["PublicIP"] == n0.ip.as_str())
    });
    wait_for("node1 programs node0 again", || {
        n1.vxlan_entries("flannel.1", &sub0, &mac0, &n0.ip).all()
    });
    assert!(metric(n0, "plexusd_lease_conflicts_total") >= 1);
    let log = std::fs::read_to_string(&n0.log).unwrap();
    assert!(log.contains("lease conflict"), "{log}");
    drop(agents);
}

#[test]
fn a_planted_lease_with_our_address_is_not_taken_at_restart() {
    require_overlay!();
    let (c, mut agents) = overlay_cluster(2);
    let (n0, n1) = (&c.nodes[0], &c.nodes[1]);
    c.nodes.iter().for_each(|n| n.write_vxlan_conflist());
    let pod0 = n0.add_pod("pl0");
    let pod1 = n1.add_pod("pl1");
    wait_for("pods reach each other", || pod1.ns.ping(pod0.ip4()));
    let (k0, _) = own_lease(&c, n0);
    let sub0 = key_to_cidr(&k0);
    let env_before = n0.subnet_env("FLANNEL_SUBNET");
    agents[0].stop();
    // A lease with node0's address under the lowest key of all.
    c.put_lease("10.0.1.0-24", &lease_value(&n0.ip, "02:00:00:00:01:01"));
    assert!(k0.as_str() > "10.0.1.0-24");
    agents[0].start_again();
    agents[0].wait_ready();
    assert_eq!(
        n0.subnet_env("FLANNEL_SUBNET"),
        env_before,
        "node0 kept its subnet"
    );
    // Its own subnet is its pods' (cni0), never a remote via flannel.1,
    // and the planted one is not programmed either.
    let own = n0.route_to(&sub0).expect("cni0's route");
    assert_eq!(own["dev"], "cni0", "{own}");
    assert!(n0.route_to("10.0.1.0/24").is_none());
    wait_for("pods still reach each other", || pod1.ns.ping(pod0.ip4()));
    assert!(pod0.ns.ping(pod1.ip4()));
    drop(agents);
}

/// A routed cluster of two nodes (pool 10.96.0.0/16 of /26 blocks) with
/// agents serving /metrics.
fn routed_cluster() -> (Cluster, Vec<Daemon>) {
    let c = Cluster::new(2);
    add_pool(&c, 26);
    let agents = c.start_agents(&["--metrics-addr", "127.0.0.1:9464"]);
    for n in &c.nodes {
        write_routed_conf(n);
        wait_for(&format!("{}: mesh Established", n.name), || {
            established(n, 1)
        });
    }
    (c, agents)
}

const BLOCKS: &str = "/plexus/routed/blocks/";

#[test]
fn block_records_that_lie_and_pools_over_the_underlay_are_refused() {
    require_overlay!();
    let (c, agents) = routed_cluster();
    let (n0, n1) = (&c.nodes[0], &c.nodes[1]);
    // A block whose key and CIDR disagree, one in the underlay, both
    // naming node0; a pool covering the underlay whose name sorts first.
    c.etcd.put(
        &format!("{BLOCKS}10.96.200.0-26"),
        r#"{"cidr":"10.96.201.0/26","pool":"default","node":"node0","allocations":{}}"#,
    );
    c.etcd.put(
        &format!("{BLOCKS}10.200.0.0-26"),
        r#"{"cidr":"10.200.0.0/26","pool":"default","node":"node0","allocations":{}}"#,
    );
    c.etcd.put(
        "/plexus/routed/pools/aaa",
        r#"{"name":"aaa","cidr":"10.200.0.0/16","blockSize":26}"#,
    );
    // Pods still get the real pool's addresses; their blocks are the only
    // ones blackholed and announced.
    let p0 = plexus_tests::Netns::new("lie0");
    let p1 = plexus_tests::Netns::new("lie1");
    let ip0 = first_ip(&add_routed_pod(n0, &p0, "eth0"));
    let ip1 = first_ip(&add_routed_pod(n1, &p1, "eth0"));
    assert!(
        ip0.starts_with("10.96.") && ip1.starts_with("10.96."),
        "{ip0} {ip1}"
    );
    wait_for("pods reach each other", || p0.ping(&ip1));
    for (n, other) in [(n0, n1), (n1, n0)] {
        let holes = routes(n, "113");
        assert!(
            holes
                .iter()
                .all(|(d, _)| !d.starts_with("10.96.20") && !d.starts_with("10.200.")),
            "{}: {holes:?}",
            n.name
        );
        let learned = routes(n, "114");
        assert!(
            learned
                .iter()
                .all(|(d, _)| !d.starts_with("10.96.20") && !d.starts_with("10.200.")),
            "{}: learned from {}: {learned:?}",
            n.name,
            other.name
        );
        assert_eq!(
            n.route_to("10.200.0.0/24").map(|r| r["protocol"].clone()),
            Some(json!("kernel"))
        );
        wait_for(
            &format!("{} reports the records it skipped", n.name),
            || metric(n, "plexusd_store_records_skipped") >= 3,
        );
    }
    drop(agents);
}

#[test]
fn a_garbage_block_record_and_a_bad_pool_stop_neither_claims_nor_a_restart() {
    require_overlay!();
    let (c, mut agents) = routed_cluster();
    let (n0, n1) = (&c.nodes[0], &c.nodes[1]);
    // Garbage where the first free block is, and a pool that does not parse.
    c.etcd.put(&format!("{BLOCKS}10.96.0.0-26"), "{garbage");
    c.etcd.put(
        "/plexus/routed/pools/broken",
        r#"{"name":"broken","cidr":"10.300.0.0/99","blockSize":26}"#,
    );
    // Both nodes claim blocks and attach pods.
    let p0 = plexus_tests::Netns::new("gb0");
    let p1 = plexus_tests::Netns::new("gb1");
    let ip0 = first_ip(&add_routed_pod(n0, &p0, "eth0"));
    let ip1 = first_ip(&add_routed_pod(n1, &p1, "eth0"));
    wait_for("pods reach each other", || p0.ping(&ip1));
    // An agent restarted meanwhile starts, keeps its pod's address, serves.
    agents[1].restart();
    let p2 = plexus_tests::Netns::new("gb2");
    let ip2 = first_ip(&add_routed_pod(n1, &p2, "eth0"));
    assert!(![&ip0, &ip1].contains(&&ip2), "{ip2}");
    wait_for("the new pod reaches node0's", || p2.ping(&ip0));
    let st: Value = serde_json::from_str(&plexus_tests::cluster::routed::plexusctl(
        n1,
        &["node", "--json", "status", "--run-dir"],
    ))
    .unwrap();
    let skipped = st["skipped_records"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    assert!(
        skipped.contains_key(&format!("{BLOCKS}10.96.0.0-26"))
            && skipped.contains_key("/plexus/routed/pools/broken"),
        "{st}"
    );
    drop(agents);
}
