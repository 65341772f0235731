//! The overlay's subnet leases in a store, in flannel's layouts, so
//! flanneld and plexusd share one etcd or one Kubernetes cluster (feature
//! `registry`; the plugin side of plexus-subnet does without it).
//!
//! - [`LeaseRegistry`]: what the overlay asks of the store.
//! - [`kv`]: [`KvLeaseRegistry`], leases as keys of any [`Kv`] (etcd, the
//!   file store) under `<prefix>/subnets/`, created only if absent.
//! - [`kube`]: [`KubeLeaseRegistry`], leases as Node objects
//!   (`spec.podCIDRs` and flannel's annotations).
//!
//! Both follow their leases through plexus-store's informer.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use plexus_store::{open_kv, Informer, Kv, Revision, StoreError, StoreOptions};

use crate::{Lease, LeaseAttrs, NetworkConfig, SubnetError};

pub mod kube;
pub mod kv;

pub use kube::KubeLeaseRegistry;
pub use kv::{KvLeaseRegistry, DEFAULT_PREFIX, RENEW_MARGIN, SUBNET_TTL};

impl From<SubnetError> for StoreError {
    fn from(e: SubnetError) -> StoreError {
        StoreError::Invalid(e.to_string())
    }
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
    use crate::LeaseAttrs;
    use plexus_store::StoreOptions;

    #[test]
    fn bad_urls_and_missing_options_are_clear_errors() {
        rt().block_on(async {
            for (url, want) in [
                ("http://10.0.0.1:2379", "expected etcd://"),
                ("file:", "file: needs a path"),
            ] {
                let e = open_lease_registry(url, &StoreOptions::default())
                    .await
                    .err()
                    .unwrap_or_else(|| panic!("{url:?} opened"))
                    .to_string();
                assert!(e.contains(want), "{url:?}: {e}");
            }
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
            assert_eq!(cfg.backend, crate::Backend::HostGw);
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
