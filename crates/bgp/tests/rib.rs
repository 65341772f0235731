//! RIB tests: the decision process step by step, export rules (iBGP split
//! horizon, route reflection, eBGP next-hop-self and prepend), local
//! prefixes, the change feed, and graceful-restart stale routes.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use ipnet::IpNet;
use plexus_bgp::attrs::{AsSegment, Origin, PathAttrs};
use plexus_bgp::codec::{Afi, ParsedUpdate};
use plexus_bgp::policy::{Reason, Verdict};
use plexus_bgp::rib::{PeerInfo, Rib, RibConfig, RibOutput};

const LOCAL_AS: u32 = 64512;
const ME: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn rib() -> Rib {
    Rib::new(RibConfig::new(ME))
}

/// A peer at 10.0.0.N with router ID N.N.N.N.
fn peer(n: u8, remote_as: u32, rr_client: bool) -> PeerInfo {
    PeerInfo {
        addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, n)),
        remote_as,
        local_as: LOCAL_AS,
        router_id: Ipv4Addr::new(n, n, n, n),
        rr_client,
        next_hop_v4: Some(ME),
        next_hop_v6: Some("fd00::1".parse().unwrap()),
        families: [Afi::Ipv4, Afi::Ipv6].into_iter().collect::<BTreeSet<_>>(),
    }
}

fn path(asns: &[u32], nh: &str) -> PathAttrs {
    PathAttrs {
        as_path: if asns.is_empty() {
            vec![]
        } else {
            vec![AsSegment {
                set: false,
                asns: asns.to_vec(),
            }]
        },
        next_hop: Some(ip(nh)),
        ..PathAttrs::local()
    }
}

fn announce(prefix: &str, attrs: PathAttrs) -> ParsedUpdate {
    ParsedUpdate {
        announced: vec![net(prefix)],
        attrs: Some(attrs),
        ..ParsedUpdate::default()
    }
}

fn withdraw(prefix: &str) -> ParsedUpdate {
    ParsedUpdate {
        withdrawn: vec![net(prefix)],
        ..ParsedUpdate::default()
    }
}

fn best_peer(rib: &Rib, prefix: &str) -> Option<IpAddr> {
    rib.loc_rib()
        .into_iter()
        .find(|e| e.prefix == net(prefix))
        .and_then(|e| e.peer)
}

/// Which of two paths wins, each from its own peer.
fn winner(a: (PeerInfo, PathAttrs), b: (PeerInfo, PathAttrs)) -> IpAddr {
    // Try both arrival orders: the result must not depend on it.
    let mut results = Vec::new();
    for (first, second) in [(&a, &b), (&b, &a)] {
        let mut r = rib();
        r.peer_up(first.0.clone());
        r.peer_up(second.0.clone());
        r.update(first.0.addr, &announce("10.9.0.0/24", first.1.clone()));
        r.update(second.0.addr, &announce("10.9.0.0/24", second.1.clone()));
        results.push(best_peer(&r, "10.9.0.0/24").unwrap());
    }
    assert_eq!(results[0], results[1], "order-dependent decision");
    results[0]
}

#[test]
fn decision_local_pref_first_for_ibgp() {
    let mut lp = path(&[65001, 65002, 65003], "10.0.0.2");
    lp.local_pref = Some(200);
    let short = path(&[65001], "10.0.0.3");
    assert_eq!(
        winner(
            (peer(2, LOCAL_AS, false), lp),
            (peer(3, LOCAL_AS, false), short)
        ),
        ip("10.0.0.2")
    );
}

#[test]
fn decision_shorter_as_path() {
    assert_eq!(
        winner(
            (peer(2, 65001, false), path(&[65001, 65005], "10.0.0.2")),
            (peer(3, 65002, false), path(&[65002], "10.0.0.3"))
        ),
        ip("10.0.0.3")
    );
    // An AS_SET counts as one.
    let mut set = path(&[65001], "10.0.0.2");
    set.as_path.push(AsSegment {
        set: true,
        asns: vec![1, 2, 3],
    });
    assert_eq!(
        winner(
            (peer(2, 65001, false), set),
            (peer(3, 65002, false), path(&[65002, 7, 8], "10.0.0.3"))
        ),
        ip("10.0.0.2")
    );
}

#[test]
fn decision_lower_origin() {
    let mut inc = path(&[65001], "10.0.0.2");
    inc.origin = Origin::Incomplete;
    let mut egp = path(&[65002], "10.0.0.3");
    egp.origin = Origin::Egp;
    assert_eq!(
        winner((peer(2, 65001, false), inc), (peer(3, 65002, false), egp)),
        ip("10.0.0.3")
    );
}

#[test]
fn decision_med_only_within_the_same_neighbour_as() {
    let mut high = path(&[65001], "10.0.0.2");
    high.med = Some(100);
    let mut low = path(&[65001], "10.0.0.3");
    low.med = Some(10);
    // Same neighbour AS: lower MED wins even with the higher router ID.
    assert_eq!(
        winner(
            (peer(2, 65001, false), high.clone()),
            (peer(3, 65001, false), low.clone())
        ),
        ip("10.0.0.3")
    );
    // Different neighbour AS: MED ignored, the lower router ID wins.
    let mut other = path(&[65009], "10.0.0.3");
    other.med = Some(10);
    assert_eq!(
        winner(
            (peer(2, 65001, false), high),
            (peer(3, 65009, false), other)
        ),
        ip("10.0.0.2")
    );
}

#[test]
fn decision_ebgp_over_ibgp() {
    // Same length, origin, no MED: the eBGP path wins although the iBGP
    // peer has the lower router ID.
    assert_eq!(
        winner(
            (peer(2, LOCAL_AS, false), path(&[65001], "10.0.0.2")),
            (peer(3, 65001, false), path(&[65001], "10.0.0.3"))
        ),
        ip("10.0.0.3")
    );
}

#[test]
fn decision_lowest_router_id_then_originator_id() {
    assert_eq!(
        winner(
            (peer(5, 65001, false), path(&[65001], "10.0.0.5")),
            (peer(4, 65002, false), path(&[65002], "10.0.0.4"))
        ),
        ip("10.0.0.4")
    );
    // A reflected route is compared by its ORIGINATOR_ID.
    let mut reflected = path(&[], "10.0.0.7");
    reflected.originator_id = Some(Ipv4Addr::new(9, 9, 9, 9));
    assert_eq!(
        winner(
            (peer(2, LOCAL_AS, false), reflected),
            (peer(3, LOCAL_AS, false), path(&[], "10.0.0.3"))
        ),
        ip("10.0.0.3")
    );
}

#[test]
fn decision_lowest_peer_address_last() {
    let mut a = peer(2, 65001, false);
    let mut b = peer(3, 65001, false);
    // Same router ID (one router, two sessions).
    a.router_id = Ipv4Addr::new(7, 7, 7, 7);
    b.router_id = Ipv4Addr::new(7, 7, 7, 7);
    assert_eq!(
        winner(
            (b, path(&[65001], "10.0.0.3")),
            (a, path(&[65001], "10.0.0.2"))
        ),
        ip("10.0.0.2")
    );
}

fn sent_to(out: &RibOutput, to: u8) -> Vec<(IpNet, Arc<PathAttrs>)> {
    out.out
        .get(&IpAddr::V4(Ipv4Addr::new(10, 0, 0, to)))
        .map(|u| u.announce.clone())
        .unwrap_or_default()
}

#[test]
fn local_prefix_goes_to_ibgp_with_local_pref_and_to_ebgp_prepended_with_next_hop_self() {
    let mut r = rib();
    r.peer_up(peer(2, LOCAL_AS, false));
    r.peer_up(peer(3, 65001, false));
    let out = r.originate(net("10.244.1.0/26"));
    // Nothing to install for our own block.
    assert!(out.changes.is_empty());
    let to_ibgp = sent_to(&out, 2);
    assert_eq!(to_ibgp.len(), 1);
    assert_eq!(to_ibgp[0].1.local_pref, Some(100));
    assert_eq!(to_ibgp[0].1.next_hop, Some(IpAddr::V4(ME)));
    assert!(to_ibgp[0].1.as_path.is_empty());
    let to_ebgp = sent_to(&out, 3);
    assert_eq!(to_ebgp[0].1.as_path_len(), 1);
    assert_eq!(to_ebgp[0].1.neighbour_as(), Some(LOCAL_AS));
    assert_eq!(to_ebgp[0].1.local_pref, None);
    // A peer that comes up later gets it too; a withdrawal reaches both.
    let out = r.peer_up(peer(4, LOCAL_AS, false));
    assert_eq!(sent_to(&out, 4).len(), 1);
    let out = r.withdraw_local(net("10.244.1.0/26"));
    assert_eq!(out.out.len(), 3);
    assert!(out
        .out
        .values()
        .all(|u| u.withdraw == vec![net("10.244.1.0/26")]));
}

#[test]
fn ebgp_routes_feed_the_routing_component_and_reach_the_mesh_with_next_hop_self() {
    let mut r = rib();
    r.peer_up(peer(2, LOCAL_AS, false));
    r.peer_up(peer(3, 65001, false));
    let mut a = path(&[65001], "10.0.0.3");
    a.med = Some(5);
    let out = r.update(ip("10.0.0.3"), &announce("192.168.0.0/16", a));
    assert_eq!(out.changes.len(), 1);
    let route = out.changes[0].route.as_ref().unwrap();
    assert_eq!(route.next_hop, ip("10.0.0.3"));
    assert_eq!(route.peer, ip("10.0.0.3"));
    let to_mesh = sent_to(&out, 2);
    assert_eq!(to_mesh[0].1.next_hop, Some(IpAddr::V4(ME)));
    assert_eq!(to_mesh[0].1.local_pref, Some(100));
    // Not sent back to the peer it came from.
    assert!(sent_to(&out, 3).is_empty());
    // Withdrawn: the feed says remove.
    let out = r.update(ip("10.0.0.3"), &withdraw("192.168.0.0/16"));
    assert_eq!(out.changes[0].route, None);
    assert_eq!(
        out.out[&ip("10.0.0.2")].withdraw,
        vec![net("192.168.0.0/16")]
    );
}

#[test]
fn ebgp_export_drops_a_foreign_med_and_loops_are_refused() {
    let mut r = rib();
    r.peer_up(peer(3, 65001, false));
    r.peer_up(peer(4, 65002, false));
    let mut a = path(&[65001], "10.0.0.3");
    a.med = Some(5);
    let out = r.update(ip("10.0.0.3"), &announce("192.168.0.0/16", a));
    let to4 = sent_to(&out, 4);
    assert_eq!(to4[0].1.med, None);
    assert_eq!(to4[0].1.as_path[0].asns, vec![LOCAL_AS, 65001]);
    // A path that already holds our AS is a loop: kept, rejected.
    let out = r.update(
        ip("10.0.0.4"),
        &announce("172.16.0.0/12", path(&[65002, LOCAL_AS], "10.0.0.4")),
    );
    assert!(out.changes.is_empty() && out.out.is_empty());
    let c = r.prefix_counts(&ip("10.0.0.4"));
    assert_eq!((c.received, c.accepted, c.rejected_by_guard), (1, 0, 1));
    assert_eq!(
        r.adj_rib_in(Some(&ip("10.0.0.4")))[0].verdict,
        Verdict::Rejected(Reason::AsPathLoop { asn: LOCAL_AS })
    );
}

#[test]
fn ibgp_learned_routes_are_not_sent_to_ibgp_peers_without_reflection() {
    let mut r = rib();
    r.peer_up(peer(2, LOCAL_AS, false));
    r.peer_up(peer(3, LOCAL_AS, false));
    r.peer_up(peer(4, 65001, false));
    let out = r.update(
        ip("10.0.0.2"),
        &announce("10.244.2.0/26", path(&[], "10.0.0.2")),
    );
    assert_eq!(out.changes.len(), 1);
    assert!(sent_to(&out, 3).is_empty());
    // eBGP peers get it, from us.
    let to_ebgp = sent_to(&out, 4);
    assert_eq!(to_ebgp[0].1.next_hop, Some(IpAddr::V4(ME)));
}

#[test]
fn route_reflector_reflects_client_routes_to_all_and_others_to_clients() {
    let mut r = rib();
    r.peer_up(peer(2, LOCAL_AS, true)); // client
    r.peer_up(peer(3, LOCAL_AS, true)); // client
    r.peer_up(peer(4, LOCAL_AS, false)); // non-client
    r.peer_up(peer(5, LOCAL_AS, false)); // non-client
                                         // From a client: to the other client and to non-clients.
    let out = r.update(
        ip("10.0.0.2"),
        &announce("10.244.2.0/26", path(&[], "10.0.0.2")),
    );
    for to in [3, 4, 5] {
        let s = sent_to(&out, to);
        assert_eq!(s.len(), 1, "to 10.0.0.{to}");
        assert_eq!(s[0].1.originator_id, Some(Ipv4Addr::new(2, 2, 2, 2)));
        assert_eq!(s[0].1.cluster_list, vec![ME]);
        // Reflection keeps the next hop.
        assert_eq!(s[0].1.next_hop, Some(ip("10.0.0.2")));
    }
    assert!(sent_to(&out, 2).is_empty());
    // From a non-client: to clients only.
    let out = r.update(
        ip("10.0.0.4"),
        &announce("10.244.4.0/26", path(&[], "10.0.0.4")),
    );
    assert_eq!(sent_to(&out, 2).len(), 1);
    assert_eq!(sent_to(&out, 3).len(), 1);
    assert!(sent_to(&out, 5).is_empty());
}

#[test]
fn a_new_cluster_id_goes_on_what_is_reflected_from_then_on() {
    let mut r = rib();
    r.peer_up(peer(2, LOCAL_AS, true));
    r.peer_up(peer(3, LOCAL_AS, true));
    let id = Ipv4Addr::new(1, 0, 0, 9);
    r.set_cluster_id(Some(id));
    let out = r.update(
        ip("10.0.0.2"),
        &announce("10.244.2.0/26", path(&[], "10.0.0.2")),
    );
    assert_eq!(sent_to(&out, 3)[0].1.cluster_list, vec![id]);
    // A path carrying the new id is a loop now; the router ID is not.
    let mut looped = path(&[], "10.0.0.2");
    looped.cluster_list = vec![id];
    assert!(r
        .update(ip("10.0.0.2"), &announce("10.2.0.0/24", looped))
        .changes
        .is_empty());
}

#[test]
fn reflection_loops_are_refused() {
    let mut r = rib();
    r.peer_up(peer(2, LOCAL_AS, true));
    let mut own = path(&[], "10.0.0.2");
    own.originator_id = Some(ME);
    assert!(r
        .update(ip("10.0.0.2"), &announce("10.1.0.0/24", own))
        .changes
        .is_empty());
    let mut looped = path(&[], "10.0.0.2");
    looped.cluster_list = vec![Ipv4Addr::new(3, 3, 3, 3), ME];
    assert!(r
        .update(ip("10.0.0.2"), &announce("10.2.0.0/24", looped))
        .changes
        .is_empty());
    let verdicts: Vec<Verdict> = r.adj_rib_in(None).into_iter().map(|e| e.verdict).collect();
    assert_eq!(
        verdicts,
        vec![
            Verdict::Rejected(Reason::OriginatorLoop),
            Verdict::Rejected(Reason::ClusterLoop)
        ]
    );
    assert_eq!(r.prefix_counts(&ip("10.0.0.2")).accepted, 0);
}

#[test]
fn our_own_block_beats_a_learned_copy() {
    let mut r = rib();
    r.peer_up(peer(2, LOCAL_AS, false));
    r.update(
        ip("10.0.0.2"),
        &announce("10.244.1.0/26", path(&[], "10.0.0.2")),
    );
    assert_eq!(best_peer(&r, "10.244.1.0/26"), Some(ip("10.0.0.2")));
    let out = r.originate(net("10.244.1.0/26"));
    // The learned route is no longer best: the feed says remove it.
    assert_eq!(out.changes.len(), 1);
    assert_eq!(out.changes[0].route, None);
    assert_eq!(best_peer(&r, "10.244.1.0/26"), None);
}

#[test]
fn ipv6_prefixes_go_only_where_a_v6_next_hop_exists() {
    let mut r = rib();
    let mut no_v6 = peer(2, LOCAL_AS, false);
    no_v6.next_hop_v6 = None;
    r.peer_up(no_v6);
    r.peer_up(peer(3, LOCAL_AS, false));
    let out = r.originate(net("fd00:10::/64"));
    assert!(sent_to(&out, 2).is_empty());
    assert_eq!(sent_to(&out, 3)[0].1.next_hop, Some(ip("fd00::1")));
}

#[test]
fn session_loss_withdraws_and_failover_picks_the_next_best() {
    let mut r = rib();
    r.peer_up(peer(2, 65001, false));
    r.peer_up(peer(3, 65002, false));
    r.update(
        ip("10.0.0.2"),
        &announce("192.168.0.0/16", path(&[65001], "10.0.0.2")),
    );
    r.update(
        ip("10.0.0.3"),
        &announce("192.168.0.0/16", path(&[65002, 65001], "10.0.0.3")),
    );
    assert_eq!(best_peer(&r, "192.168.0.0/16"), Some(ip("10.0.0.2")));
    let out = r.peer_down(ip("10.0.0.2"), false);
    assert_eq!(out.changes[0].route.as_ref().unwrap().peer, ip("10.0.0.3"));
    let out = r.peer_down(ip("10.0.0.3"), false);
    assert_eq!(out.changes[0].route, None);
}

#[test]
fn graceful_down_keeps_routes_stale_until_purged_or_refreshed() {
    let mut r = rib();
    r.peer_up(peer(2, 65001, false));
    r.update(
        ip("10.0.0.2"),
        &announce("192.168.0.0/16", path(&[65001], "10.0.0.2")),
    );
    r.update(
        ip("10.0.0.2"),
        &announce("fd00:99::/64", path(&[65001], "fd00::2")),
    );
    r.update(
        ip("10.0.0.2"),
        &announce("172.16.0.0/12", path(&[65001], "10.0.0.2")),
    );
    let out = r.peer_down(ip("10.0.0.2"), true);
    assert!(out.changes.is_empty(), "stale routes stay installed");
    assert_eq!(
        r.is_stale(&ip("10.0.0.2"), &net("192.168.0.0/16")),
        Some(true)
    );
    // Back again; one route re-announced, so no longer stale.
    r.peer_up(peer(2, 65001, false));
    r.update(
        ip("10.0.0.2"),
        &announce("192.168.0.0/16", path(&[65001], "10.0.0.2")),
    );
    assert_eq!(
        r.is_stale(&ip("10.0.0.2"), &net("192.168.0.0/16")),
        Some(false)
    );
    // End-of-RIB for IPv4: the IPv4 route not re-announced goes.
    let out = r.purge_stale(ip("10.0.0.2"), Some(Afi::Ipv4));
    assert_eq!(out.changes.len(), 1);
    assert_eq!(out.changes[0].prefix, net("172.16.0.0/12"));
    assert_eq!(out.changes[0].route, None);
    assert_eq!(
        r.is_stale(&ip("10.0.0.2"), &net("fd00:99::/64")),
        Some(true)
    );
    let out = r.purge_stale(ip("10.0.0.2"), None);
    assert_eq!(out.changes[0].prefix, net("fd00:99::/64"));
    assert_eq!(best_peer(&r, "192.168.0.0/16"), Some(ip("10.0.0.2")));
}

#[test]
fn adj_out_is_diffed_so_an_unchanged_best_sends_nothing() {
    let mut r = rib();
    r.peer_up(peer(2, 65001, false));
    r.peer_up(peer(3, LOCAL_AS, false));
    let a = path(&[65001], "10.0.0.2");
    let out = r.update(ip("10.0.0.2"), &announce("192.168.0.0/16", a.clone()));
    assert_eq!(sent_to(&out, 3).len(), 1);
    let out = r.update(ip("10.0.0.2"), &announce("192.168.0.0/16", a));
    assert!(out.out.is_empty() && out.changes.is_empty());
    assert_eq!(r.counts(&ip("10.0.0.3")), (0, 1));
}

#[test]
fn equal_exported_attributes_are_held_once() {
    // Ten eBGP peers of one AS, each announcing 50 prefixes with one path:
    // every peer gets the other peers' 450 routes, with attributes that
    // differ only by the source's path, so ten attribute sets in all.
    let mut r = rib();
    for n in 2..12u8 {
        r.peer_up(peer(n, 65000, false));
    }
    for n in 2..12u8 {
        let prefixes: Vec<IpNet> = (0..50u32)
            .map(|i| net(&format!("172.{}.{}.0/24", 16 + n, i)))
            .collect();
        let from = format!("10.0.0.{n}");
        let u = ParsedUpdate {
            announced: prefixes,
            attrs: Some(path(&[65000 + u32::from(n)], &from)),
            ..ParsedUpdate::default()
        };
        let out = r.update(ip(&from), &u);
        // The same Arc for every prefix sent to one peer.
        let s = sent_to(&out, if n == 2 { 3 } else { 2 });
        assert_eq!(s.len(), 50);
        assert!(s.iter().all(|(_, a)| Arc::ptr_eq(a, &s[0].1)));
    }
    assert_eq!(r.counts(&ip("10.0.0.2")).1, 450);
    assert_eq!(r.exported_attr_sets(), 10);
}
