//! Bad network config or an unreachable store: the agent says what is wrong
//! and programs nothing (no device, no lease file, no lease, no route).

use std::time::Duration;

use plexus_tests::cluster::{Cluster, Daemon, Node, PREFIX};
use plexus_tests::require_overlay;
use serde_json::json;

/// Long enough for a debug-build agent to start, read the store and fail.
const FAIL_WITHIN: Duration = Duration::from_secs(20);

/// Wait until the agent exits or its log mentions `needle`; then check it
/// said so, failed (if it exited) and left nothing behind.
fn expect_clear_failure(c: &Cluster, node: &Node, mut d: Daemon, needle: &str) {
    let deadline = std::time::Instant::now() + FAIL_WITHIN;
    let exited = loop {
        if let Some(st) = d.try_wait() {
            break Some(st);
        }
        if d.log_text().to_lowercase().contains(&needle.to_lowercase())
            || std::time::Instant::now() > deadline
        {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let log = d.log_text();
    assert!(
        log.to_lowercase().contains(&needle.to_lowercase()),
        "the agent's log does not say {needle:?}:\n{log}"
    );
    if let Some(st) = exited {
        assert!(!st.success(), "a bad config must not exit 0:\n{log}");
    }
    assert!(!d.is_ready(), "never ready with a bad config");
    drop(d);
    assert!(
        !node.ns.links().iter().any(|l| l.starts_with("flannel")),
        "half-programmed: {:?}",
        node.ns.links()
    );
    assert!(!node.subnet_env_path().exists(), "a lease file was written");
    assert!(c.lease_of(&node.ip).is_none(), "a lease was taken");
    let routes = node.ip_json(&["route", "show"]);
    assert_eq!(
        routes.as_array().unwrap().len(),
        1,
        "only the underlay's own route: {routes}"
    );
}

#[test]
fn missing_config_key() {
    require_overlay!();
    let c = Cluster::new(1);
    let n = &c.nodes[0];
    expect_clear_failure(
        &c,
        n,
        n.spawn_agent(&c.etcd.url(), &[]),
        &format!("{PREFIX}/config"),
    );
}

#[test]
fn network_too_small() {
    require_overlay!();
    let c = Cluster::new(1);
    c.set_config(&json!({"Network": "10.5.0.0/29", "Backend": {"Type": "vxlan"}}));
    let n = &c.nodes[0];
    expect_clear_failure(&c, n, n.spawn_agent(&c.etcd.url(), &[]), "too small");
}

#[test]
fn unknown_backend() {
    require_overlay!();
    let c = Cluster::new(1);
    c.set_config(&json!({"Network": "10.5.0.0/16", "Backend": {"Type": "bogus"}}));
    let n = &c.nodes[0];
    expect_clear_failure(&c, n, n.spawn_agent(&c.etcd.url(), &[]), "bogus");
}

#[test]
fn unreachable_store() {
    require_overlay!();
    let c = Cluster::new(1);
    c.set_config(&json!({"Network": "10.5.0.0/16", "Backend": {"Type": "vxlan"}}));
    let n = &c.nodes[0];
    // An address on the test's own underlay that nobody holds.
    let d = n.spawn_agent("etcd://10.200.0.99:2379", &[]);
    expect_clear_failure(&c, n, d, "10.200.0.99");
}
