//! [`KubePods`]: which pods exist, by UID, for the cluster-IPAM reconciler
//! (addresses whose pod is gone are released; plexusd in Kubernetes mode).

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource};

use crate::informer::{Informer, KubeSource};
use crate::kubeclient::{self, api_error, bounded};
use crate::{StoreError, StoreOptions};

#[derive(Clone)]
pub struct KubePods {
    client: kube::Client,
}

impl std::fmt::Debug for KubePods {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KubePods")
    }
}

impl KubePods {
    /// Connect with `--kubeconfig` (or the in-cluster config).
    pub async fn connect(opts: &StoreOptions) -> Result<KubePods, StoreError> {
        Ok(KubePods {
            client: kubeclient::connect(opts).await?,
        })
    }

    /// The pods scheduled on `node` (a pod never moves: the addresses a
    /// node gave are for pods on it), each as its UID, keyed
    /// `namespace/name`; relisted by itself after 410 Gone or a broken
    /// watch.
    pub fn follow(&self, node: &str) -> Informer<String> {
        let pods = KubeSource::new(self.client.clone(), &ApiResource::erase::<Pod>(&()))
            .fields(&format!("spec.nodeName={node}"));
        Informer::new(pods, |_, o: &kube::api::DynamicObject| {
            Ok::<String, std::convert::Infallible>(o.metadata.uid.clone().unwrap_or_default())
        })
    }

    /// The UID of the pod `namespace/name` now, `None` when there is none.
    pub async fn uid(&self, namespace: &str, name: &str) -> Result<Option<String>, StoreError> {
        let op = format!("get pod {namespace}/{name}");
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        // rbac(plexus-kube-store): get pods
        let p = bounded(&op, api.get_opt(name))
            .await?
            .map_err(|e| api_error(&op, e))?;
        Ok(p.map(|p| p.metadata.uid.unwrap_or_default()))
    }
}
