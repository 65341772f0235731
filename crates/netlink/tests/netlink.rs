//! Root integration tests. Each test builds its own namespaces
//! (`plxnl-<pid>-<n>`) and never touches the root network namespace.

mod common;

use std::net::IpAddr;

use common::{root_or_skip, TestNs};
use ipnet::IpNet;
use plexus_netlink::{
    netns, sysctl, AddrOptions, BatchSocket, Bridge, BridgePortSettings, BridgeVlan, Fdb, Ipvlan,
    IpvlanMode, MacAddr, Macvlan, MacvlanMode, Netlink, Netns, NextHop, Route, RouteFilter,
    RtBatch, Veth, Vxlan,
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn mac(s: &str) -> MacAddr {
    s.parse().unwrap()
}

/// A veth pair with both ends in `nl`'s namespace, both up; returns indexes.
async fn veth_pair(nl: &Netlink, a: &str, b: &str) -> (u32, u32) {
    let l = nl.create_veth(&Veth::new(a, b)).await.unwrap();
    let peer = nl.link_index(b).await.unwrap();
    nl.set_link_up(l.index, true).await.unwrap();
    nl.set_link_up(peer, true).await.unwrap();
    (l.index, peer)
}

#[test]
fn netns_create_run_delete() {
    if !root_or_skip("netns_create_run_delete") {
        return;
    }
    let t = TestNs::new();
    let path = netns::named_path(&t.name).unwrap();
    assert!(path.exists());
    assert!(netns::list_named().unwrap().contains(&t.name));

    let current = Netns::current().unwrap();
    assert_ne!(t.ns.id().unwrap(), current.id().unwrap());
    // The closure runs on a thread inside the namespace; this thread is untouched.
    let inside =
        t.ns.run(|| Netns::current().unwrap().id().unwrap())
            .unwrap();
    assert_eq!(inside, t.ns.id().unwrap());
    assert_eq!(
        Netns::current().unwrap().id().unwrap(),
        current.id().unwrap()
    );
    // Only loopback in a fresh namespace.
    let links =
        t.ns.run(|| std::fs::read_dir("/sys/class/net").map(|d| d.count()))
            .unwrap();
    assert!(links.is_ok());

    let err = netns::create_named(&t.name).unwrap_err();
    assert!(err.is_exists(), "{err}");

    // A second handle keeps the namespace alive after deletion of the name.
    let extra = TestNs::new();
    let held = extra.ns.try_clone().unwrap();
    netns::delete_named(&extra.name).unwrap();
    assert!(!netns::named_path(&extra.name).unwrap().exists());
    netns::delete_named(&extra.name).unwrap(); // idempotent
    assert_eq!(held.run(|| 7).unwrap(), 7);

    assert!(netns::create_named("bad/name").is_err());
    assert!(Netns::open_named("plxnl-does-not-exist")
        .unwrap_err()
        .is_not_found());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netns_run_async_and_socket_binding() {
    if !root_or_skip("netns_run_async_and_socket_binding") {
        return;
    }
    let t = TestNs::new();
    let id =
        t.ns.run_async(|| Netns::current().unwrap().id().unwrap())
            .await
            .unwrap();
    assert_eq!(id, t.ns.id().unwrap());
    let nl = t.nl().await;
    // A fresh namespace has lo (plus fallback tunnels such as tunl0 when
    // tunnel modules are loaded) and nothing else.
    let links = nl.links().await.unwrap();
    assert!(links.iter().any(|l| l.name == "lo"), "{links:?}");
    assert!(links.iter().all(|l| l.kind.as_deref() != Some("veth")));
    assert!(nl.netns().contains(&t.name));
    let lo = nl.link("lo").await.unwrap();
    assert_eq!(
        nl.link_by_index(lo.index).await.unwrap().unwrap().name,
        "lo"
    );
    assert!(nl.link_by_name("nope0").await.unwrap().is_none());
    assert!(nl.link_by_index(9999).await.unwrap().is_none());
    assert!(nl.link("nope0").await.unwrap_err().is_not_found());
    assert!(nl.link_by_name("way-too-long-name").await.is_err());
}

#[tokio::test]
async fn veth_peer_created_in_other_netns() {
    if !root_or_skip("veth_peer_created_in_other_netns") {
        return;
    }
    let (a, b) = (TestNs::new(), TestNs::new());
    let (nla, nlb) = (a.nl().await, b.nl().await);
    let (m1, m2) = (mac("02:00:00:00:00:a1"), mac("02:00:00:00:00:b1"));
    let va = nla
        .create_veth(
            &Veth::new("va", "eth0")
                .peer_netns(&b.ns)
                .mtu(1400)
                .mac(m1)
                .peer_mac(m2),
        )
        .await
        .unwrap();
    assert_eq!(va.kind.as_deref(), Some("veth"));
    assert_eq!((va.mtu, va.mac), (1400, Some(m1)));
    assert!(
        va.link_netnsid.is_some(),
        "peer lives in another netns: {va:?}"
    );
    assert!(nla.link_by_name("eth0").await.unwrap().is_none());
    let eth0 = nlb.link("eth0").await.unwrap();
    assert_eq!((eth0.mtu, eth0.mac), (1400, Some(m2)));

    nla.set_link_up(va.index, true).await.unwrap();
    nlb.set_link_up(eth0.index, true).await.unwrap();
    assert!(nla.link("va").await.unwrap().admin_up);
    assert!(nlb.link("eth0").await.unwrap().admin_up);
    nlb.set_link_up(eth0.index, false).await.unwrap();
    assert!(!nlb.link("eth0").await.unwrap().admin_up);

    // mtu / mac / rename
    nlb.set_mtu(eth0.index, 1300).await.unwrap();
    nlb.set_mac(eth0.index, mac("02:00:00:00:00:b2"))
        .await
        .unwrap();
    nlb.rename_link(eth0.index, "net1").await.unwrap();
    let net1 = nlb.link("net1").await.unwrap();
    assert_eq!((net1.index, net1.mtu), (eth0.index, 1300));
    assert_eq!(net1.mac, Some(mac("02:00:00:00:00:b2")));

    // move with a new name in the same request
    let (x0, x1) = veth_pair(&nla, "x0", "x1").await;
    nla.set_link_up(x1, false).await.unwrap();
    nla.move_link(x1, &b.ns, Some("y1")).await.unwrap();
    assert!(nla.link_by_name("x1").await.unwrap().is_none());
    assert!(nlb.link_by_name("y1").await.unwrap().is_some());
    nla.move_link(x0, &b.ns, None).await.unwrap();
    assert!(nlb.link_by_name("x0").await.unwrap().is_some());

    // delete removes the peer too; deleting again is idempotent
    nla.delete_link(va.index).await.unwrap();
    assert!(nlb.link_by_name("net1").await.unwrap().is_none());
    assert!(!nla.delete_link_if_exists("va").await.unwrap());
    assert!(nlb.delete_link_if_exists("y1").await.unwrap());
    let err = nla.delete_link(va.index).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(
        err.to_string().contains(&a.name),
        "context names the netns: {err}"
    );

    // creating an existing name is classified
    veth_pair(&nla, "dup0", "dup1").await;
    let err = nla
        .create_veth(&Veth::new("dup0", "dup2"))
        .await
        .unwrap_err();
    assert!(err.is_exists(), "{err}");
}

#[tokio::test]
async fn bridge_enslave_hairpin_vlan() {
    if !root_or_skip("bridge_enslave_hairpin_vlan") {
        return;
    }
    let t = TestNs::new();
    let nl = t.nl().await;
    // This machine's kernel lacks CONFIG_BRIDGE_VLAN_FILTERING: accept the
    // not-supported classification there and verify fully elsewhere.
    let vlan_ok = match nl
        .create_bridge(&Bridge::new("br0").mtu(1450).vlan_filtering(true))
        .await
    {
        Ok(_) => true,
        Err(e) => {
            assert!(e.is_not_supported(), "{e}");
            eprintln!("bridge vlan filtering not available on this kernel: {e}");
            false
        }
    };
    let br = if vlan_ok {
        nl.link("br0").await.unwrap()
    } else {
        nl.create_bridge(&Bridge::new("br0").mtu(1450))
            .await
            .unwrap()
    };
    assert_eq!(br.kind.as_deref(), Some("bridge"));
    assert_eq!(br.mtu, 1450);
    assert_eq!(br.bridge.as_ref().unwrap().vlan_filtering, vlan_ok);
    nl.set_link_up(br.index, true).await.unwrap();
    nl.set_promisc(br.index, true).await.unwrap();
    assert!(nl.link("br0").await.unwrap().promisc);

    let (p0, _p1) = veth_pair(&nl, "p0", "p1").await;
    nl.set_master(p0, br.index).await.unwrap();
    let port = nl.link("p0").await.unwrap();
    assert_eq!(port.master, Some(br.index));
    let info = port.bridge_port.unwrap();
    assert!(!info.hairpin && info.learning);

    nl.set_bridge_port(
        p0,
        &BridgePortSettings {
            hairpin: Some(true),
            isolated: Some(true),
            learning: Some(false),
        },
    )
    .await
    .unwrap();
    let info = nl.link("p0").await.unwrap().bridge_port.unwrap();
    assert!(info.hairpin && info.isolated && !info.learning, "{info:?}");

    if vlan_ok {
        nl.bridge_vlan_add(p0, &BridgeVlan::new(10).pvid().untagged())
            .await
            .unwrap();
        nl.bridge_vlan_add(p0, &BridgeVlan::range(100, 105))
            .await
            .unwrap();
        nl.bridge_vlan_add(br.index, &BridgeVlan::new(10).bridge_self())
            .await
            .unwrap();
        let vlans = nl.bridge_vlans(p0).await.unwrap();
        let v10 = vlans.iter().find(|v| v.vid == 10).expect("vid 10");
        assert!(v10.pvid && v10.untagged);
        for vid in 100..=105 {
            let v = vlans.iter().find(|v| v.vid == vid).expect("trunk vid");
            assert!(!v.pvid && !v.untagged);
        }
        assert!(nl
            .bridge_vlans(br.index)
            .await
            .unwrap()
            .iter()
            .any(|v| v.vid == 10));
        nl.bridge_vlan_del(p0, &BridgeVlan::range(100, 105))
            .await
            .unwrap();
        let vlans = nl.bridge_vlans(p0).await.unwrap();
        assert!(
            vlans.iter().all(|v| !(100..=105).contains(&v.vid)),
            "{vlans:?}"
        );
        assert!(vlans.iter().any(|v| v.vid == 10));
    } else {
        let err = nl
            .bridge_vlan_add(p0, &BridgeVlan::new(10).pvid().untagged())
            .await
            .unwrap_err();
        assert!(err.is_not_supported(), "{err}");
    }

    nl.set_nomaster(p0).await.unwrap();
    let port = nl.link("p0").await.unwrap();
    assert_eq!(port.master, None);
    assert!(port.bridge_port.is_none());
}

#[tokio::test]
async fn addresses() {
    if !root_or_skip("addresses") {
        return;
    }
    let t = TestNs::new();
    let nl = t.nl().await;
    let (i0, _) = veth_pair(&nl, "a0", "a1").await;
    nl.addr_add(i0, net("10.10.0.1/24")).await.unwrap();
    nl.addr_add_with(
        i0,
        net("fd00:10::1/64"),
        AddrOptions {
            nodad: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let addrs = nl.addrs(Some(i0)).await.unwrap();
    assert!(
        addrs.iter().any(|a| a.net == net("10.10.0.1/24")),
        "{addrs:?}"
    );
    let v6 = addrs
        .iter()
        .find(|a| a.net == net("fd00:10::1/64"))
        .expect("v6 address");
    assert!(v6.nodad && !v6.tentative, "{v6:?}");

    let err = nl.addr_add(i0, net("10.10.0.1/24")).await.unwrap_err();
    assert!(err.is_exists(), "{err}");
    nl.addr_add_with(
        i0,
        net("10.10.0.1/24"),
        AddrOptions {
            replace: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    nl.addr_del(i0, net("10.10.0.1/24")).await.unwrap();
    let err = nl.addr_del(i0, net("10.10.0.1/24")).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(nl
        .addrs(Some(i0))
        .await
        .unwrap()
        .iter()
        .all(|a| a.net != net("10.10.0.1/24")));
}

#[tokio::test]
async fn routes() {
    if !root_or_skip("routes") {
        return;
    }
    let t = TestNs::new();
    let nl = t.nl().await;
    let (i0, _) = veth_pair(&nl, "r0", "r1").await;
    nl.addr_add(i0, net("10.20.0.1/24")).await.unwrap();
    nl.addr_add_with(
        i0,
        net("fd00:20::1/64"),
        AddrOptions {
            nodad: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();

    let r1 = Route::new(net("10.30.0.0/16")).via(ip("10.20.0.2"));
    nl.route_add(&r1).await.unwrap();
    assert!(nl.route_add(&r1).await.unwrap_err().is_exists());
    let dflt = Route::default_via(ip("10.20.0.254")).metric(100);
    nl.route_add(&dflt).await.unwrap();
    let tbl = Route::new(net("10.31.0.0/16"))
        .dev(i0)
        .table(100)
        .mtu(1400)
        .advmss(1360);
    nl.route_add(&tbl).await.unwrap();
    let onlink = Route::new(net("10.40.0.0/16"))
        .via(ip("192.0.2.1"))
        .dev(i0)
        .onlink();
    nl.route_add(&onlink).await.unwrap();
    let v6 = Route::default_via(ip("fd00:20::2")).dev(i0).metric(1024);
    nl.route_add(&v6).await.unwrap();

    let main4 = nl.routes(RouteFilter::v4().table(254)).await.unwrap();
    let got = main4.iter().find(|r| r.dst == net("10.30.0.0/16")).unwrap();
    assert_eq!((got.gateway, got.oif), (Some(ip("10.20.0.2")), Some(i0)));
    let d = main4
        .iter()
        .find(|r| r.is_default())
        .expect("default route");
    assert_eq!((d.gateway, d.metric), (Some(ip("10.20.0.254")), Some(100)));
    let o = main4.iter().find(|r| r.dst == net("10.40.0.0/16")).unwrap();
    assert!(o.onlink);
    assert!(main4.iter().all(|r| r.table == 254));

    let t100 = nl.routes(RouteFilter::v4().table(100)).await.unwrap();
    assert_eq!(t100.len(), 1, "{t100:?}");
    assert_eq!((t100[0].mtu, t100[0].advmss), (Some(1400), Some(1360)));
    assert_eq!(t100[0].scope, Some(plexus_netlink::Scope::Link));

    let v6s = nl.routes(RouteFilter::v6().oif(i0)).await.unwrap();
    assert!(v6s
        .iter()
        .any(|r| r.is_default() && r.gateway == Some(ip("fd00:20::2"))));

    // replace changes the gateway in place
    nl.route_replace(&Route::new(net("10.30.0.0/16")).via(ip("10.20.0.3")))
        .await
        .unwrap();
    let main4 = nl.routes(RouteFilter::v4()).await.unwrap();
    let got: Vec<_> = main4
        .iter()
        .filter(|r| r.dst == net("10.30.0.0/16"))
        .collect();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].gateway, Some(ip("10.20.0.3")));

    nl.route_del(&Route::new(net("10.30.0.0/16")))
        .await
        .unwrap();
    let err = nl
        .route_del(&Route::new(net("10.30.0.0/16")))
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
    nl.route_del(&tbl).await.unwrap();
    nl.route_del(&dflt).await.unwrap();
    assert!(nl
        .routes(RouteFilter::v4().table(254))
        .await
        .unwrap()
        .iter()
        .all(|r| !r.is_default()));
}

/// `ip -j route show ...` in the test namespace, parsed.
fn ip_json_routes(ns: &str, args: &[&str]) -> Vec<serde_json::Value> {
    let out = std::process::Command::new("ip")
        .args(["-j", "-n", ns])
        .args(args)
        .output()
        .expect("run ip");
    assert!(out.status.success(), "ip {args:?}: {out:?}");
    serde_json::from_slice(&out.stdout).expect("ip -j output")
}

/// (gateway, weight) of each `nexthops` entry of the one route listed.
fn nexthops(routes: &[serde_json::Value]) -> Vec<(String, u64)> {
    assert_eq!(routes.len(), 1, "{routes:?}");
    let mut v: Vec<(String, u64)> = routes[0]["nexthops"]
        .as_array()
        .unwrap_or_else(|| panic!("no nexthops in {routes:?}"))
        .iter()
        .map(|h| {
            (
                h["gateway"].as_str().unwrap().to_string(),
                h["weight"].as_u64().unwrap_or(1),
            )
        })
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn multipath_routes_one_by_one_and_in_a_batch() {
    if !root_or_skip("multipath_routes_one_by_one_and_in_a_batch") {
        return;
    }
    let t = TestNs::new();
    let nl = t.nl().await;
    let (i0, _) = veth_pair(&nl, "m0", "m1").await;
    nl.addr_add(i0, net("10.20.0.1/24")).await.unwrap();
    nl.addr_add_with(
        i0,
        net("fd00:20::1/64"),
        AddrOptions {
            nodad: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();

    // One request: two next hops, one weighted.
    let r = Route::new(net("10.50.0.0/24"))
        .protocol(112)
        .multipath(vec![
            NextHop::via(ip("10.20.0.2")),
            NextHop::via(ip("10.20.0.3")).weight(3),
        ]);
    nl.route_replace(&r).await.unwrap();
    let shown = ip_json_routes(&t.name, &["route", "show", "10.50.0.0/24"]);
    assert_eq!(
        nexthops(&shown),
        vec![("10.20.0.2".into(), 1), ("10.20.0.3".into(), 3)]
    );
    assert_eq!(shown[0]["protocol"], "112");
    // Our own listing reads it back the same way.
    let listed = nl.routes(RouteFilter::v4()).await.unwrap();
    let got = listed
        .iter()
        .find(|x| x.dst == net("10.50.0.0/24"))
        .unwrap();
    let mut gws: Vec<_> = got.multipath.iter().map(|h| h.gateway).collect();
    gws.sort();
    assert_eq!(gws, vec![Some(ip("10.20.0.2")), Some(ip("10.20.0.3"))]);
    assert!(got.multipath.iter().all(|h| h.oif == Some(i0)));

    // Replaced by a single path, then by three in a batch, with IPv6.
    nl.route_replace(&Route::new(net("10.50.0.0/24")).via(ip("10.20.0.4")))
        .await
        .unwrap();
    let shown = ip_json_routes(&t.name, &["route", "show", "10.50.0.0/24"]);
    assert_eq!(shown[0]["gateway"], "10.20.0.4");
    assert!(shown[0].get("nexthops").is_none());
    let mut b = RtBatch::new();
    b.route_replace(&Route::new(net("10.50.0.0/24")).multipath(vec![
        NextHop::via(ip("10.20.0.2")),
        NextHop::via(ip("10.20.0.3")),
        NextHop::via(ip("10.20.0.4")),
    ]));
    b.route_replace(&Route::new(net("fd50::/64")).multipath(vec![
        NextHop::via(ip("fd00:20::2")).dev(i0),
        NextHop::via(ip("fd00:20::3")).dev(i0),
    ]));
    let mut sock = BatchSocket::open(&t.ns).await.unwrap();
    let report = sock.apply(&b).await.unwrap();
    assert!(report.is_ok(), "{:?}", report.failed);
    let shown = ip_json_routes(&t.name, &["route", "show", "10.50.0.0/24"]);
    assert_eq!(
        nexthops(&shown),
        vec![
            ("10.20.0.2".into(), 1),
            ("10.20.0.3".into(), 1),
            ("10.20.0.4".into(), 1)
        ]
    );
    let shown6 = ip_json_routes(&t.name, &["-6", "route", "show", "fd50::/64"]);
    assert_eq!(
        nexthops(&shown6),
        vec![("fd00:20::2".into(), 1), ("fd00:20::3".into(), 1)]
    );

    // Deleting the prefix takes every path.
    nl.route_del(&Route::new(net("10.50.0.0/24")))
        .await
        .unwrap();
    assert!(ip_json_routes(&t.name, &["route", "show", "10.50.0.0/24"]).is_empty());
}

#[tokio::test]
async fn neighbours() {
    if !root_or_skip("neighbours") {
        return;
    }
    let t = TestNs::new();
    let nl = t.nl().await;
    let (i0, _) = veth_pair(&nl, "n0", "n1").await;
    nl.addr_add(i0, net("10.60.0.1/24")).await.unwrap();
    let (m1, m2) = (mac("02:00:00:00:60:01"), mac("02:00:00:00:60:02"));
    nl.neigh_add(i0, ip("10.60.0.2"), m1).await.unwrap();
    nl.neigh_add(i0, ip("fd00:60::2"), m1).await.unwrap();
    assert!(nl
        .neigh_add(i0, ip("10.60.0.2"), m2)
        .await
        .unwrap_err()
        .is_exists());
    nl.neigh_replace(i0, ip("10.60.0.2"), m2).await.unwrap();
    let ns = nl.neighbours(Some(i0)).await.unwrap();
    let n = ns.iter().find(|n| n.ip == ip("10.60.0.2")).unwrap();
    assert_eq!(n.mac, Some(m2));
    assert!(n.permanent);
    assert!(ns
        .iter()
        .any(|n| n.ip == ip("fd00:60::2") && n.mac == Some(m1)));
    nl.neigh_del(i0, ip("10.60.0.2")).await.unwrap();
    let err = nl.neigh_del(i0, ip("10.60.0.2")).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
}

#[tokio::test]
async fn vxlan_and_fdb_append() {
    if !root_or_skip("vxlan_and_fdb_append") {
        return;
    }
    let t = TestNs::new();
    let nl = t.nl().await;
    let (u0, _) = veth_pair(&nl, "u0", "u1").await;
    nl.addr_add(u0, net("10.50.0.1/24")).await.unwrap();
    let vx = nl
        .create_vxlan(
            &Vxlan::new("vx0", 42)
                .local(ip("10.50.0.1"))
                .port(4789)
                .underlay(u0)
                .learning(false)
                .mtu(1450),
        )
        .await
        .unwrap();
    assert_eq!(vx.kind.as_deref(), Some("vxlan"));
    assert_eq!(vx.mtu, 1450);
    let info = vx.vxlan.clone().unwrap();
    assert_eq!(info.vni, 42);
    assert_eq!(info.local, Some(ip("10.50.0.1")));
    assert_eq!(info.port, Some(4789));
    assert_eq!(info.underlay, Some(u0));
    assert!(!info.learning);

    let flood2 = Fdb::new(vx.index, MacAddr::ZERO).dst(ip("10.50.0.2"));
    let flood3 = Fdb::new(vx.index, MacAddr::ZERO).dst(ip("10.50.0.3"));
    nl.fdb_append(&flood2).await.unwrap();
    nl.fdb_append(&flood3).await.unwrap();
    let peer = Fdb::new(vx.index, mac("02:00:00:00:50:02")).dst(ip("10.50.0.2"));
    nl.fdb_add(&peer).await.unwrap();
    assert!(nl.fdb_add(&peer).await.unwrap_err().is_exists());

    let list = nl.fdb_list(Some(vx.index)).await.unwrap();
    let zero: Vec<_> = list.iter().filter(|f| f.mac == MacAddr::ZERO).collect();
    assert_eq!(zero.len(), 2, "{list:?}");
    assert!(
        zero.iter().any(|f| f.dst == Some(ip("10.50.0.3"))),
        "{list:?}"
    );
    assert!(list
        .iter()
        .any(|f| f.mac == peer.mac && f.dst == Some(ip("10.50.0.2")) && f.permanent));

    nl.fdb_del(&flood3).await.unwrap();
    let list = nl.fdb_list(Some(vx.index)).await.unwrap();
    let zero: Vec<_> = list.iter().filter(|f| f.mac == MacAddr::ZERO).collect();
    assert_eq!(zero.len(), 1);
    assert_eq!(zero[0].dst, Some(ip("10.50.0.2")));
    // The kernel treats deleting an absent remote of an existing MAC as
    // success; a MAC without any entry is "not found".
    nl.fdb_del(&peer).await.unwrap();
    let err = nl.fdb_del(&peer).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
}

#[tokio::test]
async fn sysctl_is_per_netns() {
    if !root_or_skip("sysctl_is_per_netns") {
        return;
    }
    let (a, b) = (TestNs::new(), TestNs::new());
    let nla = a.nl().await;
    veth_pair(&nla, "s0", "s1").await;
    sysctl::set(&a.ns, "net.ipv4.conf.s0.arp_notify", "1").unwrap();
    assert_eq!(
        sysctl::get(&a.ns, "net.ipv4.conf.s0.arp_notify").unwrap(),
        "1"
    );
    assert_eq!(
        sysctl::get(&a.ns, "net/ipv4/conf/s0/arp_notify").unwrap(),
        "1"
    );
    let err = sysctl::get(&b.ns, "net.ipv4.conf.s0.arp_notify").unwrap_err();
    assert!(err.is_not_found(), "{err}");

    sysctl::set_async(&a.ns, "net.ipv4.ip_forward", "1")
        .await
        .unwrap();
    assert_eq!(
        sysctl::get_async(&a.ns, "net.ipv4.ip_forward")
            .await
            .unwrap(),
        "1"
    );
    assert_eq!(sysctl::get(&b.ns, "net.ipv4.ip_forward").unwrap(), "0");

    // A batch: one result per write, in order; a failure does not stop it.
    let r = sysctl::set_many(
        &a.ns,
        &[
            sysctl::Write::new("net/ipv4/conf/s0/arp_notify", "0"),
            sysctl::Write::new("net/ipv4/conf/nosuch0/arp_notify", "1"),
            sysctl::Write::new("net/ipv6/conf/s0/accept_dad", "0"),
        ],
    )
    .await
    .unwrap();
    assert!(r[0].is_ok() && r[2].is_ok(), "{r:?}");
    assert!(r[1].as_ref().unwrap_err().is_not_found(), "{r:?}");
    assert_eq!(
        sysctl::get(&a.ns, "net.ipv4.conf.s0.arp_notify").unwrap(),
        "0"
    );
    assert_eq!(
        sysctl::get(&a.ns, "net/ipv6/conf/s0/accept_dad").unwrap(),
        "0"
    );
}

#[tokio::test]
async fn link_alias_is_set_and_read_back() {
    if !root_or_skip("link_alias_is_set_and_read_back") {
        return;
    }
    let a = TestNs::new();
    let nla = a.nl().await;
    let (i0, _) = veth_pair(&nla, "al0", "al1").await;
    assert_eq!(nla.link("al0").await.unwrap().alias, None);
    nla.set_alias(i0, "plexus-test:c1:eth0").await.unwrap();
    assert_eq!(
        nla.link("al0").await.unwrap().alias.as_deref(),
        Some("plexus-test:c1:eth0")
    );
    let listed = nla.links().await.unwrap();
    assert!(listed
        .iter()
        .any(|l| l.index == i0 && l.alias.as_deref() == Some("plexus-test:c1:eth0")));
    let long = "x".repeat(plexus_netlink::link::ALIAS_MAX + 1);
    assert!(matches!(
        nla.set_alias(i0, &long).await.unwrap_err(),
        plexus_netlink::Error::InvalidArgument { .. }
    ));
}

#[tokio::test]
async fn ipvlan_or_not_supported_and_macvlan_into_other_netns() {
    if !root_or_skip("ipvlan_or_not_supported_and_macvlan_into_other_netns") {
        return;
    }
    let (a, b) = (TestNs::new(), TestNs::new());
    let (nla, nlb) = (a.nl().await, b.nl().await);
    let (m0, _) = veth_pair(&nla, "m0", "m1").await;

    match nla
        .create_ipvlan(&Ipvlan::new("ipvl0", m0, IpvlanMode::L3))
        .await
    {
        Ok(Some(l)) => {
            assert_eq!(l.kind.as_deref(), Some("ipvlan"));
            assert_eq!(l.ipvlan_mode, Some(IpvlanMode::L3));
        }
        Ok(None) => panic!("ipvlan created here must be returned"),
        Err(e) => {
            assert!(e.is_not_supported(), "expected not-supported, got: {e}");
            eprintln!("ipvlan not available on this kernel (as expected): {e}");
        }
    }

    // A separate lower device: macvlan and ipvlan cannot share one (EBUSY).
    let (m2, _) = veth_pair(&nla, "m2", "m3").await;
    let created = nla
        .create_macvlan(&Macvlan::new("mv0", m2, MacvlanMode::Bridge).netns(&b.ns))
        .await
        .unwrap();
    assert!(created.is_none());
    let mv = nlb.link("mv0").await.unwrap();
    assert_eq!(mv.kind.as_deref(), Some("macvlan"));
    assert_eq!(mv.macvlan_mode, Some(MacvlanMode::Bridge));
    assert!(mv.link_netnsid.is_some());
}
