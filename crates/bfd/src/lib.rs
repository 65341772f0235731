//! BFD (Bidirectional Forwarding Detection) for `plexusd`'s routed network:
//! RFC 5880 in asynchronous mode over RFC 5881 single-hop IPv4/IPv6, as
//! pure logic. Like the BGP FSM in `plexus-bgp`, nothing here opens a
//! socket or reads a clock: the runtime (`plexusd::bfd`) passes datagrams,
//! the time and a random source in, and carries out the actions that come
//! back. So every rule is tested on a virtual clock, without root.
//!
//! # Structure (dependencies point down)
//!
//! ```text
//! sessions   a node's sessions keyed by peer address: discriminator
//!   │        allocation, demultiplexing of received datagrams (Your
//!   │        Discriminator, else (peer, local) address), GTSM (TTL 255),
//!   │        counters of what was discarded and why
//!   ├── session   one RFC 5880 §6.8 state machine: Event in → Action out
//!   │   │         (send, arm/disarm a timer, state changed)
//!   │   └── jitter    the injected random source; 75–100 % jitter
//!   └── packet    the Control packet codec and the §6.8.6 checks
//! ```
//!
//! # What it implements
//!
//! - The Control packet (§4.1) without authentication, and every
//!   reception check of §6.8.6 that applies: version 1, length (24, or 26
//!   with the A bit, and not beyond the datagram), detect multiplier not
//!   zero, multipoint bit clear, My Discriminator not zero, a zero Your
//!   Discriminator only in Down/AdminDown, and P and F not both set.
//! - Session selection by Your Discriminator, or for the first packets by
//!   (source address, destination address); a packet that names a
//!   session's discriminator must also come from that session's peer to
//!   that session's local address. TTL / Hop Limit 255 required on receive
//!   (RFC 5881 §5; the runtime sends with 255).
//! - The state machine (§6.8.6): AdminDown/Down/Init/Up with the three-way
//!   handshake, Down on the peer's Down or AdminDown (diag 3, Neighbor
//!   Signaled Session Down), on detection-time expiry in Init or Up
//!   (diag 1), administrative down/up (diag 7; a detect multiplier's worth
//!   of AdminDown packets, then silence). Every state change is sent at
//!   once, as BIRD and FRR do, and restarts the periodic schedule.
//! - Timers (§6.8.2–§6.8.4, §6.8.7): transmit interval max(our Desired Min
//!   TX, the peer's Required Min RX), at least 1 s while not Up; per-packet
//!   jitter 75–100 % (75–90 % with detect multiplier 1); a shorter
//!   interval honoured at once; no periodic packets when the peer's
//!   Required Min RX is zero, when it is in Demand mode and both are Up, or
//!   in the Passive role before the peer is heard. Detection time = the
//!   peer's detect multiplier × max(our Required Min RX, the peer's Desired
//!   Min TX). The peer's discriminator is forgotten after a detection time
//!   of silence.
//! - Poll sequences (§6.5): any change of what we advertise (parameters,
//!   or the 1 s floor entering and leaving Up) sets P on the periodic
//!   packets until the peer's F; while Up, a slower TX or a faster Required
//!   Min RX takes effect only then; a change during a poll polls again.
//!   A peer's P is answered at once with F (never both bits).
//! - Discriminators are random, nonzero and unique per node.
//!
//! # Not implemented
//!
//! Authentication (packets with the A bit are discarded and counted as
//! `authenticated`), the Echo function (we advertise a Required Min Echo RX
//! of 0 and ignore the peer's), Demand mode on our side (we never set D),
//! multihop (RFC 5883), micro-BFD on LAG members (RFC 7130), seamless BFD
//! (RFC 7880), IPv6 link-local sessions (the runtime binds global
//! addresses), sessions to the same peer address from two local
//! addresses, and rate limiting of Final answers. The C bit is always
//! clear: our BFD runs in plexusd, sharing fate with the control plane.
//!
//! # Use
//!
//! ```
//! use std::time::{Duration, Instant};
//! use plexus_bfd::{Action, Params, Sessions, SplitMix64};
//!
//! let mut bfd = Sessions::new(Box::new(SplitMix64::from_entropy()));
//! let now = Instant::now();
//! let peer = "10.0.0.2".parse().unwrap();
//! let local = "10.0.0.1".parse().unwrap();
//! let params = Params::new(Duration::from_millis(100), Duration::from_millis(100), 3);
//! let out = bfd.add(now, peer, local, params).unwrap();
//! for a in out.actions {
//!     match a {
//!         Action::Send(p) => { /* send p.encode() from local to peer:3784, TTL 255 */ }
//!         Action::Arm(timer, at) => { /* call bfd.timer(at, peer, timer) then */ }
//!         Action::Disarm(_) => {}
//!         Action::StateChanged(c) => { /* c.to == State::Up / Down, c.diag */ }
//!     }
//! }
//! // Datagrams that arrive: bfd.receive(now, &buf, src, dst, ttl).
//! ```

pub mod jitter;
pub mod packet;
pub mod session;
pub mod sessions;

pub use jitter::{Rng, SplitMix64};
pub use packet::{ControlPacket, DecodeError, Diag, State};
pub use session::{Action, Event, Params, Session, SessionConfig, StateChange, Status, Timer};
pub use sessions::{AddError, Discard, Outcome, RxStats, Sessions};
