//! The Kubernetes API as Plexus needs it, and nothing more: read a pod's
//! annotations, read a NetworkAttachmentDefinition, and write the pod's
//! `k8s.v1.cni.cncf.io/network-status` annotation.
//!
//! [`K8s`] is async, for long-running daemons; [`BlockingK8s`] wraps it in a
//! private current-thread runtime for the short-lived meta plugin. Neither
//! keeps process-global state.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

pub const NETWORK_STATUS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/network-status";

#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    #[error("cannot load kubeconfig {path}: {msg}")]
    Kubeconfig { path: String, msg: String },
    #[error("Kubernetes API: {op}: {source}")]
    Api {
        op: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("NetworkAttachmentDefinition {namespace}/{name} has no spec.config")]
    NadWithoutConfig { namespace: String, name: String },
    #[error("cannot start the API client runtime: {0}")]
    Runtime(std::io::Error),
}

/// What Plexus reads of a pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodInfo {
    pub uid: String,
    pub annotations: BTreeMap<String, String>,
}

fn nad_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("k8s.cni.cncf.io", "v1", "NetworkAttachmentDefinition"),
        "network-attachment-definitions",
    )
}

#[derive(Clone)]
pub struct K8s {
    client: Client,
}

impl std::fmt::Debug for K8s {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("K8s")
    }
}

impl K8s {
    /// A client from a kubeconfig file (the meta plugin's `kubeconfig` key).
    /// Timeouts are short: a CNI ADD must not hang on a dead API server.
    pub async fn from_kubeconfig(path: &Path, timeout: Duration) -> Result<Self, K8sError> {
        K8s::connect(Some(path), timeout, Some(timeout)).await
    }

    /// A client from `kubeconfig`, or the in-cluster config (service
    /// account) when `None`. `timeout` bounds connecting and writing;
    /// `read_timeout` bounds each read (give a long watch room, or `None`).
    pub async fn connect(
        kubeconfig: Option<&Path>,
        timeout: Duration,
        read_timeout: Option<Duration>,
    ) -> Result<Self, K8sError> {
        let source = kubeconfig.map_or("in-cluster config".into(), |p| p.display().to_string());
        let err = |msg: String| K8sError::Kubeconfig {
            path: source.clone(),
            msg,
        };
        let mut config = match kubeconfig {
            Some(path) => {
                let kc = Kubeconfig::read_from(path).map_err(|e| err(e.to_string()))?;
                Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                    .await
                    .map_err(|e| err(e.to_string()))?
            }
            None => Config::incluster().map_err(|e| err(e.to_string()))?,
        };
        config.connect_timeout = Some(timeout);
        config.read_timeout = read_timeout;
        config.write_timeout = Some(timeout);
        let client = Client::try_from(config).map_err(|e| err(e.to_string()))?;
        Ok(K8s { client })
    }

    /// The underlying client, for API calls this crate does not wrap.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    fn api_err(op: String) -> impl FnOnce(kube::Error) -> K8sError {
        move |source| K8sError::Api {
            op,
            source: Box::new(source),
        }
    }

    /// The pod, or `None` when the API says it does not exist.
    pub async fn pod(&self, namespace: &str, name: &str) -> Result<Option<PodInfo>, K8sError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let pod = api
            .get_opt(name)
            .await
            .map_err(Self::api_err(format!("get pod {namespace}/{name}")))?;
        Ok(pod.map(|p| PodInfo {
            uid: p.metadata.uid.unwrap_or_default(),
            annotations: p.metadata.annotations.unwrap_or_default(),
        }))
    }

    /// `spec.config` of a NetworkAttachmentDefinition, or `None` when it does
    /// not exist. A NAD without a config is an error: Multus then falls back
    /// to a file in confDir named after the NAD, which callers can do.
    pub async fn nad_config(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<String>, K8sError> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &nad_resource());
        let Some(obj) = api.get_opt(name).await.map_err(Self::api_err(format!(
            "get network-attachment-definition {namespace}/{name}"
        )))?
        else {
            return Ok(None);
        };
        match obj
            .data
            .get("spec")
            .and_then(|s| s.get("config"))
            .and_then(|c| c.as_str())
        {
            Some(c) if !c.trim().is_empty() => Ok(Some(c.to_string())),
            _ => Err(K8sError::NadWithoutConfig {
                namespace: namespace.into(),
                name: name.into(),
            }),
        }
    }

    /// Write the network-status annotation (a JSON list) with a merge patch
    /// on the status subresource, which is what a CNI's RBAC usually allows.
    pub async fn set_network_status(
        &self,
        namespace: &str,
        name: &str,
        status_json: &str,
    ) -> Result<(), K8sError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let patch = serde_json::json!({
            "metadata": {"annotations": {NETWORK_STATUS_ANNOTATION: status_json}}
        });
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(Self::api_err(format!(
                "patch status of pod {namespace}/{name}"
            )))?;
        Ok(())
    }
}

/// [`K8s`] for synchronous callers, with its own current-thread runtime.
#[derive(Debug)]
pub struct BlockingK8s {
    inner: K8s,
    rt: tokio::runtime::Runtime,
}

impl BlockingK8s {
    pub fn from_kubeconfig(path: &Path, timeout: Duration) -> Result<Self, K8sError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(K8sError::Runtime)?;
        let inner = rt.block_on(K8s::from_kubeconfig(path, timeout))?;
        Ok(BlockingK8s { inner, rt })
    }

    pub fn pod(&self, namespace: &str, name: &str) -> Result<Option<PodInfo>, K8sError> {
        self.rt.block_on(self.inner.pod(namespace, name))
    }

    pub fn nad_config(&self, namespace: &str, name: &str) -> Result<Option<String>, K8sError> {
        self.rt.block_on(self.inner.nad_config(namespace, name))
    }

    pub fn set_network_status(
        &self,
        namespace: &str,
        name: &str,
        status_json: &str,
    ) -> Result<(), K8sError> {
        self.rt
            .block_on(self.inner.set_network_status(namespace, name, status_json))
    }
}
