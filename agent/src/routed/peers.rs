//! Which BGP neighbours this node has, from the store's records: pure, so
//! the mesh / route-reflector / explicit-peer rules are unit-tested.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use plexus_bgp::policy::{FilterAction, FilterRule};
use plexus_bgp::speaker::{MaxPrefixes, Password};
use plexus_bgp::{BgpFilter, PeerConfig};
use plexus_ipam::{BfdSettings, BgpConfig, NodeSettings, Peer, PeerSettings, SecretKeyRef};

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
    /// BFD for the session, when on.
    pub bfd: Option<BfdSettings>,
    /// What could not be applied as configured (a missing filter, an
    /// unreadable Secret), for `bgp status`.
    pub problem: Option<String>,
}

/// How long a session reset by its prefix limit stays down (seconds).
pub const PREFIX_LIMIT_RESTART: u16 = 30;

/// What the records name and plexusd looked up: filters by name, and the
/// Secrets' passwords (Kubernetes mode) by reference.
#[derive(Debug, Clone, Default)]
pub struct Lookups {
    pub filters: BTreeMap<String, BgpFilter>,
    /// A reference → its password, or why it could not be read.
    pub secrets: BTreeMap<SecretRefKey, Result<String, String>>,
}

/// A Secret reference as a map key (namespace defaulted).
pub type SecretRefKey = (String, String, String);

/// The namespace a reference without one means.
pub const DEFAULT_SECRET_NAMESPACE: &str = "kube-system";

pub fn secret_key(r: &SecretKeyRef) -> SecretRefKey {
    (
        r.namespace
            .clone()
            .unwrap_or_else(|| DEFAULT_SECRET_NAMESPACE.to_string()),
        r.name.clone(),
        r.key.clone(),
    )
}

/// A filter that rejects everything, standing in for one a record names
/// but the store lacks: failing closed, a typo never lets routes through.
fn missing_filter(name: &str) -> BgpFilter {
    let all = || vec![FilterRule::new(FilterAction::Reject)];
    BgpFilter {
        name: format!("{name} (missing: rejects everything)"),
        export_v4: all(),
        import_v4: all(),
        export_v6: all(),
        import_v6: all(),
    }
}

/// The store's session settings onto the speaker's peer. Returns what
/// could not be applied as written (the peer is still configured: a
/// missing filter rejects everything, an unreadable password leaves a key
/// no one has, so the session stays down and says why).
pub fn apply_settings(c: &mut PeerConfig, s: &PeerSettings, l: &Lookups) -> Option<String> {
    let mut problems = Vec::new();
    c.password = match &s.password {
        None => None,
        Some(p) => match (&p.value, &p.secret_key_ref) {
            (Some(v), _) => Some(Password::new(v.clone())),
            (None, Some(r)) => match l.secrets.get(&secret_key(r)) {
                Some(Ok(v)) => Some(Password::new(v.clone())),
                other => {
                    let why = match other {
                        Some(Err(e)) => e.clone(),
                        _ => "not read yet".into(),
                    };
                    problems.push(format!(
                        "password from secret {}/{} key {}: {why}",
                        secret_key(r).0,
                        r.name,
                        r.key
                    ));
                    // No connection without the right key: a random one
                    // keeps the session down rather than unauthenticated.
                    Some(Password::new(format!(
                        "unreadable-secret-{:016x}",
                        rand_u64()
                    )))
                }
            },
            (None, None) => None,
        },
    };
    c.filters = s
        .filters
        .iter()
        .map(|n| match l.filters.get(n) {
            Some(f) => f.clone(),
            None => {
                problems.push(format!("filter {n} does not exist: everything is rejected"));
                missing_filter(n)
            }
        })
        .collect();
    c.export_communities = s.communities.clone();
    c.ttl_security = s.ttl_security;
    c.max_prefixes = s.max_prefixes.map(|limit| MaxPrefixes {
        limit,
        restart: PREFIX_LIMIT_RESTART,
    });
    c.graceful_restart_time = s.graceful_restart_time;
    (!problems.is_empty()).then(|| problems.join("; "))
}

/// A random number (for a key no one can match), from the clock and the
/// process: not for secrecy.
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id().into());
    h.finish()
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
    lookups: &Lookups,
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
        let problem = apply_settings(&mut config, &cfg.mesh, lookups);
        if let Some(f) = super::services::mesh_filter(cfg) {
            config.filters.insert(0, f);
        }
        out.insert(
            addr,
            Desired {
                config,
                kind,
                bfd: cfg.mesh.bfd,
                problem,
            },
        );
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
        let problem = apply_settings(&mut config, &p.settings, lookups);
        out.insert(
            p.address,
            Desired {
                config,
                kind,
                bfd: p.settings.bfd,
                problem,
            },
        );
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
                settings: Default::default(),
            },
            Peer {
                address: ip("10.0.0.101"),
                asn: 65001,
                node: Some("n1".into()),
                settings: Default::default(),
            },
            Peer {
                address: ip("10.0.0.102"),
                asn: 65002,
                node: Some("n2".into()),
                settings: Default::default(),
            },
        ];
        let d = desired(
            &me(None),
            &BgpConfig::default(),
            &nodes,
            &peers,
            &Lookups::default(),
        );
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
            ..Default::default()
        };
        let nodes = [
            node("n1", "10.0.0.1", None),
            node("n2", "10.0.0.2", Some("1.1.1.1")),
            node("n3", "10.0.0.3", None),
        ];
        // A client peers with the reflector only.
        let d = desired(&me(None), &cfg, &nodes, &[], &Lookups::default());
        assert_eq!(d.keys().copied().collect::<Vec<_>>(), vec![ip("10.0.0.2")]);
        assert_eq!(d[&ip("10.0.0.2")].kind, PeerKind::RouteReflector);
        // A reflector peers with every client (as rr_client) and the other reflectors.
        let nodes = [
            node("n1", "10.0.0.1", Some("1.1.1.1")),
            node("n2", "10.0.0.2", Some("1.1.1.1")),
            node("n3", "10.0.0.3", None),
        ];
        let d = desired(&me(Some("1.1.1.1")), &cfg, &nodes, &[], &Lookups::default());
        assert_eq!(d[&ip("10.0.0.2")].kind, PeerKind::RouteReflector);
        assert!(!d[&ip("10.0.0.2")].config.rr_client);
        assert_eq!(d[&ip("10.0.0.3")].kind, PeerKind::RrClient);
        assert!(d[&ip("10.0.0.3")].config.rr_client);
    }

    #[test]
    fn settings_map_onto_the_session() {
        use plexus_ipam::PasswordSource;
        let mut lookups = Lookups::default();
        lookups.filters.insert(
            "f".into(),
            BgpFilter {
                name: "f".into(),
                ..Default::default()
            },
        );
        let mut p = Peer {
            address: ip("10.0.0.100"),
            asn: 65000,
            node: None,
            settings: PeerSettings {
                password: Some(PasswordSource {
                    value: Some("pw".into()),
                    secret_key_ref: None,
                }),
                bfd: Some(BfdSettings::default()),
                filters: vec!["f".into()],
                ttl_security: Some(1),
                max_prefixes: Some(10),
                graceful_restart_time: Some(60),
                ..Default::default()
            },
        };
        let mut cfg = BgpConfig::default();
        cfg.mesh.password = p.settings.password.clone();
        let nodes = [node("n2", "10.0.0.2", None)];
        let d = desired(&me(None), &cfg, &nodes, std::slice::from_ref(&p), &lookups);
        let c = &d[&ip("10.0.0.100")];
        assert_eq!(c.config.password, Some(Password::new("pw")));
        assert_eq!(c.config.filters.len(), 1);
        assert_eq!(c.config.ttl_security, Some(1));
        assert_eq!(c.config.max_prefixes.map(|m| m.limit), Some(10));
        assert_eq!(c.config.graceful_restart_time, Some(60));
        assert!(c.bfd.is_some() && c.problem.is_none());
        assert_eq!(
            d[&ip("10.0.0.2")].config.password,
            Some(Password::new("pw"))
        );
        // A missing filter rejects everything; an unread secret keeps the
        // session down; both say why.
        p.settings.filters = vec!["gone".into()];
        p.settings.password = Some(PasswordSource {
            value: None,
            secret_key_ref: Some(SecretKeyRef {
                name: "s".into(),
                key: "k".into(),
                namespace: None,
            }),
        });
        let d = desired(&me(None), &cfg, &nodes, &[p], &lookups);
        let c = &d[&ip("10.0.0.100")];
        let why = c.problem.clone().unwrap();
        assert!(
            why.contains("filter gone") && why.contains("secret"),
            "{why}"
        );
        assert_eq!(c.config.filters[0].import_v4.len(), 1);
        assert!(c.config.password.is_some());
    }
}
