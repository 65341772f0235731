//! The text picture: the cluster's networks, then an indented tree per
//! node (addresses, overlay subnet, routed blocks, agents, BGP sessions,
//! pods and their interfaces), then the routers.

use std::fmt::Write as _;

use super::model::{Peer, Topology};
use crate::status::short;

pub fn render(t: &Topology) -> String {
    let mut o = String::new();
    // Writing to a String cannot fail.
    let mut line = |depth: usize, text: String| {
        let _ = writeln!(o, "{:width$}{text}", "", width = depth * 2);
    };
    if let Some(ov) = &t.overlay {
        line(
            0,
            format!("overlay network {} ({})", ov.network, ov.backend),
        );
    }
    if !t.pools.is_empty() {
        line(0, format!("routed pools {}", t.pools.join(", ")));
    }
    if let Some(b) = &t.bgp {
        let how = if b.mesh {
            "node-to-node mesh"
        } else {
            "route reflectors"
        };
        line(0, format!("BGP AS {}, {how}", b.asn));
    }
    if t.nodes.is_empty() {
        line(0, "no nodes".into());
    }
    for n in &t.nodes {
        let mut head = format!("node {}", n.name);
        if let Some(ip) = &n.public_ip {
            let _ = write!(head, "  public IP {ip}");
        }
        if let Some(asn) = n.asn {
            let _ = write!(head, "  AS {asn}");
        }
        if let Some(rr) = &n.route_reflector {
            let _ = write!(head, "  route reflector (cluster {rr})");
        }
        line(0, head);
        for a in &n.agents {
            let ready = if a.ready { "ready" } else { "not ready" };
            line(1, format!("agent {}: {}, {ready}", a.run_dir, a.backend));
        }
        if let Some(s) = &n.overlay_subnet {
            line(1, format!("overlay subnet {s}"));
        }
        for b in &n.blocks {
            line(
                1,
                format!("routed block {} (pool {}, {} used)", b.cidr, b.pool, b.used),
            );
        }
        let sessions: Vec<_> = t.sessions_of(&n.name).collect();
        if !sessions.is_empty() {
            line(1, "BGP sessions".into());
        }
        for (peer, s) in sessions {
            let other = match &peer {
                Peer::Node(name) => {
                    let ip = t.node(name).and_then(|x| x.public_ip.clone());
                    format!(
                        "node {name}{}",
                        ip.map(|i| format!(" ({i})")).unwrap_or_default()
                    )
                }
                Peer::Router(address) => format!("router {address}"),
            };
            line(2, format!("{other}  {}  {}", s.kind, s.state_label()));
        }
        if !n.pods.is_empty() {
            line(1, "pods".into());
        }
        for p in &n.pods {
            line(2, format!("{} ({})", p.name, short(&p.container_id)));
            for i in &p.interfaces {
                let ips = if i.ips.is_empty() {
                    "-".to_string()
                } else {
                    i.ips.join(",")
                };
                let pending = if i.state == "attached" {
                    String::new()
                } else {
                    format!("  {}", i.state)
                };
                line(
                    3,
                    format!("{}  {}  {}  {ips}{pending}", i.name, i.model, i.network),
                );
            }
        }
    }
    for r in &t.routers {
        line(0, format!("router {}  AS {}", r.address, r.asn));
    }
    o
}
