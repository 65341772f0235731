//! Two sessions talking through an in-memory link (delay, loss, cuts) on a
//! virtual clock: they come Up, negotiate, detect a cut within the
//! detection time, recover, survive loss, and change timers with a poll
//! sequence without a false Down.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::ms;
use plexus_bfd::jitter::SplitMix64;
use plexus_bfd::packet::{ControlPacket, Diag, State};
use plexus_bfd::session::{
    Action, Event, Params, Session, SessionConfig, StateChange, Status, Timer,
};
use plexus_bfd::Rng;

struct Node {
    s: Session,
    timers: BTreeMap<Timer, Instant>,
    rng: SplitMix64,
    changes: Vec<(Instant, StateChange)>,
    /// When packets were delivered to this node, with the detection time
    /// it used after each.
    deliveries: Vec<(Instant, Option<Duration>)>,
    sent: Vec<(Instant, ControlPacket)>,
}

struct Sim {
    t0: Instant,
    now: Instant,
    nodes: [Node; 2],
    /// (arrival, to, packet)
    in_flight: Vec<(Instant, usize, ControlPacket)>,
    delay: Duration,
    /// Per mille of packets lost, each direction.
    loss: u32,
    cut: bool,
    link_rng: SplitMix64,
}

impl Sim {
    fn new(a: Params, b: Params, delay: Duration, seed: u64) -> Sim {
        let t0 = Instant::now();
        let node = |discr, params, seed| Node {
            s: Session::new(
                SessionConfig {
                    local_discr: discr,
                    params,
                    passive: false,
                },
                t0,
            ),
            timers: BTreeMap::new(),
            rng: SplitMix64::new(seed),
            changes: Vec::new(),
            deliveries: Vec::new(),
            sent: Vec::new(),
        };
        let mut sim = Sim {
            t0,
            now: t0,
            nodes: [node(0xa, a, seed), node(0xb, b, seed + 1)],
            in_flight: Vec::new(),
            delay,
            loss: 0,
            cut: false,
            link_rng: SplitMix64::new(seed + 2),
        };
        for i in 0..2 {
            let n = &mut sim.nodes[i];
            let a = n.s.start(t0, &mut n.rng);
            sim.apply(i, a);
        }
        sim
    }

    fn apply(&mut self, i: usize, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Send(p) => {
                    self.nodes[i].sent.push((self.now, p));
                    let lost = self.cut || self.link_rng.next_u32() % 1000 < self.loss;
                    if !lost {
                        self.in_flight.push((self.now + self.delay, 1 - i, p));
                    }
                }
                Action::Arm(t, at) => {
                    self.nodes[i].timers.insert(t, at);
                }
                Action::Disarm(t) => {
                    self.nodes[i].timers.remove(&t);
                }
                Action::StateChanged(c) => self.nodes[i].changes.push((self.now, c)),
            }
        }
    }

    fn event(&mut self, i: usize, e: Event) {
        let n = &mut self.nodes[i];
        let a = n.s.handle(self.now, e, &mut n.rng);
        self.apply(i, a);
    }

    /// Run every timer and delivery up to `end`, in time order.
    fn run_until(&mut self, end: Instant) {
        loop {
            let timer = (0..2)
                .flat_map(|i| self.nodes[i].timers.iter().map(move |(t, at)| (*at, i, *t)))
                .min();
            let delivery = self
                .in_flight
                .iter()
                .enumerate()
                .min_by_key(|(_, (at, _, _))| *at)
                .map(|(k, (at, _, _))| (*at, k));
            let next_timer = timer.filter(|(at, _, _)| *at <= end);
            let next_delivery = delivery.filter(|(at, _)| *at <= end);
            match (next_timer, next_delivery) {
                (None, None) => break,
                (Some((at, i, t)), d) if d.is_none_or(|(dat, _)| at < dat) => {
                    self.now = at;
                    self.nodes[i].timers.remove(&t);
                    self.event(i, Event::Timer(t));
                }
                (_, Some((at, k))) => {
                    self.now = at;
                    let (_, to, p) = self.in_flight.remove(k);
                    // Through the codec, as on the wire.
                    let p = ControlPacket::decode(&p.encode()).expect("decodes");
                    self.event(to, Event::Packet(p));
                    let dt = self.nodes[to].s.status().detection_time;
                    self.nodes[to].deliveries.push((at, dt));
                }
                (Some(_), None) => unreachable!(),
            }
        }
        self.now = end;
    }

    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        self.run_until(end);
    }

    fn state(&self, i: usize) -> State {
        self.nodes[i].s.state()
    }

    fn status(&self, i: usize) -> Status {
        self.nodes[i].s.status()
    }

    fn both_up(&self) -> bool {
        self.state(0) == State::Up && self.state(1) == State::Up
    }

    /// Run until both are Up (and done polling), at most `limit`.
    fn run_until_up(&mut self, limit: Duration) -> Duration {
        let start = self.now;
        while !(self.both_up() && !self.status(0).polling && !self.status(1).polling) {
            assert!(self.now - start < limit, "not Up after {limit:?}");
            self.run_for(ms(1));
        }
        self.now - start
    }
}

fn fast() -> Params {
    Params::new(ms(100), ms(100), 3)
}

#[test]
fn two_sessions_come_up_and_negotiate_their_intervals() {
    let a = Params::new(ms(100), ms(100), 3);
    let b = Params::new(ms(200), ms(50), 5);
    let mut sim = Sim::new(a, b, ms(1), 1);
    let took = sim.run_until_up(Duration::from_secs(5));
    // Both send at once on every change: Up within a few round trips.
    assert!(took < ms(100), "came up in {took:?}");
    let (sa, sb) = (sim.status(0), sim.status(1));
    assert_eq!(sa.remote_discr, 0xb);
    assert_eq!(sb.remote_discr, 0xa);
    // A sends at max(100, B's 50) = 100, B at max(200, A's 100) = 200.
    assert_eq!(sa.tx_interval, ms(100));
    assert_eq!(sb.tx_interval, ms(200));
    // A's detection: B's mult 5 × max(A's rx 100, B's tx 200) = 1 s;
    // B's: A's mult 3 × max(B's rx 50, A's tx 100) = 300 ms.
    assert_eq!(sa.detection_time, Some(Duration::from_secs(1)));
    assert_eq!(sb.detection_time, Some(ms(300)));
    sim.run_for(Duration::from_secs(30));
    assert!(sim.both_up());
    for (i, iv) in [(0, ms(100)), (1, ms(200))] {
        let from = sim.now - Duration::from_secs(20);
        let times: Vec<Instant> = sim.nodes[i]
            .sent
            .iter()
            .map(|(t, _)| *t)
            .filter(|t| *t > from)
            .collect();
        for w in times.windows(2) {
            let g = w[1] - w[0];
            assert!(g >= iv * 3 / 4 && g <= iv, "node {i}: gap {g:?} for {iv:?}");
        }
    }
    assert_eq!(
        sim.nodes[0].changes.len(),
        2,
        "Down → Init/Up, nothing after"
    );
}

#[test]
fn a_cut_is_detected_within_detect_mult_times_the_interval_and_heals() {
    let mut sim = Sim::new(fast(), fast(), ms(1), 2);
    sim.run_until_up(Duration::from_secs(5));
    sim.run_for(Duration::from_secs(10));
    for round in 0..5 {
        let cut_at = sim.now;
        sim.cut = true;
        sim.run_for(Duration::from_secs(2));
        for i in 0..2 {
            let (t, c) = *sim.nodes[i].changes.last().unwrap();
            assert_eq!((c.from, c.to), (State::Up, State::Down), "node {i}");
            // Whoever detects first tells the other nothing (the link is
            // cut): both see the detection time expire.
            assert_eq!(c.diag, Diag::ControlDetectionTimeExpired);
            let took = t - cut_at;
            // The last packet before the cut arrived at most one interval
            // (plus the link's delay) earlier.
            assert!(took <= ms(300), "round {round} node {i}: {took:?}");
            assert!(
                took > ms(300) - ms(100) - ms(1),
                "round {round} node {i}: {took:?}"
            );
        }
        sim.cut = false;
        // Down: 1 s packets, so up to two slow intervals to meet again.
        sim.run_until_up(Duration::from_secs(5));
        sim.run_for(Duration::from_secs(3));
        assert!(sim.both_up());
    }
}

#[test]
fn a_lossy_link_never_gives_a_false_down_and_always_recovers() {
    // 30 % loss each way with detect mult 3: about one packet in 37 starts
    // a run of three losses, so sessions do go down, and each Down must be
    // a true one: exactly a detection time after the last delivery.
    let mut sim = Sim::new(fast(), fast(), ms(2), 3);
    sim.loss = 300;
    let end = sim.now + Duration::from_secs(300);
    let mut checked = 0;
    while sim.now < end {
        let before: [usize; 2] = [sim.nodes[0].changes.len(), sim.nodes[1].changes.len()];
        let dt: [Option<Duration>; 2] =
            [sim.status(0).detection_time, sim.status(1).detection_time];
        let st: [State; 2] = [sim.state(0), sim.state(1)];
        sim.run_for(ms(1));
        for i in 0..2 {
            for (t, c) in sim.nodes[i].changes[before[i]..].iter().copied() {
                if c.diag != Diag::ControlDetectionTimeExpired {
                    continue;
                }
                assert!(matches!(st[i], State::Init | State::Up));
                let last = sim.nodes[i]
                    .deliveries
                    .iter()
                    .rev()
                    .find(|(d, _)| *d < t)
                    .map(|(d, _)| *d)
                    .expect("a session that was Up had packets");
                assert_eq!(t - last, dt[i].unwrap(), "node {i} went Down early or late");
                checked += 1;
            }
        }
    }
    assert!(
        checked > 5,
        "only {checked} detections under 30 % loss: the check is idle"
    );
    // Liveness: while a node was Up, no two deliveries were further apart
    // than its detection time then (it would have gone Down in between).
    for i in 0..2 {
        let n = &sim.nodes[i];
        let downs: Vec<Instant> = n
            .changes
            .iter()
            .filter(|(_, c)| c.from == State::Up)
            .map(|(t, _)| *t)
            .collect();
        let mut long_gaps = 0;
        for w in n.deliveries.windows(2) {
            let ((t0, dt), (t1, _)) = (w[0], w[1]);
            let up_at_t0 = n
                .changes
                .iter()
                .rev()
                .find(|(t, _)| *t <= t0)
                .is_some_and(|(_, c)| c.to == State::Up);
            if up_at_t0 && t1 - t0 > dt.unwrap() {
                long_gaps += 1;
                assert!(
                    downs.iter().any(|d| *d == t0 + dt.unwrap()),
                    "node {i}: {:?} without a packet and no Down",
                    t1 - t0
                );
            }
        }
        assert!(long_gaps > 0, "node {i}: the liveness check saw no gap");
    }
    sim.loss = 0;
    sim.run_until_up(Duration::from_secs(10));
}

#[test]
fn a_poll_sequence_changes_timers_without_a_false_down() {
    let mut sim = Sim::new(fast(), fast(), ms(5), 4);
    sim.run_until_up(Duration::from_secs(5));
    sim.run_for(Duration::from_secs(2));
    // A slows down to 1 s: the P bit until B's F; B then expects A every
    // second; only then does A's interval grow.
    sim.event(
        0,
        Event::SetParams(Params::new(Duration::from_secs(1), ms(100), 3)),
    );
    assert!(sim.status(0).polling);
    assert_eq!(sim.status(0).tx_interval, ms(100));
    let sent_before = sim.nodes[0].sent.len();
    sim.run_for(ms(300));
    let polled: Vec<ControlPacket> = sim.nodes[0].sent[sent_before..]
        .iter()
        .map(|(_, p)| *p)
        .collect();
    assert!(
        polled.first().is_some_and(|p| p.poll),
        "P on the next periodic packet"
    );
    let finals = sim.nodes[1].sent.iter().filter(|(_, p)| p.final_).count();
    assert!(finals >= 1, "B answered with F");
    assert!(!sim.status(0).polling, "the F ended the poll");
    assert_eq!(sim.status(0).tx_interval, Duration::from_secs(1));
    assert_eq!(sim.status(1).detection_time, Some(Duration::from_secs(3)));
    sim.run_for(Duration::from_secs(20));
    assert!(sim.both_up());
    assert_eq!(sim.nodes[1].changes.len(), 2, "B never went down");
    // And faster again, with B's detection time shrinking only after the
    // change reached it.
    sim.event(0, Event::SetParams(fast()));
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sim.status(1).detection_time, Some(ms(300)));
    assert_eq!(sim.status(0).tx_interval, ms(100));
    assert!(!sim.status(0).polling);
    assert!(sim.both_up());
    // A cut is now seen in 300 ms again.
    let cut_at = sim.now;
    sim.cut = true;
    sim.run_for(Duration::from_secs(1));
    let (t, _) = *sim.nodes[1].changes.last().unwrap();
    assert!(t - cut_at <= ms(300));
}

#[test]
fn admin_down_on_one_side_is_signalled_to_the_other() {
    let mut sim = Sim::new(fast(), fast(), ms(1), 5);
    sim.run_until_up(Duration::from_secs(5));
    sim.event(0, Event::AdminDown);
    sim.run_for(ms(10));
    let (_, c) = *sim.nodes[1].changes.last().unwrap();
    assert_eq!(
        (c.to, c.diag, c.remote_state),
        (State::Down, Diag::NeighborSignaledDown, State::AdminDown)
    );
    sim.run_for(Duration::from_secs(10));
    assert_eq!(sim.state(1), State::Down);
    sim.event(0, Event::AdminUp);
    sim.run_until_up(Duration::from_secs(5));
    let t0 = sim.t0;
    assert!(sim.now > t0);
}
