//! [`KubeNodes`]: which Kubernetes Nodes exist, for cleaning up after the
//! ones deleted (their routed blocks and node records; `plexusd
//! --node-cleanup`).

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ApiResource};

use crate::informer::{Informer, KubeSource};
use crate::kubeclient::{self, api_error, bounded};
use crate::{StoreError, StoreOptions};

#[derive(Clone)]
pub struct KubeNodes {
    nodes: Api<Node>,
}

impl std::fmt::Debug for KubeNodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KubeNodes")
    }
}

impl KubeNodes {
    /// Connect with `--kubeconfig` (or the in-cluster config).
    pub async fn connect(opts: &StoreOptions) -> Result<KubeNodes, StoreError> {
        Ok(KubeNodes {
            nodes: Api::all(kubeclient::connect(opts).await?),
        })
    }

    /// Every Node by name, then each one added or deleted (the store's
    /// informer: relisted by itself after 410 Gone or a broken watch).
    pub fn follow(&self) -> Informer<()> {
        let nodes = KubeSource::new(
            self.nodes.clone().into_client(),
            &ApiResource::erase::<Node>(&()),
        );
        Informer::new(nodes, |_, _| Ok::<(), std::convert::Infallible>(()))
    }

    /// Whether the Node exists now.
    pub async fn exists(&self, name: &str) -> Result<bool, StoreError> {
        let op = format!("get node {name}");
        // rbac(plexus-kube-store): get nodes
        let n = bounded(&op, self.nodes.get_opt(name))
            .await?
            .map_err(|e| api_error(&op, e))?;
        Ok(n.is_some())
    }
}
