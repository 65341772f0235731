//! One BFD session in asynchronous mode (RFC 5880 §6), kept pure: the
//! runtime feeds it [`Event`]s (a received packet, a timer that fired, a
//! parameter change, administrative control) with the current time and a
//! random source, and carries out the [`Action`]s it returns (send a packet,
//! arm or disarm a timer, report a state change). No sockets and no clock.
//!
//! Timing follows §6.8.2–§6.8.4 and §6.8.7:
//! - we transmit every max(our Desired Min TX, the peer's Required Min RX),
//!   jittered per packet to 75–100 % (75–90 % with detect multiplier 1);
//! - while the session is not Up our Desired Min TX is at least 1 s;
//! - a change of what we advertise starts a poll sequence (P bit on the
//!   periodic packets until the peer answers with F); while Up, a larger
//!   TX interval or a smaller Required Min RX only takes effect when the
//!   poll ends, so the peer's detection time is never too short;
//! - detection time = the peer's detect multiplier × max(our Required Min
//!   RX, the peer's Desired Min TX), restarted by every accepted packet.

use std::time::{Duration, Instant};

use crate::jitter::{jittered, Rng};
use crate::packet::{ControlPacket, Diag, State};

/// The Desired Min TX floor while the session is not Up (§6.8.3).
pub const SLOW_TX: Duration = Duration::from_secs(1);

/// The largest interval the packet's 32-bit microsecond fields can carry.
pub const MAX_INTERVAL: Duration = Duration::from_micros(u32::MAX as u64);

/// A session's timing parameters as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Params {
    /// How often we would like to send (bfd.DesiredMinTxInterval once Up).
    pub desired_min_tx: Duration,
    /// How often we can take the peer's packets (bfd.RequiredMinRxInterval).
    pub required_min_rx: Duration,
    /// bfd.DetectMult: the peer declares us down after this many of our
    /// intervals without a packet.
    pub detect_mult: u8,
}

impl Default for Params {
    /// 300 ms × 3, FRR's defaults: a failure is seen in under a second.
    fn default() -> Params {
        Params {
            desired_min_tx: Duration::from_millis(300),
            required_min_rx: Duration::from_millis(300),
            detect_mult: 3,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    #[error("detect multiplier must be at least 1")]
    ZeroDetectMult,
    #[error("{0} must be at least 1 µs")]
    Zero(&'static str),
    #[error("{0} must be at most {max:?}", max = MAX_INTERVAL)]
    TooLarge(&'static str),
}

impl Params {
    pub fn new(desired_min_tx: Duration, required_min_rx: Duration, detect_mult: u8) -> Params {
        Params {
            desired_min_tx,
            required_min_rx,
            detect_mult,
        }
    }

    /// Zero intervals are refused although the RFC gives a zero Required
    /// Min RX a meaning ("send me nothing"): such a session could never
    /// come Up in asynchronous mode.
    pub fn validate(&self) -> Result<(), ParamsError> {
        if self.detect_mult == 0 {
            return Err(ParamsError::ZeroDetectMult);
        }
        for (name, v) in [
            ("desired min TX interval", self.desired_min_tx),
            ("required min RX interval", self.required_min_rx),
        ] {
            if v < Duration::from_micros(1) {
                return Err(ParamsError::Zero(name));
            }
            if v > MAX_INTERVAL {
                return Err(ParamsError::TooLarge(name));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Our discriminator: nonzero and unique on this system.
    pub local_discr: u32,
    pub params: Params,
    /// Passive role (§6.1): send nothing until the peer has been heard.
    pub passive: bool,
}

/// The timers a session asks the runtime to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Timer {
    /// The next periodic packet.
    Tx,
    /// The detection time without a packet from the peer.
    Detect,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A packet from the peer, decoded and selected for this session.
    Packet(ControlPacket),
    /// A timer armed by [`Action::Arm`] fired (early or stale ones are
    /// ignored, so the runtime need not cancel precisely).
    Timer(Timer),
    /// New timing parameters (a poll sequence tells the peer).
    SetParams(Params),
    /// Administratively disable the session (§6.8.16).
    AdminDown,
    /// Enable it again.
    AdminUp,
}

/// A change of our session state, for the consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct StateChange {
    pub from: State,
    pub to: State,
    /// Why (our bfd.LocalDiag after the change).
    pub diag: Diag,
    /// The peer's last reported state: a Down with the peer in AdminDown
    /// was the peer's decision, not a path failure (RFC 5882 §3.2).
    pub remote_state: State,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Send(ControlPacket),
    /// (Re)arm a timer to fire at the given time.
    Arm(Timer, Instant),
    Disarm(Timer),
    StateChanged(StateChange),
}

pub type Actions = Vec<Action>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Poll {
    Idle,
    Active,
    /// Parameters changed again during the poll: the Final we get may
    /// answer a packet with the older values, so poll once more.
    Restart,
}

/// What we know of the peer (bfd.Remote* variables).
#[derive(Debug, Clone, Copy)]
struct Remote {
    discr: u32,
    state: State,
    diag: Diag,
    demand: bool,
    min_rx: Duration,
    desired_min_tx: Duration,
    /// 0 until the first packet.
    detect_mult: u8,
}

impl Remote {
    fn initial() -> Remote {
        Remote {
            discr: 0,
            state: State::Down,
            diag: Diag::None,
            demand: false,
            // §6.8.1: "initialized to 1".
            min_rx: Duration::from_micros(1),
            desired_min_tx: Duration::ZERO,
            detect_mult: 0,
        }
    }
}

/// What `plexusctl` and the consumer see of a session.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Status {
    pub local_discr: u32,
    pub remote_discr: u32,
    pub state: State,
    pub remote_state: State,
    /// What we send now (bfd.LocalDiag).
    pub local_diag: Diag,
    pub remote_diag: Diag,
    /// Why the session last left Up or Init (None: it never did).
    pub last_down_diag: Option<Diag>,
    /// As configured.
    pub params: Params,
    /// Our Desired Min TX on the wire (at least 1 s while not Up).
    pub advertised_min_tx: Duration,
    /// The interval we transmit at now, before jitter.
    pub tx_interval: Duration,
    /// The peer's packets may be this far apart before we declare it down
    /// (None until it has been heard).
    pub detection_time: Option<Duration>,
    pub remote_detect_mult: u8,
    pub remote_min_rx: Duration,
    pub remote_desired_min_tx: Duration,
    pub polling: bool,
    #[serde(skip)]
    pub last_change: Instant,
    pub packets_in: u64,
    pub packets_out: u64,
}

#[derive(Debug)]
pub struct Session {
    local_discr: u32,
    params: Params,
    passive: bool,
    state: State,
    local_diag: Diag,
    last_down_diag: Option<Diag>,
    remote: Remote,
    /// Desired Min TX and Required Min RX as we advertise them.
    adv_tx: Duration,
    adv_rx: Duration,
    /// The values our own timing uses (differ from the advertised ones
    /// during a poll sequence, §6.8.3).
    tx_in_use: Duration,
    rx_in_use: Duration,
    poll: Poll,
    /// The peer polled: our next packet carries F.
    final_owed: bool,
    next_tx: Option<Instant>,
    /// The negotiated interval `next_tx` was drawn from.
    scheduled_interval: Duration,
    last_tx: Option<Instant>,
    last_rx: Option<Instant>,
    detect_at: Option<Instant>,
    /// AdminDown packets still to send before we fall silent.
    admin_down_left: u8,
    last_change: Instant,
    packets_in: u64,
    packets_out: u64,
}

fn micros(d: Duration) -> u32 {
    d.as_micros().min(u128::from(u32::MAX)) as u32
}

fn from_micros(us: u32) -> Duration {
    Duration::from_micros(u64::from(us))
}

impl Session {
    /// A session in Down that sends nothing until [`Session::start`].
    pub fn new(cfg: SessionConfig, now: Instant) -> Session {
        let adv_tx = cfg.params.desired_min_tx.max(SLOW_TX);
        Session {
            local_discr: cfg.local_discr,
            params: cfg.params,
            passive: cfg.passive,
            state: State::Down,
            local_diag: Diag::None,
            last_down_diag: None,
            remote: Remote::initial(),
            adv_tx,
            adv_rx: cfg.params.required_min_rx,
            tx_in_use: adv_tx,
            rx_in_use: cfg.params.required_min_rx,
            poll: Poll::Idle,
            final_owed: false,
            next_tx: None,
            scheduled_interval: Duration::ZERO,
            last_tx: None,
            last_rx: None,
            detect_at: None,
            admin_down_left: 0,
            last_change: now,
            packets_in: 0,
            packets_out: 0,
        }
    }

    /// Begin transmitting: the first packet goes at once (unless passive).
    pub fn start(&mut self, now: Instant, rng: &mut dyn Rng) -> Actions {
        let mut out = Vec::new();
        if self.periodic_allowed() {
            self.transmit(now, &mut out);
        }
        self.schedule_next(now, rng, &mut out);
        out
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn local_discr(&self) -> u32 {
        self.local_discr
    }

    pub fn params(&self) -> Params {
        self.params
    }

    pub fn status(&self) -> Status {
        Status {
            local_discr: self.local_discr,
            remote_discr: self.remote.discr,
            state: self.state,
            remote_state: self.remote.state,
            local_diag: self.local_diag,
            remote_diag: self.remote.diag,
            last_down_diag: self.last_down_diag,
            params: self.params,
            advertised_min_tx: self.adv_tx,
            tx_interval: self.tx_interval(),
            detection_time: self.detection_time(),
            remote_detect_mult: self.remote.detect_mult,
            remote_min_rx: self.remote.min_rx,
            remote_desired_min_tx: self.remote.desired_min_tx,
            polling: self.poll != Poll::Idle,
            last_change: self.last_change,
            packets_in: self.packets_in,
            packets_out: self.packets_out,
        }
    }

    pub fn handle(&mut self, now: Instant, event: Event, rng: &mut dyn Rng) -> Actions {
        let mut out = Vec::new();
        match event {
            Event::Packet(p) => self.receive(now, &p, rng, &mut out),
            Event::Timer(Timer::Tx) => self.tx_timer(now, rng, &mut out),
            Event::Timer(Timer::Detect) => self.detect_timer(now, rng, &mut out),
            Event::SetParams(p) => self.set_params(now, p, rng, &mut out),
            Event::AdminDown => {
                if self.state != State::AdminDown {
                    self.set_state(
                        now,
                        State::AdminDown,
                        Diag::AdministrativelyDown,
                        rng,
                        &mut out,
                    );
                }
            }
            Event::AdminUp => {
                if self.state == State::AdminDown {
                    // What we knew of the peer may be stale by now.
                    self.remote = Remote::initial();
                    self.set_state(now, State::Down, Diag::None, rng, &mut out);
                }
            }
        }
        out
    }

    /// The packet we would send now.
    fn packet(&self) -> ControlPacket {
        ControlPacket {
            diag: self.local_diag,
            state: self.state,
            // Never both (§6.8.7): a Final goes first, the poll resumes on
            // the next packet.
            poll: self.poll != Poll::Idle && !self.final_owed,
            final_: self.final_owed,
            cpi: false,
            demand: false,
            detect_mult: self.params.detect_mult,
            my_discr: self.local_discr,
            your_discr: self.remote.discr,
            desired_min_tx: micros(self.adv_tx),
            required_min_rx: micros(self.adv_rx),
            // No Echo function.
            required_min_echo_rx: 0,
        }
    }

    fn transmit(&mut self, now: Instant, out: &mut Actions) {
        out.push(Action::Send(self.packet()));
        self.final_owed = false;
        self.packets_out += 1;
        self.last_tx = Some(now);
        if self.state == State::AdminDown {
            self.admin_down_left = self.admin_down_left.saturating_sub(1);
        }
    }

    /// §6.8.7's conditions for periodic transmission.
    fn periodic_allowed(&self) -> bool {
        if self.state == State::AdminDown {
            return self.admin_down_left > 0;
        }
        if self.passive && self.remote.discr == 0 {
            return false;
        }
        if self.remote.min_rx.is_zero() {
            return false;
        }
        let remote_demand =
            self.remote.demand && self.state == State::Up && self.remote.state == State::Up;
        !(remote_demand && self.poll == Poll::Idle)
    }

    fn tx_interval(&self) -> Duration {
        self.tx_in_use.max(self.remote.min_rx)
    }

    fn detection_time(&self) -> Option<Duration> {
        (self.remote.detect_mult > 0).then(|| {
            self.rx_in_use.max(self.remote.desired_min_tx) * u32::from(self.remote.detect_mult)
        })
    }

    fn arm_tx(&mut self, at: Instant, interval: Duration, out: &mut Actions) {
        self.next_tx = Some(at);
        self.scheduled_interval = interval;
        out.push(Action::Arm(Timer::Tx, at));
    }

    fn disarm_tx(&mut self, out: &mut Actions) {
        if self.next_tx.take().is_some() {
            out.push(Action::Disarm(Timer::Tx));
        }
    }

    /// Draw the next periodic packet's time, one jittered interval after
    /// the last one sent.
    fn schedule_next(&mut self, now: Instant, rng: &mut dyn Rng, out: &mut Actions) {
        if !self.periodic_allowed() {
            self.disarm_tx(out);
            return;
        }
        let interval = self.tx_interval();
        let base = self.last_tx.unwrap_or(now);
        let at = (base + jittered(interval, self.params.detect_mult, rng)).max(now);
        self.arm_tx(at, interval, out);
    }

    /// After something changed the negotiated interval or whether we may
    /// transmit: start, stop, or pull the next packet in. A shorter interval
    /// is honoured at once (§6.8.3: never wait longer than the new interval
    /// since the last packet); a longer one applies from the next packet.
    fn refresh_tx(&mut self, now: Instant, rng: &mut dyn Rng, out: &mut Actions) {
        if !self.periodic_allowed() {
            self.disarm_tx(out);
            return;
        }
        let Some(next) = self.next_tx else {
            self.schedule_next(now, rng, out);
            return;
        };
        let interval = self.tx_interval();
        if interval < self.scheduled_interval {
            let base = self.last_tx.unwrap_or(now);
            let at = (base + jittered(interval, self.params.detect_mult, rng)).max(now);
            if at < next {
                self.arm_tx(at, interval, out);
                return;
            }
        }
        // Redrawing on every packet would bias the jitter towards 75 %.
        self.scheduled_interval = interval;
    }

    fn tx_timer(&mut self, now: Instant, rng: &mut dyn Rng, out: &mut Actions) {
        match self.next_tx {
            Some(at) if now >= at => {}
            _ => return,
        }
        self.next_tx = None;
        if self.periodic_allowed() {
            self.transmit(now, out);
        }
        self.schedule_next(now, rng, out);
    }

    fn arm_detect(&mut self, out: &mut Actions) {
        let (Some(rx), Some(dt)) = (self.last_rx, self.detection_time()) else {
            return;
        };
        let at = rx + dt;
        if self.detect_at != Some(at) {
            self.detect_at = Some(at);
            out.push(Action::Arm(Timer::Detect, at));
        }
    }

    fn detect_timer(&mut self, now: Instant, rng: &mut dyn Rng, out: &mut Actions) {
        match self.detect_at {
            Some(at) if now >= at => {}
            _ => return,
        }
        self.detect_at = None;
        // §6.8.1: the peer's discriminator is forgotten after a detection
        // time of silence, whatever our state.
        self.remote.discr = 0;
        self.remote.state = State::Down;
        self.remote.demand = false;
        if matches!(self.state, State::Init | State::Up) {
            self.set_state(
                now,
                State::Down,
                Diag::ControlDetectionTimeExpired,
                rng,
                out,
            );
        } else {
            self.refresh_tx(now, rng, out);
        }
    }

    fn set_params(&mut self, now: Instant, p: Params, rng: &mut dyn Rng, out: &mut Actions) {
        self.params = p;
        if self.state != State::AdminDown {
            self.set_timing(self.desired_tx_for(self.state), p.required_min_rx);
        }
        // A larger Required Min RX lengthens the detection time at once.
        if self.detect_at.is_some() {
            self.arm_detect(out);
        }
        self.refresh_tx(now, rng, out);
    }

    fn desired_tx_for(&self, state: State) -> Duration {
        if state == State::Up {
            self.params.desired_min_tx
        } else {
            self.params.desired_min_tx.max(SLOW_TX)
        }
    }

    /// Change what we advertise (§6.8.3): every change starts a poll
    /// sequence; while Up, only the safe direction (faster TX, slower RX)
    /// takes effect before the peer's Final.
    fn set_timing(&mut self, adv_tx: Duration, adv_rx: Duration) {
        if adv_tx == self.adv_tx && adv_rx == self.adv_rx {
            return;
        }
        let up = self.state == State::Up;
        self.adv_tx = adv_tx;
        self.adv_rx = adv_rx;
        self.tx_in_use = if up {
            self.tx_in_use.min(adv_tx)
        } else {
            adv_tx
        };
        self.rx_in_use = if up {
            self.rx_in_use.max(adv_rx)
        } else {
            adv_rx
        };
        self.poll = match self.poll {
            Poll::Idle => Poll::Active,
            Poll::Active | Poll::Restart => Poll::Restart,
        };
    }

    fn poll_final(&mut self) {
        match self.poll {
            Poll::Idle => {}
            Poll::Active => {
                self.poll = Poll::Idle;
                self.tx_in_use = self.adv_tx;
                self.rx_in_use = self.adv_rx;
            }
            Poll::Restart => self.poll = Poll::Active,
        }
    }

    fn set_state(
        &mut self,
        now: Instant,
        to: State,
        diag: Diag,
        rng: &mut dyn Rng,
        out: &mut Actions,
    ) {
        let from = self.state;
        if from == to {
            return;
        }
        self.state = to;
        self.local_diag = diag;
        self.last_change = now;
        if matches!(from, State::Init | State::Up) && matches!(to, State::Down | State::AdminDown) {
            self.last_down_diag = Some(diag);
        }
        out.push(Action::StateChanged(StateChange {
            from,
            to,
            diag,
            remote_state: self.remote.state,
        }));
        if to == State::AdminDown {
            // Tell the peer a detect multiplier's worth of times, so it
            // hears it despite a loss, then fall silent (§6.8.16).
            self.admin_down_left = self.params.detect_mult;
            self.poll = Poll::Idle;
            self.final_owed = false;
            if self.detect_at.take().is_some() {
                out.push(Action::Disarm(Timer::Detect));
            }
        } else {
            self.set_timing(self.desired_tx_for(to), self.params.required_min_rx);
        }
        // A state change is news for the peer: send it now (as BIRD and
        // FRR do) and count the periodic schedule from this packet.
        if self.periodic_allowed() {
            self.transmit(now, out);
        }
        self.schedule_next(now, rng, out);
    }

    fn receive(&mut self, now: Instant, p: &ControlPacket, rng: &mut dyn Rng, out: &mut Actions) {
        self.packets_in += 1;
        self.remote = Remote {
            discr: p.my_discr,
            state: p.state,
            diag: p.diag,
            demand: p.demand,
            min_rx: from_micros(p.required_min_rx),
            desired_min_tx: from_micros(p.desired_min_tx),
            detect_mult: p.detect_mult,
        };
        if p.final_ {
            self.poll_final();
        }
        if self.state == State::AdminDown {
            return;
        }
        self.last_rx = Some(now);
        self.final_owed = p.poll;
        match (self.state, p.state) {
            (State::Down, State::AdminDown) => {}
            (_, State::AdminDown) => {
                self.set_state(now, State::Down, Diag::NeighborSignaledDown, rng, out)
            }
            (State::Down, State::Down) => self.set_state(now, State::Init, Diag::None, rng, out),
            (State::Down, State::Init) | (State::Init, State::Init | State::Up) => {
                self.set_state(now, State::Up, Diag::None, rng, out)
            }
            (State::Up, State::Down) => {
                self.set_state(now, State::Down, Diag::NeighborSignaledDown, rng, out)
            }
            _ => {}
        }
        self.refresh_tx(now, rng, out);
        self.arm_detect(out);
        if self.final_owed {
            // §6.8.7: at once, whatever the timer, state or demand mode say.
            out.push(Action::Send(self.packet()));
            self.final_owed = false;
            self.packets_out += 1;
        }
    }
}
