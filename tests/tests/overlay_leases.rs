//! Three agents on one etcd: each holds a lease in flannel's exact format,
//! writes flannel's subnet.env, builds flannel's VXLAN device, and programs
//! the other two leases.

use std::collections::BTreeSet;

use plexus_tests::cluster::{key_to_cidr, network_address, vxlan_config, wait_for, Cluster};
use plexus_tests::require_overlay;
use serde_json::json;

#[test]
fn leases_subnet_env_and_device_are_flannels() {
    require_overlay!();
    let c = Cluster::new(3);
    c.set_config(&vxlan_config("10.5.0.0/16"));
    let _agents = c.start_agents(&[]);

    let leases = c.leases();
    assert_eq!(leases.len(), 3, "{leases:?}");
    let subnets: BTreeSet<String> = leases.iter().map(|(k, _)| key_to_cidr(k)).collect();
    assert_eq!(
        subnets.len(),
        3,
        "every node has its own subnet: {leases:?}"
    );

    for node in &c.nodes {
        let (key, lease) = c
            .lease_of(&node.ip)
            .unwrap_or_else(|| panic!("no lease with PublicIP {}: {leases:?}", node.ip));
        let subnet = key_to_cidr(&key);
        let (ip, len) = subnet.split_once('/').unwrap();
        assert_eq!(len, "24", "SubnetLen defaults to 24: {key}");
        assert!(ip.starts_with("10.5.") && ip.ends_with(".0"), "{key}");
        assert_ne!(
            ip, "10.5.0.0",
            "flannel never hands out the network's first subnet"
        );
        let mac = node.mac("flannel.1");
        assert_eq!(
            lease,
            json!({
                "PublicIP": node.ip,
                "PublicIPv6": null,
                "BackendType": "vxlan",
                "BackendData": {"VNI": 1, "VtepMAC": mac}
            }),
            "lease {key}"
        );
        assert_eq!(
            c.lease_ttl(&key),
            Some(86400),
            "lease {key} has a 24 h etcd lease"
        );

        let first = format!("{}.1/24", ip.rsplit_once('.').unwrap().0);
        assert_eq!(
            node.subnet_env("FLANNEL_NETWORK").as_deref(),
            Some("10.5.0.0/16")
        );
        assert_eq!(node.subnet_env("FLANNEL_SUBNET"), Some(first));
        assert_eq!(node.subnet_env("FLANNEL_MTU").as_deref(), Some("1450"));
        assert_eq!(node.subnet_env("FLANNEL_IPMASQ").as_deref(), Some("false"));

        let dev = node.ip_json(&["-d", "link", "show", "dev", "flannel.1"]);
        let info = &dev[0]["linkinfo"]["info_data"];
        assert_eq!(dev[0]["mtu"], 1450, "{dev}");
        assert_eq!(info["id"], 1, "{dev}");
        assert_eq!(info["port"], 8472, "{dev}");
        assert_eq!(info["learning"], false, "{dev}");
        assert_eq!(info["local"], node.ip.as_str(), "{dev}");
        assert_eq!(node.ns.addrs("flannel.1"), vec![format!("{ip}/32")]);
    }

    for node in &c.nodes {
        for other in c.nodes.iter().filter(|o| o.ip != node.ip) {
            let (key, lease) = c.lease_of(&other.ip).unwrap();
            let mac = lease["BackendData"]["VtepMAC"]
                .as_str()
                .unwrap()
                .to_string();
            let subnet = key_to_cidr(&key);
            wait_for(&format!("{} programs {subnet}", node.name), || {
                node.vxlan_entries("flannel.1", &subnet, &mac, &other.ip)
                    .all()
            });
            assert_eq!(
                node.route_to(&subnet).unwrap()["gateway"],
                network_address(&subnet).as_str()
            );
        }
    }
}

#[test]
fn subnet_len_and_ip_masq_flags_follow_flannel() {
    require_overlay!();
    let c = Cluster::new(1);
    c.set_config(&json!({
        "Network": "10.6.0.0/16", "SubnetLen": 26,
        "SubnetMin": "10.6.3.0", "SubnetMax": "10.6.3.192",
        "Backend": {"Type": "vxlan", "VNI": 7, "Port": 4789, "MTU": 1400}
    }));
    let _a = c.nodes[0].start_agent(&c.etcd.url(), &["--ip-masq"]);
    let node = &c.nodes[0];
    let (key, lease) = c.lease_of(&node.ip).expect("lease");
    assert!(key.starts_with("10.6.3.") && key.ends_with("-26"), "{key}");
    assert_eq!(lease["BackendData"]["VNI"], 7);
    assert_eq!(node.subnet_env("FLANNEL_MTU").as_deref(), Some("1400"));
    assert_eq!(node.subnet_env("FLANNEL_IPMASQ").as_deref(), Some("true"));
    let dev = node.ip_json(&["-d", "link", "show", "dev", "flannel.7"]);
    assert_eq!(dev[0]["linkinfo"]["info_data"]["id"], 7, "{dev}");
    assert_eq!(dev[0]["linkinfo"]["info_data"]["port"], 4789, "{dev}");
    assert_eq!(dev[0]["mtu"], 1400);
}
