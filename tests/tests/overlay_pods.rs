//! Pods on three Plexus nodes reach each other across the VXLAN overlay.

use plexus_tests::cluster::{example_network_config, wait_for, Cluster, Pod};
use plexus_tests::{require_overlay, CniSandbox};

#[test]
fn pods_on_three_nodes_reach_each_other() {
    require_overlay!();
    let c = Cluster::new(3);
    // conf/overlay's example config and conflist, as a user would install them.
    c.set_config(&example_network_config());
    let _agents = c.start_agents(&[]);
    let pods: Vec<Pod> = c
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| n.add_pod(&format!("p{i}")))
        .collect();
    // A second pod on node0 shares the bridge with the first.
    let local = c.nodes[0].add_pod("p0b");

    for (i, p) in pods.iter().enumerate() {
        let subnet = c.nodes[i].subnet_env("FLANNEL_SUBNET").unwrap();
        let prefix = subnet.rsplit_once('.').unwrap().0;
        assert!(
            p.ip4().starts_with(prefix),
            "pod {} outside {subnet}",
            p.ip4()
        );
    }
    for a in pods.iter().chain([&local]) {
        for b in pods.iter().chain([&local]).filter(|b| b.ip4() != a.ip4()) {
            // The first packet may race the remote node's programming.
            wait_for(&format!("{} reaches {}", a.ip4(), b.ip4()), || {
                a.ns.ping(b.ip4())
            });
        }
    }

    for (i, p) in pods.iter().enumerate() {
        c.nodes[i]
            .cni
            .ctl(&c.nodes[i].ns, "del", "cbr0", Some(&p.ns.path()), &[])
            .expect_success();
        let left = CniSandbox::files_under(&c.nodes[i].cni.dir.path().join("vxlan"));
        let expect = usize::from(i == 0);
        assert_eq!(left.len(), expect, "saved configs on node{i}: {left:?}");
    }
}
