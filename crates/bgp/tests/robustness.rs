//! Malformed input never panics: mutated valid messages and random bytes go
//! through the same steps as on a session (header check, decode, UPDATE
//! conversion, RIB import). Deterministic (a fixed xorshift seed).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use netgauze_bgp_pkt::BgpMessage;
use plexus_bgp::attrs::{AsSegment, PathAttrs};
use plexus_bgp::codec::{self, Afi, EncodeOptions, HEADER_LEN};
use plexus_bgp::fsm::{Direction, Event, Fsm, FsmConfig};
use plexus_bgp::rib::{PeerInfo, Rib, RibConfig};

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn templates() -> Vec<Vec<u8>> {
    let attrs = PathAttrs {
        as_path: vec![AsSegment {
            set: false,
            asns: vec![65001, 4_200_000_000],
        }],
        next_hop: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))),
        med: Some(1),
        communities: vec![1, 2],
        cluster_list: vec![Ipv4Addr::new(1, 1, 1, 1)],
        originator_id: Some(Ipv4Addr::new(2, 2, 2, 2)),
        ..PathAttrs::local()
    };
    let v4: Vec<IpNet> = vec![
        "10.1.0.0/24".parse().unwrap(),
        "10.2.0.0/16".parse().unwrap(),
    ];
    let v6: Vec<IpNet> = vec!["fd00::/48".parse().unwrap()];
    let mut attrs6 = attrs.clone();
    attrs6.next_hop = Some("fd00::2".parse().unwrap());
    let mut msgs = Vec::new();
    for asn4 in [true, false] {
        let opts = EncodeOptions { asn4, ibgp: true };
        msgs.extend(codec::announce(&v4, &attrs, opts));
        msgs.extend(codec::announce(&v6, &attrs6, opts));
    }
    msgs.extend(codec::withdraw(&[v4.clone(), v6.clone()].concat()));
    msgs.push(codec::end_of_rib(Afi::Ipv6));
    let fsm = Fsm::new(FsmConfig {
        local_as: 4_200_000_001,
        remote_as: 65002,
        router_id: Ipv4Addr::new(10, 0, 0, 1),
        hold_time: 90,
        connect_retry: 30,
        passive: false,
        graceful_restart: Some(Default::default()),
        max_stale_time: None,
    });
    msgs.push(BgpMessage::Open(fsm.open_message()));
    msgs.push(BgpMessage::KeepAlive);
    msgs.iter().map(codec::encode).collect()
}

fn peer() -> PeerInfo {
    PeerInfo {
        addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
        remote_as: 65002,
        local_as: 65002,
        router_id: Ipv4Addr::new(10, 0, 0, 2),
        rr_client: true,
        next_hop_v4: Some(Ipv4Addr::new(10, 0, 0, 1)),
        next_hop_v6: None,
        families: [Afi::Ipv4, Afi::Ipv6].into_iter().collect::<BTreeSet<_>>(),
    }
}

/// What a session does with received bytes; returns whether it decoded.
fn receive(bytes: &[u8], rib: &mut Rib, asn4: bool) -> bool {
    if bytes.len() < HEADER_LEN {
        return false;
    }
    let header: [u8; HEADER_LEN] = bytes[..HEADER_LEN].try_into().unwrap();
    let Ok(len) = codec::check_header(&header) else {
        return false;
    };
    if len > bytes.len() {
        return false;
    }
    match codec::decode(&bytes[..len], asn4) {
        Ok(BgpMessage::Update(u)) => match codec::parse_update(&u) {
            Ok(parsed) => {
                rib.update(peer().addr, &parsed);
                true
            }
            Err(n) => {
                assert_eq!(codec::notification_code(&n).0, 3);
                false
            }
        },
        Ok(_) => true,
        Err(n) => {
            // Every rejection maps to a real NOTIFICATION code.
            let (code, _) = codec::notification_code(&n);
            assert!((1..=7).contains(&code), "code {code}");
            false
        }
    }
}

#[test]
fn templates_all_decode() {
    let mut rib = Rib::new(RibConfig::new(Ipv4Addr::new(10, 0, 0, 1)));
    rib.peer_up(peer());
    for (i, t) in templates().iter().enumerate() {
        // Each template decodes with one of the two AS encodings.
        let ok = receive(t, &mut rib, true) || receive(t, &mut rib, false);
        assert!(ok, "template {i} does not decode");
    }
}

#[test]
fn mutated_and_random_messages_never_panic() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut rib = Rib::new(RibConfig::new(Ipv4Addr::new(10, 0, 0, 1)));
    rib.peer_up(peer());
    let templates = templates();
    let (mut accepted, mut rejected) = (0, 0);
    for round in 0..30_000 {
        let mut m = templates[rng.below(templates.len())].clone();
        if round % 10 == 0 {
            // Random body behind a valid header.
            let len = HEADER_LEN + rng.below(200);
            m = vec![0xff; 16];
            m.extend((len as u16).to_be_bytes());
            m.push(1 + rng.below(5) as u8);
            while m.len() < len {
                m.push(rng.next() as u8);
            }
        } else {
            // Flip 1-4 bytes after the marker (length and type included).
            for _ in 0..1 + rng.below(4) {
                let at = 16 + rng.below(m.len() - 16);
                m[at] = rng.next() as u8;
            }
        }
        if receive(&m, &mut rib, round % 2 == 0) {
            accepted += 1;
        } else {
            rejected += 1;
        }
    }
    // Both paths were exercised.
    assert!(
        accepted > 100 && rejected > 100,
        "{accepted} accepted, {rejected} rejected"
    );
}

#[test]
fn fsm_survives_garbage_in_every_state() {
    let mut rng = XorShift(42);
    let templates = templates();
    let mut established = 0;
    for _ in 0..3000 {
        // The peer's OPEN is the template one (AS 4200000001, 10.0.0.1).
        let mut fsm = Fsm::new(FsmConfig {
            local_as: 65001,
            remote_as: 4_200_000_001,
            router_id: Ipv4Addr::new(10, 0, 0, 9),
            hold_time: 90,
            connect_retry: 30,
            passive: false,
            graceful_restart: Some(Default::default()),
            max_stale_time: None,
        });
        fsm.handle(Event::Start);
        fsm.handle(Event::Connected {
            conn: 1,
            dir: Direction::Outgoing,
        });
        let open = templates.len() - 2;
        for step in 0..8 {
            // Mostly OPEN, then KEEPALIVE, then anything; sometimes mutated.
            let pick = match step {
                0 => open,
                1 => open + 1,
                _ => rng.below(templates.len()),
            };
            let mut m = templates[pick].clone();
            if rng.below(4) == 0 {
                let at = 16 + rng.below(m.len() - 16);
                m[at] = rng.next() as u8;
            }
            let ev = match codec::decode(&m, true) {
                Ok(msg) => Event::Message(1, msg),
                Err(n) => Event::Malformed(1, n),
            };
            fsm.handle(ev);
            if fsm.state() == plexus_bgp::fsm::State::Established {
                established += 1;
            }
        }
    }
    assert!(
        established > 100,
        "garbage never reached Established handling"
    );
}
