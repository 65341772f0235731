//! The `plexus` meta plugin driven through `plexusctl cni` in a node netns,
//! with the example configuration from conf/ (cluster network + NADs from
//! an attachmentsDir) and pod annotations passed as CAP_ARGS, the way
//! containerd passes `io.kubernetes.cri.pod-annotations`. Delegates are those
//! conf/ names: plexus-bridge and plexus-host-local, plus the reference
//! macvlan, ptp and portmap.

use std::path::PathBuf;

use plexus_tests::example::{localize, ExampleNode};
use plexus_tests::{require_reference_plugins, require_root, CniSandbox, CtlOutput, Netns};
use serde_json::{json, Value};

const POD_ARGS: &str = "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web";

/// A node with the example configuration installed into a sandbox.
struct Env {
    sb: CniSandbox,
    node: Netns,
    pod: Netns,
    plexus_dir: PathBuf,
    attachments: PathBuf,
    cache: PathBuf,
}

impl Env {
    fn new(extra: Value) -> Env {
        let ex = ExampleNode::new();
        ex.write_plexus_conflist(extra.as_object().unwrap());
        let ExampleNode {
            sb,
            node,
            pod,
            plexus_dir,
            attachments,
            cache,
        } = ex;
        Env {
            sb,
            node,
            pod,
            plexus_dir,
            attachments,
            cache,
        }
    }

    fn write_nad(&self, file: &str, namespace: &str, name: &str, config: Value) {
        let nad = json!({
            "apiVersion": "k8s.cni.cncf.io/v1",
            "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"config": config.to_string()}
        });
        std::fs::write(
            self.attachments.join(file),
            localize(&nad.to_string(), &self.sb),
        )
        .unwrap();
    }

    fn caps(networks: &str) -> String {
        json!({"io.kubernetes.cri.pod-annotations": {"k8s.v1.cni.cncf.io/networks": networks}})
            .to_string()
    }

    fn run(&self, op: &str, networks: &str, pod_args: &str) -> CtlOutput {
        self.sb.ctl(
            &self.node,
            op,
            "plexus",
            Some(&self.pod.path()),
            &[("CAP_ARGS", &Self::caps(networks)), ("CNI_ARGS", pod_args)],
        )
    }

    fn add(&self, networks: &str) -> CtlOutput {
        self.run("add", networks, POD_ARGS)
    }

    fn del(&self, networks: &str) -> CtlOutput {
        self.run("del", networks, POD_ARGS)
    }

    fn container_id(&self) -> String {
        // plexusctl's (cnitool's) ID for this netns path: read it back from
        // the plan file name rather than re-deriving the hash.
        let plans = CniSandbox::files_under(&self.cache.join("plans"));
        assert_eq!(plans.len(), 1, "{plans:?}");
        plans[0].strip_suffix("-eth0.json").unwrap().to_string()
    }

    fn status(&self) -> Value {
        let f = self
            .cache
            .join("status")
            .join(format!("{}-eth0.json", self.container_id()));
        serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap()
    }

    fn pod_links(&self) -> Vec<String> {
        let mut l: Vec<String> = self.pod.links().into_iter().filter(|l| l != "lo").collect();
        l.sort();
        l
    }

    fn leases(&self) -> Vec<String> {
        self.sb.leases()
    }

    /// Everything that must be gone after DEL or a rollback.
    fn assert_clean(&self) {
        assert_eq!(self.pod_links(), Vec::<String>::new(), "pod links left");
        assert_eq!(self.leases(), Vec::<String>::new(), "IPAM leases left");
        let left = CniSandbox::files_under(&self.cache);
        assert_eq!(left, Vec::<String>::new(), "plexus cache left");
        let node_veths: Vec<String> = self
            .node
            .links()
            .into_iter()
            .filter(|l| l.starts_with("veth"))
            .collect();
        assert_eq!(node_veths, Vec::<String>::new(), "node veths left");
        let macvlans: Vec<String> = self
            .node
            .ip_json(&["-d", "link", "show", "type", "macvlan"])
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["ifname"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(macvlans, Vec::<String>::new(), "macvlans left");
    }
}

const THREE: &str = r#"[
  {"name": "storage", "ips": ["192.168.50.77/24"], "mac": "02:42:c0:a8:32:4d"},
  {"name": "data", "default-route": ["10.20.0.1"]}
]"#;

fn default_routes(pod: &Netns) -> Vec<(String, String)> {
    pod.ip_json(&["-4", "route", "show", "default"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["dev"].as_str().unwrap().to_string(),
                r["gateway"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn three_networks_with_requests_and_default_route() {
    require_root!();
    require_reference_plugins!();
    let env = Env::new(json!({}));
    let res = env.add(THREE).ok().json();

    // The result is the cluster network's, in the plexus entry's version.
    assert_eq!(res["cniVersion"], "1.0.0");
    assert_eq!(res["ips"][0]["address"], "10.88.0.2/16");
    // Its default route moved to net2: not in the returned result any more.
    assert!(
        !res["routes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r["dst"] == "0.0.0.0/0"),
        "{res}"
    );

    assert_eq!(env.pod_links(), ["eth0", "net1", "net2"]);
    assert_eq!(env.pod.addrs("eth0"), ["10.88.0.2/16"]);
    // Requested IP and MAC honoured on the macvlan.
    assert_eq!(env.pod.addrs("net1"), ["192.168.50.77/24"]);
    let net1 = env.pod.ip_json(&["link", "show", "net1"]);
    assert_eq!(net1[0]["address"], "02:42:c0:a8:32:4d");
    assert_eq!(env.pod.addrs("net2"), ["10.20.0.2/24"]);
    // The default route is on net2 via the requested gateway, only there.
    assert_eq!(
        default_routes(&env.pod),
        [("net2".to_string(), "10.20.0.1".to_string())]
    );
    // Each network carries traffic between the pod and the node.
    assert!(env.pod.ping("10.88.0.1"));
    assert!(env.pod.ping("10.20.0.1"));

    // The merged status, in the network-status annotation's shape.
    let st = env.status();
    assert_eq!(st["kind"], "plexusStatusV1");
    assert_eq!(st["podNamespace"], "default");
    assert_eq!(st["podName"], "web");
    let ns = st["networkStatus"].as_array().unwrap();
    assert_eq!(ns.len(), 3);
    assert_eq!(ns[0]["name"], "cluster");
    assert_eq!(ns[0]["interface"], "eth0");
    assert_eq!(ns[0]["default"], true);
    assert_eq!(ns[0]["ips"], json!(["10.88.0.2"]));
    assert_eq!(ns[1]["name"], "default/storage");
    assert_eq!(ns[1]["interface"], "net1");
    assert_eq!(ns[1]["ips"], json!(["192.168.50.77"]));
    assert_eq!(ns[1]["mac"], "02:42:c0:a8:32:4d");
    assert_eq!(ns[2]["name"], "default/data");
    assert_eq!(ns[2]["interface"], "net2");
    assert_eq!(ns[2]["gateway"], json!(["10.20.0.1"]));

    // The plan names every delegate with its full config and requests.
    let plan: Value = serde_json::from_slice(
        &std::fs::read(
            env.cache
                .join("plans")
                .join(format!("{}-eth0.json", env.container_id())),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(plan["kind"], "plexusPlanV1");
    assert_eq!(
        plan["attachments"][1]["capabilityArgs"]["mac"],
        "02:42:c0:a8:32:4d"
    );
    assert_eq!(plan["attachments"][2]["config"]["name"], "data");

    env.sb
        .ctl(&env.node, "check", "plexus", Some(&env.pod.path()), &[])
        .ok();

    env.del(THREE).ok();
    env.assert_clean();
    // DEL twice is fine (the runtime may retry).
    env.del(THREE).ok();
}

/// Addresses, interfaces and status names of a fresh sandbox's ADD.
fn scenario(parallel: bool) -> (Value, Vec<(String, Vec<String>)>, Value) {
    let env = Env::new(json!({"parallelSecondary": parallel, "defaultNetworks": []}));
    env.write_nad(
        "extra.json",
        "default",
        "extra",
        json!({"cniVersion": "1.0.0", "type": "ptp", "ipam": {"type": "host-local",
               "subnet": "10.40.0.0/24", "dataDir": "/var/lib/cni/networks"}}),
    );
    let res = env
        .add(r#"[{"name":"storage"},{"name":"data","interface":"data0"},{"name":"extra"}]"#)
        .ok()
        .json();
    let addrs = env
        .pod_links()
        .into_iter()
        .map(|l| {
            let a = env.pod.addrs(&l);
            (l, a)
        })
        .collect();
    let mut st = env.status()["networkStatus"].clone();
    for s in st.as_array_mut().unwrap() {
        s.as_object_mut().unwrap().remove("mac");
    }
    env.del("").ok();
    env.assert_clean();
    let mut res = res;
    res.as_object_mut().unwrap().remove("interfaces");
    (res, addrs, st)
}

#[test]
fn parallel_secondaries_give_the_same_result() {
    require_root!();
    require_reference_plugins!();
    let seq = scenario(false);
    let par = scenario(true);
    assert_eq!(seq, par);
    let names: Vec<&str> = seq.1.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(names, ["data0", "eth0", "net1", "net3"]);
}

#[test]
fn failing_third_delegate_rolls_back_the_first_two() {
    require_root!();
    require_reference_plugins!();
    for parallel in [false, true] {
        let env = Env::new(json!({"parallelSecondary": parallel}));
        // Its first plugin creates a veth and takes a lease, then the
        // second fails: the rollback must undo the failed delegate's half
        // too, and the two before it.
        let broken = json!({"cniVersion": "1.0.0", "name": "broken", "plugins": [
            {"type": "bridge", "bridge": "cni-broken0",
             "ipam": {"type": "host-local", "subnet": "10.50.0.0/24",
                      "dataDir": "/var/lib/cni/networks"}},
            {"type": "tuning", "sysctl": {"net.core.no_such_key": "1"}}
        ]});
        std::fs::write(
            env.attachments.join("broken.yaml"),
            localize(
                &format!(
                    "kind: NetworkAttachmentDefinition\nmetadata:\n  name: broken\nspec:\n  config: '{broken}'\n"
                ),
                &env.sb,
            ),
        )
        .unwrap();
        let err = env.add("storage,data,broken").err();
        let msg = err["msg"].as_str().unwrap();
        assert!(
            msg.contains("default/broken") && msg.contains("net3"),
            "{err}"
        );
        env.assert_clean();
    }
}

#[test]
fn del_after_the_nads_are_deleted_still_cleans_up() {
    require_root!();
    require_reference_plugins!();
    let env = Env::new(json!({}));
    env.add("storage,data").ok();
    assert_eq!(env.pod_links(), ["eth0", "net1", "net2"]);
    std::fs::remove_dir_all(&env.attachments).unwrap();
    std::fs::remove_dir_all(&env.plexus_dir).unwrap();
    // The pod's annotations are gone too.
    env.run("del", "", "").ok();
    env.assert_clean();
}

#[test]
fn del_with_the_pod_netns_gone() {
    require_root!();
    require_reference_plugins!();
    let env = Env::new(json!({}));
    env.add("storage,data").ok();
    let path = env.pod.path();
    let Env {
        sb,
        node,
        pod,
        cache,
        ..
    } = env;
    drop(pod);
    assert!(!path.exists());
    sb.ctl(
        &node,
        "del",
        "plexus",
        Some(&path),
        &[("CNI_ARGS", POD_ARGS)],
    )
    .ok();
    assert_eq!(CniSandbox::files_under(&cache), Vec::<String>::new());
    let leases: Vec<String> = CniSandbox::files_under(&sb.data_dir)
        .into_iter()
        .filter(|f| {
            f.rsplit('/')
                .next()
                .unwrap()
                .parse::<std::net::IpAddr>()
                .is_ok()
        })
        .collect();
    assert_eq!(leases, Vec::<String>::new());
}

#[test]
fn corrupt_plan_cache_does_not_block_del() {
    require_root!();
    require_reference_plugins!();
    let env = Env::new(json!({}));
    env.add("storage,data@fast0").ok();
    let plan = env
        .cache
        .join("plans")
        .join(format!("{}-eth0.json", env.container_id()));
    std::fs::write(&plan, b"{\"kind\": \"plexusPlanV1\", trunc").unwrap();
    // With the NADs gone as well, only the delegates' own result cache
    // still knows net1 and fast0.
    std::fs::remove_dir_all(&env.attachments).unwrap();
    env.run("del", "", "").ok();
    env.assert_clean();
}

#[test]
fn namespace_isolation_is_enforced() {
    require_root!();
    require_reference_plugins!();
    let env = Env::new(json!({}));
    let team_a = "K8S_POD_NAMESPACE=team-a;K8S_POD_NAME=api";
    // Own namespace and the global "default" namespace are allowed.
    env.run("add", "backend,default/data", team_a).ok();
    assert_eq!(env.pod_links(), ["eth0", "net1", "net2"]);
    env.run("del", "backend,default/data", team_a).ok();
    env.assert_clean();
    // A pod in default may not use team-a's network.
    let err = env.add("team-a/backend").err();
    assert_eq!(err["code"], 7);
    assert!(
        err["msg"]
            .as_str()
            .unwrap()
            .contains("namespace isolation: pod default/web may not use network team-a/backend"),
        "{err}"
    );
    env.assert_clean();
}

#[test]
fn bad_annotations_are_rejected_before_anything_is_created() {
    require_root!();
    require_reference_plugins!();
    let env = Env::new(json!({}));
    for (bad, says) in [
        ("storage,Data", "\"Data\" is not a valid name"),
        ("default/storage/x", "more than one '/'"),
        ("storage@has space", "invalid interface name"),
        (
            r#"[{"name":"storage","ips":["192.168.50.300"]}]"#,
            "invalid IP address \"192.168.50.300\"",
        ),
        (
            r#"[{"name":"storage","ips":["192.168.50.3/40"]}]"#,
            "invalid CIDR",
        ),
        (
            r#"[{"name":"storage","mac":"02:42:zz:00:00:01"}]"#,
            "invalid MAC address",
        ),
        (r#"[{"name":"storage","#, "not a valid JSON list"),
        (
            "storage@net5,data@net5",
            "interface name net5 is used by more than one network",
        ),
        (
            "storage@eth0",
            "interface name eth0 is used by more than one network",
        ),
        (
            "nosuchnet",
            "cannot find a network-attachment-definition (nosuchnet)",
        ),
    ] {
        let err = env.add(bad).err();
        assert_eq!(err["code"], 7, "{bad}: {err}");
        let msg = err["msg"].as_str().unwrap();
        assert!(msg.contains(says), "{bad}: {msg}");
        env.assert_clean();
    }
}

#[test]
fn readiness_indicator_file_gates_add() {
    require_root!();
    require_reference_plugins!();
    let env = Env::new(json!({}));
    let ready = env.sb.dir.path().join("ready");
    let env = {
        let mut conf: Value = serde_json::from_slice(
            &std::fs::read(env.sb.conf_dir.join("00-plexus.conflist")).unwrap(),
        )
        .unwrap();
        conf["plugins"][0]["readinessindicatorfile"] = json!(ready);
        env.sb.write_conf("00-plexus.conflist", &conf);
        env
    };
    let err = env.add("storage").err();
    assert_eq!(err["code"], 11, "{err}");
    env.assert_clean();
    std::fs::write(&ready, "").unwrap();
    env.add("storage").ok();
    env.del("storage").ok();
    env.assert_clean();
}
