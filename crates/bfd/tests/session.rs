//! One session against a scripted peer, on a virtual clock: the state
//! machine of RFC 5880 §6.8.6, timer negotiation, jitter, detection, the
//! poll sequence, demand and passive roles, administrative control.

mod common;

use std::time::Duration;

use common::{ms, peer_packet, FixedRng, Harness, LOCAL_DISCR, PEER_DISCR};
use plexus_bfd::packet::{Diag, State};
use plexus_bfd::session::{Action, Event, Params, Timer, SLOW_TX};

fn fast() -> Params {
    Params::new(ms(100), ms(100), 3)
}

#[test]
fn starts_down_and_sends_slowly_with_its_parameters() {
    let mut h = Harness::new(fast());
    assert_eq!(h.s.state(), State::Down);
    let first = h.last_sent();
    assert_eq!(h.sent.len(), 1, "the first packet goes at once");
    assert_eq!(first.state, State::Down);
    assert_eq!(first.my_discr, LOCAL_DISCR);
    assert_eq!(first.your_discr, 0);
    assert_eq!(first.detect_mult, 3);
    // §6.8.3: at least 1 s while not Up; Required Min RX as configured.
    assert_eq!(first.desired_min_tx, 1_000_000);
    assert_eq!(first.required_min_rx, 100_000);
    assert_eq!(first.required_min_echo_rx, 0);
    assert!(!first.poll && !first.final_ && !first.demand && !first.cpi);
    h.advance(Duration::from_secs(30));
    let gaps = h.gaps_since(h.t0);
    assert!(gaps.len() >= 29, "{} packets in 30 s", gaps.len());
    for g in gaps {
        assert!(
            g >= ms(750) && g <= SLOW_TX,
            "gap {g:?} outside 75–100 % of 1 s"
        );
    }
}

#[test]
fn three_way_handshake_down_init_up() {
    let mut h = Harness::new(fast());
    h.recv(peer_packet(State::Down, 0, fast()));
    assert_eq!(h.s.state(), State::Init);
    // The change is sent at once, now addressed to the peer.
    let p = h.last_sent();
    assert_eq!((p.state, p.your_discr), (State::Init, PEER_DISCR));
    h.recv(peer_packet(State::Up, LOCAL_DISCR, fast()));
    assert_eq!(h.s.state(), State::Up);
    let to: Vec<(State, State, Diag)> = h
        .changes
        .iter()
        .map(|(_, c)| (c.from, c.to, c.diag))
        .collect();
    assert_eq!(
        to,
        vec![
            (State::Down, State::Init, Diag::None),
            (State::Init, State::Up, Diag::None)
        ]
    );
}

#[test]
fn down_goes_straight_up_on_the_peers_init() {
    let mut h = Harness::new(fast());
    h.recv(peer_packet(State::Init, LOCAL_DISCR, fast()));
    assert_eq!(h.s.state(), State::Up);
    // Init also moves to Up on the peer's Init (both sides saw Down).
    let mut h = Harness::new(fast());
    h.recv(peer_packet(State::Down, 0, fast()));
    h.recv(peer_packet(State::Init, LOCAL_DISCR, fast()));
    assert_eq!(h.s.state(), State::Up);
    // Down does not move on the peer's Up (it has not heard us).
    let mut h = Harness::new(fast());
    h.recv(peer_packet(State::Up, LOCAL_DISCR, fast()));
    assert_eq!(h.s.state(), State::Down);
    // Init stays Init on the peer's Down.
    let mut h = Harness::new(fast());
    h.recv(peer_packet(State::Down, 0, fast()));
    h.recv(peer_packet(State::Down, 0, fast()));
    assert_eq!(h.s.state(), State::Init);
}

#[test]
fn peer_down_or_admin_down_takes_us_down_with_diag_3() {
    for peer_state in [State::Down, State::AdminDown] {
        let mut h = Harness::new(fast());
        h.bring_up(fast());
        let your = if peer_state == State::Down {
            0
        } else {
            LOCAL_DISCR
        };
        h.recv(peer_packet(peer_state, your, fast()));
        assert_eq!(h.s.state(), State::Down);
        let (_, c) = *h.changes.last().unwrap();
        assert_eq!((c.from, c.to), (State::Up, State::Down));
        assert_eq!(c.diag, Diag::NeighborSignaledDown);
        assert_eq!(c.remote_state, peer_state);
        assert_eq!(
            h.s.status().last_down_diag,
            Some(Diag::NeighborSignaledDown)
        );
        let p = h.last_sent();
        assert_eq!((p.state, p.diag), (State::Down, Diag::NeighborSignaledDown));
        // Back to the slow rate.
        assert_eq!(p.desired_min_tx, 1_000_000);
    }
    // The peer's AdminDown leaves a Down session alone.
    let mut h = Harness::new(fast());
    h.recv(peer_packet(State::AdminDown, 0, fast()));
    assert_eq!(h.s.state(), State::Down);
    assert!(h.changes.is_empty());
}

#[test]
fn up_session_transmits_at_the_negotiated_interval_with_jitter() {
    // Ours 100 ms; the peer can only take one every 250 ms: 250 ms wins.
    let mut h = Harness::new(fast());
    let peer = Params::new(ms(50), ms(250), 3);
    h.bring_up(peer);
    assert_eq!(h.s.status().tx_interval, ms(250));
    let from = h.now;
    let up = peer_packet(State::Up, LOCAL_DISCR, peer);
    h.advance_with_peer(Duration::from_secs(20), ms(50), up);
    let gaps = h.gaps_since(from);
    assert!(gaps.len() > 70);
    for g in &gaps {
        assert!(
            *g >= ms(187) + Duration::from_micros(500) && *g <= ms(250),
            "gap {g:?}"
        );
    }
    // The jitter is spread, not stuck at one end.
    let min = gaps.iter().min().unwrap();
    let max = gaps.iter().max().unwrap();
    assert!(*min < ms(200) && *max > ms(240), "jitter {min:?}..{max:?}");
    assert!(h
        .sent_since(0)
        .iter()
        .all(|p| p.your_discr == PEER_DISCR || p.state == State::Down));
}

#[test]
fn jitter_bounds_are_75_to_100_and_75_to_90_with_detect_mult_1() {
    for (mult, rng, want) in [
        (3, 0, ms(75)),
        (3, 250, ms(100)),
        (1, 0, ms(75)),
        (1, 150, ms(90)),
        (1, 250, ms(76)), // 750 + 250 % 151 = 849‰ → 84.9 ms: check below
    ] {
        let params = Params::new(ms(100), ms(100), mult);
        let mut h = Harness::with(params, false, Box::new(FixedRng(rng)));
        h.bring_up(fast());
        let from = h.now;
        let up = peer_packet(State::Up, LOCAL_DISCR, fast());
        h.advance_with_peer(Duration::from_secs(2), ms(50), up);
        let gaps = h.gaps_since(from);
        let g = gaps[0];
        if rng == 250 && mult == 1 {
            assert_eq!(g, Duration::from_micros(84_900));
        } else {
            assert_eq!(g, want, "mult {mult} rng {rng}");
        }
        if mult == 1 {
            assert!(gaps.iter().all(|g| *g <= ms(90)));
        }
    }
}

#[test]
fn a_shorter_peer_interval_is_honoured_at_once() {
    let mut h = Harness::new(fast());
    let slow_peer = Params::new(ms(100), Duration::from_secs(2), 3);
    h.bring_up(slow_peer);
    assert_eq!(h.s.status().tx_interval, Duration::from_secs(2));
    h.advance(ms(10));
    let before = *h.timers.get(&Timer::Tx).unwrap();
    assert!(before - h.now > ms(1000), "next packet about 2 s away");
    let last_tx = h.sent.last().unwrap().0;
    // The peer now takes packets every 100 ms: the next one may not wait
    // longer than 100 ms after the last (§6.8.3).
    h.recv(peer_packet(State::Up, LOCAL_DISCR, fast()));
    let after = *h.timers.get(&Timer::Tx).unwrap();
    assert!(
        after - last_tx <= ms(100),
        "next packet {:?} after the last",
        after - last_tx
    );
}

#[test]
fn zero_required_min_rx_from_the_peer_stops_periodic_packets_but_not_finals() {
    let mut h = Harness::new(fast());
    h.bring_up(fast());
    let mut p = peer_packet(State::Up, LOCAL_DISCR, fast());
    p.required_min_rx = 0;
    let a = h.recv(p);
    assert!(a.contains(&Action::Disarm(Timer::Tx)));
    let n = h.sent.len();
    h.advance(ms(250)); // stays under the detection time (3 × 100 ms)
    assert_eq!(h.sent.len(), n, "no periodic packets");
    p.poll = true;
    h.recv(p);
    assert_eq!(h.sent.len(), n + 1);
    assert!(h.last_sent().final_);
}

#[test]
fn detection_time_is_the_peers_mult_times_the_agreed_interval() {
    let mut h = Harness::new(fast());
    // The peer: mult 5, sends every 200 ms: 5 × max(100, 200) = 1 s.
    let peer = Params::new(ms(200), ms(100), 5);
    h.bring_up(peer);
    assert_eq!(h.s.status().detection_time, Some(Duration::from_secs(1)));
    let last = h.now;
    h.advance(ms(999));
    assert_eq!(h.s.state(), State::Up);
    h.advance(ms(1));
    assert_eq!(h.s.state(), State::Down);
    assert_eq!(h.now - last, Duration::from_secs(1));
    let (_, c) = *h.changes.last().unwrap();
    assert_eq!(
        (c.from, c.diag),
        (State::Up, Diag::ControlDetectionTimeExpired)
    );
    // §6.8.1: the peer's discriminator is forgotten.
    let p = h.last_sent();
    assert_eq!(
        (p.state, p.your_discr, p.diag),
        (State::Down, 0, Diag::ControlDetectionTimeExpired)
    );
    assert_eq!(
        h.s.status().last_down_diag,
        Some(Diag::ControlDetectionTimeExpired)
    );
}

#[test]
fn packets_keep_the_session_up() {
    let mut h = Harness::new(fast());
    h.bring_up(fast());
    for _ in 0..100 {
        h.advance(ms(250)); // under 3 × 100 ms
        h.recv(peer_packet(State::Up, LOCAL_DISCR, fast()));
    }
    assert_eq!(h.s.state(), State::Up);
    assert_eq!(h.changes.len(), 2);
}

#[test]
fn init_times_out_too_and_down_only_forgets_the_peer() {
    let mut h = Harness::new(fast());
    h.recv(peer_packet(State::Down, 0, fast()));
    assert_eq!(h.s.state(), State::Init);
    // The peer is not Up: its Desired Min TX is 1 s, so 3 s.
    let mut slow = fast();
    slow.desired_min_tx = SLOW_TX;
    h.recv(peer_packet(State::Down, 0, slow));
    h.advance(ms(2999));
    assert_eq!(h.s.state(), State::Init);
    h.advance(ms(1));
    assert_eq!(h.s.state(), State::Down);
    assert_eq!(
        h.changes.last().unwrap().1.diag,
        Diag::ControlDetectionTimeExpired
    );
    // In Down, silence only clears the discriminator: no change reported.
    let mut h = Harness::new(fast());
    h.recv(peer_packet(State::AdminDown, 0, slow));
    h.advance(Duration::from_secs(4));
    assert!(h.changes.is_empty());
    assert_eq!(h.s.status().remote_discr, 0);
}

#[test]
fn a_poll_is_answered_at_once_with_final_and_no_poll() {
    let mut h = Harness::new(fast());
    h.bring_up(fast());
    h.advance(ms(20));
    let n = h.sent.len();
    // We poll too (a parameter change), and the peer polls us.
    h.ev(Event::SetParams(Params::new(ms(50), ms(100), 3)));
    let mut p = peer_packet(State::Up, LOCAL_DISCR, fast());
    p.poll = true;
    h.recv(p);
    assert_eq!(h.sent.len(), n + 1, "the Final goes at once");
    let f = h.last_sent();
    assert!(f.final_ && !f.poll);
    // Our own poll resumes on the next periodic packet.
    h.advance(ms(100));
    assert!(h.last_sent().poll && !h.last_sent().final_);
}

#[test]
fn a_slower_tx_waits_for_the_final_a_faster_one_does_not() {
    let mut h = Harness::new(fast());
    h.bring_up(fast());
    h.ev(Event::SetParams(Params::new(ms(500), ms(100), 3)));
    let st = h.s.status();
    assert!(st.polling);
    assert_eq!(st.advertised_min_tx, ms(500));
    assert_eq!(
        st.tx_interval,
        ms(100),
        "old interval until the peer has seen the new one"
    );
    let from = h.now;
    let up = peer_packet(State::Up, LOCAL_DISCR, fast());
    h.advance_with_peer(ms(600), ms(50), up);
    let polled = h
        .sent_since(0)
        .into_iter()
        .rev()
        .take(3)
        .collect::<Vec<_>>();
    assert!(polled.iter().all(|p| p.poll && p.desired_min_tx == 500_000));
    assert!(h.gaps_since(from).iter().all(|g| *g <= ms(100)));
    let mut f = peer_packet(State::Up, LOCAL_DISCR, fast());
    f.final_ = true;
    h.recv(f);
    let st = h.s.status();
    assert!(!st.polling);
    assert_eq!(st.tx_interval, ms(500));
    let from = h.now;
    h.advance_with_peer(Duration::from_secs(5), ms(50), up);
    let gaps = h.gaps_since(from);
    assert!(gaps.iter().all(|g| *g >= ms(375)), "{gaps:?}");
    assert!(h.sent_since(h.sent.len() - 3).iter().all(|p| !p.poll));
    // Faster again: at once, still with a poll.
    h.ev(Event::SetParams(Params::new(ms(20), ms(100), 3)));
    assert_eq!(
        h.s.status().tx_interval,
        ms(100),
        "the peer's Required Min RX"
    );
    assert!(h.s.status().polling);
}

#[test]
fn a_smaller_required_rx_keeps_the_old_detection_time_until_the_final() {
    let mut h = Harness::new(fast());
    let quick_peer = Params::new(ms(10), ms(10), 3);
    h.bring_up(quick_peer);
    assert_eq!(h.s.status().detection_time, Some(ms(300)));
    h.ev(Event::SetParams(Params::new(ms(100), ms(20), 3)));
    assert_eq!(
        h.last_sent().required_min_rx,
        100_000,
        "sent with the next packet"
    );
    h.advance(ms(100));
    assert_eq!(h.last_sent().required_min_rx, 20_000);
    h.recv(peer_packet(State::Up, LOCAL_DISCR, quick_peer));
    assert_eq!(
        h.s.status().detection_time,
        Some(ms(300)),
        "old value until F"
    );
    let mut f = peer_packet(State::Up, LOCAL_DISCR, quick_peer);
    f.final_ = true;
    h.recv(f);
    assert_eq!(h.s.status().detection_time, Some(ms(60)));
    // A larger one applies at once, and re-arms the running detection.
    h.ev(Event::SetParams(Params::new(ms(100), ms(500), 3)));
    assert_eq!(h.s.status().detection_time, Some(ms(1500)));
    let at = *h.timers.get(&Timer::Detect).unwrap();
    assert_eq!(at - h.now, ms(1500));
}

#[test]
fn a_change_during_a_poll_needs_a_second_final() {
    let mut h = Harness::new(fast());
    h.bring_up(fast());
    h.ev(Event::SetParams(Params::new(ms(200), ms(100), 3)));
    h.ev(Event::SetParams(Params::new(ms(400), ms(100), 3)));
    let mut f = peer_packet(State::Up, LOCAL_DISCR, fast());
    f.final_ = true;
    h.recv(f);
    assert!(
        h.s.status().polling,
        "that Final may answer the 200 ms packet"
    );
    assert_eq!(h.s.status().tx_interval, ms(100));
    h.recv(f);
    assert!(!h.s.status().polling);
    assert_eq!(h.s.status().tx_interval, ms(400));
}

#[test]
fn coming_up_polls_to_leave_the_slow_rate_and_going_down_returns_to_it() {
    let mut h = Harness::new(fast());
    h.recv(peer_packet(State::Down, 0, fast()));
    h.recv(peer_packet(State::Up, LOCAL_DISCR, fast()));
    let p = h.last_sent();
    assert!(p.poll);
    assert_eq!(p.desired_min_tx, 100_000);
    // Faster is safe at once (§6.8.3 only holds back a slower one).
    assert_eq!(h.s.status().tx_interval, ms(100));
    h.recv(peer_packet(State::Down, 0, fast()));
    assert_eq!(h.s.status().tx_interval, SLOW_TX);
    assert_eq!(h.last_sent().desired_min_tx, 1_000_000);
}

#[test]
fn remote_demand_mode_stops_our_periodic_packets_while_both_are_up() {
    let mut h = Harness::new(fast());
    h.bring_up(fast());
    let mut d = peer_packet(State::Up, LOCAL_DISCR, fast());
    d.demand = true;
    h.recv(d);
    let n = h.sent.len();
    h.advance(ms(250));
    assert_eq!(h.sent.len(), n);
    // A poll of ours is still sent on periodic packets.
    h.ev(Event::SetParams(Params::new(ms(200), ms(100), 3)));
    h.advance(ms(100));
    assert!(h.sent.len() > n && h.last_sent().poll);
}

#[test]
fn passive_sends_nothing_until_the_peer_is_heard() {
    let mut h = Harness::with(fast(), true, Box::new(FixedRng(9)));
    h.advance(Duration::from_secs(5));
    assert!(h.sent.is_empty());
    h.recv(peer_packet(State::Down, 0, fast()));
    assert_eq!(h.s.state(), State::Init);
    assert_eq!(h.last_sent().state, State::Init);
    let init = peer_packet(State::Init, LOCAL_DISCR, fast());
    h.advance_with_peer(Duration::from_secs(2), ms(100), init);
    assert_eq!(h.s.state(), State::Up);
    assert!(h.sent.len() >= 10, "{} packets", h.sent.len());
    // Silence: the peer is forgotten, and a passive session stops.
    h.advance(Duration::from_secs(1));
    assert_eq!(h.s.state(), State::Down);
    let n = h.sent.len();
    h.advance(Duration::from_secs(5));
    assert_eq!(h.sent.len(), n);
}

#[test]
fn admin_down_tells_the_peer_then_falls_silent() {
    let mut h = Harness::new(fast());
    h.bring_up(fast());
    let n = h.sent.len();
    h.ev(Event::AdminDown);
    assert_eq!(h.s.state(), State::AdminDown);
    let (_, c) = *h.changes.last().unwrap();
    assert_eq!(
        (c.from, c.to, c.diag),
        (State::Up, State::AdminDown, Diag::AdministrativelyDown)
    );
    h.advance(Duration::from_secs(5));
    let sent = h.sent_since(n);
    assert_eq!(
        sent.len(),
        3,
        "detect multiplier's worth of AdminDown packets"
    );
    assert!(sent
        .iter()
        .all(|p| p.state == State::AdminDown && p.diag == Diag::AdministrativelyDown));
    assert!(!h.timers.contains_key(&Timer::Detect));
    // Packets change nothing now.
    h.recv(peer_packet(State::Down, 0, fast()));
    assert_eq!(h.s.state(), State::AdminDown);
    h.ev(Event::AdminUp);
    assert_eq!(h.s.state(), State::Down);
    let p = h.last_sent();
    assert_eq!((p.state, p.your_discr), (State::Down, 0));
    h.recv(peer_packet(State::Down, 0, fast()));
    assert_eq!(h.s.state(), State::Init);
}

#[test]
fn early_timers_are_ignored() {
    let mut h = Harness::new(fast());
    let n = h.sent.len();
    h.ev(Event::Timer(Timer::Tx));
    h.ev(Event::Timer(Timer::Detect));
    assert_eq!(h.sent.len(), n);
    assert_eq!(h.s.state(), State::Down);
}
