//! `plexusctl ipam show [--blocks]`: the routed pools' use and the
//! cluster-IPAM ranges' (plexus-cluster-ipam), and with `--blocks` every
//! block with its node and every cluster-IPAM address with its holder
//! (like `calicoctl ipam show --show-blocks`).
//!
//! `plexusctl ipam check [--release]`, like `calicoctl ipam check`: the
//! cluster-IPAM blocks and addresses of nodes whose agent has not been seen
//! for `--grace`, addresses whose attachment is gone from the node named by
//! `--attachments-of` (this node's meta plugin cache says which exist), and
//! inconsistencies; `--release` frees what was found.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use plexus_ipam::clusterpool::{
    self, CheckReport, ClusterLayout, ClusterPools, ClusterUsage, LocalAttachments,
    DEFAULT_CLUSTER_PREFIX,
};
use plexus_ipam::{Cluster, Usage};
use serde::Serialize;
use serde_json::json;

use crate::routed::{json, table};

#[derive(Args)]
pub struct IpamCmd {
    #[command(subcommand)]
    op: IpamOp,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// Where the cluster-IPAM pools live in the store.
    #[arg(long, env = "PLEXUS_CLUSTER_IPAM_PREFIX", default_value = DEFAULT_CLUSTER_PREFIX, global = true)]
    cluster_ipam_prefix: String,
}

#[derive(Subcommand)]
enum IpamOp {
    /// Addresses in use per pool and range; --blocks adds every block and
    /// every cluster-IPAM address.
    Show {
        #[arg(long)]
        blocks: bool,
    },
    /// Leaked cluster-IPAM addresses and blocks: of nodes not seen for
    /// --grace, of attachments gone from the node --attachments-of names,
    /// and inconsistencies; --release frees them.
    Check {
        /// Free what was found.
        #[arg(long)]
        release: bool,
        /// Seconds without a sign of a node's agent before its blocks and
        /// addresses count as leaked (agents refresh every 60 s).
        #[arg(long, default_value_t = 600)]
        grace: u64,
        /// This node's name: its addresses whose attachment the meta
        /// plugin's cache (--cache-dir) no longer lists are reported.
        #[arg(long, value_name = "NODE")]
        attachments_of: Option<String>,
        /// The meta plugin's cacheDir on this node.
        #[arg(long, env = "PLEXUS_META_CACHE_DIR", default_value = plexus_meta::config::DEFAULT_CACHE_DIR)]
        cache_dir: PathBuf,
    },
}

/// `ipam show --json`: the routed pools and blocks as before, the
/// cluster-IPAM ranges and blocks beside them.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ShowAll {
    #[serde(flatten)]
    routed: Usage,
    cluster_ranges: Vec<clusterpool::admin::RangeUsage>,
    cluster_blocks: Vec<clusterpool::admin::SpaceBlockUsage>,
}

pub async fn run(cmd: IpamCmd, c: Cluster) -> anyhow::Result<String> {
    let pools = ClusterPools::new(c.kv().clone(), ClusterLayout::new(&cmd.cluster_ipam_prefix));
    match cmd.op {
        IpamOp::Show { blocks } => show(c, &pools, blocks, cmd.json).await,
        IpamOp::Check {
            release,
            grace,
            attachments_of,
            cache_dir,
        } => {
            let local = attachments_of.map(|node| LocalAttachments {
                node,
                live: crate::status::collect(&cache_dir)
                    .into_iter()
                    .map(|r| (r.container_id, r.interface))
                    .collect::<HashSet<_>>(),
            });
            check(&pools, grace, local.as_ref(), release, cmd.json).await
        }
    }
}

async fn show(
    c: Cluster,
    pools: &ClusterPools,
    blocks: bool,
    json_out: bool,
) -> anyhow::Result<String> {
    let mut usage = c.usage().await?;
    let mut cu = clusterpool::usage(&pools.snapshot().await?);
    if !blocks {
        usage.blocks.clear();
        cu.blocks.clear();
    }
    if json_out {
        return Ok(json(&ShowAll {
            routed: usage,
            cluster_ranges: cu.ranges,
            cluster_blocks: cu.blocks,
        }));
    }
    let rows: Vec<[String; 5]> = usage
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
    let mut out = table(["POOL", "CIDR", "SIZE", "BLOCKS", "IN USE"], &rows);
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
    out.push_str(&cluster_tables(&cu, blocks));
    Ok(out)
}

fn dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.into()
    }
}

/// The cluster-IPAM part of `ipam show` (nothing when no range is in use,
/// so a routed-only cluster sees what it always saw).
fn cluster_tables(cu: &ClusterUsage, blocks: bool) -> String {
    if cu.ranges.is_empty() && cu.blocks.is_empty() {
        return String::new();
    }
    let rows: Vec<[String; 8]> = cu
        .ranges
        .iter()
        .map(|r| {
            let per_node: Vec<String> = r
                .blocks_per_node
                .iter()
                .map(|(n, c)| format!("{n}:{c}"))
                .collect();
            [
                r.range.clone(),
                dash(&r.network_name),
                if r.overlapping { "yes" } else { "no" }.into(),
                r.size.clone(),
                r.used.to_string(),
                r.free.clone(),
                dash(&per_node.join(",")),
                r.borrowed.to_string(),
            ]
        })
        .collect();
    let mut out = String::from("\n");
    out.push_str(&table(
        [
            "CLUSTER RANGE",
            "NETWORK NAME",
            "OVERLAP CHECK",
            "SIZE",
            "USED",
            "FREE",
            "BLOCKS PER NODE",
            "BORROWED",
        ],
        &rows,
    ));
    if blocks {
        let rows: Vec<[String; 6]> = cu
            .blocks
            .iter()
            .map(|b| {
                [
                    b.cidr.clone(),
                    b.space.clone(),
                    b.node.clone(),
                    b.used.to_string(),
                    b.free.to_string(),
                    b.borrowed.to_string(),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&table(
            ["CLUSTER BLOCK", "SPACE", "NODE", "USED", "FREE", "BORROWED"],
            &rows,
        ));
        let mut seen = HashSet::new();
        let rows: Vec<[String; 7]> = cu
            .ranges
            .iter()
            .flat_map(|r| r.addresses.iter())
            // An address inside two overlapping ranges is listed once.
            .filter(|a| seen.insert((a.address.clone(), a.block.clone())))
            .map(|a| {
                let pod = match (a.pod_namespace.is_empty(), a.pod_name.is_empty()) {
                    (_, true) => "-".to_string(),
                    (true, false) => a.pod_name.clone(),
                    _ => format!("{}/{}", a.pod_namespace, a.pod_name),
                };
                [
                    a.address.clone(),
                    a.node.clone(),
                    a.container_id.clone(),
                    a.interface.clone(),
                    pod,
                    dash(&a.pod_uid),
                    if a.borrowed {
                        format!("borrowed from {}", dash(&a.block_node))
                    } else {
                        "own".into()
                    },
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&table(
            [
                "ADDRESS",
                "NODE",
                "CONTAINER",
                "INTERFACE",
                "POD",
                "POD UID",
                "BLOCK",
            ],
            &rows,
        ));
    }
    out
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn check(
    pools: &ClusterPools,
    grace: u64,
    local: Option<&LocalAttachments>,
    release: bool,
    json_out: bool,
) -> anyhow::Result<String> {
    let snap = pools.snapshot().await?;
    let report = clusterpool::check(&snap, pools.layout(), now(), grace, local);
    let released = if release {
        Some(pools.release(&report).await?)
    } else {
        None
    };
    if json_out {
        return Ok(json(&json!({"report": report, "released": released})));
    }
    let mut out = report_text(&report, grace);
    if let Some(r) = released {
        out.push_str(&format!(
            "released: {} node(s), {} block(s), {} address(es)\n",
            r.nodes, r.blocks, r.addresses
        ));
    }
    Ok(out)
}

fn report_text(r: &CheckReport, grace: u64) -> String {
    if r.is_clean() {
        return "cluster IPAM: no leaked addresses or blocks, no inconsistencies\n".into();
    }
    let mut out = String::new();
    if !r.stale_nodes.is_empty() {
        out.push_str(&format!(
            "Nodes whose agent has not been seen for more than {grace} s:\n"
        ));
        let now = now();
        let rows: Vec<[String; 4]> = r
            .stale_nodes
            .iter()
            .map(|n| {
                [
                    n.node.clone(),
                    n.last_seen.map_or("never".into(), |t| {
                        format!("{} s ago", now.saturating_sub(t))
                    }),
                    n.blocks.to_string(),
                    n.addresses.to_string(),
                ]
            })
            .collect();
        out.push_str(&table(["NODE", "LAST SEEN", "BLOCKS", "ADDRESSES"], &rows));
    }
    if !r.orphaned_addresses.is_empty() {
        out.push_str("Addresses whose attachment no longer exists on its node:\n");
        let rows: Vec<[String; 5]> = r
            .orphaned_addresses
            .iter()
            .map(|o| {
                let a = &o.address;
                [
                    a.address.clone(),
                    a.node.clone(),
                    a.container_id.clone(),
                    a.interface.clone(),
                    a.network.clone(),
                ]
            })
            .collect();
        out.push_str(&table(
            ["ADDRESS", "NODE", "CONTAINER", "INTERFACE", "NETWORK"],
            &rows,
        ));
    }
    if !r.empty_orphan_blocks.is_empty() {
        out.push_str("Empty blocks of removed nodes:\n");
        for k in &r.empty_orphan_blocks {
            out.push_str(&format!("  {k}\n"));
        }
    }
    if !r.problems.is_empty() {
        out.push_str("Inconsistencies:\n");
        let rows: Vec<[String; 2]> = r
            .problems
            .iter()
            .map(|p| [p.key.clone(), p.problem.clone()])
            .collect();
        out.push_str(&table(["KEY", "PROBLEM"], &rows));
    }
    out
}
