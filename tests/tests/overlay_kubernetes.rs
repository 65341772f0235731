//! Kubernetes mode against the API stand-in: the node's subnet from its
//! `spec.podCIDR`, its public IP and VTEP MAC published in flannel's node
//! annotations, other nodes from a Node watch. The other node is a flannel
//! node set up by hand from its Node object, so this is also the mixed
//! cluster flannel's annotations are for.
//!
//! In the first test the stand-in listens on node0's loopback, so only
//! node0 runs an agent. The others are a cluster as Kubernetes has it: the
//! stand-in on the underlay serves Nodes, Pods and NADs to plexusd on two
//! nodes and to the meta plugin in API mode (kubeconfig) on each; a pod's
//! annotation selects a NAD, ADD goes through meta, and the
//! network-status annotation lands on the Pod object; and, in a cluster of
//! its own, one node's Node is deleted and the other node drops its
//! overlay entries.

use plexus_k8s::NETWORK_STATUS_ANNOTATION;
use plexus_store::kubekv::{GROUP, PLURAL, VERSION};
use plexus_tests::apiserver::FakeApiServer;
use plexus_tests::cluster::{
    example_network_config, flanneld, wait_for, Cluster, Daemon, Node, ETCD_IP, NETWORK,
};
use plexus_tests::{require_overlay, Netns};
use serde_json::{json, Value};

const P: &str = "flannel.alpha.coreos.com/";

fn flannel_annotations(public_ip: &str, vtep_mac: &str) -> Value {
    json!({
        format!("{P}kube-subnet-manager"): "true",
        format!("{P}backend-type"): "vxlan",
        format!("{P}backend-data"): json!({"VNI": 1, "VtepMAC": vtep_mac}).to_string(),
        format!("{P}public-ip"): public_ip,
    })
}

#[test]
fn kubernetes_mode_shares_the_overlay_with_a_flannel_node() {
    require_overlay!();
    let c = Cluster::new(2);
    let (n0, n1) = (&c.nodes[0], &c.nodes[1]);
    let api = FakeApiServer::start_in(&n0.ns);
    // The flannel node: its device by hand, its Node object as flanneld
    // leaves it.
    let hand = flanneld::configure_device(n1, "10.244.2.0/24", 1450);
    api.add_node(
        "node1",
        &["10.244.2.0/24"],
        flannel_annotations(&n1.ip, &hand.vtep_mac),
    );
    api.add_node("node0", &["10.244.1.0/24"], json!({}));

    let net_conf = n0.run_dir.with_file_name("net-conf.json");
    std::fs::write(&net_conf, example_network_config().to_string()).unwrap();
    let kubeconfig = api.kubeconfig.display().to_string();
    let net_conf = net_conf.display().to_string();
    let _agent = n0.start_agent(
        "kubernetes",
        &["--kubeconfig", &kubeconfig, "--net-config", &net_conf],
    );

    // Our subnet is the podCIDR; our VTEP is published as flannel does.
    assert_eq!(
        n0.subnet_env("FLANNEL_NETWORK").as_deref(),
        Some("10.244.0.0/16")
    );
    assert_eq!(
        n0.subnet_env("FLANNEL_SUBNET").as_deref(),
        Some("10.244.1.1/24")
    );
    let mac0 = n0.mac("flannel.1");
    let ann = |k: &str| api.node_annotation("node0", &format!("{P}{k}"));
    assert_eq!(ann("kube-subnet-manager").as_deref(), Some("true"));
    assert_eq!(ann("backend-type").as_deref(), Some("vxlan"));
    assert_eq!(ann("public-ip"), Some(n0.ip.clone()));
    let data: Value = serde_json::from_str(&ann("backend-data").expect("backend-data")).unwrap();
    assert_eq!(data, json!({"VNI": 1, "VtepMAC": mac0}));

    // The flannel node from its annotations, and pods both ways.
    wait_for("node0 programs node1 from its Node", || {
        n0.vxlan_entries("flannel.1", "10.244.2.0/24", &hand.vtep_mac, &n1.ip)
            .all()
    });
    flanneld::program_remote(n1, "10.244.1.0/24", &mac0, &n0.ip);
    let p0 = n0.add_pod("p0");
    let p1 = flanneld::pod(n1, &hand, 2, "p1");
    assert!(p0.ip4().starts_with("10.244.1."), "{:?}", p0.ips);
    // The first packet resolves neighbours on both sides; on a loaded
    // machine that can outlast one ping's 2 s.
    wait_for("the Plexus pod reaches the flannel pod", || {
        p0.ns.ping(p1.ip4())
    });
    assert!(
        p1.ns.ping(p0.ip4()),
        "the flannel pod cannot reach the Plexus pod"
    );

    // A node that joins, then goes; also across a watch that expired.
    let (ip2, mac2) = ("10.200.0.250", "0e:fa:00:00:00:fa");
    api.add_node("node2", &["10.244.3.0/24"], flannel_annotations(ip2, mac2));
    wait_for("node0 programs node2", || {
        n0.vxlan_entries("flannel.1", "10.244.3.0/24", mac2, ip2)
            .all()
    });
    api.compact_nodes();
    let (ip3, mac3) = ("10.200.0.251", "0e:fa:00:00:00:fb");
    api.add_node("node3", &["10.244.4.0/24"], flannel_annotations(ip3, mac3));
    api.delete_node("node2");
    wait_for("node0 relists and programs node3", || {
        n0.vxlan_entries("flannel.1", "10.244.4.0/24", mac3, ip3)
            .all()
    });
    wait_for("node0 removes node2", || {
        !n0.any_vxlan_entry("flannel.1", "10.244.3.0/24", mac2)
    });
    // A node without flannel's annotations is not part of the overlay.
    api.add_node("plain", &["10.244.9.0/24"], json!({}));
    api.annotate_node("node3", json!({format!("{P}public-ip"): "10.200.0.252"}));
    wait_for("node0 follows node3's new public IP", || {
        n0.vxlan_entries("flannel.1", "10.244.4.0/24", mac3, "10.200.0.252")
            .all()
    });
    assert!(n0.route_to("10.244.9.0/24").is_none());
}

/// The meta plugin's `00-plexus.conflist` on `n`: API mode through
/// `kubeconfig`, the node's overlay conflist (`cbr0`) as the cluster
/// network, no attachmentsDir files (every NAD comes from the API).
fn write_meta_conflist(n: &Node, kubeconfig: &std::path::Path) {
    let attachments = n.cni.dir.path().join("attachments");
    std::fs::create_dir_all(&attachments).unwrap();
    n.cni.write_conf(
        "00-plexus.conflist",
        &json!({"cniVersion": "1.0.0", "name": "plexus", "plugins": [{
            "type": "plexus",
            "kubeconfig": kubeconfig,
            "clusterNetwork": NETWORK,
            "confDir": n.cni.conf_dir,
            "attachmentsDir": attachments,
            "cacheDir": n.cni.dir.path().join("plexus-cache"),
            "logFile": n.cni.dir.path().join("plexus.log"),
            "logLevel": "debug"
        }]}),
    );
}

/// ADD or DEL of pod `name` (namespace default) through the meta plugin,
/// as the runtime calls it: only the pod's name in CNI_ARGS.
fn meta(n: &Node, op: &str, pod: &Netns, name: &str) -> plexus_tests::CtlOutput {
    let args = format!("K8S_POD_NAMESPACE=default;K8S_POD_NAME={name}");
    n.cni.ctl(
        &n.ns,
        op,
        "plexus",
        Some(&pod.path()),
        &[("CNI_ARGS", &args)],
    )
}

/// Two agents in Kubernetes mode against the fake API server, as deploy/'s
/// DaemonSet runs them (the ConfigMap's files, no routed pool: the overlay
/// runs; the PlexusKey CRD installed), Nodes with a podCIDR each, a
/// secondary network "data" only the API knows (a node-local bridge with
/// its host-local state in the test's directory), and the meta plugin's
/// conflist on both nodes. Each test builds its own.
struct KubeOverlay {
    agents: Vec<Daemon>,
    _dir: tempfile::TempDir,
    api: FakeApiServer,
    c: Cluster,
}

impl KubeOverlay {
    fn start() -> KubeOverlay {
        let c = Cluster::new(2);
        let api = FakeApiServer::start_at(&c.etcd_ns, ETCD_IP);
        // Nodes as the controller manager leaves them: a podCIDR each, no
        // annotations yet (plexusd writes flannel's).
        for (i, n) in c.nodes.iter().enumerate() {
            api.add_node(&n.name, &[&format!("10.244.{}.0/24", i + 1)], json!({}));
        }
        let dir = tempfile::tempdir().unwrap();
        api.add_nad(
            "default",
            "data",
            &json!({"cniVersion": "1.0.0", "name": "data", "plugins": [{
                "type": "plexus-bridge", "bridge": "cni-data0", "isGateway": true,
                "ipam": {"type": "plexus-host-local", "ranges": [[{"subnet": "10.20.0.0/24"}]],
                         "dataDir": dir.path().join("data-ipam")}}]}),
        );
        api.serve_resource(GROUP, VERSION, PLURAL, "PlexusKey");
        let conf = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p.display().to_string()
        };
        let net_conf = conf("net-conf.json", &example_network_config().to_string());
        let pools = conf("pools.json", "[]");
        let bgp = conf("bgp.json", r#"{"asn": 64512, "nodeToNodeMesh": true}"#);
        let kubeconfig = api.kubeconfig.display().to_string();
        let agents: Vec<_> = c
            .nodes
            .iter()
            .map(|n| {
                n.start_agent(
                    "kubernetes",
                    &[
                        "--kubeconfig",
                        &kubeconfig,
                        "--net-config",
                        &net_conf,
                        "--pools-file",
                        &pools,
                        "--bgp-file",
                        &bgp,
                    ],
                )
            })
            .collect();
        for n in &c.nodes {
            write_meta_conflist(n, &api.kubeconfig);
        }
        KubeOverlay {
            agents,
            _dir: dir,
            api,
            c,
        }
    }
}

#[test]
fn pods_and_nads_from_the_api_on_two_kubernetes_mode_nodes() {
    require_overlay!();
    let k = KubeOverlay::start();
    let (c, api) = (&k.c, &k.api);
    let keys: Vec<String> = api
        .objects(GROUP, VERSION, PLURAL)
        .values()
        .map(|o| o["spec"]["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys, ["/plexus/routed/bgp/config"]);

    let pods: Vec<Netns> = (0..2).map(|i| Netns::new(&format!("web{i}"))).collect();
    let mut eth0 = Vec::new();
    for (i, (n, pod)) in c.nodes.iter().zip(&pods).enumerate() {
        let name = format!("web{i}");
        api.add_pod(
            "default",
            &name,
            json!({"k8s.v1.cni.cncf.io/networks": "data"}),
        );
        let res = meta(n, "add", pod, &name).expect_success().json();
        let ips: Vec<&str> = res["ips"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["address"].as_str().unwrap())
            .collect();
        let subnet = format!("10.244.{}.", i + 1);
        assert!(ips[0].starts_with(&subnet), "{ips:?}");
        eth0.push(ips[0].split('/').next().unwrap().to_string());
        assert!(pod.addrs("net1")[0].starts_with("10.20.0."));
        // The network-status annotation, patched onto the Pod object.
        let status: Value = serde_json::from_str(
            &api.pod_annotation("default", &name, NETWORK_STATUS_ANNOTATION)
                .expect("network-status written"),
        )
        .unwrap();
        let status = status.as_array().unwrap();
        assert_eq!(status.len(), 2, "{status:?}");
        assert_eq!(
            (
                &status[0]["name"],
                &status[0]["interface"],
                &status[0]["default"]
            ),
            (&json!(NETWORK), &json!("eth0"), &json!(true))
        );
        assert_eq!(status[0]["ips"][0], json!(eth0[i]));
        assert_eq!(
            (&status[1]["name"], &status[1]["interface"]),
            (&json!("default/data"), &json!("net1"))
        );
        let reqs = api.state.lock().unwrap().requests.clone();
        for want in [
            format!("GET /api/v1/namespaces/default/pods/{name}"),
            "GET /apis/k8s.cni.cncf.io/v1/namespaces/default/network-attachment-definitions/data"
                .to_string(),
            format!("PATCH /api/v1/namespaces/default/pods/{name}/status"),
        ] {
            assert!(reqs.contains(&want), "{want} not in {reqs:?}");
        }
    }
    // Across nodes over the overlay both agents built from the Nodes.
    wait_for("web0 reaches web1 across nodes", || pods[0].ping(&eth0[1]));
    assert!(pods[1].ping(&eth0[0]));

    for (i, (n, pod)) in c.nodes.iter().zip(&pods).enumerate() {
        meta(n, "del", pod, &format!("web{i}")).expect_success();
        let left: Vec<String> = pod.links().into_iter().filter(|l| l != "lo").collect();
        assert_eq!(left, Vec::<String>::new(), "pod links left on {}", n.name);
    }
}

#[test]
fn a_deleted_node_is_forgotten_by_the_other_kubernetes_mode_node() {
    require_overlay!();
    let mut k = KubeOverlay::start();
    let c = &k.c;
    // node1 leaves the cluster: its agent stops with the machine and its
    // Node is deleted. Its lease was the Node, so node0 drops its route,
    // neighbour and FDB entries.
    let mac1 = c.nodes[1].mac("flannel.1");
    wait_for("node0 programs node1", || {
        c.nodes[0].any_vxlan_entry("flannel.1", "10.244.2.0/24", &mac1)
    });
    k.agents.pop().unwrap().stop();
    k.api.delete_node(&c.nodes[1].name);
    wait_for("node0 forgets node1", || {
        !c.nodes[0].any_vxlan_entry("flannel.1", "10.244.2.0/24", &mac1)
    });
    assert!(c.nodes[0].route_to("10.244.2.0/24").is_none());
}
