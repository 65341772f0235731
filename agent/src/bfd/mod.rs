//! The BFD runtime of plexusd (RFC 5880 asynchronous mode, RFC 5881 single
//! hop): the UDP side of [`plexus_bfd`]. One thread with a current-thread
//! tokio runtime owns the sockets (created on that thread, so they live in
//! the network namespace of the thread that called [`start`]), receives
//! and demultiplexes datagrams, runs the sessions' timers, and reports Up
//! and Down to the consumer.
//!
//! ```text
//! Bfd (handle, Clone) ──commands──▶ core task ──BfdEvent──▶ BfdEvents
//!                                   │  plexus_bfd::Sessions, timers
//!     reader task per local address ┘  (one 3784 socket + one send socket
//!                                       per local address)
//! ```
//!
//! Dropping every [`Bfd`] handle stops the runtime: each session first
//! sends one AdminDown packet, so peers see an administrative down
//! (RFC 5882 §3.2: not a path failure; BIRD keeps its BGP session) rather
//! than a detection timeout.
//!
//! # Use
//!
//! ```no_run
//! # async fn f() -> Result<(), plexusd::bfd::BfdError> {
//! use std::time::Duration;
//! use plexusd::bfd::{self, Intervals, Updown};
//!
//! let (bfd, mut events) = bfd::start()?; // sockets in this thread's netns
//! let peer = "10.0.0.2".parse().unwrap();
//! let local = "10.0.0.1".parse().unwrap();
//! bfd.add_session(peer, local, Intervals::symmetric(Duration::from_millis(100)), 3)
//!     .await?;
//! while let Some(ev) = events.recv().await {
//!     if ev.is_failure() {
//!         // tear the BGP session with ev.peer down now
//!     }
//! #   let _ = ev.state == Updown::Up;
//! }
//! # Ok(()) }
//! ```

pub mod socket;
mod task;

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use plexus_bfd::{Diag, Params, RxStats, State, Status};
use tokio::sync::{mpsc, oneshot};

/// Our two timing parameters of a session (the third is the multiplier).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Intervals {
    /// How often we would like to send once Up.
    pub desired_min_tx: Duration,
    /// How often we can take the peer's packets.
    pub required_min_rx: Duration,
}

impl Intervals {
    /// The same interval both ways.
    pub fn symmetric(d: Duration) -> Intervals {
        Intervals {
            desired_min_tx: d,
            required_min_rx: d,
        }
    }
}

impl Default for Intervals {
    /// 300 ms both ways (with multiplier 3: a failure seen within 0.9 s).
    fn default() -> Intervals {
        let p = Params::default();
        Intervals {
            desired_min_tx: p.desired_min_tx,
            required_min_rx: p.required_min_rx,
        }
    }
}

/// The multiplier that goes with [`Intervals::default`].
pub const DEFAULT_MULTIPLIER: u8 = 3;

#[derive(Debug, thiserror::Error)]
pub enum BfdError {
    #[error(transparent)]
    Session(#[from] plexus_bfd::AddError),
    #[error("BFD sockets on {local}: {source}")]
    Socket {
        local: IpAddr,
        source: std::io::Error,
    },
    #[error("BFD with {0}: IPv6 link-local sessions are not supported")]
    LinkLocal(IpAddr),
    #[error("cannot start the BFD runtime: {0}")]
    Start(std::io::Error),
    #[error("the BFD runtime has stopped")]
    Stopped,
}

/// What the consumer hears: a session came Up or left Up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Updown {
    Up,
    Down,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct BfdEvent {
    pub peer: IpAddr,
    pub local: IpAddr,
    pub state: Updown,
    /// Our diagnostic: on Down, why (detection time expired, neighbour
    /// signalled down, administratively down).
    pub diag: Diag,
    /// The peer's last reported state. A Down with the peer in AdminDown is
    /// the peer's decision, not a forwarding failure: RFC 5882 §3.2 says a
    /// client should not act on it.
    pub remote_state: State,
    pub at: SystemTime,
}

impl BfdEvent {
    /// Whether this Down means the path failed (what should tear a BGP
    /// session down), as opposed to the peer disabling BFD.
    pub fn is_failure(&self) -> bool {
        self.state == Updown::Down && self.remote_state != State::AdminDown
    }
}

/// The state changes, in order. Unbounded: a session changes state at
/// most a few times per second even when flapping.
pub type BfdEvents = mpsc::UnboundedReceiver<BfdEvent>;

/// One session as `plexusctl` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SessionStatus {
    pub peer: IpAddr,
    pub local: IpAddr,
    /// When the state last changed (or the session was added).
    pub last_change: SystemTime,
    /// Sends that failed (the link or route is down); a packet lost there
    /// is like one lost on the wire.
    pub send_errors: u64,
    /// State, remote state, diagnostics, the intervals in use, detection
    /// time, the peer's values, counters.
    #[serde(flatten)]
    pub session: Status,
}

enum Command {
    Add {
        peer: IpAddr,
        local: IpAddr,
        params: Params,
        reply: oneshot::Sender<Result<(), BfdError>>,
    },
    Remove {
        peer: IpAddr,
        reply: oneshot::Sender<bool>,
    },
    Status {
        reply: oneshot::Sender<Vec<SessionStatus>>,
    },
    Counters {
        reply: oneshot::Sender<RxStats>,
    },
}

/// The handle on the runtime. Cheap to clone; the runtime stops when the
/// last clone is dropped.
#[derive(Debug, Clone)]
pub struct Bfd {
    cmds: mpsc::Sender<Command>,
}

/// Start the runtime on a thread of its own, in the network namespace of
/// the calling thread.
pub fn start() -> Result<(Bfd, BfdEvents), BfdError> {
    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("plexus-bfd".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            match rt {
                Ok(rt) => {
                    let _ = ready_tx.send(Ok(()));
                    rt.block_on(task::run(cmd_rx, ev_tx));
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        })
        .map_err(BfdError::Start)?;
    ready_rx
        .recv()
        .map_err(|_| BfdError::Stopped)?
        .map_err(BfdError::Start)?;
    Ok((Bfd { cmds: cmd_tx }, ev_rx))
}

impl Bfd {
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, BfdError> {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(make(tx))
            .await
            .map_err(|_| BfdError::Stopped)?;
        rx.await.map_err(|_| BfdError::Stopped)
    }

    /// Start a session with `peer` from `local` (an address on the link to
    /// the peer). For a peer that has one already, the parameters change
    /// (a poll sequence tells the peer; the session stays Up) or, when
    /// `local` differs, the session is replaced.
    pub async fn add_session(
        &self,
        peer: IpAddr,
        local: IpAddr,
        intervals: Intervals,
        multiplier: u8,
    ) -> Result<(), BfdError> {
        let params = Params::new(
            intervals.desired_min_tx,
            intervals.required_min_rx,
            multiplier,
        );
        self.ask(|reply| Command::Add {
            peer,
            local,
            params,
            reply,
        })
        .await?
    }

    /// End the session with `peer` (it is told AdminDown). Whether there
    /// was one.
    pub async fn remove_session(&self, peer: IpAddr) -> Result<bool, BfdError> {
        self.ask(|reply| Command::Remove { peer, reply }).await
    }

    /// Every session, by peer address.
    pub async fn status(&self) -> Result<Vec<SessionStatus>, BfdError> {
        self.ask(|reply| Command::Status { reply }).await
    }

    /// Received packets accepted and discarded (by reason), all sessions.
    pub async fn counters(&self) -> Result<RxStats, BfdError> {
        self.ask(|reply| Command::Counters { reply }).await
    }
}
