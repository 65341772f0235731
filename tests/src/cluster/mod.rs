//! A simulated overlay cluster, all in namespaces the test creates:
//!
//! ```text
//!   lan netns: bridge "lan0" ─┬─ veth ── etcd netns  (eth0 10.200.0.2, etcd)
//!                             ├─ veth ── node netns 0 (eth0 10.200.0.10, plexusd, cni0, pods)
//!                             ├─ veth ── node netns 1 (eth0 10.200.0.11 ...)
//!                             └─ ...
//! ```
//!
//! Addresses are private and live only inside these namespaces. Each node
//! has its own run-dir, agent log and CNI sandbox; pods are netns attached
//! through plexus-vxlan by plexusctl running in the node. [`flanneld`] sets
//! up a node by hand exactly the way flanneld does, for interoperability.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::{run_ok, CniSandbox, Netns};

pub mod clusteripam;
mod daemon;
pub mod flanneld;
pub mod multinet;
pub mod routed;

pub use crate::etcd::Etcd;
pub use daemon::{plexusd_available, Daemon};

/// flannel's default etcd prefix.
pub const PREFIX: &str = "/coreos.com/network";
/// The underlay: a /24 inside the test's own namespaces.
pub const UNDERLAY: &str = "10.200.0";
pub const UNDERLAY6: &str = "fd20:200::";
pub const ETCD_IP: &str = "10.200.0.2";
/// The CNI network name the pods use (kube-flannel's).
pub const NETWORK: &str = "cbr0";
/// How long convergence may take before a wait gives up.
pub const CONVERGE: Duration = Duration::from_secs(30);

/// Poll `f` every 50 ms until it is true; panic naming `what` after
/// [`CONVERGE`]. A bound on eventual consistency, not a timing assertion.
pub fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + CONVERGE;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Return early (SKIP, or a failure under PLEXUS_REQUIRE_ALL=1) unless root,
/// etcd and the agent binary are all there.
#[macro_export]
macro_rules! require_overlay {
    () => {
        $crate::require_root!();
        $crate::require_etcd!();
        if !$crate::cluster::plexusd_available() {
            $crate::skip("plexusd is not built (cargo build --bins -p plexusd)");
            return;
        }
    };
}

/// conf/overlay/10-plexus-vxlan.conflist.
pub fn example_conflist() -> Value {
    let p = crate::example::conf_src().join("overlay/10-plexus-vxlan.conflist");
    serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()
}

/// conf/overlay/network-config.json, the example for `<prefix>/config`.
pub fn example_network_config() -> Value {
    let p = crate::example::conf_src().join("overlay/network-config.json");
    serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()
}

/// flannel's network config with a vxlan backend (VNI 1, port 8472).
pub fn vxlan_config(network: &str) -> Value {
    json!({"Network": network, "SubnetMax": phantom_free_max(network), "Backend": {"Type": "vxlan"}})
}

/// `SubnetMax` for a /16 test network with /24 subnets: agents lease below
/// `x.y.240.0`, so the subnets from there up are free for
/// [`flanneld::phantom_lease`] (an agent's random pick must never collide
/// with a test's fixed phantom subnet).
pub fn phantom_free_max(network: &str) -> String {
    let base: std::net::Ipv4Addr = network
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("test network {network} is not an IPv4 CIDR"));
    let [a, b, _, _] = base.octets();
    format!("{a}.{b}.239.0")
}

#[derive(Debug)]
pub struct Cluster {
    // Field order is drop order: nodes (and what runs in them) before the
    // underlay they hang off.
    pub nodes: Vec<Node>,
    pub etcd: Etcd,
    pub etcd_ns: Netns,
    pub lan: Netns,
}

impl Cluster {
    /// The underlay, etcd, and `n` nodes (no agents yet).
    pub fn new(n: usize) -> Cluster {
        let lan = Netns::new("lan");
        lan.ip(&["link", "add", "lan0", "type", "bridge"]);
        lan.ip(&["link", "set", "lan0", "up"]);
        let etcd_ns = Netns::new("etcd");
        plug(&lan, &etcd_ns, "vetcd", ETCD_IP, None);
        let etcd = Etcd::start(&etcd_ns, ETCD_IP);
        let mut c = Cluster {
            nodes: Vec::new(),
            etcd,
            etcd_ns,
            lan,
        };
        for _ in 0..n {
            c.add_node();
        }
        c
    }

    /// One more node on the underlay; returns its index.
    pub fn add_node(&mut self) -> usize {
        let i = self.nodes.len();
        let name = format!("node{i}");
        let ns = Netns::new(&name);
        let ip = format!("{UNDERLAY}.{}", 10 + i);
        let ip6 = format!("{UNDERLAY6}{:x}", 10 + i);
        plug(&self.lan, &ns, &format!("vn{i}"), &ip, Some(&ip6));
        for key in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
            run_ok(ns.cmd("sysctl").args(["-qw", key]));
        }
        let dir = tempfile::Builder::new()
            .prefix(&format!("plexus-{name}"))
            .tempdir()
            .unwrap();
        let run_dir = dir.path().join("run");
        let cni = CniSandbox::new();
        let node = Node {
            name,
            ns,
            ip,
            ip6,
            run_dir,
            log: dir.path().join("plexusd.log"),
            cni,
            _dir: dir,
        };
        node.write_vxlan_conflist();
        self.nodes.push(node);
        i
    }

    /// One ready agent per node against this cluster's etcd, in node order.
    pub fn start_agents(&self, extra: &[&str]) -> Vec<Daemon> {
        self.nodes
            .iter()
            .map(|n| n.start_agent(&self.etcd.url(), extra))
            .collect()
    }

    /// A second L2 segment for macvlan networks: bridge `lan1` in the lan
    /// netns and a veth from it into every node as `uplink0` (up), so
    /// macvlan pods on different nodes share one segment.
    pub fn add_macvlan_segment(&self) {
        self.lan.ip(&["link", "add", "lan1", "type", "bridge"]);
        self.lan.ip(&["link", "set", "lan1", "up"]);
        for (i, n) in self.nodes.iter().enumerate() {
            let host_end = format!("vu{i}");
            self.lan.ip(&[
                "link", "add", &host_end, "type", "veth", "peer", "name", "uplink0", "netns",
                &n.ns.name,
            ]);
            self.lan
                .ip(&["link", "set", &host_end, "master", "lan1", "up"]);
            n.ns.ip(&["link", "set", "uplink0", "up"]);
        }
    }

    /// Write flannel's network config at `<prefix>/config`.
    pub fn set_config(&self, config: &Value) {
        self.etcd
            .put(&format!("{PREFIX}/config"), &config.to_string());
    }

    /// Every lease under `<prefix>/subnets/`: (key after `subnets/`, value).
    pub fn leases(&self) -> Vec<(String, Value)> {
        let dir = format!("{PREFIX}/subnets/");
        self.etcd
            .get_prefix(&dir)
            .into_iter()
            .map(|(k, v)| {
                let key = k.strip_prefix(&dir).unwrap_or(&k).to_string();
                let v = serde_json::from_str(&v)
                    .unwrap_or_else(|e| panic!("lease {key} is not JSON ({e}): {v}"));
                (key, v)
            })
            .collect()
    }

    /// The lease whose `PublicIP` is `ip`.
    pub fn lease_of(&self, ip: &str) -> Option<(String, Value)> {
        self.leases().into_iter().find(|(_, v)| v["PublicIP"] == ip)
    }

    /// Write a lease as flanneld does: attached to an etcd lease of 24 h.
    pub fn put_lease(&self, key: &str, value: &Value) {
        let granted = self.etcd.ctl_out(&["lease", "grant", "86400"]);
        // "lease 694d7d1a2b3c4d5e granted with TTL(86400s)"
        let id = granted.split_whitespace().nth(1).expect("lease id");
        self.etcd.ctl_out(&[
            "put",
            &format!("--lease={id}"),
            &format!("{PREFIX}/subnets/{key}"),
            &value.to_string(),
        ]);
    }

    pub fn del_lease(&self, key: &str) {
        self.etcd.del(&format!("{PREFIX}/subnets/{key}"));
    }

    /// The TTL the etcd lease attached to `<prefix>/subnets/KEY` was
    /// granted with, in seconds (None when the key has no lease).
    pub fn lease_ttl(&self, key: &str) -> Option<u64> {
        let id = self.etcd.lease_of(&format!("{PREFIX}/subnets/{key}"));
        if id == 0 {
            return None;
        }
        let out = self
            .etcd
            .ctl_out(&["lease", "timetolive", &format!("{id:x}"), "-w", "json"]);
        let v: Value = serde_json::from_str(&out).unwrap();
        v["granted-ttl"].as_u64()
    }
}

/// A veth from the lan bridge into `ns` as `eth0` with `ip`/24 (and `ip6`/64).
fn plug(lan: &Netns, ns: &Netns, host_end: &str, ip: &str, ip6: Option<&str>) {
    lan.ip(&[
        "link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
    ]);
    lan.ip(&["link", "set", host_end, "master", "lan0", "up"]);
    ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
    if let Some(ip6) = ip6 {
        ns.ip(&["addr", "add", &format!("{ip6}/64"), "dev", "eth0", "nodad"]);
    }
    ns.ip(&["link", "set", "eth0", "up"]);
}

/// One simulated node.
#[derive(Debug)]
pub struct Node {
    pub name: String,
    pub ns: Netns,
    /// The node's underlay (public) IPv4 and IPv6 addresses on eth0.
    pub ip: String,
    pub ip6: String,
    pub run_dir: PathBuf,
    pub log: PathBuf,
    pub cni: CniSandbox,
    _dir: tempfile::TempDir,
}

impl Node {
    /// The arguments every agent in these tests gets.
    pub fn agent_args(&self, store: &str, extra: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = [
            "--node-name",
            &self.name,
            "--store",
            store,
            "--run-dir",
            &self.run_dir.display().to_string(),
            "--etcd-prefix",
            PREFIX,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if !extra.iter().any(|e| *e == "--iface" || *e == "--public-ip") {
            a.extend(["--public-ip".to_string(), self.ip.clone()]);
        }
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }

    /// Start plexusd here against `store` and wait until it is ready.
    pub fn start_agent(&self, store: &str, extra: &[&str]) -> Daemon {
        let mut d = self.spawn_agent(store, extra);
        d.wait_ready();
        d
    }

    /// Start plexusd here without waiting (bad-config tests).
    pub fn spawn_agent(&self, store: &str, extra: &[&str]) -> Daemon {
        Daemon::spawn(
            &self.ns.path(),
            &self.run_dir,
            &self.log,
            self.agent_args(store, extra),
        )
    }

    pub fn subnet_env_path(&self) -> PathBuf {
        self.run_dir.join("subnet.env")
    }

    /// `KEY` from `<run-dir>/subnet.env`.
    pub fn subnet_env(&self, key: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.subnet_env_path()).ok()?;
        text.lines()
            .filter_map(|l| l.split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.to_string())
    }

    /// conf/overlay's conflist (kube-flannel's with `type` changed), its
    /// state moved into this node's run-dir and sandbox.
    pub fn write_vxlan_conflist(&self) {
        self.cni
            .write_conf(&format!("{NETWORK}.conflist"), &self.vxlan_conflist());
    }

    /// What [`Node::write_vxlan_conflist`] writes.
    pub fn vxlan_conflist(&self) -> Value {
        let mut conf = example_conflist();
        let vxlan = &mut conf["plugins"][0];
        assert_eq!(vxlan["type"], "plexus-vxlan");
        vxlan["subnetFile"] = json!(self.subnet_env_path());
        vxlan["dataDir"] = json!(self.cni.dir.path().join("vxlan"));
        vxlan["ipam"] = json!({"dataDir": self.cni.data_dir});
        conf
    }

    /// A pod netns attached through plexus-vxlan (plexusctl in the node).
    pub fn add_pod(&self, tag: &str) -> Pod {
        let ns = Netns::new(tag);
        let out = self
            .cni
            .ctl(&self.ns, "add", NETWORK, Some(&ns.path()), &[])
            .expect_success()
            .json();
        let ips = out["ips"]
            .as_array()
            .expect("ADD result has ips")
            .iter()
            .map(|i| {
                let a = i["address"].as_str().unwrap();
                a.split('/').next().unwrap().to_string()
            })
            .collect();
        Pod { ns, ips }
    }

    /// `ip -j ARGS` in the node.
    pub fn ip_json(&self, args: &[&str]) -> Value {
        self.ns.ip_json(args)
    }

    /// `bridge -j fdb show dev DEV` in the node.
    pub fn fdb(&self, dev: &str) -> Vec<Value> {
        let out = run_ok(Command::new("bridge").args([
            "-n",
            &self.ns.name,
            "-j",
            "fdb",
            "show",
            "dev",
            dev,
        ]));
        let v: Value = serde_json::from_str(if out.trim().is_empty() { "[]" } else { &out })
            .unwrap_or_else(|e| panic!("bridge -j fdb: {e}: {out}"));
        v.as_array().cloned().unwrap_or_default()
    }

    /// The MAC address of `dev`.
    pub fn mac(&self, dev: &str) -> String {
        self.ip_json(&["link", "show", "dev", dev])[0]["address"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// What the node's kernel holds for one remote VXLAN lease.
    pub fn vxlan_entries(
        &self,
        dev: &str,
        subnet: &str,
        vtep_mac: &str,
        public_ip: &str,
    ) -> Entries {
        let gw = network_address(subnet);
        let route = self.ip_json(&["route", "show", "exact", subnet]);
        let route = route.as_array().unwrap().iter().any(|r| {
            r["dev"] == dev
                && r["gateway"] == gw.as_str()
                && r["flags"]
                    .as_array()
                    .is_some_and(|f| f.iter().any(|f| f == "onlink"))
        });
        let neigh = self.ip_json(&["neigh", "show", "dev", dev]);
        let neigh = neigh.as_array().unwrap().iter().any(|n| {
            n["dst"] == gw.as_str()
                && n["lladdr"] == vtep_mac
                && n["state"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|s| s == "PERMANENT"))
        });
        let fdb = self
            .fdb(dev)
            .iter()
            .any(|f| f["mac"] == vtep_mac && f["dst"] == public_ip);
        Entries { route, neigh, fdb }
    }

    /// Whether any route, neighbour or FDB entry for `subnet`/`vtep_mac`
    /// is left (after the lease went).
    pub fn any_vxlan_entry(&self, dev: &str, subnet: &str, vtep_mac: &str) -> bool {
        let gw = network_address(subnet);
        let route = !self
            .ip_json(&["route", "show", "exact", subnet])
            .as_array()
            .unwrap()
            .is_empty();
        let has_dev = self.ns.has_link(dev);
        let neigh = has_dev
            && self
                .ip_json(&["neigh", "show", "dev", dev])
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n["dst"] == gw.as_str());
        let fdb = has_dev && self.fdb(dev).iter().any(|f| f["mac"] == vtep_mac);
        route || neigh || fdb
    }

    /// The route to `subnet`, if any.
    pub fn route_to(&self, subnet: &str) -> Option<Value> {
        self.ip_json(&["route", "show", "exact", subnet])
            .as_array()
            .unwrap()
            .first()
            .cloned()
    }
}

/// Route, neighbour and FDB entry for one remote VXLAN lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entries {
    pub route: bool,
    pub neigh: bool,
    pub fdb: bool,
}

impl Entries {
    pub fn all(&self) -> bool {
        self.route && self.neigh && self.fdb
    }
}

/// `10.5.3.0/24` → `10.5.3.0` (the subnet's own address; flannel's VTEP
/// address and gateway).
pub fn network_address(subnet: &str) -> String {
    subnet.split('/').next().unwrap().to_string()
}

/// A lease key (`10.5.3.0-24`) as a CIDR (`10.5.3.0/24`); the IPv4 part of
/// a dual-stack key.
pub fn key_to_cidr(key: &str) -> String {
    let v4 = key.split('&').next().unwrap();
    let (ip, len) = v4.rsplit_once('-').expect("lease key IP-LEN");
    format!("{ip}/{len}")
}

/// A pod: its netns and the addresses plexus-vxlan gave it.
#[derive(Debug)]
pub struct Pod {
    pub ns: Netns,
    pub ips: Vec<String>,
}

impl Pod {
    pub fn ip4(&self) -> &str {
        self.ips
            .iter()
            .find(|i| !i.contains(':'))
            .expect("an IPv4 address")
    }
    pub fn ip6(&self) -> &str {
        self.ips
            .iter()
            .find(|i| i.contains(':'))
            .expect("an IPv6 address")
    }
}
