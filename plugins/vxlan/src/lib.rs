//! plexus-vxlan: flannel's CNI plugin for the plexusd overlay.
//!
//! A user switches a flannel conflist over by changing `type`: the keys are
//! flannel's (`subnetFile`, `dataDir`, `delegate`, `ipam`). The plugin reads
//! the lease file plexusd writes (`subnet.env`, flannel's format), renders a
//! plexus-bridge + plexus-host-local config from it, saves that config for
//! DEL and runs it. It holds no network state of its own.
//!
//! - [`config`] — the plugin's keys and defaults.
//! - [`render`] — the delegate config from the keys and subnet.env (pure).
//! - [`saved`] — the rendered configs kept in `dataDir` for DEL.
//! - [`plugin`] — ADD/DEL/CHECK/STATUS/GC.

pub mod config;
pub mod plugin;
pub mod render;
pub mod saved;

pub use plugin::VxlanPlugin;
