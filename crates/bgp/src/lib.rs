//! The BGP speaker of `plexusd` (the calico-style routed network): its
//! protocol logic, free of netlink so all of it is tested without root.
//! The model is holo-bgp: the FSM and the RIB talk to a routing component
//! through a channel, never to the kernel. plexusd installs what the
//! [`speaker::RouteFeed`] says with its own route protocol number.
//!
//! # Structure (dependencies point down)
//!
//! ```text
//! speaker   tokio runtime: listen (given addresses) / connect on port 179,
//!   │       a reader and a writer task per connection, timers, and one core
//!   │       task that owns every peer's Fsm and the Rib; the agent's API
//!   │       (Speaker) and RouteFeed; sockopt: TCP MD5, GTSM, listeners
//!   ├── fsm       RFC 4271 §8 per-peer state machine, pure: Event in → Action
//!   │   │         out (send, close, start/stop timer, up/down, routes in)
//!   │   └── open  our OPEN, checks and capability negotiation of the peer's
//!   ├── rib       Adj-RIB-In per peer (before policy, with verdicts), Loc-RIB,
//!   │   │         Adj-RIB-Out per peer (diffed), export rules; returns
//!   │   │         best-route changes + per-peer updates
//!   │   ├── decision   §9.1.2.2 comparison (plus RFC 4456 tie breakers)
//!   │   └── policy     verdicts and reasons; the import guard (the node's
//!   │                  safety rules) and per-peer filters
//!   ├── codec     framing, netgauze-bgp-pkt encode/decode, NOTIFICATION for
//!   │             malformed input, UPDATE ⇄ (prefixes, PathAttrs)
//!   └── attrs     the route attributes the RIB keeps (4-octet AS paths)
//! ```
//!
//! # What it implements
//!
//! - RFC 4271 sessions: Idle/Connect/Active/OpenSent/OpenConfirm/Established,
//!   ConnectRetry/Hold/Keepalive timers, hold-time negotiation (0 = no
//!   keepalives), active and passive peers, collision detection by BGP
//!   identifier (§6.8), NOTIFICATION with the right code/subcode for bad
//!   headers (marker, length, type), OPENs (version, peer AS, BGP identifier,
//!   hold time), UPDATEs (attribute list, flags, lengths, ORIGIN, missing
//!   well-known attributes) and unexpected messages; only that session ends.
//! - RFC 6793 4-octet AS numbers (AS_TRANS and AS4_PATH towards 2-octet peers),
//!   RFC 4760 MP-BGP IPv4 and IPv6 unicast, RFC 2918 route refresh (answered).
//! - RFC 4724 graceful restart: as restarting speaker (R and F bits from
//!   [`fsm::GracefulRestart`]; our End-of-RIB waits until every peer has
//!   sent its own, or until our restart time) and as
//!   helper (a peer's routes stay, stale, after its TCP session fails, until
//!   its End-of-RIB or the restart/stale timers; a peer back without the F
//!   bit loses them at once).
//! - The decision process: own prefixes first, LOCAL_PREF, AS_PATH length,
//!   ORIGIN, MED (same neighbour AS), eBGP over iBGP, router ID /
//!   ORIGINATOR_ID, CLUSTER_LIST length, peer address. ECMP
//!   ([`SpeakerConfig::max_paths`]): the paths equal to the best up to the
//!   router-ID / peer-address tie breakers share its route, whose next-hop
//!   set ([`BestRoute::next_hops`]) the feed carries; only the best path is
//!   exported (no ADD-PATH).
//! - Export: no iBGP-learned routes to iBGP peers except by route reflection
//!   (RFC 4456: client routes to all, non-client routes to clients,
//!   ORIGINATOR_ID and CLUSTER_LIST set and checked for loops); next-hop-self
//!   and AS_PATH prepend towards eBGP peers; eBGP loop detection. Standard
//!   and large communities are kept and passed on, and so are optional
//!   transitive attributes we do not act on (extended communities, unknown
//!   ones with the Partial bit).
//! - Connections from addresses that are not peers get Cease / Connection
//!   Rejected (RFC 4486); [`Speaker::refresh`] sends ROUTE-REFRESH.
//! - An import guard ([`policy::Guard`], set at run time with
//!   [`Speaker::set_guard`]) that no filter can loosen: martian, own and
//!   unreachable next hops (RFC 4271 §5.1.3), martian prefixes, routes
//!   inside the node's connected subnets or containing a node's address,
//!   pools from external routers. A rejected path is treated as withdrawn
//!   (RFC 7606 §2; the session stays up). The Adj-RIB-In keeps every path as
//!   received with its verdict (soft reconfiguration inbound): a new guard
//!   re-judges them all at once. Per-peer counters (received, accepted,
//!   rejected by guard and by filter) and [`Speaker::adj_rib_in`].
//! - Per peer ([`PeerConfig`], changed live with [`Speaker::update_peer`]):
//!   import and export filters shaped like Calico's BGPFilter (prefix with
//!   Equal/NotEqual/In/NotIn and length ranges, standard and large
//!   community, AS path contains / originated by; first match wins, default
//!   accept; after the guard); standard (RFC 1997) and large (RFC 8092)
//!   communities added on export, and per originated prefix
//!   ([`Speaker::originate_with`]); a prefix limit (Cease / Maximum Number
//!   of Prefixes Reached, RFC 4486, then down for a restart interval); the
//!   graceful-restart time announced and the longest stale routes are kept;
//!   TCP MD5 signatures (RFC 2385) on the listeners and outgoing sockets;
//!   TTL security (RFC 5082: TTL 255 out, IP_MINTTL / IPV6_MINHOPCOUNT in,
//!   and the SYN's TTL checked from TCP_SAVE_SYN before a connection is
//!   read).
//!
//! # Not implemented
//!
//! No RFC 7606 treat-as-withdraw for malformed attributes (a malformed
//! attribute resets the session, RFC 4271 style; only policy rejections are
//! treated as withdrawals); AGGREGATOR is not passed on; no IPv4 prefixes with IPv6
//! next hops (RFC 8950); no ADD-PATH, TCP-AO, enhanced route refresh,
//! long-lived graceful restart, damping, DelayOpen or timer jitter (BFD itself
//! is plexus-bfd's: the FSM only takes its Down as `Event::BfdDown`);
//! filters cannot modify routes (no set actions beyond the communities
//! above); a peer's password, TTL security, AS or graceful-restart time
//! change resets its session ([`Speaker::update_peer`]).
//!
//! # Use
//!
//! ```no_run
//! # async fn f() -> Result<(), plexus_bgp::BgpError> {
//! use plexus_bgp::speaker::{PeerConfig, Speaker, SpeakerConfig};
//! let mut cfg = SpeakerConfig::new("10.0.0.1".parse().unwrap(), 64512);
//! cfg.listen = vec!["10.0.0.1:179".parse().unwrap()];
//! let (speaker, mut feed) = Speaker::start(cfg).await?;
//! speaker.originate("10.244.1.0/26".parse().unwrap()).await?;
//! speaker.add_peer(PeerConfig::new("10.0.0.2".parse().unwrap(), 64512)).await?;
//! while let Some(change) = feed.recv().await {
//!     // change.route: Some(best) = install via best.next_hops (ECMP) or
//!     // best.next_hop; None = remove
//! #   let _ = change;
//! }
//! # Ok(()) }
//! ```

pub mod attrs;
pub mod codec;
pub mod decision;
pub mod error;
pub mod fsm;
pub mod open;
pub mod policy;
pub mod rib;
pub mod speaker;

pub use attrs::{Community, CommunitySet, LargeCommunity};
pub use error::BgpError;
pub use policy::{BgpFilter, Guard, PeerKind, Reason, Verdict};
pub use rib::{AdjRibInEntry, BestRoute, RouteChange};
pub use speaker::{
    MaxPrefixes, Password, PeerConfig, PeerStatus, RouteFeed, Speaker, SpeakerConfig,
};
