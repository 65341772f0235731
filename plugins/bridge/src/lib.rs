//! plexus-bridge: a drop-in for the reference CNI bridge plugin.
//!
//! Same configuration keys and defaults as containernetworking/plugins'
//! `bridge`; IPAM is delegated to the plugin named in `ipam.type`; ipMasq and
//! macspoofchk use per-attachment nftables chains that DEL removes without
//! needing the pod netns. The pod side (addresses, routes, sysctls, CHECK of
//! addresses and routes, DEL of the pod interface) is plexus-plugin's.
//!
//! * [`config`]: the keys, validated before anything is created;
//! * [`host`]: the node side (bridge, veth, port, gateway addresses);
//! * [`gateway`]: gateway and default-route computation;
//! * [`nft`]: ipMasq and macspoofchk chains; `chains` ties them to a call;
//! * [`plugin`]: the handlers, ADD; [`del`] and [`check`].

mod chains;
pub mod check;
pub mod config;
pub mod del;
pub mod gateway;
pub mod host;
mod ipam;
pub mod nft;
pub mod plugin;

pub use plugin::BridgePlugin;

/// The name the plugin marks its links with (see plexus-plugin's `owner`).
pub const PLUGIN: &str = "plexus-bridge";
