//! plexusctl: the operator's tool.
//!
//! `plexusctl cni add|check|del|status|gc` behaves like cnitool: the same
//! environment variables (NETCONFPATH, CNI_PATH, CNI_ARGS, CAP_ARGS,
//! CNI_IFNAME), the same container ID derived from the netns path, the result
//! JSON on stdout.

mod bgp_status;
mod cni;
mod node;
mod status;

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
}

#[derive(Subcommand)]
enum Top {
    /// Call a network's plugin chain like cnitool does.
    Cni(cni::CniCmd),
    /// List every attachment the plexus meta plugin made on this node.
    Status(status::StatusCmd),
    /// Ask the node agent (plexusd) about this node.
    Node(node::NodeCmd),
    /// The routed network's BGP, as the local agent sees it.
    #[command(subcommand)]
    Bgp(BgpSub),
}

#[derive(Subcommand)]
enum BgpSub {
    /// The local agent's BGP peers (like calicoctl node status).
    Status(bgp_status::BgpStatusCmd),
}

fn main() -> ExitCode {
    plexus_cni::logging::init(None, None);
    let cli = Cli::parse();
    match cli.command {
        Top::Cni(c) => cni::run(c),
        Top::Status(s) => status::run(s),
        Top::Node(n) => node::run(n),
        Top::Bgp(BgpSub::Status(b)) => bgp_status::run(b),
    }
}
