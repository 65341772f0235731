//! The data every other module speaks about: who is being attached
//! ([`AttachmentKey`], [`PodRef`]), what the core knows about a pod and a
//! NetworkAttachmentDefinition ([`PodInfo`], [`Nad`]), and what the pod ends
//! up with ([`NetworkStatus`]). A leaf: it imports nothing from this crate,
//! so sources, the plan, the cache and the status sinks can all use it
//! without importing each other.

use std::collections::BTreeMap;
use std::net::IpAddr;

use plexus_cni::{CniResult, Dns};
use serde::{Deserialize, Serialize};

/// The meta attachment: container ID and the interface the runtime asked
/// the meta plugin for (normally eth0).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AttachmentKey {
    pub container_id: String,
    pub ifname: String,
}

impl AttachmentKey {
    /// `<containerID>-<ifname>`: the stem of this attachment's files in
    /// cacheDir.
    pub fn file_stem(&self) -> String {
        format!("{}-{}", self.container_id, self.ifname)
    }
}

/// Identifies a pod (from CNI_ARGS K8S_POD_NAMESPACE/K8S_POD_NAME/K8S_POD_UID).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// What the core needs to know about a pod.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub annotations: BTreeMap<String, String>,
}

/// A NetworkAttachmentDefinition reduced to what delegation needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Nad {
    pub namespace: String,
    pub name: String,
    /// `spec.config`: a conf or conflist as JSON text; empty means "the
    /// network of this name in confDir" (Multus).
    pub config: String,
    pub annotations: BTreeMap<String, String>,
}

/// One element of the network-status annotation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkStatus {
    /// `namespace/name` for a NAD, the network name otherwise.
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub interface: String,
    /// Addresses without prefix length, as Multus writes them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The pod's primary (cluster) network.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub default: bool,
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
    /// Gateways of the default routes this interface holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateway: Vec<IpAddr>,
}

impl NetworkStatus {
    /// What the pod sees of one attachment, from its delegate's result.
    pub fn from_result(name: &str, ifname: &str, default: bool, r: &CniResult) -> Self {
        let idx = r
            .interfaces
            .iter()
            .position(|i| i.name == ifname && !i.sandbox.is_empty())
            .or_else(|| r.interfaces.iter().position(|i| i.name == ifname));
        let (mac, mtu) = idx
            .map(|i| (r.interfaces[i].mac.clone(), r.interfaces[i].mtu))
            .unwrap_or_default();
        let ips = r
            .ips
            .iter()
            .filter(|ip| ip.interface.is_none() || ip.interface == idx)
            .map(|ip| ip.address.addr().to_string())
            .collect();
        let gateway = r
            .routes
            .iter()
            .filter(|rt| rt.dst.prefix_len() == 0)
            .filter_map(|rt| rt.gw)
            .collect();
        NetworkStatus {
            name: name.into(),
            interface: ifname.into(),
            ips,
            mac,
            mtu,
            default,
            dns: r.dns.clone(),
            gateway,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_from_result() {
        let r = CniResult::from_value(&json!({
            "interfaces": [
                {"name": "br0", "mac": "aa:aa:aa:aa:aa:aa"},
                {"name": "net1", "mac": "02:00:00:00:00:01", "sandbox": "/var/run/netns/p"}
            ],
            "ips": [{"address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 1}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}],
            "dns": {"nameservers": ["10.1.0.53"]}
        }))
        .unwrap();
        let s = NetworkStatus::from_result("team/blue", "net1", false, &r);
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(
            v,
            json!({"name": "team/blue", "interface": "net1", "ips": ["10.1.0.5"],
                   "mac": "02:00:00:00:00:01", "dns": {"nameservers": ["10.1.0.53"]},
                   "gateway": ["10.1.0.1"]})
        );
    }
}
