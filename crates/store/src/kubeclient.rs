//! Connecting to the Kubernetes API, once for every Kubernetes-backed part
//! of Plexus (PlexusKey objects, Node leases, Node cleanup), with the same
//! bounds and the same mapping of API errors to [`StoreError`].

use std::time::Duration;

use crate::kubewatch::WATCH_SECONDS;
use crate::{StoreError, StoreOptions};

/// Connecting and each single call (a watch's reads get longer).
pub const API_TIMEOUT: Duration = Duration::from_secs(10);

/// A client from `--kubeconfig` (or the in-cluster config) whose reads
/// leave room for a watch call's quiet stretches.
pub async fn connect(opts: &StoreOptions) -> Result<kube::Client, StoreError> {
    let read_timeout = Some(Duration::from_secs(WATCH_SECONDS as u64 + 30));
    let k8s = plexus_k8s::K8s::connect(opts.kubeconfig.as_deref(), API_TIMEOUT, read_timeout)
        .await
        .map_err(|e| StoreError::Other(e.to_string()))?;
    Ok(k8s.client())
}

/// An API call's failure: 410 Gone is lost history, an API status is the
/// server's refusal, anything else (no connection, a timeout) a store that
/// is unavailable for now.
pub fn api_error(op: &str, e: kube::Error) -> StoreError {
    match e {
        kube::Error::Api(s) if s.code == 410 => StoreError::Compacted(0),
        kube::Error::Api(s) => {
            StoreError::Other(format!("Kubernetes API: {op}: {} ({})", s.message, s.code))
        }
        e => StoreError::Unavailable(format!("Kubernetes API: {op}: {e}")),
    }
}

/// `f` within [`API_TIMEOUT`], or `Unavailable`.
pub async fn bounded<T>(
    op: &str,
    f: impl std::future::Future<Output = T>,
) -> Result<T, StoreError> {
    tokio::time::timeout(API_TIMEOUT, f).await.map_err(|_| {
        StoreError::Unavailable(format!(
            "Kubernetes API: {op}: no answer within {API_TIMEOUT:?}"
        ))
    })
}
