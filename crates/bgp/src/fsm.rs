//! The session state machine of one peer (RFC 4271 §8), kept pure: the
//! runtime feeds it [`Event`]s (connections, messages, timer expiries) and
//! carries out the [`Action`]s it returns (send, close, start/stop a timer,
//! session up/down, routes in). No sockets and no clock, so tests drive it
//! step by step.
//!
//! A peer may have two connections at once, one we opened and one the peer
//! opened; each has its own OpenSent/OpenConfirm/Established progress, and
//! the collision rule of §6.8 keeps one of them. The peer's state (what
//! `plexusctl bgp status` shows) is the most advanced connection's, or
//! Idle/Connect/Active while none has sent an OPEN.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use netgauze_bgp_pkt::notification::{BgpNotificationMessage, CeaseError};
use netgauze_bgp_pkt::open::BgpOpenMessage;
use netgauze_bgp_pkt::BgpMessage;

use crate::codec::{self, Afi, ParsedUpdate};
use crate::open;
pub use crate::open::{GracefulRestart, Negotiated, PeerGracefulRestart};

/// A connection's identity, given by the runtime.
pub type ConnId = u64;

/// Who opened a connection (collision detection closes one side's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// We connected to the peer.
    Outgoing,
    /// The peer connected to us.
    Incoming,
}

/// RFC 4271 §8.2.2 states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum State {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// The timers the runtime runs for the FSM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    ConnectRetry,
    Hold(ConnId),
    Keepalive(ConnId),
    /// Helper side of graceful restart: how long we wait for a restarting
    /// peer to come back (its Restart Time).
    GrRestart,
    /// Helper side: how long a re-established peer may take to send its
    /// End-of-RIB before we drop its stale routes.
    GrStale,
    /// Down after a prefix limit was exceeded: start again when it fires
    /// (RFC 4271's IdleHoldTimer).
    IdleHold,
}

/// What the FSM needs to know about its peer and itself.
#[derive(Debug, Clone)]
pub struct FsmConfig {
    pub local_as: u32,
    pub remote_as: u32,
    pub router_id: Ipv4Addr,
    /// Hold time we offer; 0 = no keepalives, else at least 3 s.
    pub hold_time: u16,
    pub connect_retry: u16,
    /// Never connect; only accept the peer's connections.
    pub passive: bool,
    /// None: no graceful restart capability.
    pub graceful_restart: Option<GracefulRestart>,
    /// Helper side: the longest we keep the peer's stale routes, whatever
    /// Restart Time it announces (each of the restart and the End-of-RIB
    /// waits is capped by it). None: the peer's time.
    pub max_stale_time: Option<u16>,
}

#[derive(Debug)]
pub enum Event {
    /// Start the peer (ManualStart / AutomaticStart).
    Start,
    /// Stop it (ManualStop): Cease to the peer, routes withdrawn.
    Stop,
    /// A TCP connection is up.
    Connected {
        conn: ConnId,
        dir: Direction,
    },
    /// Our outgoing connection attempt failed.
    ConnectFailed,
    /// The peer closed the connection (or it failed).
    Closed(ConnId),
    Timer(Timer),
    Message(ConnId, BgpMessage),
    /// A message that did not decode; answered with this NOTIFICATION.
    Malformed(ConnId, BgpNotificationMessage),
    /// The peer sent more prefixes than allowed: Cease / Maximum Number of
    /// Prefixes Reached (RFC 4486), then down for `restart` seconds.
    PrefixLimit {
        afi: Afi,
        limit: u32,
        restart: u16,
    },
    /// BFD says the path to the peer failed (RFC 5882 §4.3): the session
    /// goes down at once, without graceful restart (the peer's forwarding
    /// is what failed), with Cease / BFD Down (RFC 9384) sent in case the
    /// link still carries it; connecting resumes as usual.
    BfdDown,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Open an outgoing TCP connection to the peer.
    Connect,
    Send(ConnId, BgpMessage),
    /// Close after what was sent has been written.
    Close(ConnId),
    StartTimer(Timer, u16),
    StopTimer(Timer),
    /// The session is Established on this connection.
    Up(ConnId, Negotiated),
    /// The session is gone. `graceful`: keep the peer's routes, marked
    /// stale (we are its graceful-restart helper).
    Down {
        graceful: bool,
        reason: String,
    },
    /// Routes announced or withdrawn by the peer (or its End-of-RIB).
    Update(ParsedUpdate),
    /// The peer asked for our routes again (RFC 2918).
    RouteRefresh(Afi),
    /// Drop the peer's stale routes: all families, or one.
    PurgeStale(Option<Afi>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnState {
    OpenSent,
    OpenConfirm,
    Established,
}

#[derive(Debug)]
struct Conn {
    id: ConnId,
    dir: Direction,
    state: ConnState,
    neg: Option<Negotiated>,
}

/// Hold time while waiting for the peer's OPEN (RFC 4271 §8: "4 minutes").
const LARGE_HOLD: u16 = 240;

/// One peer's FSM.
#[derive(Debug)]
pub struct Fsm {
    cfg: FsmConfig,
    base: State,
    conns: Vec<Conn>,
    /// Families whose routes from this peer are stale (GR helper).
    stale: BTreeSet<Afi>,
    last_error: Option<String>,
    /// Down after a prefix limit, waiting for [`Timer::IdleHold`].
    held: bool,
}

type Actions = Vec<Action>;

impl Fsm {
    pub fn new(cfg: FsmConfig) -> Fsm {
        Fsm {
            cfg,
            base: State::Idle,
            conns: Vec::new(),
            stale: BTreeSet::new(),
            last_error: None,
            held: false,
        }
    }

    pub fn config(&self) -> &FsmConfig {
        &self.cfg
    }

    /// The peer's state: its most advanced connection's.
    pub fn state(&self) -> State {
        self.conns
            .iter()
            .map(|c| match c.state {
                ConnState::OpenSent => State::OpenSent,
                ConnState::OpenConfirm => State::OpenConfirm,
                ConnState::Established => State::Established,
            })
            .max()
            .unwrap_or(self.base)
    }

    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// The established session's connection and what it negotiated.
    pub fn established(&self) -> Option<(ConnId, &Negotiated)> {
        self.conns
            .iter()
            .find(|c| c.state == ConnState::Established)
            .and_then(|c| c.neg.as_ref().map(|n| (c.id, n)))
    }

    /// Whether the peer's routes are held stale (graceful-restart helper).
    pub fn has_stale(&self) -> bool {
        !self.stale.is_empty()
    }

    pub fn handle(&mut self, event: Event) -> Actions {
        let mut out = Vec::new();
        match event {
            Event::Start => self.start(&mut out),
            Event::Stop => self.stop(&mut out),
            Event::Connected { conn, dir } => self.connected(conn, dir, &mut out),
            Event::ConnectFailed => {
                if self.base == State::Connect {
                    self.base = State::Active;
                }
            }
            Event::Closed(conn) => {
                if self.conns.iter().any(|c| c.id == conn) {
                    self.set_error("connection closed by the peer".into());
                    self.drop_conn(conn, false, &mut out);
                }
            }
            Event::Timer(t) => self.timer(t, &mut out),
            Event::Message(conn, msg) => self.message(conn, msg, &mut out),
            Event::Malformed(conn, n) => {
                if self.conns.iter().any(|c| c.id == conn) {
                    self.set_error(format!("sent {}", codec::describe_notification(&n)));
                    self.notify_and_drop(conn, n, &mut out);
                }
            }
            Event::PrefixLimit {
                afi,
                limit,
                restart,
            } => self.prefix_limit(afi, limit, restart, &mut out),
            Event::BfdDown => self.bfd_down(&mut out),
        }
        out
    }

    fn bfd_down(&mut self, out: &mut Actions) {
        if self.conns.is_empty() {
            return;
        }
        self.set_error("BFD session went down: the path to the peer failed".into());
        let ids: Vec<ConnId> = self.conns.iter().map(|c| c.id).collect();
        for id in ids {
            let n = codec::cease(CeaseError::BfdDown {
                value: Box::new([]),
            });
            self.notify_and_drop(id, n, out);
        }
        // Routes held stale from an earlier restart are no good either.
        if !self.stale.is_empty() {
            self.stale.clear();
            out.push(Action::PurgeStale(None));
        }
    }

    fn prefix_limit(&mut self, afi: Afi, limit: u32, restart: u16, out: &mut Actions) {
        if self.established().is_none() || self.base == State::Idle {
            return;
        }
        self.set_error(format!(
            "sent cease: maximum number of prefixes reached (more than {limit}, {afi:?}); \
             the session stays down for {restart} s"
        ));
        // Idle first: dropping the connections must not schedule a retry.
        self.base = State::Idle;
        self.held = true;
        out.push(Action::StopTimer(Timer::ConnectRetry));
        let ids: Vec<ConnId> = self.conns.iter().map(|c| c.id).collect();
        for id in ids {
            self.notify_and_drop(id, codec::max_prefixes_reached(afi, limit), out);
        }
        out.push(Action::StartTimer(Timer::IdleHold, restart.max(1)));
    }

    /// The restart or End-of-RIB wait, capped by `max_stale_time`.
    fn stale_cap(&self, secs: u16) -> u16 {
        self.cfg.max_stale_time.map_or(secs, |m| secs.min(m))
    }

    fn set_error(&mut self, e: String) {
        self.last_error = Some(e);
    }

    fn start(&mut self, out: &mut Actions) {
        if self.base != State::Idle {
            return;
        }
        if self.cfg.passive {
            self.base = State::Active;
        } else {
            self.base = State::Connect;
            out.push(Action::Connect);
            out.push(Action::StartTimer(
                Timer::ConnectRetry,
                self.cfg.connect_retry,
            ));
        }
    }

    fn stop(&mut self, out: &mut Actions) {
        let ids: Vec<ConnId> = self.conns.iter().map(|c| c.id).collect();
        for id in ids {
            let n = codec::cease(CeaseError::AdministrativeShutdown {
                value: Box::new([]),
            });
            self.notify_and_drop(id, n, out);
        }
        out.push(Action::StopTimer(Timer::ConnectRetry));
        out.push(Action::StopTimer(Timer::GrRestart));
        out.push(Action::StopTimer(Timer::GrStale));
        out.push(Action::StopTimer(Timer::IdleHold));
        self.held = false;
        if !self.stale.is_empty() {
            self.stale.clear();
            out.push(Action::PurgeStale(None));
        }
        self.base = State::Idle;
    }

    fn connected(&mut self, conn: ConnId, dir: Direction, out: &mut Actions) {
        // Stopped: refuse. Established: an outgoing connection that was
        // under way when the peer's own got there first is not needed.
        // (An incoming one is kept: it may be the peer coming back after a
        // restart, RFC 4724 §4.2.)
        let redundant = dir == Direction::Outgoing && self.established().is_some();
        if self.base == State::Idle || redundant {
            out.push(Action::Close(conn));
            return;
        }
        // A second connection of the same direction that has not got far
        // replaces the first (the peer gave up on it).
        let stale: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|c| c.dir == dir && c.state != ConnState::Established)
            .map(|c| c.id)
            .collect();
        for id in stale {
            self.remove_conn(id, out);
        }
        if dir == Direction::Outgoing {
            out.push(Action::StopTimer(Timer::ConnectRetry));
        }
        self.conns.push(Conn {
            id: conn,
            dir,
            state: ConnState::OpenSent,
            neg: None,
        });
        out.push(Action::Send(conn, BgpMessage::Open(self.open_message())));
        out.push(Action::StartTimer(Timer::Hold(conn), LARGE_HOLD));
    }

    fn timer(&mut self, t: Timer, out: &mut Actions) {
        match t {
            Timer::ConnectRetry => {
                if self.base == State::Idle || self.cfg.passive || !self.conns.is_empty() {
                    return;
                }
                self.base = State::Connect;
                out.push(Action::Connect);
                out.push(Action::StartTimer(
                    Timer::ConnectRetry,
                    self.cfg.connect_retry,
                ));
            }
            Timer::Hold(conn) => {
                if self.conns.iter().any(|c| c.id == conn) {
                    self.set_error("hold timer expired".into());
                    self.notify_and_drop(conn, codec::hold_timer_expired(), out);
                }
            }
            Timer::Keepalive(conn) => {
                if let Some(c) = self.conns.iter().find(|c| c.id == conn) {
                    if let Some(n) = &c.neg {
                        out.push(Action::Send(conn, BgpMessage::KeepAlive));
                        out.push(Action::StartTimer(Timer::Keepalive(conn), n.keepalive));
                    }
                }
            }
            Timer::IdleHold => {
                if self.held && self.base == State::Idle {
                    self.held = false;
                    self.start(out);
                }
            }
            Timer::GrRestart | Timer::GrStale => {
                // The peer did not come back (or did not finish) in time.
                if !self.stale.is_empty() && (t == Timer::GrStale || self.established().is_none()) {
                    self.stale.clear();
                    out.push(Action::PurgeStale(None));
                }
            }
        }
    }

    /// Send a NOTIFICATION, then close and forget the connection.
    fn notify_and_drop(&mut self, conn: ConnId, n: BgpNotificationMessage, out: &mut Actions) {
        out.push(Action::Send(conn, BgpMessage::Notification(n)));
        // A NOTIFICATION ends graceful restart (RFC 4724 §4).
        self.drop_conn(conn, true, out);
    }

    fn remove_conn(&mut self, conn: ConnId, out: &mut Actions) -> Option<Conn> {
        let pos = self.conns.iter().position(|c| c.id == conn)?;
        out.push(Action::StopTimer(Timer::Hold(conn)));
        out.push(Action::StopTimer(Timer::Keepalive(conn)));
        out.push(Action::Close(conn));
        Some(self.conns.remove(pos))
    }

    /// Forget a connection; if it carried the session, the session is down
    /// (gracefully when the peer can restart gracefully and no NOTIFICATION
    /// was exchanged).
    fn drop_conn(&mut self, conn: ConnId, notified: bool, out: &mut Actions) {
        let Some(c) = self.remove_conn(conn, out) else {
            return;
        };
        if c.state == ConnState::Established {
            let peer_gr = c.neg.as_ref().and_then(|n| n.peer_gr.clone());
            self.session_down(peer_gr.filter(|_| !notified), out);
        }
        if self.conns.is_empty() && self.base != State::Idle {
            self.base = State::Active;
            if !self.cfg.passive {
                out.push(Action::StartTimer(
                    Timer::ConnectRetry,
                    self.cfg.connect_retry,
                ));
            }
        }
    }

    fn session_down(&mut self, peer_gr: Option<PeerGracefulRestart>, out: &mut Actions) {
        let reason = self
            .last_error
            .clone()
            .unwrap_or_else(|| "session closed".into());
        match peer_gr.filter(|g| g.restart_time > 0 && !g.families.is_empty()) {
            Some(g) => {
                self.stale = g.families.clone();
                out.push(Action::Down {
                    graceful: true,
                    reason,
                });
                out.push(Action::StopTimer(Timer::GrStale));
                out.push(Action::StartTimer(
                    Timer::GrRestart,
                    self.stale_cap(g.restart_time),
                ));
            }
            None => {
                self.stale.clear();
                out.push(Action::Down {
                    graceful: false,
                    reason,
                });
            }
        }
    }

    fn message(&mut self, conn: ConnId, msg: BgpMessage, out: &mut Actions) {
        let Some(state) = self.conns.iter().find(|c| c.id == conn).map(|c| c.state) else {
            return;
        };
        if let BgpMessage::Notification(n) = &msg {
            self.set_error(format!("received {}", codec::describe_notification(n)));
            // Both sides connected at once and the peer resolved the
            // collision against a connection we had already established
            // (it saw our KEEPALIVE before its own check): the session moves
            // to the other connection, so treat this like a restart, not a
            // reset, and keep the routes (stale) when the peer can.
            let handover = matches!(
                n,
                BgpNotificationMessage::CeaseError(
                    CeaseError::ConnectionCollisionResolution { .. }
                )
            ) && self.conns.len() > 1;
            self.drop_conn(conn, !handover, out);
            return;
        }
        match (state, msg) {
            (ConnState::OpenSent, BgpMessage::Open(open)) => self.open_received(conn, &open, out),
            (ConnState::OpenSent, _) => {
                self.set_error("unexpected message in OpenSent".into());
                self.notify_and_drop(conn, codec::fsm_error(1), out);
            }
            (ConnState::OpenConfirm, BgpMessage::KeepAlive) => self.establish(conn, out),
            (ConnState::OpenConfirm, _) => {
                self.set_error("unexpected message in OpenConfirm".into());
                self.notify_and_drop(conn, codec::fsm_error(2), out);
            }
            (ConnState::Established, BgpMessage::KeepAlive) => self.restart_hold(conn, out),
            (ConnState::Established, BgpMessage::Update(u)) => {
                self.restart_hold(conn, out);
                let parsed = match codec::parse_update(&u) {
                    Ok(p) => p,
                    Err(n) => {
                        self.set_error(format!("sent {}", codec::describe_notification(&n)));
                        self.notify_and_drop(conn, n, out);
                        return;
                    }
                };
                if let Some(afi) = parsed.end_of_rib {
                    if self.stale.remove(&afi) {
                        out.push(Action::PurgeStale(Some(afi)));
                        if self.stale.is_empty() {
                            out.push(Action::StopTimer(Timer::GrStale));
                        }
                    }
                }
                out.push(Action::Update(parsed));
            }
            (ConnState::Established, BgpMessage::RouteRefresh(rr)) => {
                self.restart_hold(conn, out);
                if let Some(afi) = Afi::from_address_type(rr.address_type()) {
                    out.push(Action::RouteRefresh(afi));
                }
            }
            (ConnState::Established, _) => {
                self.set_error("unexpected message in Established".into());
                self.notify_and_drop(conn, codec::fsm_error(3), out);
            }
        }
    }

    fn restart_hold(&self, conn: ConnId, out: &mut Actions) {
        if let Some(n) = self
            .conns
            .iter()
            .find(|c| c.id == conn)
            .and_then(|c| c.neg.as_ref())
        {
            if n.hold_time > 0 {
                out.push(Action::StartTimer(Timer::Hold(conn), n.hold_time));
            }
        }
    }

    /// Our OPEN for this peer.
    pub fn open_message(&self) -> BgpOpenMessage {
        open::our_open(
            self.cfg.local_as,
            self.cfg.hold_time,
            self.cfg.router_id,
            self.cfg.graceful_restart,
        )
    }

    fn open_received(&mut self, conn: ConnId, open: &BgpOpenMessage, out: &mut Actions) {
        let checked = open::negotiate(
            open,
            self.cfg.remote_as,
            self.cfg.router_id,
            self.cfg.hold_time,
        );
        let neg = match checked {
            Ok(n) => n,
            Err(n) => {
                self.set_error(format!("sent {}", codec::describe_notification(&n)));
                self.notify_and_drop(conn, n, out);
                return;
            }
        };
        if !self.resolve_collision(conn, &neg, out) {
            return;
        }
        let Some(c) = self.conns.iter_mut().find(|c| c.id == conn) else {
            return;
        };
        c.state = ConnState::OpenConfirm;
        out.push(Action::Send(conn, BgpMessage::KeepAlive));
        if neg.hold_time > 0 {
            out.push(Action::StartTimer(Timer::Hold(conn), neg.hold_time));
            out.push(Action::StartTimer(Timer::Keepalive(conn), neg.keepalive));
        } else {
            out.push(Action::StopTimer(Timer::Hold(conn)));
        }
        c.neg = Some(neg);
    }

    /// §6.8 collision detection, run when `conn` received the peer's OPEN.
    /// Returns whether `conn` survives.
    fn resolve_collision(&mut self, conn: ConnId, neg: &Negotiated, out: &mut Actions) -> bool {
        let Some(other) = self
            .conns
            .iter()
            .find(|c| c.id != conn && c.state != ConnState::OpenSent)
            .map(|c| (c.id, c.dir, c.state, c.neg.clone()))
        else {
            return true;
        };
        let (other_id, other_dir, other_state, other_neg) = other;
        let collision = || {
            codec::cease(CeaseError::ConnectionCollisionResolution {
                value: Box::new([]),
            })
        };
        if other_state == ConnState::Established {
            // RFC 4724 §4.2: a new OPEN from a peer that restarts gracefully
            // ends the old session; its routes stay, stale.
            if other_neg.as_ref().is_some_and(|n| n.peer_gr.is_some()) {
                self.set_error("peer restarted (graceful restart)".into());
                self.drop_conn(other_id, false, out);
                return true;
            }
            self.notify_and_drop(conn, collision(), out);
            return false;
        }
        // Both have the peer's OPEN: the higher BGP identifier's connection
        // wins (the connection it opened stays).
        let this_dir = self.conns.iter().find(|c| c.id == conn).map(|c| c.dir);
        let keep_dir = if u32::from(self.cfg.router_id) > u32::from(neg.remote_id) {
            Direction::Outgoing
        } else {
            Direction::Incoming
        };
        if this_dir == Some(keep_dir) {
            self.notify_and_drop(other_id, collision(), out);
            true
        } else if other_dir == keep_dir {
            self.notify_and_drop(conn, collision(), out);
            false
        } else {
            true
        }
    }

    fn establish(&mut self, conn: ConnId, out: &mut Actions) {
        let Some(c) = self.conns.iter_mut().find(|c| c.id == conn) else {
            return;
        };
        c.state = ConnState::Established;
        let Some(neg) = c.neg.clone() else {
            return;
        };
        self.last_error = None;
        self.restart_hold(conn, out);
        out.push(Action::StopTimer(Timer::GrRestart));
        if !self.stale.is_empty() {
            // The peer is back: keep the stale routes of families whose
            // forwarding it preserved until their End-of-RIB; drop the rest.
            let preserved = neg
                .peer_gr
                .as_ref()
                .map(|g| g.preserved.clone())
                .unwrap_or_default();
            let dropped: Vec<Afi> = self.stale.difference(&preserved).copied().collect();
            for afi in dropped {
                self.stale.remove(&afi);
                out.push(Action::PurgeStale(Some(afi)));
            }
            if let Some(gr) = self.cfg.graceful_restart.filter(|_| !self.stale.is_empty()) {
                out.push(Action::StartTimer(
                    Timer::GrStale,
                    self.stale_cap(gr.stale_time),
                ));
            }
        }
        out.push(Action::Up(conn, neg));
    }
}
