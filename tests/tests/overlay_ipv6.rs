//! A dual-stack overlay: IPv6 leases, subnet.env and pod-to-pod IPv6.

use plexus_tests::cluster::{wait_for, Cluster};
use plexus_tests::require_overlay;
use serde_json::json;

#[test]
fn dual_stack_pods_reach_each_other_over_ipv6() {
    require_overlay!();
    let c = Cluster::new(2);
    c.set_config(&json!({
        "Network": "10.5.0.0/16",
        "EnableIPv6": true,
        "IPv6Network": "fd05::/56",
        "Backend": {"Type": "vxlan"}
    }));
    // --iface: the agent takes both public addresses from eth0.
    let _agents = c.start_agents(&["--iface", "eth0"]);
    for n in &c.nodes {
        let (key, lease) = c.lease_of(&n.ip).expect("lease");
        let (_, v6) = key
            .split_once('&')
            .unwrap_or_else(|| panic!("dual-stack key: {key}"));
        assert!(v6.starts_with("fd05:") && v6.ends_with("-64"), "{key}");
        assert_eq!(lease["PublicIPv6"], n.ip6.as_str(), "{lease}");
        assert_eq!(lease["BackendV6Data"]["VNI"], 1, "{lease}");
        assert!(lease["BackendV6Data"]["VtepMAC"].is_string(), "{lease}");
        assert_eq!(
            n.subnet_env("FLANNEL_IPV6_NETWORK").as_deref(),
            Some("fd05::/56")
        );
        let sn6 = n
            .subnet_env("FLANNEL_IPV6_SUBNET")
            .expect("FLANNEL_IPV6_SUBNET");
        assert!(sn6.ends_with("::1/64"), "first usable address: {sn6}");
    }
    let p0 = c.nodes[0].add_pod("p0");
    let p1 = c.nodes[1].add_pod("p1");
    assert!(p0.ip6().starts_with("fd05:"), "{:?}", p0.ips);
    wait_for("IPv6 pod to pod", || p0.ns.ping(p1.ip6()));
    wait_for("IPv6 pod to pod, back", || p1.ns.ping(p0.ip6()));
    wait_for("IPv4 pod to pod", || p0.ns.ping(p1.ip4()));
}
