//! plexus-ipvlan: attaches a pod to the network through an IPVLAN device on
//! a master interface of the node (or of the pod, with `linkInContainer`).
//! Keys, defaults and chaining semantics follow the reference ipvlan plugin
//! (containernetworking/plugins); see `config.rs` for the differences.

mod config;
mod plugin;

fn main() {
    plexus_cni::plugin::run(&plugin::IpvlanPlugin)
}
