//! The Kubernetes objects the engine reads, as the API's JSON has them:
//! Pods, Namespaces, NetworkPolicies (`networking.k8s.io/v1`) and
//! MultiNetworkPolicies (`k8s.cni.cncf.io/v1beta1` and `v1beta2`).
//!
//! Own serde types rather than k8s-openapi's, for three reasons:
//! * MultiNetworkPolicy has no type there, and its spec is NetworkPolicy's
//!   to the letter: one [`PolicyObject`] serves both kinds, so both get
//!   one set of semantics;
//! * a MultiNetworkPolicy is a custom resource the API server checks only
//!   for shape, if at all: CIDRs, protocols, ports and selector operators
//!   reach us as whatever strings were written. Rules and the pod selector
//!   are therefore read leniently ([`Lenient`]): one that does not even
//!   have the right shape fails closed on its own (the policy still
//!   isolates, its other rules still apply) instead of losing the whole
//!   object to a deserialization error;
//! * only the fields the engine uses are read (everything else is
//!   ignored), which keeps an informer's memory small with 1,000 pods.
//!
//! `null` is read as absent everywhere, as Go clients see it.

use std::collections::BTreeMap;

use serde::de::{DeserializeOwned, Deserializer};
use serde::Deserialize;

/// `metadata`, the parts the engine uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ObjectMeta {
    #[serde(deserialize_with = "nullable")]
    pub name: String,
    #[serde(deserialize_with = "nullable")]
    pub namespace: String,
    #[serde(deserialize_with = "nullable")]
    pub uid: String,
    #[serde(deserialize_with = "nullable")]
    pub labels: BTreeMap<String, String>,
    #[serde(deserialize_with = "nullable")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Namespace {
    pub metadata: ObjectMeta,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Pod {
    pub metadata: ObjectMeta,
    #[serde(deserialize_with = "nullable")]
    pub spec: PodSpec,
    #[serde(deserialize_with = "nullable")]
    pub status: PodStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodSpec {
    #[serde(deserialize_with = "nullable")]
    pub node_name: String,
    #[serde(deserialize_with = "nullable")]
    pub host_network: bool,
    #[serde(deserialize_with = "nullable")]
    pub containers: Vec<Container>,
    /// Init containers with `restartPolicy: Always` (sidecars) keep
    /// running, so their named ports count too.
    #[serde(deserialize_with = "nullable")]
    pub init_containers: Vec<Container>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Container {
    #[serde(deserialize_with = "nullable")]
    pub name: String,
    #[serde(deserialize_with = "nullable")]
    pub ports: Vec<ContainerPort>,
    pub restart_policy: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ContainerPort {
    pub name: Option<String>,
    #[serde(deserialize_with = "nullable")]
    pub container_port: i64,
    /// TCP when absent.
    pub protocol: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodStatus {
    #[serde(deserialize_with = "nullable")]
    pub phase: String,
    #[serde(rename = "podIP")]
    pub pod_ip: Option<String>,
    #[serde(rename = "podIPs", deserialize_with = "nullable")]
    pub pod_ips: Vec<PodIp>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct PodIp {
    #[serde(deserialize_with = "nullable")]
    pub ip: String,
}

/// The `k8s.v1.cni.cncf.io/network-status` annotation on a pod: one entry
/// per attached network, as the meta plugin (or Multus) wrote it.
pub const NETWORK_STATUS: &str = "k8s.v1.cni.cncf.io/network-status";

/// The `k8s.v1.cni.cncf.io/policy-for` annotation on a MultiNetworkPolicy.
pub const POLICY_FOR: &str = "k8s.v1.cni.cncf.io/policy-for";

/// One entry of the network-status annotation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct NetworkStatus {
    /// `namespace/name` of the NetworkAttachmentDefinition (a bare name
    /// is in the pod's namespace), or the cluster network's name.
    #[serde(deserialize_with = "nullable")]
    pub name: String,
    pub interface: Option<String>,
    #[serde(deserialize_with = "nullable")]
    pub ips: Vec<String>,
    /// The cluster network.
    #[serde(deserialize_with = "nullable")]
    pub default: bool,
}

/// A NetworkPolicy or a MultiNetworkPolicy: the same metadata and spec.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct PolicyObject {
    pub metadata: ObjectMeta,
    #[serde(deserialize_with = "nullable")]
    pub spec: PolicySpec,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PolicySpec {
    /// Absent means `{}` (every pod of the namespace), as a Go client
    /// reads it (the field is not a pointer there).
    pub pod_selector: Option<Lenient<LabelSelector>>,
    pub ingress: Option<Vec<Lenient<IngressRule>>>,
    pub egress: Option<Vec<Lenient<EgressRule>>>,
    pub policy_types: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct IngressRule {
    pub from: Option<Vec<Peer>>,
    pub ports: Option<Vec<PolicyPort>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct EgressRule {
    pub to: Option<Vec<Peer>>,
    pub ports: Option<Vec<PolicyPort>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Peer {
    pub pod_selector: Option<LabelSelector>,
    pub namespace_selector: Option<LabelSelector>,
    pub ip_block: Option<IpBlock>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct IpBlock {
    #[serde(deserialize_with = "nullable")]
    pub cidr: String,
    #[serde(deserialize_with = "nullable")]
    pub except: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PolicyPort {
    pub protocol: Option<String>,
    pub port: Option<IntOrString>,
    pub end_port: Option<i64>,
}

/// A port number or a named port.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    Int(i64),
    Str(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LabelSelector {
    #[serde(deserialize_with = "nullable")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(deserialize_with = "nullable")]
    pub match_expressions: Vec<Requirement>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Requirement {
    #[serde(deserialize_with = "nullable")]
    pub key: String,
    #[serde(deserialize_with = "nullable")]
    pub operator: String,
    #[serde(deserialize_with = "nullable")]
    pub values: Vec<String>,
}

/// A value read on its own: what does not deserialize as `T` is kept as
/// the reason, so the rest of the object still reads.
#[derive(Debug, Clone, PartialEq)]
pub enum Lenient<T> {
    Ok(T),
    Bad(String),
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        Ok(match serde_json::from_value(v) {
            Ok(t) => Lenient::Ok(t),
            Err(e) => Lenient::Bad(e.to_string()),
        })
    }
}

/// `null` as the type's default.
fn nullable<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_bad_rule_does_not_sink_the_policy() {
        let p: PolicyObject = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "x", "labels": null},
            "spec": {
                "ingress": [
                    {"from": "not a list"},
                    {"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": null}}],
                     "ports": [{"port": "http"}, {"port": 80, "endPort": 90, "protocol": "UDP"}]},
                ],
                "policyTypes": ["Ingress"],
            }
        }))
        .unwrap();
        assert_eq!(p.metadata.name, "p");
        assert!(p.metadata.labels.is_empty());
        assert_eq!(p.spec.pod_selector, None);
        let rules = p.spec.ingress.unwrap();
        assert!(matches!(&rules[0], Lenient::Bad(_)));
        let Lenient::Ok(r) = &rules[1] else {
            panic!("{rules:?}")
        };
        let ports = r.ports.as_ref().unwrap();
        assert_eq!(ports[0].port, Some(IntOrString::Str("http".into())));
        assert_eq!(ports[1].port, Some(IntOrString::Int(80)));
        assert_eq!(ports[1].end_port, Some(90));
        assert!(r.from.as_ref().unwrap()[0]
            .ip_block
            .as_ref()
            .unwrap()
            .except
            .is_empty());
    }

    #[test]
    fn pods_read_their_addresses_ports_and_annotations() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "a", "namespace": "x", "uid": "u1",
                         "labels": {"pod": "a"},
                         "annotations": {NETWORK_STATUS: "[]"}},
            "spec": {"nodeName": "n1", "containers": [
                {"name": "c", "ports": [{"name": "serve-80-tcp", "containerPort": 80}]}
            ]},
            "status": {"phase": "Running", "podIP": "10.0.0.1",
                       "podIPs": [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}]}
        }))
        .unwrap();
        assert_eq!(pod.spec.node_name, "n1");
        assert_eq!(pod.status.pod_ips.len(), 2);
        assert_eq!(pod.spec.containers[0].ports[0].container_port, 80);
        let st: Vec<NetworkStatus> = serde_json::from_str(
            r#"[{"name":"cbr0","interface":"eth0","ips":["10.0.0.1"],"default":true,"dns":{}},
                {"name":"x/net1","interface":"net1","ips":["192.168.1.5"],"mac":"02:00:00:00:00:01"}]"#,
        )
        .unwrap();
        assert!(st[0].default);
        assert_eq!(st[1].interface.as_deref(), Some("net1"));
    }
}
