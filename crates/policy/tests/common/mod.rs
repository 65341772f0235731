//! The truth-table model of the Kubernetes e2e NetworkPolicy suite
//! (test/e2e/network/netpol): namespaces x, y, z labelled `ns=<name>`,
//! pods a, b, c in each labelled `pod=<name>` with the suite's container
//! ports (serve-80-tcp, serve-80-udp, serve-81-tcp, serve-81-udp,
//! serve-80-sctp, serve-81-sctp), spread over three nodes, and the 9×9
//! reachability matrix of a probe (protocol, port) computed with the
//! engine's evaluator on every source's egress and every destination's
//! ingress. Loopback (a pod to itself) is left out, as the suite does.
//!
//! The same model runs NetworkPolicy on the cluster network (eth0,
//! addresses from status.podIPs) and MultiNetworkPolicy on a secondary
//! network (net1, addresses from network-status): [`Model::policy`] makes
//! the policy of the model's kind from one spec, and every check also
//! asserts that the other network is left fully open.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::IpAddr;

use plexus_policy::{
    api, compute, Direction, InterfaceRules, Kind, NamespaceInfo, PodInfo, Policy,
};
use serde_json::{json, Value};

pub const NAMESPACES: [&str; 3] = ["x", "y", "z"];
pub const PODS: [&str; 3] = ["a", "b", "c"];
pub const NODES: [&str; 3] = ["n1", "n2", "n3"];
/// The NetworkAttachmentDefinition every pod's net1 is attached to.
pub const NAD: &str = "default/macvlan1";

/// A probe: protocol number and destination port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub proto: u8,
    pub port: u16,
}

pub const TCP80: Probe = Probe { proto: 6, port: 80 };
pub const TCP81: Probe = Probe { proto: 6, port: 81 };
pub const UDP80: Probe = Probe {
    proto: 17,
    port: 80,
};
pub const UDP81: Probe = Probe {
    proto: 17,
    port: 81,
};
pub const SCTP80: Probe = Probe {
    proto: 132,
    port: 80,
};
pub const SCTP81: Probe = Probe {
    proto: 132,
    port: 81,
};
/// The probes every case is checked with.
pub const PROBES: [Probe; 3] = [TCP80, TCP81, UDP80];

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = match self.proto {
            6 => "TCP",
            17 => "UDP",
            132 => "SCTP",
            _ => "?",
        };
        write!(f, "{p} {}", self.port)
    }
}

/// All nine pods, `x/a` .. `z/c`.
pub fn all_pods() -> Vec<String> {
    NAMESPACES
        .iter()
        .flat_map(|ns| PODS.iter().map(move |p| format!("{ns}/{p}")))
        .collect()
}

/// The e2e suite's `Peer`: a namespace, a pod name, both or neither.
#[derive(Debug, Clone, Copy, Default)]
pub struct Peer<'a> {
    pub ns: Option<&'a str>,
    pub pod: Option<&'a str>,
}

pub const ANY: Peer<'static> = Peer {
    ns: None,
    pod: None,
};

pub fn ns(n: &str) -> Peer<'_> {
    Peer {
        ns: Some(n),
        pod: None,
    }
}

pub fn pod(s: &str) -> Peer<'_> {
    let (n, p) = s.split_once('/').unwrap();
    Peer {
        ns: Some(n),
        pod: Some(p),
    }
}

impl Peer<'_> {
    fn matches(&self, p: &str) -> bool {
        let (n, name) = p.split_once('/').unwrap();
        self.ns.is_none_or(|x| x == n) && self.pod.is_none_or(|x| x == name)
    }
}

/// The e2e suite's `Reachability`: expected connectivity from → to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reach {
    pods: Vec<String>,
    m: Vec<Vec<bool>>,
}

impl Reach {
    pub fn new(default: bool) -> Reach {
        let pods = all_pods();
        let n = pods.len();
        Reach {
            pods,
            m: vec![vec![default; n]; n],
        }
    }

    /// `ExpectPeer`: every pair matching (from, to).
    pub fn peer(&mut self, from: Peer, to: Peer, v: bool) -> &mut Self {
        for i in 0..self.pods.len() {
            for j in 0..self.pods.len() {
                if from.matches(&self.pods[i]) && to.matches(&self.pods[j]) {
                    self.m[i][j] = v;
                }
            }
        }
        self
    }

    /// `Expect`: one pair.
    pub fn expect(&mut self, from: &str, to: &str, v: bool) -> &mut Self {
        self.peer(pod(from), pod(to), v)
    }

    /// `ExpectAllIngress`: everything to `to`.
    pub fn all_ingress(&mut self, to: &str, v: bool) -> &mut Self {
        self.peer(ANY, pod(to), v)
    }

    /// `ExpectAllEgress`: everything from `from`.
    pub fn all_egress(&mut self, from: &str, v: bool) -> &mut Self {
        self.peer(pod(from), ANY, v)
    }

    /// The truth table, `X` where `self` and `other` differ, as the suite
    /// prints it; loopback is `-`.
    pub fn diff(&self, got: &Reach) -> Option<String> {
        let mut bad = false;
        let mut out = String::from("      ");
        for p in &self.pods {
            write!(out, "{p:>5}").unwrap();
        }
        out.push('\n');
        for i in 0..self.pods.len() {
            write!(out, "{:>5} ", self.pods[i]).unwrap();
            for j in 0..self.pods.len() {
                let cell = if i == j {
                    "-"
                } else if self.m[i][j] != got.m[i][j] {
                    bad = true;
                    "X"
                } else if got.m[i][j] {
                    "."
                } else {
                    "#"
                };
                write!(out, "{cell:>5}").unwrap();
            }
            out.push('\n');
        }
        bad.then_some(out)
    }
}

/// The cluster: raw objects, as the API would hand them to the informer.
pub struct Model {
    pub kind: Kind,
    pods: BTreeMap<String, Value>,
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
    policies: BTreeMap<(String, String), Value>,
    /// The node's own addresses given to the evaluator.
    pub node_addrs: Vec<IpAddr>,
}

/// Index (1-based) of a namespace and of a pod name.
fn indexes(p: &str) -> (usize, usize) {
    let (n, name) = p.split_once('/').unwrap();
    (
        NAMESPACES.iter().position(|x| *x == n).unwrap() + 1,
        PODS.iter().position(|x| *x == name).unwrap() + 1,
    )
}

impl Model {
    /// The model for NetworkPolicy on the cluster network.
    pub fn netpol() -> Model {
        Model::new(Kind::NetworkPolicy)
    }

    /// The model for MultiNetworkPolicy on net1.
    pub fn multinet() -> Model {
        Model::new(Kind::MultiNetworkPolicy)
    }

    pub fn new(kind: Kind) -> Model {
        let mut m = Model {
            kind,
            pods: BTreeMap::new(),
            namespaces: BTreeMap::new(),
            policies: BTreeMap::new(),
            node_addrs: Vec::new(),
        };
        for n in NAMESPACES {
            m.namespaces.insert(
                n.into(),
                BTreeMap::from([("ns".to_string(), n.to_string())]),
            );
        }
        for p in all_pods() {
            let (n, name) = p.split_once('/').unwrap();
            let v = m.pod_json(n, name, json!({"pod": name}));
            m.pods.insert(p.clone(), v);
        }
        m
    }

    /// The cluster address (eth0) and the net1 address of a pod.
    pub fn eth0(p: &str) -> IpAddr {
        let (i, j) = indexes(p);
        format!("10.244.{i}.{j}").parse().unwrap()
    }

    pub fn net1(p: &str) -> IpAddr {
        let (i, j) = indexes(p);
        format!("192.168.{i}.{j}").parse().unwrap()
    }

    /// The address of `p` on the network the model's policies are about.
    pub fn ip(&self, p: &str) -> IpAddr {
        match self.kind {
            Kind::NetworkPolicy => Model::eth0(p),
            Kind::MultiNetworkPolicy => Model::net1(p),
        }
    }

    fn pod_json(&self, n: &str, name: &str, labels: Value) -> Value {
        let p = format!("{n}/{name}");
        let (_, j) = indexes(&p);
        let ports: Vec<Value> = [80, 81]
            .iter()
            .flat_map(|port| {
                ["tcp", "udp", "sctp"].map(|proto| {
                    json!({"name": format!("serve-{port}-{proto}"),
                           "containerPort": port,
                           "protocol": proto.to_uppercase()})
                })
            })
            .collect();
        let status = json!([
            {"name": "cbr0", "interface": "eth0", "ips": [Model::eth0(&p).to_string()], "default": true},
            {"name": NAD, "interface": "net1", "ips": [Model::net1(&p).to_string()]},
        ]);
        json!({
            "metadata": {"name": name, "namespace": n, "uid": format!("uid-{n}-{name}"),
                         "labels": labels,
                         "annotations": {api::NETWORK_STATUS: status.to_string()}},
            "spec": {"nodeName": NODES[j - 1],
                     "containers": [{"name": "cont", "ports": ports}]},
            "status": {"phase": "Running", "podIP": Model::eth0(&p).to_string(),
                       "podIPs": [{"ip": Model::eth0(&p).to_string()}]}
        })
    }

    /// Creates or replaces policy `name` in namespace `ns` with `spec`, of
    /// the model's kind (a MultiNetworkPolicy is for [`NAD`]).
    pub fn policy(&mut self, ns: &str, name: &str, spec: Value) -> &mut Self {
        let kind = self.kind;
        self.policy_of(kind, ns, name, spec, NAD)
    }

    /// A policy of a given kind, for `networks` (MultiNetworkPolicy only).
    pub fn policy_of(
        &mut self,
        kind: Kind,
        ns: &str,
        name: &str,
        spec: Value,
        networks: &str,
    ) -> &mut Self {
        let mut meta = json!({"name": name, "namespace": ns});
        if kind == Kind::MultiNetworkPolicy {
            meta["annotations"] = json!({api::POLICY_FOR: networks});
        }
        let mut obj = json!({"metadata": meta, "spec": spec});
        obj["kind"] = json!(kind.to_string());
        self.policies.insert((ns.into(), name.into()), obj);
        self
    }

    pub fn delete_policy(&mut self, ns: &str, name: &str) -> &mut Self {
        self.policies.remove(&(ns.to_string(), name.to_string()));
        self
    }

    pub fn delete_all_policies(&mut self) -> &mut Self {
        self.policies.clear();
        self
    }

    pub fn set_pod_labels(&mut self, p: &str, labels: Value) -> &mut Self {
        self.pods.get_mut(p).unwrap()["metadata"]["labels"] = labels;
        self
    }

    pub fn set_ns_label(&mut self, n: &str, k: &str, v: &str) -> &mut Self {
        self.namespaces
            .get_mut(n)
            .unwrap()
            .insert(k.into(), v.into());
        self
    }

    /// Edits a pod's raw object.
    pub fn edit_pod(&mut self, p: &str, f: impl FnOnce(&mut Value)) -> &mut Self {
        f(self.pods.get_mut(p).unwrap());
        self
    }

    /// The engine's output for every node, merged: (pod, ifname) → rules.
    pub fn rules(&self) -> BTreeMap<(String, String), InterfaceRules> {
        let pods: Vec<PodInfo> = self
            .pods
            .values()
            .map(|v| PodInfo::new(&serde_json::from_value(v.clone()).unwrap()))
            .collect();
        let namespaces: Vec<NamespaceInfo> = self
            .namespaces
            .iter()
            .map(|(n, labels)| NamespaceInfo::with_labels(n, labels.clone()))
            .collect();
        let policies: Vec<Policy> = self
            .policies
            .values()
            .map(|v| {
                let kind = if v["kind"] == "NetworkPolicy" {
                    Kind::NetworkPolicy
                } else {
                    Kind::MultiNetworkPolicy
                };
                let obj: api::PolicyObject = serde_json::from_value(v.clone()).unwrap();
                Policy::new(kind, &obj).0
            })
            .collect();
        let mut out = BTreeMap::new();
        for node in NODES {
            for r in compute(node, &pods, &namespaces, &policies).interfaces {
                out.insert((r.pod.to_string(), r.ifname.clone()), r);
            }
        }
        out
    }

    /// The reachability matrix of `probe` on the interface `ifname`, whose
    /// addresses `addr` gives.
    pub fn reach_on(&self, ifname: &str, addr: fn(&str) -> IpAddr, probe: Probe) -> Reach {
        let rules = self.rules();
        let mut r = Reach::new(false);
        let pods = all_pods();
        for (i, from) in pods.iter().enumerate() {
            for (j, to) in pods.iter().enumerate() {
                let (src, dst) = (addr(from), addr(to));
                let out = &rules[&(from.clone(), ifname.to_string())];
                let inn = &rules[&(to.clone(), ifname.to_string())];
                r.m[i][j] = out.allows(
                    &self.node_addrs,
                    Direction::Egress,
                    src,
                    dst,
                    probe.proto,
                    probe.port,
                ) && inn.allows(
                    &self.node_addrs,
                    Direction::Ingress,
                    src,
                    dst,
                    probe.proto,
                    probe.port,
                );
            }
        }
        r
    }

    /// The matrix on the network the model's policies are about.
    pub fn reach(&self, probe: Probe) -> Reach {
        match self.kind {
            Kind::NetworkPolicy => self.reach_on("eth0", Model::eth0, probe),
            Kind::MultiNetworkPolicy => self.reach_on("net1", Model::net1, probe),
        }
    }

    /// Panics with the truth table if `got` is not `want`.
    pub fn assert_matrix(what: &str, got: &Reach, want: &Reach) {
        if let Some(table) = want.diff(got) {
            panic!("{what}: matrix differs (X), . allowed, # blocked:\n{table}");
        }
    }

    /// The other network's matrix: the model's policies never touch it.
    fn other_reach(&self, probe: Probe) -> Reach {
        match self.kind {
            Kind::NetworkPolicy => self.reach_on("net1", Model::net1, probe),
            Kind::MultiNetworkPolicy => self.reach_on("eth0", Model::eth0, probe),
        }
    }

    /// Compares `probe`'s matrix with `want`, and the other network's
    /// with all-open; panics with the truth table on a difference.
    pub fn check(&self, step: &str, probe: Probe, want: &Reach) {
        let got = self.reach(probe);
        if let Some(table) = want.diff(&got) {
            panic!(
                "{:?} {step}, {probe}: matrix differs (X), . allowed, # blocked:\n{table}",
                self.kind
            );
        }
        let open = Reach::new(true);
        if let Some(table) = open.diff(&self.other_reach(probe)) {
            panic!(
                "{:?} {step}, {probe}: the other network is not open:\n{table}",
                self.kind
            );
        }
    }

    /// [`Model::check`] for every probe of [`PROBES`], `want` per probe.
    pub fn check_all(&self, step: &str, want: impl Fn(Probe) -> Reach) {
        for p in PROBES {
            self.check(step, p, &want(p));
        }
    }
}
