//! The data plane against a real kernel, in namespaces these tests create:
//! the overlay's VXLAN device and 1000 remote nodes (3000 entries) in one
//! batch and read back; a previous run's stale entries found and removed;
//! routes of other protocols and other devices never touched; IPv6 and
//! host-gw routes; the nftables chains; and drift: every kind of entry
//! plexusd owns, deleted or changed by hand, is put back (the kernel's
//! notifications make the data plane list it again). The time each repair
//! took is printed; the bound waited for is generous (no timed assertion).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use plexus_netlink::Netns as NlNetns;
use plexus_subnet::{Lease, LeaseAttrs, VxlanBackendData};
use plexus_tests::{require_root, Netns};
use plexusd::dataplane::entry::{LEARNED_METRIC, PROTO_BGP, PROTO_BLOCK};
use plexusd::dataplane::{
    Chain, DataPlane, Entry, Hop, Kernel, Kind, Link, NetlinkKernel, OverlayRoutes, Owner, Route,
    Settings, Vxlan,
};
use plexusd::overlay::plan::{self, BackendPlan, Local};

/// Remote node `i`'s VXLAN lease (subnet 10.100+i/256.i%256.0/24, public
/// IP 172.20.0.10 + i).
fn remote(i: u32) -> Lease {
    Lease {
        subnet: Some(
            format!("10.{}.{}.0/24", 100 + i / 256, i % 256)
                .parse()
                .unwrap(),
        ),
        subnet6: None,
        attrs: LeaseAttrs {
            public_ip: Some(Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 20, 0, 10)) + i)),
            public_ipv6: None,
            backend_type: "vxlan".into(),
            backend_data: Some(VxlanBackendData {
                vni: 1,
                vtep_mac: [2, 0xaa, 0, 0, (i >> 8) as u8, i as u8],
            }),
            backend_v6_data: None,
        },
    }
}

/// A namespace with `eth0` (a veth whose peer stays inside) up, holding `addrs`.
fn node_ns(tag: &str, addrs: &[&str]) -> Netns {
    let ns = Netns::new(tag);
    ns.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "peer0",
    ]);
    for a in addrs {
        let nodad = if a.contains(':') { &["nodad"][..] } else { &[] };
        ns.ip(&[&["addr", "add", a, "dev", "eth0"][..], nodad].concat());
    }
    ns.ip(&["link", "set", "eth0", "up"]);
    ns.ip(&["link", "set", "peer0", "up"]);
    ns
}

fn count(ns: &Netns, args: &[&str]) -> usize {
    ns.ip_json(args).as_array().map(|a| a.len()).unwrap_or(0)
}

fn fdb_count(ns: &Netns, dev: &str) -> usize {
    let out = plexus_tests::run_ok(
        std::process::Command::new("bridge").args(["-n", &ns.name, "fdb", "show", "dev", dev]),
    );
    out.lines().filter(|l| l.contains(" dst ")).count()
}

fn vxlan(name: &str, local: &str, mtu: u32, mac: &str) -> Entry {
    Entry::Link(Link::Vxlan(Vxlan {
        name: name.into(),
        vni: 1,
        port: 8472,
        local: local.parse().unwrap(),
        underlay: "eth0".into(),
        learning: false,
        mtu,
        mac: mac.parse().unwrap(),
    }))
}

fn local_v4() -> Local {
    Local {
        own: (Some("10.5.1.0/24".parse().unwrap()), None),
        backend: BackendPlan::Vxlan {
            dev_v4: Some("flannel.1".into()),
            dev_v6: None,
            direct_routing: false,
        },
        underlay_v4: Some(("eth0".into(), "172.20.0.0/16".parse().unwrap())),
        underlay_v6: None,
    }
}

fn overlay_claim(networks: &[&str], own: &[&str], devices: &[&str]) -> OverlayRoutes {
    OverlayRoutes {
        networks: networks.iter().map(|n| n.parse().unwrap()).collect(),
        own_subnets: own.iter().map(|n| n.parse().unwrap()).collect(),
        devices: devices.iter().map(|d| d.to_string()).collect(),
    }
}

/// The data plane in `ns`, with notifications.
async fn open(ns: &Netns) -> DataPlane {
    DataPlane::open(
        NlNetns::open(ns.path()).unwrap(),
        Settings {
            resync_every: Duration::from_secs(3600),
            ..Settings::default()
        },
    )
    .await
    .unwrap()
}

/// Waits (at most 10 s) for `cond`; returns how long it took.
async fn repaired(what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !cond() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "not repaired: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = t.elapsed();
    eprintln!("repaired in {took:?}: {what}");
    took
}

#[tokio::test(flavor = "current_thread")]
async fn the_overlay_programs_reads_back_and_reconciles() {
    require_root!();
    let ns = node_ns("dp-ovl", &["172.20.0.1/16"]);
    // A previous run's (or flanneld's) device and entries of a node that
    // left while the agent was down (flannel #2554), and a route that is
    // not ours.
    ns.ip(&[
        "link",
        "add",
        "flannel.1",
        "type",
        "vxlan",
        "id",
        "1",
        "local",
        "172.20.0.1",
        "dev",
        "eth0",
        "dstport",
        "8472",
        "nolearning",
    ]);
    ns.ip(&["link", "set", "flannel.1", "up"]);
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
    ns.ip(&["addr", "add", "10.9.9.9/32", "dev", "flannel.1"]);

    let dp = open(&ns).await;
    dp.claim_overlay_routes(Some(overlay_claim(
        &["10.0.0.0/8"],
        &["10.5.1.0/24"],
        &["flannel.1"],
    )));
    let leases: Vec<Lease> = (0..1000).map(remote).collect();
    let mut want = vec![
        vxlan("flannel.1", "172.20.0.1", 1450, "0e:00:00:00:01:01"),
        Entry::Addr {
            dev: "flannel.1".into(),
            net: "10.5.1.0/32".parse().unwrap(),
        },
    ];
    want.extend(plan::desired(&local_v4(), &leases));
    assert_eq!(want.len(), 3002);
    let t = Instant::now();
    let o = dp.set(Owner::Overlay, want.clone()).await;
    eprintln!("3000 entries programmed in {:?}", t.elapsed());
    assert!(o.is_ok(), "{o:?}");
    assert_eq!(count(&ns, &["neigh", "show", "dev", "flannel.1"]), 1000);
    assert_eq!(fdb_count(&ns, "flannel.1"), 1000);
    assert_eq!(count(&ns, &["route", "show", "dev", "flannel.1"]), 1000);
    let r = &ns.ip_json(&["route", "show", "10.100.7.0/24"])[0];
    assert_eq!(
        (r["gateway"].as_str(), r["dev"].as_str()),
        (Some("10.100.7.0"), Some("flannel.1"))
    );
    // The existing device was kept, its MAC set; the stray address and the
    // left node's entries went; the route that is not ours stayed.
    let link = &ns.ip_json(&["-d", "link", "show", "flannel.1"])[0];
    assert_eq!(link["address"], "0e:00:00:00:01:01");
    assert_eq!(link["mtu"], 1450);
    assert_eq!(ns.addrs("flannel.1"), ["10.5.1.0/32"]);
    assert_eq!(count(&ns, &["route", "show", "10.99.0.0/24"]), 0);
    assert_eq!(count(&ns, &["route", "show", "192.168.77.0/24"]), 1);

    // Read back exactly what was written.
    let mut k = NetlinkKernel::open(NlNetns::open(ns.path()).unwrap())
        .await
        .unwrap();
    let claims = plexusd::dataplane::Claims {
        links: ["flannel.1".to_string()].into(),
        overlay: Some(overlay_claim(
            &["10.0.0.0/8"],
            &["10.5.1.0/24"],
            &["flannel.1"],
        )),
        ..Default::default()
    };
    let mut have = k
        .list(&[Kind::Neigh, Kind::Fdb, Kind::Route, Kind::Addr], &claims)
        .await
        .unwrap();
    have.sort_by_key(Entry::key);
    let mut wanted: Vec<Entry> = want
        .iter()
        .filter(|e| e.kind() != Kind::Link)
        .cloned()
        .collect();
    wanted.sort_by_key(Entry::key);
    assert_eq!(have.len(), wanted.len());
    for (w, h) in wanted.iter().zip(&have) {
        assert!(w.satisfied_by(h), "{w:?} != {h:?}");
    }

    // A kernel refusal is reported for that change only.
    let bad = Entry::Route(Route::via(
        "10.98.0.0/24".parse().unwrap(),
        Hop::via("10.98.0.0".parse().unwrap()).dev("nope0").onlink(),
    ));
    let mut more = want.clone();
    more.push(bad.clone());
    let o = dp.set(Owner::Overlay, more).await;
    assert_eq!(o.failed.len(), 1, "{o:?}");
    assert_eq!(o.failed[0].0, bad.key());

    // Everything goes but the device, which is the overlay's to keep.
    dp.set(Owner::Overlay, want[..2].to_vec()).await;
    assert_eq!(count(&ns, &["neigh", "show", "dev", "flannel.1"]), 0);
    assert_eq!(fdb_count(&ns, "flannel.1"), 0);
    assert_eq!(count(&ns, &["route", "show", "dev", "flannel.1"]), 0);
    assert_eq!(count(&ns, &["route", "show", "192.168.77.0/24"]), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn ipv6_vteps_direct_routing_and_host_gw() {
    require_root!();
    let ns = node_ns("dp-v6", &["172.21.0.1/16", "fd00:21::1/64"]);
    let dp = open(&ns).await;
    dp.claim_overlay_routes(Some(overlay_claim(
        &["10.0.0.0/8", "fd00:5::/32"],
        &["10.5.1.0/24", "fd00:5:1::/64"],
        &["flannel-v6.1"],
    )));
    let local = Local {
        own: (
            Some("10.5.1.0/24".parse().unwrap()),
            Some("fd00:5:1::/64".parse().unwrap()),
        ),
        backend: BackendPlan::Vxlan {
            dev_v4: None,
            dev_v6: Some("flannel-v6.1".into()),
            direct_routing: true,
        },
        underlay_v4: Some(("eth0".into(), "172.21.0.0/16".parse().unwrap())),
        underlay_v6: Some(("eth0".into(), "fd00:21::/64".parse().unwrap())),
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
    let mut want = vec![
        vxlan("flannel-v6.1", "fd00:21::1", 1430, "0e:00:00:00:06:01"),
        Entry::Addr {
            dev: "flannel-v6.1".into(),
            net: "fd00:5:1::/128".parse().unwrap(),
        },
    ];
    // far: neighbour, FDB, onlink route over flannel-v6.1; near (same L2,
    // DirectRouting): one route via its public IPv6.
    want.extend(plan::desired(&local, [&far, &near]));
    assert_eq!(want.len(), 2 + 4);
    let o = dp.set(Owner::Overlay, want).await;
    assert!(o.is_ok(), "{o:?}");
    assert_eq!(ns.addrs("flannel-v6.1"), ["fd00:5:1::/128"]);
    let r = &ns.ip_json(&["-6", "route", "show", "fd00:5:3::/64"])[0];
    assert_eq!(
        (r["gateway"].as_str(), r["dev"].as_str()),
        (Some("fd00:21::3"), Some("eth0"))
    );
    let r = &ns.ip_json(&["-6", "route", "show", "fd00:5:2::/64"])[0];
    assert_eq!(r["dev"], "flannel-v6.1");

    // host-gw: routes via the remote public IPs out of the underlay.
    let hg = Local {
        backend: BackendPlan::HostGw,
        ..local
    };
    let mut a = remote(3);
    a.attrs.backend_type = "host-gw".into();
    a.attrs.public_ip = Some("172.21.0.3".parse().unwrap());
    let o = dp.set(Owner::Overlay, plan::desired(&hg, [&a])).await;
    assert!(o.is_ok(), "{o:?}");
    let r = &ns.ip_json(&["route", "show", "10.100.3.0/24"])[0];
    assert_eq!(
        (r["gateway"].as_str(), r["dev"].as_str()),
        (Some("172.21.0.3"), Some("eth0"))
    );
}

fn masq_chain() -> Chain {
    plexusd::masq::chain(&plexusd::masq::MasqRules {
        network: Some("10.5.0.0/16".parse().unwrap()),
        subnet: Some("10.5.1.0/24".parse().unwrap()),
        ipv6_network: None,
        ipv6_subnet: None,
    })
}

#[tokio::test(flavor = "current_thread")]
async fn chains_in_and_out() {
    require_root!();
    let ns = Netns::new("dp-masq");
    let dp = open(&ns).await;
    // Off and never on: nothing is created.
    dp.set(Owner::OverlayMasq, vec![]).await;
    assert!(!ns.nft_table("inet", "plexusd").contains("chain"));
    let o = dp
        .set(Owner::OverlayMasq, vec![Entry::Chain(masq_chain())])
        .await;
    assert!(o.is_ok(), "{o:?}");
    dp.set(Owner::OverlayMasq, vec![Entry::Chain(masq_chain())])
        .await;
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
    dp.set(Owner::OverlayMasq, vec![]).await;
    assert!(!ns.nft_table("inet", "plexusd").contains("overlay-masq"));
}

/// `ip -j route show exact DST proto P metric M` in `ns`: (gateway or "",
/// device, type) of each.
fn route_state(ns: &Netns, dst: &str) -> Vec<(String, String, String, u64, String)> {
    ns.ip_json(&["route", "show", "exact", dst])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["gateway"].as_str().unwrap_or("").to_string(),
                r["dev"].as_str().unwrap_or("").to_string(),
                r["type"].as_str().unwrap_or("unicast").to_string(),
                r["metric"].as_u64().unwrap_or(0),
                r["protocol"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "current_thread")]
async fn every_kind_of_entry_deleted_or_changed_by_hand_is_put_back() {
    require_root!();
    let ns = node_ns("dp-drift", &["172.22.0.1/16"]);
    // Someone else's: a route of another protocol to a destination we
    // also route (at our metric), a neighbour on another device.
    ns.ip(&[
        "route",
        "add",
        "198.51.100.0/24",
        "via",
        "172.22.0.254",
        "proto",
        "static",
    ]);
    ns.ip(&[
        "neigh",
        "add",
        "172.22.0.77",
        "lladdr",
        "0e:77:00:00:00:01",
        "dev",
        "eth0",
        "nud",
        "permanent",
    ]);
    let dp = open(&ns).await;
    dp.claim_overlay_routes(Some(overlay_claim(
        &["10.0.0.0/8"],
        &["10.5.1.0/24"],
        &["flannel.1"],
    )));
    let lease = remote(5);
    let mut overlay = vec![
        vxlan("flannel.1", "172.22.0.1", 1450, "0e:00:00:00:01:01"),
        Entry::Addr {
            dev: "flannel.1".into(),
            net: "10.5.1.0/32".parse().unwrap(),
        },
    ];
    overlay.extend(plan::desired(&local_v4(), [&lease]));
    assert!(dp.set(Owner::Overlay, overlay).await.is_ok());
    let hole: IpNet = "10.96.0.0/26".parse().unwrap();
    assert!(dp
        .set(
            Owner::Blocks,
            vec![Entry::Route(Route::blackhole(hole, PROTO_BLOCK))]
        )
        .await
        .is_ok());
    let learned = Entry::Route(
        Route::via(
            "198.51.100.0/24".parse().unwrap(),
            Hop::via("172.22.0.2".parse().unwrap()),
        )
        .proto(PROTO_BGP)
        .metric(LEARNED_METRIC),
    );
    assert!(dp
        .update(Owner::Learned, vec![learned.clone()], vec![])
        .await
        .is_ok());
    assert!(dp
        .set(Owner::OverlayMasq, vec![Entry::Chain(masq_chain())])
        .await
        .is_ok());
    let natout = plexusd::routed::natout::chain(&[plexus_ipam::Pool {
        name: "p".into(),
        cidr: "10.96.0.0/16".parse().unwrap(),
        block_size: 26,
        nat_outgoing: true,
        encap: Default::default(),
        disabled: false,
    }])
    .unwrap();
    assert!(dp
        .set(Owner::NatOutgoing, vec![Entry::Chain(natout)])
        .await
        .is_ok());
    let mut times = Vec::new();

    // The overlay's route, neighbour and FDB entry: deleted, then changed.
    let sub = "10.100.5.0/24";
    ns.ip(&["route", "del", sub]);
    times.push(
        repaired("overlay route deleted", || {
            count(&ns, &["route", "show", "exact", sub]) == 1
        })
        .await,
    );
    ns.ip(&["route", "replace", sub, "via", "172.22.0.99", "dev", "eth0"]);
    times.push(
        repaired("overlay route changed", || {
            route_state(&ns, sub)
                .first()
                .is_some_and(|r| r.1 == "flannel.1")
        })
        .await,
    );
    ns.ip(&["neigh", "del", "10.100.5.0", "dev", "flannel.1"]);
    times.push(
        repaired("neighbour deleted", || {
            count(&ns, &["neigh", "show", "10.100.5.0", "dev", "flannel.1"]) == 1
        })
        .await,
    );
    ns.ip(&[
        "neigh",
        "replace",
        "10.100.5.0",
        "lladdr",
        "0e:66:00:00:00:01",
        "dev",
        "flannel.1",
        "nud",
        "permanent",
    ]);
    times.push(
        repaired("neighbour changed", || {
            ns.ip_json(&["neigh", "show", "10.100.5.0", "dev", "flannel.1"])[0]["lladdr"]
                == "02:aa:00:00:00:05"
        })
        .await,
    );
    plexus_tests::run_ok(std::process::Command::new("bridge").args([
        "-n",
        &ns.name,
        "fdb",
        "del",
        "02:aa:00:00:00:05",
        "dev",
        "flannel.1",
        "dst",
        "172.20.0.15",
        "self",
    ]));
    times.push(repaired("FDB entry deleted", || fdb_count(&ns, "flannel.1") == 1).await);
    // The blackhole and the learned route.
    ns.ip(&["route", "del", "blackhole", "10.96.0.0/26", "proto", "113"]);
    times.push(
        repaired("blackhole deleted", || {
            count(&ns, &["route", "show", "exact", "10.96.0.0/26"]) == 1
        })
        .await,
    );
    ns.ip(&[
        "route",
        "del",
        "198.51.100.0/24",
        "proto",
        "114",
        "metric",
        "4000000000",
    ]);
    times.push(
        repaired("learned route deleted", || {
            route_state(&ns, "198.51.100.0/24")
                .iter()
                .any(|r| r.3 == 4_000_000_000)
        })
        .await,
    );
    ns.ip(&[
        "route",
        "replace",
        "198.51.100.0/24",
        "via",
        "172.22.0.99",
        "proto",
        "114",
        "metric",
        "4000000000",
    ]);
    times.push(
        repaired("learned route changed", || {
            route_state(&ns, "198.51.100.0/24")
                .iter()
                .any(|r| r.3 == 4_000_000_000 && r.0 == "172.22.0.2")
        })
        .await,
    );
    // The VXLAN device's address, and the device itself.
    ns.ip(&["addr", "del", "10.5.1.0/32", "dev", "flannel.1"]);
    times.push(
        repaired("device address deleted", || {
            ns.addrs("flannel.1") == ["10.5.1.0/32"]
        })
        .await,
    );
    ns.ip(&["link", "del", "flannel.1"]);
    times.push(
        repaired("device deleted (and everything on it)", || {
            ns.has_link("flannel.1")
                && ns.addrs("flannel.1") == ["10.5.1.0/32"]
                && count(&ns, &["route", "show", "exact", sub]) == 1
                && fdb_count(&ns, "flannel.1") == 1
        })
        .await,
    );
    // Each chain: deleted, and a rule added by hand.
    let sock = |args: &[&str]| plexus_tests::run_ok(ns.cmd("nft").args(args));
    sock(&["flush", "chain", "inet", "plexusd", "overlay-masq"]);
    sock(&["delete", "chain", "inet", "plexusd", "overlay-masq"]);
    times.push(
        repaired("masquerade chain deleted", || {
            ns.nft_table("inet", "plexusd")
                .contains("chain overlay-masq")
        })
        .await,
    );
    sock(&[
        "add",
        "rule",
        "inet",
        "plexusd",
        "routed-nat-outgoing",
        "counter",
        "accept",
    ]);
    times.push(
        repaired("nat-outgoing chain changed", || {
            !ns.nft_table("inet", "plexusd").contains("counter packets")
        })
        .await,
    );
    sock(&["flush", "chain", "inet", "plexusd", "routed-nat-outgoing"]);
    times.push(
        repaired("nat-outgoing chain flushed", || {
            ns.nft_table("inet", "plexusd")
                .matches("masquerade")
                .count()
                >= 2
        })
        .await,
    );

    // What is not ours was never touched.
    assert!(route_state(&ns, "198.51.100.0/24")
        .iter()
        .any(|r| r.4 == "static" && r.0 == "172.22.0.254"));
    assert_eq!(
        count(&ns, &["neigh", "show", "172.22.0.77", "dev", "eth0"]),
        1
    );
    let worst = times.iter().max().unwrap();
    eprintln!("slowest repair: {worst:?} of {} repairs", times.len());
    let s = dp.stats();
    assert!(s.repaired >= times.len() as u64 - 2, "{s:?}");
}
