//! Kubernetes mode against the API stand-in: the node's subnet from its
//! `spec.podCIDR`, its public IP and VTEP MAC published in flannel's node
//! annotations, other nodes from a Node watch. The other node is a flannel
//! node set up by hand from its Node object, so this is also the mixed
//! cluster flannel's annotations are for.
//!
//! The stand-in listens on node0's loopback, so only node0 runs an agent.

use plexus_tests::apiserver::FakeApiServer;
use plexus_tests::cluster::{example_network_config, flanneld, wait_for, Cluster};
use plexus_tests::require_overlay;
use serde_json::{json, Value};

const P: &str = "flannel.alpha.coreos.com/";

fn flannel_annotations(public_ip: &str, vtep_mac: &str) -> Value {
    json!({
        format!("{P}kube-subnet-manager"): "true",
        format!("{P}backend-type"): "vxlan",
        format!("{P}backend-data"): json!({"VNI": 1, "VtepMAC": vtep_mac}).to_string(),
        format!("{P}public-ip"): public_ip,
    })
}

#[test]
fn kubernetes_mode_shares_the_overlay_with_a_flannel_node() {
    require_overlay!();
    let c = Cluster::new(2);
    let (n0, n1) = (&c.nodes[0], &c.nodes[1]);
    let api = FakeApiServer::start_in(&n0.ns);
    // The flannel node: its device by hand, its Node object as flanneld
    // leaves it.
    let hand = flanneld::configure_device(n1, "10.244.2.0/24", 1450);
    api.add_node(
        "node1",
        &["10.244.2.0/24"],
        flannel_annotations(&n1.ip, &hand.vtep_mac),
    );
    api.add_node("node0", &["10.244.1.0/24"], json!({}));

    let net_conf = n0.run_dir.with_file_name("net-conf.json");
    std::fs::write(&net_conf, example_network_config().to_string()).unwrap();
    let kubeconfig = api.kubeconfig.display().to_string();
    let net_conf = net_conf.display().to_string();
    let _agent = n0.start_agent(
        "kubernetes",
        &["--kubeconfig", &kubeconfig, "--net-config", &net_conf],
    );

    // Our subnet is the podCIDR; our VTEP is published as flannel does.
    assert_eq!(
        n0.subnet_env("FLANNEL_NETWORK").as_deref(),
        Some("10.244.0.0/16")
    );
    assert_eq!(
        n0.subnet_env("FLANNEL_SUBNET").as_deref(),
        Some("10.244.1.1/24")
    );
    let mac0 = n0.mac("flannel.1");
    let ann = |k: &str| api.node_annotation("node0", &format!("{P}{k}"));
    assert_eq!(ann("kube-subnet-manager").as_deref(), Some("true"));
    assert_eq!(ann("backend-type").as_deref(), Some("vxlan"));
    assert_eq!(ann("public-ip"), Some(n0.ip.clone()));
    let data: Value = serde_json::from_str(&ann("backend-data").expect("backend-data")).unwrap();
    assert_eq!(data, json!({"VNI": 1, "VtepMAC": mac0}));

    // The flannel node from its annotations, and pods both ways.
    wait_for("node0 programs node1 from its Node", || {
        n0.vxlan_entries("flannel.1", "10.244.2.0/24", &hand.vtep_mac, &n1.ip)
            .all()
    });
    flanneld::program_remote(n1, "10.244.1.0/24", &mac0, &n0.ip);
    let p0 = n0.add_pod("p0");
    let p1 = flanneld::pod(n1, &hand, 2, "p1");
    assert!(p0.ip4().starts_with("10.244.1."), "{:?}", p0.ips);
    assert!(
        p0.ns.ping(p1.ip4()),
        "Plexus pod cannot reach the flannel pod"
    );
    assert!(
        p1.ns.ping(p0.ip4()),
        "the flannel pod cannot reach the Plexus pod"
    );

    // A node that joins, then goes; also across a watch that expired.
    let (ip2, mac2) = ("10.200.0.250", "0e:fa:00:00:00:fa");
    api.add_node("node2", &["10.244.3.0/24"], flannel_annotations(ip2, mac2));
    wait_for("node0 programs node2", || {
        n0.vxlan_entries("flannel.1", "10.244.3.0/24", mac2, ip2)
            .all()
    });
    api.compact_nodes();
    let (ip3, mac3) = ("10.200.0.251", "0e:fa:00:00:00:fb");
    api.add_node("node3", &["10.244.4.0/24"], flannel_annotations(ip3, mac3));
    api.delete_node("node2");
    wait_for("node0 relists and programs node3", || {
        n0.vxlan_entries("flannel.1", "10.244.4.0/24", mac3, ip3)
            .all()
    });
    wait_for("node0 removes node2", || {
        !n0.any_vxlan_entry("flannel.1", "10.244.3.0/24", mac2)
    });
    // A node without flannel's annotations is not part of the overlay.
    api.add_node("plain", &["10.244.9.0/24"], json!({}));
    api.annotate_node("node3", json!({format!("{P}public-ip"): "10.200.0.252"}));
    wait_for("node0 follows node3's new public IP", || {
        n0.vxlan_entries("flannel.1", "10.244.4.0/24", mac3, "10.200.0.252")
            .all()
    });
    assert!(n0.route_to("10.244.9.0/24").is_none());
}
