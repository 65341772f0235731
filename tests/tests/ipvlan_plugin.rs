//! plexus-ipvlan end to end, through plexusctl inside a node netns.
//!
//! Most of these tests need a kernel with IPVLAN. Our development and CI
//! kernels have none, so those tests print a SKIP line there and really run
//! under `tests/vm/kernel-tests.sh` (a Debian kernel in QEMU). Inside the VM
//! (`PLEXUS_IN_VM=1`) a missing IPVLAN is a failure, not a skip.
//! One test runs only where IPVLAN is missing: the plugin must answer with
//! code 101 naming the missing feature and leave nothing behind.

use std::process::Command;
use std::sync::OnceLock;

use plexus_tests::{require_root, CniSandbox, Netns};
use serde_json::{json, Value};

const SKIP_MSG: &str =
    "kernel has no IPVLAN support (CONFIG_IPVLAN); run under tests/vm/run-in-vm.sh";

fn in_vm() -> bool {
    std::env::var("PLEXUS_IN_VM").is_ok_and(|v| v == "1")
}

/// Can this kernel create an ipvlan link? Probed once, on a veth inside a
/// throwaway namespace.
fn ipvlan_supported() -> bool {
    static PROBE: OnceLock<bool> = OnceLock::new();
    *PROBE.get_or_init(|| {
        let ns = Netns::new("probe");
        ns.ip(&["link", "add", "pr0", "type", "veth", "peer", "name", "pr1"]);
        let out = Command::new("ip")
            .args(["-n", &ns.name, "link", "add", "link", "pr0", "name", "prv0"])
            .args(["type", "ipvlan", "mode", "l2"])
            .output()
            .expect("spawn ip");
        let ok = out.status.success();
        if !ok {
            eprintln!(
                "ipvlan probe: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        ok
    })
}

/// Return early (SKIP) without IPVLAN, except inside the test VM where the
/// tests must run.
macro_rules! require_ipvlan {
    () => {
        if !ipvlan_supported() {
            assert!(
                !in_vm(),
                "PLEXUS_IN_VM=1 but this kernel cannot create ipvlan links (is ipvlan.ko loaded?)"
            );
            plexus_tests::skip_kernel_feature(SKIP_MSG);
            return;
        }
    };
}

/// A node namespace with an "uplink" veth pair (`up0`, `up0p`), both up, to
/// serve as ipvlan master.
fn node_with_uplink() -> Netns {
    let node = Netns::new("node");
    node.ip(&["link", "add", "up0", "type", "veth", "peer", "name", "up0p"]);
    node.ip(&["link", "set", "up0", "up"]);
    node.ip(&["link", "set", "up0p", "up"]);
    node
}

fn host_local(sb: &CniSandbox, subnet: &str, routes: Value) -> Value {
    json!({
        "type": "plexus-host-local",
        "subnet": subnet,
        "dataDir": sb.data_dir,
        "routes": routes,
    })
}

/// Write a single-plugin config for network `net` and return it.
fn write_net(sb: &CniSandbox, net: &str, keys: Value) -> Value {
    let mut conf = json!({"cniVersion": "1.0.0", "name": net, "type": "plexus-ipvlan"});
    conf.as_object_mut()
        .unwrap()
        .extend(keys.as_object().unwrap().clone());
    sb.write_conf(&format!("10-{net}.conf"), &conf);
    conf
}

/// `ip -d -j link show DEV` of one link.
fn link_details(ns: &Netns, dev: &str) -> Value {
    ns.ip_json(&["-d", "link", "show", dev])[0].clone()
}

fn ifindex(ns: &Netns, dev: &str) -> u64 {
    link_details(ns, dev)["ifindex"].as_u64().unwrap()
}

/// Only `lo` (plus `extra`) in `ns`.
fn assert_links(ns: &Netns, extra: &[&str]) {
    let mut want: Vec<String> = std::iter::once("lo")
        .chain(extra.iter().copied())
        .map(String::from)
        .collect();
    want.sort();
    // Fallback devices the kernel puts in every netns when a tunnel module
    // is loaded (the test VM loads ipip: tunl0).
    const FALLBACK: &[&str] = &["tunl0", "sit0", "ip6tnl0", "gre0", "gretap0", "erspan0"];
    let mut have: Vec<String> = ns
        .links()
        .into_iter()
        .filter(|l| !FALLBACK.contains(&l.as_str()))
        .collect();
    have.sort();
    assert_eq!(have, want, "links in {}", ns.name);
}

fn assert_error(err: &Value, code: u64, needle: &str) {
    assert_eq!(err["code"], code, "{err}");
    let text = format!(
        "{} {}",
        err["msg"].as_str().unwrap_or_default(),
        err["details"].as_str().unwrap_or_default()
    );
    assert!(text.contains(needle), "expected {needle:?} in {err}");
}

// ---------------------------------------------------------------------------
// Runs on any kernel.

#[test]
fn bad_configs_are_clear_errors_and_leave_nothing() {
    require_root!();
    let sb = CniSandbox::new();
    let node = node_with_uplink();
    let pod = Netns::new("pod");
    // An interface that exists only in the pod.
    pod.ip(&["link", "add", "pm0", "type", "veth", "peer", "name", "pm0p"]);
    let ipam = host_local(&sb, "10.80.0.0/24", json!([]));

    write_net(
        &sb,
        "badmode",
        json!({"master": "up0", "mode": "l9", "ipam": ipam}),
    );
    let e = sb
        .ctl(&node, "add", "badmode", Some(&pod.path()), &[])
        .err();
    assert_error(&e, 7, "unknown ipvlan mode \"l9\"");

    write_net(&sb, "nomaster", json!({"master": "nosuch0", "ipam": ipam}));
    let e = sb
        .ctl(&node, "add", "nomaster", Some(&pod.path()), &[])
        .err();
    assert_error(
        &e,
        7,
        "master \"nosuch0\" not found in the node network namespace",
    );

    write_net(&sb, "wrongns", json!({"master": "pm0", "ipam": ipam}));
    let e = sb
        .ctl(&node, "add", "wrongns", Some(&pod.path()), &[])
        .err();
    assert_error(&e, 7, "master \"pm0\" is in the pod network namespace");
    assert_error(&e, 7, "linkInContainer");

    write_net(
        &sb,
        "wrongns2",
        json!({"master": "up0", "linkInContainer": true, "ipam": ipam}),
    );
    let e = sb
        .ctl(&node, "add", "wrongns2", Some(&pod.path()), &[])
        .err();
    assert_error(&e, 7, "master \"up0\" is in the node network namespace");

    // No master and no default route in the node.
    write_net(&sb, "noroute", json!({"ipam": ipam}));
    let e = sb
        .ctl(&node, "add", "noroute", Some(&pod.path()), &[])
        .err();
    assert_error(&e, 7, "no default route");

    // No ipam and nothing chained before.
    write_net(&sb, "noipam", json!({"master": "up0"}));
    let e = sb.ctl(&node, "add", "noipam", Some(&pod.path()), &[]).err();
    assert_error(&e, 7, "no \"ipam\"");

    // CNI_IFNAME already taken in the pod.
    write_net(&sb, "clash", json!({"master": "up0", "ipam": ipam}));
    let e = sb
        .ctl(
            &node,
            "add",
            "clash",
            Some(&pod.path()),
            &[("CNI_IFNAME", "pm0")],
        )
        .err();
    assert_error(&e, 7, "already has an interface \"pm0\"");

    assert_links(&pod, &["pm0", "pm0p"]);
    assert_links(&node, &["up0", "up0p"]);
    assert!(sb.leases().is_empty(), "{:?}", sb.leases());

    // DEL of a config ADD rejected still works (and releases nothing).
    sb.ctl(&node, "del", "badmode", Some(&pod.path()), &[])
        .expect_success();
}

#[test]
fn kernel_without_ipvlan_is_code_101() {
    require_root!();
    if ipvlan_supported() {
        plexus_tests::skip_kernel_has_feature(
            "this kernel has IPVLAN; the missing-feature error cannot be provoked here",
        );
        return;
    }
    let sb = CniSandbox::new();
    let node = node_with_uplink();
    let pod = Netns::new("pod");
    write_net(
        &sb,
        "ipvnet",
        json!({"master": "up0", "ipam": host_local(&sb, "10.81.0.0/24", json!([]))}),
    );
    let e = sb.ctl(&node, "add", "ipvnet", Some(&pod.path()), &[]).err();
    assert_error(&e, 101, "no IPVLAN support");
    assert_error(&e, 101, "CONFIG_IPVLAN");
    assert_error(&e, 101, "ipvlan module");
    // Nothing left: no link in either namespace, no address held, no cache.
    assert_links(&pod, &[]);
    assert_links(&node, &["up0", "up0p"]);
    assert!(sb.leases().is_empty(), "{:?}", sb.leases());
    assert!(CniSandbox::files_under(&sb.cache_dir).is_empty());
    // DEL after the failed ADD is fine.
    sb.ctl(&node, "del", "ipvnet", Some(&pod.path()), &[])
        .expect_success();
}

// ---------------------------------------------------------------------------
// Need IPVLAN (the test VM).

#[test]
fn l2_pods_ping_check_del() {
    require_root!();
    require_ipvlan!();
    let sb = CniSandbox::new();
    let node = node_with_uplink();
    let (a, b) = (Netns::new("pa"), Netns::new("pb"));
    write_net(
        &sb,
        "l2net",
        json!({"master": "up0", "mtu": 1400,
               "ipam": host_local(&sb, "10.82.0.0/24", json!([{"dst": "10.99.0.0/16"}]))}),
    );
    let ra = sb
        .ctl(&node, "add", "l2net", Some(&a.path()), &[])
        .expect_success()
        .json();
    let rb = sb
        .ctl(&node, "add", "l2net", Some(&b.path()), &[])
        .expect_success()
        .json();

    // The result: one interface, in the sandbox, the address points at it.
    assert_eq!(ra["cniVersion"], "1.0.0");
    let ifaces = ra["interfaces"].as_array().unwrap();
    assert_eq!(ifaces.len(), 1, "{ra}");
    assert_eq!(ifaces[0]["name"], "eth0");
    assert_eq!(ifaces[0]["sandbox"], a.path().display().to_string());
    let mac = ifaces[0]["mac"].as_str().unwrap();
    assert_eq!(ra["ips"][0]["address"], "10.82.0.2/24");
    assert_eq!(ra["ips"][0]["gateway"], "10.82.0.1");
    assert_eq!(ra["ips"][0]["interface"], 0);
    assert_eq!(rb["ips"][0]["address"], "10.82.0.3/24");

    // The link: ipvlan l2 on up0 of the node, MTU, MAC shared with the master.
    let d = link_details(&a, "eth0");
    assert_eq!(d["linkinfo"]["info_kind"], "ipvlan", "{d}");
    assert_eq!(d["linkinfo"]["info_data"]["mode"], "l2", "{d}");
    assert_eq!(d["link_index"], ifindex(&node, "up0"), "{d}");
    assert_eq!(d["mtu"], 1400);
    assert_eq!(d["address"], mac);
    assert_eq!(link_details(&node, "up0")["address"], mac);
    assert!(d["flags"].as_array().unwrap().contains(&json!("UP")));
    assert_eq!(a.addrs("eth0"), ["10.82.0.2/24"]);
    let routes = a.ip_json(&["route", "show", "10.99.0.0/16"]);
    assert_eq!(routes[0]["gateway"], "10.82.0.1", "{routes}");
    let notify = a.sh("cat /proc/sys/net/ipv4/conf/eth0/arp_notify");
    assert_eq!(String::from_utf8_lossy(&notify.stdout).trim(), "1");

    // Two pods on one l2 master reach each other.
    assert!(a.ping("10.82.0.3"), "pod a cannot reach pod b");
    assert!(b.ping("10.82.0.2"), "pod b cannot reach pod a");

    sb.ctl(&node, "check", "l2net", Some(&a.path()), &[])
        .expect_success();
    // CHECK notices a removed address.
    a.ip(&["addr", "del", "10.82.0.2/24", "dev", "eth0"]);
    let e = sb.ctl(&node, "check", "l2net", Some(&a.path()), &[]).err();
    assert_error(&e, 100, "10.82.0.2/24");

    // DEL: no link, no allocation; and again (idempotent).
    for _ in 0..2 {
        sb.ctl(&node, "del", "l2net", Some(&a.path()), &[])
            .expect_success();
        sb.ctl(&node, "del", "l2net", Some(&b.path()), &[])
            .expect_success();
    }
    assert_links(&a, &[]);
    assert_links(&b, &[]);
    assert_links(&node, &["up0", "up0p"]);
    assert!(sb.leases().is_empty(), "{:?}", sb.leases());
}

#[test]
fn l3_pair_routes_between_subnets() {
    require_root!();
    require_ipvlan!();
    let sb = CniSandbox::new();
    let node = node_with_uplink();
    let (a, b) = (Netns::new("pa"), Netns::new("pb"));
    // Two networks, two subnets, one master: in l3 mode the pods route to
    // each other through the ipvlan driver (no ARP, no shared subnet).
    write_net(
        &sb,
        "l3a",
        json!({"master": "up0", "mode": "l3",
               "ipam": host_local(&sb, "10.83.1.0/24", json!([{"dst": "10.83.2.0/24"}]))}),
    );
    write_net(
        &sb,
        "l3b",
        json!({"master": "up0", "mode": "l3",
               "ipam": host_local(&sb, "10.83.2.0/24", json!([{"dst": "10.83.1.0/24"}]))}),
    );
    sb.ctl(&node, "add", "l3a", Some(&a.path()), &[])
        .expect_success();
    sb.ctl(&node, "add", "l3b", Some(&b.path()), &[])
        .expect_success();
    let d = link_details(&a, "eth0");
    assert_eq!(d["linkinfo"]["info_data"]["mode"], "l3", "{d}");
    assert!(a.ping("10.83.2.2"), "l3: pod a cannot reach pod b");
    assert!(b.ping("10.83.1.2"), "l3: pod b cannot reach pod a");
    sb.ctl(&node, "check", "l3a", Some(&a.path()), &[])
        .expect_success();
    // A config asking for another mode does not CHECK.
    write_net(
        &sb,
        "l3a",
        json!({"master": "up0", "mode": "l2",
               "ipam": host_local(&sb, "10.83.1.0/24", json!([{"dst": "10.83.2.0/24"}]))}),
    );
    let e = sb.ctl(&node, "check", "l3a", Some(&a.path()), &[]).err();
    assert_error(&e, 100, "mode l3");
    sb.ctl(&node, "del", "l3a", Some(&a.path()), &[])
        .expect_success();
    sb.ctl(&node, "del", "l3b", Some(&b.path()), &[])
        .expect_success();
    assert_links(&a, &[]);
    assert_links(&b, &[]);
    assert!(sb.leases().is_empty(), "{:?}", sb.leases());
}

#[test]
fn del_releases_ipam_when_netns_or_master_is_gone() {
    require_root!();
    require_ipvlan!();
    let sb = CniSandbox::new();
    let node = node_with_uplink();
    write_net(
        &sb,
        "gone",
        json!({"master": "up0", "ipam": host_local(&sb, "10.84.0.0/24", json!([]))}),
    );

    // The pod netns is deleted before DEL.
    let pod = Netns::new("pod");
    let path = pod.path();
    sb.ctl(&node, "add", "gone", Some(&path), &[])
        .expect_success();
    assert_eq!(sb.leases().len(), 1);
    drop(pod);
    assert!(!path.exists());
    sb.ctl(&node, "del", "gone", Some(&path), &[])
        .expect_success();
    assert!(sb.leases().is_empty(), "{:?}", sb.leases());

    // The master is deleted before DEL (the kernel removes the ipvlan link).
    let pod = Netns::new("pod");
    sb.ctl(&node, "add", "gone", Some(&pod.path()), &[])
        .expect_success();
    assert!(pod.has_link("eth0"));
    assert_eq!(sb.leases().len(), 1);
    node.ip(&["link", "del", "up0"]);
    sb.ctl(&node, "del", "gone", Some(&pod.path()), &[])
        .expect_success();
    assert!(sb.leases().is_empty(), "{:?}", sb.leases());
    assert_links(&pod, &[]);
    // And once more, with both gone.
    sb.ctl(&node, "del", "gone", Some(&pod.path()), &[])
        .expect_success();
}

#[test]
fn master_defaults_to_the_default_route_interface() {
    require_root!();
    require_ipvlan!();
    let sb = CniSandbox::new();
    let node = node_with_uplink();
    node.ip(&["link", "add", "up1", "type", "veth", "peer", "name", "up1p"]);
    node.ip(&["link", "set", "up1", "up"]);
    node.ip(&["addr", "add", "192.0.2.10/24", "dev", "up1"]);
    node.ip(&["route", "add", "default", "via", "192.0.2.1", "dev", "up1"]);
    let pod = Netns::new("pod");
    write_net(
        &sb,
        "dflt",
        json!({"ipam": host_local(&sb, "10.85.0.0/24", json!([]))}),
    );
    sb.ctl(&node, "add", "dflt", Some(&pod.path()), &[])
        .expect_success();
    let d = link_details(&pod, "eth0");
    assert_eq!(d["link_index"], ifindex(&node, "up1"), "{d}");
    sb.ctl(&node, "check", "dflt", Some(&pod.path()), &[])
        .expect_success();
    // CHECK compares the master: a config naming another one fails.
    write_net(
        &sb,
        "dflt",
        json!({"master": "up0", "ipam": host_local(&sb, "10.85.0.0/24", json!([]))}),
    );
    let e = sb.ctl(&node, "check", "dflt", Some(&pod.path()), &[]).err();
    assert_error(&e, 100, "not on master \"up0\"");
    sb.ctl(&node, "del", "dflt", Some(&pod.path()), &[])
        .expect_success();
    assert_links(&pod, &[]);
    assert!(sb.leases().is_empty());
}

#[test]
fn master_inside_the_pod_with_link_in_container() {
    require_root!();
    require_ipvlan!();
    let sb = CniSandbox::new();
    let node = Netns::new("node");
    let pod = Netns::new("pod");
    pod.ip(&["link", "add", "pm0", "type", "veth", "peer", "name", "pm0p"]);
    pod.ip(&["link", "set", "pm0", "up"]);
    pod.ip(&["link", "set", "pm0p", "up"]);
    write_net(
        &sb,
        "incont",
        json!({"master": "pm0", "linkInContainer": true, "mode": "l3s",
               "ipam": host_local(&sb, "10.86.0.0/24", json!([]))}),
    );
    sb.ctl(&node, "add", "incont", Some(&pod.path()), &[])
        .expect_success();
    let d = link_details(&pod, "eth0");
    assert_eq!(d["linkinfo"]["info_data"]["mode"], "l3s", "{d}");
    assert_eq!(d["link"], "pm0", "{d}");
    sb.ctl(&node, "check", "incont", Some(&pod.path()), &[])
        .expect_success();
    sb.ctl(&node, "del", "incont", Some(&pod.path()), &[])
        .expect_success();
    assert_links(&pod, &["pm0", "pm0p"]);
    assert_links(&node, &[]);
    assert!(sb.leases().is_empty());
}

/// A stand-in for an earlier plugin of a chain: its result names the master
/// (`up0`) as its only interface and carries the addresses to use.
const FAKE_PREV: &str = r#"#!/bin/sh
cat >/dev/null
case "$CNI_COMMAND" in
ADD) printf '%s' '{"cniVersion":"1.0.0","interfaces":[{"name":"up0"}],"ips":[{"address":"10.87.0.5/24","gateway":"10.87.0.1","interface":0}],"routes":[{"dst":"10.88.0.0/16"}],"dns":{}}' ;;
VERSION) printf '%s' '{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}' ;;
esac
"#;

#[test]
fn chained_without_ipam_uses_prev_result() {
    require_root!();
    require_ipvlan!();
    let mut sb = CniSandbox::new();
    let bin = sb.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let fake = bin.join("fake-prev");
    std::fs::write(&fake, FAKE_PREV).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    sb.cni_path = format!("{}:{}", bin.display(), sb.cni_path);

    let node = node_with_uplink();
    let pod = Netns::new("pod");
    sb.write_conf(
        "10-chain.conflist",
        &json!({"cniVersion": "1.0.0", "name": "chain",
                "plugins": [{"type": "fake-prev"}, {"type": "plexus-ipvlan"}]}),
    );
    let r = sb
        .ctl(&node, "add", "chain", Some(&pod.path()), &[])
        .expect_success()
        .json();
    assert_eq!(r["interfaces"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(r["interfaces"][0]["name"], "eth0");
    assert_eq!(r["ips"][0]["address"], "10.87.0.5/24");
    assert_eq!(r["ips"][0]["interface"], 0);
    assert_eq!(pod.addrs("eth0"), ["10.87.0.5/24"]);
    let d = link_details(&pod, "eth0");
    assert_eq!(d["link_index"], ifindex(&node, "up0"), "{d}");
    let routes = pod.ip_json(&["route", "show", "10.88.0.0/16"]);
    assert_eq!(routes[0]["gateway"], "10.87.0.1", "{routes}");
    sb.ctl(&node, "check", "chain", Some(&pod.path()), &[])
        .expect_success();
    sb.ctl(&node, "del", "chain", Some(&pod.path()), &[])
        .expect_success();
    assert_links(&pod, &[]);
}

#[test]
fn dual_stack_status_and_gc() {
    require_root!();
    require_ipvlan!();
    let sb = CniSandbox::new();
    let node = node_with_uplink();
    let (a, b) = (Netns::new("pa"), Netns::new("pb"));
    let conf = json!({"cniVersion": "1.1.0", "name": "ds", "type": "plexus-ipvlan",
        "master": "up0",
        "ipam": {"type": "plexus-host-local", "dataDir": sb.data_dir,
                 "ranges": [[{"subnet": "10.89.0.0/24"}], [{"subnet": "fd00:89::/64"}]]}});
    sb.write_conf("10-ds.conf", &conf);
    sb.ctl_args(&node, &["status", "ds"], &[]).expect_success();
    let r = sb
        .ctl(&node, "add", "ds", Some(&a.path()), &[])
        .expect_success()
        .json();
    assert_eq!(r["ips"].as_array().unwrap().len(), 2, "{r}");
    assert_eq!(r["ips"][1]["address"], "fd00:89::2/64");
    assert_eq!(r["ips"][1]["interface"], 0);
    sb.ctl(&node, "add", "ds", Some(&b.path()), &[])
        .expect_success();
    assert!(a.ping("10.89.0.3"));
    assert!(a.ping("fd00:89::3"), "IPv6 between l2 pods");
    let notify = a.sh("cat /proc/sys/net/ipv6/conf/eth0/ndisc_notify");
    assert_eq!(String::from_utf8_lossy(&notify.stdout).trim(), "1");
    sb.ctl(&node, "check", "ds", Some(&a.path()), &[])
        .expect_success();
    assert_eq!(sb.leases().len(), 4, "{:?}", sb.leases());
    // GC with no valid attachment releases every address.
    sb.ctl_args(&node, &["gc", "ds"], &[]).expect_success();
    assert!(sb.leases().is_empty(), "{:?}", sb.leases());
    sb.ctl(&node, "del", "ds", Some(&a.path()), &[])
        .expect_success();
    sb.ctl(&node, "del", "ds", Some(&b.path()), &[])
        .expect_success();
    assert_links(&a, &[]);
    assert_links(&b, &[]);
}

/// Runs plexus-ipvlan directly inside `node` for container `cid`.
fn call(node: &Netns, cmd: &str, cid: &str, pod: &Netns, conf: &Value) -> (bool, Value) {
    let netns = pod.path().display().to_string();
    plexus_tests::call_plugin(
        node,
        "plexus-ipvlan",
        cmd,
        cid,
        &[("CNI_NETNS", &netns)],
        conf,
    )
}

#[test]
fn del_with_another_pods_netns_leaves_that_pods_link_alone() {
    require_root!();
    require_ipvlan!();
    let sb = CniSandbox::new();
    let node = node_with_uplink();
    let conf = write_net(
        &sb,
        "wrongns",
        json!({"master": "up0", "ipam": host_local(&sb, "10.85.0.0/24", json!([]))}),
    );
    let (a, b) = (Netns::new("a"), Netns::new("b"));
    assert!(call(&node, "ADD", "pod-a", &a, &conf).0);
    let (ok, rb) = call(&node, "ADD", "pod-b", &b, &conf);
    assert!(ok, "{rb}");
    let b_index = ifindex(&b, "eth0");

    // DEL of pod A, but with pod B's netns (a runtime mix-up): A's address
    // is released, B's link is not A's and stays.
    let (ok, e) = call(&node, "DEL", "pod-a", &b, &conf);
    assert!(ok, "{e}");
    assert_eq!(ifindex(&b, "eth0"), b_index);
    assert_eq!(b.addrs("eth0"), ["10.85.0.3/24"]);
    assert_eq!(sb.leases().len(), 1, "{:?}", sb.leases());
    let mut with_prev = conf.clone();
    with_prev["prevResult"] = rb;
    let (ok, e) = call(&node, "CHECK", "pod-b", &b, &with_prev);
    assert!(ok, "pod B still checks out: {e}");

    // The right DELs remove each pod's own link.
    assert!(call(&node, "DEL", "pod-a", &a, &conf).0);
    assert_links(&a, &[]);
    assert!(call(&node, "DEL", "pod-b", &b, &conf).0);
    assert_links(&b, &[]);
    assert!(sb.leases().is_empty(), "{:?}", sb.leases());
}
