//! An agent restart keeps the node's subnet and VTEP MAC and drops no
//! packet: SIGTERM leaves the data plane in place and the new process takes
//! it over as it is.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};

use plexus_tests::cluster::{vxlan_config, wait_for, Cluster};
use plexus_tests::{require_overlay, Netns};

/// `ping -i 0.05` from `from` to `to`, output to a file; killed by pid.
struct Ping {
    child: Child,
    out: tempfile::NamedTempFile,
}

impl Ping {
    fn start(from: &Netns, to: &str) -> Ping {
        let out = tempfile::NamedTempFile::new().unwrap();
        // nsenter execs ping: the child's pid is ping's.
        let child = Command::new("nsenter")
            .arg(format!("--net={}", from.path().display()))
            .args(["ping", "-n", "-i", "0.05", "-W", "1", to])
            .stdout(out.reopen().unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ping");
        Ping { child, out }
    }

    /// The icmp_seq of every reply so far.
    fn replies(&self) -> BTreeSet<u64> {
        std::fs::read_to_string(self.out.path())
            .unwrap()
            .lines()
            .filter_map(|l| l.split("icmp_seq=").nth(1))
            .filter_map(|s| s.split_whitespace().next()?.parse().ok())
            .collect()
    }

    fn stop(&mut self) {
        // SAFETY: kill(2) on our own unreaped child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
    }
}

impl Drop for Ping {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn restart_keeps_subnet_mac_and_every_packet() {
    require_overlay!();
    let c = Cluster::new(2);
    c.set_config(&vxlan_config("10.5.0.0/16"));
    let mut a = c.nodes[0].start_agent(&c.etcd.url(), &[]);
    let mut b = c.nodes[1].start_agent(&c.etcd.url(), &[]);
    let pa = c.nodes[0].add_pod("pa");
    let pb = c.nodes[1].add_pod("pb");
    wait_for("the pods reach each other", || pa.ns.ping(pb.ip4()));

    let before: Vec<_> = c
        .nodes
        .iter()
        .map(|n| {
            (
                n.subnet_env("FLANNEL_SUBNET").unwrap(),
                n.mac("flannel.1"),
                c.lease_of(&n.ip).unwrap(),
            )
        })
        .collect();

    let mut ping = Ping::start(&pa.ns, pb.ip4());
    wait_for("the ping gets replies", || !ping.replies().is_empty());

    // Stopped, the agent leaves everything in place: traffic keeps flowing.
    let st = a.stop();
    assert!(
        st.success(),
        "SIGTERM exits 0 ({st}); log:\n{}",
        a.log_text()
    );
    assert!(c.nodes[0].ns.has_link("flannel.1"));
    let seen = ping.replies().len();
    wait_for("replies while node0's agent is down", || {
        ping.replies().len() > seen + 5
    });
    a.start_again();
    a.wait_ready();
    b.restart();
    // Some replies after both restarts, so every packet sent during them
    // has had its chance to come back.
    let seen = ping.replies().len();
    wait_for("replies after the restarts", || {
        ping.replies().len() > seen + 10
    });
    ping.stop();

    let replies = ping.replies();
    let last = *replies.iter().next_back().unwrap();
    let lost: Vec<u64> = (1..=last).filter(|s| !replies.contains(s)).collect();
    assert!(
        lost.is_empty(),
        "lost icmp_seq {lost:?} of 1..={last} across the restarts"
    );

    for (i, n) in c.nodes.iter().enumerate() {
        let after = (
            n.subnet_env("FLANNEL_SUBNET").unwrap(),
            n.mac("flannel.1"),
            c.lease_of(&n.ip).unwrap(),
        );
        assert_eq!(
            before[i], after,
            "node{i}: subnet, VTEP MAC or lease changed"
        );
    }
    assert_eq!(c.leases().len(), 2);
}

#[test]
fn restart_after_the_lease_key_was_lost_takes_the_same_subnet() {
    require_overlay!();
    let c = Cluster::new(1);
    c.set_config(&vxlan_config("10.5.0.0/16"));
    let mut a = c.nodes[0].start_agent(&c.etcd.url(), &[]);
    let n = &c.nodes[0];
    let (key, lease) = c.lease_of(&n.ip).unwrap();
    let st = a.stop();
    assert!(st.success(), "{st}");
    // The store lost the lease (expired, deleted): the old lease file
    // still names the subnet, and flannel asks for it again.
    c.del_lease(&key);
    a.start_again();
    a.wait_ready();
    let (key2, lease2) = c.lease_of(&n.ip).unwrap();
    assert_eq!(key, key2);
    assert_eq!(lease, lease2, "the VTEP MAC survives too");
}
