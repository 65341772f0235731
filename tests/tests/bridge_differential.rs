//! The same configuration through the reference bridge (/usr/lib/cni/bridge)
//! and through plexus-bridge, each in its own node netns, both with the
//! reference host-local: the results and the pod- and node-side state must
//! agree, modulo random veth names and MACs.

use plexus_tests::{require_reference_plugins, require_root, CniSandbox, Netns};
use serde_json::{json, Value};

fn conf(sb: &CniSandbox, plugin: &str, extra: &Value) -> Value {
    let mut p = json!({
        "type": plugin,
        "bridge": "diffbr0",
        "ipam": {
            "type": "host-local",
            "subnet": "10.66.0.0/24",
            "dataDir": sb.data_dir,
            "routes": [{"dst": "192.168.50.0/24"}]
        }
    });
    for (k, v) in extra.as_object().unwrap() {
        p[k] = v.clone();
    }
    json!({"cniVersion": "1.0.0", "name": "diffnet", "plugins": [p]})
}

/// Replace what is random per run (MACs, the host veth name).
fn normalize(mut r: Value) -> Value {
    if let Some(ifs) = r["interfaces"].as_array_mut() {
        for (i, intf) in ifs.iter_mut().enumerate() {
            if intf.get("mac").is_some() {
                intf["mac"] = json!("MAC");
            }
            if i == 1 {
                intf["name"] = json!("VETH");
            }
            if intf.get("sandbox").is_some() {
                intf["sandbox"] = json!("SANDBOX");
            }
        }
    }
    r
}

struct State {
    result: Value,
    pod_addrs: Vec<String>,
    pod_routes: Vec<String>,
    pod_mtu: Value,
    pod_flags: Value,
    arp_notify: String,
    bridge_addrs: Vec<String>,
    bridge_mtu: Value,
    port: Value,
    ip_forward: String,
}

fn run(plugin: &str, extra: &Value) -> State {
    let sb = CniSandbox::new();
    sb.write_conf("10-diffnet.conflist", &conf(&sb, plugin, extra));
    let node = Netns::new("dnode");
    let pod = Netns::new("dpod");
    let result = sb
        .ctl(&node, "add", "diffnet", Some(&pod.path()), &[])
        .expect_success()
        .json();
    let veth = result["interfaces"][1]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let mut pod_routes: Vec<String> = pod
        .ip_json(&["route", "show"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{} via {} dev {}", r["dst"], r["gateway"], r["dev"]))
        .collect();
    pod_routes.sort();
    let link = pod.ip_json(&["link", "show", "eth0"]);
    let port_json = node.ip_json(&["-d", "link", "show", "dev", &veth]);
    let pd = &port_json[0]["linkinfo"]["info_slave_data"];
    let state = State {
        pod_addrs: pod.addrs("eth0"),
        pod_routes,
        pod_mtu: link[0]["mtu"].clone(),
        pod_flags: link[0]["flags"].clone(),
        arp_notify: String::from_utf8_lossy(
            &pod.sh("cat /proc/sys/net/ipv4/conf/eth0/arp_notify").stdout,
        )
        .into_owned(),
        bridge_addrs: node.addrs("diffbr0"),
        bridge_mtu: node.ip_json(&["link", "show", "diffbr0"])[0]["mtu"].clone(),
        port: json!({"hairpin": pd["hairpin"], "master": port_json[0]["master"], "mtu": port_json[0]["mtu"]}),
        ip_forward: String::from_utf8_lossy(&node.sh("cat /proc/sys/net/ipv4/ip_forward").stdout)
            .into_owned(),
        result: normalize(result),
    };
    // (The reference 1.1.1 fails its own CHECK on a route without a gateway.)
    if plugin == "plexus-bridge" {
        sb.ctl(&node, "check", "diffnet", Some(&pod.path()), &[])
            .expect_success();
    }
    sb.ctl(&node, "del", "diffnet", Some(&pod.path()), &[])
        .expect_success();
    assert!(!pod.has_link("eth0"), "{plugin}: pod eth0 left behind");
    state
}

/// What the configuration must produce, whoever runs it: the comparison
/// alone would pass if both plugins did the same wrong thing.
fn assert_expected(s: &State, extra: &Value, who: &str) {
    let on = |k: &str| extra[k].as_bool() == Some(true);
    let gateway = on("isGateway") || on("isDefaultGateway");
    let ctx = format!("{who} with {extra}");
    assert_eq!(s.pod_addrs, ["10.66.0.2/24"], "{ctx}");
    assert_eq!(s.result["ips"][0]["address"], "10.66.0.2/24", "{ctx}");
    assert_eq!(s.result["interfaces"][0]["name"], "diffbr0", "{ctx}");
    assert_eq!(s.result["interfaces"][2]["name"], "eth0", "{ctx}");
    assert_eq!(s.result["interfaces"][2]["sandbox"], "SANDBOX", "{ctx}");
    let route = |dst: &str, via: &str| format!("\"{dst}\" via {via} dev \"eth0\"");
    // host-local hands out the subnet's .1 as gateway either way.
    for (dst, via) in [
        ("192.168.50.0/24", "\"10.66.0.1\""),
        ("10.66.0.0/24", "null"),
    ] {
        assert!(
            s.pod_routes.contains(&route(dst, via)),
            "{ctx}: {:?}",
            s.pod_routes
        );
    }
    assert_eq!(
        s.pod_routes.contains(&route("default", "\"10.66.0.1\"")),
        on("isDefaultGateway"),
        "{ctx}: {:?}",
        s.pod_routes
    );
    let mtu = extra["mtu"].as_u64().unwrap_or(1500);
    assert_eq!(s.pod_mtu, mtu, "{ctx}");
    assert_eq!(s.bridge_mtu, mtu, "{ctx}");
    assert_eq!(s.port["mtu"], mtu, "{ctx}");
    assert_eq!(s.port["master"], "diffbr0", "{ctx}");
    assert_eq!(s.port["hairpin"], on("hairpinMode"), "{ctx}");
    assert!(
        s.pod_flags.as_array().unwrap().contains(&json!("UP")),
        "{ctx}: {}",
        s.pod_flags
    );
    assert_eq!(s.arp_notify.trim(), "1", "{ctx}");
    if gateway {
        assert_eq!(s.bridge_addrs, ["10.66.0.1/24"], "{ctx}");
        assert_eq!(s.ip_forward.trim(), "1", "{ctx}");
    } else {
        assert!(s.bridge_addrs.is_empty(), "{ctx}: {:?}", s.bridge_addrs);
    }
}

fn compare(extra: Value) {
    let r = run("bridge", &extra);
    let o = run("plexus-bridge", &extra);
    assert_expected(&r, &extra, "the reference");
    assert_expected(&o, &extra, "plexus-bridge");
    assert_eq!(o.result, r.result, "result differs for {extra}");
    assert_eq!(o.pod_addrs, r.pod_addrs, "{extra}");
    assert_eq!(o.pod_routes, r.pod_routes, "{extra}");
    assert_eq!(o.pod_mtu, r.pod_mtu, "{extra}");
    assert_eq!(o.pod_flags, r.pod_flags, "{extra}");
    assert_eq!(o.arp_notify, r.arp_notify, "{extra}");
    assert_eq!(o.bridge_addrs, r.bridge_addrs, "{extra}");
    assert_eq!(o.bridge_mtu, r.bridge_mtu, "{extra}");
    assert_eq!(o.port, r.port, "{extra}");
    assert_eq!(o.ip_forward, r.ip_forward, "{extra}");
}

#[test]
fn same_as_reference_default_gateway_mtu() {
    require_root!();
    require_reference_plugins!();
    compare(json!({"isDefaultGateway": true, "mtu": 1450}));
}

#[test]
fn same_as_reference_gateway_hairpin() {
    require_root!();
    require_reference_plugins!();
    compare(json!({"isGateway": true, "hairpinMode": true}));
}

#[test]
fn same_as_reference_no_gateway() {
    require_root!();
    require_reference_plugins!();
    compare(json!({}));
}
