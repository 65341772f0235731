//! A node set up by hand exactly as flanneld sets one up shares the overlay
//! with Plexus nodes: its pods reach Plexus pods and are reached by them.

use plexus_tests::cluster::{flanneld, vxlan_config, wait_for, Cluster};
use plexus_tests::{require_overlay, require_root};

/// The harness's flanneld imitation alone carries traffic (no agent): what
/// the interop test below builds on is itself right.
#[test]
fn two_hand_made_flannel_nodes_pass_traffic() {
    require_root!();
    plexus_tests::require_etcd!();
    let c = Cluster::new(2);
    c.set_config(&vxlan_config("10.5.0.0/16"));
    let a = flanneld::configure(&c, &c.nodes[0], "10.5.1.0/24", 1450);
    let b = flanneld::configure(&c, &c.nodes[1], "10.5.2.0/24", 1450);
    flanneld::sync(&c, &c.nodes[0], &a);
    flanneld::sync(&c, &c.nodes[1], &b);
    let pa = flanneld::pod(&c.nodes[0], &a, 2, "pa");
    let pb = flanneld::pod(&c.nodes[1], &b, 2, "pb");
    assert!(
        pa.ns.ping(pb.ip4()),
        "hand-made flannel pods do not reach each other"
    );
    assert!(pb.ns.ping(pa.ip4()));
    let leases = c.leases();
    assert_eq!(leases.len(), 2, "{leases:?}");
    assert_eq!(c.lease_ttl("10.5.1.0-24"), Some(86400));
}

#[test]
fn flanneld_node_and_plexus_nodes_reach_each_other() {
    require_overlay!();
    let mut c = Cluster::new(3);
    c.set_config(&vxlan_config("10.5.0.0/16"));
    // The flannel node comes first, so the agents find its lease at start.
    let hand_node = &c.nodes[2];
    let hand = flanneld::configure(&c, hand_node, "10.5.200.0/24", 1450);
    let _a = c.nodes[0].start_agent(&c.etcd.url(), &[]);
    let _b = c.nodes[1].start_agent(&c.etcd.url(), &[]);
    let pa = c.nodes[0].add_pod("pa");
    let pb = c.nodes[1].add_pod("pb");
    flanneld::sync(&c, hand_node, &hand);
    let ph = flanneld::pod(hand_node, &hand, 2, "ph");

    for (i, node) in c.nodes[..2].iter().enumerate() {
        wait_for(
            &format!("node{i} programs the flannel node's lease"),
            || {
                node.vxlan_entries(flanneld::DEV, &hand.subnet, &hand.vtep_mac, &hand_node.ip)
                    .all()
            },
        );
    }
    for p in [&pa, &pb] {
        assert!(
            p.ns.ping(ph.ip4()),
            "Plexus pod {} cannot reach the flannel pod",
            p.ip4()
        );
        assert!(
            ph.ns.ping(p.ip4()),
            "the flannel pod cannot reach Plexus pod {}",
            p.ip4()
        );
    }

    // A flannel node joining later is picked up from the watch.
    let late = c.add_node();
    let late_node = &c.nodes[late];
    let l = flanneld::configure(&c, late_node, "10.5.241.0/24", 1450);
    flanneld::sync(&c, late_node, &l);
    let pl = flanneld::pod(late_node, &l, 2, "pl");
    wait_for("node0 programs the late flannel node", || {
        c.nodes[0]
            .vxlan_entries(flanneld::DEV, &l.subnet, &l.vtep_mac, &late_node.ip)
            .all()
    });
    assert!(pa.ns.ping(pl.ip4()));
    assert!(pl.ns.ping(pa.ip4()));
}
