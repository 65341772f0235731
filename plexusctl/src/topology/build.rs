//! Merging the three sources into one [`Topology`]: pure, so the joining
//! rules are unit-tested.
//!
//! Nodes are named by the routed network's node records, the agents and
//! the `--cache-dir` names; an overlay lease (which carries no node name)
//! joins the node with its public IP, or stands as a node named by that IP.
//! BGP sessions are those the store configures (the mesh, or the
//! route-reflector relations, then global and node-specific peers, as
//! plexusd derives them), with each agent's live state laid on; a live
//! session the store does not explain is added as the agent reports it.

use std::collections::BTreeMap;

use plexus_ipam::NodeSettings;

use super::agents::AgentView;
use super::model::{Agent, Block, Interface, Node, Peer, Pod, Router, Session, Topology};
use super::store::StoreView;
use crate::status::Row;

/// The sessions kinds plexusd reports for peers that are nodes.
const MESH: &str = "node-to-node mesh";
const REFLECTOR: &str = "route reflector";

/// Build the picture. `pods` are the status rows of each `--cache-dir`
/// node.
pub fn build(store: StoreView, agents: Vec<AgentView>, pods: Vec<(String, Vec<Row>)>) -> Topology {
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    let mut t = Topology {
        overlay: store.overlay,
        pools: store.pools,
        bgp: store.bgp,
        warnings: store.warnings,
        ..Default::default()
    };
    for n in &store.nodes {
        let node = entry(&mut nodes, &n.name);
        node.public_ip = n.address.map(|a| a.to_string());
        node.asn = n.asn;
        node.route_reflector = n.route_reflector_cluster_id.map(|c| c.to_string());
    }
    for a in &agents {
        let node = entry(&mut nodes, &a.node);
        if node.public_ip.is_none() {
            node.public_ip.clone_from(&a.public_ip);
        }
        if node.overlay_subnet.is_none() {
            node.overlay_subnet.clone_from(&a.overlay_subnet);
        }
        node.agents.push(Agent {
            run_dir: a.run_dir.clone(),
            backend: a.backend.clone(),
            ready: a.ready,
        });
    }
    for b in &store.blocks {
        entry(&mut nodes, &b.node).blocks.push(Block {
            cidr: b.cidr.clone(),
            pool: b.pool.clone(),
            used: b.used,
        });
    }
    for l in &store.leases {
        let holder = l.public_ip.as_ref().and_then(|ip| {
            nodes
                .values()
                .find(|n| n.public_ip.as_ref() == Some(ip))
                .map(|n| n.name.clone())
        });
        let name = holder
            .or_else(|| l.public_ip.clone())
            .unwrap_or_else(|| format!("lease {}", l.subnet));
        let node = entry(&mut nodes, &name);
        if node.public_ip.is_none() {
            node.public_ip.clone_from(&l.public_ip);
        }
        node.overlay_subnet = Some(l.subnet.clone());
    }
    for (name, rows) in pods {
        entry(&mut nodes, &name).pods = pods_of(rows);
    }
    t.nodes = nodes.into_values().collect();
    let by_address: BTreeMap<String, String> = t
        .nodes
        .iter()
        .filter_map(|n| Some((n.public_ip.clone()?, n.name.clone())))
        .collect();
    let mesh = t.bgp.as_ref().map(|b| b.mesh);
    if let Some(mesh) = mesh {
        t.sessions = configured(mesh, &store.nodes);
    }
    for p in &store.peers {
        let address = p.address.to_string();
        // An explicit peer at a node's address is that node, not a router.
        if by_address.contains_key(&address) {
            continue;
        }
        add_router(&mut t.routers, &address, p.asn);
        // Only nodes of the routed network (with an address) peer.
        let kind = if p.node.is_some() {
            "node specific"
        } else {
            "global"
        };
        let new: Vec<Session> = store
            .nodes
            .iter()
            .filter(|n| n.address.is_some() && p.node.as_ref().is_none_or(|only| *only == n.name))
            .map(|n| session(&n.name, Peer::Router(address.clone()), kind))
            .collect();
        t.sessions.extend(new);
    }
    for a in &agents {
        let Some(bgp) = &a.bgp else { continue };
        for live in &bgp.peers {
            let peer = match by_address.get(&live.address) {
                Some(n) => Peer::Node(n.clone()),
                None => {
                    add_router(&mut t.routers, &live.address, live.asn);
                    Peer::Router(live.address.clone())
                }
            };
            let at = t.sessions.iter().position(|s| {
                (s.node == a.node && s.peer == peer)
                    || (Peer::Node(s.node.clone()) == peer && s.peer == Peer::Node(a.node.clone()))
            });
            let s = match at {
                Some(i) => &mut t.sessions[i],
                None => {
                    t.sessions.push(session(&a.node, peer, &live.kind));
                    t.sessions.last_mut().expect("just pushed")
                }
            };
            s.states.insert(a.node.clone(), live.state.clone());
        }
    }
    t.routers.sort_by(|a, b| a.address.cmp(&b.address));
    t
}

fn entry<'a>(nodes: &'a mut BTreeMap<String, Node>, name: &str) -> &'a mut Node {
    nodes.entry(name.to_string()).or_insert_with(|| Node {
        name: name.to_string(),
        ..Default::default()
    })
}

fn session(node: &str, peer: Peer, kind: &str) -> Session {
    Session {
        node: node.into(),
        peer,
        kind: kind.into(),
        states: BTreeMap::new(),
    }
}

fn add_router(routers: &mut Vec<Router>, address: &str, asn: u32) {
    if !routers.iter().any(|r| r.address == address) {
        routers.push(Router {
            address: address.into(),
            asn,
        });
    }
}

/// The node-to-node sessions the store configures, one per pair: every
/// pair in the mesh; without it, every pair where one side is a route
/// reflector. Nodes without an address take no part (plexusd skips them).
fn configured(mesh: bool, nodes: &[NodeSettings]) -> Vec<Session> {
    let with_address: Vec<&NodeSettings> = nodes.iter().filter(|n| n.address.is_some()).collect();
    let mut out = Vec::new();
    for (i, a) in with_address.iter().enumerate() {
        for b in &with_address[i + 1..] {
            let reflector =
                a.route_reflector_cluster_id.is_some() || b.route_reflector_cluster_id.is_some();
            let kind = match (mesh, reflector) {
                (true, _) => MESH,
                (false, true) => REFLECTOR,
                (false, false) => continue,
            };
            out.push(session(&a.name, Peer::Node(b.name.clone()), kind));
        }
    }
    out
}

/// Rows (one per interface) grouped into pods, in the rows' order.
fn pods_of(rows: Vec<Row>) -> Vec<Pod> {
    let mut pods: Vec<Pod> = Vec::new();
    for r in rows {
        let iface = Interface {
            name: r.interface,
            network: r.network,
            model: r.model,
            ips: r.ips,
            state: r.state.into(),
        };
        match pods.iter_mut().find(|p| p.container_id == r.container_id) {
            Some(p) => p.interfaces.push(iface),
            None => pods.push(Pod {
                name: r.pod,
                container_id: r.container_id,
                interfaces: vec![iface],
            }),
        }
    }
    pods
}
