//! Where a pod's annotations and the NetworkAttachmentDefinitions come from,
//! and where the merged network status goes: the seams between the core and
//! the outside world. The core only sees these traits; the CRI capability,
//! the attachmentsDir store and the status file are implemented here and in
//! [`crate::nad_store`] / [`crate::status`], and a Kubernetes API backend can
//! implement the same traits without touching the core.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::error::MetaError;
use crate::types::{AttachmentKey, Nad, NetworkStatus, PodInfo, PodRef};

/// The runtimeConfig capability containerd and CRI-O fill with the pod's
/// annotations.
pub const CRI_POD_ANNOTATIONS: &str = "io.kubernetes.cri.pod-annotations";

pub trait PodSource: Send + Sync {
    /// The pod, or `None` when this source does not know it (the next
    /// source is asked).
    fn pod(&self, pod: &PodRef) -> Result<Option<PodInfo>, MetaError>;
}

pub trait NadStore: Send + Sync {
    /// The NAD `namespace/name`, or `None` when this store does not have it.
    fn get(&self, namespace: &str, name: &str) -> Result<Option<Nad>, MetaError>;
}

/// Receives the merged network status after a successful ADD, and hears
/// about DEL so it can forget the attachment.
pub trait StatusSink: Send + Sync {
    fn publish(
        &self,
        key: &AttachmentKey,
        pod: &PodRef,
        statuses: &[NetworkStatus],
    ) -> Result<(), MetaError>;
    fn remove(&self, key: &AttachmentKey) -> Result<(), MetaError>;
}

/// Sources asked in order; the first that knows the pod wins.
#[derive(Default)]
pub struct PodSources(pub Vec<Box<dyn PodSource>>);

impl PodSources {
    pub fn pod(&self, pod: &PodRef) -> Result<Option<PodInfo>, MetaError> {
        for s in &self.0 {
            if let Some(p) = s.pod(pod)? {
                return Ok(Some(p));
            }
        }
        Ok(None)
    }
}

/// Stores asked in order; the first that has the NAD wins.
#[derive(Default)]
pub struct NadStores(pub Vec<Box<dyn NadStore>>);

impl NadStore for NadStores {
    fn get(&self, namespace: &str, name: &str) -> Result<Option<Nad>, MetaError> {
        for s in &self.0 {
            if let Some(n) = s.get(namespace, name)? {
                return Ok(Some(n));
            }
        }
        Ok(None)
    }
}

/// The pod's annotations from the CRI runtimeConfig capability: no API call.
#[derive(Debug, Clone)]
pub struct CriAnnotations {
    annotations: Option<BTreeMap<String, String>>,
}

impl CriAnnotations {
    /// From the meta plugin's own runtimeConfig. A non-string annotation
    /// value is an error: the runtime always sends strings.
    pub fn from_runtime_config(rc: &Map<String, Value>) -> Result<Self, MetaError> {
        let annotations = match rc.get(CRI_POD_ANNOTATIONS) {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(
                m.iter()
                    .map(|(k, v)| match v {
                        Value::String(s) => Ok((k.clone(), s.clone())),
                        other => Err(MetaError::Config(format!(
                            "runtimeConfig {CRI_POD_ANNOTATIONS}: annotation {k} is not a string: {other}"
                        ))),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            Some(other) => {
                return Err(MetaError::Config(format!(
                    "runtimeConfig {CRI_POD_ANNOTATIONS} must be an object, got {other}"
                )))
            }
        };
        Ok(CriAnnotations { annotations })
    }
}

impl PodSource for CriAnnotations {
    fn pod(&self, pod: &PodRef) -> Result<Option<PodInfo>, MetaError> {
        Ok(self.annotations.as_ref().map(|a| PodInfo {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            uid: pod.uid.clone(),
            annotations: a.clone(),
        }))
    }
}

/// What [`crate::backends::LocalBackends`] (no API client) puts where the API source
/// would be: asked only when no other source knows the pod, it says so
/// instead of silently giving the pod fewer networks than it asked for.
/// The plugin binary uses [`crate::kube::KubeBackends`], which asks the API.
#[derive(Debug, Clone)]
pub struct KubeApiUnavailable {
    pub kubeconfig: String,
}

impl PodSource for KubeApiUnavailable {
    fn pod(&self, pod: &PodRef) -> Result<Option<PodInfo>, MetaError> {
        Err(MetaError::Config(format!(
            "pod {}/{}: the runtime did not pass the pod's annotations ({CRI_POD_ANNOTATIONS}) and \
             \"kubeconfig\" ({}) is set, but these backends have no Kubernetes API client; \
             declare the capability in the plexus conflist entry or remove \"kubeconfig\"",
            pod.namespace, pod.name, self.kubeconfig
        )))
    }
}
