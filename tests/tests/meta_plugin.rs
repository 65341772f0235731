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
    let res = env.add(THREE).expect_success().json();

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
        .expect_success();

    env.del(THREE).expect_success();
    env.assert_clean();
    // DEL twice is fine (the runtime may retry).
    env.del(THREE).expect_success();
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
        .expect_success()
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
    env.del("").expect_success();
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
    env.add("storage,data").expect_success();
    assert_eq!(env.pod_links(), ["eth0", "net1", "net2"]);
    std::fs::remove_dir_all(&env.attachments).unwrap();
    std::fs::remove_dir_all(&env.plexus_dir).unwrap();
    // The pod's annotations are gone too.
    env.run("del", "", "").expect_success();
    env.assert_clean();
}

#[test]
fn del_with_the_pod_netns_gone() {
    require_root!();
    require_reference_plugins!();
    let env = Env::new(json!({}));
    env.add("storage,data").expect_success();
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
    .expect_success();
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
    env.add("storage,data@fast0").expect_success();
    let plan = env
        .cache
        .join("plans")
        .join(format!("{}-eth0.json", env.container_id()));
    std::fs::write(&plan, b"{\"kind\": \"plexusPlanV1\", trunc").unwrap();
    // With the NADs gone as well, only the delegates' own result cache
    // still knows net1 and fast0.
    std::fs::remove_dir_all(&env.attachments).unwrap();
    env.run("del", "", "").expect_success();
    env.assert_clean();
}

#[test]
fn namespace_isolation_is_enforced() {
    require_root!();
    require_reference_plugins!();
    let env = Env::new(json!({}));
    let team_a = "K8S_POD_NAMESPACE=team-a;K8S_POD_NAME=api";
    // Own namespace and the global "default" namespace are allowed.
    env.run("add", "backend,default/data", team_a)
        .expect_success();
    assert_eq!(env.pod_links(), ["eth0", "net1", "net2"]);
    env.run("del", "backend,default/data", team_a)
        .expect_success();
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
    env.add("storage").expect_success();
    env.del("storage").expect_success();
    env.assert_clean();
}

impl Env {
    /// Set `key` on the plexus entry of the installed conflist.
    fn set_key(&self, key: &str, value: Value) {
        let path = self.sb.conf_dir.join("00-plexus.conflist");
        let mut conf: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        conf["plugins"][0][key] = value;
        self.sb.write_conf("00-plexus.conflist", &conf);
    }

    /// A test plugin `name` (a shell script) in the entry's `binDir`.
    fn plugin_script(&self, name: &str, body: &str) {
        use std::os::unix::fs::PermissionsExt;
        let bin = self.sb.dir.path().join("test-bin");
        std::fs::create_dir_all(&bin).unwrap();
        let p = bin.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        self.set_key("binDir", json!(bin));
    }

    /// ADD fails with `code` and a message containing `says`, nothing is
    /// left, and DEL (the runtime's clean-up) succeeds and leaves nothing.
    fn add_fails_and_del_cleans(&self, networks: &str, code: u64, says: &str) {
        let err = self.add(networks).err();
        assert_eq!(err["code"], code, "{networks}: {err}");
        let msg = err["msg"].as_str().unwrap();
        assert!(msg.contains(says), "{networks}: {msg}");
        self.assert_clean();
        self.del(networks).expect_success();
        self.assert_clean();
    }
}

/// A plugin that answers every command with an error.
const BROKEN_PLUGIN: &str = r#"cat >/dev/null; echo '{"cniVersion":"1.0.0","code":100,"msg":"broken for every command"}'; exit 1"#;

#[test]
fn a_failed_add_never_makes_del_fail() {
    require_root!();
    require_reference_plugins!();
    let env = Env::new(json!({}));
    // Refused while planning: nothing runs.
    env.add_fails_and_del_cleans(
        r#"[{"name":"storage","mac":"01:00:5e:00:00:01"}]"#,
        7,
        "multicast",
    );
    env.add_fails_and_del_cleans(
        r#"[{"name":"data","cni-args":{"ips":"10.20.0.9"}}]"#,
        7,
        "cni-args \"ips\"",
    );
    env.add_fails_and_del_cleans(
        r#"[{"name":"data","cni-args":{"ips":["10.20.0.300"]}}]"#,
        7,
        "invalid IP address",
    );
    // A network name too long for the delegate result cache (its file name
    // is network-containerID-ifname; plexusctl's IDs have 28 characters,
    // kubelet's 64): refused before the delegate runs, which then made it
    // impossible to roll back.
    let long = "n".repeat(230);
    env.write_nad(
        "long.json",
        "default",
        "long",
        json!({"cniVersion": "1.0.0", "name": long, "type": "ptp",
               "ipam": {"type": "plexus-host-local", "subnet": "10.41.0.0/24",
                        "dataDir": "/var/lib/cni/networks"}}),
    );
    env.add_fails_and_del_cleans("storage,long", 7, "more than 255");
    // A delegate that fails ADD and DEL alike: the rollback deletes the
    // others and ignores its DEL; the runtime's DEL, without a plan, must
    // not fail on it either.
    env.plugin_script("broken", BROKEN_PLUGIN);
    env.write_nad(
        "broken.json",
        "default",
        "broken",
        json!({"cniVersion": "1.0.0", "type": "broken"}),
    );
    env.add_fails_and_del_cleans("storage,broken", 100, "broken for every command");
    env.add_fails_and_del_cleans("broken", 100, "broken for every command");
}

#[test]
fn a_second_add_leaves_the_first_attachment_alone() {
    require_root!();
    require_reference_plugins!();
    let env = Env::new(json!({}));
    env.add("storage").expect_success();
    let links = env.pod_links();
    let leases = env.leases();
    assert_eq!(links, ["eth0", "net1"]);
    let err = env.add("storage").err();
    assert_eq!(err["code"], 7, "{err}");
    assert!(
        err["msg"].as_str().unwrap().contains("already attached"),
        "{err}"
    );
    // Nothing of the first ADD was rolled back.
    assert_eq!(env.pod_links(), links);
    assert_eq!(env.leases(), leases);
    assert!(env.pod.ping("10.88.0.1"));
    env.del("storage").expect_success();
    env.assert_clean();
}

#[test]
fn silently_ignored_requests_are_refused() {
    require_root!();
    require_reference_plugins!();
    let env = Env::new(json!({}));
    // A NAD whose plugins do not take the ips capability can receive one
    // address (CNI_ARGS IP), not two.
    env.write_nad(
        "plain.json",
        "default",
        "plain",
        json!({"cniVersion": "1.0.0", "type": "ptp",
               "ipam": {"type": "plexus-host-local", "subnet": "10.42.0.0/24",
                        "dataDir": "/var/lib/cni/networks"}}),
    );
    env.add_fails_and_del_cleans(
        r#"[{"name":"plain","ips":["10.42.0.7/24","10.42.0.8/24"]}]"#,
        7,
        "\"ips\" capability",
    );
    env.add(r#"[{"name":"plain","ips":["10.42.0.7/24"]}]"#)
        .expect_success();
    assert_eq!(env.pod.addrs("net1"), ["10.42.0.7/24"]);
    env.del("").expect_success();
    env.assert_clean();
    // Inline delegates that are not network configurations.
    for bad in [json!([5]), json!(["x"]), json!([{"cniVersion": "1.0.0"}])] {
        env.set_key("delegates", bad.clone());
        let err = env.add("").err();
        assert_eq!(err["code"], 7, "{bad}: {err}");
        assert!(
            err["msg"].as_str().unwrap().contains("delegates[0]"),
            "{err}"
        );
        env.assert_clean();
    }
}

#[test]
fn config_and_manifest_files_are_read_bounded() {
    require_root!();
    require_reference_plugins!();
    let env = Env::new(json!({}));
    // A FIFO (no writer: reading it would hang) and /dev/zero (reading it
    // never ends) among the manifests and in confDir must be skipped.
    for dir in [&env.attachments, &env.plexus_dir] {
        let fifo = dir.join("00-fifo.yaml");
        plexus_tests::run_ok(std::process::Command::new("mkfifo").arg(&fifo));
        std::os::unix::fs::symlink("/dev/zero", dir.join("00-zero.json")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.join("00-zero.conflist")).unwrap();
    }
    env.add("storage").expect_success();
    assert_eq!(env.pod_links(), ["eth0", "net1"]);
    env.del("storage").expect_success();
    env.assert_clean();
}

#[test]
fn cache_dir_must_be_absolute_and_stale_temporaries_go() {
    require_root!();
    require_reference_plugins!();
    let env = Env::new(json!({}));
    for bad in ["", "relative/cache"] {
        env.set_key("cacheDir", json!(bad));
        let err = env.add("storage").err();
        assert_eq!(err["code"], 7, "{bad:?}: {err}");
        assert!(err["msg"].as_str().unwrap().contains("cacheDir"), "{err}");
        env.assert_clean();
    }
    env.set_key("cacheDir", json!(env.cache));
    // What a plugin killed between create and rename left, long ago.
    let plans = env.cache.join("plans");
    std::fs::create_dir_all(&plans).unwrap();
    // Ours, and the `.<name>.tmp.<pid>` of the writer before it.
    let stale = [
        plans.join(".plexus-tmp.c-eth0.json.1.0"),
        plans.join(".c-eth0.json.tmp.4242"),
    ];
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for f in &stale {
        std::fs::write(f, "{").unwrap();
        std::fs::File::options()
            .write(true)
            .open(f)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    env.add("storage").expect_success();
    env.del("storage").expect_success();
    for f in &stale {
        assert!(!f.exists(), "{} left", f.display());
    }
    env.assert_clean();
}

#[test]
fn state_directories_planted_as_links_or_given_away_are_refused() {
    require_root!();
    require_reference_plugins!();
    let env = Env::new(json!({}));
    let elsewhere = env.cache.parent().unwrap().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    // A plan someone else wrote behind the link: it must never be run.
    std::fs::write(elsewhere.join("planted.json"), "{}").unwrap();
    let refused = |what: &str, path: &std::path::Path, why: &str| {
        // (CHECK stops at plexusctl's own result cache: nothing was added.)
        for op in ["add", "del"] {
            let err = env.run(op, "storage", POD_ARGS).err();
            assert_eq!(err["code"], 5, "{what} {op}: {err}");
            let msg = err["msg"].as_str().unwrap();
            assert!(
                msg.contains(&path.display().to_string()),
                "{what} {op}: {msg}"
            );
            assert!(msg.contains(why), "{what} {op}: {msg}");
        }
        assert_eq!(env.pod_links(), Vec::<String>::new(), "{what}: pod links");
        assert_eq!(env.leases(), Vec::<String>::new(), "{what}: leases");
        assert_eq!(
            CniSandbox::files_under(&elsewhere),
            ["planted.json"],
            "{what}: written through the link"
        );
    };
    for sub in ["plans", "status", "locks", "delegates", "delegates/results"] {
        let link = env.cache.join(sub);
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
        refused(sub, &link, "symbolic link");
        std::fs::remove_file(&link).unwrap();
    }
    let plans = env.cache.join("plans");
    std::fs::create_dir_all(&plans).unwrap();
    std::os::unix::fs::chown(&plans, Some(65534), Some(65534)).unwrap();
    refused("plans of uid 65534", &plans, "uid 65534");
    std::os::unix::fs::chown(&plans, Some(0), Some(0)).unwrap();
    // Repaired, the same cache works.
    env.add("storage").expect_success();
    env.del("storage").expect_success();
    env.assert_clean();
}

/// Wait (without a time limit that could pass a test) for `cond`; a guard
/// against hanging forever fails the test after a generous while.
fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(120),
            "gave up waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Running, not gone and not a zombie waiting for a parent to reap it.
fn pid_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // The state follows the command name in parentheses.
            let state = s.rsplit_once(')')?.1.trim_start().chars().next()?;
            Some(state != 'Z' && state != 'X')
        })
        .unwrap_or(false)
}

fn read_pid(path: &std::path::Path) -> i32 {
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Kills (SIGKILL) the processes whose pids the files name, if still there.
struct KillOnDrop(Vec<std::path::PathBuf>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for f in &self.0 {
            let Some(pid) = std::fs::read_to_string(f)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
            else {
                continue;
            };
            if pid_alive(pid) {
                // SAFETY: kill(2) on a pid a process of this test recorded.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

#[test]
fn del_waits_for_the_delegates_of_a_killed_add() {
    require_root!();
    require_reference_plugins!();
    let env = Env::new(json!({}));
    let state = env.sb.dir.path().join("slow-state");
    std::fs::create_dir_all(&state).unwrap();
    let s = state.display();
    // ADD hands its work to a child that outlives the plugin (as an IPAM
    // call does) and waits for it; the child "takes a lease" only when the
    // test says so. DEL gives the lease back.
    env.plugin_script(
        "slowpoke",
        &format!(
            r#"cat >/dev/null
case "$CNI_COMMAND" in
ADD)
  echo $PPID > {s}/meta.tmp && mv {s}/meta.tmp {s}/meta.pid
  ( while [ ! -e {s}/go ]; do [ -d {s} ] || exit 0; sleep 0.02; done; touch {s}/lease-$CNI_CONTAINERID ) &
  echo $! > {s}/worker.tmp && mv {s}/worker.tmp {s}/worker.pid
  wait
  printf '{{"cniVersion":"1.0.0","interfaces":[{{"name":"%s","sandbox":"%s"}}]}}' "$CNI_IFNAME" "$CNI_NETNS"
  ;;
DEL)
  rm -f {s}/lease-$CNI_CONTAINERID
  ;;
esac"#
        ),
    );
    env.write_nad(
        "slow.json",
        "default",
        "slow",
        json!({"cniVersion": "1.0.0", "type": "slowpoke"}),
    );
    let log = env.sb.dir.path().join("plexus.log");
    // If the test fails half-way, the processes it started must not live on.
    let _reap = KillOnDrop(vec![state.join("meta.pid"), state.join("worker.pid")]);
    std::thread::scope(|scope| {
        let add = scope.spawn(|| env.add("storage,slow"));
        wait_for("the slow delegate's worker", || {
            state.join("worker.pid").exists() && state.join("meta.pid").exists()
        });
        // The runtime's timeout: kill -9 of the meta plugin mid-ADD.
        let meta = read_pid(&state.join("meta.pid"));
        // SAFETY: kill(2) on a pid we read from the plugin it started.
        assert_eq!(unsafe { libc::kill(meta, libc::SIGKILL) }, 0);
        let out = add.join().unwrap();
        assert!(!out.success, "ADD of a killed plugin succeeded");
        let worker = read_pid(&state.join("worker.pid"));
        assert!(pid_alive(worker), "the worker must outlive the plugin");

        // The runtime's DEL comes while the worker still runs: it must wait
        // for it (the worker holds the attachment lock it inherited).
        let del = scope.spawn(|| env.del("storage,slow"));
        wait_for("DEL to wait for the attachment lock", || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("waiting for the attachment lock")
        });
        std::fs::write(state.join("go"), "").unwrap();
        del.join().unwrap().expect_success();
        // Everything settles: the worker is gone, and DEL came after it.
        wait_for("the worker to exit", || !pid_alive(worker));
    });
    let leases: Vec<String> = CniSandbox::files_under(&state)
        .into_iter()
        .filter(|f| f.starts_with("lease-"))
        .collect();
    assert_eq!(
        leases,
        Vec::<String>::new(),
        "the killed ADD's lease leaked"
    );
    env.assert_clean();
}
