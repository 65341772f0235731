//! A deleted lease takes its route, neighbour and FDB entry off every node,
//! also off a node whose agent was down when it went (flannel #2554).

use plexus_tests::cluster::{flanneld::phantom_lease, vxlan_config, wait_for, Cluster};
use plexus_tests::require_overlay;

const PHANTOM: &str = "10.5.250.0/24";
const PHANTOM_IP: &str = "10.200.0.250";
const PHANTOM_MAC: &str = "0e:fa:00:00:00:fa";

#[test]
fn deleted_lease_goes_from_every_node() {
    require_overlay!();
    let c = Cluster::new(3);
    c.set_config(&vxlan_config("10.5.0.0/16"));
    let _agents = c.start_agents(&[]);
    let (key, _) = phantom_lease(&c, PHANTOM, PHANTOM_IP, PHANTOM_MAC);
    for n in &c.nodes {
        wait_for(&format!("{} programs the new lease", n.name), || {
            n.vxlan_entries("flannel.1", PHANTOM, PHANTOM_MAC, PHANTOM_IP)
                .all()
        });
    }
    c.del_lease(&key);
    for n in &c.nodes {
        wait_for(&format!("{} removes the deleted lease", n.name), || {
            !n.any_vxlan_entry("flannel.1", PHANTOM, PHANTOM_MAC)
        });
    }
    // The nodes' own leases are untouched.
    assert_eq!(c.leases().len(), 3);
}

#[test]
fn lease_deleted_while_the_agent_was_down_goes_at_start() {
    require_overlay!();
    let c = Cluster::new(2);
    c.set_config(&vxlan_config("10.5.0.0/16"));
    let _a = c.nodes[0].start_agent(&c.etcd.url(), &[]);
    let mut b = c.nodes[1].start_agent(&c.etcd.url(), &[]);
    let (key, _) = phantom_lease(&c, PHANTOM, PHANTOM_IP, PHANTOM_MAC);
    let nb = &c.nodes[1];
    wait_for("node1 programs the lease", || {
        nb.vxlan_entries("flannel.1", PHANTOM, PHANTOM_MAC, PHANTOM_IP)
            .all()
    });

    let st = b.stop();
    assert!(
        st.success(),
        "SIGTERM exits 0 ({st}); log:\n{}",
        b.log_text()
    );
    assert!(
        nb.vxlan_entries("flannel.1", PHANTOM, PHANTOM_MAC, PHANTOM_IP)
            .all(),
        "a stopped agent leaves the data plane in place"
    );
    c.del_lease(&key);
    wait_for("node0 removes the lease", || {
        !c.nodes[0].any_vxlan_entry("flannel.1", PHANTOM, PHANTOM_MAC)
    });
    assert!(
        nb.vxlan_entries("flannel.1", PHANTOM, PHANTOM_MAC, PHANTOM_IP)
            .all(),
        "nothing removes entries on node1 while its agent is down"
    );

    b.start_again();
    b.wait_ready();
    // Ready means programmed: the stale entries are gone by now.
    assert!(
        !nb.any_vxlan_entry("flannel.1", PHANTOM, PHANTOM_MAC),
        "the restarted agent left the vanished lease's entries"
    );
    // ... and node0's lease is still programmed on node1.
    let (k0, l0) = c.lease_of(&c.nodes[0].ip).unwrap();
    let mac0 = l0["BackendData"]["VtepMAC"].as_str().unwrap().to_string();
    assert!(nb
        .vxlan_entries(
            "flannel.1",
            &plexus_tests::cluster::key_to_cidr(&k0),
            &mac0,
            &c.nodes[0].ip
        )
        .all());
}
