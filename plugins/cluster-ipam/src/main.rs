//! plexus-cluster-ipam: an IPAM plugin for any main plugin (macvlan,
//! ipvlan, bridge, plexus-bridge, ...) giving addresses unique across the
//! cluster. Its configuration takes whereabouts' keys, so a whereabouts
//! user switches by changing `type`; the addresses come from the node
//! agent (plexusd, over `<runDir>/plexusd.sock`), which serves them from
//! blocks of each range kept in the cluster store. Nothing is allocated
//! here: an agent that is away answers code 11 and leaves nothing behind.

mod agent;
mod config;
mod plugin;

fn main() {
    plexus_cni::plugin::run(&plugin::ClusterIpam)
}
