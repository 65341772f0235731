//! The flannel-style overlay's data, in flannel's own formats, so that a
//! flannel node and a Plexus node share one etcd and a flannel CNI conflist
//! switches to plexus-vxlan by changing `type`.
//!
//! Pure data and arithmetic by default: no network, no store. `plexusd`
//! (agent/) and the `plexus-vxlan` plugin both depend on it; only the
//! `registry` feature (the agent's) pulls in a store client, so the plugin
//! stays small.
//!
//! - [`config`]: the network config at `<prefix>/config` (flannel's JSON,
//!   keys matched case-insensitively as Go's decoder does).
//! - [`lease`]: a node's subnet lease, its key `<ip>-<len>[&<ip6>-<len6>]`
//!   and its value JSON (`PublicIP`, `BackendType`, `BackendData`...).
//! - [`alloc`]: choosing a free subnet between `SubnetMin` and `SubnetMax`.
//! - [`env`]: `subnet.env`, the lease file the CNI plugin reads.
//! - `registry` (feature `registry`): the leases in a store, etcd keys or
//!   Node objects, over plexus-store's key-value layer and informer.

pub mod alloc;
pub mod config;
pub mod env;
mod json;
pub mod lease;
#[cfg(feature = "registry")]
pub mod registry;

pub use config::{Backend, NetworkConfig, VxlanConfig};
pub use env::SubnetEnv;
pub use lease::{format_mac, parse_mac, Lease, LeaseAttrs, VxlanBackendData};

/// Why flannel data could not be read or used.
#[derive(Debug, thiserror::Error)]
pub enum SubnetError {
    #[error("invalid network config: {0}")]
    Config(String),
    #[error("invalid subnet lease {key}: {reason}")]
    Lease { key: String, reason: String },
    #[error("invalid subnet.env: {0}")]
    Env(String),
    #[error("no free subnet left in {0}")]
    Exhausted(String),
}
