//! Where one call's pods and NADs come from and where its status goes:
//! [`Backends`] builds the sources and sinks per call. [`LocalBackends`]
//! uses the CRI annotations capability, `attachmentsDir` and the status
//! file; [`crate::kube::KubeBackends`] wraps it and adds the Kubernetes API.

use serde_json::{Map, Value};

use crate::config::MetaConf;
use crate::error::MetaError;
use crate::nad_store::AttachmentsDir;
use crate::source::{
    CriAnnotations, KubeApiUnavailable, NadStore, NadStores, PodSource, PodSources, StatusSink,
};

/// Builds the sources and sinks for one call. An API backend wraps
/// [`LocalBackends`] and adds its own sources in front (or behind).
pub trait Backends: Send + Sync {
    fn pod_sources(
        &self,
        conf: &MetaConf,
        runtime_config: &Map<String, Value>,
    ) -> Result<PodSources, MetaError>;
    fn nad_stores(&self, conf: &MetaConf) -> NadStores;
    /// Extra sinks; the status file is always written.
    fn status_sinks(&self, _conf: &MetaConf) -> Vec<Box<dyn StatusSink>> {
        Vec::new()
    }
}

#[derive(Debug, Default, Clone)]
pub struct LocalBackends;

impl Backends for LocalBackends {
    fn pod_sources(
        &self,
        conf: &MetaConf,
        runtime_config: &Map<String, Value>,
    ) -> Result<PodSources, MetaError> {
        let mut v: Vec<Box<dyn PodSource>> = vec![Box::new(CriAnnotations::from_runtime_config(
            runtime_config,
        )?)];
        if let Some(k) = &conf.kubeconfig {
            v.push(Box::new(KubeApiUnavailable {
                kubeconfig: k.clone(),
            }));
        }
        Ok(PodSources(v))
    }

    fn nad_stores(&self, conf: &MetaConf) -> NadStores {
        NadStores(
            conf.attachments_dir
                .iter()
                .map(|d| Box::new(AttachmentsDir::new(d)) as Box<dyn NadStore>)
                .collect(),
        )
    }
}
