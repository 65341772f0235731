//! The cluster as the network sees it, as plain data: what [`super::collect`]
//! builds from the store, the agents and the meta plugin's caches, and what
//! [`super::text`] and [`super::dot`] draw. Nothing here does I/O, so a
//! hand-built `Topology` is enough to test the renderers.

use std::collections::BTreeMap;

use serde::Serialize;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Topology {
    /// The overlay's network config (flannel's `Network`, backend type).
    pub overlay: Option<Overlay>,
    /// The routed network's pools ("name cidr").
    pub pools: Vec<String>,
    /// The routed network's BGP settings.
    pub bgp: Option<Bgp>,
    /// By name.
    pub nodes: Vec<Node>,
    /// BGP peers that are not nodes (the operator's routers), by address.
    pub routers: Vec<Router>,
    pub sessions: Vec<Session>,
    /// What could not be read; the picture is partial.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Overlay {
    pub network: String,
    pub backend: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bgp {
    pub asn: u32,
    /// The full iBGP mesh; without it, route reflectors.
    pub mesh: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Node {
    pub name: String,
    /// The address other nodes and peers reach it at.
    pub public_ip: Option<String>,
    /// Its own AS when it overrides the cluster's.
    pub asn: Option<u32>,
    /// Its route-reflector cluster ID when it is a reflector.
    pub route_reflector: Option<String>,
    /// The overlay subnet its lease holds.
    pub overlay_subnet: Option<String>,
    pub blocks: Vec<Block>,
    /// The agents asked over their run dirs.
    pub agents: Vec<Agent>,
    pub pods: Vec<Pod>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Block {
    pub cidr: String,
    pub pool: String,
    pub used: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Agent {
    pub run_dir: String,
    /// "vxlan", "routed (BGP)"...
    pub backend: String,
    pub ready: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pod {
    pub name: String,
    pub container_id: String,
    pub interfaces: Vec<Interface>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Interface {
    pub name: String,
    pub network: String,
    /// overlay, routed, macvlan... (`crate::netmodel`).
    pub model: String,
    pub ips: Vec<String>,
    /// "attached" or "pending".
    pub state: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Router {
    pub address: String,
    pub asn: u32,
}

/// One end of a BGP session that is not the node side.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Peer {
    /// Another node, by name.
    Node(String),
    /// A router, by address.
    Router(String),
}

/// A BGP session: configured in the store, seen live by an agent, or both.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Session {
    /// A node's name.
    pub node: String,
    pub peer: Peer,
    /// "node-to-node mesh", "global", "node specific", "route reflector"...
    pub kind: String,
    /// The state each side's agent reported, by node name (empty when no
    /// agent of either end was asked).
    pub states: BTreeMap<String, String>,
}

impl Session {
    /// "Established", "n1: Established, n2: Connect" when the sides
    /// disagree, "?" when nobody said.
    pub fn state_label(&self) -> String {
        let mut distinct: Vec<&String> = self.states.values().collect();
        distinct.dedup();
        match distinct.as_slice() {
            [] => "?".into(),
            // dedup leaves one value only when every side said the same.
            [one] => (*one).clone(),
            _ => self
                .states
                .iter()
                .map(|(n, s)| format!("{n}: {s}"))
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

impl Topology {
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The sessions one node takes part in, seen from that node: (the
    /// other end, the session).
    pub fn sessions_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = (Peer, &'a Session)> {
        self.sessions.iter().filter_map(move |s| {
            if s.node == name {
                Some((s.peer.clone(), s))
            } else if s.peer == Peer::Node(name.to_string()) {
                Some((Peer::Node(s.node.clone()), s))
            } else {
                None
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(states: &[(&str, &str)]) -> Session {
        Session {
            node: "n1".into(),
            peer: Peer::Node("n2".into()),
            kind: "node-to-node mesh".into(),
            states: states
                .iter()
                .map(|(n, s)| (n.to_string(), s.to_string()))
                .collect(),
        }
    }

    #[test]
    fn state_labels() {
        assert_eq!(session(&[]).state_label(), "?");
        assert_eq!(
            session(&[("n1", "Established"), ("n2", "Established")]).state_label(),
            "Established"
        );
        assert_eq!(
            session(&[("n1", "Established"), ("n2", "Connect")]).state_label(),
            "n1: Established, n2: Connect"
        );
    }

    #[test]
    fn sessions_seen_from_either_end() {
        let t = Topology {
            sessions: vec![session(&[])],
            ..Default::default()
        };
        assert_eq!(
            t.sessions_of("n1").next().unwrap().0,
            Peer::Node("n2".into())
        );
        assert_eq!(
            t.sessions_of("n2").next().unwrap().0,
            Peer::Node("n1".into())
        );
        assert!(t.sessions_of("n3").next().is_none());
    }
}
