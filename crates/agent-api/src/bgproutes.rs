//! The payloads of `bgp_routes` (`plexusctl bgp routes`): what the node's
//! BGP speaker received, and why each path was accepted or rejected.

use serde::{Deserialize, Serialize};

/// The question: every peer's paths, or one peer's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpRoutesQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<std::net::IpAddr>,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpRoutes {
    pub routes: Vec<BgpRoute>,
}

/// One received path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BgpRoute {
    pub peer: String,
    pub prefix: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_hop: Option<String>,
    /// AS numbers, first the neighbour's.
    #[serde(default)]
    pub as_path: Vec<u32>,
    /// Standard (`A:B`) and large (`G:L1:L2`) communities.
    #[serde(default)]
    pub communities: Vec<String>,
    /// `accepted` or `rejected`.
    pub verdict: String,
    /// Which stage rejected it: `guard` (the node's safety rules, loops)
    /// or `filter` (the peer's filters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// Why, in words (the guard rule, or the filter and rule index).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The best path for the prefix (installed), or one of its ECMP paths.
    #[serde(default)]
    pub best: bool,
    #[serde(default)]
    pub multipath: bool,
    #[serde(default)]
    pub stale: bool,
}
