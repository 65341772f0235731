//! The cluster store behind `plexusd`.
//!
//! Two layers, so that every network model shares the store clients:
//! - [`Kv`]: a revisioned key-value store with compare-and-swap, TTL leases and
//!   watches: etcd v3 (`etcd://host:port,...`), an embedded single-node
//!   store (`file:PATH`), and the Kubernetes API (`kubernetes`: PlexusKey
//!   objects, resourceVersion as the revision). The routed network's block
//!   IPAM and BGP config keep their state here.
//! - [`LeaseRegistry`]: the overlay's subnet leases, in flannel's layout.
//!   One implementation over any [`Kv`] (keys under `<prefix>/subnets/`), one
//!   over the Kubernetes API (`node.spec.podCIDR` and flannel's node
//!   annotations).
//!
//! Modules: [`kv`] (the trait), [`etcd`] (etcd v3 over its JSON gateway),
//! [`file`] (the embedded store), [`kubekv`] (keys as Kubernetes objects),
//! [`registry`] (leases over a Kv), [`kube`] (leases on Node objects),
//! [`informer`] (list-and-watch of a Kv prefix or a Kubernetes resource as
//! typed events and a cache).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use plexus_subnet::{Lease, LeaseAttrs, NetworkConfig};

pub mod etcd;
pub mod file;
pub mod informer;
pub mod kube;
pub mod kubekv;
mod kubewatch;
pub mod kv;
pub mod registry;

pub use etcd::EtcdKv;
pub use file::FileKv;
pub use informer::{Cache, Event, Informer, KubeSource, KvSource, Source};
pub use kube::{KubeLeaseRegistry, KubeNodes};
pub use kubekv::KubeKv;
pub use kv::{KeyValue, Kv, KvEvent, LeaseId, RangeResult};
pub use registry::{KvLeaseRegistry, DEFAULT_PREFIX, RENEW_MARGIN, SUBNET_TTL};

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
    #[error(transparent)]
    Invalid(#[from] plexus_subnet::SubnetError),
    /// Watch history before this revision is gone (etcd compaction): relist.
    #[error("revision {0} was compacted")]
    Compacted(Revision),
    /// Any other store failure, with context.
    #[error("{0}")]
    Other(String),
}

/// What an agent asks for when it (re)acquires its lease.
#[derive(Debug, Clone)]
pub struct AcquireRequest {
    pub node_name: String,
    pub public_ip: Option<Ipv4Addr>,
    pub public_ipv6: Option<Ipv6Addr>,
    /// The lease this node held before (from its subnet.env), tried after a
    /// lease already carrying our public IP and before a free subnet.
    pub previous: Option<Lease>,
    /// The public IPv4 address this node published before (its run
    /// directory's record): a `previous` lease still carrying it (and our
    /// VTEP MAC) is ours from before an address change, taken over.
    pub previous_public_ip: Option<Ipv4Addr>,
    /// Attributes to publish (BackendType, VNI, VTEP MAC).
    pub attrs: LeaseAttrs,
}

/// Every lease at one revision.
#[derive(Debug, Clone, Default)]
pub struct LeaseSnapshot {
    pub leases: Vec<Lease>,
    pub revision: Revision,
}

/// The overlay's view of the store.
#[async_trait::async_trait]
pub trait LeaseRegistry: Send + Sync {
    /// The network config.
    async fn network_config(&self) -> Result<NetworkConfig, StoreError>;
    /// Acquire this node's lease: reuse the one carrying our public IP, else
    /// `previous`, else claim a free subnet (compare-and-swap: never two
    /// nodes on one subnet). The lease is published with `attrs`.
    async fn acquire(&self, req: &AcquireRequest) -> Result<Lease, StoreError>;
    /// Keep our lease alive (called well ahead of its expiry).
    async fn renew(&self, lease: &Lease) -> Result<(), StoreError>;
    /// Write our lease over whatever another writer put at its key (a
    /// lease conflict): our pods use the subnet.
    async fn reassert(&self, lease: &Lease) -> Result<(), StoreError>;
    /// Every lease now.
    async fn list(&self) -> Result<LeaseSnapshot, StoreError>;
    /// Every lease, then each change, for as long as it is polled: the
    /// store's informer (it lists again by itself when history is gone or
    /// the watch breaks or goes silent, and hands out exactly the
    /// differences; a malformed lease is logged once and left out).
    fn follow(&self) -> Informer<Lease>;
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

/// Open the lease registry a `--store` URL names: `etcd://HOST:PORT[,...]`,
/// `kubernetes`, or `file:PATH`. Bounded: an unreachable store is an
/// `Unavailable` error within seconds, never a hang.
pub async fn open_lease_registry(
    url: &str,
    opts: &StoreOptions,
) -> Result<Box<dyn LeaseRegistry>, StoreError> {
    // In Kubernetes the overlay's leases are Node objects, as flannel's.
    if url == "kubernetes" {
        return Ok(Box::new(KubeLeaseRegistry::connect(opts).await?));
    }
    lease_registry_over(url, open_kv(url, opts).await?, opts).await
}

/// The overlay's lease registry in the store `url` names, sharing `kv`
/// (already opened for that URL) where the leases live in it: a `file:`
/// store can be opened only once per process.
pub async fn lease_registry_over(
    url: &str,
    kv: Arc<dyn Kv>,
    opts: &StoreOptions,
) -> Result<Box<dyn LeaseRegistry>, StoreError> {
    if url == "kubernetes" {
        return Ok(Box::new(KubeLeaseRegistry::connect(opts).await?));
    }
    Ok(Box::new(
        KvLeaseRegistry::new(kv, &opts.etcd_prefix).with_config_file(opts.net_config.clone()),
    ))
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
                let e = open_lease_registry(url, &StoreOptions::default())
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
            let e = open_lease_registry("kubernetes", &StoreOptions::default())
                .await
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains("--node-name"), "{e}");
        });
    }

    #[test]
    fn file_store_with_a_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("net-conf.json");
        std::fs::write(
            &conf,
            r#"{"Network":"10.7.0.0/16","Backend":{"Type":"host-gw"}}"#,
        )
        .unwrap();
        let url = format!("file:{}", dir.path().join("store.json").display());
        rt().block_on(async {
            let opts = StoreOptions {
                net_config: Some(conf),
                ..Default::default()
            };
            let r = open_lease_registry(&url, &opts).await.unwrap();
            let cfg = r.network_config().await.unwrap();
            assert_eq!(cfg.backend, plexus_subnet::Backend::HostGw);
            let lease = r
                .acquire(&AcquireRequest {
                    node_name: "solo".into(),
                    public_ip: Some("192.168.0.1".parse().unwrap()),
                    public_ipv6: None,
                    previous: None,
                    previous_public_ip: None,
                    attrs: LeaseAttrs {
                        public_ip: Some("192.168.0.1".parse().unwrap()),
                        backend_type: "host-gw".into(),
                        ..Default::default()
                    },
                })
                .await
                .unwrap();
            assert!(cfg.fits(&lease));
            assert_eq!(r.list().await.unwrap().leases, vec![lease]);
        });
    }
}
