//! plexus-vxlan on one node with a hand-written subnet.env (no agent): what
//! it renders and runs, code 11 without a lease, and DEL that always
//! finishes and leaves nothing.

use std::path::PathBuf;

use plexus_tests::{require_root, CniSandbox, Netns};
use serde_json::{json, Value};

const NET: &str = "cbr0";

struct Node {
    ns: Netns,
    cni: CniSandbox,
    subnet_env: PathBuf,
    data_dir: PathBuf,
}

impl Node {
    fn new(delegate: Value) -> Node {
        let ns = Netns::new("vxn");
        let cni = CniSandbox::new();
        let subnet_env = cni.dir.path().join("run/subnet.env");
        let data_dir = cni.dir.path().join("vxlan");
        cni.write_conf(
            &format!("{NET}.conflist"),
            &json!({
                "cniVersion": "1.1.0",
                "name": NET,
                "plugins": [{
                    "type": "plexus-vxlan",
                    "subnetFile": subnet_env,
                    "dataDir": data_dir,
                    "ipam": {"dataDir": cni.data_dir},
                    "delegate": delegate
                }]
            }),
        );
        Node {
            ns,
            cni,
            subnet_env,
            data_dir,
        }
    }

    fn write_lease(&self, ipmasq: bool) {
        std::fs::create_dir_all(self.subnet_env.parent().unwrap()).unwrap();
        std::fs::write(
            &self.subnet_env,
            format!("FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.7.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ={ipmasq}\n"),
        )
        .unwrap();
    }

    /// `plexusctl cni OP cbr0 POD` in the node.
    fn call(&self, op: &str, pod: &std::path::Path) -> plexus_tests::CtlOutput {
        self.cni.ctl(&self.ns, op, NET, Some(pod), &[])
    }

    fn saved(&self) -> Vec<String> {
        CniSandbox::files_under(&self.data_dir)
    }

    /// The one saved delegate config.
    fn saved_conf(&self) -> Value {
        let saved = self.saved();
        assert_eq!(saved.len(), 1, "{saved:?}");
        serde_json::from_slice(&std::fs::read(self.data_dir.join(&saved[0])).unwrap()).unwrap()
    }

    /// The host ends of pod veths on cni0.
    fn ports(&self) -> Vec<String> {
        if !self.ns.has_link("cni0") {
            return Vec::new();
        }
        self.ns
            .ip_json(&["link", "show", "master", "cni0"])
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["ifname"].as_str().unwrap().to_string())
            .collect()
    }
}

#[test]
fn no_lease_is_try_again_later_and_changes_nothing() {
    require_root!();
    let node = Node::new(json!({}));
    let pod = Netns::new("vxp");
    let e = node.call("add", &pod.path()).err();
    assert_eq!(e["code"], 11, "{e}");
    let msg = e["msg"].as_str().unwrap();
    assert!(
        msg.contains(&node.subnet_env.display().to_string()),
        "the error names the missing file: {msg}"
    );
    assert!(!node.ns.has_link("cni0"));
    assert!(node.saved().is_empty());
    assert!(node.cni.leases().is_empty());
    assert_eq!(pod.links(), vec!["lo"]);
    let e = node.cni.ctl(&node.ns, "status", NET, None, &[]).err();
    assert_eq!(e["code"], 50, "{e}");
    // DEL of that failed ADD finishes.
    node.call("del", &pod.path()).expect_success();
}

#[test]
fn add_renders_the_lease_and_del_leaves_nothing() {
    require_root!();
    let node = Node::new(json!({"hairpinMode": true, "isDefaultGateway": true}));
    node.write_lease(true);
    node.cni
        .ctl(&node.ns, "status", NET, None, &[])
        .expect_success();
    let pod = Netns::new("vxp");
    let r = node.call("add", &pod.path()).expect_success().json();
    let addr = r["ips"][0]["address"].as_str().unwrap();
    assert!(addr.starts_with("10.5.7.") && addr.ends_with("/24"), "{r}");
    assert_eq!(r["ips"][0]["gateway"], "10.5.7.1");
    assert_eq!(node.ns.addrs("cni0"), vec!["10.5.7.1/24"]);
    let mtu = |ns: &Netns, dev: &str| ns.ip_json(&["link", "show", "dev", dev])[0]["mtu"].clone();
    assert_eq!(mtu(&pod, "eth0"), 1450);
    let routes = pod.ip_json(&["route", "show"]);
    let has = |dst: &str| {
        routes
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["dst"] == dst && r["gateway"] == "10.5.7.1")
    };
    assert!(has("10.5.0.0/16"), "route to the cluster network: {routes}");
    assert!(has("default"), "isDefaultGateway from delegate: {routes}");
    // Hairpin on the host end, as the delegate asked.
    let port = &node.ports()[0];
    let info = node.ns.ip_json(&["-d", "link", "show", "dev", port]);
    assert_eq!(
        info[0]["linkinfo"]["info_slave_data"]["hairpin"], true,
        "{info}"
    );
    // The saved config is what ran: the agent masquerades, so the bridge does not.
    let conf = node.saved_conf();
    assert_eq!(conf["type"], "plexus-bridge");
    assert_eq!(conf["ipMasq"], false);
    assert!(!node
        .ns
        .nft_table("inet", "plexus_bridge")
        .contains("masquerade"));
    assert_eq!(conf["isGateway"], true);
    assert_eq!(conf["mtu"], 1450);
    assert_eq!(conf["ipam"]["type"], "plexus-host-local");
    assert_eq!(conf["ipam"]["ranges"], json!([[{"subnet": "10.5.7.0/24"}]]));

    node.call("check", &pod.path()).expect_success();
    node.call("del", &pod.path()).expect_success();
    assert!(node.saved().is_empty());
    assert!(node.cni.leases().is_empty());
    assert!(node.ports().is_empty());
    assert_eq!(pod.links(), vec!["lo"]);
    node.call("del", &pod.path()).expect_success();
}

#[test]
fn ipmasq_off_in_the_agent_means_the_bridge_masquerades() {
    require_root!();
    let node = Node::new(json!({}));
    node.write_lease(false);
    let pod = Netns::new("vxp");
    node.call("add", &pod.path()).expect_success();
    let conf = node.saved_conf();
    assert_eq!(conf["ipMasq"], true);
    let masq = |ns: &Netns| {
        ns.nft_table("inet", "plexus_bridge")
            .lines()
            .filter(|l| l.contains("masquerade"))
            .count()
    };
    assert_eq!(
        masq(&node.ns),
        1,
        "{}",
        node.ns.nft_table("inet", "plexus_bridge")
    );
    node.call("del", &pod.path()).expect_success();
    assert_eq!(masq(&node.ns), 0);
}

#[test]
fn del_finishes_without_netns_or_saved_config() {
    require_root!();
    let node = Node::new(json!({}));
    node.write_lease(true);

    // The netns is gone before DEL.
    let pod = Netns::new("vxp");
    let pod_path = pod.path();
    node.call("add", &pod_path).expect_success();
    drop(pod);
    node.call("del", &pod_path).expect_success();
    assert!(node.saved().is_empty());
    assert!(node.cni.leases().is_empty(), "{:?}", node.cni.leases());
    assert!(node.ports().is_empty(), "{:?}", node.ports());

    // The saved config was lost: DEL still releases what the lease renders.
    let pod = Netns::new("vxp");
    node.call("add", &pod.path()).expect_success();
    for f in node.saved() {
        std::fs::remove_file(node.data_dir.join(f)).unwrap();
    }
    node.call("del", &pod.path()).expect_success();
    assert!(node.cni.leases().is_empty(), "{:?}", node.cni.leases());
    assert!(node.ports().is_empty());
    assert_eq!(pod.links(), vec!["lo"]);

    // Neither saved config nor lease: nothing to do, and that is success.
    std::fs::remove_file(&node.subnet_env).unwrap();
    node.call("del", &pod.path()).expect_success();
}

#[test]
fn bad_delegate_is_refused_before_anything_is_written() {
    require_root!();
    let node = Node::new(json!({"name": "other"}));
    node.write_lease(true);
    let pod = Netns::new("vxp");
    let e = node.call("add", &pod.path()).err();
    assert_eq!(e["code"], 7, "{e}");
    assert!(node.saved().is_empty());
    assert!(!node.ns.has_link("cni0"));
}

#[test]
fn a_data_dir_planted_as_a_symlink_is_refused_before_anything_runs() {
    require_root!();
    let node = Node::new(json!({}));
    node.write_lease(true);
    let elsewhere = node.cni.dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &node.data_dir).unwrap();
    let pod = Netns::new("vxp");
    for op in ["add", "del"] {
        let e = node.call(op, &pod.path()).err();
        assert_eq!(e["code"], 5, "{op}: {e}");
        let msg = e["msg"].as_str().unwrap();
        assert!(
            msg.contains(&node.data_dir.display().to_string()) && msg.contains("symbolic link"),
            "{op}: {msg}"
        );
    }
    assert!(
        CniSandbox::files_under(&elsewhere).is_empty(),
        "written through the link"
    );
    assert!(!node.ns.has_link("cni0"), "the delegate ran");
    assert!(node.cni.leases().is_empty());
    assert_eq!(pod.links(), vec!["lo"]);
}

#[test]
fn gc_releases_attachments_not_in_the_valid_list() {
    require_root!();
    let node = Node::new(json!({}));
    node.write_lease(true);
    let keep = Netns::new("vxk");
    let gone = Netns::new("vxg");
    node.call("add", &keep.path()).expect_success();
    let keep_id = node.saved()[0].clone();
    node.call("add", &gone.path()).expect_success();
    assert_eq!(node.cni.leases().len(), 2);
    node.cni
        .ctl_args(
            &node.ns,
            &["gc", NET, "--valid", &format!("{keep_id}/eth0")],
            &[],
        )
        .expect_success();
    assert_eq!(node.saved(), vec![keep_id]);
    assert_eq!(node.cni.leases().len(), 1);
    // With the agent's lease file gone, GC still runs the delegate's GC
    // (with a saved config) and releases what is no longer valid.
    std::fs::remove_file(&node.subnet_env).unwrap();
    node.cni
        .ctl_args(&node.ns, &["gc", NET], &[])
        .expect_success();
    assert!(node.saved().is_empty());
    assert!(node.cni.leases().is_empty(), "{:?}", node.cni.leases());
}

/// conf/overlay's conflist (plexus-vxlan, then the reference portmap) as a
/// user installs it, with its paths moved into the sandbox.
#[test]
fn example_conflist_adds_and_deletes() {
    require_root!();
    plexus_tests::require_reference_plugins!();
    let node = Node::new(json!({}));
    node.write_lease(true);
    let mut conf = plexus_tests::cluster::example_conflist();
    conf["plugins"][0]["subnetFile"] = json!(node.subnet_env);
    conf["plugins"][0]["dataDir"] = json!(node.data_dir);
    conf["plugins"][0]["ipam"] = json!({"dataDir": node.cni.data_dir});
    node.cni.write_conf(&format!("{NET}.conflist"), &conf);
    let pod = Netns::new("vxp");
    let r = node.call("add", &pod.path()).expect_success().json();
    assert_eq!(r["cniVersion"], "0.3.1");
    assert!(
        r["ips"][0]["address"]
            .as_str()
            .unwrap()
            .starts_with("10.5.7."),
        "{r}"
    );
    node.call("del", &pod.path()).expect_success();
    assert!(node.saved().is_empty());
    assert!(node.cni.leases().is_empty());
}
