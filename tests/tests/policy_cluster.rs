//! Network policy enforced by real plexusd on a simulated cluster (two
//! nodes, etcd, the API stand-in serving pods, namespaces,
//! NetworkPolicies and MultiNetworkPolicies), pods wired by the meta
//! plugin: eth0 on the overlay (the cluster network), net2 on macvlan (a
//! secondary network, NAD `default/macvlan`, no host-side device), and in
//! the e2e model net1 on the routed network too (NAD `default/routed`,
//! plexus-bgp-routes, BGP between the nodes).
//!
//! * `e2e_truth_table`: the Kubernetes e2e suite's model (namespaces x, y,
//!   z with pods a, b, c spread over both nodes; TCP 80, TCP 81 and UDP 80
//!   probed between every pair on every network) after each policy case:
//!   every answer must be what the engine's evaluator says for the API's
//!   objects (and, for the first cases, what a hand-written truth table
//!   says), for NetworkPolicy on eth0 and MultiNetworkPolicy on net2
//!   (macvlan) and net1 (routed) in the same cases, each never touching
//!   the others' interfaces.
//! * `updates_add_del_and_restart`: pod labels, namespace labels, a pod
//!   re-created with a new address, a policy edited then deleted converge;
//!   an ADD into an isolated namespace is never open (probed the moment
//!   the ADD returns); DEL leaves no policy state; a table deleted by hand
//!   comes back; plexusd stopped keeps enforcement, refuses ADDs with code
//!   11, and resyncs on return.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use plexus_policy::{
    api, compute, Direction, InterfaceRules, Kind, NamespaceInfo, PodInfo, Policy,
};
use plexus_tests::apiserver::FakeApiServer;
use plexus_tests::cluster::multinet::{macvlan_ip, meta_cache, MultiNet, Options, META};
use plexus_tests::cluster::{CONVERGE, ETCD_IP};
use plexus_tests::{probe, require_overlay, CtlOutput, Netns};
use serde_json::{json, Value};

const NP: &str = "networkpolicies.networking.k8s.io";
const MNP: &str = "multi-networkpolicies.k8s.cni.cncf.io";
const MACVLAN: &str = "default/macvlan";
const ROUTED: &str = "default/routed";

/// A pod's address on one network.
type AddrOf = fn(&TestPod) -> Option<IpAddr>;

struct TestPod {
    node: usize,
    netns: Netns,
    uid: String,
    eth0: IpAddr,
    net2: IpAddr,
    /// On the routed network (plexus-bgp-routes), when the env has it.
    net1: Option<IpAddr>,
    _servers: Vec<probe::Server>,
}

struct Env {
    api: FakeApiServer,
    net: MultiNet,
    /// By `namespace/name`.
    pods: BTreeMap<String, TestPod>,
    /// Pods added so far per node (their macvlan address).
    slots: [usize; 2],
    created: usize,
    /// Pods also get net1 on the routed network (NAD `default/routed`).
    routed: bool,
}

impl Env {
    fn start(routed: bool) -> Env {
        Env::start_with(routed, Options::default())
    }

    fn start_with(routed: bool, opts: Options) -> Env {
        let (net, api) = MultiNet::start_with(2, opts, |c| {
            let api = FakeApiServer::start_at(&c.etcd_ns, ETCD_IP);
            let args = vec![
                "--policy".to_string(),
                "on".into(),
                "--kubeconfig".into(),
                api.kubeconfig.display().to_string(),
                "--resync-interval".into(),
                "2".into(),
                // Pod-to-pod traffic keeps its source address: plexusd's
                // masquerade exempts the cluster network, and the
                // bridge's own (ipMasq) is then off, as with flanneld.
                "--ip-masq".into(),
            ];
            (api, args)
        });
        for n in &net.cluster.nodes {
            assert!(
                n.run_dir.join("policy-enabled").exists(),
                "{}: plexusd wrote no policy marker",
                n.name
            );
        }
        Env {
            api,
            net,
            pods: BTreeMap::new(),
            slots: [0, 0],
            created: 0,
            routed,
        }
    }

    fn namespace(&self, name: &str, labels: Value) {
        self.api.apply(
            "namespaces",
            json!({"metadata": {"name": name, "labels": labels}}),
        );
    }

    /// The meta plugin's CNI operation for pod `ns/name` on `node`.
    /// `who`: the pod's namespace, name and UID.
    fn cni(&self, op: &str, node: usize, who: [&str; 3], netns: &Netns, net2: &str) -> CtlOutput {
        let mut ann = json!([{"name": "macvlan", "namespace": "default", "interface": "net2", "ips": [net2]}]);
        if self.routed {
            ann.as_array_mut()
                .unwrap()
                .push(json!({"name": "routed", "namespace": "default", "interface": "net1"}));
        }
        let caps = json!({"io.kubernetes.cri.pod-annotations":
                          {"k8s.v1.cni.cncf.io/networks": ann.to_string()}})
        .to_string();
        let [ns, name, uid] = who;
        let args = format!("K8S_POD_NAMESPACE={ns};K8S_POD_NAME={name};K8S_POD_UID={uid}");
        let n = self.net.node(node);
        n.cni.ctl(
            &n.ns,
            op,
            META,
            Some(&netns.path()),
            &[("CAP_ARGS", &caps), ("CNI_ARGS", &args)],
        )
    }

    /// A pod in the API (labels, node), then its ADD through the meta
    /// plugin, then its addresses and network-status in the API (what the
    /// kubelet and the meta plugin publish), then servers on both networks.
    fn add_pod(&mut self, node: usize, ns: &str, name: &str, labels: Value) {
        let (netns, uid, net2) = self.create_pod(node, ns, name, labels);
        self.cni("add", node, [ns, name, &uid], &netns, &net2)
            .expect_success();
        self.publish(node, ns, name, netns, uid);
    }

    fn create_pod(
        &mut self,
        node: usize,
        ns: &str,
        name: &str,
        labels: Value,
    ) -> (Netns, String, String) {
        self.created += 1;
        let uid = format!("uid-{ns}-{name}-{}", self.created);
        let ports = json!([
            {"name": "serve-80-tcp", "containerPort": 80, "protocol": "TCP"},
            {"name": "serve-81-tcp", "containerPort": 81, "protocol": "TCP"},
            {"name": "serve-80-udp", "containerPort": 80, "protocol": "UDP"}
        ]);
        self.api.create(
            "pods",
            json!({
                "metadata": {"name": name, "namespace": ns, "uid": uid, "labels": labels},
                "spec": {"nodeName": self.net.node(node).name,
                         "containers": [{"name": "c", "image": "busybox", "ports": ports}]},
                "status": {"phase": "Running"}
            }),
        );
        let netns = Netns::new(&format!("{ns}{name}"));
        let net2 = macvlan_ip(node, self.slots[node]);
        self.slots[node] += 1;
        (netns, uid, net2)
    }

    fn publish(&mut self, node: usize, ns: &str, name: &str, netns: Netns, uid: String) {
        let ip = |dev: &str| -> IpAddr {
            netns
                .addrs(dev)
                .iter()
                .find(|a| !a.contains(':'))
                .unwrap_or_else(|| panic!("{ns}/{name}: no IPv4 on {dev}"))
                .split('/')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        let (eth0, net2) = (ip("eth0"), ip("net2"));
        let net1 = self.routed.then(|| ip("net1"));
        let mut status = json!([
            {"name": "cbr0", "interface": "eth0", "ips": [eth0.to_string()], "default": true},
            {"name": MACVLAN, "interface": "net2", "ips": [net2.to_string()]}
        ]);
        if let Some(a) = net1 {
            status
                .as_array_mut()
                .unwrap()
                .push(json!({"name": ROUTED, "interface": "net1", "ips": [a.to_string()]}));
        }
        self.api.patch(
            "pods",
            ns,
            name,
            json!({"metadata": {"annotations": {api::NETWORK_STATUS: status.to_string()}},
                   "status": {"podIP": eth0.to_string(), "podIPs": [{"ip": eth0.to_string()}]}}),
        );
        let mut servers = vec![
            probe::Server::start(&netns, eth0, &[80, 81], &[80]),
            probe::Server::start(&netns, net2, &[80, 81], &[80]),
        ];
        if let Some(a) = net1 {
            servers.push(probe::Server::start(&netns, a, &[80, 81], &[80]));
        }
        self.pods.insert(
            format!("{ns}/{name}"),
            TestPod {
                node,
                netns,
                uid,
                eth0,
                net2,
                net1,
                _servers: servers,
            },
        );
    }

    /// DEL through the meta plugin and out of the API.
    fn del_pod(&mut self, key: &str) -> TestPod {
        let p = self.pods.remove(key).unwrap();
        let (ns, name) = key.split_once('/').unwrap();
        // The macvlan address does not matter for DEL.
        self.cni(
            "del",
            p.node,
            [ns, name, &p.uid],
            &p.netns,
            "192.168.60.1/24",
        )
        .expect_success();
        self.api.delete("pods", ns, name);
        p
    }

    fn set_policies(&self, nps: &[Value], mnps: &[Value]) {
        self.api.delete_all(NP);
        self.api.delete_all(MNP);
        for p in nps {
            self.api.create(NP, p.clone());
        }
        for p in mnps {
            self.api.create(MNP, p.clone());
        }
    }

    /// The engine's rules for every pod interface, from the API's objects.
    fn expected(&self) -> BTreeMap<(String, String), InterfaceRules> {
        let pods: Vec<PodInfo> = self
            .api
            .list("pods")
            .into_iter()
            .map(|p| PodInfo::new(&serde_json::from_value(p).unwrap()))
            .collect();
        let namespaces: Vec<NamespaceInfo> = self
            .api
            .list("namespaces")
            .into_iter()
            .map(|n| NamespaceInfo::new(&serde_json::from_value(n).unwrap()))
            .collect();
        let mut policies: Vec<Policy> = Vec::new();
        for (res, kind) in [(NP, Kind::NetworkPolicy), (MNP, Kind::MultiNetworkPolicy)] {
            for o in self.api.list(res) {
                policies.push(Policy::new(kind, &serde_json::from_value(o).unwrap()).0);
            }
        }
        let mut out = BTreeMap::new();
        for n in &self.net.cluster.nodes {
            for r in compute(&n.name, &pods, &namespaces, &policies).interfaces {
                out.insert(
                    (
                        format!("{}/{}", r.pod.namespace, r.pod.name),
                        r.ifname.clone(),
                    ),
                    r,
                );
            }
        }
        out
    }

    /// Every probe of every pair on both networks: (description, evaluator,
    /// packets).
    fn matrix(&self) -> Vec<(String, bool, bool)> {
        let rules = self.expected();
        let mut jobs = Vec::new();
        let mut nets: Vec<(&str, AddrOf)> =
            vec![("eth0", |p| Some(p.eth0)), ("net2", |p| Some(p.net2))];
        if self.routed {
            nets.push(("net1", |p| p.net1));
        }
        for (ifname, addr) in nets {
            for (from, fp) in &self.pods {
                for (to, tp) in self.pods.iter().filter(|(t, _)| *t != from) {
                    let (src, dst) = (addr(fp).unwrap(), addr(tp).unwrap());
                    let out = rules.get(&(from.clone(), ifname.to_string()));
                    let inn = rules.get(&(to.clone(), ifname.to_string()));
                    for (proto, port) in [(6u8, 80u16), (6, 81), (17, 80)] {
                        let ok = |r: Option<&InterfaceRules>, d| {
                            r.is_none_or(|r| r.allows(&[], d, src, dst, proto, port))
                        };
                        let want = ok(out, Direction::Egress) && ok(inn, Direction::Ingress);
                        let what = format!(
                            "{ifname} {from} -> {to} {}/{port}",
                            if proto == 6 { "tcp" } else { "udp" }
                        );
                        jobs.push((what, want, &fp.netns, dst, proto, port));
                    }
                }
            }
        }
        let mut results = Vec::new();
        // Many probes at once: a blocked one waits out its timeout.
        for chunk in jobs.chunks(72) {
            let got: Vec<bool> = std::thread::scope(|s| {
                let hs: Vec<_> = chunk
                    .iter()
                    .map(|(_, _, ns, dst, proto, port)| {
                        s.spawn(move || match proto {
                            6 => probe::tcp(ns, None, *dst, *port),
                            _ => probe::udp(ns, None, *dst, *port),
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            for ((what, want, ..), got) in chunk.iter().zip(got) {
                results.push((what.clone(), *want, got));
            }
        }
        results
    }

    /// Probes until the packets agree with the evaluator (plexusd
    /// converging), panicking with the differences after [`CONVERGE`].
    /// Returns the matrix.
    fn converge(&self, case: &str) -> Vec<(String, bool, bool)> {
        let deadline = Instant::now() + CONVERGE;
        loop {
            let m = self.matrix();
            let wrong: Vec<&(String, bool, bool)> = m.iter().filter(|(_, w, g)| w != g).collect();
            if wrong.is_empty() {
                return m;
            }
            if Instant::now() > deadline {
                let lines: Vec<String> = wrong
                    .iter()
                    .map(|(w, want, got)| format!("{w}: evaluator {want}, packets {got}"))
                    .collect();
                let mut why = String::new();
                for (i, a) in self.net.agents.iter().enumerate() {
                    let log = a.log_text();
                    let tail: Vec<&str> = log.lines().rev().take(25).collect();
                    why.push_str(&format!(
                        "\n--- node{i} policy show: {}\n--- node{i} log (last lines, newest first):\n{}",
                        self.show(i),
                        tail.join("\n")
                    ));
                }
                if std::env::var_os("POLICY_DEBUG").is_some() {
                    for (k, p) in &self.pods {
                        let out = p
                            .netns
                            .cmd("nft")
                            .args(["list", "ruleset"])
                            .output()
                            .unwrap();
                        why.push_str(&format!(
                            "\n--- {k} ({} {}):\n{}",
                            p.eth0,
                            p.net2,
                            String::from_utf8_lossy(&out.stdout)
                        ));
                    }
                    for n in &self.net.cluster.nodes {
                        let out = n.ns.cmd("nft").args(["list", "ruleset"]).output().unwrap();
                        why.push_str(&format!(
                            "\n--- {}:\n{}",
                            n.name,
                            String::from_utf8_lossy(&out.stdout)
                        ));
                    }
                }
                panic!(
                    "{case}: {} of {} probes differ:\n{}{why}",
                    wrong.len(),
                    m.len(),
                    lines.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn show(&self, node: usize) -> Value {
        let out = plexus_tests::cluster::routed::plexusctl(
            self.net.node(node),
            &["policy", "show", "--json", "--run-dir"],
        );
        serde_json::from_str(&out).expect("policy show JSON")
    }

    fn policy_tables(&self, key: &str) -> Vec<String> {
        policy_tables(&self.pods[key].netns)
    }
}

fn policy_tables(ns: &Netns) -> Vec<String> {
    ns.run(|| {
        plexus_netlink::nft::list_tables(
            &plexus_netlink::nft::Socket::open().unwrap(),
            plexus_netlink::nft::Family::Inet,
        )
        .unwrap()
    })
    .into_iter()
    .filter(|t| t.starts_with("plexus_policy_"))
    .collect()
}

fn np(ns: &str, name: &str, spec: Value) -> Value {
    json!({"metadata": {"namespace": ns, "name": name}, "spec": spec})
}

fn mnp(ns: &str, name: &str, spec: Value) -> Value {
    mnp_for(ns, name, MACVLAN, spec)
}

fn mnp_for(ns: &str, name: &str, network: &str, spec: Value) -> Value {
    json!({"metadata": {"namespace": ns, "name": name,
                        "annotations": {api::POLICY_FOR: network}},
           "spec": spec})
}

fn blocked(m: &[(String, bool, bool)], net: &str) -> usize {
    m.iter()
        .filter(|(w, _, got)| w.starts_with(net) && !got)
        .count()
}

/// The e2e suite's cases this model runs, each as a policy spec.
fn e2e_cases() -> Vec<(&'static str, Value)> {
    vec![
        (
            "allow ingress from the same namespace",
            json!({
            "podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}),
        ),
        (
            "allow ingress to a from b in any namespace",
            json!({
            "podSelector": {"matchLabels": {"pod": "a"}},
            "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
        ),
        (
            "allow TCP 80 from namespace y only",
            json!({
            "podSelector": {},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}],
                         "ports": [{"protocol": "TCP", "port": 80}]}]}),
        ),
        (
            "named port serve-81-tcp from anywhere",
            json!({
            "podSelector": {}, "ingress": [{"ports": [{"port": "serve-81-tcp"}]}]}),
        ),
        (
            "port range 80-81 TCP (endPort)",
            json!({
            "podSelector": {}, "ingress": [{"ports": [{"protocol": "TCP", "port": 80, "endPort": 81}]}]}),
        ),
        (
            "matchExpressions: namespaces y,z, pods not c",
            json!({
            "podSelector": {},
            "ingress": [{"from": [{
                "namespaceSelector": {"matchExpressions": [{"key": "ns", "operator": "In", "values": ["y", "z"]}]},
                "podSelector": {"matchExpressions": [{"key": "pod", "operator": "NotIn", "values": ["c"]}]}}]}]}),
        ),
        (
            "deny all egress",
            json!({"podSelector": {}, "policyTypes": ["Egress"]}),
        ),
        (
            "egress to namespace z on UDP only",
            json!({
            "podSelector": {}, "policyTypes": ["Egress"],
            "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "z"}}}],
                        "ports": [{"protocol": "UDP", "port": 80}]}]}),
        ),
        (
            "ingress and egress: a talks to b only",
            json!({
            "podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"pod": "b"}}}]}],
            "egress": [{"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
        ),
        (
            "allow all ingress ([{}]) beside deny",
            json!({"podSelector": {}, "ingress": [{}]}),
        ),
    ]
}

#[test]
fn e2e_truth_table() {
    require_overlay!();
    let mut env = Env::start(true);
    for ns in ["x", "y", "z"] {
        env.namespace(ns, json!({"ns": ns}));
    }
    let mut i = 0;
    for ns in ["x", "y", "z"] {
        for pod in ["a", "b", "c"] {
            env.add_pod(i % 2, ns, pod, json!({"pod": pod}));
            i += 1;
        }
    }
    // No policy: everything reaches everything (9×8 pairs × 3 probes × 2
    // networks).
    let m = env.converge("no policy");
    // (9×8 pairs × 3 probes × 3 networks)
    assert_eq!(m.len(), 648);
    assert_eq!(m.iter().filter(|(_, _, got)| !got).count(), 0);

    // The truth table by hand for the first cases: deny all ingress into
    // x blocks the 8 sources of each of x's 3 pods, every probe, on eth0
    // only (a NetworkPolicy).
    env.set_policies(
        &[np(
            "x",
            "deny",
            json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
        )],
        &[],
    );
    let m = env.converge("NetworkPolicy: deny all ingress in x");
    assert_eq!(blocked(&m, "eth0"), 3 * 8 * 3);
    assert_eq!(blocked(&m, "net2"), 0);
    for (w, _, got) in &m {
        assert_eq!(!got, w.starts_with("eth0") && w.contains("-> x/"), "{w}");
    }
    // The same as a MultiNetworkPolicy: net2 only.
    env.set_policies(
        &[],
        &[mnp(
            "x",
            "deny",
            json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
        )],
    );
    let m = env.converge("MultiNetworkPolicy: deny all ingress in x");
    assert_eq!(blocked(&m, "eth0"), 0);
    for (w, _, got) in &m {
        assert_eq!(!got, w.starts_with("net2") && w.contains("-> x/"), "{w}");
    }
    let st = env.show(0);
    let net2 = st["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["namespace"] == "x" && i["interface"] == "net2")
        .expect("an x pod's net2 on node0");
    assert_eq!(net2["ingress_isolated"], true, "{st}");
    assert_eq!(
        net2["policies"],
        json!(["MultiNetworkPolicy x/deny"]),
        "{st}"
    );
    assert!(
        net2["ingress_dropped"]["packets"].as_u64().unwrap() > 0,
        "drops counted: {st}"
    );

    // The e2e suite's cases, each alone, on both networks, against the
    // evaluator. (spec, as NetworkPolicy on eth0 and as MultiNetworkPolicy
    // on net2 at once, with different namespaces so the two differ.)
    let cases = e2e_cases();
    // ipBlock with except: the whole overlay but one pod's address, and
    // the macvlan segment but one pod's.
    let yb = &env.pods["y/b"];
    let ip_block = |cidr: &str, except: IpAddr| {
        json!({"podSelector": {}, "policyTypes": ["Ingress"],
               "ingress": [{"from": [{"ipBlock": {"cidr": cidr, "except": [format!("{except}/32")]}}]}]})
    };
    let blocks = (
        ip_block("10.244.0.0/16", yb.eth0),
        ip_block("192.168.60.0/24", yb.net2),
    );
    for (name, spec) in &cases {
        env.set_policies(
            &[
                np("x", "case", spec.clone()),
                np(
                    "x",
                    "deny",
                    json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
                ),
            ],
            &[
                mnp("y", "case", spec.clone()),
                mnp_for("z", "case", ROUTED, spec.clone()),
            ],
        );
        let m = env.converge(name);
        assert!(
            blocked(&m, "eth0") + blocked(&m, "net2") + blocked(&m, "net1") > 0
                || name.contains("[{}]"),
            "{name}: nothing blocked"
        );
    }
    env.set_policies(
        &[np("x", "block", blocks.0.clone())],
        &[mnp("z", "block", blocks.1.clone())],
    );
    let m = env.converge("ipBlock with except");
    for (w, _, got) in &m {
        let want_blocked = (w.starts_with("eth0 y/b -> x/")) || (w.starts_with("net2 y/b -> z/"));
        assert_eq!(!got, want_blocked, "{w}");
    }
    // Two policies selecting one pod: the union.
    env.set_policies(
        &[
            np(
                "x",
                "from-y",
                json!({"podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
            ),
            np(
                "x",
                "from-z-81",
                json!({"podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "z"}}}],
                             "ports": [{"port": 81}]}]}),
            ),
        ],
        &[],
    );
    env.converge("union of two policies");
    env.set_policies(&[], &[]);
    let m = env.converge("all policies deleted");
    assert_eq!(m.iter().filter(|(_, _, got)| !got).count(), 0);
    for key in env.pods.keys() {
        assert!(env.policy_tables(key).is_empty(), "{key}: tables left");
    }
}

/// NetworkPolicy on the routed network as the cluster network (eth0 from
/// plexus-bgp-routes, /32 routes behind 169.254.1.1, BGP between the
/// nodes): the same e2e cases, each matrix against the evaluator; the
/// MultiNetworkPolicy twin of each case on net2 (macvlan) at once.
#[test]
fn e2e_truth_table_on_the_routed_cluster_network() {
    require_overlay!();
    let mut env = Env::start_with(
        false,
        Options {
            routed_cluster_network: true,
            ..Options::default()
        },
    );
    for ns in ["x", "y", "z"] {
        env.namespace(ns, json!({"ns": ns}));
    }
    let mut i = 0;
    for ns in ["x", "y", "z"] {
        for pod in ["a", "b", "c"] {
            env.add_pod(i % 2, ns, pod, json!({"pod": pod}));
            i += 1;
        }
    }
    // eth0 is the routed network's: an address of its pool.
    let pool: ipnet::IpNet = plexus_tests::cluster::routed::POOL.parse().unwrap();
    assert!(env.pods.values().all(|p| pool.contains(&p.eth0)));
    let m = env.converge("no policy");
    // (9×8 pairs × 3 probes × 2 networks)
    assert_eq!(m.len(), 432);
    assert_eq!(m.iter().filter(|(_, _, got)| !got).count(), 0);
    env.set_policies(
        &[np(
            "x",
            "deny",
            json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
        )],
        &[],
    );
    let m = env.converge("NetworkPolicy: deny all ingress in x");
    for (w, _, got) in &m {
        assert_eq!(!got, w.starts_with("eth0") && w.contains("-> x/"), "{w}");
    }
    for (name, spec) in &e2e_cases() {
        env.set_policies(
            &[
                np("x", "case", spec.clone()),
                np(
                    "x",
                    "deny",
                    json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
                ),
            ],
            &[mnp("y", "case", spec.clone())],
        );
        let m = env.converge(name);
        assert!(
            blocked(&m, "eth0") + blocked(&m, "net2") > 0 || name.contains("[{}]"),
            "{name}: nothing blocked"
        );
    }
    // ipBlock with except over the pool: all of it but one pod's address.
    let yb = env.pods["y/b"].eth0;
    env.set_policies(
        &[np(
            "x",
            "block",
            json!({"podSelector": {}, "policyTypes": ["Ingress"],
                   "ingress": [{"from": [{"ipBlock": {"cidr": pool.to_string(),
                                                      "except": [format!("{yb}/32")]}}]}]}),
        )],
        &[],
    );
    let m = env.converge("ipBlock with except");
    for (w, _, got) in &m {
        assert_eq!(!got, w.starts_with("eth0 y/b -> x/"), "{w}");
    }
    env.set_policies(&[], &[]);
    let m = env.converge("all policies deleted");
    assert_eq!(m.iter().filter(|(_, _, got)| !got).count(), 0);
    for key in env.pods.keys() {
        assert!(env.policy_tables(key).is_empty(), "{key}: tables left");
    }
}

#[test]
fn updates_add_del_and_restart() {
    require_overlay!();
    let mut env = Env::start(false);
    env.namespace("x", json!({"ns": "x"}));
    env.namespace("y", json!({"ns": "y"}));
    env.add_pod(0, "x", "a", json!({"pod": "a"}));
    env.add_pod(1, "x", "b", json!({"pod": "b"}));
    env.add_pod(0, "y", "a", json!({"pod": "a"}));
    env.converge("no policy");

    // x takes ingress only from pods labelled role=client, or from
    // namespaces labelled team=blue.
    env.set_policies(
        &[np("x", "clients", json!({"podSelector": {},
            "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"role": "client"}}},
                                  {"namespaceSelector": {"matchLabels": {"team": "blue"}}}]}]}))],
        &[mnp("x", "deny", json!({"podSelector": {}, "policyTypes": ["Ingress"]}))],
    );
    let m = env.converge("clients only");
    assert!(m
        .iter()
        .any(|(w, _, got)| w.starts_with("eth0 y/a -> x/a") && !got));
    // A pod label change lets y/a in; taking it away shuts it out again.
    env.api.patch(
        "pods",
        "y",
        "a",
        json!({"metadata": {"labels": {"role": "client"}}}),
    );
    let m = env.converge("pod label added");
    assert!(m
        .iter()
        .any(|(w, _, got)| w.starts_with("eth0 y/a -> x/a") && *got));
    env.api.patch(
        "pods",
        "y",
        "a",
        json!({"metadata": {"labels": {"role": null}}}),
    );
    env.converge("pod label removed");
    // A namespace label change.
    env.api.patch(
        "namespaces",
        "",
        "y",
        json!({"metadata": {"labels": {"team": "blue"}}}),
    );
    let m = env.converge("namespace label added");
    assert!(m
        .iter()
        .any(|(w, _, got)| w.starts_with("eth0 y/a -> x/b") && *got));
    env.api.patch(
        "namespaces",
        "",
        "y",
        json!({"metadata": {"labels": {"team": null}}}),
    );
    env.converge("namespace label removed");

    // y/a deleted and re-created with the same name on the other node:
    // a new address (another node's subnet), allowed once labelled.
    let old = env.del_pod("y/a");
    env.add_pod(1, "y", "a", json!({"pod": "a", "role": "client"}));
    assert_ne!(
        env.pods["y/a"].eth0, old.eth0,
        "re-created with a new address"
    );
    drop(old);
    let m = env.converge("pod re-created");
    assert!(m
        .iter()
        .any(|(w, _, got)| w.starts_with("eth0 y/a -> x/a") && *got));

    // An ADD into an isolated namespace is never open: probed the moment
    // its ADD returns, x/c refuses y/a on both networks.
    let (netns, uid, net2) = env.create_pod(1, "x", "c", json!({"pod": "c"}));
    env.cni("add", 1, ["x", "c", &uid], &netns, &net2)
        .expect_success();
    let c_eth0: IpAddr = netns.addrs("eth0")[0]
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let c_net2: IpAddr = netns.addrs("net2")[0]
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let _srv = [
        probe::Server::start(&netns, c_eth0, &[80, 81], &[80]),
        probe::Server::start(&netns, c_net2, &[80, 81], &[80]),
    ];
    let xa = &env.pods["x/a"].netns;
    assert!(
        !probe::tcp(xa, None, c_eth0, 80),
        "x/c open on eth0 right after its ADD (x/a has no role)"
    );
    assert!(
        !probe::tcp(&env.pods["y/a"].netns, None, c_net2, 80),
        "x/c open on net2 right after its ADD"
    );
    assert_eq!(
        policy_tables(&netns).len(),
        2,
        "both interfaces' tables in place at ADD"
    );
    drop(_srv);
    // DEL leaves no policy state: no tables, no record, nothing shown.
    env.cni("del", 1, ["x", "c", &uid], &netns, &net2)
        .expect_success();
    env.api.delete("pods", "x", "c");
    assert!(policy_tables(&netns).is_empty(), "DEL left tables");
    let records = env.net.node(1).run_dir.join("policy-pods");
    let left: Vec<_> = std::fs::read_dir(&records)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(
        left.len(),
        2,
        "one record per attached pod of node1 (x/b, y/a): {left:?}"
    );
    let st = env.show(1);
    assert!(!st.to_string().contains("\"pod\":\"c\""), "{st}");
    assert!(meta_cache(env.net.node(1)).exists());

    // A table deleted by hand is put back (the data plane's resync).
    let xa_ns = env.pods["x/a"].netns.name.clone();
    plexus_tests::run_ok(std::process::Command::new("ip").args([
        "netns",
        "exec",
        &xa_ns,
        "nft",
        "delete",
        "table",
        "inet",
        "plexus_policy_eth0",
    ]));
    plexus_tests::cluster::wait_for("x/a's eth0 table put back", || {
        env.policy_tables("x/a")
            .contains(&"plexus_policy_eth0".to_string())
    });

    // The policy edited (no exceptions: deny all), then deleted.
    env.set_policies(
        &[np(
            "x",
            "clients",
            json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
        )],
        &[],
    );
    let m = env.converge("policy edited to deny all");
    assert!(m
        .iter()
        .any(|(w, _, got)| w.starts_with("eth0 y/a -> x/a") && !got));

    // plexusd stopped: enforcement stays, an ADD fails with code 11.
    env.net.agents[0].stop();
    assert!(
        !probe::tcp(&env.pods["y/a"].netns, None, env.pods["x/a"].eth0, 80),
        "enforcement lost with plexusd stopped"
    );
    let (netns2, uid2, net2b) = env.create_pod(0, "x", "d", json!({"pod": "d"}));
    let err = env.cni("add", 0, ["x", "d", &uid2], &netns2, &net2b).err();
    assert_eq!(err["code"], 11, "{err}");
    assert!(err.to_string().contains("network policy"), "{err}");
    env.cni("del", 0, ["x", "d", &uid2], &netns2, &net2b)
        .expect_success();
    env.api.delete("pods", "x", "d");
    assert!(policy_tables(&netns2).is_empty());
    // The policy goes while plexusd is away: on its return it resyncs.
    env.set_policies(&[], &[]);
    env.net.agents[0].start_again();
    let m = env.converge("plexusd back, policies gone");
    assert_eq!(blocked(&m, "eth0") + blocked(&m, "net2"), 0);
    for key in env.pods.keys() {
        assert!(env.policy_tables(key).is_empty(), "{key}: tables left");
    }
}
