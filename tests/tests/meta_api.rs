//! The `plexus` meta plugin in Kubernetes API mode: `kubeconfig` points at
//! the API stand-in (tests/src/apiserver.rs), listening on the node
//! namespace's loopback where plexusctl and the plugin run. Pods and NADs
//! come from it, the network-status annotation goes to it; the real kube
//! client talks to it. Delegates are those conf/ names (plexus-bridge,
//! plexus-host-local, the reference macvlan, ptp and portmap).

use std::path::PathBuf;

use plexus_k8s::NETWORK_STATUS_ANNOTATION;
use plexus_tests::apiserver::FakeApiServer;
use plexus_tests::example::{localize, ExampleNode};
use plexus_tests::{require_reference_plugins, require_root, CniSandbox, CtlOutput, Netns};
use serde_json::{json, Value};

const POD_ARGS: &str = "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web";
const POD_GET: &str = "GET /api/v1/namespaces/default/pods/web";
const STATUS_PATCH: &str = "PATCH /api/v1/namespaces/default/pods/web/status";

/// Rewrites the stand-in's kubeconfig text.
type EditKubeconfig = dyn Fn(&FakeApiServer, String) -> String;

/// A node with the example configuration (cluster network in confDir, the
/// example NADs in attachmentsDir) plus `kubeconfig` for the API stand-in.
/// Everything is dropped (namespaces deleted) on failure too.
struct Env {
    api: FakeApiServer,
    sb: CniSandbox,
    node: Netns,
    pod: Netns,
    attachments: PathBuf,
    cache: PathBuf,
}

impl Env {
    fn new() -> Env {
        Self::with_kubeconfig(None)
    }

    /// `kubeconfig`: a replacement for the stand-in's (wrong token, port).
    fn with_kubeconfig(edit: Option<&EditKubeconfig>) -> Env {
        let ex = ExampleNode::new();
        let api = FakeApiServer::start_in(&ex.node);
        let kubeconfig = match edit {
            None => api.kubeconfig.clone(),
            Some(edit) => {
                let p = ex.sb.dir.path().join("kubeconfig-edited");
                let text = std::fs::read_to_string(&api.kubeconfig).unwrap();
                std::fs::write(&p, edit(&api, text)).unwrap();
                p
            }
        };
        let mut extra = serde_json::Map::new();
        extra.insert("kubeconfig".into(), json!(kubeconfig));
        ex.write_plexus_conflist(&extra);
        let ExampleNode {
            sb,
            node,
            pod,
            attachments,
            cache,
            ..
        } = ex;
        Env {
            api,
            sb,
            node,
            pod,
            attachments,
            cache,
        }
    }

    /// A NAD served by the API (not in attachmentsDir).
    fn api_nad(&self, namespace: &str, name: &str, config: Value) {
        let config: Value = serde_json::from_str(&localize(&config.to_string(), &self.sb)).unwrap();
        self.api.add_nad(namespace, name, &config);
    }

    /// plexusctl with the pod's CNI_ARGS and, if given, the runtime's
    /// annotations capability.
    fn run(&self, op: &str, cri_networks: Option<&str>) -> CtlOutput {
        let caps = cri_networks.map(|n| {
            json!({"io.kubernetes.cri.pod-annotations": {"k8s.v1.cni.cncf.io/networks": n}})
                .to_string()
        });
        let mut env = vec![("CNI_ARGS", POD_ARGS)];
        if let Some(c) = &caps {
            env.push(("CAP_ARGS", c));
        }
        self.sb
            .ctl(&self.node, op, "plexus", Some(&self.pod.path()), &env)
    }

    fn requests(&self) -> Vec<String> {
        self.api.state.lock().unwrap().requests.clone()
    }

    fn pod_links(&self) -> Vec<String> {
        let mut l: Vec<String> = self.pod.links().into_iter().filter(|l| l != "lo").collect();
        l.sort();
        l
    }

    fn mac(&self, dev: &str) -> String {
        self.pod.ip_json(&["link", "show", dev])[0]["address"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn leases(&self) -> Vec<String> {
        self.sb.leases()
    }

    fn assert_clean(&self) {
        assert_eq!(self.pod_links(), Vec::<String>::new(), "pod links left");
        assert_eq!(self.leases(), Vec::<String>::new(), "IPAM leases left");
        assert_eq!(
            CniSandbox::files_under(&self.cache),
            Vec::<String>::new(),
            "plexus cache left"
        );
        let veths: Vec<String> = self
            .node
            .links()
            .into_iter()
            .filter(|l| l.starts_with("veth"))
            .collect();
        assert_eq!(veths, Vec::<String>::new(), "node veths left");
        let macvlans = self
            .node
            .ip_json(&["-d", "link", "show", "type", "macvlan"]);
        assert_eq!(macvlans, json!([]), "macvlans left");
    }

    fn status_file(&self) -> Value {
        let files = CniSandbox::files_under(&self.cache.join("status"));
        assert_eq!(files.len(), 1, "{files:?}");
        serde_json::from_slice(&std::fs::read(self.cache.join("status").join(&files[0])).unwrap())
            .unwrap()
    }

    fn network_status(&self) -> Value {
        let s = self
            .api
            .pod_annotation("default", "web", NETWORK_STATUS_ANNOTATION)
            .expect("network-status annotation written");
        serde_json::from_str(&s).unwrap()
    }
}

/// A ptp network only the API knows.
fn apinet() -> Value {
    json!({"cniVersion": "1.0.0", "type": "ptp", "ipMasq": false,
           "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.60.0.0/24"}]],
                    "dataDir": "/var/lib/cni/networks"}})
}

#[test]
fn pod_and_nads_from_the_api_and_network_status_written() {
    require_root!();
    require_reference_plugins!();
    let env = Env::new();
    env.api.add_pod(
        "default",
        "web",
        json!({"k8s.v1.cni.cncf.io/networks":
            r#"[{"name":"apinet"},{"name":"storage","mac":"02:42:c0:a8:32:4e"}]"#}),
    );
    env.api_nad("default", "apinet", apinet());

    // No CAP_ARGS: the annotations must come from the API.
    let res = env.run("add", None).expect_success().json();
    assert_eq!(res["ips"][0]["address"], "10.88.0.2/16");
    assert_eq!(env.pod_links(), ["eth0", "net1", "net2"]);
    // apinet from the API, storage from attachmentsDir (the API said 404).
    assert_eq!(env.pod.addrs("net1"), ["10.60.0.2/24"]);
    let storage_ip = env.pod.addrs("net2");
    assert!(storage_ip[0].starts_with("192.168.50."), "{storage_ip:?}");
    assert_eq!(env.mac("net2"), "02:42:c0:a8:32:4e");
    assert!(env.pod.ping("10.60.0.1"));

    let reqs = env.requests();
    for r in [
        POD_GET,
        "GET /apis/k8s.cni.cncf.io/v1/namespaces/default/network-attachment-definitions/apinet",
        "GET /apis/k8s.cni.cncf.io/v1/namespaces/default/network-attachment-definitions/storage",
        STATUS_PATCH,
    ] {
        assert!(reqs.iter().any(|q| q == r), "{r} not in {reqs:?}");
    }
    assert_eq!(reqs.iter().filter(|q| *q == POD_GET).count(), 1);

    // The network-status annotation on the pod.
    let ns = env.network_status();
    let ns = ns.as_array().unwrap();
    assert_eq!(ns.len(), 3, "{ns:?}");
    assert_eq!(ns[0]["name"], "cluster");
    assert_eq!(ns[0]["interface"], "eth0");
    assert_eq!(ns[0]["ips"], json!(["10.88.0.2"]));
    assert_eq!(ns[0]["mac"], env.mac("eth0"));
    assert_eq!(ns[0]["default"], true);
    assert_eq!(ns[1]["name"], "default/apinet");
    assert_eq!(ns[1]["interface"], "net1");
    assert_eq!(ns[1]["ips"], json!(["10.60.0.2"]));
    assert_eq!(ns[1]["mac"], env.mac("net1"));
    assert!(ns[1].get("default").is_none(), "{}", ns[1]);
    assert_eq!(ns[2]["name"], "default/storage");
    assert_eq!(ns[2]["interface"], "net2");
    assert_eq!(
        ns[2]["ips"],
        json!([storage_ip[0].split('/').next().unwrap()])
    );
    assert_eq!(ns[2]["mac"], "02:42:c0:a8:32:4e");
    // The other annotations survived, and the status file says the same.
    assert!(env
        .api
        .pod_annotation("default", "web", "k8s.v1.cni.cncf.io/networks")
        .is_some());
    let st = env.status_file();
    assert_eq!(st["networkStatus"], Value::Array(ns.clone()));
    assert_eq!(st["podName"], "web");

    // The pod and every NAD vanish from the API (and the NAD files too):
    // DEL works from the plan cache, without asking the API anything.
    env.api.remove_pod("default", "web");
    env.api
        .delete_all("network-attachment-definitions.k8s.cni.cncf.io");
    std::fs::remove_dir_all(&env.attachments).unwrap();
    let before = env.requests().len();
    env.run("del", None).expect_success();
    env.assert_clean();
    assert_eq!(env.requests()[before..], [] as [String; 0]);
    env.run("del", None).expect_success();
}

#[test]
fn runtime_annotations_take_precedence_over_the_api() {
    require_root!();
    require_reference_plugins!();
    let env = Env::new();
    // The API's pod asks for apinet; the runtime's annotations for data.
    env.api.add_pod(
        "default",
        "web",
        json!({"k8s.v1.cni.cncf.io/networks": "apinet"}),
    );
    env.api_nad("default", "apinet", apinet());
    env.run("add", Some("data")).expect_success();
    assert_eq!(env.pod_links(), ["eth0", "net1"]);
    assert_eq!(env.pod.addrs("net1"), ["10.20.0.2/24"]);
    let reqs = env.requests();
    assert!(!reqs.iter().any(|q| q == POD_GET), "{reqs:?}");
    assert!(reqs.iter().any(|q| q == STATUS_PATCH), "{reqs:?}");
    let ns = env.network_status();
    assert_eq!(ns[1]["name"], "default/data");
    assert_eq!(ns[1]["interface"], "net1");
    env.run("del", Some("data")).expect_success();
    env.assert_clean();
}

#[test]
fn pod_not_in_the_api_is_an_error_and_nothing_is_created() {
    require_root!();
    require_reference_plugins!();
    let env = Env::new();
    let err = env.run("add", None).err();
    assert_eq!(err["code"], 7, "{err}");
    let msg = err["msg"].as_str().unwrap();
    assert!(
        msg.contains("pod default/web") && msg.contains("not found in the Kubernetes API"),
        "{err}"
    );
    env.assert_clean();
    // DEL of what was never added is fine, API or not.
    env.run("del", None).expect_success();
}

#[test]
fn failing_status_write_rolls_the_add_back() {
    require_root!();
    require_reference_plugins!();
    let env = Env::new();
    // The runtime passes the annotations, so nothing GETs the pod; the
    // pod is gone by the time the status is written (PATCH answers 404).
    let err = env.run("add", Some("data")).err();
    let msg = err["msg"].as_str().unwrap();
    assert!(msg.contains("network-status"), "{err}");
    assert!(msg.contains("404") || msg.contains("not found"), "{err}");
    env.assert_clean();
}

#[test]
fn unauthorized_or_unreachable_api_is_a_clear_error() {
    require_root!();
    require_reference_plugins!();
    let env = Env::with_kubeconfig(Some(&|api, text| text.replace(&api.token, "wrong")));
    env.api.add_pod("default", "web", json!({}));
    let err = env.run("add", None).err();
    assert_eq!(err["code"], 7, "{err}");
    let msg = err["msg"].as_str().unwrap();
    assert!(msg.contains("get pod default/web"), "{err}");
    assert!(msg.contains("401") || msg.contains("Unauthorized"), "{err}");
    env.assert_clean();

    // Nothing listens on that port: try again later.
    let env = Env::with_kubeconfig(Some(&|api, text| {
        text.replace(&format!("127.0.0.1:{}", api.port), "127.0.0.1:1")
    }));
    let err = env.run("add", None).err();
    assert_eq!(err["code"], 11, "{err}");
    assert!(
        err["msg"].as_str().unwrap().contains("get pod default/web"),
        "{err}"
    );
    env.assert_clean();
}

#[test]
fn del_without_a_plan_and_without_the_pod_still_cleans_up() {
    require_root!();
    require_reference_plugins!();
    let env = Env::new();
    env.api.add_pod(
        "default",
        "web",
        json!({"k8s.v1.cni.cncf.io/networks": "apinet,data"}),
    );
    env.api_nad("default", "apinet", apinet());
    env.run("add", None).expect_success();
    assert_eq!(env.pod_links(), ["eth0", "net1", "net2"]);
    // Plan lost, pod and NADs gone from the API: DEL asks the API, hears
    // NotFound, and deletes what the delegates' result cache remembers.
    std::fs::remove_dir_all(env.cache.join("plans")).unwrap();
    env.api.remove_pod("default", "web");
    env.api
        .delete_all("network-attachment-definitions.k8s.cni.cncf.io");
    env.run("del", None).expect_success();
    env.assert_clean();
}

#[test]
fn names_that_are_not_kubernetes_names_never_reach_the_api() {
    require_root!();
    require_reference_plugins!();
    let env = Env::new();
    for bad in [
        r#"[{"name":".."}]"#,
        r#"[{"name":"apinet?watch=true"}]"#,
        r#"[{"name":"a%2Fb"}]"#,
        r#"[{"name":"apinet","namespace":".."}]"#,
        r#"[{"name":"apinet","namespace":"default?x=1"}]"#,
    ] {
        let before = env.requests().len();
        let err = env.run("add", Some(bad)).err();
        assert_eq!(err["code"], 7, "{bad}: {err}");
        assert_eq!(env.requests()[before..], [] as [String; 0], "{bad}");
        env.assert_clean();
    }
    // The pod's own name from CNI_ARGS goes into the pod GET's URL.
    let before = env.requests().len();
    let out = env.sb.ctl(
        &env.node,
        "add",
        "plexus",
        Some(&env.pod.path()),
        &[(
            "CNI_ARGS",
            "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web%2F..%2Fx",
        )],
    );
    let err = out.err();
    assert_eq!(err["code"], 7, "{err}");
    assert!(
        err["msg"].as_str().unwrap().contains("K8S_POD_NAME"),
        "{err}"
    );
    assert_eq!(env.requests()[before..], [] as [String; 0]);
    env.assert_clean();
}
