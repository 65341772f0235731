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
    /// A name that is not a Kubernetes name never reaches a URL.
    #[error("invalid {what} {name:?}: not a Kubernetes name ({rule})")]
    InvalidName {
        what: &'static str,
        name: String,
        rule: &'static str,
    },
}

const LABEL_RULE: &str = "DNS-1123 label: at most 63 lower case alphanumeric characters or '-', \
                          starting and ending with an alphanumeric character";
const SUBDOMAIN_RULE: &str =
    "DNS-1123 subdomain: at most 253 characters, dot-separated DNS-1123 labels";

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters: a namespace.
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    let ok = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.len() <= 63
        && ok(&b[0])
        && ok(&b[b.len() - 1])
        && b.iter().all(|c| ok(c) || *c == b'-')
}

/// Dot-separated DNS-1123 labels, at most 253 characters: an object name
/// (pods, NetworkAttachmentDefinitions).
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

fn check_namespace(namespace: &str) -> Result<(), K8sError> {
    if is_dns1123_label(namespace) {
        Ok(())
    } else {
        Err(K8sError::InvalidName {
            what: "namespace",
            name: namespace.into(),
            rule: LABEL_RULE,
        })
    }
}

fn check_object_name(what: &'static str, name: &str) -> Result<(), K8sError> {
    if is_dns1123_subdomain(name) {
        Ok(())
    } else {
        Err(K8sError::InvalidName {
            what,
            name: name.into(),
            rule: SUBDOMAIN_RULE,
        })
    }
}

/// A URL path segment: everything but RFC 3986's unreserved characters
/// percent-encoded. Names are validated first, so this changes nothing for
/// a valid name; it is the second wall should a check ever be loosened
/// (kube puts names into the path as they are).
pub fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What Plexus reads of a pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodInfo {
    pub uid: String,
    pub annotations: BTreeMap<String, String>,
}

/// What Plexus reads of a pod the API returned.
pub fn pod_info(p: Pod) -> PodInfo {
    PodInfo {
        uid: p.metadata.uid.unwrap_or_default(),
        annotations: p.metadata.annotations.unwrap_or_default(),
    }
}

/// `spec.config` of the NetworkAttachmentDefinition `obj` the API returned
/// for `namespace/name`; one without a config (or a blank one) is
/// [`K8sError::NadWithoutConfig`].
pub fn nad_spec_config(
    namespace: &str,
    name: &str,
    obj: &DynamicObject,
) -> Result<String, K8sError> {
    match obj
        .data
        .get("spec")
        .and_then(|s| s.get("config"))
        .and_then(|c| c.as_str())
    {
        Some(c) if !c.trim().is_empty() => Ok(c.to_string()),
        _ => Err(K8sError::NadWithoutConfig {
            namespace: namespace.into(),
            name: name.into(),
        }),
    }
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
        check_namespace(namespace)?;
        check_object_name("pod name", name)?;
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &path_segment(namespace));
        // rbac(plexus): get pods
        let pod = api
            .get_opt(&path_segment(name))
            .await
            .map_err(Self::api_err(format!("get pod {namespace}/{name}")))?;
        Ok(pod.map(pod_info))
    }

    /// `spec.config` of a NetworkAttachmentDefinition, or `None` when it does
    /// not exist. A NAD without a config is an error: Multus then falls back
    /// to a file in confDir named after the NAD, which callers can do.
    pub async fn nad_config(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<String>, K8sError> {
        check_namespace(namespace)?;
        check_object_name("network-attachment-definition name", name)?;
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.client.clone(),
            &path_segment(namespace),
            &nad_resource(),
        );
        // rbac(plexus): get network-attachment-definitions.k8s.cni.cncf.io
        let Some(obj) = api
            .get_opt(&path_segment(name))
            .await
            .map_err(Self::api_err(format!(
                "get network-attachment-definition {namespace}/{name}"
            )))?
        else {
            return Ok(None);
        };
        nad_spec_config(namespace, name, &obj).map(Some)
    }

    /// Write the network-status annotation (a JSON list) with a merge patch
    /// on the status subresource, which is what a CNI's RBAC usually allows.
    pub async fn set_network_status(
        &self,
        namespace: &str,
        name: &str,
        status_json: &str,
    ) -> Result<(), K8sError> {
        check_namespace(namespace)?;
        check_object_name("pod name", name)?;
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &path_segment(namespace));
        let patch = serde_json::json!({
            "metadata": {"annotations": {NETWORK_STATUS_ANNOTATION: status_json}}
        });
        // rbac(plexus): patch pods/status
        api.patch_status(
            &path_segment(name),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_escaped() {
        assert!(is_dns1123_label("kube-system") && !is_dns1123_label("a.b"));
        assert!(is_dns1123_subdomain("net.v1-a") && !is_dns1123_subdomain("a..b"));
        for bad in [
            "..",
            "a?watch=true",
            "a%2Fb",
            "A",
            "",
            "a/b",
            &"a".repeat(254),
        ] {
            assert!(check_object_name("pod name", bad).is_err(), "{bad}");
            assert!(check_namespace(bad).is_err(), "{bad}");
        }
        assert!(check_namespace(&"a".repeat(64)).is_err());
        assert_eq!(path_segment("web-1.x"), "web-1.x");
        assert_eq!(path_segment("a?watch=true"), "a%3Fwatch%3Dtrue");
        assert_eq!(path_segment("../%2F"), "..%2F%252F");
    }
}
