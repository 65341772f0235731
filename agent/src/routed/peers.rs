//! Which BGP neighbours this node has, from the store's records: pure, so
//! the mesh / route-reflector / explicit-peer rules are unit-tested.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use plexus_bgp::PeerConfig;
use plexus_ipam::{BgpConfig, NodeSettings, Peer};

/// Why we peer with a neighbour (`plexusctl bgp status`'s type column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerKind {
    /// Another node, in the full iBGP mesh.
    Mesh,
    /// A peer of every node.
    Global,
    /// A peer of this node only.
    NodeSpecific,
    /// A node we reflect routes to (we are its route reflector).
    RrClient,
    /// A route reflector node (we are its client, or a fellow reflector).
    RouteReflector,
}

impl PeerKind {
    pub fn label(self) -> &'static str {
        match self {
            PeerKind::Mesh => "node-to-node mesh",
            PeerKind::Global => "global",
            PeerKind::NodeSpecific => "node specific",
            PeerKind::RrClient => "route reflector client",
            PeerKind::RouteReflector => "route reflector",
        }
    }
}

/// One neighbour we want.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub config: PeerConfig,
    pub kind: PeerKind,
}

/// This node as the peer rules need it.
#[derive(Debug, Clone)]
pub struct Me<'a> {
    pub name: &'a str,
    pub address: IpAddr,
    pub asn: u32,
    /// Our route-reflector cluster ID, if we are one.
    pub cluster_id: Option<Ipv4Addr>,
}

/// The AS of a node: its own override, else the cluster's.
pub fn node_as(cfg: &BgpConfig, node: Option<&NodeSettings>) -> u32 {
    node.and_then(|n| n.asn).unwrap_or(cfg.asn)
}

/// The neighbours of `me`: the mesh of the other nodes (or, without the
/// mesh, the route-reflector relations), then the global peers and our own
/// (an explicit peer wins over a node at the same address).
pub fn desired(
    me: &Me<'_>,
    cfg: &BgpConfig,
    nodes: &[NodeSettings],
    peers: &[Peer],
) -> BTreeMap<IpAddr, Desired> {
    let mut out = BTreeMap::new();
    for n in nodes {
        let Some(addr) = n.address else { continue };
        if n.name == me.name || addr == me.address {
            continue;
        }
        let kind = if cfg.node_to_node_mesh {
            PeerKind::Mesh
        } else {
            match (me.cluster_id, n.route_reflector_cluster_id) {
                (Some(_), None) => PeerKind::RrClient,
                (_, Some(_)) => PeerKind::RouteReflector,
                (None, None) => continue,
            }
        };
        let mut config = PeerConfig::new(addr, node_as(cfg, Some(n)));
        config.rr_client = kind == PeerKind::RrClient;
        config.local_as = Some(me.asn);
        out.insert(addr, Desired { config, kind });
    }
    for p in peers {
        let kind = match &p.node {
            None => PeerKind::Global,
            Some(n) if n == me.name => PeerKind::NodeSpecific,
            Some(_) => continue,
        };
        if p.address == me.address {
            continue;
        }
        let mut config = PeerConfig::new(p.address, p.asn);
        // Our AS per session: a change in the store re-creates the
        // sessions (the speaker's own AS is only its default).
        config.local_as = Some(me.asn);
        out.insert(p.address, Desired { config, kind });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ip: &str, rr: Option<&str>) -> NodeSettings {
        NodeSettings {
            name: name.into(),
            address: Some(ip.parse().unwrap()),
            route_reflector_cluster_id: rr.map(|c| c.parse().unwrap()),
            ..Default::default()
        }
    }

    fn me(rr: Option<&str>) -> Me<'static> {
        Me {
            name: "n1",
            address: "10.0.0.1".parse().unwrap(),
            asn: 64512,
            cluster_id: rr.map(|c| c.parse().unwrap()),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn full_mesh_with_global_and_own_peers() {
        let mut n3 = node("n3", "10.0.0.3", None);
        n3.asn = Some(65003);
        let nodes = [
            node("n1", "10.0.0.1", None),
            node("n2", "10.0.0.2", None),
            n3,
            NodeSettings {
                name: "n4".into(),
                ..Default::default()
            },
        ];
        let peers = [
            Peer {
                address: ip("10.0.0.100"),
                asn: 65000,
                node: None,
            },
            Peer {
                address: ip("10.0.0.101"),
                asn: 65001,
                node: Some("n1".into()),
            },
            Peer {
                address: ip("10.0.0.102"),
                asn: 65002,
                node: Some("n2".into()),
            },
        ];
        let d = desired(&me(None), &BgpConfig::default(), &nodes, &peers);
        let got: Vec<(IpAddr, PeerKind, u32)> = d
            .iter()
            .map(|(a, p)| (*a, p.kind, p.config.remote_as))
            .collect();
        assert_eq!(
            got,
            vec![
                (ip("10.0.0.2"), PeerKind::Mesh, 64512),
                (ip("10.0.0.3"), PeerKind::Mesh, 65003),
                (ip("10.0.0.100"), PeerKind::Global, 65000),
                (ip("10.0.0.101"), PeerKind::NodeSpecific, 65001),
            ]
        );
        assert!(d.values().all(|p| !p.config.rr_client));
    }

    #[test]
    fn route_reflectors_without_the_mesh() {
        let cfg = BgpConfig {
            asn: 64512,
            node_to_node_mesh: false,
        };
        let nodes = [
            node("n1", "10.0.0.1", None),
            node("n2", "10.0.0.2", Some("1.1.1.1")),
            node("n3", "10.0.0.3", None),
        ];
        // A client peers with the reflector only.
        let d = desired(&me(None), &cfg, &nodes, &[]);
        assert_eq!(d.keys().copied().collect::<Vec<_>>(), vec![ip("10.0.0.2")]);
        assert_eq!(d[&ip("10.0.0.2")].kind, PeerKind::RouteReflector);
        // A reflector peers with every client (as rr_client) and the other reflectors.
        let nodes = [
            node("n1", "10.0.0.1", Some("1.1.1.1")),
            node("n2", "10.0.0.2", Some("1.1.1.1")),
            node("n3", "10.0.0.3", None),
        ];
        let d = desired(&me(Some("1.1.1.1")), &cfg, &nodes, &[]);
        assert_eq!(d[&ip("10.0.0.2")].kind, PeerKind::RouteReflector);
        assert!(!d[&ip("10.0.0.2")].config.rr_client);
        assert_eq!(d[&ip("10.0.0.3")].kind, PeerKind::RrClient);
        assert!(d[&ip("10.0.0.3")].config.rr_client);
    }
}
