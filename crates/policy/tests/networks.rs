//! What is particular to several networks per pod, and updates that must
//! converge: a NetworkPolicy and a MultiNetworkPolicy with different
//! effects at once, policy-for naming other networks or none, bare
//! network names, a pod on one network twice, a pod re-created with a new
//! address.

mod common;

use common::*;
use plexus_policy::{api, Kind, Network};
use serde_json::json;

fn deny_ingress_x() -> serde_json::Value {
    json!({"podSelector": {}, "ingress": [], "policyTypes": ["Ingress"]})
}

#[test]
fn netpol_and_multinet_policy_at_once() {
    let mut m = Model::netpol();
    // eth0: x closed to everyone. net1: x/a only reachable from y.
    m.policy_of(Kind::NetworkPolicy, "x", "deny", deny_ingress_x(), "");
    m.policy_of(
        Kind::MultiNetworkPolicy,
        "x",
        "from-y",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
               "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
        NAD,
    );
    for probe in PROBES {
        let mut eth0 = Reach::new(true);
        eth0.peer(ANY, ns("x"), false);
        Model::assert_matrix("eth0", &m.reach_on("eth0", Model::eth0, probe), &eth0);
        let mut net1 = Reach::new(true);
        net1.peer(ns("x"), pod("x/a"), false)
            .peer(ns("z"), pod("x/a"), false);
        Model::assert_matrix("net1", &m.reach_on("net1", Model::net1, probe), &net1);
    }
    let rules = m.rules();
    let xa0 = &rules[&("x/a".to_string(), "eth0".to_string())];
    let xa1 = &rules[&("x/a".to_string(), "net1".to_string())];
    assert_eq!(xa0.policies.len(), 1);
    assert_eq!(xa0.policies[0].kind, Kind::NetworkPolicy);
    assert_eq!(xa1.policies[0].kind, Kind::MultiNetworkPolicy);
    assert_eq!(xa1.network, Network::Attachment(NAD.into()));
}

#[test]
fn multinet_policy_for_other_networks_touches_nothing() {
    let mut m = Model::multinet();
    m.policy_of(
        Kind::MultiNetworkPolicy,
        "x",
        "other",
        deny_ingress_x(),
        "default/other-net",
    );
    m.check_all("other network", |_| Reach::new(true));
    // No policy-for at all: no network.
    m.policy_of(Kind::MultiNetworkPolicy, "x", "other", deny_ingress_x(), "");
    m.check_all("no network", |_| Reach::new(true));
    // Several, one of them ours.
    m.policy_of(
        Kind::MultiNetworkPolicy,
        "x",
        "other",
        deny_ingress_x(),
        "default/other-net, default/macvlan1",
    );
    let mut r = Reach::new(true);
    r.peer(ANY, ns("x"), false);
    m.check_all("ours among others", |_| r.clone());
}

/// Rewrites pod `p`'s network-status with `entries` (secondary networks).
fn network_status(m: &mut Model, p: &str, entries: serde_json::Value) {
    m.edit_pod(p, |pod| {
        let mut all = vec![json!({"name": "cbr0", "interface": "eth0", "default": true,
                                  "ips": [Model::eth0(p).to_string()]})];
        all.extend(entries.as_array().unwrap().iter().cloned());
        pod["metadata"]["annotations"][api::NETWORK_STATUS] =
            json!(serde_json::Value::from(all).to_string());
    });
}

#[test]
fn bare_network_names_are_in_the_namespace() {
    let mut m = Model::multinet();
    // x/a's net2 is attached to x/local (written bare, as Multus may).
    network_status(
        &mut m,
        "x/a",
        json!([{"name": NAD, "interface": "net1", "ips": [Model::net1("x/a").to_string()]},
               {"name": "local", "interface": "net2", "ips": ["172.16.0.1"]}]),
    );
    m.policy_of(
        Kind::MultiNetworkPolicy,
        "x",
        "local-only",
        deny_ingress_x(),
        "local",
    );
    let rules = m.rules();
    let net2 = &rules[&("x/a".to_string(), "net2".to_string())];
    assert_eq!(net2.network, Network::Attachment("x/local".into()));
    assert!(net2.ingress.isolated);
    assert!(
        !rules[&("x/a".to_string(), "net1".to_string())]
            .ingress
            .isolated
    );
    assert!(
        !rules[&("x/a".to_string(), "eth0".to_string())]
            .ingress
            .isolated
    );
    // net1 is still open for everyone.
    m.check_all("net1 open", |_| Reach::new(true));
}

#[test]
fn two_interfaces_on_one_network_and_peers_on_it() {
    let mut m = Model::multinet();
    network_status(
        &mut m,
        "y/b",
        json!([{"name": NAD, "interface": "net1", "ips": [Model::net1("y/b").to_string()]},
               {"name": NAD, "interface": "net2", "ips": ["192.168.9.9"]}]),
    );
    m.policy(
        "y",
        "from-x-a",
        json!({"podSelector": {"matchLabels": {"pod": "b"}},
               "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "x"}},
                                      "podSelector": {"matchLabels": {"pod": "a"}}}]}]}),
    );
    let rules = m.rules();
    for ifname in ["net1", "net2"] {
        let r = &rules[&("y/b".to_string(), ifname.to_string())];
        assert!(r.ingress.isolated, "{ifname}");
        assert!(r.ingress.any.contains(Model::net1("x/a")));
        // Peers by their address on this network only, not eth0's.
        assert!(!r.ingress.any.contains(Model::eth0("x/a")));
        assert!(!r.ingress.any.contains(Model::net1("x/b")));
    }
    // A policy allowing from y/b sees both its addresses on the network.
    m.policy(
        "x",
        "from-y-b",
        json!({"podSelector": {"matchLabels": {"pod": "c"}},
               "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}},
                                      "podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
    );
    let r = &m.rules()[&("x/c".to_string(), "net1".to_string())];
    assert!(r.ingress.any.contains("192.168.9.9".parse().unwrap()));
    assert!(r.ingress.any.contains(Model::net1("y/b")));
}

#[test]
fn recreated_pod_with_a_new_address_converges() {
    for kind in [Kind::NetworkPolicy, Kind::MultiNetworkPolicy] {
        let mut m = Model::new(kind);
        m.policy(
            "x",
            "from-b",
            json!({"podSelector": {"matchLabels": {"pod": "a"}},
                   "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
        );
        let (ifname, old) = match kind {
            Kind::NetworkPolicy => ("eth0", Model::eth0("x/b")),
            Kind::MultiNetworkPolicy => ("net1", Model::net1("x/b")),
        };
        let key = ("x/a".to_string(), ifname.to_string());
        assert!(m.rules()[&key].ingress.any.contains(old));
        // Deleted and re-created: a new uid and new addresses everywhere.
        let new: std::net::IpAddr = match kind {
            Kind::NetworkPolicy => "10.244.1.200".parse().unwrap(),
            Kind::MultiNetworkPolicy => "192.168.1.200".parse().unwrap(),
        };
        m.edit_pod("x/b", |p| {
            p["metadata"]["uid"] = json!("uid-x-b-2");
            let status = json!([
                {"name": "cbr0", "interface": "eth0", "ips": ["10.244.1.200"], "default": true},
                {"name": NAD, "interface": "net1", "ips": ["192.168.1.200"]}]);
            p["metadata"]["annotations"][api::NETWORK_STATUS] = json!(status.to_string());
            p["status"]["podIP"] = json!("10.244.1.200");
            p["status"]["podIPs"] = json!([{"ip": "10.244.1.200"}]);
        });
        let rules = m.rules();
        let any = &rules[&key].ingress.any;
        assert!(any.contains(new) && !any.contains(old), "{kind:?}");
        assert_eq!(
            rules[&("x/b".to_string(), ifname.to_string())].pod.uid,
            "uid-x-b-2"
        );
        // A finished pod is no peer any more (its address may be reused).
        m.edit_pod("x/b", |p| p["status"]["phase"] = json!("Succeeded"));
        assert!(!m.rules()[&key].ingress.any.contains(new));
    }
}

#[test]
fn identical_interfaces_share_their_rules() {
    let mut m = Model::netpol();
    m.edit_pod("x/b", |p| p["spec"]["nodeName"] = json!("n1"));
    m.policy("x", "deny", deny_ingress_x());
    let rules = m.rules();
    let a = &rules[&("x/a".to_string(), "eth0".to_string())];
    let b = &rules[&("x/b".to_string(), "eth0".to_string())];
    let c = &rules[&("x/c".to_string(), "eth0".to_string())];
    // Same node, same policies: one computation, shared.
    assert!(std::sync::Arc::ptr_eq(&a.ingress, &b.ingress));
    // Another node computes its own, equal.
    assert!(!std::sync::Arc::ptr_eq(&a.ingress, &c.ingress));
    assert_eq!(a.ingress, c.ingress);
    assert_eq!(a.policies, c.policies);
}
