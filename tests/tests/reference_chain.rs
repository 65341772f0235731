//! plexusctl and the runtime against third-party plugins: the Debian
//! reference bridge, host-local, tuning and portmap, inside a node netns.

use plexus_tests::{require_reference_plugins, require_root, CniSandbox, Netns};
use serde_json::{json, Value};

fn ref_conflist(sb: &CniSandbox, version: &str) -> Value {
    json!({
        "cniVersion": version,
        "name": "refnet",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cniref0",
                "isGateway": true,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "subnet": "10.77.0.0/24",
                    "dataDir": sb.data_dir,
                    "routes": [{"dst": "0.0.0.0/0"}]
                }
            },
            {"type": "tuning", "mtu": 1400},
            {"type": "portmap", "capabilities": {"portMappings": true}, "snat": false}
        ]
    })
}

fn setup(version: &str) -> Option<(CniSandbox, Netns, Netns)> {
    let sb = CniSandbox::new();
    sb.write_conf("10-refnet.conflist", &ref_conflist(&sb, version));
    let node = Netns::new("node");
    let pod = Netns::new("pod");
    Some((sb, node, pod))
}

fn iptables_nat(node: &Netns) -> String {
    String::from_utf8_lossy(
        &node
            .cmd("iptables-save")
            .args(["-t", "nat"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned()
}

#[test]
fn add_check_del_through_reference_plugins() {
    require_root!();
    require_reference_plugins!();
    let (sb, node, pod) = setup("1.0.0").unwrap();
    let caps = r#"{"portMappings":[{"hostPort":18080,"containerPort":80,"protocol":"tcp"}]}"#;
    let res = sb
        .ctl(
            &node,
            "add",
            "refnet",
            Some(&pod.path()),
            &[
                ("CAP_ARGS", caps),
                ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=p1"),
            ],
        )
        .expect_success()
        .json();

    // The result is the chain's final result, in the list's version.
    assert_eq!(res["cniVersion"], "1.0.0");
    assert_eq!(res["ips"][0]["address"], "10.77.0.2/24");
    assert_eq!(res["ips"][0]["gateway"], "10.77.0.1");

    // The pod side: address, MTU from tuning, default route via the gateway.
    assert_eq!(pod.addrs("eth0"), ["10.77.0.2/24"]);
    let link = pod.ip_json(&["link", "show", "eth0"]);
    assert_eq!(link[0]["mtu"], 1400);
    let routes = pod.ip_json(&["route", "show", "default"]);
    assert_eq!(routes[0]["gateway"], "10.77.0.1");
    // The node side: the bridge with the gateway address; traffic flows
    // between the two namespaces.
    assert_eq!(node.addrs("cniref0"), ["10.77.0.1/24"]);
    assert!(pod.ping("10.77.0.1"));

    // portmap got its runtimeConfig (only it declared the capability).
    assert!(
        iptables_nat(&node).contains("18080"),
        "portmap rule missing"
    );

    // The result is cached where libcni would cache it.
    let cid = {
        let files = CniSandbox::files_under(&sb.cache_dir);
        assert_eq!(files.len(), 1, "{files:?}");
        files[0]
            .strip_prefix("results/refnet-")
            .unwrap()
            .strip_suffix("-eth0")
            .unwrap()
            .to_string()
    };
    assert!(cid.starts_with("cnitool-"));
    assert!(CniSandbox::files_under(&sb.data_dir).contains(&"refnet/10.77.0.2".to_string()));

    sb.ctl(&node, "check", "refnet", Some(&pod.path()), &[])
        .expect_success();

    sb.ctl(
        &node,
        "del",
        "refnet",
        Some(&pod.path()),
        &[("CAP_ARGS", caps)],
    )
    .expect_success();
    assert!(!pod.has_link("eth0"), "pod eth0 left behind");
    let veths: Vec<_> = node
        .links()
        .into_iter()
        .filter(|l| l.starts_with("veth"))
        .collect();
    assert!(veths.is_empty(), "host veth left behind: {veths:?}");
    assert!(
        !iptables_nat(&node).contains("18080"),
        "portmap rule left behind"
    );
    assert!(CniSandbox::files_under(&sb.cache_dir).is_empty());
    let ipam_left = CniSandbox::files_under(&sb.data_dir);
    assert!(
        ipam_left
            .iter()
            .all(|f| f.ends_with("/lock") || f.contains("last_reserved_ip")),
        "{ipam_left:?}"
    );

    // DEL again is fine.
    sb.ctl(&node, "del", "refnet", Some(&pod.path()), &[])
        .expect_success();
}

#[test]
fn check_detects_a_removed_address() {
    require_root!();
    require_reference_plugins!();
    let (sb, node, pod) = setup("0.4.0").unwrap();
    let res = sb
        .ctl(&node, "add", "refnet", Some(&pod.path()), &[])
        .expect_success()
        .json();
    assert_eq!(res["cniVersion"], "0.4.0");
    assert_eq!(res["ips"][0]["version"], "4");
    sb.ctl(&node, "check", "refnet", Some(&pod.path()), &[])
        .expect_success();
    pod.ip(&["addr", "del", "10.77.0.2/24", "dev", "eth0"]);
    let e = sb
        .ctl(&node, "check", "refnet", Some(&pod.path()), &[])
        .err();
    assert!(e["msg"].as_str().unwrap().contains("10.77.0.2"), "{e}");
    sb.ctl(&node, "del", "refnet", Some(&pod.path()), &[])
        .expect_success();
}

#[test]
fn del_after_pod_netns_is_gone_releases_ipam_and_cache() {
    require_root!();
    require_reference_plugins!();
    let (sb, node, pod) = setup("1.0.0").unwrap();
    sb.ctl(&node, "add", "refnet", Some(&pod.path()), &[])
        .expect_success();
    let path = pod.path();
    drop(pod);
    assert!(!path.exists());
    // cnitool derives the container ID from the path, which still works.
    sb.ctl(&node, "del", "refnet", Some(&path), &[])
        .expect_success();
    assert!(CniSandbox::files_under(&sb.cache_dir).is_empty());
    assert!(!CniSandbox::files_under(&sb.data_dir)
        .iter()
        .any(|f| f.ends_with("10.77.0.2")));
}

#[test]
fn gc_deletes_attachments_not_listed_as_valid() {
    require_root!();
    require_reference_plugins!();
    let sb = CniSandbox::new();
    let mut conf = ref_conflist(&sb, "1.1.0");
    // The reference plugins speak up to 1.0.0; GC of the list still DELs the
    // stale cached attachments (libcni's behaviour) before the plugin GCs.
    conf["cniVersions"] = json!(["1.0.0"]);
    sb.write_conf("10-refnet.conflist", &conf);
    let node = Netns::new("node");
    let (a, b) = (Netns::new("pa"), Netns::new("pb"));
    sb.ctl(&node, "add", "refnet", Some(&a.path()), &[])
        .expect_success();
    sb.ctl(&node, "add", "refnet", Some(&b.path()), &[])
        .expect_success();
    let cid_of = |f: &str| {
        f.strip_prefix("results/refnet-")
            .unwrap()
            .strip_suffix("-eth0")
            .unwrap()
            .to_string()
    };
    let before = CniSandbox::files_under(&sb.cache_dir);
    assert_eq!(before.len(), 2);
    // Keep whichever attachment belongs to pod a: its ID is cnitool's hash of a's path.
    let ids: Vec<String> = before.iter().map(|f| cid_of(f)).collect();
    let a_id = ids
        .iter()
        .find(|id| {
            let p = std::fs::read_to_string(sb.cache_dir.join(format!("results/refnet-{id}-eth0")))
                .unwrap();
            p.contains(&a.name)
        })
        .unwrap()
        .clone();
    let valid = format!("{a_id}/eth0");
    sb.ctl_args(&node, &["gc", "refnet", "--valid", &valid], &[])
        .expect_success();
    assert_eq!(
        CniSandbox::files_under(&sb.cache_dir),
        [format!("results/refnet-{a_id}-eth0")]
    );
    assert!(a.has_link("eth0"), "a valid attachment was deleted");
    assert!(!b.has_link("eth0"), "a stale attachment survived GC");
    // Without --valid, every attachment is stale.
    sb.ctl(&node, "gc", "refnet", None, &[]).expect_success();
    assert!(CniSandbox::files_under(&sb.cache_dir).is_empty());
    assert!(!a.has_link("eth0"));
}

#[test]
fn bad_input_is_a_cni_error_and_changes_nothing() {
    require_root!();
    require_reference_plugins!();
    let (sb, node, pod) = setup("1.0.0").unwrap();
    let before = node.links();

    let e = sb
        .ctl(&node, "add", "no-such-net", Some(&pod.path()), &[])
        .err();
    assert_eq!(e["code"], 7);
    assert!(e["msg"].as_str().unwrap().contains("no-such-net"));

    let e = sb
        .ctl(
            &node,
            "add",
            "refnet",
            Some(&pod.path()),
            &[("CNI_ARGS", "garbage")],
        )
        .err();
    assert!(e["msg"].as_str().unwrap().contains("CNI_ARGS"), "{e}");

    let e = sb
        .ctl(
            &node,
            "add",
            "refnet",
            Some(&pod.path()),
            &[("CAP_ARGS", "{")],
        )
        .err();
    assert!(e["msg"].as_str().unwrap().contains("CAP_ARGS"), "{e}");

    let e = sb
        .ctl(
            &node,
            "add",
            "refnet",
            Some("/var/run/netns/plx-does-not-exist".as_ref()),
            &[],
        )
        .err();
    assert!(e["msg"].as_str().unwrap().contains("does not exist"), "{e}");

    let e = sb
        .ctl(
            &node,
            "add",
            "refnet",
            Some(&pod.path()),
            &[("CNI_IFNAME", "much-too-long-name")],
        )
        .err();
    assert!(e["msg"].as_str().unwrap().contains("too long"), "{e}");

    sb.write_conf(
        "20-broken.conflist",
        &json!({"cniVersion": "1.0.0", "name": "broken", "plugins": [{"type": "../../bin/sh"}]}),
    );
    let e = sb.ctl(&node, "add", "broken", Some(&pod.path()), &[]).err();
    assert!(
        e["msg"].as_str().unwrap().contains("not a plain name"),
        "{e}"
    );

    assert_eq!(node.links(), before, "a failed call created links");
    assert_eq!(pod.links(), ["lo"]);
    assert!(CniSandbox::files_under(&sb.cache_dir).is_empty());
    assert!(CniSandbox::files_under(&sb.data_dir).is_empty());
}
