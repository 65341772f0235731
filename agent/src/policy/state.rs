//! What the policy producer knows (the API's pods, namespaces and
//! policies as the informers hand them out, and the pods the meta plugin
//! attached on this node) and what it makes of it: one data plane entry
//! per isolated pod interface, its table inside the pod's namespace.
//! No I/O: the producer's loop (`super`) feeds it and hands the entries
//! on; the unit tests drive it directly.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use plexus_agent_api::policy::PolicyAttach;
use plexus_policy::cluster::{Interface, Network, PodInfo};
use plexus_policy::policy::network_name;
use plexus_policy::{render, InterfaceRules, NamespaceInfo, Policy, PolicyId, Problem};
use plexus_store::Event;

use crate::dataplane::{Entry, Key, Table};

/// Which informer an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    Pods,
    Namespaces,
    NetworkPolicies,
    MultiNetworkPolicies,
}

impl Source {
    pub const ALL: [Source; 4] = [
        Source::Pods,
        Source::Namespaces,
        Source::NetworkPolicies,
        Source::MultiNetworkPolicies,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Source::Pods => "pods",
            Source::Namespaces => "namespaces",
            Source::NetworkPolicies => "networkpolicies",
            Source::MultiNetworkPolicies => "multi-networkpolicies",
        }
    }
}

/// A checked policy with what was wrong with it (the informer's value).
pub type CheckedPolicy = (Policy, Vec<Problem>);

/// One pod interface as handed to the data plane.
#[derive(Debug, Clone)]
pub struct Programmed {
    pub container_id: String,
    pub netns: PathBuf,
    pub rules: InterfaceRules,
    pub entry: Entry,
}

/// The producer's state.
#[derive(Debug, Default)]
pub struct State {
    pub node: String,
    /// By `namespace/name`.
    pub pods: BTreeMap<String, Arc<PodInfo>>,
    pub namespaces: BTreeMap<String, Arc<NamespaceInfo>>,
    pub policies: BTreeMap<PolicyId, Arc<CheckedPolicy>>,
    /// Attached containers of this node, by container ID.
    pub attached: BTreeMap<String, PolicyAttach>,
    /// The node's own addresses (their traffic always passes).
    pub node_addrs: Vec<IpAddr>,
    /// The informers that have listed at least once.
    pub synced: BTreeSet<Source>,
    /// Every attached interface policy can apply to, isolated or not,
    /// as last computed: by data plane key.
    pub interfaces: BTreeMap<Key, Programmed>,
    /// Policy problems counted so far (each policy version once).
    pub problems_total: u64,
    /// The node addresses `interfaces` were rendered with.
    rendered_for: Vec<IpAddr>,
}

impl State {
    pub fn new(node: &str) -> State {
        State {
            node: node.to_string(),
            ..State::default()
        }
    }

    pub fn all_synced(&self) -> bool {
        self.synced.len() == Source::ALL.len()
    }

    pub fn pod_event(&mut self, ev: Event<PodInfo>) -> bool {
        apply(&mut self.pods, ev, |k, _| k.to_string())
    }

    pub fn namespace_event(&mut self, ev: Event<NamespaceInfo>) -> bool {
        apply(&mut self.namespaces, ev, |k, _| k.to_string())
    }

    /// A policy event of either kind; logs and counts the problems of
    /// each new version (fail closed: the engine already allows nothing
    /// for what is wrong).
    pub fn policy_event(&mut self, ev: Event<CheckedPolicy>) -> bool {
        if let Event::Added(_, p) | Event::Updated(_, _, p) = &ev {
            for pr in &p.1 {
                tracing::warn!(policy = %pr.policy, problem = %pr.what, "policy rule refused: it allows nothing (fail closed)");
                self.problems_total += 1;
            }
        }
        apply(&mut self.policies, ev, |_, v: &Arc<CheckedPolicy>| {
            v.0.id.clone()
        })
    }

    /// The problems of the policies now, for `policy show`.
    pub fn problems(&self) -> Vec<String> {
        self.policies
            .values()
            .flat_map(|p| p.1.iter().map(|pr| pr.to_string()))
            .collect()
    }

    /// The API's pod an attachment is about, if the API has it (the same
    /// UID when the attachment names one).
    pub fn api_pod(&self, a: &PolicyAttach) -> Option<&Arc<PodInfo>> {
        let p = self
            .pods
            .get(&format!("{}/{}", a.pod.namespace, a.pod.name))?;
        (a.pod.uid.is_empty() || p.pod.uid.is_empty() || p.pod.uid == a.pod.uid).then_some(p)
    }

    /// Recomputes every attached interface; returns the entries to put
    /// (new or changed) and the keys to remove.
    pub fn recompute(&mut self) -> (Vec<Entry>, Vec<Key>) {
        // Attached pods as the meta plugin saw them at ADD (the API may
        // not have their addresses and network-status yet), on this node.
        let mut local: BTreeMap<String, (PodInfo, &PolicyAttach)> = BTreeMap::new();
        for a in self.attached.values() {
            let Some(api) = self.api_pod(a) else { continue };
            let mut p = (**api).clone();
            p.node = self.node.clone();
            p.interfaces = interfaces(a);
            local.insert(format!("{}/{}", a.pod.namespace, a.pod.name), (p, a));
        }
        let pods: Vec<&PodInfo> = self
            .pods
            .iter()
            .filter(|(k, _)| !local.contains_key(*k))
            .map(|(_, p)| &**p)
            .chain(local.values().map(|(p, _)| p))
            .collect();
        let desired = plexus_policy::compute(
            &self.node,
            pods,
            self.namespaces.values().map(|n| &**n),
            self.policies.values().map(|p| &p.0),
        );
        let by_pod: BTreeMap<(String, String), &PolicyAttach> = local
            .values()
            .map(|(p, a)| ((p.pod.namespace.clone(), p.pod.name.clone()), *a))
            .collect();
        let mut now: BTreeMap<Key, Programmed> = BTreeMap::new();
        for rules in desired.interfaces {
            let Some(a) = by_pod.get(&(rules.pod.namespace.clone(), rules.pod.name.clone())) else {
                continue;
            };
            let netns = PathBuf::from(&a.netns);
            let key = Key::NftTable {
                netns: netns.clone(),
                table: render::table_name(&rules.ifname),
            };
            // Rendering is the dear part of a round: an interface whose
            // rules did not change keeps its entry.
            let entry = match self.interfaces.get(&key) {
                Some(before) if before.rules == rules && self.rendered_for == self.node_addrs => {
                    before.entry.clone()
                }
                _ => table_entry(&netns, &rules, &self.node_addrs),
            };
            now.insert(
                key,
                Programmed {
                    container_id: a.container_id.clone(),
                    netns,
                    rules,
                    entry,
                },
            );
        }
        let isolated = |p: &Programmed| p.rules.is_isolated();
        let mut put = Vec::new();
        let mut remove = Vec::new();
        for (k, p) in &now {
            let before = self.interfaces.get(k).filter(|b| isolated(b));
            if isolated(p) && before.is_none_or(|b| b.entry != p.entry) {
                put.push(p.entry.clone());
            }
            if !isolated(p) && before.is_some() {
                remove.push(k.clone());
            }
        }
        for (k, b) in &self.interfaces {
            if isolated(b) && !now.contains_key(k) {
                remove.push(k.clone());
            }
        }
        self.interfaces = now;
        self.rendered_for = self.node_addrs.clone();
        (put, remove)
    }

    /// The keys of one container's isolated interfaces.
    pub fn keys_of(&self, container_id: &str) -> Vec<Key> {
        self.interfaces
            .iter()
            .filter(|(_, p)| p.container_id == container_id && p.rules.is_isolated())
            .map(|(k, _)| k.clone())
            .collect()
    }
}

/// The interfaces of an attached pod from what the meta plugin reported
/// (its network-status): the default one is the cluster network.
pub fn interfaces(a: &PolicyAttach) -> Vec<Interface> {
    let ips = |v: &[String]| -> Vec<IpAddr> { v.iter().filter_map(|s| s.parse().ok()).collect() };
    let mut out: Vec<Interface> = Vec::new();
    for i in &a.interfaces {
        if i.interface.is_empty() {
            continue;
        }
        let network = if i.default {
            Network::Cluster
        } else {
            match network_name(&i.name, &a.pod.namespace) {
                Some(n) => Network::Attachment(n),
                None => continue,
            }
        };
        out.push(Interface {
            network,
            ifname: i.interface.clone(),
            addrs: ips(&i.ips),
        });
    }
    // The cluster network's interface first, as PodInfo has it.
    out.sort_by_key(|i| i.network != Network::Cluster);
    out
}

/// The data plane entry of one interface: its whole table, rendered.
pub fn table_entry(netns: &std::path::Path, rules: &InterfaceRules, node: &[IpAddr]) -> Entry {
    let batch = render::render(rules, node);
    let mut h = DefaultHasher::new();
    // The rules and the node's addresses are all a rendering depends on.
    format!("{rules:?}{node:?}").hash(&mut h);
    Entry::Table(Table {
        netns: netns.to_path_buf(),
        name: render::table_name(&rules.ifname),
        batch: Arc::new(batch),
        fingerprint: h.finish(),
    })
}

fn apply<K: Ord, T>(
    map: &mut BTreeMap<K, Arc<T>>,
    ev: Event<T>,
    key: impl Fn(&str, &Arc<T>) -> K,
) -> bool {
    match ev {
        Event::Added(k, v) | Event::Updated(k, _, v) => {
            map.insert(key(&k, &v), v);
            true
        }
        Event::Deleted(k, v) => {
            map.remove(&key(&k, &v));
            true
        }
        Event::Synced => false,
    }
}
