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
