//! What libcni does for a runtime, in Rust: find a network's configuration,
//! run its plugin chain (ADD in order with `prevResult`, DEL in reverse with
//! the cached result, CHECK, STATUS, GC), and keep libcni's result cache so
//! Plexus and Go runtimes can read each other's state.
//!
//! Used by `plexusctl` and by the `plexus` meta plugin, and by plugins that
//! delegate to an IPAM plugin ([`delegate`]).

pub mod cache;
pub mod conf;
pub mod delegate;
pub mod error;
pub mod exec;
pub mod inject;
pub mod network;

pub use conf::{NetworkConfigList, PluginConf};
pub use error::RuntimeError;
pub use exec::{Exec, RawExec};
pub use network::{Cni, RuntimeConf};
