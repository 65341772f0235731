//! The merged network status in the shape of the
//! `k8s.v1.cni.cncf.io/network-status` annotation (Network Plumbing WG
//! spec), and the status file every ADD writes to cacheDir.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use plexus_cni::{CniResult, Dns};
use serde::{Deserialize, Serialize};

use crate::cache::write_atomic;
use crate::error::MetaError;
use crate::source::{AttachmentKey, PodRef, StatusSink};

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

pub const STATUS_KIND: &str = "plexusStatusV1";

/// The status file: who the pod is and its network-status list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusFile {
    pub kind: String,
    pub container_id: String,
    /// The interface the runtime asked the meta plugin for.
    pub ifname: String,
    #[serde(default)]
    pub pod_namespace: String,
    #[serde(default)]
    pub pod_name: String,
    #[serde(default)]
    pub pod_uid: String,
    /// Exactly the value the network-status annotation would hold.
    pub network_status: Vec<NetworkStatus>,
}

/// `<cacheDir>/status/<containerID>-<ifname>.json`.
#[derive(Debug, Clone)]
pub struct FileStatusSink {
    dir: PathBuf,
}

impl FileStatusSink {
    pub fn new(cache_dir: &Path) -> Self {
        FileStatusSink {
            dir: cache_dir.join("status"),
        }
    }

    pub fn path(&self, key: &AttachmentKey) -> PathBuf {
        self.dir
            .join(format!("{}-{}.json", key.container_id, key.ifname))
    }

    pub fn read(&self, key: &AttachmentKey) -> Option<StatusFile> {
        let bytes = std::fs::read(self.path(key)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

impl StatusSink for FileStatusSink {
    fn publish(
        &self,
        key: &AttachmentKey,
        pod: &PodRef,
        statuses: &[NetworkStatus],
    ) -> Result<(), MetaError> {
        let file = StatusFile {
            kind: STATUS_KIND.into(),
            container_id: key.container_id.clone(),
            ifname: key.ifname.clone(),
            pod_namespace: pod.namespace.clone(),
            pod_name: pod.name.clone(),
            pod_uid: pod.uid.clone(),
            network_status: statuses.to_vec(),
        };
        let bytes = serde_json::to_vec_pretty(&file).expect("status serializes");
        // Not fsynced: the status is rewritten by every ADD and is only
        // information.
        write_atomic(&self.path(key), &bytes, "cannot write status file", false)
    }

    fn remove(&self, key: &AttachmentKey) -> Result<(), MetaError> {
        let path = self.path(key);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(MetaError::Io {
                what: "cannot remove status file",
                path: path.display().to_string(),
                source,
            }),
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

    #[test]
    fn status_file_roundtrip() {
        let d = tempfile::tempdir().unwrap();
        let sink = FileStatusSink::new(d.path());
        let key = AttachmentKey {
            container_id: "c1".into(),
            ifname: "eth0".into(),
        };
        let st = vec![NetworkStatus {
            name: "cbr0".into(),
            interface: "eth0".into(),
            default: true,
            ..Default::default()
        }];
        sink.publish(&key, &PodRef::default(), &st).unwrap();
        let f = sink.read(&key).unwrap();
        assert_eq!(f.network_status, st);
        assert_eq!(f.kind, STATUS_KIND);
        sink.remove(&key).unwrap();
        sink.remove(&key).unwrap();
        assert!(sink.read(&key).is_none());
    }
}
