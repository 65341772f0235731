//! The records kept in the store, as serde JSON (camelCase, like the rest
//! of Plexus' stored documents).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use plexus_bgp::attrs::CommunitySet;
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

/// The cluster's BGP settings (`plexusctl bgp set`), Calico's
/// BGPConfiguration: the AS, the mesh and its session settings, ECMP, the
/// service addresses every node announces, and communities by prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BgpConfig {
    /// The AS every node is in unless its [`NodeSettings::asn`] says otherwise.
    pub asn: u32,
    /// A full iBGP mesh among the nodes; off when route reflectors are used.
    pub node_to_node_mesh: bool,
    /// The sessions between nodes (mesh and route reflectors): Calico's
    /// nodeMeshPassword and nodeMeshMaxRestartTime, and BFD.
    #[serde(default, skip_serializing_if = "PeerSettings::is_empty")]
    pub mesh: PeerSettings,
    /// ECMP: the most next hops one learned prefix is installed over
    /// (unset or 1: the best path only). Read when plexusd starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_paths: Option<u32>,
    /// Calico's serviceClusterIPs: announced by every node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_cluster_ips: Vec<IpNet>,
    /// Calico's serviceExternalIPs: announced by every node; a Service with
    /// externalTrafficPolicy Local has its addresses in these ranges
    /// announced as /32 (/128) by the nodes running an endpoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_external_ips: Vec<IpNet>,
    /// Calico's serviceLoadBalancerIPs, as the external ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_load_balancer_ips: Vec<IpNet>,
    /// Calico's prefixAdvertisements: communities added to every prefix we
    /// originate inside `cidr` (a pool's blocks, service addresses); the
    /// most specific matching entry wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefix_advertisements: Vec<PrefixAdvertisement>,
}

/// Calico's defaults: private AS 64512, full mesh.
impl Default for BgpConfig {
    fn default() -> Self {
        BgpConfig {
            asn: 64512,
            node_to_node_mesh: true,
            mesh: PeerSettings::default(),
            max_paths: None,
            service_cluster_ips: Vec::new(),
            service_external_ips: Vec::new(),
            service_load_balancer_ips: Vec::new(),
            prefix_advertisements: Vec::new(),
        }
    }
}

impl BgpConfig {
    /// Every configured service range, each with its kind.
    pub fn service_ranges(&self) -> impl Iterator<Item = (&'static str, &IpNet)> {
        let tag = |k: &'static str| move |n| (k, n);
        self.service_cluster_ips
            .iter()
            .map(tag("clusterIP"))
            .chain(self.service_external_ips.iter().map(tag("externalIP")))
            .chain(
                self.service_load_balancer_ips
                    .iter()
                    .map(tag("loadBalancerIP")),
            )
    }

    /// The communities a prefix we originate carries: those of the most
    /// specific [`PrefixAdvertisement`] containing it.
    pub fn communities_for(&self, prefix: &IpNet) -> CommunitySet {
        PrefixAdvertisement::lookup(&self.prefix_advertisements, prefix)
    }
}

/// Communities for the prefixes we originate inside `cidr`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrefixAdvertisement {
    pub cidr: IpNet,
    pub communities: CommunitySet,
}

impl PrefixAdvertisement {
    /// The communities of the most specific entry containing `prefix`.
    pub fn lookup(list: &[PrefixAdvertisement], prefix: &IpNet) -> CommunitySet {
        list.iter()
            .filter(|a| a.cidr.contains(prefix))
            .max_by_key(|a| a.cidr.prefix_len())
            .map(|a| a.communities.clone())
            .unwrap_or_default()
    }
}

/// Where a TCP MD5 password comes from: the record itself, or (Kubernetes
/// mode) a key of a Secret, as Calico's `password.secretKeyRef`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PasswordSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
}

/// A key of a Kubernetes Secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    pub name: String,
    pub key: String,
    /// Default: plexusd's `--secret-namespace` (kube-system).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// BFD for a session (RFC 5880/5881, single hop). Present: on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BfdSettings {
    /// How often we would like to send (milliseconds).
    #[serde(default = "default_bfd_ms")]
    pub min_tx_ms: u32,
    /// How often we can take the peer's packets (milliseconds).
    #[serde(default = "default_bfd_ms")]
    pub min_rx_ms: u32,
    /// Packets missed before the session is declared down.
    #[serde(default = "default_bfd_multiplier")]
    pub multiplier: u8,
}

fn default_bfd_ms() -> u32 {
    300
}

fn default_bfd_multiplier() -> u8 {
    3
}

impl Default for BfdSettings {
    fn default() -> Self {
        BfdSettings {
            min_tx_ms: default_bfd_ms(),
            min_rx_ms: default_bfd_ms(),
            multiplier: default_bfd_multiplier(),
        }
    }
}

/// A session's settings beyond address and AS, for explicit peers and for
/// the mesh ([`BgpConfig::mesh`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PeerSettings {
    /// TCP MD5 (RFC 2385).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<PasswordSource>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bfd: Option<BfdSettings>,
    /// Added to everything announced to the peer (standard and large).
    #[serde(skip_serializing_if = "CommunitySet::is_empty")]
    pub communities: CommunitySet,
    /// Names of [`plexus_bgp::BgpFilter`] records, evaluated in order after
    /// the node's import guard.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<String>,
    /// GTSM (RFC 5082): the peer is at most this many hops away.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_security: Option<u8>,
    /// More prefixes than this from the peer reset the session (Cease,
    /// Maximum Number of Prefixes Reached).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_prefixes: Option<u32>,
    /// Calico's maxRestartTime (seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub graceful_restart_time: Option<u16>,
}

impl PeerSettings {
    pub fn is_empty(&self) -> bool {
        *self == PeerSettings::default()
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
    #[serde(flatten)]
    pub settings: PeerSettings,
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
