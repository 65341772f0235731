//! plexus-bgp-routes: the calico-style routed network. Each pod gets a veth
//! whose node end has no address; the pod holds its addresses alone (`/32`,
//! `/128`) and reaches everything through the link-local gateway
//! 169.254.1.1 (`fe80::1`), which the node end answers; the node routes
//! each pod address to its veth. Addresses come from the node agent's
//! blocks (plexusd, over `<runDir>/plexusd.sock`) or from an IPAM plugin.
//! The agent announces the blocks over BGP; this plugin only wires the pod.

mod config;
mod host;
mod ipam;
mod names;
mod plugin;
mod routes;

/// The name the plugin marks its links with (see plexus-plugin's `owner`).
pub const PLUGIN: &str = "plexus-bgp-routes";

fn main() {
    plexus_cni::plugin::run(&plugin::RoutedPlugin)
}
