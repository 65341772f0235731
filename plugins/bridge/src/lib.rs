//! plexus-bridge: a drop-in for the reference CNI bridge plugin.
//!
//! Same configuration keys and defaults as containernetworking/plugins'
//! `bridge`; IPAM is delegated to the plugin named in `ipam.type`; ipMasq and
//! macspoofchk use per-attachment nftables chains that DEL removes without
//! needing the pod netns.

pub mod config;
pub mod gateway;
pub mod nft;
pub mod plugin;
mod rawnl;

pub use plugin::BridgePlugin;
