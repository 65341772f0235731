//! The records kept in the store, as serde JSON (camelCase, like the rest
//! of Plexus' stored documents).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// How traffic between nodes leaves a pool's pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Encap {
    /// Plain routing: the next hop is the owning node.
    #[default]
    None,
    /// IP-in-IP to every other node.
    Ipip,
    /// IP-in-IP only to nodes in another subnet.
    IpipCrossSubnet,
}

impl Encap {
    pub fn as_str(self) -> &'static str {
        match self {
            Encap::None => "none",
            Encap::Ipip => "ipip",
            Encap::IpipCrossSubnet => "ipip-cross-subnet",
        }
    }
}

impl std::fmt::Display for Encap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Encap {
    type Err = String;
    fn from_str(s: &str) -> Result<Encap, String> {
        match s {
            "none" => Ok(Encap::None),
            "ipip" => Ok(Encap::Ipip),
            "ipip-cross-subnet" => Ok(Encap::IpipCrossSubnet),
            _ => Err(format!(
                "unknown encapsulation {s:?}: expected none, ipip or ipip-cross-subnet"
            )),
        }
    }
}

/// An address pool, cut into blocks of `block_size` (a prefix length).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pool {
    pub name: String,
    pub cidr: IpNet,
    pub block_size: u8,
    #[serde(default)]
    pub nat_outgoing: bool,
    #[serde(default)]
    pub encap: Encap,
    /// No new block is claimed from a disabled pool; nodes keep filling the
    /// blocks they already hold (an allocation reads nothing from the store),
    /// and the default pools of a request skip it.
    #[serde(default)]
    pub disabled: bool,
}

/// The block size a pool gets when none is given: /26 (64 addresses), or
/// /122 for IPv6, as Calico; a pool smaller than that is one block.
pub fn default_block_size(cidr: &IpNet) -> u8 {
    let default = match cidr {
        IpNet::V4(_) => 26,
        IpNet::V6(_) => 122,
    };
    default.max(cidr.prefix_len())
}

impl Pool {
    /// How many blocks the pool holds (saturating for huge IPv6 pools).
    /// None when a block would be larger than the pool or longer than an
    /// address (a record written past the pool checks).
    pub fn block_count(&self) -> u128 {
        if self.block_size > self.cidr.max_prefix_len() {
            return 0;
        }
        match self.block_size.checked_sub(self.cidr.prefix_len()) {
            Some(bits) => 1u128.checked_shl(u32::from(bits)).unwrap_or(u128::MAX),
            None => 0,
        }
    }

    /// How many addresses the pool holds (saturating).
    pub fn size(&self) -> u128 {
        let bits = u32::from(self.cidr.max_prefix_len() - self.cidr.prefix_len());
        1u128.checked_shl(bits).unwrap_or(u128::MAX)
    }
}

/// The cluster's BGP settings (`plexusctl bgp set`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BgpConfig {
    /// The AS every node is in unless its [`NodeSettings::asn`] says otherwise.
    pub asn: u32,
    /// A full iBGP mesh among the nodes; off when route reflectors are used.
    pub node_to_node_mesh: bool,
}

/// Calico's defaults: private AS 64512, full mesh.
impl Default for BgpConfig {
    fn default() -> Self {
        BgpConfig {
            asn: 64512,
            node_to_node_mesh: true,
        }
    }
}

/// A BGP peer outside the mesh: global (every node peers with it) or one
/// node's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Peer {
    pub address: IpAddr,
    pub asn: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// One node's settings. The agent fills in `address`/`router_id`; the
/// operator sets `asn` and `route_reflector_cluster_id`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSettings {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asn: Option<u32>,
    /// Set: the node is a route reflector with this cluster ID (RFC 4456).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_reflector_cluster_id: Option<Ipv4Addr>,
    /// The address other nodes peer with and route pod traffic to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router_id: Option<Ipv4Addr>,
}

/// Who holds an address: one CNI attachment of one network.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Handle {
    pub network: String,
    pub container_id: String,
    pub ifname: String,
}

impl Handle {
    pub fn new(network: &str, container_id: &str, ifname: &str) -> Handle {
        Handle {
            network: network.into(),
            container_id: container_id.into(),
            ifname: ifname.into(),
        }
    }
}

impl std::fmt::Display for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.network, self.container_id, self.ifname)
    }
}

/// A block of a pool, held by one node. `allocations` maps an address's
/// ordinal in the block (0 = the block's first address) to its holder; the
/// free addresses are the ordinals absent from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Block {
    pub cidr: IpNet,
    pub pool: String,
    pub node: String,
    #[serde(default)]
    pub allocations: BTreeMap<u32, Handle>,
}

impl Block {
    /// How many addresses the block holds.
    pub fn size(&self) -> u32 {
        // Validated pools make blocks of at most 2^12 addresses; a record
        // edited by hand beyond u32 saturates instead of overflowing.
        1u32.checked_shl(u32::from(
            self.cidr.max_prefix_len() - self.cidr.prefix_len(),
        ))
        .unwrap_or(u32::MAX)
    }

    pub fn used(&self) -> u32 {
        self.allocations.len() as u32
    }

    pub fn free(&self) -> u32 {
        self.size() - self.used()
    }

    /// The lowest free ordinal.
    pub fn first_free(&self) -> Option<u32> {
        (0..self.size()).find(|o| !self.allocations.contains_key(o))
    }

    /// The address at `ordinal`.
    pub fn address(&self, ordinal: u32) -> IpAddr {
        crate::arith::offset(self.cidr.network(), u128::from(ordinal))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(cidr: &str, block_size: u8) -> Pool {
        Pool {
            name: "p".into(),
            cidr: cidr.parse().unwrap(),
            block_size,
            nat_outgoing: false,
            encap: Encap::None,
            disabled: false,
        }
    }

    #[test]
    fn block_counts() {
        assert_eq!(pool("10.244.0.0/16", 26).block_count(), 1024);
        assert_eq!(pool("fd00::/0", 128).block_count(), u128::MAX);
        // Found by fuzz/fuzz_targets/routed_records.rs (the corpus keeps
        // the record): blocks larger than the pool, or longer than an
        // address, are none at all, not an overflow.
        assert_eq!(pool("10.244.0.0/16", 13).block_count(), 0);
        assert_eq!(pool("10.244.0.0/16", 40).block_count(), 0);
    }
}
