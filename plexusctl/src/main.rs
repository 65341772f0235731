//! plexusctl: the operator's tool.
//!
//! `plexusctl cni add|check|del|status|gc` behaves like cnitool: the same
//! environment variables (NETCONFPATH, CNI_PATH, CNI_ARGS, CAP_ARGS,
//! CNI_IFNAME), the same container ID derived from the netns path, the result
//! JSON on stdout.

mod cni;
mod install;
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
    /// Install the plugins and the conflist wrapping the node's default network.
    Install(install::InstallCmd),
    /// Undo exactly what install did.
    Uninstall(install::UninstallCmd),
}

fn main() -> ExitCode {
    plexus_cni::logging::init(None, None);
    let cli = Cli::parse();
    match cli.command {
        Top::Cni(c) => cni::run(c),
        Top::Status(s) => status::run(s),
        Top::Node(n) => node::run(n),
        Top::Install(c) => install::run_install(c),
        Top::Uninstall(c) => install::run_uninstall(c),
    }
}
