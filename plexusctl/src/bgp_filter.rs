//! `plexusctl bgp filter ...`: named BGP filters (Calico BGPFilter-like),
//! which peers and the mesh name in `--filters`.

use std::io::Read as _;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use plexus_bgp::policy::{AsPathMatch, FilterAction, FilterRule, MatchOperator, RouteSource};
use plexus_ipam::{BgpFilter, Cluster};
use serde_json::json;

use crate::routed::{done, json, table};

#[derive(Subcommand)]
pub enum FilterOp {
    /// Create or replace a filter from a JSON file (`-`: stdin) holding its
    /// rule lists: {"importV4": [...], "exportV4": [...], "importV6": ..., "exportV6": ...}.
    Set {
        name: String,
        #[arg(long)]
        file: String,
    },
    /// Append one rule to a filter (created when absent).
    Rule(RuleArgs),
    /// List the filters.
    List,
    /// One filter as JSON.
    Show { name: String },
    /// Remove a filter (refused while a peer or the mesh uses it).
    Remove { name: String },
}

#[derive(Args)]
pub struct RuleArgs {
    /// The filter.
    name: String,
    /// import (what peers send us) or export (what we send).
    #[arg(long, value_name = "import|export")]
    direction: String,
    /// For IPv6 routes (default: IPv4).
    #[arg(long)]
    v6: bool,
    #[arg(long, value_name = "accept|reject")]
    action: String,
    /// Match the prefix against this CIDR (with --match-operator).
    #[arg(long)]
    cidr: Option<String>,
    /// Equal, NotEqual, In (inside or equal) or NotIn; default In.
    #[arg(long, value_name = "OP")]
    match_operator: Option<String>,
    #[arg(long, value_name = "LEN")]
    prefix_length_min: Option<u8>,
    #[arg(long, value_name = "LEN")]
    prefix_length_max: Option<u8>,
    /// A standard community the route must carry (ASN:VALUE).
    #[arg(long)]
    community: Option<String>,
    /// A large community the route must carry (G:L1:L2).
    #[arg(long)]
    large_community: Option<String>,
    /// The AS must be in the route's AS path.
    #[arg(long, value_name = "ASN")]
    as_path_contains: Option<u32>,
    /// The route must have been originated by this AS.
    #[arg(long, value_name = "ASN")]
    originated_by: Option<u32>,
    /// Only routes learned from peers (Calico's source: RemotePeers).
    #[arg(long)]
    remote_peers: bool,
}

fn rule(a: &RuleArgs) -> anyhow::Result<FilterRule> {
    let action = match a.action.as_str() {
        "accept" | "Accept" => FilterAction::Accept,
        "reject" | "Reject" => FilterAction::Reject,
        o => bail!("--action {o:?}: accept or reject"),
    };
    let mut r = FilterRule::new(action);
    if let Some(c) = &a.cidr {
        let op = match a.match_operator.as_deref().unwrap_or("In") {
            "Equal" => MatchOperator::Equal,
            "NotEqual" => MatchOperator::NotEqual,
            "In" => MatchOperator::In,
            "NotIn" => MatchOperator::NotIn,
            o => bail!("--match-operator {o:?}: Equal, NotEqual, In or NotIn"),
        };
        r = r.cidr(op, c.parse().with_context(|| format!("--cidr {c:?}"))?);
    } else if a.match_operator.is_some() {
        bail!("--match-operator needs --cidr");
    }
    if a.prefix_length_min.is_some() || a.prefix_length_max.is_some() {
        r = r.prefix_length(a.prefix_length_min, a.prefix_length_max);
    }
    if let Some(c) = &a.community {
        r = r.community(c.parse().map_err(|e| anyhow::anyhow!("{e}"))?);
    }
    if let Some(c) = &a.large_community {
        r = r.large_community(c.parse().map_err(|e| anyhow::anyhow!("{e}"))?);
    }
    if let Some(n) = a.as_path_contains {
        r = r.as_path(AsPathMatch::Contains(n));
    }
    if let Some(n) = a.originated_by {
        if a.as_path_contains.is_some() {
            bail!("one AS path match per rule: --as-path-contains or --originated-by");
        }
        r = r.as_path(AsPathMatch::OriginatedBy(n));
    }
    if a.remote_peers {
        r = r.source(RouteSource::RemotePeers);
    }
    Ok(r)
}

fn rule_count(f: &BgpFilter) -> String {
    format!(
        "{}/{}/{}/{}",
        f.import_v4.len(),
        f.export_v4.len(),
        f.import_v6.len(),
        f.export_v6.len()
    )
}

pub async fn run(op: FilterOp, json_out: bool, c: Cluster) -> anyhow::Result<String> {
    match op {
        FilterOp::Set { name, file } => {
            let mut text = String::new();
            if file == "-" {
                std::io::stdin().read_to_string(&mut text)?;
            } else {
                text = std::fs::read_to_string(&file).with_context(|| format!("reading {file}"))?;
            }
            let mut f: BgpFilter =
                serde_json::from_str(&text).with_context(|| format!("{file}: not a filter"))?;
            f.name = name;
            c.set_filter(&f).await?;
            Ok(done(
                json_out,
                format!("filter {} set ({} rules)", f.name, rule_count(&f)),
                &f,
            ))
        }
        FilterOp::Rule(a) => {
            let r = rule(&a)?;
            let mut f = c.filters().await?.remove(&a.name).unwrap_or(BgpFilter {
                name: a.name.clone(),
                ..Default::default()
            });
            let list = match (a.direction.as_str(), a.v6) {
                ("import", false) => &mut f.import_v4,
                ("export", false) => &mut f.export_v4,
                ("import", true) => &mut f.import_v6,
                ("export", true) => &mut f.export_v6,
                (o, _) => bail!("--direction {o:?}: import or export"),
            };
            list.push(r);
            let index = list.len() - 1;
            c.set_filter(&f).await?;
            Ok(done(
                json_out,
                format!("filter {}: {} rule {index} added", f.name, a.direction),
                &f,
            ))
        }
        FilterOp::List => {
            let filters = c.filters().await?;
            if json_out {
                return Ok(json(&filters.values().collect::<Vec<_>>()));
            }
            let rows: Vec<[String; 2]> = filters
                .values()
                .map(|f| [f.name.clone(), rule_count(f)])
                .collect();
            Ok(table(
                ["NAME", "RULES (IMPORT/EXPORT V4, IMPORT/EXPORT V6)"],
                &rows,
            ))
        }
        FilterOp::Show { name } => match c.filters().await?.remove(&name) {
            Some(f) => Ok(json(&f)),
            None => bail!("no filter named {name}"),
        },
        FilterOp::Remove { name } => {
            c.remove_filter(&name).await?;
            Ok(done(
                json_out,
                format!("filter {name} removed"),
                &json!({"removed": name}),
            ))
        }
    }
}
