//! Cluster IPAM on the simulated cluster: pods' `net1` on one shared
//! macvlan segment, addresses from plexus-cluster-ipam served by each
//! node's plexusd (no overlay, no routed network: a node that only serves
//! cluster IPAM).
//!
//! ```text
//!   lan netns: bridge "lan0" ── etcd netns (etcd, or the API stand-in) and node netns (eth0)
//!              bridge "lan1" ── veth ── node netns "uplink0" ── macvlan net1 ── pod netns
//! ```
//!
//! The conflist (network [`NET`]) is the real reference macvlan plugin
//! from /usr/lib/cni with the `ipam` object the test gives (whereabouts'
//! keys, `type: plexus-cluster-ipam`), each node's `runDir` added. Pods are
//! netns attached by `plexusctl cni` inside the node, with CNI_ARGS naming
//! the pod (namespace, name, UID).

use serde_json::{json, Value};

use super::routed::plexusctl;
use super::{wait_for, Cluster, Daemon, Node, ETCD_IP};
use crate::apiserver::FakeApiServer;
use crate::cni::{CtlChild, CtlOutput};
use crate::{bin_dir, output_with_stdin, Netns};

/// The CNI network name of the conflist on every node.
pub const NET: &str = "macnet";
/// The pods' interface.
pub const IFNAME: &str = "net1";
/// The pods' namespace.
pub const POD_NAMESPACE: &str = "default";

/// Where the cluster keeps its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// The cluster's etcd.
    Etcd,
    /// The Kubernetes API stand-in (PlexusKey objects, Nodes, Pods).
    Kubernetes,
}

/// A cluster whose nodes serve cluster IPAM only. Field order is drop
/// order: the agents stop before the API stand-in and the cluster go.
#[derive(Debug)]
pub struct CipamNet {
    pub agents: Vec<Daemon>,
    pub api: Option<FakeApiServer>,
    pub cluster: Cluster,
    pub store: Store,
}

impl CipamNet {
    /// `nodes` nodes on one macvlan segment, the conflist with `ipam`
    /// written on each, an agent on each (with `extra` arguments) serving
    /// cluster IPAM.
    pub fn start(nodes: usize, store: Store, ipam: &Value, extra: &[&str]) -> CipamNet {
        let cluster = Cluster::new(nodes);
        cluster.add_macvlan_segment();
        for n in &cluster.nodes {
            n.cni.write_conf("10-macnet.conflist", &conflist(n, ipam));
        }
        let api = (store == Store::Kubernetes).then(|| {
            // On the underlay, where etcd would be: every node reaches it.
            let api = FakeApiServer::start_at(&cluster.etcd_ns, ETCD_IP);
            api.serve_resource(
                plexus_store::kubekv::GROUP,
                plexus_store::kubekv::VERSION,
                plexus_store::kubekv::PLURAL,
                "PlexusKey",
            );
            for n in &cluster.nodes {
                api.add_node(&n.name, &[], json!({}));
            }
            api
        });
        let mut net = CipamNet {
            agents: Vec::new(),
            api,
            cluster,
            store,
        };
        for i in 0..nodes {
            let args = net.agent_extra(extra);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let d = net.cluster.nodes[i].spawn_agent(&net.store_url(), &args);
            net.agents.push(d);
        }
        for i in 0..nodes {
            net.wait_served(i);
        }
        net
    }

    fn store_url(&self) -> String {
        match self.store {
            Store::Etcd => self.cluster.etcd.url(),
            Store::Kubernetes => "kubernetes".into(),
        }
    }

    fn agent_extra(&self, extra: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        if let Some(api) = &self.api {
            a.extend(["--kubeconfig".into(), api.kubeconfig.display().to_string()]);
        }
        a
    }

    pub fn node(&self, i: usize) -> &Node {
        &self.cluster.nodes[i]
    }

    /// Wait until node `i`'s agent answers cluster-IPAM requests.
    pub fn wait_served(&mut self, i: usize) {
        let n = &self.cluster.nodes[i];
        let agent = &mut self.agents[i];
        wait_for(&format!("{}: cluster IPAM served", n.name), || {
            if let Some(st) = agent.try_wait() {
                panic!("plexusd exited ({st}); log:\n{}", agent.log_text());
            }
            let out =
                n.ns.cmd(bin_dir().join("plexusctl"))
                    .args(["node", "--json", "status", "--run-dir"])
                    .arg(&n.run_dir)
                    .output()
                    .expect("spawn plexusctl");
            serde_json::from_slice::<Value>(&out.stdout)
                .is_ok_and(|st| st["cluster_ipam"] == true || st["clusterIpam"] == true)
        });
    }

    /// Kill node `i`'s agent with SIGKILL (nothing of its own cleaned up).
    pub fn kill_agent(&mut self, i: usize) {
        self.agents[i].kill();
    }

    /// Start node `i`'s agent again after [`CipamNet::kill_agent`].
    pub fn restart_agent(&mut self, i: usize) {
        self.agents[i].start_again();
        self.wait_served(i);
    }

    /// `plexusctl --store ... ARGS` in node `i`: stdout, asserting success.
    pub fn ctl(&self, i: usize, args: &[&str]) -> String {
        let n = self.node(i);
        let mut c = n.ns.cmd(bin_dir().join("plexusctl"));
        c.args(["--store", &self.store_url()]);
        if let Some(api) = &self.api {
            c.arg("--kubeconfig").arg(&api.kubeconfig);
        }
        let out = c.args(args).output().expect("spawn plexusctl");
        assert!(
            out.status.success(),
            "plexusctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every cluster-IPAM address the store holds, as `ipam show --json`
    /// lists them (address, node, containerID, podUid, ...), range by
    /// range (the tests use one range: each holder once).
    pub fn held(&self) -> Vec<Value> {
        let show: Value = serde_json::from_str(&self.ctl(0, &["ipam", "show", "--json"]))
            .expect("ipam show JSON");
        show["clusterRanges"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|r| r["addresses"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// The blocks `ipam show --json` lists (space, cidr, node, used...).
    pub fn blocks(&self) -> Vec<Value> {
        let show: Value =
            serde_json::from_str(&self.ctl(0, &["ipam", "show", "--blocks", "--json"]))
                .expect("ipam show JSON");
        show["clusterBlocks"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn env(pod: &str, uid: &str) -> [(&'static str, String); 2] {
        [
            (
                "CNI_ARGS",
                format!(
                    "IgnoreUnknown=1;K8S_POD_NAMESPACE={POD_NAMESPACE};K8S_POD_NAME={pod};K8S_POD_UID={uid}"
                ),
            ),
            ("CNI_IFNAME", IFNAME.to_string()),
        ]
    }

    /// `plexusctl cni OP macnet POD` on node `i` for pod `pod` (its name)
    /// with UID `uid`; the raw outcome.
    pub fn cni(&self, op: &str, i: usize, ns: &Netns, pod: &str, uid: &str) -> CtlOutput {
        let env = Self::env(pod, uid);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let n = self.node(i);
        n.cni.ctl(&n.ns, op, NET, Some(&ns.path()), &env)
    }

    /// [`CipamNet::cni`] in the background.
    pub fn spawn_cni(&self, op: &str, i: usize, ns: &Netns, pod: &str, uid: &str) -> CtlChild {
        let env = Self::env(pod, uid);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let n = self.node(i);
        n.cni.spawn_ctl(&n.ns, op, NET, Some(&ns.path()), &env)
    }

    /// CNI GC of [`NET`] on node `i`, as a runtime sends it to the IPAM
    /// plugin: everything of this node not in `valid` (container ID,
    /// interface) is released. Returns the plugin's outcome (ok, output).
    pub fn gc(&self, i: usize, ipam: &Value, valid: &[(String, String)]) -> (bool, String) {
        let n = self.node(i);
        let mut conf = conflist(n, ipam)["plugins"][0].clone();
        conf["cniVersion"] = json!("1.1.0");
        conf["name"] = json!(NET);
        conf["cni.dev/valid-attachments"] = valid
            .iter()
            .map(|(c, i)| json!({"containerID": c, "ifname": i}))
            .collect();
        let mut c = n.ns.cmd(bin_dir().join("plexus-cluster-ipam"));
        c.env_clear()
            .env("CNI_COMMAND", "GC")
            .env("CNI_PATH", bin_dir());
        let out = output_with_stdin(&mut c, &serde_json::to_vec(&conf).unwrap());
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// The node's status as its agent reports it.
    pub fn status(&self, i: usize) -> Value {
        serde_json::from_str(&plexusctl(
            self.node(i),
            &["node", "--json", "status", "--run-dir"],
        ))
        .expect("node status JSON")
    }
}

/// The pod's IPv4 address on net1 (without its length), if any.
pub fn net1(pod: &Netns) -> Option<String> {
    pod.addrs(IFNAME)
        .into_iter()
        .find(|a| !a.contains(':'))
        .and_then(|a| a.split('/').next().map(String::from))
}

/// The macvlan conflist of node `n` with `ipam` (its `runDir` set to the
/// node's; a `cniVersion` key in `ipam` is the conflist's, 1.0.0 without).
pub fn conflist(n: &Node, ipam: &Value) -> Value {
    let version = ipam
        .get("cniVersion")
        .cloned()
        .unwrap_or_else(|| json!("1.0.0"));
    let mut ipam = ipam.clone();
    if let Some(o) = ipam.as_object_mut() {
        o.remove("cniVersion");
    }
    ipam["runDir"] = json!(n.run_dir.display().to_string());
    json!({
        "cniVersion": version,
        "name": NET,
        "plugins": [{"type": "macvlan", "master": "uplink0", "mode": "bridge", "ipam": ipam}]
    })
}
