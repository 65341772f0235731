//! The netlink data plane against a real kernel, in a namespace this test
//! creates: a VXLAN device, 1000 remote nodes (3000 entries) programmed in
//! one batch and read back, stale entries reconciled away, everything
//! removed, masquerade rules in and out.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use plexus_netlink::{MacAddr, Netns as NlNetns};
use plexus_subnet::{Lease, VxlanBackendData};
use plexus_tests::{require_root, Netns};
use plexusd::kernel::KernelDataPlane;
use plexusd::olddp::{DataPlane, Entry, Key, MasqRules, Op, Ownership, UnderlaySelect, VxlanSpec};
use plexusd::overlay::plan::{self, BackendPlan, Local};

fn remote(i: u32) -> Lease {
    plexusd::fake::remote_lease(i, Ipv4Addr::new(172, 20, 0, 10))
}

/// A namespace with `eth0` (a veth whose peer stays inside) up, holding `addrs`.
fn node_ns(tag: &str, addrs: &[&str]) -> Netns {
    let ns = Netns::new(tag);
    ns.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "peer0",
    ]);
    for a in addrs {
        // IPv6 without duplicate address detection: usable at once.
        let nodad = if a.contains(':') { &["nodad"][..] } else { &[] };
        ns.ip(&[&["addr", "add", a, "dev", "eth0"][..], nodad].concat());
    }
    ns.ip(&["link", "set", "eth0", "up"]);
    ns.ip(&["link", "set", "peer0", "up"]);
    ns
}

/// What the data plane lists, by key.
async fn programmed(dp: &mut KernelDataPlane, owner: &Ownership) -> BTreeMap<Key, Entry> {
    dp.programmed(owner)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.key(), e))
        .collect()
}

fn count(ns: &Netns, args: &[&str]) -> usize {
    ns.ip_json(args).as_array().map(|a| a.len()).unwrap_or(0)
}

fn fdb_count(ns: &Netns) -> usize {
    let out = plexus_tests::run_ok(std::process::Command::new("bridge").args([
        "-n",
        &ns.name,
        "fdb",
        "show",
        "dev",
        "flannel.1",
    ]));
    out.lines().filter(|l| l.contains(" dst ")).count()
}

#[tokio::test(flavor = "current_thread")]
async fn vxlan_data_plane_programs_reads_back_and_reconciles() {
    require_root!();
    let ns = node_ns("agent-dp", &["172.20.0.1/16"]);
    let mut dp = KernelDataPlane::open(NlNetns::open(ns.path()).unwrap())
        .await
        .unwrap();

    let u = dp
        .underlay(&UnderlaySelect {
            iface: Some("eth0".into()),
            want_v4: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(u.name, "eth0");
    assert_eq!(
        u.v4,
        Some((
            "172.20.0.1".parse().unwrap(),
            "172.20.0.0/16".parse().unwrap()
        ))
    );

    let mac: MacAddr = "0e:00:00:00:01:01".parse().unwrap();
    let spec = VxlanSpec {
        name: "flannel.1".into(),
        vni: 1,
        port: 8472,
        local: "172.20.0.1".parse().unwrap(),
        underlay: u.index,
        learning: false,
        mtu: u.mtu - 50,
        mac,
        addr: "10.5.1.0/32".parse().unwrap(),
    };
    let dev = dp.ensure_vxlan(&spec).await.unwrap();
    assert_eq!(dev.mac, mac);
    assert_eq!(ns.addrs("flannel.1"), ["10.5.1.0/32"]);
    let link = &ns.ip_json(&["-d", "link", "show", "flannel.1"])[0];
    assert_eq!(link["mtu"], 1450);
    assert_eq!(link["linkinfo"]["info_data"]["learning"], false);
    assert_eq!(link["linkinfo"]["info_data"]["port"], 8472);
    // Reused, not recreated, on a second start; a stray address goes.
    ns.ip(&["addr", "add", "10.9.9.9/32", "dev", "flannel.1"]);
    let again = dp
        .ensure_vxlan(&VxlanSpec {
            mac: "0e:00:00:00:09:09".parse().unwrap(),
            ..spec.clone()
        })
        .await
        .unwrap();
    assert_eq!((again.index, again.mac), (dev.index, mac));
    assert_eq!(ns.addrs("flannel.1"), ["10.5.1.0/32"]);
    assert_eq!(dp.device_mac("flannel.1").await.unwrap(), Some(mac));
    assert_eq!(dp.device_mac("nope0").await.unwrap(), None);

    let local = Local {
        own: (Some("10.5.1.0/24".parse().unwrap()), None),
        backend: BackendPlan::Vxlan {
            dev_v4: Some(dev.index),
            dev_v6: None,
            direct_routing: false,
        },
        underlay_v4: Some((u.index, "172.20.0.0/16".parse().unwrap())),
        underlay_v6: None,
    };
    let owner = Ownership {
        devices: vec![dev.index],
        networks: vec!["10.0.0.0/8".parse().unwrap()],
        own_subnets: vec!["10.5.1.0/24".parse().unwrap()],
    };
    let leases: Vec<Lease> = (0..1000).map(remote).collect();
    let want = plan::desired(&local, &leases);
    assert_eq!(want.len(), 3000);
    let ops = plan::plan(&want, &BTreeMap::new());
    let t = std::time::Instant::now();
    let failed = dp.apply(&ops).await.unwrap();
    eprintln!("3000 entries programmed in {:?}", t.elapsed());
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(count(&ns, &["neigh", "show", "dev", "flannel.1"]), 1000);
    assert_eq!(fdb_count(&ns), 1000);
    let onlink = ns
        .ip_json(&["route", "show", "dev", "flannel.1"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["flags"]
                .as_array()
                .is_some_and(|f| f.iter().any(|x| x == "onlink"))
        })
        .count();
    assert_eq!(onlink, 1000);
    let r = &ns.ip_json(&["route", "show", "10.100.7.0/24"])[0];
    assert_eq!(r["gateway"], "10.100.7.0");
    assert_eq!(r["dev"], "flannel.1");

    // Read back exactly what was written.
    let have = programmed(&mut dp, &owner).await;
    assert_eq!(have, want);

    // Entries for a node that left while the agent was down (flannel #2554),
    // added the way flanneld adds them, and one route that is not ours.
    ns.ip(&[
        "neigh",
        "add",
        "10.99.0.0",
        "lladdr",
        "0e:99:00:00:00:01",
        "dev",
        "flannel.1",
        "nud",
        "permanent",
    ]);
    plexus_tests::run_ok(std::process::Command::new("bridge").args([
        "-n",
        &ns.name,
        "fdb",
        "add",
        "0e:99:00:00:00:01",
        "dev",
        "flannel.1",
        "dst",
        "172.20.9.9",
        "self",
        "permanent",
    ]));
    ns.ip(&[
        "route",
        "add",
        "10.99.0.0/24",
        "via",
        "10.99.0.0",
        "dev",
        "flannel.1",
        "onlink",
    ]);
    ns.ip(&["route", "add", "192.168.77.0/24", "via", "172.20.0.254"]);
    let have = programmed(&mut dp, &owner).await;
    assert_eq!(have.len(), 3003);
    let ops = plan::plan(&want, &have);
    assert_eq!(ops.len(), 3);
    assert!(ops.iter().all(|o| matches!(o, Op::Del(_))));
    assert!(dp.apply(&ops).await.unwrap().is_empty());
    assert_eq!(count(&ns, &["route", "show", "10.99.0.0/24"]), 0);
    assert_eq!(count(&ns, &["neigh", "show", "dev", "flannel.1"]), 1000);
    assert_eq!(fdb_count(&ns), 1000);
    assert_eq!(count(&ns, &["route", "show", "192.168.77.0/24"]), 1);
    // Deleting what is already gone is not a failure.
    assert!(dp.apply(&ops).await.unwrap().is_empty());

    // A kernel refusal is reported for that change only.
    let bad = Entry::Route {
        dst: "10.98.0.0/24".parse().unwrap(),
        gw: "10.98.0.0".parse().unwrap(),
        dev: Some(9999),
        onlink: true,
    };
    let failed = dp.apply(&[Op::Add(bad), ops[0].clone()]).await.unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].0, 0);

    // Everything goes.
    let ops = plan::plan(&BTreeMap::new(), &want);
    assert!(dp.apply(&ops).await.unwrap().is_empty());
    assert!(dp.programmed(&owner).await.unwrap().is_empty());
    assert_eq!(count(&ns, &["neigh", "show", "dev", "flannel.1"]), 0);
    assert_eq!(fdb_count(&ns), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn masquerade_rules_in_and_out() {
    require_root!();
    let ns = Netns::new("agent-masq");
    let mut dp = KernelDataPlane::open(NlNetns::open(ns.path()).unwrap())
        .await
        .unwrap();
    // Off and never on: nothing is created.
    dp.set_masq(None).await.unwrap();
    assert!(!ns.nft_table("inet", "plexusd").contains("chain"));
    let net: Ipv4Net = "10.5.0.0/16".parse().unwrap();
    let rules = MasqRules {
        network: Some(net),
        subnet: Some("10.5.1.0/24".parse().unwrap()),
        ipv6_network: None,
        ipv6_subnet: None,
    };
    dp.set_masq(Some(&rules)).await.unwrap();
    dp.set_masq(Some(&rules)).await.unwrap();
    let t = ns.nft_table("inet", "plexusd");
    for want in [
        "meta mark & 0x00004000 == 0x00004000 accept",
        "ip saddr 10.5.0.0/16 ip daddr 10.5.0.0/16 accept",
        "ip saddr != 10.5.0.0/16 ip daddr 10.5.1.0/24 accept",
        "ip saddr 10.5.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random",
        "ip saddr != 10.5.0.0/16 ip daddr 10.5.0.0/16 masquerade fully-random",
    ] {
        assert_eq!(t.matches(want).count(), 1, "{want:?} once in\n{t}");
    }
    dp.set_masq(None).await.unwrap();
    assert!(!ns.nft_table("inet", "plexusd").contains("overlay-masq"));
}

#[tokio::test(flavor = "current_thread")]
async fn ipv6_vtep_and_plain_routes() {
    require_root!();
    let ns = node_ns("agent-v6", &["172.21.0.1/16", "fd00:21::1/64"]);
    ns.ip(&["route", "add", "default", "via", "172.21.0.254"]);
    let mut dp = KernelDataPlane::open(NlNetns::open(ns.path()).unwrap())
        .await
        .unwrap();
    // No --iface: the default route's interface; IPv6 from the same one.
    let u = dp
        .underlay(&UnderlaySelect {
            want_v4: true,
            want_v6: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(u.name, "eth0");
    let u6 = u.v6.clone().unwrap();
    assert_eq!(u6.addr.to_string(), "fd00:21::1");

    let dev6 = dp
        .ensure_vxlan(&VxlanSpec {
            name: "flannel-v6.1".into(),
            vni: 1,
            port: 8472,
            local: u6.addr.into(),
            underlay: u6.index,
            learning: false,
            mtu: u6.mtu - 70,
            mac: "0e:00:00:00:06:01".parse().unwrap(),
            addr: "fd00:5:1::/128".parse().unwrap(),
        })
        .await
        .unwrap();
    assert_eq!(ns.addrs("flannel-v6.1"), ["fd00:5:1::/128"]);

    let local = Local {
        own: (
            Some("10.5.1.0/24".parse().unwrap()),
            Some("fd00:5:1::/64".parse().unwrap()),
        ),
        backend: BackendPlan::Vxlan {
            dev_v4: None,
            dev_v6: Some(dev6.index),
            direct_routing: true,
        },
        underlay_v4: Some((u.index, u.v4.unwrap().1)),
        underlay_v6: Some((u6.index, u6.net)),
    };
    let mut far = remote(1);
    far.subnet6 = Some("fd00:5:2::/64".parse().unwrap());
    far.attrs.public_ipv6 = Some("fd00:99::2".parse().unwrap());
    far.attrs.backend_v6_data = Some(VxlanBackendData {
        vni: 1,
        vtep_mac: [2, 0, 0, 0, 6, 2],
    });
    let mut near = remote(2);
    near.subnet6 = Some("fd00:5:3::/64".parse().unwrap());
    near.attrs.public_ipv6 = Some("fd00:21::3".parse().unwrap());
    near.attrs.backend_v6_data = far.attrs.backend_v6_data.clone();
    let want = plan::desired(&local, [&far, &near]);
    // far: neighbour, FDB, onlink route over flannel-v6.1; near (same L2,
    // DirectRouting): one route via its public IPv6. No IPv4 device here.
    assert_eq!(want.len(), 4);
    let ops = plan::plan(&want, &BTreeMap::new());
    assert!(dp.apply(&ops).await.unwrap().is_empty());
    let r = &ns.ip_json(&["-6", "route", "show", "fd00:5:3::/64"])[0];
    assert_eq!(
        (r["gateway"].as_str(), r["dev"].as_str()),
        (Some("fd00:21::3"), Some("eth0"))
    );
    let r = &ns.ip_json(&["-6", "route", "show", "fd00:5:2::/64"])[0];
    assert_eq!(r["dev"], "flannel-v6.1");
    let owner = Ownership {
        devices: vec![dev6.index],
        networks: vec!["fd00:5::/32".parse().unwrap()],
        own_subnets: vec!["fd00:5:1::/64".parse().unwrap()],
    };
    let have = programmed(&mut dp, &owner).await;
    assert_eq!(have, want);

    // host-gw: routes via the remote public IPs out of the underlay.
    let hg = Local {
        backend: BackendPlan::HostGw,
        ..local
    };
    let mut a = remote(3);
    a.attrs.backend_type = "host-gw".into();
    a.attrs.public_ip = Some("172.21.0.3".parse().unwrap());
    let want = plan::desired(&hg, [&a]);
    assert!(dp
        .apply(&plan::plan(&want, &BTreeMap::new()))
        .await
        .unwrap()
        .is_empty());
    let r = &ns.ip_json(&["route", "show", "10.100.3.0/24"])[0];
    assert_eq!(
        (r["gateway"].as_str(), r["dev"].as_str()),
        (Some("172.21.0.3"), Some("eth0"))
    );
}
