//! [`KubeSecrets`]: one key of a Secret, for a BGP peer's TCP MD5 password
//! given as Calico's `password.secretKeyRef` (plexusd in Kubernetes mode).

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;

use crate::kubeclient::{self, api_error, bounded};
use crate::{StoreError, StoreOptions};

#[derive(Clone)]
pub struct KubeSecrets {
    client: kube::Client,
}

impl std::fmt::Debug for KubeSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KubeSecrets")
    }
}

impl KubeSecrets {
    /// Connect with `--kubeconfig` (or the in-cluster config).
    pub async fn connect(opts: &StoreOptions) -> Result<KubeSecrets, StoreError> {
        Ok(KubeSecrets {
            client: kubeclient::connect(opts).await?,
        })
    }

    /// The value of `key` in Secret `namespace/name` as text; `None` when
    /// the Secret or the key does not exist.
    pub async fn read(
        &self,
        namespace: &str,
        name: &str,
        key: &str,
    ) -> Result<Option<String>, StoreError> {
        let op = format!("get secret {namespace}/{name}");
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        // rbac(plexus-kube-store): get secrets
        let s = bounded(&op, api.get_opt(name))
            .await?
            .map_err(|e| api_error(&op, e))?;
        Ok(s.and_then(|s| {
            let from_data = s
                .data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|b| String::from_utf8_lossy(&b.0).into_owned());
            from_data.or_else(|| s.string_data.as_ref()?.get(key).cloned())
        }))
    }
}
