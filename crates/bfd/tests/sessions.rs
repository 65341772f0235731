//! Demultiplexing (RFC 5880 §6.3, RFC 5881 §3) and GTSM (RFC 5881 §5)
//! over several sessions, plus what is refused when adding one.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::ms;
use plexus_bfd::jitter::SplitMix64;
use plexus_bfd::packet::{ControlPacket, DecodeError, Diag, State};
use plexus_bfd::session::{Action, Params};
use plexus_bfd::sessions::{AddError, Discard, Outcome, Sessions};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const LOCAL4: &str = "10.0.0.1";
const PEER4: &str = "10.0.0.2";
const LOCAL6: &str = "fd00::1";
const PEER6: &str = "fd00::2";

fn sent(o: &Outcome) -> Vec<ControlPacket> {
    o.actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(p) => Some(*p),
            _ => None,
        })
        .collect()
}

fn setup() -> (Sessions, Instant, u32, u32) {
    let mut s = Sessions::new(Box::new(SplitMix64::new(11)));
    let now = Instant::now();
    let p = Params::default();
    let o4 = s.add(now, ip(PEER4), ip(LOCAL4), p).unwrap();
    let o6 = s.add(now, ip(PEER6), ip(LOCAL6), p).unwrap();
    assert_eq!((o4.peer, o4.local), (ip(PEER4), ip(LOCAL4)));
    let d4 = sent(&o4)[0].my_discr;
    let d6 = sent(&o6)[0].my_discr;
    (s, now, d4, d6)
}

fn from_peer(state: State, my: u32, your: u32) -> Vec<u8> {
    ControlPacket {
        diag: Diag::None,
        state,
        poll: false,
        final_: false,
        cpi: false,
        demand: false,
        detect_mult: 3,
        my_discr: my,
        your_discr: your,
        desired_min_tx: 1_000_000,
        required_min_rx: 300_000,
        required_min_echo_rx: 0,
    }
    .encode()
    .to_vec()
}

#[test]
fn discriminators_are_nonzero_and_distinct() {
    let (s, _, d4, d6) = setup();
    assert!(d4 != 0 && d6 != 0 && d4 != d6);
    assert_eq!(s.get(ip(PEER4)).unwrap().session.local_discr(), d4);
    let mut locals: Vec<IpAddr> = s.local_addresses().collect();
    locals.sort();
    assert_eq!(locals, vec![ip(LOCAL4), ip(LOCAL6)]);
}

#[test]
fn first_packets_are_matched_by_addresses_then_by_discriminator() {
    let (mut s, now, d4, d6) = setup();
    // Your Discriminator 0: the session with that peer on that address.
    let o = s
        .receive(
            now,
            &from_peer(State::Down, 77, 0),
            ip(PEER4),
            ip(LOCAL4),
            255,
        )
        .unwrap();
    assert_eq!(o.peer, ip(PEER4));
    assert_eq!(s.status(ip(PEER4)).unwrap().state, State::Init);
    assert_eq!(s.status(ip(PEER6)).unwrap().state, State::Down);
    // Then by discriminator.
    let o = s
        .receive(
            now,
            &from_peer(State::Init, 78, d6),
            ip(PEER6),
            ip(LOCAL6),
            255,
        )
        .unwrap();
    assert_eq!(o.peer, ip(PEER6));
    assert_eq!(s.status(ip(PEER6)).unwrap().state, State::Up);
    assert_eq!(s.status(ip(PEER6)).unwrap().remote_discr, 78);
    s.receive(
        now,
        &from_peer(State::Up, 77, d4),
        ip(PEER4),
        ip(LOCAL4),
        255,
    )
    .unwrap();
    assert_eq!(s.status(ip(PEER4)).unwrap().state, State::Up);
    assert_eq!(s.stats().accepted, 3);
}

#[test]
fn unknown_or_misdirected_packets_are_dropped_and_counted() {
    let (mut s, now, d4, _) = setup();
    let before = s.status(ip(PEER4)).unwrap();
    let cases: Vec<(Vec<u8>, &str, &str, Discard)> = vec![
        (
            from_peer(State::Down, 77, 0),
            "10.0.0.9",
            LOCAL4,
            Discard::UnknownPeer {
                src: ip("10.0.0.9"),
                dst: ip(LOCAL4),
            },
        ),
        // The right peer, but to an address its session does not use.
        (
            from_peer(State::Down, 77, 0),
            PEER4,
            "10.0.0.100",
            Discard::UnknownPeer {
                src: ip(PEER4),
                dst: ip("10.0.0.100"),
            },
        ),
        (
            from_peer(State::Up, 77, 12345),
            PEER4,
            LOCAL4,
            Discard::UnknownDiscr(12345),
        ),
        // A known discriminator from someone else on the link.
        (
            from_peer(State::Up, 77, d4),
            "10.0.0.9",
            LOCAL4,
            Discard::WrongPeer {
                discr: d4,
                src: ip("10.0.0.9"),
            },
        ),
    ];
    for (b, src, dst, want) in cases {
        assert_eq!(s.receive(now, &b, ip(src), ip(dst), 255), Err(want));
    }
    assert_eq!(s.stats().discarded("unknown-peer"), 2);
    assert_eq!(s.stats().discarded("unknown-discr"), 1);
    assert_eq!(s.stats().discarded("wrong-peer"), 1);
    assert_eq!(s.stats().accepted, 0);
    assert_eq!(s.status(ip(PEER4)).unwrap(), before, "nothing changed");
}

#[test]
fn gtsm_requires_ttl_255() {
    let (mut s, now, _, _) = setup();
    for ttl in [0u8, 1, 64, 254] {
        let r = s.receive(
            now,
            &from_peer(State::Down, 77, 0),
            ip(PEER4),
            ip(LOCAL4),
            ttl,
        );
        assert_eq!(r, Err(Discard::Ttl(ttl)));
    }
    assert_eq!(s.stats().discarded("ttl"), 4);
    assert_eq!(s.status(ip(PEER4)).unwrap().state, State::Down);
}

#[test]
fn authenticated_and_malformed_packets_are_counted_by_kind() {
    let (mut s, now, _, _) = setup();
    let mut auth = from_peer(State::Down, 77, 0);
    auth[1] |= 0x04;
    auth[3] = 28;
    auth.extend([1, 4, 0, 0]);
    assert_eq!(
        s.receive(now, &auth, ip(PEER4), ip(LOCAL4), 255),
        Err(Discard::Malformed(DecodeError::Authenticated))
    );
    let mut v2 = from_peer(State::Down, 77, 0);
    v2[0] = 0x40;
    let _ = s.receive(now, &v2, ip(PEER4), ip(LOCAL4), 255);
    let _ = s.receive(now, &[1, 2, 3], ip(PEER4), ip(LOCAL4), 255);
    let _ = s.receive(now, &[0x20; 10], ip(PEER4), ip(LOCAL4), 255);
    assert_eq!(s.stats().discarded("authenticated"), 1);
    assert_eq!(s.stats().discarded("version"), 2);
    assert_eq!(s.stats().discarded("truncated"), 1);
    assert_eq!(s.status(ip(PEER4)).unwrap().state, State::Down);
}

#[test]
fn adding_refuses_duplicates_mixed_families_and_bad_parameters() {
    let (mut s, now, _, _) = setup();
    let p = Params::default();
    assert_eq!(
        s.add(now, ip(PEER4), ip(LOCAL4), p),
        Err(AddError::Exists(ip(PEER4)))
    );
    assert!(matches!(
        s.add(now, ip("10.0.0.3"), ip(LOCAL6), p),
        Err(AddError::Family { .. })
    ));
    for bad in [
        Params::new(ms(100), ms(100), 0),
        Params::new(Duration::ZERO, ms(100), 3),
        Params::new(ms(100), Duration::ZERO, 3),
        Params::new(Duration::from_secs(5000), ms(100), 3),
    ] {
        assert!(matches!(
            s.add(now, ip("10.0.0.4"), ip(LOCAL4), bad),
            Err(AddError::Params { .. })
        ));
        assert!(s.set_params(now, ip(PEER4), bad).is_err());
    }
    assert!(s.get(ip("10.0.0.4")).is_none());
}

#[test]
fn removing_sends_admin_down_and_forgets_the_session() {
    let (mut s, now, d4, _) = setup();
    s.receive(
        now,
        &from_peer(State::Down, 77, 0),
        ip(PEER4),
        ip(LOCAL4),
        255,
    )
    .unwrap();
    let o = s.remove(now, ip(PEER4)).expect("it existed");
    let p = sent(&o);
    assert_eq!(p.len(), 1);
    assert_eq!(
        (p[0].state, p[0].diag, p[0].your_discr),
        (State::AdminDown, Diag::AdministrativelyDown, 77)
    );
    assert!(s.get(ip(PEER4)).is_none());
    assert_eq!(
        s.receive(
            now,
            &from_peer(State::Up, 77, d4),
            ip(PEER4),
            ip(LOCAL4),
            255
        ),
        Err(Discard::UnknownDiscr(d4))
    );
    assert!(s.remove(now, ip(PEER4)).is_none());
    // The peer can be added again, with a new discriminator.
    let o = s
        .add(now, ip(PEER4), ip(LOCAL4), Params::default())
        .unwrap();
    assert_ne!(sent(&o)[0].my_discr, d4);
}

#[test]
fn parameter_changes_reach_the_session() {
    let (mut s, now, _, _) = setup();
    let o = s
        .set_params(now, ip(PEER4), Params::new(ms(50), ms(60), 4))
        .unwrap()
        .expect("the session exists");
    assert_eq!(o.peer, ip(PEER4));
    let st = s.status(ip(PEER4)).unwrap();
    assert_eq!(st.params, Params::new(ms(50), ms(60), 4));
    assert!(st.polling);
    assert!(s
        .set_params(now, ip("10.9.9.9"), Params::default())
        .unwrap()
        .is_none());
}

#[test]
fn random_datagrams_never_panic_and_are_all_counted() {
    use plexus_bfd::Rng;
    let (mut s, now, d4, _) = setup();
    let mut r = SplitMix64::new(99);
    let n = 50_000u64;
    for i in 0..n {
        let len = (r.next_u32() % 40) as usize;
        let mut b: Vec<u8> = (0..len).map(|_| r.next_u32() as u8).collect();
        // Half of them look like version 1 with a sane length, to get past
        // the first checks; some carry a real discriminator.
        if i % 2 == 0 && len >= 24 {
            b[0] = 0x20 | (b[0] & 0x1f);
            b[3] = 24;
            if i % 4 == 0 {
                b[8..12].copy_from_slice(&d4.to_be_bytes());
            }
        }
        let _ = s.receive(now, &b, ip(PEER4), ip(LOCAL4), 255);
    }
    let st = s.stats();
    let discarded: u64 = st.discarded.values().sum();
    assert_eq!(st.accepted + discarded, n);
    assert!(st.accepted > 0, "some random packets were valid: {st:?}");
}
