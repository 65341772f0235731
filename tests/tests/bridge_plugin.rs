//! plexus-bridge in a node netns with pod netns: connectivity, MTU, hairpin,
//! VLANs, ipMasq rules, DEL with the pod netns gone, CHECK, requested MACs,
//! chaining, result versions and bad input.
//!
//! VLAN tests need a kernel with CONFIG_BRIDGE_VLAN_FILTERING. Where it is
//! missing they print a SKIP line; run them under a Debian kernel with
//!   cargo test -p plexus-tests --test bridge_plugin --no-run   # prints the binary
//!   tests/vm/run-in-vm.sh --env PLEXUS_IN_VM=1 -- target/debug/deps/bridge_plugin-… vlan
//! Inside the VM (`PLEXUS_IN_VM=1`) a missing feature is a failure.

use std::path::Path;

use plexus_tests::{require_reference_plugins, require_root, CniSandbox, Netns};
use serde_json::{json, Value};

const NET: &str = "brnet";

fn bridge_conf(sb: &CniSandbox, version: &str, extra: Value) -> Value {
    let mut p = json!({
        "type": "plexus-bridge",
        "bridge": "plxbr0",
        "isGateway": true,
        "ipam": {
            "type": "plexus-host-local",
            "subnet": "10.88.0.0/24",
            "dataDir": sb.data_dir,
        }
    });
    for (k, v) in extra.as_object().unwrap() {
        p[k] = v.clone();
    }
    json!({"cniVersion": version, "name": NET, "plugins": [p]})
}

fn setup(version: &str, extra: Value) -> (CniSandbox, Netns) {
    let sb = CniSandbox::new();
    sb.write_conf("10-brnet.conflist", &bridge_conf(&sb, version, extra));
    (sb, Netns::new("node"))
}

fn add(sb: &CniSandbox, node: &Netns, pod: &Netns, env: &[(&str, &str)]) -> Value {
    sb.ctl(node, "add", NET, Some(&pod.path()), env)
        .expect_success()
        .json()
}

fn del(sb: &CniSandbox, node: &Netns, pod: &Path) {
    sb.ctl(node, "del", NET, Some(pod), &[]).expect_success();
}

/// Container ID plexusctl used (from the cached result's file name).
fn container_ids(sb: &CniSandbox) -> Vec<String> {
    CniSandbox::files_under(&sb.cache_dir)
        .iter()
        .filter_map(|f| {
            f.strip_prefix(&format!("results/{NET}-"))?
                .strip_suffix("-eth0")
                .map(str::to_string)
        })
        .collect()
}

fn allocated(sb: &CniSandbox) -> Vec<String> {
    CniSandbox::files_under(&sb.data_dir.join(NET))
        .into_iter()
        .filter(|f| f.starts_with("10.") || f.contains(':'))
        .collect()
}

fn nft_list(node: &Netns, family: &str) -> String {
    node.nft_table(family, "plexus_bridge")
}

fn veths(node: &Netns) -> Vec<String> {
    node.links()
        .into_iter()
        .filter(|l| l.starts_with("veth"))
        .collect()
}

fn port_data(node: &Netns, dev: &str) -> Value {
    node.ip_json(&["-d", "link", "show", "dev", dev])[0]["linkinfo"]["info_slave_data"].clone()
}

/// Runs plexus-bridge directly (no runtime) inside `node`.
fn call_plugin(
    node: &Netns,
    cmd: &str,
    netns: Option<&str>,
    conf: &Value,
    args: &str,
) -> (bool, Value) {
    call_plugin_as(node, cmd, "direct-1", netns, conf, args)
}

/// [`call_plugin`] for container `cid`.
fn call_plugin_as(
    node: &Netns,
    cmd: &str,
    cid: &str,
    netns: Option<&str>,
    conf: &Value,
    args: &str,
) -> (bool, Value) {
    let mut env = vec![("CNI_ARGS", args)];
    env.extend(netns.map(|n| ("CNI_NETNS", n)));
    plexus_tests::call_plugin(node, "plexus-bridge", cmd, cid, &env, conf)
}

#[test]
fn two_pods_ping_each_other_and_the_gateway_with_mtu() {
    require_root!();
    let (sb, node) = setup("1.0.0", json!({"isDefaultGateway": true, "mtu": 1400}));
    let (a, b) = (Netns::new("pa"), Netns::new("pb"));
    let ra = add(&sb, &node, &a, &[]);
    let rb = add(&sb, &node, &b, &[]);

    // Result shape: [bridge, host veth, container]; IPs point at index 2.
    let ifs = ra["interfaces"].as_array().unwrap();
    assert_eq!(ifs.len(), 3, "{ra}");
    assert_eq!(ifs[0]["name"], "plxbr0");
    assert!(ifs[0].get("sandbox").is_none());
    let veth = ifs[1]["name"].as_str().unwrap();
    assert!(veth.starts_with("veth") && veth.len() == 12, "{veth}");
    assert_eq!(ifs[2]["name"], "eth0");
    assert_eq!(ifs[2]["sandbox"], a.path().display().to_string());
    assert_eq!(ra["ips"][0]["address"], "10.88.0.2/24");
    assert_eq!(ra["ips"][0]["gateway"], "10.88.0.1");
    assert_eq!(ra["ips"][0]["interface"], 2);
    assert_eq!(
        ra["routes"],
        json!([{"dst": "0.0.0.0/0", "gw": "10.88.0.1"}])
    );
    assert_eq!(rb["ips"][0]["address"], "10.88.0.3/24");

    // Kernel state: addresses, MACs as reported, MTU on both ends.
    assert_eq!(a.addrs("eth0"), ["10.88.0.2/24"]);
    assert_eq!(node.addrs("plxbr0"), ["10.88.0.1/24"]);
    let pod_link = &a.ip_json(&["link", "show", "eth0"])[0];
    assert_eq!(pod_link["mtu"], 1400);
    assert_eq!(pod_link["address"], ifs[2]["mac"]);
    let host_link = &node.ip_json(&["link", "show", veth])[0];
    assert_eq!(host_link["mtu"], 1400);
    assert_eq!(host_link["master"], "plxbr0");
    assert_eq!(node.ip_json(&["link", "show", "plxbr0"])[0]["mtu"], 1400);
    assert_eq!(
        a.ip_json(&["route", "show", "default"])[0]["gateway"],
        "10.88.0.1"
    );
    assert_eq!(
        node.sh("cat /proc/sys/net/ipv4/ip_forward").stdout,
        b"1\n".to_vec()
    );

    assert!(a.ping("10.88.0.3"));
    assert!(b.ping("10.88.0.2"));
    assert!(a.ping("10.88.0.1"));

    sb.ctl(&node, "check", NET, Some(&a.path()), &[])
        .expect_success();

    del(&sb, &node, &a.path());
    del(&sb, &node, &b.path());
    assert!(!a.has_link("eth0") && !b.has_link("eth0"));
    assert!(veths(&node).is_empty(), "{:?}", veths(&node));
    assert!(allocated(&sb).is_empty(), "{:?}", allocated(&sb));
    // DEL is idempotent.
    del(&sb, &node, &a.path());
}

#[test]
fn hairpin_and_port_isolation() {
    require_root!();
    let (sb, node) = setup("1.0.0", json!({"hairpinMode": true, "portIsolation": true}));
    let pod = Netns::new("p");
    let r = add(&sb, &node, &pod, &[]);
    let veth = r["interfaces"][1]["name"].as_str().unwrap();
    let pd = port_data(&node, veth);
    assert_eq!(pd["hairpin"], true, "{pd}");
    assert_eq!(pd["isolated"], true, "{pd}");
    del(&sb, &node, &pod.path());

    // Without them the port is plain.
    let (sb, node) = setup("1.0.0", json!({}));
    let r = add(&sb, &node, &pod, &[]);
    let pd = port_data(&node, r["interfaces"][1]["name"].as_str().unwrap());
    assert_eq!(pd["hairpin"], false, "{pd}");
    assert_eq!(pd["isolated"], false, "{pd}");
    del(&sb, &node, &pod.path());
}

#[test]
fn promisc_mode_sets_the_bridge_promiscuous() {
    require_root!();
    let (sb, node) = setup("1.0.0", json!({"promiscMode": true}));
    let pod = Netns::new("p");
    add(&sb, &node, &pod, &[]);
    let flags = node.ip_json(&["link", "show", "plxbr0"])[0]["flags"].clone();
    assert!(
        flags.as_array().unwrap().iter().any(|f| f == "PROMISC"),
        "{flags}"
    );
    sb.ctl(&node, "check", NET, Some(&pod.path()), &[])
        .expect_success();
    del(&sb, &node, &pod.path());
}

fn in_vm() -> bool {
    std::env::var_os("PLEXUS_IN_VM").is_some()
}

/// Whether the kernel supports bridge VLAN filtering (tried in a scratch netns).
fn vlan_filtering_supported() -> bool {
    let ns = Netns::new("vf");
    let ok = ns
        .cmd("ip")
        .args(["link", "add", "t0", "type", "bridge", "vlan_filtering", "1"])
        .output()
        .unwrap()
        .status
        .success();
    if !ok && in_vm() {
        panic!("bridge VLAN filtering missing inside the test VM");
    }
    ok
}

macro_rules! require_vlan_filtering {
    () => {
        if !vlan_filtering_supported() {
            plexus_tests::skip_kernel_feature(
                "kernel has no bridge VLAN filtering; run under tests/vm/run-in-vm.sh",
            );
            return;
        }
    };
}

fn bridge_vlans(node: &Netns, dev: &str) -> Vec<Value> {
    let out = node
        .cmd("bridge")
        .args(["-j", "vlan", "show", "dev", dev])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(json!([]));
    v.as_array()
        .and_then(|a| a.first())
        .and_then(|p| p["vlans"].as_array().cloned())
        .unwrap_or_default()
}

#[test]
fn vlan_access_port_and_gateway_interface() {
    require_root!();
    require_vlan_filtering!();
    let (sb, node) = setup("1.0.0", json!({"vlan": 100}));
    let (a, b) = (Netns::new("va"), Netns::new("vb"));
    let r = add(&sb, &node, &a, &[]);
    add(&sb, &node, &b, &[]);
    let veth = r["interfaces"][1]["name"].as_str().unwrap();
    let vlans = bridge_vlans(&node, veth);
    assert_eq!(vlans.len(), 1, "{vlans:?}");
    assert_eq!(vlans[0]["vlan"], 100);
    let flags = vlans[0]["flags"].to_string();
    assert!(
        flags.contains("PVID") && flags.contains("Untagged"),
        "{flags}"
    );
    let br = node.ip_json(&["-d", "link", "show", "plxbr0"]);
    assert_eq!(br[0]["linkinfo"]["info_data"]["vlan_filtering"], 1);
    // The gateway lives on plxbr0.100, reported as a fourth interface.
    assert_eq!(r["interfaces"][3]["name"], "plxbr0.100");
    assert_eq!(node.addrs("plxbr0.100"), ["10.88.0.1/24"]);
    assert!(a.ping("10.88.0.3"));
    assert!(a.ping("10.88.0.1"));
    del(&sb, &node, &a.path());
    del(&sb, &node, &b.path());
}

#[test]
fn vlan_trunk_and_preserve_default_vlan() {
    require_root!();
    require_vlan_filtering!();
    let (sb, node) = setup(
        "1.0.0",
        json!({"isGateway": false, "vlanTrunk": [{"id": 20}, {"minID": 30, "maxID": 32}]}),
    );
    let pod = Netns::new("t");
    let r = add(&sb, &node, &pod, &[]);
    let veth = r["interfaces"][1]["name"].as_str().unwrap();
    let vids: Vec<u64> = bridge_vlans(&node, veth)
        .iter()
        .flat_map(|v| {
            let s = v["vlan"].as_u64().unwrap();
            s..=v["vlanEnd"].as_u64().unwrap_or(s)
        })
        .collect();
    assert_eq!(vids, [1, 20, 30, 31, 32]);
    del(&sb, &node, &pod.path());

    let (sb, node) = setup("1.0.0", json!({"vlan": 7, "preserveDefaultVlan": true}));
    let r = add(&sb, &node, &pod, &[]);
    let veth = r["interfaces"][1]["name"].as_str().unwrap();
    let vids: Vec<u64> = bridge_vlans(&node, veth)
        .iter()
        .map(|v| v["vlan"].as_u64().unwrap())
        .collect();
    assert_eq!(vids, [1, 7]);
    del(&sb, &node, &pod.path());
}

#[test]
fn vlan_without_kernel_support_is_a_clean_error() {
    require_root!();
    if vlan_filtering_supported() {
        plexus_tests::skip_kernel_has_feature(
            "this kernel filters VLANs; the missing-feature error cannot be provoked",
        );
        return;
    }
    let (sb, node) = setup("1.0.0", json!({"vlan": 100}));
    let pod = Netns::new("p");
    let e = sb.ctl(&node, "add", NET, Some(&pod.path()), &[]).err();
    assert_eq!(e["code"], 101, "{e}");
    assert!(!node.has_link("plxbr0"));
    assert_eq!(pod.links(), ["lo"]);
    assert!(allocated(&sb).is_empty(), "{:?}", allocated(&sb));
}

#[test]
fn ipmasq_rule_is_named_and_removed_on_del() {
    require_root!();
    let (sb, node) = setup("1.0.0", json!({"ipMasq": true, "macspoofchk": true}));
    let pod = Netns::new("m");
    let r = add(&sb, &node, &pod, &[]);
    let cid = container_ids(&sb).pop().unwrap();
    let masq = nft_list(&node, "inet");
    let comment = format!("plexus-bridge net: {NET}, if: eth0, id: {cid}");
    assert!(masq.contains(&comment), "{masq}");
    assert!(
        masq.contains("ip saddr 10.88.0.2 ip daddr != 10.88.0.0/24"),
        "{masq}"
    );
    assert!(masq.contains("masquerade"), "{masq}");
    let spoof = nft_list(&node, "bridge");
    let mac = r["interfaces"][2]["mac"].as_str().unwrap();
    assert!(spoof.contains(&comment), "{spoof}");
    assert!(
        spoof.contains(&format!("ether saddr != {mac} drop")),
        "{spoof}"
    );
    sb.ctl(&node, "check", NET, Some(&pod.path()), &[])
        .expect_success();
    del(&sb, &node, &pod.path());
    assert!(!nft_list(&node, "inet").contains("masq-"));
    assert!(!nft_list(&node, "bridge").contains("spoof-"));
}

#[test]
fn del_with_the_pod_netns_gone_releases_everything() {
    require_root!();
    let (sb, node) = setup("1.0.0", json!({"ipMasq": true, "macspoofchk": true}));
    let pod = Netns::new("g");
    let keep = Netns::new("k");
    add(&sb, &node, &pod, &[]);
    add(&sb, &node, &keep, &[]);
    assert_eq!(allocated(&sb).len(), 2);
    let path = pod.path();
    drop(pod);
    assert!(!path.exists());
    del(&sb, &node, &path);
    assert_eq!(allocated(&sb), ["10.88.0.3"], "the IP was not released");
    let masq = nft_list(&node, "inet");
    assert_eq!(masq.matches("masquerade").count(), 1, "{masq}");
    assert!(
        masq.contains("10.88.0.3") && !masq.contains("10.88.0.2"),
        "{masq}"
    );
    assert_eq!(nft_list(&node, "bridge").matches(" drop").count(), 1);
    // Only the other pod's veth is left.
    assert_eq!(veths(&node).len(), 1, "{:?}", veths(&node));
    // Again: still fine.
    del(&sb, &node, &path);
    del(&sb, &node, &keep.path());
    assert!(veths(&node).is_empty());
    assert!(!nft_list(&node, "inet").contains("masquerade"));
}

#[test]
fn check_detects_a_removed_address_and_a_missing_route() {
    require_root!();
    let (sb, node) = setup("0.4.0", json!({"isDefaultGateway": true}));
    let pod = Netns::new("c");
    let r = add(&sb, &node, &pod, &[]);
    assert_eq!(r["cniVersion"], "0.4.0");
    sb.ctl(&node, "check", NET, Some(&pod.path()), &[])
        .expect_success();
    pod.ip(&["route", "del", "default"]);
    let e = sb.ctl(&node, "check", NET, Some(&pod.path()), &[]).err();
    assert!(e["msg"].as_str().unwrap().contains("0.0.0.0/0"), "{e}");
    pod.ip(&["route", "add", "default", "via", "10.88.0.1"]);
    sb.ctl(&node, "check", NET, Some(&pod.path()), &[])
        .expect_success();
    pod.ip(&["addr", "del", "10.88.0.2/24", "dev", "eth0"]);
    let e = sb.ctl(&node, "check", NET, Some(&pod.path()), &[]).err();
    assert!(e["msg"].as_str().unwrap().contains("10.88.0.2"), "{e}");
    del(&sb, &node, &pod.path());
}

#[test]
fn check_detects_a_veth_moved_off_the_bridge() {
    require_root!();
    let (sb, node) = setup("1.0.0", json!({}));
    let pod = Netns::new("c");
    let r = add(&sb, &node, &pod, &[]);
    let veth = r["interfaces"][1]["name"].as_str().unwrap();
    node.ip(&["link", "set", veth, "nomaster"]);
    let e = sb.ctl(&node, "check", NET, Some(&pod.path()), &[]).err();
    assert!(e["msg"].as_str().unwrap().contains("veth"), "{e}");
    del(&sb, &node, &pod.path());
}

#[test]
fn requested_mac_from_args_config_and_runtime_config() {
    require_root!();
    let cases: [(Value, &str, &str); 3] = [
        (
            json!({}),
            "IgnoreUnknown=1;MAC=0a:58:00:00:00:01",
            "0a:58:00:00:00:01",
        ),
        (
            json!({"args": {"cni": {"mac": "0a:58:00:00:00:02"}}}),
            "IgnoreUnknown=1;MAC=0a:58:00:00:00:01",
            "0a:58:00:00:00:02",
        ),
        (
            json!({"capabilities": {"mac": true}}),
            "",
            "0a:58:00:00:00:03",
        ),
    ];
    for (extra, args, want) in cases {
        let (sb, node) = setup("1.0.0", extra);
        let pod = Netns::new("mac");
        let mut env = vec![];
        if !args.is_empty() {
            env.push(("CNI_ARGS", args));
        }
        if want.ends_with("03") {
            env.push(("CAP_ARGS", r#"{"mac":"0a:58:00:00:00:03"}"#));
        }
        let r = add(&sb, &node, &pod, &env);
        assert_eq!(r["interfaces"][2]["mac"], want, "{r}");
        assert_eq!(pod.ip_json(&["link", "show", "eth0"])[0]["address"], want);
        del(&sb, &node, &pod.path());
    }
}

#[test]
fn chained_after_loopback_and_before_tuning() {
    require_root!();
    require_reference_plugins!();
    let sb = CniSandbox::new();
    let mut conf = bridge_conf(&sb, "1.0.0", json!({"isDefaultGateway": true}));
    let ours = conf["plugins"][0].clone();
    conf["plugins"] = json!([{"type": "loopback"}, ours, {"type": "tuning", "mtu": 1300}]);
    sb.write_conf("10-brnet.conflist", &conf);
    let node = Netns::new("node");
    let pod = Netns::new("ch");
    let r = add(&sb, &node, &pod, &[]);
    // loopback's interface and IP survive; ours follow with shifted indexes.
    let ifs = r["interfaces"].as_array().unwrap();
    assert_eq!(ifs[0]["name"], "lo", "{r}");
    assert_eq!(ifs[1]["name"], "plxbr0");
    assert_eq!(ifs[3]["name"], "eth0");
    let ips = r["ips"].as_array().unwrap();
    let ours = ips
        .iter()
        .find(|i| i["address"] == "10.88.0.2/24")
        .expect("our IP");
    assert_eq!(ours["interface"], 3, "{r}");
    assert_eq!(pod.ip_json(&["link", "show", "eth0"])[0]["mtu"], 1300);
    assert!(pod.ping("10.88.0.1"));
    sb.ctl(&node, "check", NET, Some(&pod.path()), &[])
        .expect_success();
    del(&sb, &node, &pod.path());
    assert!(allocated(&sb).is_empty());
}

#[test]
fn result_versions() {
    require_root!();
    for v in ["0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        let (sb, node) = setup(v, json!({}));
        let pod = Netns::new("v");
        let r = add(&sb, &node, &pod, &[]);
        assert_eq!(r["cniVersion"], v);
        assert_eq!(r["interfaces"].as_array().unwrap().len(), 3);
        let has_version = r["ips"][0].get("version").is_some();
        assert_eq!(has_version, v.starts_with("0."), "{v}: {r}");
        if v != "0.3.1" {
            sb.ctl(&node, "check", NET, Some(&pod.path()), &[])
                .expect_success();
        }
        if v == "1.1.0" {
            sb.ctl_args(&node, &["status", NET], &[]).expect_success();
        }
        del(&sb, &node, &pod.path());
        assert!(!pod.has_link("eth0"));
    }
}

#[test]
fn gc_removes_rules_of_attachments_not_listed() {
    require_root!();
    let sb = CniSandbox::new();
    let mut conf = bridge_conf(&sb, "1.1.0", json!({"ipMasq": true}));
    conf["plugins"][0]["ipam"]["type"] = json!("plexus-host-local");
    sb.write_conf("10-brnet.conflist", &conf);
    let node = Netns::new("node");
    let (a, b) = (Netns::new("ga"), Netns::new("gb"));
    add(&sb, &node, &a, &[]);
    let a_id = container_ids(&sb).pop().unwrap();
    add(&sb, &node, &b, &[]);
    sb.ctl_args(&node, &["gc", NET, "--valid", &format!("{a_id}/eth0")], &[])
        .expect_success();
    let masq = nft_list(&node, "inet");
    assert_eq!(masq.matches("masquerade").count(), 1, "{masq}");
    assert!(masq.contains(&a_id), "{masq}");
    assert_eq!(allocated(&sb), ["10.88.0.2"]);
}

#[test]
fn l2_only_and_disabled_container_interface() {
    require_root!();
    let sb = CniSandbox::new();
    sb.write_conf(
        "10-brnet.conflist",
        &json!({"cniVersion": "1.0.0", "name": NET, "plugins": [{"type": "plexus-bridge", "bridge": "plxbr0"}]}),
    );
    let node = Netns::new("node");
    let pod = Netns::new("l2");
    let r = add(&sb, &node, &pod, &[]);
    assert!(r.get("ips").is_none(), "{r}");
    let flags = pod.ip_json(&["link", "show", "eth0"])[0]["flags"].to_string();
    assert!(flags.contains("UP"), "{flags}");
    del(&sb, &node, &pod.path());

    sb.write_conf(
        "10-brnet.conflist",
        &json!({"cniVersion": "1.0.0", "name": NET, "plugins": [{"type": "plexus-bridge", "bridge": "plxbr0", "disableContainerInterface": true}]}),
    );
    add(&sb, &node, &pod, &[]);
    let flags = pod.ip_json(&["link", "show", "eth0"])[0]["flags"].to_string();
    assert!(!flags.contains("\"UP\""), "{flags}");
    del(&sb, &node, &pod.path());
}

#[test]
fn bad_input_is_a_cni_error_and_creates_nothing() {
    require_root!();
    let sb = CniSandbox::new();
    let node = Netns::new("node");
    let pod = Netns::new("bad");
    let pod_path = pod.path().display().to_string();
    let base = bridge_conf(&sb, "1.0.0", json!({}))["plugins"][0].clone();
    let with = |extra: Value| {
        let mut c = base.clone();
        c["cniVersion"] = json!("1.0.0");
        c["name"] = json!(NET);
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let cases: Vec<(Value, &str, Option<&str>, u64, &str)> = vec![
        (
            with(json!({"hairpinMode": true, "promiscMode": true})),
            "",
            Some(&pod_path),
            7,
            "hairpin",
        ),
        (with(json!({"vlan": 5000})), "", Some(&pod_path), 7, "VLAN"),
        (
            with(json!({"vlanTrunk": [{"minID": 5}]})),
            "",
            Some(&pod_path),
            7,
            "maxID",
        ),
        (
            with(json!({"runtimeConfig": {"mac": "not-a-mac"}})),
            "",
            Some(&pod_path),
            7,
            "MAC",
        ),
        (
            with(json!({"args": {"cni": {"mac": "01:00:5e:00:00:01"}}})),
            "",
            Some(&pod_path),
            7,
            "multicast",
        ),
        (with(json!({})), "MAC=zz", Some(&pod_path), 4, "MAC"),
        (
            with(json!({})),
            "",
            Some("/var/run/netns/plx-no-such-netns"),
            4,
            "netns",
        ),
        (with(json!({})), "", None, 4, "CNI_NETNS"),
        (
            with(json!({"bridge": "a-bridge-name-too-long"})),
            "",
            Some(&pod_path),
            7,
            "bridge",
        ),
        // Shapes the reference's JSON decoding refuses: never a pod
        // without an address.
        (with(json!({"dns": "x"})), "", Some(&pod_path), 7, "dns"),
        (with(json!({"ipam": "x"})), "", Some(&pod_path), 7, "ipam"),
        (
            with(json!({"ipam": {"type": 5}})),
            "",
            Some(&pod_path),
            7,
            "ipam",
        ),
    ];
    for (conf, args, netns, code, word) in cases {
        let (ok, e) = call_plugin(&node, "ADD", netns, &conf, args);
        assert!(!ok, "{conf}: succeeded");
        assert_eq!(e["code"], code, "{conf}: {e}");
        assert!(e["msg"].as_str().unwrap().contains(word), "{word}: {e}");
        assert_eq!(node.links(), ["lo"], "{conf}: something was created");
        assert_eq!(pod.links(), ["lo"]);
        assert!(CniSandbox::files_under(&sb.data_dir).is_empty(), "{conf}");
    }
    // DEL of a config ADD refused succeeds and changes nothing.
    for bad in [
        json!({"ipam": "x"}),
        json!({"dns": "x"}),
        json!({"ipam": {"type": 5}}),
    ] {
        let (ok, e) = call_plugin(&node, "DEL", Some(&pod_path), &with(bad.clone()), "");
        assert!(ok, "DEL {bad}: {e}");
        assert_eq!(node.links(), ["lo"]);
    }
}

/// The single-plugin config [`call_plugin`] takes.
fn plugin_conf(sb: &CniSandbox, extra: Value) -> Value {
    let mut c = bridge_conf(sb, "1.0.0", extra)["plugins"][0].clone();
    c["cniVersion"] = json!("1.0.0");
    c["name"] = json!(NET);
    c
}

#[test]
fn del_with_another_pods_netns_leaves_that_pods_interface_alone() {
    require_root!();
    let sb = CniSandbox::new();
    let node = Netns::new("node");
    let conf = plugin_conf(&sb, json!({"ipMasq": true}));
    let (a, b) = (Netns::new("a"), Netns::new("b"));
    let (pa, pb) = (
        a.path().display().to_string(),
        b.path().display().to_string(),
    );
    let (ok, _) = call_plugin_as(&node, "ADD", "pod-a", Some(&pa), &conf, "");
    assert!(ok);
    let (ok, rb) = call_plugin_as(&node, "ADD", "pod-b", Some(&pb), &conf, "");
    assert!(ok, "{rb}");
    let b_mac = rb["interfaces"][2]["mac"].as_str().unwrap().to_string();
    assert_eq!(veths(&node).len(), 2);

    // DEL of pod A, but with pod B's netns (a runtime mix-up).
    let (ok, e) = call_plugin_as(&node, "DEL", "pod-a", Some(&pb), &conf, "");
    assert!(ok, "{e}");
    // B keeps its interface, address and veth; A's veth and lease are gone.
    let eth0 = &b.ip_json(&["addr", "show", "dev", "eth0"])[0];
    assert_eq!(eth0["address"], b_mac.as_str(), "{eth0}");
    assert_eq!(eth0["addr_info"][0]["local"], "10.88.0.3", "{eth0}");
    assert_eq!(veths(&node).len(), 1, "{:?}", veths(&node));
    assert!(!a.has_link("eth0"), "pod A's end goes with its veth");
    assert_eq!(allocated(&sb), ["10.88.0.3"]);
    let mut with_prev = conf.clone();
    with_prev["prevResult"] = rb.clone();
    let (ok, e) = call_plugin_as(&node, "CHECK", "pod-b", Some(&pb), &with_prev, "");
    assert!(ok, "pod B still checks out: {e}");

    let (ok, _) = call_plugin_as(&node, "DEL", "pod-b", Some(&pb), &conf, "");
    assert!(ok);
    assert!(veths(&node).is_empty());
    assert!(!b.has_link("eth0"));
    assert!(allocated(&sb).is_empty());
}

#[test]
fn long_container_ids_are_accepted_and_fully_removed() {
    require_root!();
    let sb = CniSandbox::new();
    let node = Netns::new("node");
    let conf = plugin_conf(&sb, json!({"ipMasq": true, "macspoofchk": true}));
    // libcni accepts any length; 300 was refused before, 65,000 panicked.
    // 1024 is the longest Plexus accepts (plexus_cni::validate); 65,000 is
    // now code 4 and creates nothing.
    let pod = Netns::new("long");
    let p = pod.path().display().to_string();
    let (ok, e) = call_plugin_as(&node, "ADD", &"c".repeat(65_000), Some(&p), &conf, "");
    assert!(!ok && e["code"] == 4, "{e}");
    assert!(allocated(&sb).is_empty() && veths(&node).is_empty(), "{e}");
    assert_eq!(pod.links(), ["lo"]);
    drop(pod);
    for len in [300, 1_024] {
        let cid = format!("c{}", "0123456789".repeat(len / 10 + 1))[..len].to_string();
        let pod = Netns::new("long");
        let p = pod.path().display().to_string();
        let (ok, r) = call_plugin_as(&node, "ADD", &cid, Some(&p), &conf, "");
        assert!(ok, "{len}: {r}");
        let addr = r["ips"][0]["address"].as_str().unwrap_or_default();
        assert!(addr.starts_with("10.88.0."), "{len}: {r}");
        assert_eq!(allocated(&sb).len(), 1, "{len}");
        assert_eq!(veths(&node).len(), 1);
        assert!(nft_list(&node, "inet").contains("masquerade"));
        // DEL with the netns gone: the host veth is found by its alias.
        drop(pod);
        let (ok, e) = call_plugin_as(&node, "DEL", &cid, Some(&p), &conf, "");
        assert!(ok, "{len}: {e}");
        assert!(veths(&node).is_empty(), "{len}: {:?}", veths(&node));
        assert!(allocated(&sb).is_empty(), "{len}: lease kept");
        assert!(!nft_list(&node, "inet").contains("masquerade"), "{len}");
        assert!(!nft_list(&node, "bridge").contains(" drop"), "{len}");
    }
}
