//! A lost, frozen or reset store, an agent killed mid-request and a node
//! whose address changed (issue 18): plexusd on simulated nodes against a
//! real etcd that the tests wipe, freeze and thaw.
//!
//! Covered: etcd restarted with its data wiped keeps every agent running
//! and every pod talking (overlay and routed), the agents wait unready, and
//! once the store is re-seeded they write back their leases, node records
//! and blocks with every allocation before serving, so no address a running
//! pod holds is handed out again; an allocation that landed in etcd but
//! whose answer was lost (the agent gave up) is freed by the DEL that
//! follows; an
//! ADD in flight when plexusd is killed fails with code 11; a container ID
//! beyond the limit is refused with code 4; a node restarted with a new
//! underlay address takes its lease along, the other nodes follow, its
//! pods keep talking and its cni0 route stays.

use std::time::Duration;

use plexus_agent_api::{call, Allocation, Request};
use plexus_tests::cluster::routed::{
    add_pool, add_routed_pod, allocations_of, established, first_ip, write_routed_conf, ROUTED_NET,
};
use plexus_tests::cluster::{key_to_cidr, vxlan_config, wait_for, Cluster, Daemon, Node};
use plexus_tests::require_overlay;
use serde_json::Value;

const OVERLAY: &str = "10.244.0.0/16";

fn node_status(n: &Node) -> Value {
    serde_json::from_str(&plexus_tests::cluster::routed::plexusctl(
        n,
        &["node", "--json", "status", "--run-dir"],
    ))
    .unwrap()
}

/// Both networks on two nodes, one overlay pod and one routed pod each.
struct Both {
    agents: Vec<Daemon>,
    overlay: Vec<plexus_tests::cluster::Pod>,
    routed: Vec<(plexus_tests::Netns, String)>,
    c: Cluster,
}

fn both() -> Both {
    let c = Cluster::new(2);
    c.set_config(&vxlan_config(OVERLAY));
    add_pool(&c, 26);
    let agents = c.start_agents(&[]);
    let mut overlay = Vec::new();
    let mut routed = Vec::new();
    for (i, n) in c.nodes.iter().enumerate() {
        write_routed_conf(n);
        wait_for(&format!("{}: mesh Established", n.name), || {
            established(n, 1)
        });
        overlay.push(n.add_pod(&format!("ov{i}")));
        let p = plexus_tests::Netns::new(&format!("rt{i}"));
        let ip = first_ip(&add_routed_pod(n, &p, "eth0"));
        routed.push((p, ip));
    }
    Both {
        agents,
        overlay,
        routed,
        c,
    }
}

impl Both {
    fn all_talk(&self) -> bool {
        self.overlay[0].ns.ping(self.overlay[1].ip4())
            && self.overlay[1].ns.ping(self.overlay[0].ip4())
            && self.routed[0].0.ping(&self.routed[1].1)
            && self.routed[1].0.ping(&self.routed[0].1)
    }

    fn reseed(&self) {
        self.c.set_config(&vxlan_config(OVERLAY));
        add_pool(&self.c, 26);
    }
}

#[test]
fn a_wiped_store_stops_no_agent_and_gets_every_record_back() {
    require_overlay!();
    let mut b = both();
    wait_for("pods talk on both networks", || b.all_talk());
    let leases: Vec<(String, Value)> = b.c.leases();
    let held: Vec<usize> =
        b.c.nodes
            .iter()
            .map(|n| allocations_of(&b.c, &n.name))
            .collect();
    assert_eq!(held, [1, 1]);

    b.c.etcd.restart_wiped();
    // The agents notice, wait unready, keep the data plane: pods talk on.
    for n in &b.c.nodes {
        wait_for(&format!("{} waits for the store", n.name), || {
            let st = node_status(n);
            st["ready"] == false && st["waiting"].as_object().is_some_and(|w| !w.is_empty())
        });
    }
    std::thread::sleep(Duration::from_secs(3));
    for a in &mut b.agents {
        assert!(a.try_wait().is_none(), "an agent exited:\n{}", a.log_text());
    }
    assert!(
        b.all_talk(),
        "pods lost connectivity while the store was empty"
    );

    // Re-seeded: every node writes back its lease (the same subnet), its
    // node record and its block with the pod's address.
    b.reseed();
    for (key, v) in &leases {
        wait_for(&format!("lease {key} is back"), || {
            b.c.leases()
                .iter()
                .any(|(k, w)| k == key && w["PublicIP"] == v["PublicIP"])
        });
    }
    for n in &b.c.nodes {
        wait_for(&format!("{}'s block is back with its pod", n.name), || {
            allocations_of(&b.c, &n.name) == 1
        });
        wait_for(&format!("{} ready again", n.name), || {
            node_status(n)["ready"] == true
        });
    }
    // A new pod on node1 never gets an address a running pod holds.
    let p = plexus_tests::Netns::new("rtnew");
    let ip = first_ip(&add_routed_pod(&b.c.nodes[1], &p, "eth0"));
    assert!(
        b.routed.iter().all(|(_, held)| *held != ip),
        "{ip} handed out twice"
    );
    wait_for("everything talks", || {
        b.all_talk() && p.ping(&b.routed[0].1)
    });
    drop(b.agents);
}

#[test]
fn an_allocation_whose_answer_was_lost_is_freed_by_the_del_that_follows() {
    require_overlay!();
    let c = Cluster::new(1);
    add_pool(&c, 26);
    // The agent reaches etcd through a proxy that can lose etcd's answers
    // while passing the requests on (a store stalled after a write).
    let proxy = plexus_tests::proxy::FaultProxy::start(
        &c.etcd_ns,
        plexus_tests::cluster::ETCD_IP,
        format!("{}:2379", plexus_tests::cluster::ETCD_IP)
            .parse()
            .unwrap(),
    );
    let n = &c.nodes[0];
    let agent = n.start_agent(&format!("etcd://{}", proxy.addr), &[]);
    write_routed_conf(n);
    // A first pod: the block exists, the next allocation is one write.
    let first = plexus_tests::Netns::new("fz0");
    add_routed_pod(n, &first, "eth0");
    let pod = plexus_tests::Netns::new("fz1");
    proxy.lose_answers(true);
    let err = n
        .cni
        .ctl(&n.ns, "add", ROUTED_NET, Some(&pod.path()), &[])
        .err();
    assert_eq!(err["code"], 11, "{err}");
    // The write landed although no one heard of it.
    proxy.lose_answers(false);
    assert_eq!(allocations_of(&c, &n.name), 2, "the lost write did land");
    // The runtime's DEL after the failed ADD frees it.
    n.cni
        .ctl(&n.ns, "del", ROUTED_NET, Some(&pod.path()), &[])
        .expect_success();
    assert_eq!(allocations_of(&c, &n.name), 1, "the DEL freed what landed");
    drop(agent);
}

#[test]
fn an_add_in_flight_when_the_agent_is_killed_gets_11() {
    require_overlay!();
    let c = Cluster::new(1);
    add_pool(&c, 26);
    let mut agents = c.start_agents(&[]);
    let n = &c.nodes[0];
    write_routed_conf(n);
    let pod = plexus_tests::Netns::new("kill0");
    // The ADD waits on the frozen store inside the agent; then the agent dies.
    c.etcd.freeze(true);
    let ctl = n
        .cni
        .spawn_ctl(&n.ns, "add", ROUTED_NET, Some(&pod.path()), &[]);
    std::thread::sleep(Duration::from_secs(2));
    agents[0].kill();
    let out = ctl.wait();
    c.etcd.freeze(false);
    let err = out.err();
    assert_eq!(err["code"], 11, "{err}");
}

#[test]
fn a_container_id_beyond_the_limit_is_refused_with_4() {
    require_overlay!();
    let c = Cluster::new(1);
    add_pool(&c, 26);
    let agents = c.start_agents(&[]);
    let n = &c.nodes[0];
    let sock = n.run_dir.join("plexusd.sock");
    let huge = "c".repeat(900 * 1024);
    let e = n.ns.run(|| {
        call::<Allocation>(
            &sock,
            &Request::Allocate {
                network: "routed".into(),
                container_id: huge,
                ifname: "eth0".into(),
                pool: None,
                addresses: Vec::new(),
            },
            Duration::from_secs(10),
        )
        .unwrap_err()
    });
    match e {
        plexus_agent_api::ClientError::Agent(a) => assert_eq!(a.code, Some(4), "{}", a.error),
        e => panic!("{e}"),
    }
    assert_eq!(allocations_of(&c, &n.name), 0);
    drop(agents);
}

#[test]
fn a_node_whose_address_changed_takes_its_lease_along() {
    require_overlay!();
    let c = Cluster::new(2);
    c.set_config(&vxlan_config(OVERLAY));
    let mut agents = c.start_agents(&[]);
    let (n0, n1) = (&c.nodes[0], &c.nodes[1]);
    let pod0 = n0.add_pod("mv0");
    let pod1 = n1.add_pod("mv1");
    wait_for("pods talk", || pod1.ns.ping(pod0.ip4()));
    let (key, before) = c.lease_of(&n0.ip).expect("node0's lease");
    let subnet = key_to_cidr(&key);
    let mac = before["BackendData"]["VtepMAC"]
        .as_str()
        .unwrap()
        .to_string();

    // node0 comes back at 10.200.0.20.
    agents[0].stop();
    n0.ns
        .ip(&["addr", "del", &format!("{}/24", n0.ip), "dev", "eth0"]);
    n0.ns.ip(&["addr", "add", "10.200.0.20/24", "dev", "eth0"]);
    let mut moved = n0.spawn_agent(&c.etcd.url(), &["--public-ip", "10.200.0.20"]);
    moved.wait_ready();
    agents[0] = moved;
    let (k, after) = c.lease_of("10.200.0.20").expect("the lease moved");
    assert_eq!(k, key, "same subnet");
    assert_eq!(after["BackendData"]["VtepMAC"], mac.as_str());
    assert!(
        c.lease_of(&n0.ip).is_none(),
        "the old address's lease lingers"
    );
    wait_for("node1 follows the move", || {
        n1.vxlan_entries("flannel.1", &subnet, &mac, "10.200.0.20")
            .all()
    });
    assert_eq!(n0.route_to(&subnet).expect("cni0's route")["dev"], "cni0");
    wait_for("pods talk again", || pod1.ns.ping(pod0.ip4()));
    assert!(pod0.ns.ping(pod1.ip4()));
    drop(agents);
}
