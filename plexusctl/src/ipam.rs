//! `plexusctl ipam show [--blocks]`: the pools' use, and with `--blocks`
//! every block with its owner node (like `calicoctl ipam show
//! --show-blocks`).

use clap::{Args, Subcommand};
use plexus_ipam::Cluster;

use crate::routed::{json, table};

#[derive(Args)]
pub struct IpamCmd {
    #[command(subcommand)]
    op: IpamOp,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand)]
enum IpamOp {
    /// Addresses in use per pool; --blocks adds every block.
    Show {
        #[arg(long)]
        blocks: bool,
    },
}

pub async fn run(cmd: IpamCmd, c: Cluster) -> anyhow::Result<String> {
    let IpamOp::Show { blocks } = cmd.op;
    let mut usage = c.usage().await?;
    if !blocks {
        usage.blocks.clear();
    }
    if cmd.json {
        return Ok(json(&usage));
    }
    let pools: Vec<[String; 5]> = usage
        .pools
        .iter()
        .map(|p| {
            [
                p.pool.clone(),
                p.cidr.clone(),
                p.size.clone(),
                p.blocks.to_string(),
                p.in_use.to_string(),
            ]
        })
        .collect();
    let mut out = table(["POOL", "CIDR", "SIZE", "BLOCKS", "IN USE"], &pools);
    if blocks {
        let rows: Vec<[String; 5]> = usage
            .blocks
            .iter()
            .map(|b| {
                [
                    b.cidr.clone(),
                    b.pool.clone(),
                    b.node.clone(),
                    b.used.to_string(),
                    b.free.to_string(),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&table(["BLOCK", "POOL", "NODE", "USED", "FREE"], &rows));
    }
    Ok(out)
}
