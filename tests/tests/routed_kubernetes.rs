//! The routed network with `--store kubernetes` on the simulated cluster:
//! the API stand-in (tests/src/apiserver.rs) serves Node and PlexusKey
//! objects on the underlay (every node's agent reaches it), plexusd on
//! three nodes reads the ConfigMap's files (`--pools-file`, `--bgp-file`)
//! and applies them to the API, claims its blocks there (resourceVersion
//! compare-and-swap), meshes over BGP, and pods ping across nodes. Then a
//! Node is deleted: its blocks and node record leave the store, every
//! other agent drops its BGP session and its routes.
//!
//! Also: a bad configuration file keeps the agent alive but not ready,
//! with the error in its log, until the file is fixed.

use std::collections::BTreeSet;

use plexus_store::kubekv::{GROUP, PLURAL, VERSION};
use plexus_tests::apiserver::FakeApiServer;
use plexus_tests::cluster::routed::{
    add_routed_pod, bgp_status, first_ip, routes, write_routed_conf, PROTO_BGP, PROTO_BLOCK,
};
use plexus_tests::cluster::{wait_for, Cluster, Daemon, Node, ETCD_IP};
use plexus_tests::{require_overlay, Netns};
use serde_json::{json, Value};

const POOL: &str = "10.97.0.0/16";

/// The ConfigMap's two routed keys as files.
fn config_files(dir: &std::path::Path, pools: &str, bgp: &str) -> (String, String) {
    let (p, b) = (dir.join("pools.json"), dir.join("bgp.json"));
    std::fs::write(&p, pools).unwrap();
    std::fs::write(&b, bgp).unwrap();
    (p.display().to_string(), b.display().to_string())
}

fn pools_json() -> String {
    json!([{"name": "routed", "cidr": POOL, "blockSize": 26, "encap": "none"}]).to_string()
}

/// The routed records the API holds: key → value.
fn records(api: &FakeApiServer) -> Vec<(String, Value)> {
    api.objects(GROUP, VERSION, PLURAL)
        .into_values()
        .map(|o| {
            let key = o["spec"]["key"].as_str().unwrap().to_string();
            let v = serde_json::from_str(o["spec"]["value"].as_str().unwrap()).unwrap();
            (key, v)
        })
        .collect()
}

/// Names of the nodes holding blocks, and of the node records.
fn stored_nodes(api: &FakeApiServer) -> (BTreeSet<String>, BTreeSet<String>) {
    let recs = records(api);
    let holders = recs
        .iter()
        .filter(|(k, _)| k.starts_with("/plexus/routed/blocks/"))
        .map(|(_, v)| v["node"].as_str().unwrap().to_string())
        .collect();
    let nodes = recs
        .iter()
        .filter_map(|(k, _)| k.strip_prefix("/plexus/routed/nodes/"))
        .map(String::from)
        .collect();
    (holders, nodes)
}

/// The addresses of the node's BGP peers in the Established state, and
/// how many peers it has.
fn sessions(n: &Node) -> (BTreeSet<String>, usize) {
    let v = bgp_status(n);
    let peers = v["peers"].as_array().unwrap();
    let up = peers
        .iter()
        .filter(|p| p["state"] == "Established")
        .map(|p| p["address"].as_str().unwrap().to_string())
        .collect();
    (up, peers.len())
}

/// Destinations of the node's routes with `proto`.
fn route_dsts(n: &Node, proto: &str) -> BTreeSet<String> {
    routes(n, proto).into_iter().map(|(dst, _)| dst).collect()
}

/// A pod netns attached by plexus-bgp-routes (addresses from the agent);
/// its IPv4 address.
fn routed_pod(n: &Node, tag: &str) -> (Netns, String) {
    write_routed_conf(n);
    let pod = Netns::new(tag);
    let ip = first_ip(&add_routed_pod(n, &pod, "eth0"));
    (pod, ip)
}

/// Three agents in Kubernetes mode against the fake API server (a Node
/// each; the pool and BGP settings from ConfigMap files; the poll at ten
/// minutes, so what follows the store goes through the PlexusKey watch),
/// with the mesh Established. Each test builds its own.
struct KubeRouted {
    agents: Vec<Daemon>,
    _dir: tempfile::TempDir,
    api: FakeApiServer,
    c: Cluster,
}

/// A pod per node and each node's block, every node routing the others'.
struct PodPerNode {
    pods: Vec<(Netns, String)>,
    blocks: Vec<String>,
}

impl KubeRouted {
    fn start() -> KubeRouted {
        let c = Cluster::new(3);
        // On the underlay, where etcd would be: every node reaches it.
        let api = FakeApiServer::start_at(&c.etcd_ns, ETCD_IP);
        api.serve_resource(GROUP, VERSION, PLURAL, "PlexusKey");
        for n in &c.nodes {
            api.add_node(&n.name, &[], json!({}));
        }
        let dir = tempfile::tempdir().unwrap();
        let (pools, bgp) = config_files(dir.path(), &pools_json(), r#"{"asn": 64601}"#);
        let kubeconfig = api.kubeconfig.display().to_string();
        let extra = [
            "--kubeconfig",
            &kubeconfig,
            "--pools-file",
            &pools,
            "--bgp-file",
            &bgp,
            "--routed-poll-interval",
            "600",
        ];
        let agents: Vec<_> = c
            .nodes
            .iter()
            .map(|n| n.start_agent("kubernetes", &extra))
            .collect();
        // The mesh, from the node records in the API.
        for n in &c.nodes {
            wait_for(&format!("{}: 2 mesh sessions Established", n.name), || {
                sessions(n).0.len() == 2
            });
        }
        KubeRouted {
            agents,
            _dir: dir,
            api,
            c,
        }
    }

    /// A pod per node, a block per node claimed in the API, routes to the
    /// other nodes' blocks on every node.
    fn pod_per_node(&self) -> PodPerNode {
        let c = &self.c;
        let pods: Vec<(Netns, String)> = c
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| routed_pod(n, &format!("kpod{i}")))
            .collect();
        let blocks: Vec<String> = c
            .nodes
            .iter()
            .map(|n| {
                let b = route_dsts(n, PROTO_BLOCK);
                assert_eq!(b.len(), 1, "{}: {b:?}", n.name);
                b.into_iter().next().unwrap()
            })
            .collect();
        assert_eq!(
            blocks.iter().collect::<BTreeSet<_>>().len(),
            3,
            "{blocks:?}"
        );
        for (i, n) in c.nodes.iter().enumerate() {
            wait_for(&format!("{}: routes to the other blocks", n.name), || {
                let r = route_dsts(n, PROTO_BGP);
                (0..3).filter(|j| *j != i).all(|j| r.contains(&blocks[j]))
            });
        }
        PodPerNode { pods, blocks }
    }
}

#[test]
fn routed_network_in_kubernetes_mode_keeps_its_state_in_the_api() {
    require_overlay!();
    let k = KubeRouted::start();
    // The ConfigMap's pool and BGP settings are in the API, once.
    let recs = records(&k.api);
    let pool: Vec<&Value> = recs
        .iter()
        .filter(|(key, _)| key.starts_with("/plexus/routed/pools/"))
        .map(|(_, v)| v)
        .collect();
    assert_eq!(pool.len(), 1, "{recs:?}");
    assert_eq!(pool[0]["cidr"], POOL);
    let bgp_rec = recs
        .iter()
        .find(|(key, _)| key == "/plexus/routed/bgp/config");
    assert_eq!(bgp_rec.map(|(_, v)| v["asn"].clone()), Some(json!(64601)));

    let p = k.pod_per_node();
    let (holders, _) = stored_nodes(&k.api);
    assert_eq!(holders.len(), 3, "{holders:?}");
    assert_eq!(p.blocks.len(), 3);
    // The first packet resolves neighbours; on a loaded machine that can
    // outlast one ping's 2 s.
    for (pod, _) in &p.pods {
        for (_, ip) in &p.pods {
            wait_for(&format!("{} reaches {ip}", pod.name), || pod.ping(ip));
        }
    }
}

#[test]
fn a_deleted_node_leaves_the_api_the_mesh_and_the_routes() {
    require_overlay!();
    let mut k = KubeRouted::start();
    let p = k.pod_per_node();
    let c = &k.c;
    // node2 goes: its agent stops with the machine, its Node is deleted.
    let gone = &c.nodes[2];
    k.agents.pop().unwrap().stop();
    k.api.delete_node(&gone.name);
    wait_for("node2's blocks and record leave the API", || {
        let (holders, nodes) = stored_nodes(&k.api);
        !holders.contains(&gone.name) && !nodes.contains(&gone.name)
    });
    for n in &c.nodes[..2] {
        wait_for(&format!("{}: node2 leaves the mesh", n.name), || {
            let (up, all) = sessions(n);
            all == 1 && !up.contains(&gone.ip)
        });
        wait_for(
            &format!("{}: node2's block is no longer routed", n.name),
            || !route_dsts(n, PROTO_BGP).contains(&p.blocks[2]),
        );
    }
    // The two left still reach each other, and node2's record stays gone
    // (the agents agree; nothing writes it back).
    wait_for("pod0 reaches pod1", || p.pods[0].0.ping(&p.pods[1].1));
    let (holders, nodes) = stored_nodes(&k.api);
    assert_eq!(holders, BTreeSet::from(["node0".into(), "node1".into()]));
    assert_eq!(nodes, BTreeSet::from(["node0".into(), "node1".into()]));
}

#[test]
fn a_bad_configuration_file_waits_for_a_fixed_one() {
    require_overlay!();
    let c = Cluster::new(1);
    let n = &c.nodes[0];
    let dir = tempfile::tempdir().unwrap();
    // A pool with host bits set, as `plexusctl pool add` refuses it.
    let bad = json!([{"name": "routed", "cidr": "10.97.0.1/16"}]).to_string();
    let (pools, bgp) = config_files(dir.path(), &bad, r#"{"asn": 64512}"#);
    let store = format!("file:{}", dir.path().join("store.json").display());
    let mut agent = n.spawn_agent(&store, &["--pools-file", &pools, "--bgp-file", &bgp]);
    wait_for("the error in the log", || {
        agent.log_text().contains("has host bits set")
    });
    let log = agent.log_text();
    assert!(log.contains(&pools), "the log names the file: {log}");
    assert!(agent.try_wait().is_none(), "the agent exited: {log}");
    assert!(!agent.is_ready());
    // Fixed (a ConfigMap edit reaching the mounted file): the routed
    // network starts with it.
    std::fs::write(&pools, pools_json()).unwrap();
    agent.wait_ready();
    assert!(agent.log_text().contains("routed network ready"));
}
