//! A virtual clock for sessions: a harness keeps the timers a session asks
//! for and fires them in order as a test moves time on.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use plexus_bfd::jitter::SplitMix64;
use plexus_bfd::packet::{ControlPacket, Diag, State};
use plexus_bfd::session::{
    Action, Actions, Event, Params, Session, SessionConfig, StateChange, Timer,
};
use plexus_bfd::Rng;

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Always the same number: 0 gives the shortest jittered interval (75 %),
/// `u32::MAX` a long one.
#[derive(Debug, Clone)]
pub struct FixedRng(pub u32);

impl Rng for FixedRng {
    fn next_u32(&mut self) -> u32 {
        self.0
    }
}

pub struct Harness {
    pub s: Session,
    pub t0: Instant,
    pub now: Instant,
    pub timers: BTreeMap<Timer, Instant>,
    /// Every packet the session sent, with when.
    pub sent: Vec<(Instant, ControlPacket)>,
    pub changes: Vec<(Instant, StateChange)>,
    pub rng: Box<dyn Rng>,
}

pub const LOCAL_DISCR: u32 = 0x1111_1111;
pub const PEER_DISCR: u32 = 0x2222_2222;

impl Harness {
    pub fn new(params: Params) -> Harness {
        Harness::with(params, false, Box::new(SplitMix64::new(7)))
    }

    pub fn with(params: Params, passive: bool, rng: Box<dyn Rng>) -> Harness {
        let t0 = Instant::now();
        let cfg = SessionConfig {
            local_discr: LOCAL_DISCR,
            params,
            passive,
        };
        let mut h = Harness {
            s: Session::new(cfg, t0),
            t0,
            now: t0,
            timers: BTreeMap::new(),
            sent: Vec::new(),
            changes: Vec::new(),
            rng,
        };
        let a = h.s.start(t0, h.rng.as_mut());
        h.apply(&a);
        h
    }

    /// Time since the harness began.
    pub fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    pub fn apply(&mut self, actions: &Actions) {
        for a in actions {
            match a {
                Action::Send(p) => {
                    // Every packet must survive the codec as sent.
                    let back = ControlPacket::decode(&p.encode()).expect("our packet decodes");
                    assert_eq!(&back, p);
                    assert!(!(p.poll && p.final_), "P and F both set: {p:?}");
                    self.sent.push((self.now, *p));
                }
                Action::Arm(t, at) => {
                    assert!(*at >= self.now, "{t:?} armed in the past");
                    self.timers.insert(*t, *at);
                }
                Action::Disarm(t) => {
                    self.timers.remove(t);
                }
                Action::StateChanged(c) => self.changes.push((self.now, *c)),
            }
        }
    }

    pub fn ev(&mut self, e: Event) -> Actions {
        let a = self.s.handle(self.now, e, self.rng.as_mut());
        self.apply(&a);
        a
    }

    pub fn recv(&mut self, p: ControlPacket) -> Actions {
        self.ev(Event::Packet(p))
    }

    /// Move the clock on by `d`, firing due timers in order.
    pub fn advance(&mut self, d: Duration) {
        let end = self.now + d;
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
            self.ev(Event::Timer(t));
        }
        self.now = end;
    }

    /// Move the clock on by `d` while the peer sends `p` every `every`.
    pub fn advance_with_peer(&mut self, d: Duration, every: Duration, p: ControlPacket) {
        let end = self.now + d;
        while self.now + every <= end {
            self.advance(every);
            self.recv(p);
        }
        let rest = end - self.now;
        self.advance(rest);
    }

    /// Packets sent since index `from` of `sent`.
    pub fn sent_since(&self, from: usize) -> Vec<ControlPacket> {
        self.sent[from..].iter().map(|(_, p)| *p).collect()
    }

    pub fn last_sent(&self) -> ControlPacket {
        self.sent.last().expect("something was sent").1
    }

    /// Gaps between consecutive packets sent after `from`.
    pub fn gaps_since(&self, from: Instant) -> Vec<Duration> {
        let times: Vec<Instant> = self
            .sent
            .iter()
            .map(|(t, _)| *t)
            .filter(|t| *t > from)
            .collect();
        times.windows(2).map(|w| w[1] - w[0]).collect()
    }

    /// Bring the session Up with a peer using `peer` params: Down → Init
    /// on the peer's Down, → Up on its Up; then finish our poll sequence.
    pub fn bring_up(&mut self, peer: Params) {
        self.recv(peer_packet(State::Down, 0, peer));
        assert_eq!(self.s.state(), State::Init);
        self.recv(peer_packet(State::Up, LOCAL_DISCR, peer));
        assert_eq!(self.s.state(), State::Up);
        // Our Desired Min TX left the 1 s floor: we poll; the peer answers.
        assert!(self.last_sent().poll, "going Up starts a poll sequence");
        let mut f = peer_packet(State::Up, LOCAL_DISCR, peer);
        f.final_ = true;
        self.recv(f);
        assert!(!self.s.status().polling);
    }
}

/// A packet from the peer as a peer would send it.
pub fn peer_packet(state: State, your_discr: u32, p: Params) -> ControlPacket {
    ControlPacket {
        diag: Diag::None,
        state,
        poll: false,
        final_: false,
        cpi: false,
        demand: false,
        detect_mult: p.detect_mult,
        my_discr: PEER_DISCR,
        your_discr,
        desired_min_tx: p.desired_min_tx.as_micros() as u32,
        required_min_rx: p.required_min_rx.as_micros() as u32,
        required_min_echo_rx: 0,
    }
}
