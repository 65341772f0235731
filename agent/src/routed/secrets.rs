//! Reading a peer's TCP MD5 password from a Kubernetes Secret (Calico's
//! `password.secretKeyRef`), behind a trait so the logic is tested
//! without an API server.

/// Reads one key of one Secret.
#[async_trait::async_trait]
pub trait SecretReader: Send + Sync + std::fmt::Debug {
    /// The key's value as text; `None` when the Secret or the key does not
    /// exist.
    async fn read(&self, namespace: &str, name: &str, key: &str) -> anyhow::Result<Option<String>>;
}

/// The Kubernetes API's Secrets.
#[derive(Debug)]
pub struct KubeSecretReader(pub plexus_store::KubeSecrets);

#[async_trait::async_trait]
impl SecretReader for KubeSecretReader {
    async fn read(&self, namespace: &str, name: &str, key: &str) -> anyhow::Result<Option<String>> {
        Ok(self.0.read(namespace, name, key).await?)
    }
}

/// A reader when plexusd talks to the Kubernetes API (`--store kubernetes`
/// or a `--kubeconfig`), else none (a secretKeyRef then says it cannot be
/// read).
pub async fn for_store(
    store: &str,
    opts: &plexus_store::StoreOptions,
) -> Option<std::sync::Arc<dyn SecretReader>> {
    if store != "kubernetes" && opts.kubeconfig.is_none() {
        return None;
    }
    match plexus_store::KubeSecrets::connect(opts).await {
        Ok(s) => Some(std::sync::Arc::new(KubeSecretReader(s))),
        Err(e) => {
            tracing::warn!(error = %e, "no Kubernetes API for BGP passwords in Secrets");
            None
        }
    }
}
