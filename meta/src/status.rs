//! The status file every successful ADD writes to
//! `<cacheDir>/status/<containerID>-<ifname>.json`: who the pod is and its
//! merged network status ([`NetworkStatus`], the shape of the
//! `k8s.v1.cni.cncf.io/network-status` annotation).

use std::path::{Path, PathBuf};

use plexus_base::files;
use serde::{Deserialize, Serialize};

use crate::cache::{self, Listing, Read, STATUS_SUBDIR};
use crate::error::MetaError;
use crate::source::StatusSink;
use crate::types::{AttachmentKey, NetworkStatus, PodRef};

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
    cache_dir: PathBuf,
    dir: PathBuf,
}

impl FileStatusSink {
    pub fn new(cache_dir: &Path) -> Self {
        FileStatusSink {
            cache_dir: cache_dir.to_path_buf(),
            dir: cache_dir.join(STATUS_SUBDIR),
        }
    }

    pub fn path(&self, key: &AttachmentKey) -> PathBuf {
        self.dir.join(format!("{}.json", key.file_stem()))
    }

    pub fn read(&self, key: &AttachmentKey) -> Option<StatusFile> {
        // Nothing is read behind a refused directory.
        files::existing_state_dir(&self.cache_dir, Path::new(STATUS_SUBDIR)).ok()??;
        match cache::read_json::<StatusFile>(&self.path(key)) {
            Read::Found(f) if f.kind == STATUS_KIND => Some(f),
            _ => None,
        }
    }

    /// Every readable status file (`plexusctl status`), in file-name order.
    pub fn list(&self) -> Listing<StatusFile> {
        cache::list_json(&self.cache_dir, STATUS_SUBDIR, |f: &StatusFile| {
            f.kind == STATUS_KIND
        })
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
        cache::state_dir(&self.cache_dir, STATUS_SUBDIR)?;
        // Not fsynced: the status is rewritten by every ADD and is only
        // information.
        cache::write_atomic(&self.path(key), &bytes, "cannot write status file", false)
    }

    fn remove(&self, key: &AttachmentKey) -> Result<(), MetaError> {
        cache::remove(&self.path(key), "cannot remove status file")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        sink.publish(&key, &PodRef::default(), &st).unwrap();
        std::fs::write(sink.dir.join("junk.json"), "[").unwrap();
        let l = sink.list();
        assert_eq!(l.items.len(), 1);
        assert_eq!(l.unreadable.len(), 1);
    }
}
