//! The import guard: the node's default safety rules for every received
//! route, which no filter can loosen. Its data (the node's addresses and
//! subnets, every node's underlay address, the pools, what kind each peer
//! is) comes from the agent and may change at run time.
//!
//! The rules (RFC 4271 §5.1.3 for next hops; what a BGP-learned route must
//! never take over on a node):
//! - the next hop is martian, one of this node's addresses, or on none of
//!   its connected subnets and no node's underlay address (a node across
//!   subnets is reached through IP-in-IP); from an external router, a next
//!   hop that is a node's address (a router cannot speak for a node);
//! - the prefix is martian;
//! - the prefix is inside (or equal to) a connected subnet, or contains
//!   this node's or any node's underlay address (a route to a node must
//!   never come from BGP), the default route excepted;
//! - from an external router: the prefix is inside, equal to, or covers a
//!   Plexus pool, the default route excepted (a ToR's default route is
//!   accepted; the agent installs it so that it never wins over the node's
//!   own routes).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::Reason;

/// What a peer is, for the pool rule.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum PeerKind {
    /// Another Plexus node (the mesh, a route reflector): it announces the
    /// pools' blocks.
    Plexus,
    /// A router that is not a Plexus node (a ToR, an operator's router).
    #[default]
    External,
}

/// The data the rules need. An empty `connected` set means the node's
/// subnets are not known yet: the next-hop reachability rule is then not
/// applied (every other rule is).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Guard {
    /// Every address of this node.
    pub own_addresses: BTreeSet<IpAddr>,
    /// This node's connected (underlay) subnets.
    pub connected: BTreeSet<IpNet>,
    /// Every node's underlay address (this node's too).
    pub node_addresses: BTreeSet<IpAddr>,
    /// The Plexus pools.
    pub pools: BTreeSet<IpNet>,
    /// Per peer; a peer not listed is [`PeerKind::External`].
    pub peers: BTreeMap<IpAddr, PeerKind>,
}

/// IPv4-mapped IPv6 addresses as IPv4 (how the speaker keys peers).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl Guard {
    /// The same guard with every address in canonical form and every
    /// subnet truncated, so lookups match however the agent wrote them.
    pub fn normalised(mut self) -> Guard {
        let addrs = |s: BTreeSet<IpAddr>| s.into_iter().map(canonical).collect();
        let nets = |s: BTreeSet<IpNet>| s.into_iter().map(|n| n.trunc()).collect();
        self.own_addresses = addrs(self.own_addresses);
        self.node_addresses = addrs(self.node_addresses);
        self.connected = nets(self.connected);
        self.pools = nets(self.pools);
        self.peers = self
            .peers
            .into_iter()
            .map(|(a, k)| (canonical(a), k))
            .collect();
        self
    }

    pub fn peer_kind(&self, peer: &IpAddr) -> PeerKind {
        self.peers
            .get(&canonical(*peer))
            .copied()
            .unwrap_or_default()
    }

    /// Judge one received path: Ok, or the first rule that rejects it.
    pub fn check(
        &self,
        peer: &IpAddr,
        prefix: &IpNet,
        next_hop: Option<IpAddr>,
    ) -> Result<(), Reason> {
        self.check_next_hop(peer, prefix, next_hop)?;
        self.check_prefix(peer, prefix)
    }

    fn check_next_hop(
        &self,
        peer: &IpAddr,
        prefix: &IpNet,
        next_hop: Option<IpAddr>,
    ) -> Result<(), Reason> {
        let Some(nh) = next_hop else {
            return Err(Reason::NoNextHop);
        };
        match (prefix, nh) {
            (IpNet::V4(_), IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
                return Err(Reason::NextHopFamily { next_hop: nh });
            }
            (IpNet::V6(_), IpAddr::V4(_)) => return Err(Reason::NoNextHop),
            _ => {}
        }
        if martian_address(nh) {
            return Err(Reason::MartianNextHop { next_hop: nh });
        }
        if self.own_addresses.contains(&nh) {
            return Err(Reason::OwnNextHop { next_hop: nh });
        }
        let node = self.node_addresses.contains(&nh);
        if node && self.peer_kind(peer) == PeerKind::External && canonical(*peer) != nh {
            return Err(Reason::NodeNextHop { next_hop: nh });
        }
        let on_link = self.connected.iter().any(|n| n.contains(&nh));
        if !self.connected.is_empty() && !on_link && !self.node_addresses.contains(&nh) {
            return Err(Reason::UnreachableNextHop { next_hop: nh });
        }
        Ok(())
    }

    fn check_prefix(&self, peer: &IpAddr, prefix: &IpNet) -> Result<(), Reason> {
        if martian_prefix(prefix) {
            return Err(Reason::MartianPrefix);
        }
        if let Some(subnet) = self.connected.iter().find(|n| n.contains(prefix)) {
            return Err(Reason::ConnectedPrefix { subnet: *subnet });
        }
        let default = prefix.prefix_len() == 0;
        if default {
            return Ok(());
        }
        if let Some(a) = self
            .own_addresses
            .iter()
            .chain(&self.node_addresses)
            .find(|a| prefix.contains(*a))
        {
            return Err(Reason::NodeAddress { address: *a });
        }
        if self.peer_kind(peer) == PeerKind::External {
            if let Some(pool) = self
                .pools
                .iter()
                .find(|p| p.contains(prefix) || prefix.contains(*p))
            {
                return Err(Reason::PoolPrefix { pool: *pool });
            }
        }
        Ok(())
    }
}

/// Addresses no route may go through (RFC 6890's special-purpose ranges
/// that are never a neighbour's address).
pub fn martian_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => martian_v4(a),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => martian_v4(v4),
            None => martian_v6(a),
        },
    }
}

fn martian_v4(a: Ipv4Addr) -> bool {
    let first = a.octets()[0];
    a.is_unspecified()
        || a.is_loopback()
        || a.is_multicast()
        || a.is_broadcast()
        || a.is_link_local()
        || first == 0
        || first >= 240
}

fn martian_v6(a: Ipv6Addr) -> bool {
    let seg0 = a.segments()[0];
    a.is_unspecified() || a.is_loopback() || a.is_multicast() || (seg0 & 0xffc0) == 0xfe80
}

/// Prefixes no route may be learned for: 0/8 (but the default route),
/// loopback, link-local, multicast, reserved (240/4, broadcast); IPv6
/// unspecified, loopback, IPv4-mapped, link-local, multicast.
pub fn martian_prefix(prefix: &IpNet) -> bool {
    if prefix.prefix_len() == 0 {
        return false;
    }
    match prefix {
        IpNet::V4(p) => [
            ([0, 0, 0, 0], 8),
            ([127, 0, 0, 0], 8),
            ([169, 254, 0, 0], 16),
            ([224, 0, 0, 0], 4),
            ([240, 0, 0, 0], 4),
        ]
        .into_iter()
        .any(|(a, len)| Ipv4Net::new(Ipv4Addr::from(a), len).is_ok_and(|m| m.contains(p))),
        IpNet::V6(p) => [
            (Ipv6Addr::UNSPECIFIED, 128),
            (Ipv6Addr::LOCALHOST, 128),
            (Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96),
            (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10),
            (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8),
        ]
        .into_iter()
        .any(|(a, len)| Ipv6Net::new(a, len).is_ok_and(|m| m.contains(p))),
    }
}
