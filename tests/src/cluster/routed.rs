//! The calico-style routed network on the simulated cluster: the pool and
//! BGP config written through plexus-ipam's API, and what a node shows of
//! it (`plexusctl bgp status`, plexusd's kernel routes).

use std::future::Future;

use plexus_ipam::{BgpConfig, Cluster as Ipam, Layout, Pool};
use serde_json::{json, Value};

use super::{Cluster, Node};
use crate::bin_dir;

/// The routed pool the tests use (inside the test's namespaces only).
pub const POOL: &str = "10.96.0.0/16";
/// plexusd's route protocol numbers (agent/src/routed/kernel.rs): a held
/// block's blackhole, and routes learned over BGP.
pub const PROTO_BLOCK: &str = "113";
pub const PROTO_BGP: &str = "114";

/// Runs `f` against the cluster's store (plexus-ipam's view of it), from
/// inside the etcd netns.
pub fn store<T: Send, F: Future<Output = T>>(c: &Cluster, f: impl FnOnce(Ipam) -> F + Send) -> T {
    let url = c.etcd.url();
    // Not `Netns::block_on`: the store's futures are not Send.
    c.etcd_ns.run(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let kv = plexus_store::open_kv(&url, &Default::default())
                .await
                .expect("open etcd");
            f(Ipam::new(kv, Layout::default())).await
        })
    })
}

/// The default BGP config (AS 64512, full mesh) and the pool [`POOL`] cut
/// into blocks of `/block_size`: what makes plexusd serve the routed
/// network.
pub fn add_pool(c: &Cluster, block_size: u8) {
    add_pool_with(c, block_size, Default::default());
}

/// [`add_pool`] with the pool's encapsulation.
pub fn add_pool_with(c: &Cluster, block_size: u8, encap: plexus_ipam::Encap) {
    store(c, move |s| async move {
        s.set_bgp_config(&BgpConfig::default()).await.unwrap();
        s.add_pool(&Pool {
            name: "default".into(),
            cidr: POOL.parse().unwrap(),
            block_size,
            nat_outgoing: false,
            encap,
            disabled: false,
        })
        .await
        .unwrap();
    });
}

/// Addresses the routed network holds for pods of `node` in the store.
pub fn allocations_of(c: &Cluster, node: &str) -> usize {
    let node = node.to_string();
    store(c, move |s| async move {
        s.blocks_of(&node)
            .await
            .unwrap()
            .iter()
            .map(|b| b.allocations.len())
            .sum()
    })
}

/// `plexusctl ARGS <run-dir>` in the node (ARGS end with `--run-dir`):
/// its stdout; panics when it fails.
pub fn plexusctl(n: &Node, args: &[&str]) -> String {
    let out =
        n.ns.cmd(bin_dir().join("plexusctl"))
            .args(args)
            .arg(&n.run_dir)
            .output()
            .expect("spawn plexusctl");
    assert!(
        out.status.success(),
        "plexusctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `plexusctl bgp status --json` in the node.
pub fn bgp_status(n: &Node) -> Value {
    serde_json::from_str(&plexusctl(n, &["bgp", "status", "--json", "--run-dir"])).expect("JSON")
}

/// The node has exactly `want` BGP sessions, all Established.
pub fn established(n: &Node, want: usize) -> bool {
    let st = bgp_status(n);
    let peers = st["peers"].as_array().unwrap();
    peers.len() == want && peers.iter().all(|p| p["state"] == "Established")
}

/// The node's routes with `proto`, as (dst, gateway or "").
pub fn routes(n: &Node, proto: &str) -> Vec<(String, String)> {
    routes_of(n, "-4", proto)
}

/// [`routes`] of one family (`-4`, `-6`).
pub fn routes_of(n: &Node, family: &str, proto: &str) -> Vec<(String, String)> {
    n.ip_json(&[family, "route", "show", "proto", proto])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["dst"].as_str().unwrap_or("").to_string(),
                r["gateway"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// The CNI network name of [`write_routed_conf`]'s conflist.
pub const ROUTED_NET: &str = "routed";

/// A conflist for plexus-bgp-routes with addresses from the node's agent.
pub fn write_routed_conf(n: &Node) {
    n.cni.write_conf(
        "10-routed.conflist",
        &json!({"cniVersion": "1.1.0", "name": ROUTED_NET,
                "plugins": [{"type": "plexus-bgp-routes", "runDir": n.run_dir}]}),
    );
}

/// ADD of `pod` through [`write_routed_conf`]'s network; the CNI result.
pub fn add_routed_pod(n: &Node, pod: &crate::Netns, ifname: &str) -> Value {
    n.cni
        .ctl(
            &n.ns,
            "add",
            ROUTED_NET,
            Some(&pod.path()),
            &[("CNI_IFNAME", ifname)],
        )
        .expect_success()
        .json()
}

/// The first address of a CNI result, without its prefix length.
pub fn first_ip(result: &Value) -> String {
    let a = result["ips"][0]["address"].as_str().expect("an address");
    a.split('/').next().unwrap().to_string()
}
