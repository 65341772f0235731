//! Which learned route goes through the IP-in-IP tunnel, as Calico decides
//! it: a route to a block of a pool with `--encap ipip`, learned with
//! another node of the cluster as next hop, goes through `tunl0` (onlink
//! via that node's underlay address); with `ipip-cross-subnet` only when
//! that node is outside our own underlay subnet. Everything else (routes
//! of external BGP peers, pools without encap, IPv6) stays direct. Pure,
//! so the rules are unit-tested without root.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};
use plexus_ipam::{Encap, NodeSettings, Pool};

/// The tunnel device, Calico's name (the kernel's fallback ipip device).
pub const TUNNEL_DEV: &str = "tunl0";
/// IPv4 header the tunnel adds to each packet.
pub const IPIP_OVERHEAD: u32 = 20;
/// The IPAM network name of the tunnel's own address: not a valid CNI
/// network name (`:`), so no CNI GC ever frees it.
pub const TUNNEL_NETWORK: &str = "plexus:ipip-tunnel";

/// How the kernel route to a learned prefix is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Hop {
    pub next_hop: IpAddr,
    /// Through the tunnel device, onlink via `next_hop`.
    pub tunnel: bool,
}

impl Hop {
    pub fn direct(next_hop: IpAddr) -> Hop {
        Hop {
            next_hop,
            tunnel: false,
        }
    }
}

/// What the decision needs: the IPv4 pools with an encapsulation, the
/// cluster's node addresses and our own underlay subnet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pools: Vec<(Ipv4Net, Encap)>,
    nodes: BTreeSet<IpAddr>,
    own_subnet: Option<Ipv4Net>,
}

impl Policy {
    /// From the store's pools and nodes; `own_subnet` is our underlay
    /// address with its prefix (None: unknown, every node counts as in
    /// another subnet).
    pub fn new(pools: &[Pool], nodes: &[NodeSettings], own_subnet: Option<Ipv4Net>) -> Policy {
        Policy {
            pools: pools
                .iter()
                .filter(|p| !matches!(p.encap, Encap::None))
                .filter_map(|p| match p.cidr {
                    IpNet::V4(c) => Some((c, p.encap)),
                    IpNet::V6(_) => None,
                })
                .collect(),
            nodes: nodes.iter().filter_map(|n| n.address).collect(),
            own_subnet,
        }
    }

    /// Some pool asks for IP-in-IP: the tunnel device is needed.
    pub fn needs_tunnel(&self) -> bool {
        !self.pools.is_empty()
    }

    /// The kernel route for `prefix` learned via `next_hop`.
    pub fn hop(&self, prefix: &IpNet, next_hop: IpAddr) -> Hop {
        let (IpNet::V4(prefix), IpAddr::V4(nh)) = (prefix, next_hop) else {
            return Hop::direct(next_hop);
        };
        // Only routes from the cluster's own nodes: an external peer's
        // prefixes (even inside a pool) are reached as it says.
        if !self.nodes.contains(&next_hop) {
            return Hop::direct(next_hop);
        }
        let Some((_, encap)) = self.pools.iter().find(|(c, _)| c.contains(prefix)) else {
            return Hop::direct(next_hop);
        };
        let tunnel = match encap {
            Encap::None => false,
            Encap::Ipip => true,
            Encap::IpipCrossSubnet => !self.same_subnet(nh),
        };
        Hop { next_hop, tunnel }
    }

    fn same_subnet(&self, ip: Ipv4Addr) -> bool {
        self.own_subnet.is_some_and(|s| s.contains(&ip))
    }
}

/// The first enabled IPv4 pool with IP-in-IP: the tunnel device's own
/// address comes from it (so the node's own packets into the tunnel have
/// a source the other nodes route back through theirs).
pub fn tunnel_pool(pools: &[Pool]) -> Option<&Pool> {
    pools
        .iter()
        .find(|p| !p.disabled && p.cidr.addr().is_ipv4() && !matches!(p.encap, Encap::None))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(name: &str, cidr: &str, encap: Encap) -> Pool {
        Pool {
            name: name.into(),
            cidr: cidr.parse().unwrap(),
            block_size: 26,
            nat_outgoing: false,
            encap,
            disabled: false,
        }
    }

    fn node(name: &str, ip: &str) -> NodeSettings {
        NodeSettings {
            name: name.into(),
            address: Some(ip.parse().unwrap()),
            ..Default::default()
        }
    }

    fn nodes() -> Vec<NodeSettings> {
        vec![
            node("n0", "10.0.0.10"),
            node("n1", "10.0.0.11"),
            node("n2", "10.1.0.12"),
        ]
    }

    fn hop(p: &Policy, prefix: &str, via: &str) -> bool {
        let h = p.hop(&prefix.parse().unwrap(), via.parse().unwrap());
        assert_eq!(h.next_hop, via.parse::<IpAddr>().unwrap());
        h.tunnel
    }

    #[test]
    fn ipip_pool_routes_from_nodes_go_through_the_tunnel() {
        let pools = [
            pool("tun", "10.96.0.0/16", Encap::Ipip),
            pool("plain", "10.97.0.0/16", Encap::None),
        ];
        let p = Policy::new(&pools, &nodes(), Some("10.0.0.10/24".parse().unwrap()));
        assert!(p.needs_tunnel());
        assert!(hop(&p, "10.96.1.0/26", "10.0.0.11"), "same subnet, ipip");
        assert!(hop(&p, "10.96.2.0/26", "10.1.0.12"), "other subnet, ipip");
        assert!(!hop(&p, "10.97.0.0/26", "10.0.0.11"), "pool without encap");
        // An external peer (not a node) stays direct, even for a pool prefix.
        assert!(!hop(&p, "10.96.9.0/26", "10.0.0.13"));
        assert!(!hop(&p, "198.51.100.0/24", "10.0.0.13"));
        // A prefix outside every pool, from a node: direct.
        assert!(!hop(&p, "198.51.100.0/24", "10.0.0.11"));
        // A prefix wider than the pool is not inside it.
        assert!(!hop(&p, "10.0.0.0/8", "10.0.0.11"));
        assert_eq!(tunnel_pool(&pools).unwrap().name, "tun");
    }

    #[test]
    fn cross_subnet_tunnels_only_outside_our_subnet() {
        let pools = [pool("x", "10.96.0.0/16", Encap::IpipCrossSubnet)];
        let p = Policy::new(&pools, &nodes(), Some("10.0.0.10/24".parse().unwrap()));
        assert!(!hop(&p, "10.96.1.0/26", "10.0.0.11"));
        assert!(hop(&p, "10.96.2.0/26", "10.1.0.12"));
        // Our subnet unknown: every node is elsewhere.
        let p = Policy::new(&pools, &nodes(), None);
        assert!(hop(&p, "10.96.1.0/26", "10.0.0.11"));
    }

    #[test]
    fn no_tunnel_without_an_ipip_pool_nor_for_ipv6() {
        let pools = [
            pool("v4", "10.96.0.0/16", Encap::None),
            pool("v6", "fd96::/48", Encap::Ipip),
        ];
        let p = Policy::new(&pools, &nodes(), None);
        assert!(!p.needs_tunnel());
        assert!(tunnel_pool(&pools).is_none());
        assert!(!hop(&p, "10.96.1.0/26", "10.0.0.11"));
        let mut with_v6 = nodes();
        with_v6.push(node("n3", "fd00::3"));
        let p = Policy::new(&pools, &with_v6, None);
        assert!(!hop(&p, "fd96::40/122", "fd00::3"));
        // A disabled ipip pool gives no tunnel address.
        let mut off = pool("off", "10.98.0.0/16", Encap::Ipip);
        off.disabled = true;
        assert!(tunnel_pool(std::slice::from_ref(&off)).is_none());
    }
}
