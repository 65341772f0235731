//! `plexus`, the delegating meta plugin: one CNI entry that gives a pod its
//! cluster network on eth0 and further networks on net1, net2... as its
//! annotations ask, each network with its own plugin chain, Multus-style.
//!
//! Modules, each importing only those listed before it:
//!
//! * [`error`]: the plugin's errors and their CNI codes;
//! * [`annotation`]: the network selection annotations;
//! * [`config`]: the plexus conflist entry;
//! * [`types`]: the shared data (attachment key, pod, NAD, network status);
//! * [`plan`]: the plan (what ADD does and DEL undoes);
//! * [`source`]: where pods and NADs come from and where status goes;
//! * [`nad_store`]: NADs from manifest files (`attachmentsDir`);
//! * [`cache`]: the files in cacheDir (plans, layout, atomic writes);
//! * [`lock`]: the per-attachment lock its delegates inherit;
//! * [`status`]: the status file;
//! * [`planner`]: selection to an ordered plan of delegates;
//! * [`delegate`]: running delegates, all-or-nothing ADD;
//! * [`routes`]: the `default-route` request;
//! * [`backends`]: the sources and sinks of one call ([`LocalBackends`]);
//! * [`kube`]: Kubernetes API mode ([`kube::KubeBackends`]);
//! * [`policy`]: network policy's attach and detach with plexusd;
//! * [`plugin`]: [`Meta`], the CNI commands.
//!
//! File formats are described in meta/README.md.

pub mod annotation;
pub mod backends;
pub mod cache;
pub mod config;
pub mod delegate;
pub mod error;
pub mod kube;
pub mod lock;
pub mod nad_store;
pub mod plan;
pub mod planner;
pub mod plugin;
pub mod policy;
pub mod routes;
pub mod source;
pub mod status;
pub mod types;

pub use crate::backends::{Backends, LocalBackends};
pub use crate::error::MetaError;
pub use crate::plugin::Meta;
