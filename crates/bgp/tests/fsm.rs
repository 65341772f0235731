//! FSM unit tests on virtual time: a harness keeps the timers the FSM asks
//! for and fires them as the test advances its clock.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use netgauze_bgp_pkt::capabilities::{
    BgpCapability, FourOctetAsCapability, GracefulRestartAddressFamily, GracefulRestartCapability,
    MultiProtocolExtensionsCapability,
};
use netgauze_bgp_pkt::iana::AS_TRANS;
use netgauze_bgp_pkt::open::{BgpOpenMessage, BgpOpenMessageParameter};
use netgauze_bgp_pkt::BgpMessage;
use netgauze_iana::address_family::AddressType;
use plexus_bgp::codec::{self, Afi};
use plexus_bgp::fsm::{
    Action, ConnId, Direction, Event, Fsm, FsmConfig, GracefulRestart, State, Timer,
};

const LOCAL_ID: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

struct Harness {
    fsm: Fsm,
    now: u64,
    timers: HashMap<Timer, u64>,
    log: Vec<Action>,
}

impl Harness {
    fn new(cfg: FsmConfig) -> Harness {
        Harness {
            fsm: Fsm::new(cfg),
            now: 0,
            timers: HashMap::new(),
            log: Vec::new(),
        }
    }

    fn ev(&mut self, e: Event) -> Vec<Action> {
        let actions = self.fsm.handle(e);
        for a in &actions {
            match a {
                Action::StartTimer(t, s) => {
                    self.timers.insert(*t, self.now + u64::from(*s));
                }
                Action::StopTimer(t) => {
                    self.timers.remove(t);
                }
                _ => {}
            }
        }
        self.log.extend(actions.iter().cloned());
        actions
    }

    /// Move the clock, firing due timers in order.
    fn advance(&mut self, secs: u64) -> Vec<Action> {
        let end = self.now + secs;
        let mut all = Vec::new();
        loop {
            let next = self
                .timers
                .iter()
                .filter(|(_, at)| **at <= end)
                .min_by_key(|(_, at)| **at)
                .map(|(t, at)| (*t, *at));
            let Some((t, at)) = next else { break };
            self.timers.remove(&t);
            self.now = at;
            all.extend(self.ev(Event::Timer(t)));
        }
        self.now = end;
        all
    }

    /// Bring connection 1 (outgoing) to Established with a standard OPEN.
    fn establish(&mut self, open: BgpOpenMessage) {
        self.ev(Event::Start);
        self.ev(Event::Connected {
            conn: 1,
            dir: Direction::Outgoing,
        });
        self.ev(Event::Message(1, BgpMessage::Open(open)));
        self.ev(Event::Message(1, BgpMessage::KeepAlive));
        assert_eq!(self.fsm.state(), State::Established);
    }
}

fn cfg() -> FsmConfig {
    FsmConfig {
        local_as: 65001,
        remote_as: 65002,
        router_id: LOCAL_ID,
        hold_time: 90,
        connect_retry: 30,
        passive: false,
        graceful_restart: None,
        max_stale_time: None,
    }
}

fn caps(asn: u32, gr: Option<(u16, bool, bool)>) -> Vec<BgpCapability> {
    let mut c = vec![
        BgpCapability::MultiProtocolExtensions(MultiProtocolExtensionsCapability::new(
            AddressType::Ipv4Unicast,
        )),
        BgpCapability::MultiProtocolExtensions(MultiProtocolExtensionsCapability::new(
            AddressType::Ipv6Unicast,
        )),
        BgpCapability::RouteRefresh,
        BgpCapability::FourOctetAs(FourOctetAsCapability::new(asn)),
    ];
    if let Some((time, restarting, fwd)) = gr {
        c.push(BgpCapability::GracefulRestartCapability(
            GracefulRestartCapability::new(
                restarting,
                false,
                time,
                vec![
                    GracefulRestartAddressFamily::new(fwd, AddressType::Ipv4Unicast),
                    GracefulRestartAddressFamily::new(fwd, AddressType::Ipv6Unicast),
                ],
            ),
        ));
    }
    c
}

fn open(asn: u32, hold: u16, id: [u8; 4]) -> BgpOpenMessage {
    open_gr(asn, hold, id, None)
}

fn open_gr(asn: u32, hold: u16, id: [u8; 4], gr: Option<(u16, bool, bool)>) -> BgpOpenMessage {
    BgpOpenMessage::new(
        u16::try_from(asn).unwrap_or(AS_TRANS),
        hold,
        Ipv4Addr::from(id),
        vec![BgpOpenMessageParameter::new_capabilities(caps(asn, gr))],
    )
}

fn sent(actions: &[Action]) -> Vec<(ConnId, BgpMessage)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(c, m) => Some((*c, m.clone())),
            _ => None,
        })
        .collect()
}

fn notifications(actions: &[Action]) -> Vec<(ConnId, (u8, u8))> {
    sent(actions)
        .into_iter()
        .filter_map(|(c, m)| match m {
            BgpMessage::Notification(n) => Some((c, codec::notification_code(&n))),
            _ => None,
        })
        .collect()
}

fn closed(actions: &[Action]) -> Vec<ConnId> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Close(c) => Some(*c),
            _ => None,
        })
        .collect()
}

#[test]
fn active_open_walks_every_state_to_established() {
    let mut h = Harness::new(cfg());
    assert_eq!(h.fsm.state(), State::Idle);
    let a = h.ev(Event::Start);
    assert!(a.contains(&Action::Connect));
    assert_eq!(h.fsm.state(), State::Connect);
    let a = h.ev(Event::Connected {
        conn: 1,
        dir: Direction::Outgoing,
    });
    assert_eq!(h.fsm.state(), State::OpenSent);
    let s = sent(&a);
    let BgpMessage::Open(ours) = &s[0].1 else {
        panic!("first message is not an OPEN: {s:?}")
    };
    assert_eq!(ours.my_as(), 65001);
    assert_eq!(ours.hold_time(), 90);
    assert!(!h.timers.contains_key(&Timer::ConnectRetry));
    let a = h.ev(Event::Message(
        1,
        BgpMessage::Open(open(65002, 30, [10, 0, 0, 2])),
    ));
    assert_eq!(h.fsm.state(), State::OpenConfirm);
    assert_eq!(sent(&a), vec![(1, BgpMessage::KeepAlive)]);
    let a = h.ev(Event::Message(1, BgpMessage::KeepAlive));
    assert_eq!(h.fsm.state(), State::Established);
    let up = a.iter().find_map(|a| match a {
        Action::Up(1, n) => Some(n.clone()),
        _ => None,
    });
    let neg = up.expect("Up action");
    // Hold time is the smaller offer; keepalive a third of it.
    assert_eq!((neg.hold_time, neg.keepalive), (30, 10));
    assert!(neg.asn4 && neg.route_refresh);
    assert_eq!(neg.families.len(), 2);
}

#[test]
fn connect_failure_goes_active_and_connect_retry_tries_again() {
    let mut h = Harness::new(cfg());
    h.ev(Event::Start);
    h.ev(Event::ConnectFailed);
    assert_eq!(h.fsm.state(), State::Active);
    let a = h.advance(29);
    assert!(a.is_empty());
    let a = h.advance(1);
    assert!(a.contains(&Action::Connect));
    assert_eq!(h.fsm.state(), State::Connect);
}

#[test]
fn passive_peer_never_connects_and_accepts_incoming() {
    let mut h = Harness::new(FsmConfig {
        passive: true,
        ..cfg()
    });
    let a = h.ev(Event::Start);
    assert!(!a.contains(&Action::Connect));
    assert_eq!(h.fsm.state(), State::Active);
    assert!(h.advance(1000).is_empty());
    h.ev(Event::Connected {
        conn: 7,
        dir: Direction::Incoming,
    });
    h.ev(Event::Message(
        7,
        BgpMessage::Open(open(65002, 90, [10, 0, 0, 2])),
    ));
    h.ev(Event::Message(7, BgpMessage::KeepAlive));
    assert_eq!(h.fsm.state(), State::Established);
}

#[test]
fn keepalives_every_third_of_hold_time_and_hold_expiry_sends_notification() {
    let mut h = Harness::new(cfg());
    h.establish(open(65002, 9, [10, 0, 0, 2]));
    // Keepalive every 3 s; the peer is silent.
    let a = h.advance(8);
    let kas = sent(&a)
        .iter()
        .filter(|(_, m)| *m == BgpMessage::KeepAlive)
        .count();
    assert_eq!(kas, 2);
    assert_eq!(h.fsm.state(), State::Established);
    // A keepalive from the peer restarts the hold timer.
    h.ev(Event::Message(1, BgpMessage::KeepAlive));
    h.advance(8);
    assert_eq!(h.fsm.state(), State::Established);
    let a = h.advance(1);
    assert_eq!(notifications(&a), vec![(1, (4, 0))]);
    assert_eq!(closed(&a), vec![1]);
    assert!(a.contains(&Action::Down {
        graceful: false,
        reason: "hold timer expired".into()
    }));
    assert_eq!(h.fsm.state(), State::Active);
    // ...and the FSM reconnects after ConnectRetry.
    assert!(h.advance(30).contains(&Action::Connect));
}

#[test]
fn hold_time_zero_means_no_keepalives_and_no_hold_timer() {
    let mut h = Harness::new(cfg());
    h.establish(open(65002, 0, [10, 0, 0, 2]));
    let a = h.advance(100_000);
    assert!(sent(&a).is_empty(), "{a:?}");
    assert_eq!(h.fsm.state(), State::Established);
}

#[test]
fn open_sent_times_out_after_the_large_hold_time() {
    let mut h = Harness::new(cfg());
    h.ev(Event::Start);
    h.ev(Event::Connected {
        conn: 1,
        dir: Direction::Outgoing,
    });
    assert!(notifications(&h.advance(239)).is_empty());
    assert_eq!(notifications(&h.advance(1)), vec![(1, (4, 0))]);
}

#[test]
fn bad_open_fields_get_open_message_errors() {
    // (OPEN, expected subcode): bad peer AS, bad BGP identifier (zero and
    // our own), unacceptable hold time.
    let cases = [
        (open(65003, 90, [10, 0, 0, 2]), 2),
        (open(65002, 90, [0, 0, 0, 0]), 3),
        (open(65002, 90, [10, 0, 0, 1]), 3),
        (open(65002, 2, [10, 0, 0, 2]), 6),
    ];
    for (o, sub) in cases {
        let mut h = Harness::new(cfg());
        h.ev(Event::Start);
        h.ev(Event::Connected {
            conn: 1,
            dir: Direction::Outgoing,
        });
        let a = h.ev(Event::Message(1, BgpMessage::Open(o)));
        assert_eq!(notifications(&a), vec![(1, (2, sub))]);
        assert_eq!(closed(&a), vec![1]);
        assert_ne!(h.fsm.state(), State::Established);
        assert!(h.fsm.last_error().unwrap().contains("OPEN message error"));
    }
}

#[test]
fn four_octet_asn_through_as_trans() {
    let mut h = Harness::new(FsmConfig {
        local_as: 4_200_000_001,
        remote_as: 4_200_000_002,
        ..cfg()
    });
    h.ev(Event::Start);
    let a = h.ev(Event::Connected {
        conn: 1,
        dir: Direction::Outgoing,
    });
    let BgpMessage::Open(ours) = &sent(&a)[0].1 else {
        panic!()
    };
    assert_eq!(ours.my_as(), AS_TRANS);
    assert_eq!(ours.my_asn4(), 4_200_000_001);
    h.ev(Event::Message(
        1,
        BgpMessage::Open(open(4_200_000_002, 90, [10, 0, 0, 2])),
    ));
    assert_eq!(h.fsm.state(), State::OpenConfirm);
}

#[test]
fn unexpected_messages_get_fsm_errors_per_state() {
    // OpenSent: a KEEPALIVE before the OPEN.
    let mut h = Harness::new(cfg());
    h.ev(Event::Start);
    h.ev(Event::Connected {
        conn: 1,
        dir: Direction::Outgoing,
    });
    let a = h.ev(Event::Message(1, BgpMessage::KeepAlive));
    assert_eq!(notifications(&a), vec![(1, (5, 1))]);
    // OpenConfirm: a second OPEN.
    let mut h = Harness::new(cfg());
    h.ev(Event::Start);
    h.ev(Event::Connected {
        conn: 1,
        dir: Direction::Outgoing,
    });
    h.ev(Event::Message(
        1,
        BgpMessage::Open(open(65002, 90, [10, 0, 0, 2])),
    ));
    let a = h.ev(Event::Message(
        1,
        BgpMessage::Open(open(65002, 90, [10, 0, 0, 2])),
    ));
    assert_eq!(notifications(&a), vec![(1, (5, 2))]);
    // Established: an OPEN.
    let mut h = Harness::new(cfg());
    h.establish(open(65002, 90, [10, 0, 0, 2]));
    let a = h.ev(Event::Message(
        1,
        BgpMessage::Open(open(65002, 90, [10, 0, 0, 2])),
    ));
    assert_eq!(notifications(&a), vec![(1, (5, 3))]);
    assert!(a.iter().any(|a| matches!(
        a,
        Action::Down {
            graceful: false,
            ..
        }
    )));
}

#[test]
fn notification_from_peer_ends_the_session_and_records_the_error() {
    let mut h = Harness::new(cfg());
    h.establish(open(65002, 90, [10, 0, 0, 2]));
    let cease = codec::cease(
        netgauze_bgp_pkt::notification::CeaseError::AdministrativeShutdown {
            value: Box::new([]),
        },
    );
    let a = h.ev(Event::Message(1, BgpMessage::Notification(cease)));
    assert!(notifications(&a).is_empty());
    assert_eq!(closed(&a), vec![1]);
    assert!(h
        .fsm
        .last_error()
        .unwrap()
        .contains("cease (code 6, subcode 2)"));
    assert_eq!(h.fsm.state(), State::Active);
}

#[test]
fn malformed_message_event_is_answered_with_its_notification() {
    let mut h = Harness::new(cfg());
    h.establish(open(65002, 90, [10, 0, 0, 2]));
    let n = codec::decode(&[0u8; 19], true).unwrap_err();
    let a = h.ev(Event::Malformed(1, n));
    assert_eq!(notifications(&a), vec![(1, (1, 1))]);
    assert_eq!(closed(&a), vec![1]);
}

/// Both sides connect at once; each connection gets an OPEN. `local_wins`:
/// our identifier is the higher one.
fn collision(remote_id: [u8; 4]) -> (Harness, Vec<Action>) {
    let mut h = Harness::new(cfg());
    h.ev(Event::Start);
    h.ev(Event::Connected {
        conn: 1,
        dir: Direction::Outgoing,
    });
    h.ev(Event::Connected {
        conn: 2,
        dir: Direction::Incoming,
    });
    h.ev(Event::Message(
        1,
        BgpMessage::Open(open(65002, 90, remote_id)),
    ));
    let a = h.ev(Event::Message(
        2,
        BgpMessage::Open(open(65002, 90, remote_id)),
    ));
    (h, a)
}

#[test]
fn collision_keeps_the_connection_opened_by_the_higher_identifier() {
    // Remote 10.0.0.9 > local 10.0.0.1: the peer's connection (2) stays,
    // ours (1) gets Cease / Connection Collision Resolution.
    let (mut h, a) = collision([10, 0, 0, 9]);
    assert_eq!(notifications(&a), vec![(1, (6, 7))]);
    assert_eq!(closed(&a), vec![1]);
    h.ev(Event::Message(2, BgpMessage::KeepAlive));
    assert_eq!(h.fsm.established().unwrap().0, 2);
    // Remote 9.0.0.9 < local: our connection stays; the incoming one, which
    // received the second OPEN, is closed.
    let (mut h, a) = collision([9, 0, 0, 9]);
    assert_eq!(notifications(&a), vec![(2, (6, 7))]);
    h.ev(Event::Message(1, BgpMessage::KeepAlive));
    assert_eq!(h.fsm.established().unwrap().0, 1);
}

#[test]
fn collision_with_an_established_session_closes_the_new_connection() {
    let mut h = Harness::new(cfg());
    h.establish(open(65002, 90, [10, 0, 0, 9]));
    h.ev(Event::Connected {
        conn: 2,
        dir: Direction::Incoming,
    });
    let a = h.ev(Event::Message(
        2,
        BgpMessage::Open(open(65002, 90, [10, 0, 0, 9])),
    ));
    assert_eq!(notifications(&a), vec![(2, (6, 7))]);
    assert_eq!(h.fsm.established().unwrap().0, 1);
}

#[test]
fn route_refresh_and_updates_are_passed_on() {
    let mut h = Harness::new(cfg());
    h.establish(open(65002, 90, [10, 0, 0, 2]));
    let rr = netgauze_bgp_pkt::route_refresh::BgpRouteRefreshMessage::new(
        AddressType::Ipv6Unicast,
        netgauze_bgp_pkt::iana::RouteRefreshSubcode::NormalRequest,
    );
    let a = h.ev(Event::Message(1, BgpMessage::RouteRefresh(rr)));
    assert!(a.contains(&Action::RouteRefresh(Afi::Ipv6)));
    let a = h.ev(Event::Message(1, codec::end_of_rib(Afi::Ipv4)));
    assert!(a
        .iter()
        .any(|a| matches!(a, Action::Update(u) if u.end_of_rib == Some(Afi::Ipv4))));
}

#[test]
fn our_open_announces_graceful_restart_bits() {
    let h = Harness::new(FsmConfig {
        graceful_restart: Some(GracefulRestart {
            restart_time: 120,
            restarting: true,
            forwarding_preserved: true,
            stale_time: 360,
        }),
        ..cfg()
    });
    let o = h.fsm.open_message();
    let gr = o
        .capabilities()
        .into_iter()
        .find_map(|c| match c {
            BgpCapability::GracefulRestartCapability(g) => Some(g.clone()),
            _ => None,
        })
        .expect("GR capability");
    assert!(gr.restart());
    assert_eq!(gr.time(), 120);
    assert!(gr.address_families().iter().all(|f| f.forwarding_state()));
    assert_eq!(gr.address_families().len(), 2);
}

fn gr_cfg() -> FsmConfig {
    FsmConfig {
        graceful_restart: Some(GracefulRestart::default()),
        ..cfg()
    }
}

#[test]
fn helper_keeps_routes_stale_until_end_of_rib() {
    let mut h = Harness::new(gr_cfg());
    h.establish(open_gr(65002, 90, [10, 0, 0, 2], Some((60, false, true))));
    // The TCP connection fails (no NOTIFICATION): graceful.
    let a = h.ev(Event::Closed(1));
    assert!(a
        .iter()
        .any(|a| matches!(a, Action::Down { graceful: true, .. })));
    assert!(h.fsm.has_stale());
    assert_eq!(h.timers.get(&Timer::GrRestart), Some(&60));
    // The peer comes back within its restart time with forwarding preserved.
    h.advance(20);
    h.ev(Event::Connected {
        conn: 2,
        dir: Direction::Incoming,
    });
    h.ev(Event::Message(
        2,
        BgpMessage::Open(open_gr(65002, 90, [10, 0, 0, 2], Some((60, true, true)))),
    ));
    let a = h.ev(Event::Message(2, BgpMessage::KeepAlive));
    assert!(!a.iter().any(|a| matches!(a, Action::PurgeStale(_))));
    assert!(!h.timers.contains_key(&Timer::GrRestart));
    assert!(h.timers.contains_key(&Timer::GrStale));
    // The restart timer's old deadline passes: nothing is purged.
    assert!(!h
        .advance(60)
        .iter()
        .any(|a| matches!(a, Action::PurgeStale(_))));
    let a = h.ev(Event::Message(2, codec::end_of_rib(Afi::Ipv4)));
    assert!(a.contains(&Action::PurgeStale(Some(Afi::Ipv4))));
    let a = h.ev(Event::Message(2, codec::end_of_rib(Afi::Ipv6)));
    assert!(a.contains(&Action::PurgeStale(Some(Afi::Ipv6))));
    assert!(a.contains(&Action::StopTimer(Timer::GrStale)));
    assert!(!h.fsm.has_stale());
}

#[test]
fn helper_purges_stale_routes_when_the_restart_timer_expires() {
    let mut h = Harness::new(gr_cfg());
    h.establish(open_gr(65002, 90, [10, 0, 0, 2], Some((60, false, true))));
    h.ev(Event::Closed(1));
    assert!(h
        .advance(59)
        .iter()
        .all(|a| !matches!(a, Action::PurgeStale(_))));
    assert!(h.advance(1).contains(&Action::PurgeStale(None)));
    assert!(!h.fsm.has_stale());
}

#[test]
fn helper_purges_at_once_when_the_peer_lost_its_forwarding_state() {
    let mut h = Harness::new(gr_cfg());
    h.establish(open_gr(65002, 90, [10, 0, 0, 2], Some((60, false, true))));
    h.ev(Event::Closed(1));
    h.ev(Event::Connected {
        conn: 2,
        dir: Direction::Outgoing,
    });
    h.ev(Event::Message(
        2,
        BgpMessage::Open(open_gr(65002, 90, [10, 0, 0, 2], Some((60, true, false)))),
    ));
    let a = h.ev(Event::Message(2, BgpMessage::KeepAlive));
    assert!(a.contains(&Action::PurgeStale(Some(Afi::Ipv4))));
    assert!(a.contains(&Action::PurgeStale(Some(Afi::Ipv6))));
}

#[test]
fn new_open_from_a_graceful_peer_replaces_the_established_session() {
    let mut h = Harness::new(gr_cfg());
    h.establish(open_gr(65002, 90, [10, 0, 0, 2], Some((60, false, true))));
    h.ev(Event::Connected {
        conn: 2,
        dir: Direction::Incoming,
    });
    let a = h.ev(Event::Message(
        2,
        BgpMessage::Open(open_gr(65002, 90, [10, 0, 0, 2], Some((60, true, true)))),
    ));
    assert!(notifications(&a).is_empty());
    assert_eq!(closed(&a), vec![1]);
    assert!(a
        .iter()
        .any(|a| matches!(a, Action::Down { graceful: true, .. })));
    h.ev(Event::Message(2, BgpMessage::KeepAlive));
    assert_eq!(h.fsm.established().unwrap().0, 2);
}

#[test]
fn peer_without_graceful_restart_loses_routes_at_once() {
    let mut h = Harness::new(gr_cfg());
    h.establish(open(65002, 90, [10, 0, 0, 2]));
    let a = h.ev(Event::Closed(1));
    assert!(a.iter().any(|a| matches!(
        a,
        Action::Down {
            graceful: false,
            ..
        }
    )));
    assert!(!h.fsm.has_stale());
}

#[test]
fn stop_sends_cease_and_goes_idle() {
    let mut h = Harness::new(cfg());
    h.establish(open(65002, 90, [10, 0, 0, 2]));
    let a = h.ev(Event::Stop);
    assert_eq!(notifications(&a), vec![(1, (6, 2))]);
    assert_eq!(h.fsm.state(), State::Idle);
    assert!(h.advance(1000).is_empty());
    // Stopped: a new connection is refused.
    let a = h.ev(Event::Connected {
        conn: 3,
        dir: Direction::Incoming,
    });
    assert_eq!(closed(&a), vec![3]);
    assert!(h.log.iter().any(|a| matches!(a, Action::Up(..))));
}

#[test]
fn collision_cease_on_an_established_connection_hands_over_gracefully() {
    let mut h = Harness::new(gr_cfg());
    h.establish(open_gr(65002, 90, [10, 0, 0, 9], Some((60, false, true))));
    // The peer's own connection is under way when it resolves the collision
    // against ours.
    h.ev(Event::Connected {
        conn: 2,
        dir: Direction::Incoming,
    });
    let cease = codec::cease(
        netgauze_bgp_pkt::notification::CeaseError::ConnectionCollisionResolution {
            value: Box::new([]),
        },
    );
    let a = h.ev(Event::Message(1, BgpMessage::Notification(cease.clone())));
    assert!(a
        .iter()
        .any(|a| matches!(a, Action::Down { graceful: true, .. })));
    assert!(h.fsm.has_stale());
    // Without a second connection the same Cease is a plain reset.
    let mut h = Harness::new(gr_cfg());
    h.establish(open_gr(65002, 90, [10, 0, 0, 9], Some((60, false, true))));
    let a = h.ev(Event::Message(1, BgpMessage::Notification(cease)));
    assert!(a.iter().any(|a| matches!(
        a,
        Action::Down {
            graceful: false,
            ..
        }
    )));
}

#[test]
fn a_late_outgoing_connection_is_closed_when_already_established() {
    let mut h = Harness::new(cfg());
    h.ev(Event::Start);
    h.ev(Event::Connected {
        conn: 2,
        dir: Direction::Incoming,
    });
    h.ev(Event::Message(
        2,
        BgpMessage::Open(open(65002, 90, [10, 0, 0, 2])),
    ));
    h.ev(Event::Message(2, BgpMessage::KeepAlive));
    assert_eq!(h.fsm.state(), State::Established);
    let a = h.ev(Event::Connected {
        conn: 3,
        dir: Direction::Outgoing,
    });
    assert_eq!(closed(&a), vec![3]);
    assert!(sent(&a).is_empty());
    assert_eq!(h.fsm.established().unwrap().0, 2);
}

// ---- per-peer limits ----

#[test]
fn a_prefix_limit_resets_with_cease_and_holds_the_peer_down_for_its_restart_time() {
    let mut h = Harness::new(cfg());
    h.establish(open(65002, 90, [10, 0, 0, 2]));
    let a = h.ev(Event::PrefixLimit {
        afi: Afi::Ipv6,
        limit: 100,
        restart: 30,
    });
    // Cease / Maximum Number of Prefixes Reached, data = AFI 2, SAFI 1,
    // limit 100 (RFC 4486 §4).
    let sent = a
        .iter()
        .find_map(|a| match a {
            Action::Send(1, BgpMessage::Notification(n)) => Some(n.clone()),
            _ => None,
        })
        .expect("a NOTIFICATION");
    assert_eq!(codec::notification_code(&sent), (6, 1));
    let bytes = codec::encode(&BgpMessage::Notification(sent));
    assert_eq!(&bytes[codec::HEADER_LEN + 2..], &[0, 2, 1, 0, 0, 0, 100]);
    assert!(a.contains(&Action::Close(1)));
    assert!(a.contains(&Action::Down {
        graceful: false,
        reason: h.fsm.last_error().unwrap().to_string()
    }));
    assert_eq!(h.fsm.state(), State::Idle);
    let why = h.fsm.last_error().unwrap();
    assert!(
        why.contains("maximum number of prefixes") && why.contains("30 s"),
        "{why}"
    );
    // Down: no connect, and the peer's own connection is refused.
    assert!(!h.timers.contains_key(&Timer::ConnectRetry));
    let a = h.ev(Event::Connected {
        conn: 2,
        dir: Direction::Incoming,
    });
    assert_eq!(a, vec![Action::Close(2)]);
    assert!(!h.advance(29).contains(&Action::Connect));
    assert_eq!(h.fsm.state(), State::Idle);
    // After the restart time it starts again.
    assert!(h.advance(1).contains(&Action::Connect));
    assert_eq!(h.fsm.state(), State::Connect);
}

#[test]
fn a_prefix_limit_without_a_session_or_after_a_stop_does_nothing() {
    let mut h = Harness::new(cfg());
    h.ev(Event::Start);
    let limit = Event::PrefixLimit {
        afi: Afi::Ipv4,
        limit: 1,
        restart: 5,
    };
    assert!(h.ev(limit).is_empty());
    h.establish(open(65002, 90, [10, 0, 0, 2]));
    h.ev(Event::PrefixLimit {
        afi: Afi::Ipv4,
        limit: 1,
        restart: 5,
    });
    // Stopped while held down: it stays stopped.
    h.ev(Event::Stop);
    assert!(!h.advance(10).contains(&Action::Connect));
    assert_eq!(h.fsm.state(), State::Idle);
}

#[test]
fn a_per_peer_restart_time_is_announced_and_caps_how_long_stale_routes_stay() {
    let mut c = gr_cfg();
    c.graceful_restart = c.graceful_restart.map(|mut g| {
        g.restart_time = 45;
        g
    });
    c.max_stale_time = Some(45);
    let mut h = Harness::new(c);
    let gr = h
        .fsm
        .open_message()
        .capabilities()
        .into_iter()
        .find_map(|c| match c {
            BgpCapability::GracefulRestartCapability(g) => Some(g.time()),
            _ => None,
        });
    assert_eq!(gr, Some(45));
    // The peer asks for 300 s; we keep its routes 45 s at most.
    h.establish(open_gr(65002, 90, [10, 0, 0, 2], Some((300, false, true))));
    h.ev(Event::Closed(1));
    assert_eq!(h.timers.get(&Timer::GrRestart), Some(&45));
    assert!(h.advance(45).contains(&Action::PurgeStale(None)));

    // The End-of-RIB wait after it comes back is capped too (default 360).
    let mut c = gr_cfg();
    c.max_stale_time = Some(45);
    let mut h = Harness::new(c);
    h.establish(open_gr(65002, 90, [10, 0, 0, 2], Some((30, false, true))));
    h.ev(Event::Closed(1));
    assert_eq!(h.timers.get(&Timer::GrRestart), Some(&30));
    h.ev(Event::Connected {
        conn: 2,
        dir: Direction::Incoming,
    });
    h.ev(Event::Message(
        2,
        BgpMessage::Open(open_gr(65002, 90, [10, 0, 0, 2], Some((30, true, true)))),
    ));
    h.ev(Event::Message(2, BgpMessage::KeepAlive));
    assert_eq!(h.timers.get(&Timer::GrStale), Some(&(h.now + 45)));
}

#[test]
fn bfd_down_ends_the_session_at_once_without_graceful_restart_and_reconnects() {
    let mut h = Harness::new(gr_cfg());
    // The peer can restart gracefully: a plain close would keep its routes.
    h.establish(open_gr(65002, 90, [10, 0, 0, 2], Some((120, false, true))));
    let a = h.ev(Event::BfdDown);
    // Cease / BFD Down (RFC 9384 subcode 10), then the connection closes.
    assert_eq!(notifications(&a), vec![(1, (6, 10))]);
    assert!(closed(&a).contains(&1));
    assert!(a.contains(&Action::Down {
        graceful: false,
        reason: h.fsm.last_error().unwrap().to_string()
    }));
    assert!(h.fsm.last_error().unwrap().contains("BFD"));
    assert!(!h.fsm.has_stale());
    assert_eq!(h.fsm.state(), State::Active);
    // Connecting resumes on the retry timer.
    assert!(h.timers.contains_key(&Timer::ConnectRetry));
    // Without a session it does nothing.
    assert!(h.ev(Event::BfdDown).is_empty());
}
