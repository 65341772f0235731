//! The import guard, rule by rule, and what the RIB does with its
//! verdicts: rejected paths kept (soft reconfiguration) but out of the
//! decision process and never re-exported, counters per peer, a new guard
//! re-judging every stored path at once.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use plexus_bgp::attrs::PathAttrs;
use plexus_bgp::codec::{Afi, ParsedUpdate};
use plexus_bgp::policy::{Guard, PeerKind, Reason, Verdict};
use plexus_bgp::rib::{PeerInfo, Rib, RibConfig};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

const TOR: &str = "10.0.0.254";
const MESH: &str = "10.0.0.2";

/// This node is 10.0.0.1 on 10.0.0.0/24 and fd00::1 on fd00::/64 (and
/// has 192.168.50.1 elsewhere); node
/// 10.0.0.2 is on the same subnet, node 10.1.0.5 across a router; pool
/// 10.244.0.0/16; the ToR 10.0.0.254 is external, 10.0.0.2 is a node.
fn guard() -> Guard {
    Guard {
        own_addresses: [ip("10.0.0.1"), ip("fd00::1"), ip("192.168.50.1")].into(),
        connected: [net("10.0.0.0/24"), net("fd00::/64")].into(),
        node_addresses: [ip("10.0.0.1"), ip(MESH), ip("10.1.0.5"), ip("fd00::2")].into(),
        pools: [net("10.244.0.0/16"), net("fd00:244::/48")].into(),
        peers: [(ip(MESH), PeerKind::Plexus), (ip(TOR), PeerKind::External)].into(),
    }
}

fn check(from: &str, prefix: &str, nh: &str) -> Result<(), Reason> {
    guard().check(&ip(from), &net(prefix), Some(ip(nh)))
}

#[test]
fn an_ordinary_route_is_accepted() {
    assert_eq!(check(TOR, "192.0.2.0/24", TOR), Ok(()));
    assert_eq!(check(MESH, "10.244.2.0/26", MESH), Ok(()));
    assert_eq!(check(TOR, "2001:db8::/32", "fd00::fe"), Ok(()));
}

#[test]
fn martian_next_hops_are_rejected() {
    for nh in [
        "0.0.0.0",
        "127.0.0.1",
        "224.0.0.5",
        "255.255.255.255",
        "0.1.2.3",
        "240.0.0.1",
        "169.254.1.1",
    ] {
        assert_eq!(
            check(TOR, "192.0.2.0/24", nh),
            Err(Reason::MartianNextHop { next_hop: ip(nh) }),
            "{nh}"
        );
    }
    for nh in ["::", "::1", "ff02::1", "fe80::1"] {
        assert_eq!(
            check(TOR, "2001:db8::/32", nh),
            Err(Reason::MartianNextHop { next_hop: ip(nh) }),
            "{nh}"
        );
    }
}

#[test]
fn our_own_address_as_next_hop_is_rejected() {
    assert_eq!(
        check(TOR, "192.0.2.0/24", "10.0.0.1"),
        Err(Reason::OwnNextHop {
            next_hop: ip("10.0.0.1")
        })
    );
    assert_eq!(
        check(TOR, "2001:db8::/32", "fd00::1"),
        Err(Reason::OwnNextHop {
            next_hop: ip("fd00::1")
        })
    );
}

#[test]
fn a_next_hop_off_every_connected_subnet_is_rejected_unless_it_is_a_node() {
    assert_eq!(
        check(TOR, "192.0.2.0/24", "10.9.9.9"),
        Err(Reason::UnreachableNextHop {
            next_hop: ip("10.9.9.9")
        })
    );
    // A node across subnets (reached through IP-in-IP).
    assert_eq!(check(MESH, "10.244.3.0/26", "10.1.0.5"), Ok(()));
    // Without connected subnets the guard cannot tell: the rule is off.
    let g = Guard {
        connected: BTreeSet::new(),
        ..guard()
    };
    assert_eq!(
        g.check(&ip(TOR), &net("192.0.2.0/24"), Some(ip("10.9.9.9"))),
        Ok(())
    );
}

#[test]
fn an_external_router_cannot_speak_for_a_node() {
    // The ToR announces a prefix via another node: that node would send it
    // back to the ToR's side (a loop), so it is the node's to announce.
    assert_eq!(
        check(TOR, "192.0.2.0/24", MESH),
        Err(Reason::NodeNextHop { next_hop: ip(MESH) })
    );
    // The node itself may (it is its own next hop).
    assert_eq!(check(MESH, "10.244.3.0/26", MESH), Ok(()));
}

#[test]
fn next_hops_of_the_wrong_family_or_none_are_rejected() {
    let g = guard();
    assert_eq!(
        g.check(&ip(TOR), &net("192.0.2.0/24"), Some(ip("fd00::fe"))),
        Err(Reason::NextHopFamily {
            next_hop: ip("fd00::fe")
        })
    );
    assert_eq!(
        g.check(&ip(TOR), &net("2001:db8::/32"), Some(ip(TOR))),
        Err(Reason::NoNextHop)
    );
    assert_eq!(
        g.check(&ip(TOR), &net("192.0.2.0/24"), None),
        Err(Reason::NoNextHop)
    );
}

#[test]
fn martian_prefixes_are_rejected_but_not_the_default_route() {
    for p in [
        "127.0.0.0/8",
        "127.1.0.0/16",
        "224.0.0.0/4",
        "239.1.0.0/16",
        "240.0.0.0/4",
        "255.255.255.255/32",
        "0.0.0.0/8",
        "0.1.0.0/16",
        "169.254.0.0/16",
    ] {
        assert_eq!(check(TOR, p, TOR), Err(Reason::MartianPrefix), "{p}");
    }
    for p in [
        "::1/128",
        "::/128",
        "fe80::/10",
        "fe80::/64",
        "ff00::/8",
        "::ffff:10.0.0.0/104",
    ] {
        assert_eq!(check(TOR, p, "fd00::fe"), Err(Reason::MartianPrefix), "{p}");
    }
    assert_eq!(check(TOR, "0.0.0.0/0", TOR), Ok(()));
    assert_eq!(check(TOR, "::/0", "fd00::fe"), Ok(()));
}

#[test]
fn our_connected_subnets_and_what_is_inside_them_are_rejected() {
    for p in ["10.0.0.0/24", "10.0.0.128/25", "10.0.0.7/32"] {
        assert_eq!(
            check(TOR, p, TOR),
            Err(Reason::ConnectedPrefix {
                subnet: net("10.0.0.0/24")
            }),
            "{p}"
        );
    }
    // From a Plexus node too.
    assert_eq!(
        check(MESH, "fd00::/64", "fd00::2"),
        Err(Reason::ConnectedPrefix {
            subnet: net("fd00::/64")
        })
    );
}

#[test]
fn a_route_to_a_node_address_never_comes_from_bgp() {
    // Another node's /32, from the mesh as well as from a router.
    for from in [TOR, MESH] {
        assert_eq!(
            check(from, "10.1.0.5/32", TOR),
            Err(Reason::NodeAddress {
                address: ip("10.1.0.5")
            }),
            "{from}"
        );
    }
    // A prefix covering node addresses.
    assert_eq!(
        check(TOR, "10.0.0.0/8", TOR),
        Err(Reason::NodeAddress {
            address: ip("10.0.0.1")
        })
    );
    // One of our own addresses off the underlay.
    assert_eq!(
        check(MESH, "192.168.50.0/24", MESH),
        Err(Reason::NodeAddress {
            address: ip("192.168.50.1")
        })
    );
    // The default route contains everything and is still accepted.
    assert_eq!(check(TOR, "0.0.0.0/0", TOR), Ok(()));
}

#[test]
fn an_external_router_may_not_announce_into_over_or_onto_a_pool() {
    for p in [
        "10.244.0.0/16",
        "10.244.7.0/26",
        "10.244.7.9/32",
        "10.240.0.0/12",
    ] {
        assert_eq!(
            check(TOR, p, TOR),
            Err(Reason::PoolPrefix {
                pool: net("10.244.0.0/16")
            }),
            "{p}"
        );
    }
    assert_eq!(
        check(TOR, "fd00:244:0:1::/64", "fd00::fe"),
        Err(Reason::PoolPrefix {
            pool: net("fd00:244::/48")
        })
    );
    // A peer the guard does not know is external.
    assert_eq!(
        check("10.0.0.99", "10.244.7.0/26", TOR),
        Err(Reason::PoolPrefix {
            pool: net("10.244.0.0/16")
        })
    );
    // Plexus nodes announce the pools' blocks.
    assert_eq!(check(MESH, "10.244.7.0/26", MESH), Ok(()));
}

#[test]
fn addresses_are_compared_in_canonical_form() {
    let mut g = guard();
    g.own_addresses.insert(ip("::ffff:10.0.0.9"));
    g.peers.insert(ip("::ffff:10.0.0.3"), PeerKind::Plexus);
    let g = g.normalised();
    assert_eq!(
        g.check(&ip("10.0.0.3"), &net("192.0.2.0/24"), Some(ip("10.0.0.9"))),
        Err(Reason::OwnNextHop {
            next_hop: ip("10.0.0.9")
        })
    );
    assert_eq!(g.peer_kind(&ip("10.0.0.3")), PeerKind::Plexus);
}

#[test]
fn reasons_serialise_and_read_as_text() {
    let v = Verdict::Rejected(Reason::MartianNextHop {
        next_hop: ip("127.0.0.1"),
    });
    let json = serde_json::to_value(&v).unwrap();
    assert_eq!(json["rejected"]["reason"], "martian_next_hop");
    assert_eq!(json["rejected"]["next_hop"], "127.0.0.1");
    let back: Verdict = serde_json::from_value(json).unwrap();
    assert_eq!(back, v);
    assert_eq!(
        v.to_string(),
        "rejected: next hop 127.0.0.1 is a martian address"
    );
    assert_eq!(serde_json::to_value(Verdict::Accepted).unwrap(), "accepted");
}

// ---- in the RIB ----

fn rib() -> Rib {
    Rib::new(RibConfig::new(Ipv4Addr::new(10, 0, 0, 1)))
}

fn peer(addr: &str, remote_as: u32) -> PeerInfo {
    PeerInfo {
        addr: ip(addr),
        remote_as,
        local_as: 64512,
        router_id: match ip(addr) {
            IpAddr::V4(a) => a,
            IpAddr::V6(_) => Ipv4Addr::new(9, 9, 9, 9),
        },
        rr_client: false,
        next_hop_v4: Some(Ipv4Addr::new(10, 0, 0, 1)),
        next_hop_v6: None,
        families: [Afi::Ipv4, Afi::Ipv6].into_iter().collect(),
    }
}

fn announce(prefixes: &[&str], nh: &str, asn: u32) -> ParsedUpdate {
    ParsedUpdate {
        announced: prefixes.iter().map(|p| net(p)).collect(),
        attrs: Some(PathAttrs {
            as_path: vec![plexus_bgp::attrs::AsSegment {
                set: false,
                asns: vec![asn],
            }],
            next_hop: Some(ip(nh)),
            ..PathAttrs::local()
        }),
        ..ParsedUpdate::default()
    }
}

fn installed(r: &Rib) -> Vec<String> {
    r.loc_rib()
        .into_iter()
        .filter(|e| e.peer.is_some())
        .map(|e| e.prefix.to_string())
        .collect()
}

/// The ToR (eBGP, AS 65000) and a mesh node (iBGP) up; the guard set.
fn rib_with_peers() -> Rib {
    let mut r = rib();
    r.set_guard(guard());
    r.peer_up(peer(TOR, 65000));
    r.peer_up(peer(MESH, 64512));
    r
}

#[test]
fn rejected_paths_are_kept_counted_and_neither_installed_nor_exported() {
    let mut r = rib_with_peers();
    let out = r.update(
        ip(TOR),
        &announce(
            &[
                "0.0.0.0/0",
                "192.0.2.0/24",
                "10.0.0.0/24",
                "10.1.0.5/32",
                "10.244.0.0/15",
            ],
            TOR,
            65000,
        ),
    );
    let changed: Vec<String> = out.changes.iter().map(|c| c.prefix.to_string()).collect();
    assert_eq!(changed, vec!["0.0.0.0/0", "192.0.2.0/24"]);
    // The mesh is sent the two accepted routes only.
    let sent: Vec<String> = out.out[&ip(MESH)]
        .announce
        .iter()
        .map(|(p, _)| p.to_string())
        .collect();
    assert_eq!(sent.len(), 2, "{sent:?}");
    let c = r.prefix_counts(&ip(TOR));
    assert_eq!(
        (
            c.received,
            c.accepted,
            c.rejected_by_guard,
            c.rejected_by_filter
        ),
        (5, 2, 3, 0)
    );
    let reasons: Vec<(String, Option<Reason>)> = r
        .adj_rib_in(Some(&ip(TOR)))
        .into_iter()
        .map(|e| (e.prefix.to_string(), e.verdict.reason().cloned()))
        .collect();
    assert_eq!(
        reasons,
        vec![
            ("0.0.0.0/0".into(), None),
            (
                "10.0.0.0/24".into(),
                Some(Reason::ConnectedPrefix {
                    subnet: net("10.0.0.0/24")
                })
            ),
            (
                "10.1.0.5/32".into(),
                Some(Reason::NodeAddress {
                    address: ip("10.1.0.5")
                })
            ),
            (
                "10.244.0.0/15".into(),
                Some(Reason::PoolPrefix {
                    pool: net("10.244.0.0/16")
                })
            ),
            ("192.0.2.0/24".into(), None),
        ]
    );
}

#[test]
fn a_rejected_path_withdraws_the_peers_earlier_path() {
    let mut r = rib_with_peers();
    r.update(ip(TOR), &announce(&["192.0.2.0/24"], TOR, 65000));
    assert_eq!(installed(&r), vec!["192.0.2.0/24"]);
    // The same prefix again, now via a martian next hop (RFC 7606
    // treat-as-withdraw).
    let out = r.update(ip(TOR), &announce(&["192.0.2.0/24"], "127.0.0.1", 65000));
    assert_eq!(out.changes.len(), 1);
    assert_eq!(out.changes[0].route, None);
    assert!(installed(&r).is_empty());
    assert_eq!(r.prefix_counts(&ip(TOR)).rejected_by_guard, 1);
    // Withdrawing a rejected path changes nothing else.
    let w = ParsedUpdate {
        withdrawn: vec![net("192.0.2.0/24")],
        ..ParsedUpdate::default()
    };
    let out = r.update(ip(TOR), &w);
    assert!(out.changes.is_empty() && out.out.is_empty());
    assert_eq!(r.prefix_counts(&ip(TOR)).received, 0);
}

#[test]
fn a_rejected_path_lets_another_peers_path_win() {
    let mut r = rib_with_peers();
    // The mesh node announces a block; the ToR announces the same, which
    // it may not (pool rule), with a shorter path.
    r.update(ip(MESH), &announce(&["10.244.9.0/26"], MESH, 64999));
    let out = r.update(
        ip(TOR),
        &ParsedUpdate {
            announced: vec![net("10.244.9.0/26")],
            attrs: Some(PathAttrs {
                next_hop: Some(ip(TOR)),
                ..PathAttrs::local()
            }),
            ..ParsedUpdate::default()
        },
    );
    assert!(out.changes.is_empty());
    let best = r.loc_rib();
    assert_eq!(best[0].peer, Some(ip(MESH)));
}

#[test]
fn a_new_guard_rejudges_every_stored_path_at_once() {
    let mut r = rib();
    r.peer_up(peer(TOR, 65000));
    // No guard data yet: only the martian rules hold.
    r.update(
        ip(TOR),
        &announce(
            &["10.244.5.0/26", "10.1.0.5/32", "192.0.2.0/24"],
            TOR,
            65000,
        ),
    );
    r.update(ip(TOR), &announce(&["198.51.100.0/24"], "127.0.0.1", 65000));
    assert_eq!(
        installed(&r),
        vec!["10.1.0.5/32", "10.244.5.0/26", "192.0.2.0/24"]
    );
    // The agent learns the pools and the nodes: two routes go at once.
    let out = r.set_guard(guard());
    let mut gone: Vec<String> = out
        .changes
        .iter()
        .filter(|c| c.route.is_none())
        .map(|c| c.prefix.to_string())
        .collect();
    gone.sort();
    assert_eq!(gone, vec!["10.1.0.5/32", "10.244.5.0/26"]);
    assert_eq!(installed(&r), vec!["192.0.2.0/24"]);
    let c = r.prefix_counts(&ip(TOR));
    assert_eq!((c.received, c.accepted, c.rejected_by_guard), (4, 1, 3));
    // The ToR turns out to be a Plexus node: its block comes back, without
    // the peer sending anything again.
    let mut g = guard();
    g.peers.insert(ip(TOR), PeerKind::Plexus);
    let out = r.set_guard(g);
    assert_eq!(out.changes.len(), 1);
    assert_eq!(out.changes[0].prefix, net("10.244.5.0/26"));
    assert!(out.changes[0].route.is_some());
    // An unchanged guard changes nothing.
    let mut g = guard();
    g.peers.insert(ip(TOR), PeerKind::Plexus);
    assert!(r.set_guard(g).changes.is_empty());
}

#[test]
fn the_adj_rib_in_says_which_path_is_best() {
    let mut r = rib_with_peers();
    r.update(ip(TOR), &announce(&["192.0.2.0/24"], TOR, 65000));
    r.update(ip(MESH), &announce(&["192.0.2.0/24"], MESH, 65000));
    let entries = r.adj_rib_in(None);
    assert_eq!(entries.len(), 2);
    // eBGP over iBGP.
    let best: Vec<IpAddr> = entries.iter().filter(|e| e.best).map(|e| e.peer).collect();
    assert_eq!(best, vec![ip(TOR)]);
    let json = serde_json::to_value(&entries[0]).unwrap();
    assert_eq!(json["prefix"], "192.0.2.0/24");
    assert_eq!(json["verdict"], "accepted");
    assert_eq!(json["attrs"]["next_hop"], MESH);
}
