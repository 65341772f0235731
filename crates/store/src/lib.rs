//! The cluster store behind `plexusd`: the key-value layer every network
//! model shares, and the one informer every watch goes through.
//!
//! - [`Kv`]: a revisioned key-value store with compare-and-swap, TTL leases
//!   and watches: etcd v3 (`etcd://host:port,...`), an embedded single-node
//!   store (`file:PATH`), and the Kubernetes API (`kubernetes`: PlexusKey
//!   objects, resourceVersion as the revision). The routed network's block
//!   IPAM, BGP config, cluster IPAM and the overlay's etcd leases
//!   (plexus-subnet's registry) keep their state here.
//! - [`Informer`]: list at a version, watch from the next, relist when
//!   history is gone or the watch breaks or goes silent; typed events and a
//!   cache, over a [`Kv`] prefix ([`KvSource`]) or a Kubernetes resource
//!   ([`KubeSource`]).
//!
//! Modules: [`kv`] (the trait), [`etcd`] (etcd v3 over its JSON gateway),
//! [`file`] (the embedded store), [`kubekv`] (keys as Kubernetes objects),
//! [`kubeclient`] (connecting to the API, its errors), [`KubeNodes`] (which
//! Nodes exist), [`informer`].

use std::sync::Arc;

pub mod etcd;
pub mod file;
pub mod informer;
pub mod kubeclient;
pub mod kubekv;
mod kubenodes;
mod kubepods;
mod kubesecrets;
pub mod kubeservices;
mod kubewatch;
pub mod kv;

pub use etcd::EtcdKv;
pub use file::FileKv;
pub use informer::{Cache, Event, Informer, KubeSource, KvSource, Source};
pub use kubekv::KubeKv;
pub use kubenodes::KubeNodes;
pub use kubepods::KubePods;
pub use kubesecrets::KubeSecrets;
pub use kubeservices::KubeServices;
pub use kv::{KeyValue, Kv, KvEvent, LeaseId, RangeResult};

/// A store revision (etcd's `mod_revision`, a Kubernetes `resourceVersion`
/// mapped to a number, or the file store's counter).
pub type Revision = i64;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or answered an error; retry later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The network config is missing from the store.
    #[error("no network config at {0}")]
    NoConfig(String),
    /// The config or a record in the store is malformed.
    #[error("{0}")]
    Invalid(String),
    /// Watch history before this revision is gone (etcd compaction): relist.
    #[error("revision {0} was compacted")]
    Compacted(Revision),
    /// Any other store failure, with context.
    #[error("{0}")]
    Other(String),
}

/// How to reach the store, beyond its URL (flannel's flags).
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    /// `--etcd-prefix`, default `/coreos.com/network`.
    pub etcd_prefix: String,
    /// `--etcd-cafile`, `--etcd-certfile`, `--etcd-keyfile`.
    pub etcd_cafile: Option<std::path::PathBuf>,
    pub etcd_certfile: Option<std::path::PathBuf>,
    pub etcd_keyfile: Option<std::path::PathBuf>,
    /// `--etcd-username`, `--etcd-password`.
    pub etcd_username: Option<String>,
    pub etcd_password: Option<String>,
    /// `--kubeconfig` for `kubernetes` (in-cluster config when absent).
    pub kubeconfig: Option<std::path::PathBuf>,
    /// This node's name (the Node object in `kubernetes` mode).
    pub node_name: String,
    /// `--net-config`: the network config file (flannel's
    /// /etc/kube-flannel/net-conf.json). Required in `kubernetes` mode; with
    /// `file:` and `etcd://` it is used when `<prefix>/config` is absent.
    pub net_config: Option<std::path::PathBuf>,
}

/// The [`Kv`] store a URL names (for `kubernetes`, PlexusKey objects).
pub async fn open_kv(url: &str, opts: &StoreOptions) -> Result<Arc<dyn Kv>, StoreError> {
    if url == "kubernetes" {
        return Ok(Arc::new(KubeKv::connect(opts).await?));
    }
    if let Some(path) = url.strip_prefix("file:") {
        if path.is_empty() {
            return Err(StoreError::Other(format!(
                "invalid store URL {url:?}: file: needs a path (file:/var/lib/plexus/store.json)"
            )));
        }
        return Ok(Arc::new(FileKv::open(std::path::Path::new(path))?));
    }
    if url.starts_with("etcd://") {
        let endpoints = etcd::parse_endpoints(url)?;
        let tls = (opts.etcd_cafile.is_some()
            || opts.etcd_certfile.is_some()
            || opts.etcd_keyfile.is_some())
        .then(|| etcd::EtcdTls {
            ca_file: opts.etcd_cafile.clone(),
            cert_file: opts.etcd_certfile.clone(),
            key_file: opts.etcd_keyfile.clone(),
        });
        let auth = match (&opts.etcd_username, &opts.etcd_password) {
            (Some(u), Some(p)) => Some(etcd::EtcdAuth {
                username: u.clone(),
                password: p.clone(),
            }),
            (None, None) => None,
            _ => {
                return Err(StoreError::Other(
                    "--etcd-username and --etcd-password go together".into(),
                ))
            }
        };
        return Ok(Arc::new(EtcdKv::connect_tls(endpoints, auth, tls).await?));
    }
    Err(StoreError::Other(format!(
        "invalid store URL {url:?}: expected etcd://HOST:PORT[,HOST:PORT...], kubernetes or file:PATH"
    )))
}

/// A current-thread runtime for the unit tests' async calls.
#[cfg(test)]
pub(crate) fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_urls_are_clear_errors() {
        rt().block_on(async {
            for (url, want) in [
                ("", "expected etcd://"),
                ("http://10.0.0.1:2379", "expected etcd://"),
                ("file:", "file: needs a path"),
                ("etcd://", "no endpoint"),
                ("etcd://10.0.0.1:x", "is not a port"),
                ("kube", "expected etcd://"),
            ] {
                let e = open_kv(url, &StoreOptions::default())
                    .await
                    .err()
                    .unwrap_or_else(|| panic!("{url:?} opened"))
                    .to_string();
                assert!(e.contains(want), "{url:?}: {e}");
            }
            let opts = StoreOptions {
                etcd_username: Some("u".into()),
                ..Default::default()
            };
            let e = open_kv("etcd://10.0.0.1", &opts)
                .await
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains("go together"), "{e}");
        });
    }
}
