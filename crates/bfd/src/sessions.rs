//! All of a node's sessions and the demultiplexing of received packets
//! (RFC 5880 §6.3, RFC 5881 §3 and §5), still pure: the runtime hands over
//! each datagram with its addresses and received TTL and gets back which
//! session it was for and what that session wants done.
//!
//! A packet is for the session whose discriminator is its Your
//! Discriminator; while that is still zero (the peer has not heard us),
//! for the session with that (peer address, local address). A session is
//! keyed by its peer address: one session per peer, single hop.
//! Packets whose TTL / Hop Limit is not 255 are discarded (GTSM, RFC 5881
//! §5: we do not authenticate, so this is all that keeps off-link senders
//! out).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::Instant;

use crate::jitter::Rng;
use crate::packet::{ControlPacket, DecodeError};
use crate::session::{Actions, Event, Params, ParamsError, Session, SessionConfig, Status, Timer};

/// The TTL / Hop Limit single-hop BFD sends and requires.
pub const TTL: u8 = 255;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddError {
    #[error("a BFD session with {0} exists")]
    Exists(IpAddr),
    #[error("peer {peer} and local address {local} are not of the same family")]
    Family { peer: IpAddr, local: IpAddr },
    #[error("BFD parameters for {peer}: {source}")]
    Params { peer: IpAddr, source: ParamsError },
}

/// Why a received datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, thiserror::Error)]
pub enum Discard {
    #[error("{0}")]
    Malformed(DecodeError),
    #[error("TTL {0}, not 255 (GTSM)")]
    Ttl(u8),
    #[error("no session has discriminator {0}")]
    UnknownDiscr(u32),
    #[error("no session with {src} on {dst}")]
    UnknownPeer { src: IpAddr, dst: IpAddr },
    #[error("discriminator {discr} belongs to another peer than {src}")]
    WrongPeer { discr: u32, src: IpAddr },
}

impl Discard {
    /// A short name for counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Discard::Malformed(e) => match e {
                DecodeError::Truncated(_) => "truncated",
                DecodeError::Version(_) => "version",
                DecodeError::LengthTooSmall(_) | DecodeError::LengthTooLarge { .. } => "length",
                DecodeError::ZeroDetectMult => "detect-mult",
                DecodeError::Multipoint => "multipoint",
                DecodeError::ZeroMyDiscr => "my-discr",
                DecodeError::ZeroYourDiscr(_) => "your-discr",
                DecodeError::Authenticated => "authenticated",
                DecodeError::PollAndFinal => "poll-final",
            },
            Discard::Ttl(_) => "ttl",
            Discard::UnknownDiscr(_) => "unknown-discr",
            Discard::UnknownPeer { .. } => "unknown-peer",
            Discard::WrongPeer { .. } => "wrong-peer",
        }
    }
}

/// Received-packet counters across all sessions.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RxStats {
    pub accepted: u64,
    /// By [`Discard::kind`].
    pub discarded: BTreeMap<&'static str, u64>,
}

impl RxStats {
    pub fn discarded(&self, kind: &str) -> u64 {
        self.discarded.get(kind).copied().unwrap_or(0)
    }
}

#[derive(Debug)]
pub struct Entry {
    pub peer: IpAddr,
    pub local: IpAddr,
    pub session: Session,
}

/// What one session wants done, with where its packets go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub peer: IpAddr,
    pub local: IpAddr,
    pub actions: Actions,
}

pub struct Sessions {
    by_discr: BTreeMap<u32, Entry>,
    by_peer: HashMap<IpAddr, u32>,
    rng: Box<dyn Rng + Send>,
    stats: RxStats,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("sessions", &self.by_discr)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Sessions {
    pub fn new(rng: Box<dyn Rng + Send>) -> Sessions {
        Sessions {
            by_discr: BTreeMap::new(),
            by_peer: HashMap::new(),
            rng,
            stats: RxStats::default(),
        }
    }

    /// Create and start a session with `peer`, sent from `local`.
    pub fn add(
        &mut self,
        now: Instant,
        peer: IpAddr,
        local: IpAddr,
        params: Params,
    ) -> Result<Outcome, AddError> {
        if self.by_peer.contains_key(&peer) {
            return Err(AddError::Exists(peer));
        }
        if peer.is_ipv4() != local.is_ipv4() {
            return Err(AddError::Family { peer, local });
        }
        params
            .validate()
            .map_err(|source| AddError::Params { peer, source })?;
        // §6.3: nonzero, unique, and random so an off-path guess is hard.
        let discr = loop {
            let d = self.rng.next_u32();
            if d != 0 && !self.by_discr.contains_key(&d) {
                break d;
            }
        };
        let cfg = SessionConfig {
            local_discr: discr,
            params,
            passive: false,
        };
        let mut session = Session::new(cfg, now);
        let actions = session.start(now, self.rng.as_mut());
        self.by_peer.insert(peer, discr);
        self.by_discr.insert(
            discr,
            Entry {
                peer,
                local,
                session,
            },
        );
        Ok(Outcome {
            peer,
            local,
            actions,
        })
    }

    /// Change a session's timing (a poll sequence tells the peer).
    pub fn set_params(
        &mut self,
        now: Instant,
        peer: IpAddr,
        params: Params,
    ) -> Result<Option<Outcome>, AddError> {
        params
            .validate()
            .map_err(|source| AddError::Params { peer, source })?;
        Ok(self.event(now, peer, Event::SetParams(params)))
    }

    /// Take the session down administratively and forget it. The outcome
    /// holds its AdminDown packet, which tells the peer at once (the peer's
    /// detection time would otherwise).
    pub fn remove(&mut self, now: Instant, peer: IpAddr) -> Option<Outcome> {
        let out = self.event(now, peer, Event::AdminDown)?;
        let discr = self.by_peer.remove(&peer)?;
        self.by_discr.remove(&discr);
        Some(out)
    }

    /// Feed a session an event directly (administrative control, tests).
    pub fn event(&mut self, now: Instant, peer: IpAddr, ev: Event) -> Option<Outcome> {
        let discr = *self.by_peer.get(&peer)?;
        let e = self.by_discr.get_mut(&discr)?;
        let actions = e.session.handle(now, ev, self.rng.as_mut());
        Some(Outcome {
            peer: e.peer,
            local: e.local,
            actions,
        })
    }

    pub fn timer(&mut self, now: Instant, peer: IpAddr, t: Timer) -> Option<Outcome> {
        self.event(now, peer, Event::Timer(t))
    }

    /// One datagram received on `dst` from `src` with TTL / Hop Limit
    /// `ttl`. Discards are counted (see [`Sessions::stats`]).
    pub fn receive(
        &mut self,
        now: Instant,
        datagram: &[u8],
        src: IpAddr,
        dst: IpAddr,
        ttl: u8,
    ) -> Result<Outcome, Discard> {
        let r = self.select(datagram, src, dst, ttl);
        let (discr, packet) = match r {
            Ok(v) => v,
            Err(d) => {
                *self.stats.discarded.entry(d.kind()).or_insert(0) += 1;
                return Err(d);
            }
        };
        self.stats.accepted += 1;
        let e = self
            .by_discr
            .get_mut(&discr)
            .expect("select returned a known discriminator");
        let actions = e
            .session
            .handle(now, Event::Packet(packet), self.rng.as_mut());
        Ok(Outcome {
            peer: e.peer,
            local: e.local,
            actions,
        })
    }

    fn select(
        &self,
        datagram: &[u8],
        src: IpAddr,
        dst: IpAddr,
        ttl: u8,
    ) -> Result<(u32, ControlPacket), Discard> {
        let p = ControlPacket::decode(datagram).map_err(Discard::Malformed)?;
        if ttl != TTL {
            return Err(Discard::Ttl(ttl));
        }
        if p.your_discr != 0 {
            let e = self
                .by_discr
                .get(&p.your_discr)
                .ok_or(Discard::UnknownDiscr(p.your_discr))?;
            // Single hop: the discriminator must also come from its peer,
            // or anyone on the link who learnt it could speak for the peer.
            if e.peer != src || e.local != dst {
                return Err(Discard::WrongPeer {
                    discr: p.your_discr,
                    src,
                });
            }
            return Ok((p.your_discr, p));
        }
        let discr = self
            .by_peer
            .get(&src)
            .copied()
            .filter(|d| self.by_discr.get(d).is_some_and(|e| e.local == dst))
            .ok_or(Discard::UnknownPeer { src, dst })?;
        Ok((discr, p))
    }

    pub fn get(&self, peer: IpAddr) -> Option<&Entry> {
        self.by_peer.get(&peer).and_then(|d| self.by_discr.get(d))
    }

    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.by_discr.values()
    }

    pub fn status(&self, peer: IpAddr) -> Option<Status> {
        self.get(peer).map(|e| e.session.status())
    }

    pub fn stats(&self) -> &RxStats {
        &self.stats
    }

    /// Local addresses some session sends from (the runtime keeps one
    /// socket pair per address).
    pub fn local_addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.by_discr.values().map(|e| e.local)
    }
}
