//! `plexusctl pool add|list|remove`: the routed network's address pools.

use clap::{Args, Subcommand};
use plexus_ipam::{default_block_size, validate, Cluster, Encap, Pool};
use serde_json::json;

use crate::routed::{done, json, table, yes_no};

#[derive(Args)]
pub struct PoolCmd {
    #[command(subcommand)]
    op: PoolOp,
    /// Print JSON instead of a table or message.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand)]
enum PoolOp {
    /// Add a pool; it must overlap no other pool.
    Add {
        name: String,
        cidr: String,
        /// Block prefix length: 20..32 (IPv6 116..128); default 26 (122).
        #[arg(long)]
        block_size: Option<u8>,
        /// Masquerade pod traffic leaving the pools.
        #[arg(long)]
        nat_outgoing: bool,
        /// none, ipip or ipip-cross-subnet.
        #[arg(long, default_value = "none")]
        encap: String,
        /// Add it disabled: no block is claimed from it.
        #[arg(long)]
        disabled: bool,
    },
    /// Change a pool's settings (name, CIDR and block size are fixed).
    Set {
        name: String,
        /// true: no new block is claimed from it (draining it).
        #[arg(long, value_name = "BOOL")]
        disabled: Option<bool>,
        #[arg(long, value_name = "BOOL")]
        nat_outgoing: Option<bool>,
        /// none, ipip or ipip-cross-subnet.
        #[arg(long)]
        encap: Option<String>,
    },
    /// List the pools.
    List,
    /// Remove a pool and its blocks; refused while addresses are in use
    /// unless --force.
    Remove {
        name: String,
        #[arg(long)]
        force: bool,
    },
}

pub async fn run(cmd: PoolCmd, c: Cluster) -> anyhow::Result<String> {
    match cmd.op {
        PoolOp::Add {
            name,
            cidr,
            block_size,
            nat_outgoing,
            encap,
            disabled,
        } => {
            let cidr = validate::pool_cidr(&cidr)?;
            let encap: Encap = encap.parse().map_err(anyhow::Error::msg)?;
            let pool = Pool {
                name,
                cidr,
                block_size: block_size.unwrap_or_else(|| default_block_size(&cidr)),
                nat_outgoing,
                encap,
                disabled,
            };
            c.add_pool(&pool).await?;
            Ok(done(
                cmd.json,
                format!(
                    "pool {} added: {}, blocks /{}",
                    pool.name, pool.cidr, pool.block_size
                ),
                &pool,
            ))
        }
        PoolOp::Set {
            name,
            disabled,
            nat_outgoing,
            encap,
        } => {
            if disabled.is_none() && nat_outgoing.is_none() && encap.is_none() {
                anyhow::bail!("nothing to set: give --disabled, --nat-outgoing or --encap");
            }
            let encap: Option<Encap> = encap
                .map(|e| e.parse())
                .transpose()
                .map_err(anyhow::Error::msg)?;
            let pool = c
                .update_pool(&name, |p| {
                    p.disabled = disabled.unwrap_or(p.disabled);
                    p.nat_outgoing = nat_outgoing.unwrap_or(p.nat_outgoing);
                    p.encap = encap.unwrap_or(p.encap);
                })
                .await?;
            Ok(done(cmd.json, format!("pool {name} updated"), &pool))
        }
        PoolOp::List => {
            let pools = c.pools().await?;
            if cmd.json {
                return Ok(json(&pools));
            }
            let rows: Vec<[String; 6]> = pools
                .iter()
                .map(|p| {
                    [
                        p.name.clone(),
                        p.cidr.to_string(),
                        p.block_size.to_string(),
                        yes_no(p.nat_outgoing),
                        p.encap.to_string(),
                        yes_no(p.disabled),
                    ]
                })
                .collect();
            Ok(table(
                [
                    "NAME",
                    "CIDR",
                    "BLOCK SIZE",
                    "NAT OUTGOING",
                    "ENCAP",
                    "DISABLED",
                ],
                &rows,
            ))
        }
        PoolOp::Remove { name, force } => {
            let freed = c.remove_pool(&name, force).await?;
            Ok(done(
                cmd.json,
                format!(
                    "pool {name} removed ({} block(s), {} address(es) freed)",
                    freed.blocks, freed.addresses
                ),
                &json!({"removed": name, "freed": freed}),
            ))
        }
    }
}
