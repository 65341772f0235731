//! Import and export policy, pure: what a received path is judged
//! ([`Verdict`]) and why ([`Reason`]).
//!
//! A received path goes through three stages, the first rejection wins:
//! 1. protocol rules: AS_PATH, ORIGINATOR_ID and CLUSTER_LIST loops (RFC
//!    4271 §9.1.2, RFC 4456 §8), checked by the RIB;
//! 2. the [`Guard`]: the node's safety rules (martian and unreachable next
//!    hops, routes to the node's own subnets and addresses, pools from
//!    external routers), from data the agent supplies;
//! 3. the peer's [`BgpFilter`]s (Calico BGPFilter-like rules).
//!
//! A filter only ever sees what the guard let through, so no filter can
//! loosen the guard. A rejected path is treated as withdrawn (RFC 7606
//! §2): the session stays up and the path is kept, with its verdict, in
//! the Adj-RIB-In so a new guard or filter can judge it again.

pub mod filter;
pub mod guard;

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

pub use filter::{
    AsPathMatch, BgpFilter, FilterAction, FilterRule, MatchOperator, PrefixLength, RouteSource,
};
pub use guard::{Guard, PeerKind};

/// What became of a received path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// It takes part in the decision process.
    Accepted,
    Rejected(Reason),
}

impl Verdict {
    pub fn accepted(&self) -> bool {
        matches!(self, Verdict::Accepted)
    }

    pub fn reason(&self) -> Option<&Reason> {
        match self {
            Verdict::Accepted => None,
            Verdict::Rejected(r) => Some(r),
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Accepted => f.write_str("accepted"),
            Verdict::Rejected(r) => write!(f, "rejected: {r}"),
        }
    }
}

/// Which stage rejected a path (for the per-peer counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Protocol rules and the guard: the node's default import rules.
    Guard,
    /// The peer's filters.
    Filter,
}

/// Why a path was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Reason {
    /// No next hop we can use (an IPv6 prefix without an IPv6 next hop).
    NoNextHop,
    /// An IPv6 next hop for an IPv4 prefix (RFC 8950 is not negotiated).
    NextHopFamily { next_hop: IpAddr },
    /// Unspecified, loopback, multicast, broadcast, reserved or link-local.
    MartianNextHop { next_hop: IpAddr },
    /// One of this node's own addresses.
    OwnNextHop { next_hop: IpAddr },
    /// Neither on a connected subnet nor a node's underlay address.
    UnreachableNextHop { next_hop: IpAddr },
    /// From an external router, a next hop that is a Plexus node: a router
    /// cannot speak for a node (the node would forward it back: a loop).
    NodeNextHop { next_hop: IpAddr },
    /// Loopback, multicast, reserved, link-local, "this network"...
    MartianPrefix,
    /// Inside (or equal to) one of this node's connected subnets.
    ConnectedPrefix { subnet: IpNet },
    /// Contains this node's or another node's underlay address.
    NodeAddress { address: IpAddr },
    /// From an external router: inside, equal to or covering a pool.
    PoolPrefix { pool: IpNet },
    /// Our AS is in the AS_PATH (eBGP loop).
    AsPathLoop { asn: u32 },
    /// Our router ID is the ORIGINATOR_ID (a reflected route of ours).
    OriginatorLoop,
    /// Our CLUSTER_ID is in the CLUSTER_LIST (reflection loop).
    ClusterLoop,
    /// A filter rule (`rule` counts from 0 in the filter's list for the
    /// prefix's family and direction).
    Filter { filter: String, rule: usize },
}

impl Reason {
    pub fn stage(&self) -> Stage {
        match self {
            Reason::Filter { .. } => Stage::Filter,
            _ => Stage::Guard,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NoNextHop => f.write_str("no usable next hop"),
            Reason::NextHopFamily { next_hop } => write!(
                f,
                "next hop {next_hop} is of another address family (RFC 8950 is not supported)"
            ),
            Reason::MartianNextHop { next_hop } => {
                write!(f, "next hop {next_hop} is a martian address")
            }
            Reason::OwnNextHop { next_hop } => {
                write!(f, "next hop {next_hop} is an address of this node")
            }
            Reason::UnreachableNextHop { next_hop } => write!(
                f,
                "next hop {next_hop} is on no connected subnet and is no node's address"
            ),
            Reason::NodeNextHop { next_hop } => write!(
                f,
                "next hop {next_hop} is a node's address and the peer is an external router"
            ),
            Reason::MartianPrefix => f.write_str("the prefix is a martian range"),
            Reason::ConnectedPrefix { subnet } => {
                write!(f, "the prefix is inside connected subnet {subnet}")
            }
            Reason::NodeAddress { address } => {
                write!(f, "the prefix contains node address {address}")
            }
            Reason::PoolPrefix { pool } => write!(
                f,
                "the prefix overlaps pool {pool} and the peer is an external router"
            ),
            Reason::AsPathLoop { asn } => write!(f, "AS path loop: our AS {asn} is in it"),
            Reason::OriginatorLoop => f.write_str("ORIGINATOR_ID is our router ID"),
            Reason::ClusterLoop => f.write_str("our CLUSTER_ID is in the CLUSTER_LIST"),
            Reason::Filter { filter, rule } => {
                write!(f, "filter {filter:?} rule {rule} rejects it")
            }
        }
    }
}
