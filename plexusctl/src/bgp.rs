//! `plexusctl bgp set|show|peer`: the cluster's BGP settings and peers.
//! (`bgp status`, the local agent's sessions, waits for the agent.)

use clap::{Args, Subcommand};
use plexus_ipam::{validate, BgpConfig, Cluster, Peer};
use serde_json::json;

use crate::routed::{done, json, table, yes_no};

#[derive(Args)]
pub struct BgpCmd {
    #[command(subcommand)]
    op: BgpOp,
    /// Print JSON instead of a table or message.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand)]
enum BgpOp {
    /// Set the cluster's AS and whether nodes form a full iBGP mesh.
    Set {
        /// The nodes' AS number (1..4294967295).
        #[arg(long = "as", value_name = "ASN")]
        asn: String,
        /// No node-to-node mesh (route reflectors or external peers carry
        /// the routes).
        #[arg(long)]
        no_mesh: bool,
    },
    /// Show the cluster's BGP settings.
    Show,
    /// Peers outside the mesh.
    Peer {
        #[command(subcommand)]
        op: PeerOp,
    },
    /// The local agent's BGP peers (like calicoctl node status); needs no
    /// store, only the agent's socket.
    Status(crate::bgp_status::BgpStatusCmd),
}

impl BgpCmd {
    /// `bgp status` talks to the local agent, not the store: split it off
    /// before a store is opened.
    pub fn into_status(self) -> Result<(crate::bgp_status::BgpStatusCmd, bool), BgpCmd> {
        match self.op {
            BgpOp::Status(s) => Ok((s, self.json)),
            op => Err(BgpCmd {
                op,
                json: self.json,
            }),
        }
    }
}

#[derive(Subcommand)]
enum PeerOp {
    /// Add a peer: every node's (global), or one node's with --node.
    Add {
        address: String,
        #[arg(long = "as", value_name = "ASN")]
        asn: String,
        #[arg(long)]
        node: Option<String>,
    },
    /// List the peers.
    List,
    /// Remove a peer.
    Remove { address: String },
}

pub async fn run(cmd: BgpCmd, c: Cluster) -> anyhow::Result<String> {
    match cmd.op {
        BgpOp::Set { asn, no_mesh } => {
            let cfg = BgpConfig {
                asn: validate::asn(&asn)?,
                node_to_node_mesh: !no_mesh,
            };
            c.set_bgp_config(&cfg).await?;
            Ok(done(
                cmd.json,
                format!(
                    "BGP: AS {}, node-to-node mesh {}",
                    cfg.asn,
                    if cfg.node_to_node_mesh { "on" } else { "off" }
                ),
                &cfg,
            ))
        }
        BgpOp::Show => {
            let cfg = c.bgp_config().await?;
            if cmd.json {
                return Ok(json(&cfg));
            }
            Ok(table(
                ["AS", "NODE-TO-NODE MESH"],
                &[[cfg.asn.to_string(), yes_no(cfg.node_to_node_mesh)]],
            ))
        }
        BgpOp::Peer { op } => peer(op, cmd.json, c).await,
        BgpOp::Status(_) => {
            unreachable!("bgp status is split off by into_status before a store is opened")
        }
    }
}

async fn peer(op: PeerOp, json_out: bool, c: Cluster) -> anyhow::Result<String> {
    match op {
        PeerOp::Add { address, asn, node } => {
            let peer = Peer {
                address: validate::address("peer address", &address)?,
                asn: validate::asn(&asn)?,
                node,
            };
            if let Some(n) = &peer.node {
                validate::name("node", n)?;
            }
            c.add_peer(&peer).await?;
            let scope = match &peer.node {
                Some(n) => format!("node {n}'s peer"),
                None => "global peer".into(),
            };
            Ok(done(
                json_out,
                format!("{scope} {} AS {} added", peer.address, peer.asn),
                &peer,
            ))
        }
        PeerOp::List => {
            let peers = c.peers().await?;
            if json_out {
                return Ok(json(&peers));
            }
            let rows: Vec<[String; 3]> = peers
                .iter()
                .map(|p| {
                    [
                        p.address.to_string(),
                        p.asn.to_string(),
                        p.node.clone().unwrap_or_else(|| "(global)".into()),
                    ]
                })
                .collect();
            Ok(table(["ADDRESS", "AS", "NODE"], &rows))
        }
        PeerOp::Remove { address } => {
            let addr = validate::address("peer address", &address)?;
            c.remove_peer(&addr).await?;
            Ok(done(
                json_out,
                format!("peer {addr} removed"),
                &json!({"removed": addr}),
            ))
        }
    }
}
