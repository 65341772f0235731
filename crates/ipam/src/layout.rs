//! Where the routed network keeps its state in the store. Every key is
//! under one prefix (default [`DEFAULT_PREFIX`]):
//!
//! | key | value |
//! |-----|-------|
//! | `<prefix>/pools/<name>` | [`crate::Pool`] |
//! | `<prefix>/blocks/<cidr-key>` | [`crate::Block`] (owner node and allocations) |
//! | `<prefix>/bgp/config` | [`crate::BgpConfig`] |
//! | `<prefix>/bgp/peers/<address>` | [`crate::Peer`] |
//! | `<prefix>/bgp/filters/<name>` | [`plexus_bgp::BgpFilter`] (named by peers' `filters`) |
//! | `<prefix>/nodes/<name>` | [`crate::NodeSettings`] |
//!
//! A block's key is its CIDR with `/` written `-` (`10.244.3.64-26`,
//! `fd00:10::40-122`), so the key itself is the claim: two nodes creating
//! it race on one key, and create-if-absent lets exactly one win.

use ipnet::IpNet;

/// The default key prefix (`plexusctl --routed-prefix`).
pub const DEFAULT_PREFIX: &str = "/plexus/routed";

/// Key paths under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    prefix: String,
}

impl Default for Layout {
    fn default() -> Self {
        Layout::new(DEFAULT_PREFIX)
    }
}

impl Layout {
    /// Keys under `prefix` (a trailing `/` is dropped).
    pub fn new(prefix: &str) -> Layout {
        Layout {
            prefix: prefix.trim_end_matches('/').to_string(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn pools(&self) -> String {
        format!("{}/pools/", self.prefix)
    }

    pub fn pool(&self, name: &str) -> String {
        format!("{}{name}", self.pools())
    }

    pub fn blocks(&self) -> String {
        format!("{}/blocks/", self.prefix)
    }

    pub fn block(&self, cidr: &IpNet) -> String {
        format!("{}{}", self.blocks(), block_key(cidr))
    }

    pub fn bgp_config(&self) -> String {
        format!("{}/bgp/config", self.prefix)
    }

    pub fn peers(&self) -> String {
        format!("{}/bgp/peers/", self.prefix)
    }

    pub fn peer(&self, address: &std::net::IpAddr) -> String {
        format!("{}{address}", self.peers())
    }

    pub fn filters(&self) -> String {
        format!("{}/bgp/filters/", self.prefix)
    }

    pub fn filter(&self, name: &str) -> String {
        format!("{}{name}", self.filters())
    }

    pub fn nodes(&self) -> String {
        format!("{}/nodes/", self.prefix)
    }

    pub fn node(&self, name: &str) -> String {
        format!("{}{name}", self.nodes())
    }
}

/// A block's key segment: its CIDR with `/` as `-`.
pub fn block_key(cidr: &IpNet) -> String {
    format!("{}-{}", cidr.network(), cidr.prefix_len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        let l = Layout::new("/x/");
        assert_eq!(l.pool("p"), "/x/pools/p");
        assert_eq!(
            l.block(&"10.244.3.64/26".parse().unwrap()),
            "/x/blocks/10.244.3.64-26"
        );
        assert_eq!(
            l.block(&"fd00:10::40/122".parse().unwrap()),
            "/x/blocks/fd00:10::40-122"
        );
        assert_eq!(
            l.peer(&"192.0.2.1".parse().unwrap()),
            "/x/bgp/peers/192.0.2.1"
        );
        assert_eq!(Layout::default().node("n1"), "/plexus/routed/nodes/n1");
    }
}
