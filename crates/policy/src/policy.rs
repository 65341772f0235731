//! A policy object checked once, rule by rule, into what the engine
//! evaluates: the API's defaults applied (`policyTypes`, TCP, the policy's
//! own namespace for a bare `podSelector` peer) and every value that the
//! API server would have refused turned into a rule that allows nothing.
//!
//! Fail closed, per rule: a MultiNetworkPolicy is a custom resource whose
//! CIDRs, ports, protocols and selector operators nothing validated, so a
//! bad one must not open anything, and must not close more than its own
//! rule either. A rule with a bad peer or port becomes [`Rule::Invalid`]
//! (it allows nothing; the policy still isolates the pods it selects and
//! its other rules apply); a policy whose own `podSelector` cannot be
//! evaluated selects nothing. Each case is a [`Problem`] naming the
//! policy, for logs and metrics. The same checks run on NetworkPolicies,
//! which the API server has already validated: they never fire there.

use std::fmt;

use ipnet::IpNet;

use crate::addr::AddrSet;
use crate::api::{self, IntOrString, Lenient};
use crate::selector::Selector;

/// Which API a policy came from, and so which interfaces it is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `networking.k8s.io/v1` NetworkPolicy: the cluster network only.
    NetworkPolicy,
    /// `k8s.cni.cncf.io` MultiNetworkPolicy: the networks its `policy-for`
    /// annotation names.
    MultiNetworkPolicy,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::NetworkPolicy => "NetworkPolicy",
            Kind::MultiNetworkPolicy => "MultiNetworkPolicy",
        })
    }
}

/// A policy's identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyId {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for PolicyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// Something wrong with a policy, and what the engine does about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub policy: PolicyId,
    pub what: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.policy, self.what)
    }
}

/// Layer 4 protocols a policy port can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    /// The IP protocol number (what `meta l4proto` loads).
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Sctp => 132,
        }
    }

    /// TCP, UDP or SCTP, whatever the case (a pod's container port and a
    /// custom resource may be written either way).
    pub fn parse(s: &str) -> Option<Proto> {
        match s.to_ascii_uppercase().as_str() {
            "TCP" => Some(Proto::Tcp),
            "UDP" => Some(Proto::Udp),
            "SCTP" => Some(Proto::Sctp),
            _ => None,
        }
    }
}

/// One entry of a rule's `ports`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PortSpec {
    /// No `port`: every port of the protocol.
    All(Proto),
    /// `port` (and `endPort`), inclusive.
    Range(Proto, u16, u16),
    /// A named port, resolved against the destination pod's containers.
    Named(Proto, String),
}

/// A rule's `ports`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Ports {
    /// Absent or empty: every protocol and port.
    Any,
    List(Vec<PortSpec>),
}

impl Ports {
    pub fn has_named(&self) -> bool {
        matches!(self, Ports::List(l) if l.iter().any(|p| matches!(p, PortSpec::Named(..))))
    }
}

/// One peer of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Peer {
    /// Pods: those matching `pods` (all with `None`) in the namespaces
    /// matching `namespaces` (the policy's own with `None`).
    Pods {
        namespaces: Option<Selector>,
        pods: Option<Selector>,
    },
    /// An `ipBlock`, excepts removed.
    Block(AddrSet),
}

/// A rule's `from` / `to`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Peers {
    /// Absent or empty: every peer.
    Any,
    List(Vec<Peer>),
}

/// One ingress or egress rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Rule {
    Allow {
        peers: Peers,
        ports: Ports,
    },
    /// A rule the API could not have validated: it allows nothing.
    Invalid,
}

/// A checked policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub id: PolicyId,
    /// Which pods of its namespace it selects; `None` when its
    /// `podSelector` cannot be evaluated (it then selects nothing).
    pub selector: Option<Selector>,
    /// The ingress rules, if the policy is about ingress at all (its
    /// `policyTypes`); an empty list isolates and allows nothing.
    pub ingress: Option<Vec<Rule>>,
    pub egress: Option<Vec<Rule>>,
    /// For a MultiNetworkPolicy, the networks (`namespace/name`) it is
    /// for; empty for a NetworkPolicy (the cluster network).
    pub networks: Vec<String>,
}

impl Policy {
    /// Checks `obj` as a policy of `kind`. Never fails: what is wrong is
    /// returned as problems and fails closed (see the module docs).
    pub fn new(kind: Kind, obj: &api::PolicyObject) -> (Policy, Vec<Problem>) {
        let id = PolicyId {
            kind,
            namespace: obj.metadata.namespace.clone(),
            name: obj.metadata.name.clone(),
        };
        let mut problems = Vec::new();
        let mut problem = |what: String| {
            problems.push(Problem {
                policy: id.clone(),
                what,
            })
        };
        let spec = &obj.spec;

        let selector = match &spec.pod_selector {
            None => Some(Selector::everything()),
            Some(Lenient::Ok(s)) => match Selector::parse(s) {
                Ok(s) => Some(s),
                Err(e) => {
                    problem(format!("podSelector: {e}; the policy selects no pod"));
                    None
                }
            },
            Some(Lenient::Bad(e)) => {
                problem(format!(
                    "podSelector is malformed ({e}); the policy selects no pod"
                ));
                None
            }
        };

        // policyTypes defaults: Ingress always, Egress when there are egress rules.
        let (mut has_ingress, mut has_egress) =
            (true, spec.egress.as_ref().is_some_and(|e| !e.is_empty()));
        if let Some(types) = spec.policy_types.as_ref().filter(|t| !t.is_empty()) {
            has_ingress = false;
            has_egress = false;
            for t in types {
                match t.as_str() {
                    "Ingress" => has_ingress = true,
                    "Egress" => has_egress = true,
                    other => problem(format!("unknown policyType {other:?} ignored")),
                }
            }
        }

        let ns = &id.namespace;
        let ingress = has_ingress.then(|| {
            check_rules(spec.ingress.as_deref(), "ingress", &mut problem, |r| {
                (r.from.as_deref(), r.ports.as_deref())
            })
        });
        let egress = has_egress.then(|| {
            check_rules(spec.egress.as_deref(), "egress", &mut problem, |r| {
                (r.to.as_deref(), r.ports.as_deref())
            })
        });

        let networks = match kind {
            Kind::NetworkPolicy => Vec::new(),
            Kind::MultiNetworkPolicy => {
                let raw = obj.metadata.annotations.get(api::POLICY_FOR);
                let (nets, bad) = parse_policy_for(raw.map(String::as_str).unwrap_or(""), ns);
                for b in bad {
                    problem(format!(
                        "{}: bad network name {b:?} ignored",
                        api::POLICY_FOR
                    ));
                }
                if nets.is_empty() {
                    problem(format!(
                        "no network in its {} annotation; it applies to no interface",
                        api::POLICY_FOR
                    ));
                }
                nets
            }
        };

        (
            Policy {
                id,
                selector,
                ingress,
                egress,
                networks,
            },
            problems,
        )
    }
}

/// One direction's rules, each checked on its own; `parts` gives a rule's
/// peers and ports.
fn check_rules<R>(
    rules: Option<&[Lenient<R>]>,
    dir: &str,
    problem: &mut impl FnMut(String),
    parts: impl Fn(&R) -> (Option<&[api::Peer]>, Option<&[api::PolicyPort]>),
) -> Vec<Rule> {
    rules
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let checked = match r {
                Lenient::Ok(r) => {
                    let (peers, ports) = parts(r);
                    check_rule(peers, ports)
                }
                Lenient::Bad(e) => Err(format!("malformed ({e})")),
            };
            checked.unwrap_or_else(|e| {
                problem(format!("{dir} rule {i}: {e}; it allows nothing"));
                Rule::Invalid
            })
        })
        .collect()
}

/// The networks of a `policy-for` annotation as `namespace/name` (a bare
/// name is in the policy's namespace), and the entries that are neither.
pub fn parse_policy_for(raw: &str, namespace: &str) -> (Vec<String>, Vec<String>) {
    let (mut nets, mut bad) = (Vec::new(), Vec::new());
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match network_name(part, namespace) {
            Some(n) => {
                if !nets.contains(&n) {
                    nets.push(n)
                }
            }
            None => bad.push(part.to_string()),
        }
    }
    (nets, bad)
}

/// `namespace/name` for a NetworkAttachmentDefinition reference (a bare
/// name is in `namespace`); `None` if it is neither form.
pub fn network_name(s: &str, namespace: &str) -> Option<String> {
    let (ns, name) = match s.split_once('/') {
        Some((ns, name)) => (ns, name),
        None => (namespace, s),
    };
    (!ns.is_empty() && !name.is_empty() && !name.contains('/')).then(|| format!("{ns}/{name}"))
}

fn check_rule(
    peers: Option<&[api::Peer]>,
    ports: Option<&[api::PolicyPort]>,
) -> Result<Rule, String> {
    let peers = match peers {
        None | Some([]) => Peers::Any,
        Some(list) => Peers::List(
            list.iter()
                .enumerate()
                .map(|(i, p)| check_peer(p).map_err(|e| format!("peer {i}: {e}")))
                .collect::<Result<_, _>>()?,
        ),
    };
    let ports = match ports {
        None | Some([]) => Ports::Any,
        Some(list) => Ports::List(
            list.iter()
                .enumerate()
                .map(|(i, p)| check_port(p).map_err(|e| format!("port {i}: {e}")))
                .collect::<Result<_, _>>()?,
        ),
    };
    Ok(Rule::Allow { peers, ports })
}

fn check_peer(p: &api::Peer) -> Result<Peer, String> {
    let selector =
        |s: &Option<api::LabelSelector>, what: &str| -> Result<Option<Selector>, String> {
            s.as_ref()
                .map(Selector::parse)
                .transpose()
                .map_err(|e| format!("{what}: {e}"))
        };
    match (&p.ip_block, &p.pod_selector, &p.namespace_selector) {
        (Some(b), None, None) => Ok(Peer::Block(check_block(b)?)),
        (Some(_), _, _) => Err("ipBlock together with a selector".into()),
        (None, None, None) => Err("no podSelector, namespaceSelector or ipBlock".into()),
        (None, pods, namespaces) => Ok(Peer::Pods {
            namespaces: selector(namespaces, "namespaceSelector")?,
            pods: selector(pods, "podSelector")?,
        }),
    }
}

fn check_block(b: &api::IpBlock) -> Result<AddrSet, String> {
    let cidr: IpNet = b
        .cidr
        .trim()
        .parse()
        .map_err(|_| format!("ipBlock cidr {:?} is not a CIDR", b.cidr))?;
    let mut except = Vec::with_capacity(b.except.len());
    for e in &b.except {
        let net: IpNet = e
            .trim()
            .parse()
            .map_err(|_| format!("ipBlock except {e:?} is not a CIDR"))?;
        // As the API checks it: a strict subset of the cidr.
        let inside = match (cidr, net) {
            (IpNet::V4(c), IpNet::V4(n)) => {
                c.contains(&n.network()) && n.prefix_len() > c.prefix_len()
            }
            (IpNet::V6(c), IpNet::V6(n)) => {
                c.contains(&n.network()) && n.prefix_len() > c.prefix_len()
            }
            _ => false,
        };
        if !inside {
            return Err(format!("ipBlock except {e} is not inside cidr {cidr}"));
        }
        except.push(net);
    }
    Ok(AddrSet::block(&cidr, &except))
}

fn check_port(p: &api::PolicyPort) -> Result<PortSpec, String> {
    let proto = match &p.protocol {
        None => Proto::Tcp,
        Some(s) => Proto::parse(s).ok_or_else(|| format!("unknown protocol {s:?}"))?,
    };
    let number = |n: i64, what: &str| -> Result<u16, String> {
        u16::try_from(n)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("{what} {n} is not in 1-65535"))
    };
    match (&p.port, p.end_port) {
        (None, None) => Ok(PortSpec::All(proto)),
        (None, Some(_)) => Err("endPort without port".into()),
        (Some(IntOrString::Int(n)), end) => {
            let lo = number(*n, "port")?;
            let hi = match end {
                None => lo,
                Some(e) => number(e, "endPort")?,
            };
            if hi < lo {
                return Err(format!("endPort {hi} is below port {lo}"));
            }
            Ok(PortSpec::Range(proto, lo, hi))
        }
        (Some(IntOrString::Str(_)), Some(_)) => Err("endPort with a named port".into()),
        (Some(IntOrString::Str(name)), None) => {
            if !is_port_name(name) {
                return Err(format!("{name:?} is not a port name"));
            }
            Ok(PortSpec::Named(proto, name.clone()))
        }
    }
}

/// Kubernetes' IsValidPortName (an IANA service name): 1 to 15 of
/// `[a-z0-9-]`, at least one letter, no leading, trailing or double `-`.
pub fn is_port_name(s: &str) -> bool {
    (1..=15).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(kind: Kind, v: serde_json::Value) -> (Policy, Vec<Problem>) {
        Policy::new(kind, &serde_json::from_value(v).unwrap())
    }

    fn np(spec: serde_json::Value) -> (Policy, Vec<Problem>) {
        policy(
            Kind::NetworkPolicy,
            json!({"metadata": {"name": "p", "namespace": "x"}, "spec": spec}),
        )
    }

    #[test]
    fn policy_types_defaults() {
        let (p, probs) = np(json!({"podSelector": {}}));
        assert!(probs.is_empty());
        assert_eq!(p.ingress, Some(vec![]));
        assert_eq!(p.egress, None);
        let (p, _) = np(json!({"egress": [{}]}));
        assert!(p.ingress.is_some() && p.egress.is_some());
        let (p, _) = np(json!({"egress": []}));
        assert_eq!(p.egress, None);
        let (p, _) = np(json!({"policyTypes": ["Egress"], "ingress": [{}]}));
        assert_eq!((p.ingress, p.egress), (None, Some(vec![])));
        let (p, probs) = np(json!({"policyTypes": ["Ingress", "Sideways"]}));
        assert!(p.ingress.is_some() && p.egress.is_none());
        assert!(probs[0].what.contains("Sideways"));
        // ingress: [{}] allows everything.
        let (p, _) = np(json!({"ingress": [{}]}));
        assert_eq!(
            p.ingress.unwrap(),
            [Rule::Allow {
                peers: Peers::Any,
                ports: Ports::Any
            }]
        );
    }

    #[test]
    fn bad_rules_fail_closed_one_by_one() {
        let cases = [
            (
                json!({"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}),
                "not a CIDR",
            ),
            (
                json!({"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16"]}}]}),
                "not inside",
            ),
            (
                json!({"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.0.0.0/8"]}}]}),
                "not inside",
            ),
            (
                json!({"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["fd00::/64"]}}]}),
                "not inside",
            ),
            (json!({"ports": [{"protocol": "ICMP"}]}), "unknown protocol"),
            (
                json!({"ports": [{"port": 90, "endPort": 80}]}),
                "below port",
            ),
            (json!({"ports": [{"port": 0}]}), "1-65535"),
            (json!({"ports": [{"port": 70000}]}), "1-65535"),
            (json!({"ports": [{"endPort": 80}]}), "without port"),
            (
                json!({"ports": [{"port": "http", "endPort": 80}]}),
                "named port",
            ),
            (json!({"ports": [{"port": "80"}]}), "not a port name"),
            (
                json!({"from": [{"podSelector": {"matchExpressions": [{"key": "a", "operator": "Is"}]}}]}),
                "unknown operator",
            ),
            (
                json!({"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}),
                "together",
            ),
            (json!({"from": [{}]}), "no podSelector"),
            (json!({"from": 7}), "malformed"),
        ];
        for (rule, why) in cases {
            let (p, probs) = policy(
                Kind::MultiNetworkPolicy,
                json!({"metadata": {"name": "m", "namespace": "x",
                                    "annotations": {"k8s.v1.cni.cncf.io/policy-for": "net1"}},
                       "spec": {"ingress": [rule.clone(), {}]}}),
            );
            let rules = p.ingress.unwrap();
            assert_eq!(rules[0], Rule::Invalid, "{rule}");
            // The other rule still applies.
            assert!(matches!(rules[1], Rule::Allow { .. }));
            assert_eq!(probs.len(), 1, "{rule}: {probs:?}");
            assert!(probs[0].what.contains(why), "{rule}: {}", probs[0]);
            assert!(probs[0]
                .to_string()
                .starts_with("MultiNetworkPolicy x/m: ingress rule 0"));
            assert!(p.selector.is_some());
        }
    }

    #[test]
    fn bad_pod_selector_selects_nothing() {
        let (p, probs) =
            np(json!({"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}));
        assert_eq!(p.selector, None);
        assert!(probs[0].what.contains("selects no pod"));
        let (p, _) = np(json!({"podSelector": "everything"}));
        assert_eq!(p.selector, None);
        let (p, _) = np(json!({}));
        assert_eq!(p.selector, Some(Selector::everything()));
    }

    #[test]
    fn ports_and_peers() {
        let (p, probs) = np(json!({"ingress": [{
            "from": [{"podSelector": {"matchLabels": {"pod": "b"}}},
                     {"namespaceSelector": {}},
                     {"ipBlock": {"cidr": "10.1.2.3/16", "except": ["10.1.2.0/24"]}}],
            "ports": [{"port": 80}, {"protocol": "udp", "port": 53, "endPort": 54},
                      {"protocol": "SCTP"}, {"port": "serve-80-tcp"}]}]}));
        assert!(probs.is_empty(), "{probs:?}");
        let Rule::Allow {
            peers: Peers::List(peers),
            ports: Ports::List(ports),
        } = &p.ingress.unwrap()[0]
        else {
            panic!()
        };
        assert!(matches!(
            &peers[0],
            Peer::Pods {
                namespaces: None,
                pods: Some(_)
            }
        ));
        assert!(
            matches!(&peers[1], Peer::Pods { namespaces: Some(s), pods: None } if s.is_everything())
        );
        let Peer::Block(b) = &peers[2] else { panic!() };
        assert!(
            b.contains("10.1.0.1".parse().unwrap()) && !b.contains("10.1.2.9".parse().unwrap())
        );
        assert_eq!(
            ports,
            &[
                PortSpec::Range(Proto::Tcp, 80, 80),
                PortSpec::Range(Proto::Udp, 53, 54),
                PortSpec::All(Proto::Sctp),
                PortSpec::Named(Proto::Tcp, "serve-80-tcp".into()),
            ]
        );
    }

    #[test]
    fn policy_for_networks() {
        assert_eq!(
            parse_policy_for(" net1, other/net2 ,,x/net1", "x"),
            (vec!["x/net1".to_string(), "other/net2".into()], vec![])
        );
        assert_eq!(parse_policy_for("a/b/c,/n", "x").1, ["a/b/c", "/n"]);
        let (p, probs) = policy(
            Kind::MultiNetworkPolicy,
            json!({"metadata": {"name": "m", "namespace": "x"}, "spec": {}}),
        );
        assert!(p.networks.is_empty());
        assert!(probs[0].what.contains("no network"));
        let (p, _) = np(json!({}));
        assert!(p.networks.is_empty());
    }

    #[test]
    fn port_names() {
        for ok in ["http", "serve-80-tcp", "a", "x1"] {
            assert!(is_port_name(ok), "{ok}");
        }
        for bad in ["", "80", "-a", "a-", "a--b", "HTTP", "sixteen-chars-xx"] {
            assert!(!is_port_name(bad), "{bad}");
        }
    }
}
