//! plexusctl: the operator's tool.
//!
//! `plexusctl cni add|check|del|status|gc` behaves like cnitool: the same
//! environment variables (NETCONFPATH, CNI_PATH, CNI_ARGS, CAP_ARGS,
//! CNI_IFNAME), the same container ID derived from the netns path, the result
//! JSON on stdout.
//!
//! `plexusctl --store URL pool|bgp|node|ipam ...` edit and show the routed
//! network's cluster state (plexus-ipam) in the store plexusd uses.
//!
//! `plexusctl policy show` asks the local plexusd which pod interfaces
//! network policy isolates, by which policies, and what it dropped.
//!
//! `plexusctl topology` draws the whole cluster from the store, the agents
//! and the meta plugin's caches.

mod bgp;
mod bgp_filter;
mod bgp_settings;
mod bgp_status;
mod cni;
mod install;
mod ipam;
mod netmodel;
mod node;
mod node_status;
mod policy;
mod pool;
mod routed;
mod status;
mod table;
mod topology;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "plexusctl",
    version,
    about = "Operate Plexus and call CNI plugins by hand"
)]
struct Cli {
    #[command(subcommand)]
    command: Top,
    #[command(flatten)]
    store: routed::StoreArgs,
}

#[derive(Subcommand)]
enum Top {
    /// Call a network's plugin chain like cnitool does.
    Cni(cni::CniCmd),
    /// List every attachment the plexus meta plugin made on this node.
    Status(status::StatusCmd),
    /// The routed network's address pools.
    Pool(pool::PoolCmd),
    /// The routed network's BGP settings and peers, and `bgp status` (the
    /// local agent's sessions).
    Bgp(bgp::BgpCmd),
    /// Per-node settings, a node leaving the cluster, and `node status`
    /// (the local agent's view).
    Node(node::NodeCmd),
    /// Block IPAM: the routed pools' and the cluster-IPAM ranges' use, and
    /// `ipam check` for leaked cluster-IPAM addresses.
    Ipam(ipam::IpamCmd),
    /// Network policy as the local plexusd enforces it (`policy show`).
    Policy(policy::PolicyCmd),
    /// The cluster as the network sees it: nodes, subnets, blocks, BGP
    /// sessions, pods (text, Graphviz DOT or SVG).
    Topology(topology::TopologyCmd),
    /// Install the plugins and the conflist wrapping the node's default network.
    Install(install::InstallCmd),
    /// Undo exactly what install did.
    Uninstall(install::UninstallCmd),
}

fn main() -> ExitCode {
    plexus_base::logging::init(None, None);
    let cli = Cli::parse();
    match cli.command {
        Top::Cni(c) => cni::run(c),
        Top::Status(s) => status::run(s),
        Top::Pool(c) => routed::run(&cli.store, |cl| pool::run(c, cl)),
        Top::Bgp(c) => match c.into_agent() {
            Ok((bgp::AgentCmd::Status(s), json)) => bgp_status::run(s, json),
            Ok((bgp::AgentCmd::Routes(r), json)) => bgp_status::run_routes(r, json),
            Err(c) => routed::run(&cli.store, |cl| bgp::run(c, cl)),
        },
        Top::Node(c) => match c.into_status() {
            Ok((s, json)) => node_status::run(s, json),
            Err(c) => routed::run(&cli.store, |cl| node::run(c, cl)),
        },
        Top::Ipam(c) => routed::run(&cli.store, |cl| ipam::run(c, cl)),
        Top::Policy(c) => policy::run(c),
        Top::Topology(c) => topology::run(c, &cli.store),
        Top::Install(c) => install::run_install(c),
        Top::Uninstall(c) => install::run_uninstall(c),
    }
}
