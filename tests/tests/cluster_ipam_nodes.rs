//! Cluster IPAM on simulated nodes sharing one macvlan segment
//! (tests/src/cluster/clusteripam.rs): real plexusd on each node serving
//! only cluster IPAM, the real reference macvlan plugin (/usr/lib/cni)
//! with plexus-cluster-ipam as its IPAM, against a real etcd or the
//! Kubernetes API stand-in.
//!
//! Covered here (phase 1's tests cover the allocator's rules on the store
//! and the plugin binary against an in-process handler):
//! - a real whereabouts NAD's `ipam` keys (its README's Kubernetes-datastore
//!   example, `type` changed) accepted unchanged; concurrent ADDs on three
//!   nodes never share an address, every pod pings every pod on the other
//!   nodes over net1; `plexusctl node remove` frees a node's blocks;
//! - kill -9 of plexusd during a burst of ADDs: no duplicate, the retried
//!   ADDs succeed, and after CNI GC nothing is held but the live pods;
//! - Kubernetes mode: the reconciler releases the addresses of pods gone
//!   (by UID) and never one whose pod exists, in the StatefulSet case (a pod
//!   deleted and re-created under the same name, on another node and on the
//!   same node); deleting a Node frees its blocks and borrowed addresses.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use plexus_tests::cluster::clusteripam::{net1, CipamNet, Store, IFNAME, POD_NAMESPACE};
use plexus_tests::cluster::multinet::reaches_all;
use plexus_tests::cluster::wait_for;
use plexus_tests::{require_overlay, require_reference_plugins, Netns};
use serde_json::{json, Value};

/// whereabouts' README example with the Kubernetes datastore, as a NAD
/// carries it: only `type` changed (the range is this test's segment).
fn whereabouts_ipam() -> Value {
    json!({
        "cniVersion": "0.3.0",
        "type": "plexus-cluster-ipam",
        "datastore": "kubernetes",
        "kubernetes": {"kubeconfig": "/etc/cni/net.d/whereabouts.d/whereabouts.kubeconfig"},
        "range": "192.168.70.0/24",
        "range_start": "192.168.70.10",
        "range_end": "192.168.70.200",
        "log_file": "/tmp/whereabouts.log",
        "log_level": "debug",
        "gateway": "192.168.70.1"
    })
}

fn in_range(a: &str, first: u8, last: u8, prefix: &str) -> bool {
    let ip: Ipv4Addr = a.parse().unwrap();
    a.starts_with(prefix) && (first..=last).contains(&ip.octets()[3])
}

/// No address twice among the store's holders; returns address → holder.
fn unique_held(net: &CipamNet) -> BTreeMap<String, Value> {
    let held = net.held();
    let mut by_addr = BTreeMap::new();
    for h in held {
        let a = h["address"].as_str().unwrap().to_string();
        if let Some(prev) = by_addr.insert(a.clone(), h.clone()) {
            panic!("{a} held twice: {prev} and {h}");
        }
    }
    by_addr
}

struct Pod {
    node: usize,
    ns: Netns,
    name: String,
    addr: String,
}

#[test]
fn concurrent_adds_on_three_nodes_never_share_and_all_pods_ping_over_net1() {
    require_overlay!();
    require_reference_plugins!();
    let ipam = whereabouts_ipam();
    let mut net = CipamNet::start(3, Store::Etcd, &ipam, &[]);
    // Five pods per node, every ADD at once.
    let mut pending = Vec::new();
    for node in 0..3 {
        for j in 0..5 {
            let name = format!("p{node}-{j}");
            let ns = Netns::new(&format!("c{node}{j}"));
            let child = net.spawn_cni("add", node, &ns, &name, &format!("uid-{name}"));
            pending.push((node, ns, name, child));
        }
    }
    let mut pods = Vec::new();
    for (node, ns, name, child) in pending {
        let r = child.wait().expect_success().json();
        // whereabouts' 0.3.0 result, the gateway never handed out.
        assert_eq!(r["cniVersion"], "0.3.0", "{r}");
        let addr = net1(&ns).unwrap_or_else(|| panic!("{name}: no address on net1"));
        assert!(
            in_range(&addr, 10, 200, "192.168.70."),
            "{name}: {addr} outside range_start..range_end"
        );
        pods.push(Pod {
            node,
            ns,
            name,
            addr,
        });
    }
    let addrs: BTreeSet<&str> = pods.iter().map(|p| p.addr.as_str()).collect();
    assert_eq!(addrs.len(), pods.len(), "an address given twice");
    // The store holds exactly these, each for its pod and node.
    let held = unique_held(&net);
    assert_eq!(held.len(), pods.len(), "{held:?}");
    for p in &pods {
        let h = &held[&p.addr];
        assert_eq!(h["podName"], p.name.as_str(), "{h}");
        assert_eq!(h["podNamespace"], POD_NAMESPACE);
        assert_eq!(h["interface"], IFNAME);
        assert_eq!(h["node"], net.node(p.node).name.as_str(), "{h}");
    }
    // One L2 segment: every pod reaches every pod on the other nodes.
    for p in &pods {
        let targets: Vec<String> = pods
            .iter()
            .filter(|q| q.node != p.node)
            .map(|q| q.addr.clone())
            .collect();
        wait_for(&format!("{} reaches {targets:?} over net1", p.name), || {
            reaches_all(&p.ns, &targets)
        });
    }
    // Node 2 leaves (its agent gone first): `plexusctl node remove` frees
    // its blocks and addresses; the others' stay.
    net.kill_agent(2);
    let out = net.ctl(0, &["node", "remove", "node2", "--json"]);
    let out: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(out["clusterIpamFreed"]["addresses"], 5, "{out}");
    let held = unique_held(&net);
    assert_eq!(held.len(), 10);
    assert!(held.values().all(|h| h["node"] != "node2"), "{held:?}");
    assert!(
        net.blocks().iter().all(|b| b["node"] != "node2"),
        "{:?}",
        net.blocks()
    );
    // DEL of every remaining pod leaves no address held.
    for p in pods.iter().filter(|p| p.node != 2) {
        net.cni("del", p.node, &p.ns, &p.name, &format!("uid-{}", p.name))
            .expect_success();
    }
    assert_eq!(unique_held(&net), BTreeMap::new());
}

#[test]
fn kill_9_during_a_burst_of_adds_gives_no_duplicate_and_gc_leaves_nothing() {
    require_overlay!();
    require_reference_plugins!();
    let ipam = json!({"type": "plexus-cluster-ipam", "range": "192.168.72.0/24"});
    let mut net = CipamNet::start(2, Store::Etcd, &ipam, &[]);
    let burst = 24;
    // Node 0's agent is frozen while the burst starts, so that its ADDs
    // queue up on the socket; it is thawed and killed a moment later, in
    // the middle of answering them.
    net.agents[0].pause();
    let mut pending = Vec::new();
    for j in 0..burst {
        // Node 1 allocates at the same time, from the same range.
        for node in [0, 1] {
            if node == 1 && j % 2 == 1 {
                continue;
            }
            let name = format!("b{node}-{j}");
            let ns = Netns::new(&format!("k{node}{j}"));
            let child = net.spawn_cni("add", node, &ns, &name, &format!("uid-{name}"));
            pending.push((node, ns, name, child));
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    net.agents[0].resume();
    std::thread::sleep(Duration::from_millis(40));
    net.kill_agent(0);
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for (node, ns, name, child) in pending {
        let out = child.wait();
        if out.success {
            let addr = net1(&ns).unwrap_or_else(|| panic!("{name}: no address on net1"));
            ok.push(Pod {
                node,
                ns,
                name,
                addr,
            });
        } else {
            assert_eq!(node, 0, "{name} on node 1 failed: {}", out.stderr);
            failed.push((ns, name));
        }
    }
    eprintln!(
        "{} ADD(s) succeeded, {} failed across the kill",
        ok.len(),
        failed.len()
    );
    // The runtime's DEL right after each failed ADD finds the agent away
    // (code 11: nothing freed, the runtime keeps the sandbox to retry).
    for (ns, name) in &failed {
        let _ = net.cni("del", 0, ns, name, &format!("uid-{name}"));
    }
    net.restart_agent(0);
    // Whatever the store holds, no address twice; every pod that got one
    // is its holder.
    let held = unique_held(&net);
    for p in &ok {
        assert_eq!(held[&p.addr]["podName"], p.name.as_str(), "{}", p.addr);
    }
    // Half of the failed pods the runtime retries (DEL, then ADD in a new
    // sandbox: an address no one else has); the other half it gives up
    // (pod gone, its DEL never delivered): only GC can free what their
    // ADDs may have stored before the kill.
    let mut abandoned = 0;
    for (k, (ns, name)) in failed.into_iter().enumerate() {
        if k % 2 == 1 {
            // The retried DEL succeeds; the pod gets a new sandbox.
            net.cni("del", 0, &ns, &name, &format!("uid-{name}"))
                .expect_success();
            let ns = Netns::new(&format!("r{k}"));
            net.cni("add", 0, &ns, &name, &format!("uid-{name}"))
                .expect_success();
            let addr = net1(&ns).expect("an address on net1 after the retry");
            ok.push(Pod {
                node: 0,
                ns,
                name,
                addr,
            });
        } else {
            abandoned += 1;
            drop(ns);
        }
    }
    let addrs: BTreeSet<&str> = ok.iter().map(|p| p.addr.as_str()).collect();
    assert_eq!(addrs.len(), ok.len(), "an address given twice");
    // CNI GC on each node with the live attachments: what is left is
    // exactly the live pods.
    let held = unique_held(&net);
    eprintln!("before GC: {} held, {} live pods", held.len(), ok.len());
    for node in [0, 1] {
        let name = net.node(node).name.clone();
        let valid: Vec<(String, String)> = ok
            .iter()
            .filter(|p| p.node == node)
            .map(|p| {
                let h = &held[&p.addr];
                (
                    h["containerID"].as_str().unwrap().to_string(),
                    IFNAME.to_string(),
                )
            })
            .collect();
        let (good, out) = net.gc(node, &ipam, &valid);
        assert!(good, "GC on {name}: {out}");
    }
    let held = unique_held(&net);
    let live: BTreeSet<&str> = ok.iter().map(|p| p.addr.as_str()).collect();
    let kept: BTreeSet<&str> = held.keys().map(String::as_str).collect();
    assert_eq!(
        kept, live,
        "after GC the store holds the live pods' addresses only ({abandoned} ADD(s) abandoned)"
    );
    for p in &ok {
        net.cni("del", p.node, &p.ns, &p.name, &format!("uid-{}", p.name))
            .expect_success();
    }
    assert_eq!(unique_held(&net), BTreeMap::new());
}

/// A pod object as the API holds it: its UID and node are the test's.
fn pod(net: &CipamNet, name: &str, uid: &str, node: usize) {
    let api = net.api.as_ref().unwrap();
    api.create(
        "pods",
        json!({
            "metadata": {"name": name, "namespace": POD_NAMESPACE, "uid": uid},
            "spec": {"nodeName": net.node(node).name, "containers": [{"name": "c", "image": "busybox"}]},
            "status": {"phase": "Running"}
        }),
    );
}

/// UIDs of the pods the store holds an address for.
fn held_uids(net: &CipamNet) -> BTreeSet<String> {
    unique_held(net)
        .values()
        .map(|h| h["podUid"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn kubernetes_reconciler_goes_by_uid_in_the_statefulset_case_and_node_deletion_frees() {
    require_overlay!();
    require_reference_plugins!();
    // A /28 in /30 blocks: four blocks, so a third node ends up borrowing.
    let ipam = json!({"type": "plexus-cluster-ipam", "range": "192.168.74.0/28"});
    let grace = "2";
    let mut net = CipamNet::start(
        3,
        Store::Kubernetes,
        &ipam,
        &["--cluster-ipam-reconcile-grace", grace],
    );
    let add = |net: &CipamNet, node: usize, name: &str, uid: &str| -> Netns {
        pod(net, name, uid, node);
        let ns = Netns::new(&format!("s{uid}"));
        net.cni("add", node, &ns, name, uid).expect_success();
        ns
    };
    let web_old = add(&net, 0, "web-0", "w1");
    let db_old = add(&net, 0, "db-0", "d1");
    let keep = add(&net, 1, "keep-0", "k1");
    assert_eq!(held_uids(&net), ["d1", "k1", "w1"].map(String::from).into());
    // web-0 and db-0 are deleted without a DEL reaching plexusd (their
    // node lost them), and re-created under the same names: web-0 on
    // another node, db-0 on the same one.
    let api = net.api.as_ref().unwrap();
    api.remove_pod(POD_NAMESPACE, "web-0");
    api.remove_pod(POD_NAMESPACE, "db-0");
    let web_new = add(&net, 1, "web-0", "w2");
    let db_new = add(&net, 0, "db-0", "d2");
    // The reconciler releases the old ones (their UIDs are gone)...
    wait_for("the reconciler releases w1 and d1", || {
        held_uids(&net) == ["d2", "k1", "w2"].map(String::from).into()
    });
    // ...and, however many rounds it runs, never the new ones whose names
    // the old ones had, nor a pod that simply exists.
    std::thread::sleep(Duration::from_secs(3 * grace.parse::<u64>().unwrap()));
    assert_eq!(held_uids(&net), ["d2", "k1", "w2"].map(String::from).into());
    for (ns, peers) in [(&web_new, [&db_new, &keep]), (&db_new, [&web_new, &keep])] {
        let targets: Vec<String> = peers.iter().map(|p| net1(p).unwrap()).collect();
        wait_for(&format!("{} reaches {targets:?}", ns.name), || {
            reaches_all(ns, &targets)
        });
    }
    drop((web_old, db_old));

    // node2 fills the free blocks, then borrows one address.
    let mut on2 = Vec::new();
    for j in 0.. {
        let name = format!("n2-{j}");
        pod(&net, &name, &format!("x{j}"), 2);
        let ns = Netns::new(&format!("x{j}"));
        let out = net.cni("add", 2, &ns, &name, &format!("x{j}"));
        assert!(out.success, "{name}: {}", out.stderr);
        on2.push(ns);
        let borrowed = unique_held(&net)
            .values()
            .any(|h| h["node"] == "node2" && h["borrowed"] == true);
        if borrowed {
            break;
        }
        assert!(j < 12, "node2 never borrowed: {:?}", net.blocks());
    }
    assert!(net.blocks().iter().any(|b| b["node"] == "node2"));
    // node2 is deleted from the cluster (its agent gone with it): the other
    // agents' node cleanup frees its blocks and its borrowed address.
    net.kill_agent(2);
    net.api.as_ref().unwrap().delete_node("node2");
    wait_for("node2's addresses and blocks are freed", || {
        unique_held(&net).values().all(|h| h["node"] != "node2")
            && net.blocks().iter().all(|b| b["node"] != "node2")
    });
    assert_eq!(held_uids(&net), ["d2", "k1", "w2"].map(String::from).into());
    for (ns, name, uid, node) in [
        (&web_new, "web-0", "w2", 1),
        (&db_new, "db-0", "d2", 0),
        (&keep, "keep-0", "k1", 1),
    ] {
        net.cni("del", node, ns, name, uid).expect_success();
    }
    assert_eq!(unique_held(&net), BTreeMap::new());
}
