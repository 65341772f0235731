//! Several networks per pod across the simulated cluster, wired by the
//! `plexus` meta plugin:
//!
//! ```text
//!   pod netns ── eth0: overlay (plexus-vxlan, the meta plugin's clusterNetwork "cbr0")
//!             ── net1: routed  (plexus-bgp-routes, NAD "routed", block IPAM on plexusd's socket)
//!             ── net2: macvlan (reference plugin, NAD "macvlan", static IPAM, requested IP)
//! ```
//!
//! Every node's plexusd serves both the overlay (flannel's config at
//! `<prefix>/config`) and the routed network (a pool and BGP mesh through
//! plexus-ipam). macvlan's master is `uplink0` in each node, a veth into a
//! second bridge (`lan1`) in the lan netns, so macvlan pods on different
//! nodes share one L2 segment.
//!
//! Use: [`MultiNet::start`] (agents ready, mesh Established, meta conflist
//! and NADs written on every node), then [`MultiNet::add`] /
//! [`MultiNet::del`] with an annotation from [`networks`] (or [`Ask`] for a
//! requested net1 address and MAC), [`reaches_all`] inside [`wait_for`]
//! for reachability, [`MultiNet::network_status`], and
//! [`MultiNet::leftovers`] / [`MultiNet::assert_clean`] to check that DEL
//! left nothing. [`MultiNet::run`] gives the raw outcome of any CNI
//! operation (a failing ADD, CHECK). The routed network's helpers (store
//! access, BGP status, kernel routes) are in [`super::routed`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{json, Value};

use super::routed::{add_pool, allocations_of, established, plexusctl};
use super::{vxlan_config, wait_for, Cluster, Daemon, Node, NETWORK};
use crate::{CniSandbox, CtlOutput, Netns};

/// The overlay's network (flannel's `Network`); subnets are /24s.
pub const OVERLAY: &str = "10.244.0.0/16";
/// The meta plugin's network name (its conflist in each node's conf dir).
pub const META: &str = "plexus";
/// NAD names (namespace "default").
pub const ROUTED_NAD: &str = "routed";
pub const MACVLAN_NAD: &str = "macvlan";
/// The macvlan segment (static IPAM: pods ask for an address in it).
pub const MACVLAN_NET: &str = "192.168.60";
/// The pods' namespace (CNI_ARGS K8S_POD_NAMESPACE).
pub const POD_NAMESPACE: &str = "default";

/// How the meta plugin is configured.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// The meta plugin's `parallelSecondary`.
    pub parallel_secondary: bool,
    /// The cluster network (eth0, `cbr0`) is the routed network
    /// (plexus-bgp-routes) instead of the overlay.
    pub routed_cluster_network: bool,
}

/// A cluster whose nodes run plexusd for both networks. Field order is
/// drop order: the agents stop before the cluster goes.
#[derive(Debug)]
pub struct MultiNet {
    pub agents: Vec<Daemon>,
    pub cluster: Cluster,
}

/// What ADD through the meta plugin gave a pod.
#[derive(Debug, Clone)]
pub struct Attached {
    /// The meta plugin's result (the cluster network's).
    pub result: Value,
    /// Global addresses ("a.b.c.d/len") by interface, read from the pod.
    pub addrs: BTreeMap<String, Vec<String>>,
}

impl Attached {
    /// The first IPv4 address on `ifname`, without its prefix length.
    pub fn ip(&self, ifname: &str) -> String {
        self.addrs
            .get(ifname)
            .and_then(|a| a.iter().find(|a| !a.contains(':')))
            .unwrap_or_else(|| panic!("no IPv4 address on {ifname}: {:?}", self.addrs))
            .split('/')
            .next()
            .unwrap()
            .to_string()
    }
}

/// The `k8s.v1.cni.cncf.io/networks` annotation: net1 on the routed NAD
/// when `routed`, net2 on macvlan with `macvlan_ip` (a.b.c.d/24) when given.
pub fn networks(routed: bool, macvlan_ip: Option<&str>) -> String {
    Ask {
        routed,
        macvlan_ip: macvlan_ip.map(String::from),
        ..Ask::default()
    }
    .annotation()
}

/// What a pod asks for beyond eth0, as its networks annotation.
#[derive(Debug, Clone, Default)]
pub struct Ask {
    /// net1 on the routed network.
    pub routed: bool,
    /// net1's address (CNI `ips`, a.b.c.d/32) and MAC (CNI `mac`).
    pub routed_ip: Option<String>,
    pub routed_mac: Option<String>,
    /// net2 on macvlan with this address (a.b.c.d/24).
    pub macvlan_ip: Option<String>,
}

impl Ask {
    pub fn annotation(&self) -> String {
        let mut v = Vec::new();
        if self.routed {
            let mut net1 = json!({"name": ROUTED_NAD, "interface": "net1"});
            if let Some(ip) = &self.routed_ip {
                net1["ips"] = json!([ip]);
            }
            if let Some(mac) = &self.routed_mac {
                net1["mac"] = json!(mac);
            }
            v.push(net1);
        }
        if let Some(ip) = &self.macvlan_ip {
            v.push(json!({"name": MACVLAN_NAD, "interface": "net2", "ips": [ip]}));
        }
        Value::Array(v).to_string()
    }
}

/// The macvlan address the harness gives pod `pod` of node `node`.
pub fn macvlan_ip(node: usize, pod: usize) -> String {
    format!("{MACVLAN_NET}.{}/24", 10 + node * 10 + pod)
}

impl MultiNet {
    /// `nodes` nodes with both networks served and the meta plugin
    /// installed; returns once every agent is ready and every node's BGP
    /// mesh is Established.
    pub fn start(nodes: usize, opts: Options) -> MultiNet {
        MultiNet::start_with(nodes, opts, |_| ((), Vec::new())).0
    }

    /// [`MultiNet::start`], with `before(cluster)` run once the cluster's
    /// namespaces exist and before the agents start: it returns what the
    /// caller keeps (an API stand-in) and extra agent arguments.
    pub fn start_with<T>(
        nodes: usize,
        opts: Options,
        before: impl FnOnce(&Cluster) -> (T, Vec<String>),
    ) -> (MultiNet, T) {
        let cluster = Cluster::new(nodes);
        cluster.set_config(&vxlan_config(OVERLAY));
        add_pool(&cluster, 26);
        cluster.add_macvlan_segment();
        for n in &cluster.nodes {
            write_meta(n, opts);
        }
        let (kept, extra) = before(&cluster);
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let agents = cluster.start_agents(&extra);
        let net = MultiNet { agents, cluster };
        for n in &net.cluster.nodes {
            assert!(
                n.subnet_env("FLANNEL_SUBNET").is_some(),
                "{}: ready without an overlay lease",
                n.name
            );
            let st: Value =
                serde_json::from_str(&plexusctl(n, &["node", "--json", "status", "--run-dir"]))
                    .expect("node status JSON");
            assert_eq!(st["backend"], "routed (BGP) + vxlan", "{}: {st}", n.name);
            let peers = net.cluster.nodes.len() - 1;
            wait_for(&format!("{}: BGP mesh Established", n.name), || {
                established(n, peers)
            });
        }
        (net, kept)
    }

    pub fn node(&self, i: usize) -> &Node {
        &self.cluster.nodes[i]
    }

    /// `plexusctl cni OP plexus POD` in node `node` with `annotation` as
    /// the pod's networks (CRI pod-annotations capability) and the pod
    /// named after its netns; the raw outcome.
    pub fn run(&self, op: &str, node: usize, pod: &Netns, annotation: &str) -> CtlOutput {
        let caps = json!({"io.kubernetes.cri.pod-annotations":
                          {"k8s.v1.cni.cncf.io/networks": annotation}})
        .to_string();
        let args = format!(
            "K8S_POD_NAMESPACE={POD_NAMESPACE};K8S_POD_NAME={}",
            pod.name
        );
        let n = self.node(node);
        n.cni.ctl(
            &n.ns,
            op,
            META,
            Some(&pod.path()),
            &[("CAP_ARGS", &caps), ("CNI_ARGS", &args)],
        )
    }

    /// ADD that must succeed; the result and the pod's addresses.
    pub fn add(&self, node: usize, pod: &Netns, annotation: &str) -> Attached {
        let result = self
            .run("add", node, pod, annotation)
            .expect_success()
            .json();
        let addrs = pod
            .links()
            .into_iter()
            .filter(|l| l != "lo")
            .map(|l| {
                let a = pod.addrs(&l);
                (l, a)
            })
            .collect();
        Attached { result, addrs }
    }

    /// DEL that must succeed.
    pub fn del(&self, node: usize, pod: &Netns, annotation: &str) {
        self.run("del", node, pod, annotation).expect_success();
    }

    /// The meta plugin's network status for `pod` on `node` (the
    /// `networkStatus` list of its status file), if it has one.
    pub fn network_status(&self, node: usize, pod: &Netns) -> Option<Value> {
        let dir = meta_cache(self.node(node)).join("status");
        std::fs::read_dir(dir)
            .ok()?
            .filter_map(Result::ok)
            .filter_map(|e| serde_json::from_slice::<Value>(&std::fs::read(e.path()).ok()?).ok())
            .find(|st| st["podName"] == pod.name.as_str())
            .map(|st| st["networkStatus"].clone())
    }

    /// What pods left on node `node`: node-side veths, macvlans, IPAM
    /// lease files, routed allocations in the store, routes to single
    /// pod addresses, and the meta plugin's cache. Empty when clean.
    pub fn leftovers(&self, node: usize) -> Vec<String> {
        let n = self.node(node);
        let mut left = Vec::new();
        for kind in ["veth", "macvlan"] {
            let links = n.ip_json(&["-d", "link", "show", "type", kind]);
            for l in links.as_array().unwrap() {
                let name = l["ifname"].as_str().unwrap_or("");
                if !matches!(name, "eth0" | "uplink0") {
                    left.push(format!("{kind} {name}"));
                }
            }
        }
        left.extend(n.cni.leases().into_iter().map(|l| format!("lease {l}")));
        let held = allocations_of(&self.cluster, &n.name);
        if held > 0 {
            left.push(format!("{held} routed allocations in the store"));
        }
        let routes = n.ip_json(&["-4", "route", "show"]);
        for r in routes.as_array().unwrap() {
            let dst = r["dst"].as_str().unwrap_or("");
            // A /32 shows without its length.
            if dst.parse::<std::net::Ipv4Addr>().is_ok() {
                left.push(format!("route {dst} dev {}", r["dev"]));
            }
        }
        left.extend(
            CniSandbox::files_under(&meta_cache(n))
                .into_iter()
                .map(|f| format!("meta cache {f}")),
        );
        left
    }

    /// Every node left nothing (panics listing what is left).
    pub fn assert_clean(&self) {
        for i in 0..self.cluster.nodes.len() {
            let left = self.leftovers(i);
            assert!(left.is_empty(), "{} left: {left:?}", self.node(i).name);
        }
    }
}

/// The meta plugin's cache (plans, status) in a node.
pub fn meta_cache(n: &Node) -> PathBuf {
    n.cni.dir.path().join("plexus-cache")
}

/// The meta plugin's attachmentsDir (the NAD manifests) in a node.
pub fn attachments(n: &Node) -> PathBuf {
    n.cni.dir.path().join("attachments")
}

/// Write a NAD manifest into the node's attachmentsDir.
pub fn write_nad(n: &Node, name: &str, config: &Value) {
    let dir = attachments(n);
    std::fs::create_dir_all(&dir).unwrap();
    let nad = json!({
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": name, "namespace": POD_NAMESPACE},
        "spec": {"config": config.to_string()}
    });
    std::fs::write(dir.join(format!("{name}.json")), nad.to_string()).unwrap();
}

/// conf/plexus.conflist with the node's overlay conflist (`cbr0`, see
/// [`Node::vxlan_conflist`]) or a plexus-bgp-routes one as the cluster
/// network, and the routed and macvlan NADs.
fn write_meta(n: &Node, opts: Options) {
    // kube-flannel's conflist says 0.3.1, which has no CHECK: the meta
    // plugin's CHECK (1.0.0) would refuse to run it on eth0.
    let cbr0 = if opts.routed_cluster_network {
        json!({"cniVersion": "1.0.0", "name": NETWORK,
               "plugins": [{"type": "plexus-bgp-routes", "runDir": n.run_dir}]})
    } else {
        let mut c = n.vxlan_conflist();
        c["cniVersion"] = json!("1.0.0");
        c
    };
    n.cni.write_conf(&format!("{NETWORK}.conflist"), &cbr0);
    let mut conf: Value = serde_json::from_slice(
        &std::fs::read(crate::example::conf_src().join("plexus.conflist")).unwrap(),
    )
    .unwrap();
    let p = &mut conf["plugins"][0];
    p["clusterNetwork"] = json!(NETWORK);
    p["confDir"] = json!(n.cni.conf_dir);
    p["attachmentsDir"] = json!(attachments(n));
    p["cacheDir"] = json!(meta_cache(n));
    p["logFile"] = json!(n.cni.dir.path().join("plexus.log"));
    p["logLevel"] = json!("debug");
    p["parallelSecondary"] = json!(opts.parallel_secondary);
    // plexusd's socket and policy marker (network policy's attach).
    p["runDir"] = json!(n.run_dir);
    n.cni.write_conf("00-plexus.conflist", &conf);
    write_nad(
        n,
        ROUTED_NAD,
        &json!({"cniVersion": "1.0.0", "name": ROUTED_NAD, "type": "plexus-bgp-routes",
                "runDir": n.run_dir, "capabilities": {"ips": true, "mac": true}}),
    );
    write_nad(
        n,
        MACVLAN_NAD,
        &json!({"cniVersion": "1.0.0", "name": MACVLAN_NAD, "type": "macvlan",
                "master": "uplink0", "mode": "bridge", "capabilities": {"ips": true},
                "ipam": {"type": "static"}}),
    );
}

/// Whether `pod` reaches every address in `targets` (one `fping` run, a
/// few tries per target). Aim only at addresses inside the test's
/// namespaces; wrap in [`wait_for`] while routes converge.
pub fn reaches_all(pod: &Netns, targets: &[String]) -> bool {
    if targets.is_empty() {
        return true;
    }
    // `ip netns exec` exits 1 when it cannot exec the program, which reads
    // as "unreachable": a missing fping would look like a network failure.
    assert!(
        std::path::Path::new("/usr/bin/fping").exists(),
        "fping is not installed (scripts/install-deps.sh installs it)"
    );
    let out = pod
        .cmd("fping")
        .args(["-q", "-r", "2", "-t", "500"])
        .args(targets)
        .output()
        .expect("spawn fping (scripts/install-deps.sh installs it)");
    // 1: some target unreachable; 2 and above: fping itself failed.
    assert!(
        out.status.code().is_some_and(|c| c <= 1),
        "fping could not run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.status.success()
}
