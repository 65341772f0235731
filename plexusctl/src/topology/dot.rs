//! The Graphviz picture: each node a cluster holding its speaker (the
//! node's own box, where BGP sessions attach) and its pods; routers as
//! separate shapes; one undirected edge per BGP session, labelled with its
//! kind and state.

use std::fmt::Write as _;

use super::model::{Node, Peer, Topology};
use crate::status::short;

pub fn render(t: &Topology) -> String {
    let mut o = String::new();
    // Writing to a String cannot fail.
    let _ = write_dot(&mut o, t);
    o
}

fn write_dot(o: &mut String, t: &Topology) -> std::fmt::Result {
    writeln!(o, "digraph plexus {{")?;
    writeln!(
        o,
        "  graph [rankdir=LR, compound=true, fontname=\"Helvetica\", label={}, labelloc=t];",
        quote(&title(t))
    )?;
    writeln!(o, "  node [fontname=\"Helvetica\", fontsize=10];")?;
    writeln!(o, "  edge [fontname=\"Helvetica\", fontsize=9, dir=none];")?;
    for (i, n) in t.nodes.iter().enumerate() {
        write_node(o, i, n)?;
    }
    for r in &t.routers {
        writeln!(
            o,
            "  {} [shape=doubleoctagon, style=filled, fillcolor=\"#fde8c8\", label={}];",
            quote(&router_id(&r.address)),
            quote(&format!("router\n{}\nAS {}", r.address, r.asn))
        )?;
    }
    for s in &t.sessions {
        let to = match &s.peer {
            Peer::Node(n) => node_id(n),
            Peer::Router(a) => router_id(a),
        };
        let color = match s.state_label().as_str() {
            "Established" => "#2e7d32",
            "?" => "#777777",
            _ => "#c62828",
        };
        writeln!(
            o,
            "  {} -> {} [label={}, color=\"{color}\", fontcolor=\"{color}\"];",
            quote(&node_id(&s.node)),
            quote(&to),
            quote(&format!("BGP {}\n{}", s.kind, s.state_label()))
        )?;
    }
    writeln!(o, "}}")
}

fn title(t: &Topology) -> String {
    let mut parts = Vec::new();
    if let Some(ov) = &t.overlay {
        parts.push(format!("overlay {} ({})", ov.network, ov.backend));
    }
    if !t.pools.is_empty() {
        parts.push(format!("routed {}", t.pools.join(", ")));
    }
    if let Some(b) = &t.bgp {
        let how = if b.mesh { "mesh" } else { "route reflectors" };
        parts.push(format!("BGP AS {} {how}", b.asn));
    }
    if parts.is_empty() {
        "Plexus".into()
    } else {
        format!("Plexus: {}", parts.join("; "))
    }
}

fn write_node(o: &mut String, i: usize, n: &Node) -> std::fmt::Result {
    writeln!(o, "  subgraph cluster_{i} {{")?;
    writeln!(o, "    label={};", quote(&format!("node {}", n.name)))?;
    writeln!(o, "    style=rounded; color=\"#1565c0\";")?;
    let mut label = vec![n.name.clone()];
    if let Some(ip) = &n.public_ip {
        label.push(format!("public IP {ip}"));
    }
    if let Some(asn) = n.asn {
        label.push(format!("AS {asn}"));
    }
    if let Some(rr) = &n.route_reflector {
        label.push(format!("route reflector {rr}"));
    }
    if let Some(s) = &n.overlay_subnet {
        label.push(format!("overlay {s}"));
    }
    for b in &n.blocks {
        label.push(format!("block {} ({})", b.cidr, b.pool));
    }
    for a in &n.agents {
        let ready = if a.ready { "ready" } else { "not ready" };
        label.push(format!("agent: {} {ready}", a.backend));
    }
    writeln!(
        o,
        "    {} [shape=box, style=filled, fillcolor=\"#e3f2fd\", label={}];",
        quote(&node_id(&n.name)),
        quote(&label.join("\n"))
    )?;
    for p in &n.pods {
        let pod = format!("pod:{}/{}", n.name, p.container_id);
        let mut label = vec![format!("{} ({})", p.name, short(&p.container_id))];
        for i in &p.interfaces {
            let ips = if i.ips.is_empty() {
                "-".to_string()
            } else {
                i.ips.join(",")
            };
            label.push(format!("{} {} {} {ips}", i.name, i.model, i.network));
        }
        writeln!(
            o,
            "    {} [shape=note, label={}];",
            quote(&pod),
            quote(&label.join("\n"))
        )?;
        // Invisible: keeps each pod inside its node's cluster next to it.
        writeln!(
            o,
            "    {} -> {} [style=invis];",
            quote(&node_id(&n.name)),
            quote(&pod)
        )?;
    }
    writeln!(o, "  }}")
}

fn node_id(name: &str) -> String {
    format!("node:{name}")
}

fn router_id(address: &str) -> String {
    format!("router:{address}")
}

/// A DOT quoted string: `"` and `\` escaped, newlines as `\n` (centred
/// lines in a label).
pub fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}
