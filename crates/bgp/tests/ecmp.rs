//! ECMP: paths equal up to the router-ID / peer-address tie breakers share
//! one best route, whose next-hop set the change feed carries (sorted, no
//! duplicates, at most `max_paths`); only the best path is exported.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use plexus_bgp::attrs::{AsSegment, Origin, PathAttrs};
use plexus_bgp::codec::{Afi, ParsedUpdate};
use plexus_bgp::rib::{PeerInfo, Rib, RibConfig, RibOutput};

const ME: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const P: &str = "192.0.2.0/24";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn rib(max_paths: usize) -> Rib {
    let mut r = Rib::new(RibConfig {
        max_paths,
        ..RibConfig::new(ME)
    });
    // Peers 10.0.0.2..=5 (eBGP, AS 65000+n) and 10.0.0.9 (iBGP).
    for n in 2..=5u8 {
        r.peer_up(peer(n, 65000 + u32::from(n)));
    }
    r.peer_up(peer(9, 64512));
    r
}

/// Router ID n.n.n.n: a lower n wins the tie break.
fn peer(n: u8, remote_as: u32) -> PeerInfo {
    PeerInfo {
        addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, n)),
        remote_as,
        local_as: 64512,
        router_id: Ipv4Addr::new(n, n, n, n),
        rr_client: false,
        next_hop_v4: Some(ME),
        next_hop_v6: None,
        families: [Afi::Ipv4].into_iter().collect(),
    }
}

fn path(asns: &[u32], nh: &str) -> PathAttrs {
    PathAttrs {
        as_path: vec![AsSegment {
            set: false,
            asns: asns.to_vec(),
        }],
        next_hop: Some(ip(nh)),
        ..PathAttrs::local()
    }
}

fn from(r: &mut Rib, n: u8, attrs: PathAttrs) -> RibOutput {
    r.update(
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, n)),
        &ParsedUpdate {
            announced: vec![net(P)],
            attrs: Some(attrs),
            ..ParsedUpdate::default()
        },
    )
}

fn gone(r: &mut Rib, n: u8) -> RibOutput {
    r.update(
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, n)),
        &ParsedUpdate {
            withdrawn: vec![net(P)],
            ..ParsedUpdate::default()
        },
    )
}

/// The next hops of the last change for P in `out`.
fn hops(out: &RibOutput) -> Option<Vec<IpAddr>> {
    out.changes
        .iter()
        .rev()
        .find(|c| c.prefix == net(P))
        .and_then(|c| c.route.as_ref().map(|b| b.next_hops.clone()))
}

#[test]
fn one_path_by_default() {
    let mut r = rib(1);
    from(&mut r, 3, path(&[65003], "10.0.0.3"));
    let out = from(&mut r, 2, path(&[65002], "10.0.0.2"));
    let best = out.changes[0].route.as_ref().unwrap();
    assert_eq!(
        (best.next_hop, &best.next_hops),
        (ip("10.0.0.2"), &vec![ip("10.0.0.2")])
    );
}

#[test]
fn equal_paths_from_several_peers_share_the_route() {
    let mut r = rib(4);
    from(&mut r, 4, path(&[65004], "10.0.0.4"));
    let out = from(&mut r, 2, path(&[65002], "10.0.0.2"));
    assert_eq!(hops(&out), Some(vec![ip("10.0.0.2"), ip("10.0.0.4")]));
    let best = out.changes[0].route.as_ref().unwrap();
    // The tie breaker still names the best path (lowest router ID).
    assert_eq!((best.next_hop, best.peer), (ip("10.0.0.2"), ip("10.0.0.2")));
    let entries = r.adj_rib_in(None);
    assert!(entries.iter().all(|e| e.multipath));
    assert_eq!(entries.iter().filter(|e| e.best).count(), 1);
    // Only the best is exported; a third equal path changes the feed but
    // sends nobody anything.
    let out = from(&mut r, 5, path(&[65005], "10.0.0.5"));
    assert_eq!(
        hops(&out),
        Some(vec![ip("10.0.0.2"), ip("10.0.0.4"), ip("10.0.0.5")])
    );
    assert!(out.out.is_empty(), "{:?}", out.out);
}

#[test]
fn at_most_max_paths_the_best_by_tie_breaker() {
    let mut r = rib(2);
    for n in [5, 3, 4] {
        from(
            &mut r,
            n,
            path(&[65000 + u32::from(n)], &format!("10.0.0.{n}")),
        );
    }
    let b = r.loc_rib();
    assert_eq!(b[0].peer, Some(ip("10.0.0.3")));
    let entries = r.adj_rib_in(None);
    let used: Vec<IpAddr> = entries
        .iter()
        .filter(|e| e.multipath)
        .map(|e| e.peer)
        .collect();
    assert_eq!(used, vec![ip("10.0.0.3"), ip("10.0.0.4")]);
    // The best goes: the next two share it.
    let out = gone(&mut r, 3);
    assert_eq!(hops(&out), Some(vec![ip("10.0.0.4"), ip("10.0.0.5")]));
}

#[test]
fn only_equally_preferred_paths_join() {
    let mut r = rib(8);
    from(&mut r, 2, path(&[65002], "10.0.0.2"));
    // Longer AS path, worse origin, iBGP: not equal.
    from(&mut r, 3, path(&[65003, 65100], "10.0.0.3"));
    let mut inc = path(&[65004], "10.0.0.4");
    inc.origin = Origin::Incomplete;
    from(&mut r, 4, inc);
    let out = from(&mut r, 9, path(&[65009], "10.0.0.9"));
    assert!(out.changes.is_empty());
    assert_eq!(r.adj_rib_in(None).iter().filter(|e| e.multipath).count(), 1);
    // A MED counts between paths from the same neighbouring AS only: two
    // peers of AS 65010, the higher MED stays out; another AS's joins.
    let mut r = rib(8);
    let mut a = path(&[65010], "10.0.0.2");
    a.med = Some(10);
    let mut b = path(&[65010], "10.0.0.3");
    b.med = Some(20);
    let mut c = path(&[65011], "10.0.0.4");
    c.med = Some(50);
    from(&mut r, 2, a);
    from(&mut r, 3, b);
    let out = from(&mut r, 4, c);
    assert_eq!(hops(&out), Some(vec![ip("10.0.0.2"), ip("10.0.0.4")]));
}

#[test]
fn next_hops_are_sorted_and_unique() {
    let mut r = rib(4);
    // Two route servers announcing one third-party next hop, and another.
    from(&mut r, 3, path(&[65003], "10.0.0.7"));
    from(&mut r, 2, path(&[65002], "10.0.0.7"));
    let out = from(&mut r, 4, path(&[65004], "10.0.0.6"));
    assert_eq!(hops(&out), Some(vec![ip("10.0.0.6"), ip("10.0.0.7")]));
    // Losing a path whose next hop another still has changes nothing.
    let out = gone(&mut r, 3);
    assert!(out.changes.is_empty());
}

#[test]
fn our_own_prefix_still_wins_alone() {
    let mut r = rib(4);
    from(&mut r, 2, path(&[65002], "10.0.0.2"));
    from(&mut r, 3, path(&[65003], "10.0.0.3"));
    let out = r.originate(net(P));
    assert_eq!(out.changes.len(), 1);
    assert_eq!(out.changes[0].route, None);
    assert!(r.adj_rib_in(None).iter().all(|e| !e.multipath));
}
