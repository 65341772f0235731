//! Where the cluster-IPAM pools live in the store: a prefix of their own
//! (default [`DEFAULT_CLUSTER_PREFIX`]), apart from the routed network's,
//! so nothing here makes a node routed or starts BGP.
//!
//! | key | value |
//! |-----|-------|
//! | `<prefix>/grids/<space>/<4\|6>` | [`super::Grid`]: the block size of a space's family |
//! | `<prefix>/blocks/<space>/<cidr-key>` | [`super::SpaceBlock`]: owner node and allocations |
//! | `<prefix>/ranges/<space>/<cidr-key>` | [`super::RangeRecord`]: a range seen in use (for `ipam show`) |
//! | `<prefix>/nodes/<name>` | [`super::NodeSeen`]: when the node's agent was last seen |
//!
//! A space id is `<network_name or ->/shared` (overlapping ranges protected:
//! every range of that network name shares one address space) or
//! `<network_name or ->/<cidr-key>` (`enable_overlapping_ranges: false`).

use ipnet::IpNet;

use crate::layout::block_key;

/// The default key prefix (`plexusctl --cluster-ipam-prefix`).
pub const DEFAULT_CLUSTER_PREFIX: &str = "/plexus/clusteripam";

/// Key paths under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterLayout {
    prefix: String,
}

impl Default for ClusterLayout {
    fn default() -> Self {
        ClusterLayout::new(DEFAULT_CLUSTER_PREFIX)
    }
}

fn family(v4: bool) -> &'static str {
    if v4 {
        "4"
    } else {
        "6"
    }
}

impl ClusterLayout {
    /// Keys under `prefix` (a trailing `/` is dropped).
    pub fn new(prefix: &str) -> ClusterLayout {
        ClusterLayout {
            prefix: prefix.trim_end_matches('/').to_string(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn grid(&self, space: &str, v4: bool) -> String {
        format!("{}/grids/{space}/{}", self.prefix, family(v4))
    }

    pub fn grids(&self) -> String {
        format!("{}/grids/", self.prefix)
    }

    /// Every space's blocks.
    pub fn blocks(&self) -> String {
        format!("{}/blocks/", self.prefix)
    }

    /// One space's blocks.
    pub fn space_blocks(&self, space: &str) -> String {
        format!("{}{space}/", self.blocks())
    }

    pub fn block(&self, space: &str, cidr: &IpNet) -> String {
        format!("{}{}", self.space_blocks(space), block_key(cidr))
    }

    pub fn ranges(&self) -> String {
        format!("{}/ranges/", self.prefix)
    }

    pub fn range(&self, space: &str, cidr: &IpNet) -> String {
        format!("{}{space}/{}", self.ranges(), block_key(cidr))
    }

    pub fn nodes(&self) -> String {
        format!("{}/nodes/", self.prefix)
    }

    pub fn node(&self, name: &str) -> String {
        format!("{}{name}", self.nodes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        let l = ClusterLayout::new("/c/");
        let b: IpNet = "10.0.0.16/30".parse().unwrap();
        assert_eq!(l.block("-/shared", &b), "/c/blocks/-/shared/10.0.0.16-30");
        assert_eq!(l.space_blocks("blue/shared"), "/c/blocks/blue/shared/");
        assert_eq!(l.grid("-/10.0.0.0-24", true), "/c/grids/-/10.0.0.0-24/4");
        assert_eq!(
            l.range("-/shared", &"fd00::/64".parse().unwrap()),
            "/c/ranges/-/shared/fd00::-64"
        );
        assert_eq!(
            ClusterLayout::default().node("n1"),
            "/plexus/clusteripam/nodes/n1"
        );
    }
}
