//! `plexusctl node set|list|remove`: per-node BGP settings, and a node
//! leaving the cluster (its blocks and addresses freed).

use clap::{Args, Subcommand};
use plexus_ipam::clusterpool::{ClusterLayout, ClusterPools};
use plexus_ipam::{validate, Cluster};
use serde_json::json;

use crate::routed::{done, json, table};

#[derive(Args)]
pub struct NodeCmd {
    #[command(subcommand)]
    op: NodeOp,
    /// Print JSON instead of a table or message.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand)]
enum NodeOp {
    /// Change a node's settings (the others stay as they are).
    Set {
        node: String,
        /// The node's own AS, overriding the cluster's.
        #[arg(long = "as", value_name = "ASN")]
        asn: Option<String>,
        /// Make the node a route reflector with this cluster ID
        /// (a dotted quad such as 244.0.0.1, or a number).
        #[arg(long, value_name = "CLUSTER_ID")]
        route_reflector: Option<String>,
        /// The node's address (peering and next hop); the agent sets it
        /// itself when it starts.
        #[arg(long)]
        address: Option<String>,
    },
    /// List the nodes' settings.
    List,
    /// A node leaves: its blocks and every address in them are freed, its
    /// settings deleted (its agent, if still running, withdraws them); its
    /// cluster-IPAM blocks and addresses, borrowed ones too, are freed.
    Remove { node: String },
    /// What this node's agent (plexusd) reports; needs no store.
    Status(crate::node_status::NodeStatusCmd),
}

impl NodeCmd {
    /// `node status` talks to the local agent, not the store: split it off
    /// before a store is opened.
    pub fn into_status(self) -> Result<(crate::node_status::NodeStatusCmd, bool), NodeCmd> {
        match self.op {
            NodeOp::Status(s) => Ok((s, self.json)),
            op => Err(NodeCmd {
                op,
                json: self.json,
            }),
        }
    }
}

pub async fn run(cmd: NodeCmd, c: Cluster) -> anyhow::Result<String> {
    match cmd.op {
        NodeOp::Set {
            node,
            asn,
            route_reflector,
            address,
        } => {
            validate::name("node", &node)?;
            if asn.is_none() && route_reflector.is_none() && address.is_none() {
                anyhow::bail!("nothing to set: give --as, --route-reflector or --address");
            }
            let asn = asn.as_deref().map(validate::asn).transpose()?;
            let rr = route_reflector
                .as_deref()
                .map(validate::cluster_id)
                .transpose()?;
            let address = address
                .as_deref()
                .map(|a| validate::address("node address", a))
                .transpose()?;
            let n = c
                .update_node(&node, |n| {
                    if asn.is_some() {
                        n.asn = asn;
                    }
                    if rr.is_some() {
                        n.route_reflector_cluster_id = rr;
                    }
                    if address.is_some() {
                        n.address = address;
                    }
                })
                .await?;
            Ok(done(cmd.json, format!("node {node} updated"), &n))
        }
        NodeOp::List => {
            let nodes = c.nodes().await?;
            if cmd.json {
                return Ok(json(&nodes));
            }
            let dash = |o: Option<String>| o.unwrap_or_else(|| "-".into());
            let rows: Vec<[String; 4]> = nodes
                .iter()
                .map(|n| {
                    [
                        n.name.clone(),
                        dash(n.asn.map(|a| a.to_string())),
                        dash(n.route_reflector_cluster_id.map(|a| a.to_string())),
                        dash(n.address.map(|a| a.to_string())),
                    ]
                })
                .collect();
            Ok(table(["NODE", "AS", "ROUTE REFLECTOR", "ADDRESS"], &rows))
        }
        NodeOp::Status(_) => {
            unreachable!("node status is split off by into_status before a store is opened")
        }
        NodeOp::Remove { node } => {
            let freed = c.remove_node(&node).await?;
            // Its cluster-IPAM blocks and addresses (borrowed ones too) go
            // as well: a removed node serves no network.
            let pools = ClusterPools::new(c.kv().clone(), ClusterLayout::default());
            let cluster_ipam = pools.remove_node(&node).await?;
            Ok(done(
                cmd.json,
                format!(
                    "node {node} removed ({} block(s), {} address(es) freed; cluster IPAM: {} block(s), {} address(es) freed)",
                    freed.blocks, freed.addresses, cluster_ipam.blocks, cluster_ipam.addresses
                ),
                &json!({"removed": node, "freed": freed, "clusterIpamFreed": cluster_ipam}),
            ))
        }
    }
}
