//! plexus-bridge's ipMasq and macspoofchk rules, written over
//! NETLINK_NETFILTER: `nft list` must show exactly the rules the plugin
//! wrote when it ran `nft -f` (checked against the expected text, and
//! against `nft` itself fed the old plugin's script in another netns), DEL
//! must remove the chains, and GC must remove only stale attachments' chains.

use std::process::{Command, Stdio};

use plexus_tests::{output_with_stdin, require_root, CniSandbox, Netns};
use serde_json::{json, Value};

const NET: &str = "nftnet";

fn setup() -> (CniSandbox, Netns) {
    setup_net(NET, "1.0.0")
}

/// GC reaches the plugin only from version 1.1.0 on (before, the runtime
/// only DELs the cached attachments not listed).
fn setup_net(net: &str, version: &str) -> (CniSandbox, Netns) {
    let sb = CniSandbox::new();
    let conf = json!({
        "cniVersion": version,
        "name": net,
        "plugins": [{
            "type": "plexus-bridge",
            "bridge": "nftbr0",
            "isGateway": true,
            "ipMasq": true,
            "macspoofchk": true,
            "ipam": {
                "type": "plexus-host-local",
                "ranges": [[{"subnet": "10.89.0.0/24"}], [{"subnet": "fd89::/64"}]],
                "dataDir": sb.data_dir,
            }
        }]
    });
    sb.write_conf("10-nftnet.conflist", &conf);
    (sb, Netns::new("nftnode"))
}

fn nft_available() -> bool {
    Command::new("nft")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn nft_list(node: &Netns, family: &str) -> String {
    node.nft_table(family, "plexus_bridge")
}

fn nft_script(node: &Netns, script: &str) {
    let out = output_with_stdin(node.cmd("nft").args(["-f", "-"]), script.as_bytes());
    assert!(
        out.status.success(),
        "nft -f failed: {}\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One ADD through plexusctl: (container ID, result).
fn add(sb: &CniSandbox, node: &Netns, pod: &Netns) -> (String, Value) {
    add_net(sb, node, pod, NET)
}

fn add_net(sb: &CniSandbox, node: &Netns, pod: &Netns, net: &str) -> (String, Value) {
    let before = CniSandbox::files_under(&sb.cache_dir);
    let r = sb
        .ctl(node, "add", net, Some(&pod.path()), &[])
        .expect_success()
        .json();
    let cid = CniSandbox::files_under(&sb.cache_dir)
        .into_iter()
        .filter(|f| !before.contains(f))
        .find_map(|f| {
            f.strip_prefix(&format!("results/{net}-"))?
                .strip_suffix("-eth0")
                .map(str::to_string)
        })
        .expect("cached result");
    (cid, r)
}

/// The 16 hex digits the plugin names chains with: SHA-256 of
/// "NET\0IF\0ID\0" (through sha256sum: the test needs no hashing crate).
fn chain_hash(cid: &str) -> String {
    let out = output_with_stdin(
        &mut Command::new("sha256sum"),
        format!("{NET}\0eth0\0{cid}\0").as_bytes(),
    );
    String::from_utf8_lossy(&out.stdout)[..16].to_string()
}

struct Expected {
    masq_table: String,
    spoof_table: String,
    /// What the nft-based plugin fed `nft -f` for the same attachment.
    old_script: String,
}

fn expected(cid: &str, r: &Value) -> Expected {
    let h = chain_hash(cid);
    let c = format!("plexus-bridge net: {NET}, if: eth0, id: {cid}");
    let ips: Vec<&str> = r["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["address"].as_str().unwrap())
        .collect();
    let (v4, v6) = (
        ips[0].split('/').next().unwrap(),
        ips[1].split('/').next().unwrap(),
    );
    assert!(
        ips[0].ends_with("/24") && ips[1].ends_with("/64"),
        "{ips:?}"
    );
    let veth = r["interfaces"][1]["name"].as_str().unwrap();
    let mac = r["interfaces"][2]["mac"].as_str().unwrap();
    let masq4 = format!(
        "ip saddr {v4} ip daddr != 10.89.0.0/24 ip daddr != 224.0.0.0/4 masquerade comment \"{c}\""
    );
    let masq6 = format!(
        "ip6 saddr {v6} ip6 daddr != fd89::/64 ip6 daddr != ff00::/8 masquerade comment \"{c}\""
    );
    let spoof = format!("iifname \"{veth}\" ether saddr != {mac} drop comment \"{c}\"");
    Expected {
        masq_table: format!(
            "table inet plexus_bridge {{\n\tchain masq-{h} {{\n\t\tcomment \"{c}\"\n\t\t\
             type nat hook postrouting priority srcnat; policy accept;\n\t\t{masq4}\n\t\t{masq6}\n\t}}\n}}\n"
        ),
        spoof_table: format!(
            "table bridge plexus_bridge {{\n\tchain spoof-{h} {{\n\t\tcomment \"{c}\"\n\t\t\
             type filter hook prerouting priority dstnat; policy accept;\n\t\t{spoof}\n\t}}\n}}\n"
        ),
        old_script: format!(
            "add table inet plexus_bridge\n\
             add chain inet plexus_bridge masq-{h} {{ type nat hook postrouting priority srcnat; policy accept; comment \"{c}\"; }}\n\
             flush chain inet plexus_bridge masq-{h}\n\
             add rule inet plexus_bridge masq-{h} {masq4}\n\
             add rule inet plexus_bridge masq-{h} {masq6}\n\
             add table bridge plexus_bridge\n\
             add chain bridge plexus_bridge spoof-{h} {{ type filter hook prerouting priority -300; policy accept; comment \"{c}\"; }}\n\
             flush chain bridge plexus_bridge spoof-{h}\n\
             add rule bridge plexus_bridge spoof-{h} {spoof}\n"
        ),
    }
}

#[test]
fn rules_read_back_exactly_and_del_removes_them() {
    require_root!();
    if !nft_available() {
        plexus_tests::skip("no nft binary to read the ruleset back (apt-get install nftables)");
        return;
    }
    let (sb, node) = setup();
    let pod = Netns::new("nftpod");
    let (cid, r) = add(&sb, &node, &pod);
    let want = expected(&cid, &r);
    assert_eq!(nft_list(&node, "inet"), want.masq_table);
    assert_eq!(nft_list(&node, "bridge"), want.spoof_table);

    // The nft-based plugin's script, through nft, lists the same.
    let other = Netns::new("nftref");
    nft_script(&other, &want.old_script);
    assert_eq!(nft_list(&other, "inet"), want.masq_table);
    assert_eq!(nft_list(&other, "bridge"), want.spoof_table);

    sb.ctl(&node, "check", NET, Some(&pod.path()), &[])
        .expect_success();
    sb.ctl(&node, "del", NET, Some(&pod.path()), &[])
        .expect_success();
    assert_eq!(nft_list(&node, "inet"), "table inet plexus_bridge {\n}\n");
    assert_eq!(
        nft_list(&node, "bridge"),
        "table bridge plexus_bridge {\n}\n"
    );
    // DEL again: nothing left to remove, still a success.
    sb.ctl(&node, "del", NET, Some(&pod.path()), &[])
        .expect_success();
    assert!(sb.leases().is_empty(), "{:?}", sb.leases());
}

#[test]
fn gc_removes_only_stale_chains_of_this_network() {
    require_root!();
    if !nft_available() {
        plexus_tests::skip("no nft binary to read the ruleset back (apt-get install nftables)");
        return;
    }
    let (sb, node) = setup_net(NET, "1.1.0");
    let (a, b) = (Netns::new("nftga"), Netns::new("nftgb"));
    let (a_id, _) = add(&sb, &node, &a);
    let (b_id, _) = add(&sb, &node, &b);
    // Another network's chain (and a chain without our comment) survive.
    nft_script(
        &node,
        "add chain inet plexus_bridge masq-other { comment \"plexus-bridge net: othernet, if: eth0, id: x\"; }\n\
         add chain bridge plexus_bridge operator-chain\n",
    );
    sb.ctl_args(&node, &["gc", NET, "--valid", &format!("{a_id}/eth0")], &[])
        .expect_success();
    let (masq, spoof) = (nft_list(&node, "inet"), nft_list(&node, "bridge"));
    let (ha, hb) = (chain_hash(&a_id), chain_hash(&b_id));
    assert!(masq.contains(&format!("chain masq-{ha} ")), "{masq}");
    assert!(spoof.contains(&format!("chain spoof-{ha} ")), "{spoof}");
    assert!(!masq.contains(&hb) && !masq.contains(&b_id), "{masq}");
    assert!(!spoof.contains(&hb) && !spoof.contains(&b_id), "{spoof}");
    assert!(masq.contains("chain masq-other "), "{masq}");
    assert!(spoof.contains("chain operator-chain "), "{spoof}");
    assert_eq!(masq.matches("masquerade").count(), 2, "{masq}");

    sb.ctl(&node, "del", NET, Some(&a.path()), &[])
        .expect_success();
    sb.ctl(&node, "del", NET, Some(&b.path()), &[])
        .expect_success();
    let masq = nft_list(&node, "inet");
    assert!(!masq.contains("masquerade"), "{masq}");
}

#[test]
fn gc_keeps_live_chains_of_networks_with_long_names() {
    require_root!();
    if !nft_available() {
        plexus_tests::skip("no nft binary to read the ruleset back (apt-get install nftables)");
        return;
    }
    // With long network names the comment used to lose the container ID's
    // end (cnitool's IDs are 28 characters: from about 80 on) and GC
    // removed live pods' chains.
    for net in [format!("net-{}", "x".repeat(76)), "n".repeat(120)] {
        let net = net.as_str();
        let (sb, node) = setup_net(net, "1.1.0");
        let (a, b) = (Netns::new("nftla"), Netns::new("nftlb"));
        let (a_id, _) = add_net(&sb, &node, &a, net);
        let (b_id, _) = add_net(&sb, &node, &b, net);
        let masq = nft_list(&node, "inet");
        assert_eq!(masq.matches("masquerade").count(), 4, "{masq}");
        sb.ctl_args(&node, &["gc", net, "--valid", &format!("{a_id}/eth0")], &[])
            .expect_success();
        let (masq, spoof) = (nft_list(&node, "inet"), nft_list(&node, "bridge"));
        // Pod A (dual stack): both masquerade rules and its spoof check stay.
        assert_eq!(masq.matches("masquerade").count(), 2, "{net}: {masq}");
        assert_eq!(masq.matches("chain masq-").count(), 1, "{net}: {masq}");
        assert_eq!(spoof.matches("chain spoof-").count(), 1, "{net}: {spoof}");
        assert!(!masq.contains(&b_id[..20]), "{net}: {masq}");
        // Everything of a still listed pod survives a second GC too.
        sb.ctl_args(&node, &["gc", net, "--valid", &format!("{a_id}/eth0")], &[])
            .expect_success();
        assert_eq!(nft_list(&node, "inet").matches("masquerade").count(), 2);
        sb.ctl(&node, "del", net, Some(&a.path()), &[])
            .expect_success();
        sb.ctl(&node, "del", net, Some(&b.path()), &[])
            .expect_success();
        assert!(!nft_list(&node, "inet").contains("masquerade"));
    }
}
