//! The cluster-IPAM records, as serde JSON (camelCase).

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The block size (prefix length) a space's family is cut into, fixed by
/// the first allocation: blocks of one space never overlap because they all
/// sit on this one grid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Grid {
    pub space: String,
    pub block_size: u8,
}

/// Who holds an address: one attachment on one node, and the pod it
/// belongs to when the runtime said.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Holder {
    /// The node the attachment is on (not always the block's: a borrowed
    /// address lives in another node's block).
    pub node: String,
    /// The CNI network name (the config's `name`): CNI GC goes by it.
    pub network: String,
    #[serde(rename = "containerID")]
    pub container_id: String,
    #[serde(rename = "interface")]
    pub ifname: String,
    /// The range the address was given for (its CIDR).
    pub range: IpNet,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pod_namespace: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pod_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pod_uid: String,
}

impl Holder {
    /// The attachment, as CNI names it.
    pub fn is(&self, container_id: &str, ifname: &str) -> bool {
        self.container_id == container_id && self.ifname == ifname
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}/{} on node {}",
            self.network, self.container_id, self.ifname, self.node
        )
    }
}

/// A block of a space. `node` is the node it is affine to: that node
/// allocates in it without reading; others borrow single addresses from it
/// when they have no block with room. An empty `node` is a block whose node
/// was removed while other nodes still held addresses in it: any node may
/// adopt it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpaceBlock {
    pub space: String,
    pub cidr: IpNet,
    pub node: String,
    /// Ordinal in the block (0 = its first address) → holder.
    #[serde(default)]
    pub allocations: BTreeMap<u32, Holder>,
}

impl SpaceBlock {
    /// How many addresses the block spans (blocks hold at most 4096).
    pub fn size(&self) -> u32 {
        1u32.checked_shl(u32::from(
            self.cidr.max_prefix_len() - self.cidr.prefix_len(),
        ))
        .unwrap_or(u32::MAX)
    }

    pub fn address(&self, ordinal: u32) -> IpAddr {
        crate::arith::offset(self.cidr.network(), u128::from(ordinal))
    }

    /// The ordinal of `addr`, when it is in the block.
    pub fn ordinal(&self, addr: IpAddr) -> Option<u32> {
        if !self.cidr.contains(&addr) {
            return None;
        }
        crate::arith::distance(self.cidr.network(), addr).and_then(|d| u32::try_from(d).ok())
    }

    /// Addresses held by nodes other than the block's.
    pub fn borrowed(&self) -> usize {
        self.allocations
            .values()
            .filter(|h| h.node != self.node)
            .count()
    }
}

/// A range seen in use, so `ipam show` lists it with its size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RangeRecord {
    pub space: String,
    #[serde(default)]
    pub network_name: String,
    pub overlapping: bool,
    pub range: IpNet,
}

/// When a node's agent was last seen (seconds since the Unix epoch): a
/// node not seen for a grace period is reported by `ipam check`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSeen {
    pub name: String,
    pub last_seen: u64,
}
