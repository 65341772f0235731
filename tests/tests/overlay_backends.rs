//! DirectRouting (vxlan with plain routes for nodes on the same L2) and the
//! host-gw backend.

use plexus_tests::cluster::{flanneld::phantom_lease, key_to_cidr, wait_for, Cluster};
use plexus_tests::require_overlay;
use serde_json::json;

fn start(config: serde_json::Value) -> (Cluster, Vec<plexus_tests::cluster::Daemon>) {
    let c = Cluster::new(2);
    c.set_config(&config);
    let agents = c.start_agents(&[]);
    (c, agents)
}

#[test]
fn direct_routing_uses_plain_routes_on_the_same_l2() {
    require_overlay!();
    let (c, _agents) = start(json!({
        "Network": "10.5.0.0/16",
        "SubnetMax": plexus_tests::cluster::phantom_free_max("10.5.0.0/16"),
        "Backend": {"Type": "vxlan", "DirectRouting": true}
    }));
    let (n0, n1) = (&c.nodes[0], &c.nodes[1]);
    let (k1, _) = c.lease_of(&n1.ip).unwrap();
    let s1 = key_to_cidr(&k1);
    wait_for("node0 routes node1's subnet via its public IP", || {
        n0.route_to(&s1)
            .is_some_and(|r| r["gateway"] == n1.ip.as_str() && r["dev"] == "eth0")
    });
    // A node off this L2 (no route to its public IP) still goes through VXLAN.
    let far_ip = "192.168.77.5";
    phantom_lease(&c, "10.5.250.0/24", far_ip, "0e:fa:00:00:00:fb");
    wait_for("node0 programs the remote node through flannel.1", || {
        n0.vxlan_entries("flannel.1", "10.5.250.0/24", "0e:fa:00:00:00:fb", far_ip)
            .all()
    });
    let p0 = n0.add_pod("p0");
    let p1 = n1.add_pod("p1");
    wait_for("pods reach each other", || p0.ns.ping(p1.ip4()));
    assert!(p1.ns.ping(p0.ip4()));
}

#[test]
fn host_gw_routes_via_public_ips_without_a_vxlan_device() {
    require_overlay!();
    let (c, _agents) = start(json!({
        "Network": "10.5.0.0/16",
        "SubnetMax": plexus_tests::cluster::phantom_free_max("10.5.0.0/16"),
        "Backend": {"Type": "host-gw"}
    }));
    let (n0, n1) = (&c.nodes[0], &c.nodes[1]);
    let (k0, l0) = c.lease_of(&n0.ip).unwrap();
    let (k1, _) = c.lease_of(&n1.ip).unwrap();
    assert_eq!(l0["BackendType"], "host-gw");
    for n in &c.nodes {
        assert!(
            !n.ns.links().iter().any(|l| l.starts_with("flannel")),
            "host-gw makes no VXLAN device: {:?}",
            n.ns.links()
        );
        // No encapsulation: the pods get the underlay's MTU.
        assert_eq!(n.subnet_env("FLANNEL_MTU").as_deref(), Some("1500"));
    }
    for (n, peer, key) in [(n0, n1, &k1), (n1, n0, &k0)] {
        let s = key_to_cidr(key);
        wait_for(&format!("{} routes {s} via {}", n.name, peer.ip), || {
            n.route_to(&s)
                .is_some_and(|r| r["gateway"] == peer.ip.as_str() && r["dev"] == "eth0")
        });
    }
    let p0 = n0.add_pod("p0");
    let p1 = n1.add_pod("p1");
    wait_for("pods reach each other", || p0.ns.ping(p1.ip4()));
    assert!(p1.ns.ping(p0.ip4()));
    // A node that joins (its lease in host-gw's format, as node0's) gets a
    // route, and loses it when its lease goes.
    let mut phantom = l0.clone();
    phantom["PublicIP"] = json!("10.200.0.250");
    c.put_lease("10.5.250.0-24", &phantom);
    wait_for("node0 routes the new node via its public IP", || {
        n0.route_to("10.5.250.0/24")
            .is_some_and(|r| r["gateway"] == "10.200.0.250" && r["dev"] == "eth0")
    });
    c.del_lease("10.5.250.0-24");
    wait_for("node0 drops the route of the deleted lease", || {
        n0.route_to("10.5.250.0/24").is_none()
    });
}
