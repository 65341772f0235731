//! A BGP session driven by what a peer sends: plexus-bgp's FSM (RFC 4271
//! §8) fed the messages a peer's TCP stream frames into, decoded as the
//! speaker's core does (4-octet AS numbers once both OPENs announced them),
//! from OpenSent through OpenConfirm to Established and its UPDATEs.
//!
//! Input: one flags byte (bit 0: an iBGP peer; bit 1: we offer graceful
//! restart; bit 2: the connection is ours, not the peer's), then the bytes
//! the peer sends. Must hold: no panic; every message the FSM sends encodes
//! within 4096 bytes and decodes again; the session ends at most once per
//! time it came up.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netgauze_bgp_pkt::capabilities::BgpCapability;
use netgauze_bgp_pkt::BgpMessage;
use plexus_bgp::codec::{self, HEADER_LEN, MAX_MESSAGE_LEN};
use plexus_bgp::fsm::{Action, Direction, Event, Fsm, FsmConfig, GracefulRestart, Timer};
use plexus_fuzz::invariant;

const CONN: u64 = 1;

#[derive(Default)]
struct Session {
    up: usize,
    down: usize,
}

impl Session {
    fn check(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Send(_, msg) => {
                    let bytes = codec::encode(&msg);
                    invariant!(
                        !bytes.is_empty() && bytes.len() <= MAX_MESSAGE_LEN,
                        "{} bytes: {msg:?}",
                        bytes.len()
                    );
                    invariant!(codec::decode(&bytes, true).is_ok(), "{msg:?}");
                }
                Action::Up(..) => self.up += 1,
                Action::Down { .. } => {
                    self.down += 1;
                    invariant!(
                        self.down <= self.up,
                        "down {} times, up {}",
                        self.down,
                        self.up
                    );
                }
                _ => {}
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut stream)) = data.split_first() else {
        return;
    };
    let cfg = FsmConfig {
        local_as: 64512,
        remote_as: if flags & 1 == 1 { 64512 } else { 65001 },
        router_id: "10.0.0.1".parse().unwrap(),
        hold_time: 90,
        connect_retry: 30,
        passive: flags & 4 == 0,
        graceful_restart: (flags & 2 == 2).then(GracefulRestart::default),
        max_stale_time: (flags & 8 == 8).then_some(120),
    };
    let mut fsm = Fsm::new(cfg);
    let mut s = Session::default();
    s.check(fsm.handle(Event::Start));
    let dir = if flags & 4 == 0 {
        Direction::Incoming
    } else {
        Direction::Outgoing
    };
    s.check(fsm.handle(Event::Connected { conn: CONN, dir }));
    // Our OPEN always announces 4-octet AS numbers.
    let mut asn4_received = false;
    while stream.len() >= HEADER_LEN {
        let header: [u8; HEADER_LEN] = stream[..HEADER_LEN].try_into().unwrap();
        let len = match codec::check_header(&header) {
            Ok(len) => len,
            Err(n) => {
                s.check(fsm.handle(Event::Malformed(CONN, n)));
                break;
            }
        };
        let Some(frame) = stream.get(..len) else {
            break;
        };
        stream = &stream[len..];
        let ev = match codec::decode(frame, asn4_received) {
            Ok(msg) => {
                if let BgpMessage::Open(open) = &msg {
                    asn4_received = open
                        .capabilities()
                        .iter()
                        .any(|c| matches!(c, BgpCapability::FourOctetAs(_)));
                }
                Event::Message(CONN, msg)
            }
            Err(n) => Event::Malformed(CONN, n),
        };
        s.check(fsm.handle(ev));
    }
    // The peer goes quiet, then away.
    s.check(fsm.handle(Event::Timer(Timer::Keepalive(CONN))));
    s.check(fsm.handle(Event::Timer(Timer::Hold(CONN))));
    s.check(fsm.handle(Event::Closed(CONN)));
    s.check(fsm.handle(Event::Timer(Timer::GrRestart)));
    s.check(fsm.handle(Event::Stop));
});
