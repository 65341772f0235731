//! Pods and namespaces digested once per change into what the engine
//! needs: labels, named ports, and every network interface with its
//! addresses (the cluster network's from `status.podIPs`, the others' from
//! the network-status annotation). An informer keeps these, not the raw
//! objects, so a recompute parses nothing.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use crate::api;
use crate::policy::{network_name, Proto};

/// The label the API server puts on every namespace.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The cluster network's interface when the pod says nothing else.
pub const DEFAULT_INTERFACE: &str = "eth0";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

impl NamespaceInfo {
    pub fn new(ns: &api::Namespace) -> NamespaceInfo {
        NamespaceInfo::with_labels(&ns.metadata.name, ns.metadata.labels.clone())
    }

    /// A namespace with `labels` and, as the API server guarantees, its
    /// name under [`NAMESPACE_NAME_LABEL`].
    pub fn with_labels(name: &str, mut labels: BTreeMap<String, String>) -> NamespaceInfo {
        labels
            .entry(NAMESPACE_NAME_LABEL.into())
            .or_insert_with(|| name.to_string());
        NamespaceInfo {
            name: name.to_string(),
            labels,
        }
    }
}

/// The network an interface is attached to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Network {
    /// The cluster network (NetworkPolicy's).
    Cluster,
    /// A NetworkAttachmentDefinition, `namespace/name` (MultiNetworkPolicy's).
    Attachment(String),
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Network::Cluster => f.write_str("cluster network"),
            Network::Attachment(n) => f.write_str(n),
        }
    }
}

/// One interface of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub network: Network,
    pub ifname: String,
    pub addrs: Vec<IpAddr>,
}

/// A pod's identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl fmt::Display for PodRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A container port with a name (what a named policy port resolves to).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NamedPort {
    pub name: String,
    pub proto: Proto,
    pub port: u16,
}

/// What the engine knows of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub pod: PodRef,
    pub node: String,
    pub labels: BTreeMap<String, String>,
    /// Not subject to policy, and not a peer either: its addresses are
    /// the node's.
    pub host_network: bool,
    /// Succeeded or Failed: its addresses may already be someone else's.
    pub finished: bool,
    /// The cluster network's interface first, then the others in the
    /// order of the network-status annotation.
    pub interfaces: Vec<Interface>,
    pub named_ports: Vec<NamedPort>,
    /// Why the network-status annotation could not be read, if it could
    /// not (the pod then has only its cluster network interface).
    pub problem: Option<String>,
}

impl PodInfo {
    pub fn new(p: &api::Pod) -> PodInfo {
        let m = &p.metadata;
        let parse_ips = |ips: &mut dyn Iterator<Item = &str>| -> Vec<IpAddr> {
            let mut v: Vec<IpAddr> = ips.filter_map(|s| s.trim().parse().ok()).collect();
            v.dedup();
            v
        };
        let mut cluster_ips = parse_ips(&mut p.status.pod_ips.iter().map(|i| i.ip.as_str()));
        if cluster_ips.is_empty() {
            cluster_ips = parse_ips(&mut p.status.pod_ip.iter().map(String::as_str));
        }
        let mut cluster_if = DEFAULT_INTERFACE.to_string();
        let mut others = Vec::new();
        let mut problem = None;
        if let Some(raw) = m.annotations.get(api::NETWORK_STATUS) {
            match serde_json::from_str::<Vec<api::NetworkStatus>>(raw) {
                Ok(entries) => {
                    for e in entries {
                        let Some(ifname) = e.interface.filter(|i| !i.is_empty()) else {
                            continue;
                        };
                        if e.default {
                            cluster_if = ifname;
                            continue;
                        }
                        let Some(net) = network_name(&e.name, &m.namespace) else {
                            continue;
                        };
                        others.push(Interface {
                            network: Network::Attachment(net),
                            ifname,
                            addrs: parse_ips(&mut e.ips.iter().map(String::as_str)),
                        });
                    }
                }
                Err(e) => problem = Some(format!("{}: {e}", api::NETWORK_STATUS)),
            }
        }
        let mut interfaces = vec![Interface {
            network: Network::Cluster,
            ifname: cluster_if,
            addrs: cluster_ips,
        }];
        interfaces.extend(others);

        let mut named_ports: Vec<NamedPort> = p
            .spec
            .containers
            .iter()
            .chain(
                p.spec
                    .init_containers
                    .iter()
                    .filter(|c| c.restart_policy.as_deref() == Some("Always")),
            )
            .flat_map(|c| &c.ports)
            .filter_map(|cp| {
                Some(NamedPort {
                    name: cp.name.clone().filter(|n| !n.is_empty())?,
                    proto: match &cp.protocol {
                        None => Proto::Tcp,
                        Some(s) => Proto::parse(s)?,
                    },
                    port: u16::try_from(cp.container_port).ok().filter(|p| *p > 0)?,
                })
            })
            .collect();
        named_ports.sort();
        named_ports.dedup();

        PodInfo {
            pod: PodRef {
                namespace: m.namespace.clone(),
                name: m.name.clone(),
                uid: m.uid.clone(),
            },
            node: p.spec.node_name.clone(),
            labels: m.labels.clone(),
            host_network: p.spec.host_network,
            finished: matches!(p.status.phase.as_str(), "Succeeded" | "Failed"),
            interfaces,
            named_ports,
            problem,
        }
    }

    /// Whether policy applies to it and it can be a peer.
    pub fn subject(&self) -> bool {
        !self.host_network && !self.finished
    }

    /// The port a named policy port means on this pod, if it has one.
    pub fn resolve(&self, name: &str, proto: Proto) -> Option<u16> {
        self.named_ports
            .iter()
            .find(|p| p.name == name && p.proto == proto)
            .map(|p| p.port)
    }

    /// Its addresses on `network`.
    pub fn addrs_on<'a>(&'a self, network: &'a Network) -> impl Iterator<Item = IpAddr> + 'a {
        self.interfaces
            .iter()
            .filter(move |i| &i.network == network)
            .flat_map(|i| i.addrs.iter().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> PodInfo {
        PodInfo::new(&serde_json::from_value(v).unwrap())
    }

    #[test]
    fn interfaces_from_status_and_network_status() {
        let status = json!([
            {"name": "k8s-pod-network", "interface": "eth0", "ips": ["10.0.0.9"], "default": true},
            {"name": "macvlan", "interface": "net1", "ips": ["192.168.1.5"]},
            {"name": "other/sriov", "interface": "net2", "ips": ["192.168.2.5", "fd02::5"]},
            {"name": "lo-less"}
        ]);
        let p = pod(json!({
            "metadata": {"name": "a", "namespace": "x", "uid": "u",
                         "annotations": {api::NETWORK_STATUS: status.to_string()}},
            "spec": {"containers": [{"ports": [
                {"name": "http", "containerPort": 80},
                {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                {"containerPort": 9000}]}],
                "initContainers": [
                    {"restartPolicy": "Always", "ports": [{"name": "side", "containerPort": 81}]},
                    {"ports": [{"name": "init", "containerPort": 82}]}]},
            "status": {"podIPs": [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}]}
        }));
        assert_eq!(p.interfaces.len(), 3);
        assert_eq!(p.interfaces[0].ifname, "eth0");
        // NetworkPolicy uses status.podIPs, not the annotation's.
        assert_eq!(p.interfaces[0].addrs.len(), 2);
        assert_eq!(
            p.interfaces[1].network,
            Network::Attachment("x/macvlan".into())
        );
        assert_eq!(
            p.interfaces[2].network,
            Network::Attachment("other/sriov".into())
        );
        assert_eq!(p.resolve("http", Proto::Tcp), Some(80));
        assert_eq!(p.resolve("dns", Proto::Tcp), None);
        assert_eq!(p.resolve("dns", Proto::Udp), Some(53));
        assert_eq!(p.resolve("side", Proto::Tcp), Some(81));
        assert_eq!(p.resolve("init", Proto::Tcp), None);
        assert!(p.subject() && p.problem.is_none());
        let net = Network::Attachment("other/sriov".into());
        assert_eq!(p.addrs_on(&net).count(), 2);
    }

    #[test]
    fn missing_or_bad_annotations() {
        let p = pod(json!({"metadata": {"name": "a", "namespace": "x",
                                        "annotations": {api::NETWORK_STATUS: "{not json"}},
                           "spec": {"hostNetwork": true},
                           "status": {"podIP": "10.0.0.1", "phase": "Running"}}));
        assert!(p.problem.is_some());
        assert_eq!(p.interfaces.len(), 1);
        assert_eq!(
            p.interfaces[0].addrs,
            ["10.0.0.1".parse::<IpAddr>().unwrap()]
        );
        assert!(!p.subject());
        let done = pod(json!({"status": {"phase": "Succeeded"}}));
        assert!(!done.subject());
        let ns = NamespaceInfo::new(
            &serde_json::from_value(json!({"metadata": {"name": "y"}})).unwrap(),
        );
        assert_eq!(ns.labels[NAMESPACE_NAME_LABEL], "y");
    }
}
