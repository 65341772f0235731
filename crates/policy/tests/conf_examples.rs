//! The example policies in conf/policy/ are what the docs point users at:
//! each must compile with no problem (a problem would make a rule allow
//! nothing), isolate the directions its comment says, and name the networks
//! it is for.

use plexus_policy::{api, Kind, Policy};

fn load(file: &str) -> (Policy, Vec<plexus_policy::Problem>) {
    let path = format!("{}/../../conf/policy/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let v: serde_json::Value = serde_yaml_ng::from_str(&text).unwrap();
    let kind = match v["kind"].as_str() {
        Some("NetworkPolicy") => Kind::NetworkPolicy,
        Some("MultiNetworkPolicy") => Kind::MultiNetworkPolicy,
        k => panic!("{path}: kind {k:?}"),
    };
    let obj: api::PolicyObject = serde_json::from_value(v).unwrap();
    Policy::new(kind, &obj)
}

#[test]
fn the_networkpolicy_example_isolates_ingress_only() {
    let (p, problems) = load("networkpolicy.yaml");
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(p.ingress.as_ref().map(Vec::len), Some(1));
    assert!(p.egress.is_none(), "egress is not isolated by default");
    assert!(p.networks.is_empty(), "a NetworkPolicy names no network");
}

#[test]
fn the_multinetworkpolicy_example_is_for_routed_blue_both_ways() {
    let (p, problems) = load("multi-networkpolicy.yaml");
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(p.networks, vec!["default/routed-blue".to_string()]);
    assert_eq!(p.ingress.as_ref().map(Vec::len), Some(1));
    assert_eq!(p.egress.as_ref().map(Vec::len), Some(1));
}
