//! The engine: from every pod, namespace and policy of the cluster to the
//! compiled rules of every pod interface on one node.
//!
//! The semantics, all of them from the Kubernetes API documentation:
//! * a pod is isolated in a direction only when some policy selecting it
//!   is about that direction (`policyTypes`); what it then allows is the
//!   union of the rules of every such policy (policies only add);
//! * a NetworkPolicy selects a pod's cluster network interface and sees
//!   its peers by `status.podIPs`; a MultiNetworkPolicy selects the pod's
//!   interfaces on the networks its `policy-for` names and sees each peer
//!   by its addresses on that same network (network-status); neither
//!   touches the other's interfaces;
//! * a peer `podSelector` alone means pods of the policy's namespace, a
//!   `namespaceSelector` alone all pods of the matching namespaces, both
//!   the matching pods of the matching namespaces; `ipBlock` is addresses,
//!   whoever holds them;
//! * ports by number or range, or by name: for ingress the selected pod's
//!   own container port of that name (and protocol), for egress each
//!   destination pod's; a name no container has matches nothing;
//! * host-network pods and finished pods are neither selected nor peers.
//!
//! [`compute`] recomputes everything; it shares the work that does not
//! depend on the selected interface (each policy's peers, once per
//! network) and the result between interfaces with the same selecting
//! policies, so 1,000 pods and 500 policies take milliseconds
//! (tests/scale.rs prints the figure).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use crate::addr::AddrSet;
use crate::cluster::{NamespaceInfo, Network, PodInfo};
use crate::policy::{Kind, Peer, Peers, Policy, PolicyId, PortSpec, Ports, Problem, Proto, Rule};
use crate::rules::{Allow, DirectionRules, InterfaceRules};

/// What the node should enforce.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    /// Every interface of every pod of the node that policy can apply to
    /// (isolated or not), sorted by pod and interface name.
    pub interfaces: Vec<InterfaceRules>,
}

/// A rule with its peers resolved on one network.
enum Resolved {
    Invalid,
    Allow {
        /// `None`: every peer.
        peers: Option<ResolvedPeers>,
        ports: Ports,
    },
}

struct ResolvedPeers {
    /// Every address the peers have (pods on the network, blocks).
    addrs: AddrSet,
    /// The peer pods (indexes into the pod list), for egress named ports.
    pods: Vec<usize>,
    /// The blocks alone, for egress named ports.
    blocks: AddrSet,
}

/// The inputs, indexed.
struct Index<'a> {
    pods: Vec<&'a PodInfo>,
    namespaces: Vec<&'a NamespaceInfo>,
    /// Subject pods (policy applies, can be peers) by namespace.
    pods_by_ns: HashMap<&'a str, Vec<usize>>,
}

impl<'a> Index<'a> {
    fn new(pods: Vec<&'a PodInfo>, namespaces: Vec<&'a NamespaceInfo>) -> Index<'a> {
        let mut pods_by_ns: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, p) in pods.iter().enumerate().filter(|(_, p)| p.subject()) {
            pods_by_ns
                .entry(p.pod.namespace.as_str())
                .or_default()
                .push(i);
        }
        Index {
            pods,
            namespaces,
            pods_by_ns,
        }
    }

    fn ns_pods(&self, ns: &str) -> &[usize] {
        self.pods_by_ns.get(ns).map_or(&[], Vec::as_slice)
    }

    /// The pods a peer selector means, for a policy in `policy_ns`.
    fn peer_pods(
        &self,
        policy_ns: &str,
        namespaces: &Option<crate::Selector>,
        pods: &Option<crate::Selector>,
    ) -> Vec<usize> {
        let in_ns = |ns: &str, out: &mut Vec<usize>| {
            out.extend(self.ns_pods(ns).iter().copied().filter(|&i| {
                pods.as_ref()
                    .is_none_or(|s| s.matches(&self.pods[i].labels))
            }))
        };
        let mut out = Vec::new();
        match namespaces {
            None => in_ns(policy_ns, &mut out),
            Some(sel) => {
                for ns in self.namespaces.iter().filter(|n| sel.matches(&n.labels)) {
                    in_ns(&ns.name, &mut out);
                }
            }
        }
        out
    }

    /// Every subject pod, for egress named ports to any destination.
    fn all_subject_pods(&self) -> Vec<usize> {
        let mut v: Vec<usize> = self.pods_by_ns.values().flatten().copied().collect();
        v.sort_unstable();
        v
    }

    fn resolve(&self, policy: &Policy, rule: &Rule, network: &Network) -> Resolved {
        let Rule::Allow { peers, ports } = rule else {
            return Resolved::Invalid;
        };
        let peers = match peers {
            Peers::Any => None,
            Peers::List(list) => {
                let mut pods = Vec::new();
                let mut blocks = Vec::new();
                for p in list {
                    match p {
                        Peer::Pods {
                            namespaces,
                            pods: sel,
                        } => pods.extend(self.peer_pods(&policy.id.namespace, namespaces, sel)),
                        Peer::Block(b) => blocks.push(b),
                    }
                }
                pods.sort_unstable();
                pods.dedup();
                let blocks = AddrSet::union_all(blocks);
                let pod_addrs =
                    AddrSet::of_addrs(pods.iter().flat_map(|&i| self.pods[i].addrs_on(network)));
                Some(ResolvedPeers {
                    addrs: pod_addrs.union(&blocks),
                    pods,
                    blocks,
                })
            }
        };
        Resolved::Allow {
            peers,
            ports: ports.clone(),
        }
    }
}

/// A policy with its rules resolved on the networks it applies to.
struct Compiled {
    ingress: Option<Vec<Resolved>>,
    egress: Option<Vec<Resolved>>,
}

/// Computes what node `node` should enforce. `pods` are all the pods the
/// policies may name as peers (every node's); `namespaces` all namespaces;
/// `policies` both kinds.
pub fn compute<'a>(
    node: &str,
    pods: impl IntoIterator<Item = &'a PodInfo>,
    namespaces: impl IntoIterator<Item = &'a NamespaceInfo>,
    policies: impl IntoIterator<Item = &'a Policy>,
) -> Desired {
    let index = Index::new(pods.into_iter().collect(), namespaces.into_iter().collect());
    let mut policies: Vec<&Policy> = policies.into_iter().collect();
    policies.sort_by(|a, b| a.id.cmp(&b.id));

    // Which local interfaces each policy selects, and on which network.
    // Key: (pod index, interface index) → selecting policy indexes.
    let mut selected: BTreeMap<(usize, usize), Vec<usize>> = BTreeMap::new();
    let mut networks_used: Vec<(usize, Network)> = Vec::new();
    for (pi, pol) in policies.iter().enumerate() {
        let Some(sel) = &pol.selector else { continue };
        for &i in index.ns_pods(&pol.id.namespace) {
            let pod = index.pods[i];
            if pod.node != node || !sel.matches(&pod.labels) {
                continue;
            }
            for (ii, iface) in pod.interfaces.iter().enumerate() {
                let applies = match (&pol.id.kind, &iface.network) {
                    (Kind::NetworkPolicy, Network::Cluster) => true,
                    (Kind::MultiNetworkPolicy, Network::Attachment(n)) => pol.networks.contains(n),
                    _ => false,
                };
                if applies {
                    selected.entry((i, ii)).or_default().push(pi);
                    if !networks_used.contains(&(pi, iface.network.clone())) {
                        networks_used.push((pi, iface.network.clone()));
                    }
                }
            }
        }
    }

    // Each (policy, network) resolved once.
    let mut compiled: HashMap<(usize, Network), Compiled> = HashMap::new();
    for (pi, net) in networks_used {
        let pol = policies[pi];
        let resolve = |rules: &Option<Vec<Rule>>| {
            rules
                .as_ref()
                .map(|rs| rs.iter().map(|r| index.resolve(pol, r, &net)).collect())
        };
        let c = Compiled {
            ingress: resolve(&pol.ingress),
            egress: resolve(&pol.egress),
        };
        compiled.insert((pi, net), c);
    }

    // Interfaces with the same policies (and, where named ports matter,
    // the same container ports) share their direction rules.
    let mut ingress_memo: HashMap<
        (Vec<usize>, Network, Vec<crate::NamedPort>),
        Arc<DirectionRules>,
    > = HashMap::new();
    let mut egress_memo: HashMap<(Vec<usize>, Network), Arc<DirectionRules>> = HashMap::new();
    let open = Arc::new(DirectionRules::open());

    let mut interfaces = Vec::new();
    for (i, pod) in index.pods.iter().enumerate() {
        if pod.node != node || !pod.subject() {
            continue;
        }
        for (ii, iface) in pod.interfaces.iter().enumerate() {
            let pols = selected.get(&(i, ii)).cloned().unwrap_or_default();
            let net = &iface.network;
            let parts = |dir: fn(&Compiled) -> &Option<Vec<Resolved>>| -> Vec<&Vec<Resolved>> {
                pols.iter()
                    .filter_map(|&pi| dir(&compiled[&(pi, net.clone())]).as_ref())
                    .collect()
            };
            let ing = parts(|c| &c.ingress);
            let ingress = if ing.is_empty() {
                open.clone()
            } else {
                let named = ing
                    .iter()
                    .flat_map(|rs| rs.iter())
                    .any(|r| matches!(r, Resolved::Allow { ports, .. } if ports.has_named()));
                let key = (
                    pols.clone(),
                    net.clone(),
                    if named {
                        pod.named_ports.clone()
                    } else {
                        Vec::new()
                    },
                );
                ingress_memo
                    .entry(key)
                    .or_insert_with(|| Arc::new(ingress_rules(&ing, pod)))
                    .clone()
            };
            let eg = parts(|c| &c.egress);
            let egress = if eg.is_empty() {
                open.clone()
            } else {
                egress_memo
                    .entry((pols.clone(), net.clone()))
                    .or_insert_with(|| Arc::new(egress_rules(&eg, &index, net)))
                    .clone()
            };
            interfaces.push(InterfaceRules {
                pod: pod.pod.clone(),
                ifname: iface.ifname.clone(),
                network: iface.network.clone(),
                addrs: iface.addrs.clone(),
                ingress,
                egress,
                policies: pols
                    .iter()
                    .map(|&pi| policies[pi].id.clone())
                    .collect::<Vec<PolicyId>>(),
            });
        }
    }
    interfaces.sort_by(|a, b| (&a.pod, &a.ifname).cmp(&(&b.pod, &b.ifname)));
    Desired { interfaces }
}

/// Numeric port specs; named ones are resolved by the caller.
fn numeric(spec: &PortSpec) -> Option<(Proto, u16, u16)> {
    match spec {
        PortSpec::All(p) => Some((*p, 0, u16::MAX)),
        PortSpec::Range(p, lo, hi) => Some((*p, *lo, *hi)),
        PortSpec::Named(..) => None,
    }
}

/// The allowing rules of `rule_sets` (invalid ones allow nothing), with
/// the addresses of their peers (every address when they name none).
fn allowing<'r>(
    rule_sets: &'r [&'r Vec<Resolved>],
) -> impl Iterator<Item = (AddrSet, &'r Option<ResolvedPeers>, &'r Ports)> {
    rule_sets
        .iter()
        .flat_map(|rs| rs.iter())
        .filter_map(|r| match r {
            Resolved::Invalid => None,
            Resolved::Allow { peers, ports } => {
                let addrs = peers
                    .as_ref()
                    .map_or_else(AddrSet::all, |p| p.addrs.clone());
                Some((addrs, peers, ports))
            }
        })
}

/// Ingress: the peers are sources; named ports are the selected pod's.
fn ingress_rules(rule_sets: &[&Vec<Resolved>], pod: &PodInfo) -> DirectionRules {
    let mut allows = Vec::new();
    for (addrs, _, ports) in allowing(rule_sets) {
        let ports = match ports {
            Ports::Any => None,
            Ports::List(list) => Some(
                list.iter()
                    .filter_map(|s| match s {
                        PortSpec::Named(proto, name) => {
                            pod.resolve(name, *proto).map(|p| (*proto, p, p))
                        }
                        other => numeric(other),
                    })
                    .collect(),
            ),
        };
        allows.push(Allow { addrs, ports });
    }
    DirectionRules::isolated(&allows)
}

/// Egress: the peers are destinations; a named port is each destination
/// pod's own.
fn egress_rules(rule_sets: &[&Vec<Resolved>], index: &Index, net: &Network) -> DirectionRules {
    let mut allows = Vec::new();
    for (addrs, peers, ports) in allowing(rule_sets) {
        let list = match ports {
            Ports::Any => {
                allows.push(Allow { addrs, ports: None });
                continue;
            }
            Ports::List(list) => list,
        };
        let nums: Vec<_> = list.iter().filter_map(numeric).collect();
        if !nums.is_empty() {
            allows.push(Allow {
                addrs,
                ports: Some(nums),
            });
        }
        let named: Vec<(Proto, &str)> = list
            .iter()
            .filter_map(|s| match s {
                PortSpec::Named(p, n) => Some((*p, n.as_str())),
                _ => None,
            })
            .collect();
        if named.is_empty() {
            continue;
        }
        // Which pods a named port can resolve on: the peer pods, pods
        // inside the peer blocks, or (no peers given) every pod.
        let (candidates, blocks): (Vec<usize>, Option<&AddrSet>) = match peers {
            None => (index.all_subject_pods(), None),
            Some(p) if p.blocks.is_empty() => (p.pods.clone(), None),
            Some(p) => {
                let mut c = p.pods.clone();
                c.extend(index.all_subject_pods());
                c.sort_unstable();
                c.dedup();
                (c, Some(&p.blocks))
            }
        };
        let peer_pods = peers.as_ref().map(|p| &p.pods);
        for i in candidates {
            let pod = index.pods[i];
            let is_peer = peer_pods.is_none_or(|pp| pp.binary_search(&i).is_ok());
            let addrs: Vec<IpAddr> = pod
                .addrs_on(net)
                .filter(|a| is_peer || blocks.is_some_and(|b| b.contains(*a)))
                .collect();
            if addrs.is_empty() {
                continue;
            }
            let ports: Vec<_> = named
                .iter()
                .filter_map(|&(proto, name)| pod.resolve(name, proto).map(|p| (proto, p, p)))
                .collect();
            if !ports.is_empty() {
                allows.push(Allow {
                    addrs: AddrSet::of_addrs(addrs),
                    ports: Some(ports),
                });
            }
        }
    }
    DirectionRules::isolated(&allows)
}

/// Checks every policy object; what is wrong comes back as problems.
pub fn check_all<'a>(
    objects: impl IntoIterator<Item = (Kind, &'a crate::api::PolicyObject)>,
) -> (Vec<Policy>, Vec<Problem>) {
    let mut policies = Vec::new();
    let mut problems = Vec::new();
    for (kind, obj) in objects {
        let (p, probs) = Policy::new(kind, obj);
        policies.push(p);
        problems.extend(probs);
    }
    (policies, problems)
}
