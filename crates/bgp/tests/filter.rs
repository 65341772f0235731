//! Per-peer filters (Calico BGPFilter-like) and communities on what we
//! announce: each match kind, first match wins, default accept, no filter
//! loosening the guard, new filters applied to stored paths at once, export
//! filters and per-peer / per-prefix communities.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use plexus_bgp::attrs::{AsSegment, Community, CommunitySet, LargeCommunity, PathAttrs};
use plexus_bgp::codec::{Afi, ParsedUpdate};
use plexus_bgp::policy::filter::{evaluate, Direction};
use plexus_bgp::policy::{
    AsPathMatch, BgpFilter, FilterAction, FilterRule, Guard, MatchOperator, Reason, RouteSource,
    Verdict,
};
use plexus_bgp::rib::{PeerInfo, PeerPolicy, Rib, RibConfig};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn attrs(path: &[u32]) -> PathAttrs {
    PathAttrs {
        as_path: vec![AsSegment {
            set: false,
            asns: path.to_vec(),
        }],
        next_hop: Some(ip("10.0.0.2")),
        ..PathAttrs::local()
    }
}

fn import(rules: Vec<FilterRule>) -> Vec<BgpFilter> {
    vec![BgpFilter {
        name: "f".into(),
        import_v4: rules,
        ..BgpFilter::default()
    }]
}

/// Accepted (true) or rejected by `filters` on import.
fn accepts(filters: &[BgpFilter], prefix: &str, a: &PathAttrs) -> bool {
    evaluate(filters, Direction::Import, &net(prefix), a, true).is_none()
}

use FilterAction::{Accept, Reject};
use MatchOperator::{Equal, In, NotEqual, NotIn};

#[test]
fn cidr_operators() {
    let a = attrs(&[65001]);
    let f = |op| import(vec![FilterRule::new(Reject).cidr(op, net("10.50.0.0/16"))]);
    assert!(!accepts(&f(Equal), "10.50.0.0/16", &a));
    assert!(accepts(&f(Equal), "10.50.1.0/24", &a));
    assert!(accepts(&f(NotEqual), "10.50.0.0/16", &a));
    assert!(!accepts(&f(NotEqual), "10.50.1.0/24", &a));
    assert!(!accepts(&f(In), "10.50.0.0/16", &a));
    assert!(!accepts(&f(In), "10.50.1.0/24", &a));
    assert!(accepts(&f(In), "10.0.0.0/8", &a));
    assert!(accepts(&f(In), "10.51.0.0/24", &a));
    assert!(accepts(&f(NotIn), "10.50.1.0/24", &a));
    assert!(!accepts(&f(NotIn), "10.51.0.0/24", &a));
}

#[test]
fn prefix_length_ranges() {
    let a = attrs(&[65001]);
    // Reject what is inside 10.50/16 and /25 or longer.
    let f = import(vec![FilterRule::new(Reject)
        .cidr(In, net("10.50.0.0/16"))
        .prefix_length(Some(25), None)]);
    assert!(accepts(&f, "10.50.1.0/24", &a));
    assert!(!accepts(&f, "10.50.1.0/25", &a));
    assert!(!accepts(&f, "10.50.1.1/32", &a));
    // With a maximum: /17 to /24 only.
    let f = import(vec![FilterRule::new(Reject)
        .cidr(In, net("10.50.0.0/16"))
        .prefix_length(Some(17), Some(24))]);
    assert!(accepts(&f, "10.50.0.0/16", &a));
    assert!(!accepts(&f, "10.50.0.0/17", &a));
    assert!(!accepts(&f, "10.50.3.0/24", &a));
    assert!(accepts(&f, "10.50.3.0/26", &a));
    // A length range alone: anything longer than /24, anywhere.
    let f = import(vec![FilterRule::new(Reject).prefix_length(Some(25), None)]);
    assert!(accepts(&f, "192.0.2.0/24", &a));
    assert!(!accepts(&f, "192.0.2.0/25", &a));
}

#[test]
fn community_large_community_and_as_path() {
    let mut a = attrs(&[65001, 65002, 65003]);
    a.communities = vec![Community::new(65000, 100).0];
    a.large_communities = vec![LargeCommunity::new(65000, 1, 2)];
    let one = |r: FilterRule| import(vec![r]);
    let c = |s: &str| s.parse::<Community>().unwrap();
    let lc = |s: &str| s.parse::<LargeCommunity>().unwrap();
    assert!(!accepts(
        &one(FilterRule::new(Reject).community(c("65000:100"))),
        "192.0.2.0/24",
        &a
    ));
    assert!(accepts(
        &one(FilterRule::new(Reject).community(c("65000:101"))),
        "192.0.2.0/24",
        &a
    ));
    assert!(!accepts(
        &one(FilterRule::new(Reject).large_community(lc("65000:1:2"))),
        "192.0.2.0/24",
        &a
    ));
    assert!(accepts(
        &one(FilterRule::new(Reject).large_community(lc("65000:1:3"))),
        "192.0.2.0/24",
        &a
    ));
    let asp = |m| one(FilterRule::new(Reject).as_path(m));
    assert!(!accepts(
        &asp(AsPathMatch::Contains(65002)),
        "192.0.2.0/24",
        &a
    ));
    assert!(accepts(
        &asp(AsPathMatch::Contains(65009)),
        "192.0.2.0/24",
        &a
    ));
    assert!(!accepts(
        &asp(AsPathMatch::OriginatedBy(65003)),
        "192.0.2.0/24",
        &a
    ));
    assert!(accepts(
        &asp(AsPathMatch::OriginatedBy(65001)),
        "192.0.2.0/24",
        &a
    ));
    // All of a rule's matches must hold.
    let both = one(FilterRule::new(Reject)
        .cidr(In, net("192.0.2.0/24"))
        .community(c("65000:100")));
    assert!(!accepts(&both, "192.0.2.0/24", &a));
    assert!(accepts(&both, "198.51.100.0/24", &a));
}

#[test]
fn source_remote_peers_tells_learned_routes_from_our_own() {
    let f = vec![BgpFilter {
        name: "no-transit".into(),
        export_v4: vec![FilterRule::new(Reject).source(RouteSource::RemotePeers)],
        ..BgpFilter::default()
    }];
    let a = attrs(&[65001]);
    let p = net("192.0.2.0/24");
    assert!(evaluate(&f, Direction::Export, &p, &a, true).is_some());
    assert!(evaluate(&f, Direction::Export, &p, &a, false).is_none());
}

#[test]
fn first_match_wins_across_filters_and_the_default_is_accept() {
    let a = attrs(&[65001]);
    let filters = vec![
        BgpFilter {
            name: "allow-lab".into(),
            import_v4: vec![FilterRule::new(Accept).cidr(In, net("10.50.0.0/16"))],
            ..BgpFilter::default()
        },
        BgpFilter {
            name: "deny-10".into(),
            import_v4: vec![FilterRule::new(Reject).cidr(In, net("10.0.0.0/8"))],
            ..BgpFilter::default()
        },
    ];
    assert!(accepts(&filters, "10.50.1.0/24", &a));
    let p = net("10.60.0.0/24");
    assert_eq!(
        evaluate(&filters, Direction::Import, &p, &a, true),
        Some(("deny-10", 0))
    );
    assert!(accepts(&filters, "192.0.2.0/24", &a));
    // v4 lists do not apply to v6 routes, nor import lists to export.
    let mut v6 = a.clone();
    v6.next_hop = Some(ip("fd00::2"));
    assert!(evaluate(&filters, Direction::Import, &net("fd50::/64"), &v6, true).is_none());
    assert!(evaluate(&filters, Direction::Export, &p, &a, true).is_none());
}

#[test]
fn filters_read_calico_style_json_and_refuse_what_cannot_work() {
    let f: BgpFilter = serde_json::from_value(serde_json::json!({
        "name": "my-filter",
        "importV4": [
            {"action": "Accept", "matchOperator": "In", "cidr": "55.0.0.0/16",
             "prefixLength": {"min": 30}},
            {"action": "Reject", "matchOperator": "NotIn", "cidr": "44.0.0.0/16"},
            {"action": "Reject", "community": "65000:666"},
            {"action": "Reject", "largeCommunity": "65000:0:666"},
            {"action": "Reject", "asPath": {"originatedBy": 65666}}
        ],
        "exportV6": [{"action": "Reject", "source": "RemotePeers"}]
    }))
    .unwrap();
    assert_eq!(f.validate(), Ok(()));
    assert_eq!(f.import_v4[0].prefix_length.unwrap().min, Some(30));
    assert_eq!(
        f.import_v4[4].as_path,
        Some(AsPathMatch::OriginatedBy(65666))
    );
    let back = serde_json::to_value(&f).unwrap();
    assert_eq!(back["importV4"][2]["community"], "65000:666");
    assert_eq!(back["exportV6"][0]["source"], "RemotePeers");

    let bad = |rule: FilterRule, v6: bool| {
        let mut f = BgpFilter {
            name: "x".into(),
            ..BgpFilter::default()
        };
        if v6 {
            f.import_v6.push(rule);
        } else {
            f.import_v4.push(rule);
        }
        f.validate().unwrap_err()
    };
    let e = bad(FilterRule::new(Reject).cidr(In, net("fd00::/8")), false);
    assert!(
        e.contains("importV4 rule 0") && e.contains("not an IPv4"),
        "{e}"
    );
    let e = bad(
        FilterRule::new(Reject)
            .cidr(In, net("10.0.0.0/8"))
            .prefix_length(Some(25), Some(24)),
        false,
    );
    assert!(e.contains("25..24"), "{e}");
    let e = bad(
        FilterRule::new(Reject)
            .cidr(Equal, net("fd00::/8"))
            .prefix_length(Some(64), None),
        true,
    );
    assert!(e.contains("In or NotIn"), "{e}");
    let mut no_cidr = FilterRule::new(Reject);
    no_cidr.match_operator = Some(In);
    assert!(bad(no_cidr, false).contains("needs a cidr"));
    assert!(serde_json::from_value::<FilterRule>(
        serde_json::json!({"action": "Reject", "community": "70000:1"})
    )
    .is_err());
}

// ---- in the RIB ----

const PEER: &str = "10.0.0.2";
const MESH: &str = "10.0.0.3";

fn peer(addr: &str, remote_as: u32) -> PeerInfo {
    let IpAddr::V4(a) = ip(addr) else {
        unreachable!()
    };
    PeerInfo {
        addr: ip(addr),
        remote_as,
        local_as: 64512,
        router_id: a,
        rr_client: false,
        next_hop_v4: Some(Ipv4Addr::new(10, 0, 0, 1)),
        next_hop_v6: None,
        families: [Afi::Ipv4, Afi::Ipv6].into_iter().collect(),
    }
}

fn rib() -> Rib {
    let mut r = Rib::new(RibConfig::new(Ipv4Addr::new(10, 0, 0, 1)));
    r.peer_up(peer(PEER, 65001));
    r.peer_up(peer(MESH, 64512));
    r
}

fn announce(prefixes: &[&str], a: PathAttrs) -> ParsedUpdate {
    ParsedUpdate {
        announced: prefixes.iter().map(|p| net(p)).collect(),
        attrs: Some(a),
        ..ParsedUpdate::default()
    }
}

#[test]
fn new_import_filters_apply_to_stored_paths_at_once_and_count_apart() {
    let mut r = rib();
    r.update(
        ip(PEER),
        &announce(&["192.0.2.0/24", "198.51.100.0/24"], attrs(&[65001])),
    );
    assert_eq!(r.loc_rib().len(), 2);
    let deny = PeerPolicy {
        filters: import(vec![
            FilterRule::new(Reject).cidr(Equal, net("198.51.100.0/24"))
        ]),
        ..PeerPolicy::default()
    };
    let out = r.set_policy(ip(PEER), deny);
    assert_eq!(out.changes.len(), 1);
    assert_eq!(out.changes[0].prefix, net("198.51.100.0/24"));
    assert_eq!(out.changes[0].route, None);
    // The mesh is told.
    assert_eq!(out.out[&ip(MESH)].withdraw, vec![net("198.51.100.0/24")]);
    let c = r.prefix_counts(&ip(PEER));
    assert_eq!(
        (
            c.received,
            c.accepted,
            c.rejected_by_guard,
            c.rejected_by_filter
        ),
        (2, 1, 0, 1)
    );
    let v = r
        .adj_rib_in(Some(&ip(PEER)))
        .into_iter()
        .find(|e| e.prefix == net("198.51.100.0/24"))
        .unwrap()
        .verdict;
    assert_eq!(
        v,
        Verdict::Rejected(Reason::Filter {
            filter: "f".into(),
            rule: 0
        })
    );
    // Filters removed: back at once.
    let out = r.set_policy(ip(PEER), PeerPolicy::default());
    assert!(out.changes[0].route.is_some());
}

#[test]
fn an_accept_rule_cannot_loosen_the_guard() {
    let mut r = rib();
    r.set_guard(Guard {
        pools: [net("10.244.0.0/16")].into(),
        ..Guard::default()
    });
    r.set_policy(
        ip(PEER),
        PeerPolicy {
            filters: import(vec![FilterRule::new(Accept)]),
            ..PeerPolicy::default()
        },
    );
    let out = r.update(ip(PEER), &announce(&["10.244.1.0/24"], attrs(&[65001])));
    assert!(out.changes.is_empty());
    assert_eq!(r.prefix_counts(&ip(PEER)).rejected_by_guard, 1);
}

#[test]
fn export_filters_and_per_peer_communities_shape_what_a_peer_is_sent() {
    let mut r = rib();
    let pool = CommunitySet {
        standard: vec![Community::new(64512, 1)],
        large: vec![LargeCommunity::new(64512, 0, 1)],
    };
    r.originate_with(net("10.244.1.0/26"), &pool);
    r.update(ip(PEER), &announce(&["192.0.2.0/24"], attrs(&[65001])));
    // The external peer gets only our own routes, tagged for it too.
    let policy = PeerPolicy {
        filters: vec![BgpFilter {
            name: "own-only".into(),
            export_v4: vec![FilterRule::new(Reject).source(RouteSource::RemotePeers)],
            ..BgpFilter::default()
        }],
        export_communities: CommunitySet {
            standard: vec![Community::new(65001, 42), Community::new(64512, 1)],
            large: vec![],
        },
    };
    let out = r.set_policy(ip(PEER), policy);
    assert!(out.out.get(&ip(PEER)).is_none_or(|u| u.withdraw.is_empty()));
    let sent = r.adj_out(&ip(PEER), Afi::Ipv4);
    assert_eq!(sent.announce.len(), 1);
    let (prefix, a) = &sent.announce[0];
    assert_eq!(*prefix, net("10.244.1.0/26"));
    // The pool's communities, then the peer's (one copy of each).
    assert_eq!(
        a.communities,
        vec![Community::new(64512, 1).0, Community::new(65001, 42).0]
    );
    assert_eq!(a.large_communities, vec![LargeCommunity::new(64512, 0, 1)]);
    // The mesh gets both routes; ours with the pool's communities only.
    let mesh = r.adj_out(&ip(MESH), Afi::Ipv4);
    assert_eq!(mesh.announce.len(), 2);
    let own = mesh
        .announce
        .iter()
        .find(|(p, _)| *p == net("10.244.1.0/26"))
        .unwrap();
    assert_eq!(own.1.communities, vec![Community::new(64512, 1).0]);
    // Originating again with other communities re-announces it.
    let out = r.originate_with(net("10.244.1.0/26"), &CommunitySet::default());
    assert_eq!(out.out[&ip(MESH)].announce.len(), 1);
    assert!(out.out[&ip(MESH)].announce[0].1.communities.is_empty());
    assert!(out.changes.is_empty());
    // The same communities again: nothing to send.
    assert!(r
        .originate_with(net("10.244.1.0/26"), &CommunitySet::default())
        .out
        .is_empty());
}

#[test]
fn communities_parse_and_print_as_routers_write_them() {
    assert_eq!("65000:100".parse::<Community>().unwrap().0, 0xfde8_0064);
    assert_eq!(Community(0xfde8_0064).to_string(), "65000:100");
    assert!("65536:1".parse::<Community>().is_err());
    assert!("1:2:3".parse::<Community>().is_err());
    let lc: LargeCommunity = "4200000000:1:2".parse().unwrap();
    assert_eq!(lc, LargeCommunity::new(4_200_000_000, 1, 2));
    assert_eq!(lc.to_string(), "4200000000:1:2");
    assert!("1:2".parse::<LargeCommunity>().is_err());
}
