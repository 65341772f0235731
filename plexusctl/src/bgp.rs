//! `plexusctl bgp set|show|peer|mesh|services|advertise|filter`: the
//! cluster's BGP settings, peers and filters. (`bgp status` and `bgp
//! routes`, the local agent's sessions and routes, ask the agent.)

use anyhow::bail;
use clap::{Args, Subcommand};
use ipnet::IpNet;
use plexus_ipam::{validate, Cluster, Peer, PrefixAdvertisement};
use serde_json::json;

use crate::bgp_settings::{communities, communities_text, summary, SettingsFlags};
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
    /// Set the cluster's AS and whether nodes form a full iBGP mesh (the
    /// other settings are kept).
    Set {
        /// The nodes' AS number (1..4294967295).
        #[arg(long = "as", value_name = "ASN")]
        asn: String,
        /// No node-to-node mesh (route reflectors or external peers carry
        /// the routes).
        #[arg(long)]
        no_mesh: bool,
        /// ECMP: install a prefix learned from several equal peers over up
        /// to N next hops (read when plexusd starts; 1: best path only).
        #[arg(long, value_name = "N")]
        max_paths: Option<u32>,
    },
    /// Show the cluster's BGP settings.
    Show,
    /// Peers outside the mesh.
    Peer {
        #[command(subcommand)]
        op: PeerOp,
    },
    /// The sessions between nodes (mesh and route reflectors): password,
    /// BFD, communities, filters... as for peers.
    Mesh {
        #[command(subcommand)]
        op: MeshOp,
    },
    /// Service addresses every node announces (Calico's
    /// serviceClusterIPs/serviceExternalIPs/serviceLoadBalancerIPs).
    Services {
        /// Comma-separated CIDRs, or none.
        #[arg(long, value_name = "CIDRS|none")]
        cluster_ips: Option<String>,
        #[arg(long, value_name = "CIDRS|none")]
        external_ips: Option<String>,
        #[arg(long, value_name = "CIDRS|none")]
        load_balancer_ips: Option<String>,
    },
    /// Communities on the prefixes we originate inside CIDR (a pool, a
    /// service range): Calico's prefixAdvertisements.
    Advertise {
        cidr: String,
        /// Standard and large communities, comma-separated; none removes
        /// the entry.
        #[arg(long, value_name = "LIST|none")]
        communities: String,
    },
    /// Named import/export filters peers refer to.
    Filter {
        #[command(subcommand)]
        op: crate::bgp_filter::FilterOp,
    },
    /// The local agent's BGP peers (like calicoctl node status); needs no
    /// store, only the agent's socket.
    Status(crate::bgp_status::BgpStatusCmd),
    /// The routes the local agent received, and why each was accepted or
    /// rejected (guard rule or filter rule); only the agent's socket.
    Routes(crate::bgp_status::BgpRoutesCmd),
}

/// What the local agent answers (no store needed).
pub enum AgentCmd {
    Status(crate::bgp_status::BgpStatusCmd),
    Routes(crate::bgp_status::BgpRoutesCmd),
}

impl BgpCmd {
    /// `bgp status` and `bgp routes` talk to the local agent, not the
    /// store: split them off before a store is opened.
    #[allow(clippy::result_large_err)] // parsed once per run
    pub fn into_agent(self) -> Result<(AgentCmd, bool), BgpCmd> {
        match self.op {
            BgpOp::Status(s) => Ok((AgentCmd::Status(s), self.json)),
            BgpOp::Routes(r) => Ok((AgentCmd::Routes(r), self.json)),
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
        #[command(flatten)]
        settings: SettingsFlags,
    },
    /// Change a peer's settings (plexusd applies them at once: policy
    /// without resetting the session, the rest by re-establishing it).
    Set {
        address: String,
        #[arg(long = "as", value_name = "ASN")]
        asn: Option<String>,
        #[command(flatten)]
        settings: SettingsFlags,
    },
    /// List the peers.
    List,
    /// Remove a peer.
    Remove { address: String },
}

#[derive(Subcommand)]
enum MeshOp {
    /// Change the node-to-node sessions' settings.
    Set {
        #[command(flatten)]
        settings: SettingsFlags,
    },
}

fn cidrs(s: &str) -> anyhow::Result<Vec<IpNet>> {
    if s == "none" {
        return Ok(Vec::new());
    }
    s.split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| Ok(validate::pool_cidr(c)?))
        .collect()
}

fn cidr_list(v: &[IpNet]) -> String {
    if v.is_empty() {
        return "-".into();
    }
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

pub async fn run(cmd: BgpCmd, c: Cluster) -> anyhow::Result<String> {
    match cmd.op {
        BgpOp::Set {
            asn,
            no_mesh,
            max_paths,
        } => {
            let asn = validate::asn(&asn)?;
            let cfg = c
                .update_bgp_config(|cfg| {
                    cfg.asn = asn;
                    cfg.node_to_node_mesh = !no_mesh;
                    if let Some(m) = max_paths {
                        cfg.max_paths = (m > 1).then_some(m);
                    }
                    Ok(())
                })
                .await?;
            Ok(done(
                cmd.json,
                format!(
                    "BGP: AS {}, node-to-node mesh {}, max paths {}",
                    cfg.asn,
                    if cfg.node_to_node_mesh { "on" } else { "off" },
                    cfg.max_paths.unwrap_or(1)
                ),
                &cfg,
            ))
        }
        BgpOp::Show => {
            let cfg = c.bgp_config().await?;
            if cmd.json {
                return Ok(json(&cfg));
            }
            let mut out = table(
                ["AS", "NODE-TO-NODE MESH", "MAX PATHS", "MESH SESSIONS"],
                &[[
                    cfg.asn.to_string(),
                    yes_no(cfg.node_to_node_mesh),
                    cfg.max_paths.unwrap_or(1).to_string(),
                    summary(&cfg.mesh),
                ]],
            );
            let services: Vec<[String; 2]> = [
                ("cluster IPs", &cfg.service_cluster_ips),
                ("external IPs", &cfg.service_external_ips),
                ("load balancer IPs", &cfg.service_load_balancer_ips),
            ]
            .iter()
            .map(|(k, v)| [k.to_string(), cidr_list(v)])
            .collect();
            out.push('\n');
            out.push_str(&table(["SERVICES", "ANNOUNCED"], &services));
            if !cfg.prefix_advertisements.is_empty() {
                let rows: Vec<[String; 2]> = cfg
                    .prefix_advertisements
                    .iter()
                    .map(|a| [a.cidr.to_string(), communities_text(&a.communities)])
                    .collect();
                out.push('\n');
                out.push_str(&table(["PREFIXES IN", "COMMUNITIES"], &rows));
            }
            Ok(out)
        }
        BgpOp::Peer { op } => peer(op, cmd.json, c).await,
        BgpOp::Mesh {
            op: MeshOp::Set { settings },
        } => {
            let cfg = c
                .update_bgp_config(|cfg| {
                    settings
                        .apply(&mut cfg.mesh)
                        .map_err(|e| plexus_ipam::IpamError::Invalid(e.to_string()))
                })
                .await?;
            check_filters(&c, &cfg.mesh.filters).await?;
            Ok(done(
                cmd.json,
                format!("mesh sessions: {}", summary(&cfg.mesh)),
                &cfg,
            ))
        }
        BgpOp::Services {
            cluster_ips,
            external_ips,
            load_balancer_ips,
        } => {
            let parse = |o: &Option<String>| o.as_deref().map(cidrs).transpose();
            let (ci, ei, li) = (
                parse(&cluster_ips)?,
                parse(&external_ips)?,
                parse(&load_balancer_ips)?,
            );
            let cfg = c
                .update_bgp_config(|cfg| {
                    if let Some(v) = &ci {
                        cfg.service_cluster_ips = v.clone();
                    }
                    if let Some(v) = &ei {
                        cfg.service_external_ips = v.clone();
                    }
                    if let Some(v) = &li {
                        cfg.service_load_balancer_ips = v.clone();
                    }
                    Ok(())
                })
                .await?;
            Ok(done(
                cmd.json,
                format!(
                    "services announced: cluster IPs {}, external IPs {}, load balancer IPs {}",
                    cidr_list(&cfg.service_cluster_ips),
                    cidr_list(&cfg.service_external_ips),
                    cidr_list(&cfg.service_load_balancer_ips)
                ),
                &cfg,
            ))
        }
        BgpOp::Advertise {
            cidr,
            communities: list,
        } => {
            let net = validate::pool_cidr(&cidr)?;
            let set = communities(&list)?;
            let cfg = c
                .update_bgp_config(|cfg| {
                    cfg.prefix_advertisements.retain(|a| a.cidr != net);
                    if !set.is_empty() {
                        cfg.prefix_advertisements.push(PrefixAdvertisement {
                            cidr: net,
                            communities: set.clone(),
                        });
                    }
                    Ok(())
                })
                .await?;
            Ok(done(
                cmd.json,
                format!(
                    "prefixes in {net} announced with communities {}",
                    communities_text(&set)
                ),
                &cfg,
            ))
        }
        BgpOp::Filter { op } => crate::bgp_filter::run(op, cmd.json, c).await,
        BgpOp::Status(_) | BgpOp::Routes(_) => {
            unreachable!("bgp status/routes are split off by into_agent before a store is opened")
        }
    }
}

/// Every filter named exists (a peer naming a missing one would have its
/// routes refused by plexusd).
async fn check_filters(c: &Cluster, names: &[String]) -> anyhow::Result<()> {
    let have = c.filters().await?;
    if let Some(missing) = names.iter().find(|n| !have.contains_key(*n)) {
        bail!("no filter named {missing}: add it with plexusctl bgp filter first");
    }
    Ok(())
}

async fn peer(op: PeerOp, json_out: bool, c: Cluster) -> anyhow::Result<String> {
    match op {
        PeerOp::Add {
            address,
            asn,
            node,
            settings,
        } => {
            let mut peer = Peer {
                address: validate::address("peer address", &address)?,
                asn: validate::asn(&asn)?,
                node,
                settings: Default::default(),
            };
            settings.apply(&mut peer.settings)?;
            if let Some(n) = &peer.node {
                validate::name("node", n)?;
            }
            check_filters(&c, &peer.settings.filters).await?;
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
        PeerOp::Set {
            address,
            asn,
            settings,
        } => {
            let addr = validate::address("peer address", &address)?;
            let asn = asn.as_deref().map(validate::asn).transpose()?;
            let peer = c
                .update_peer(&addr, |p| {
                    if let Some(a) = asn {
                        p.asn = a;
                    }
                    settings
                        .apply(&mut p.settings)
                        .map_err(|e| plexus_ipam::IpamError::Invalid(e.to_string()))
                })
                .await?;
            check_filters(&c, &peer.settings.filters).await?;
            Ok(done(
                json_out,
                format!(
                    "peer {} AS {}: {}",
                    peer.address,
                    peer.asn,
                    summary(&peer.settings)
                ),
                &peer,
            ))
        }
        PeerOp::List => {
            let peers = c.peers().await?;
            if json_out {
                return Ok(json(&peers));
            }
            let rows: Vec<[String; 4]> = peers
                .iter()
                .map(|p| {
                    [
                        p.address.to_string(),
                        p.asn.to_string(),
                        p.node.clone().unwrap_or_else(|| "(global)".into()),
                        summary(&p.settings),
                    ]
                })
                .collect();
            Ok(table(["ADDRESS", "AS", "NODE", "SETTINGS"], &rows))
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
