//! Which objects in the kernel are plexusd's (what listing returns, what
//! a diff may change or delete). Everything else is never touched:
//!
//! - devices: the ones some producer wants ([`super::entry::Link`]
//!   entries), and on them every address (but IPv6 link-local), every
//!   permanent neighbour and every FDB entry of their own;
//! - routes: the block blackholes (proto 113) once the blocks' producer
//!   has spoken, learned routes (proto 114 at [`LEARNED_METRIC`]) once the
//!   learned routes' producer has, and what the overlay claims by rule
//!   (its routes into its networks, which flanneld and earlier runs wrote
//!   without a protocol of ours);
//! - nftables: the chains of inet `plexusd` whose producer has spoken, and
//!   the tables a producer wants in other namespaces.
//!
//! A kind of object becomes ours only when its producer speaks (its first
//! `set`, `update` or `adopt`): a restarted agent lists the previous
//! run's entries but touches none of them until the producer that will
//! take them over says what it wants, so nothing blinks while it starts.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;

use super::entry::{LEARNED_METRIC, PROTO_BGP, PROTO_BLOCK};

/// The overlay's routes, flannel's rule: into one of its networks (not to
/// its own subnets), via a gateway or out of one of its devices.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OverlayRoutes {
    pub networks: Vec<IpNet>,
    pub own_subnets: Vec<IpNet>,
    pub devices: Vec<String>,
}

impl OverlayRoutes {
    pub fn owns(&self, dst: &IpNet, gateway: Option<IpAddr>, dev: Option<&str>) -> bool {
        let on_device = dev.is_some_and(|d| self.devices.iter().any(|x| x == d));
        self.networks.iter().any(|n| n.contains(dst))
            && !self.own_subnets.contains(dst)
            && (gateway.is_some() || on_device)
    }
}

/// Everything that makes a kernel object ours.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims {
    /// Devices some producer wants.
    pub links: BTreeSet<String>,
    pub overlay: Option<OverlayRoutes>,
    /// Tables in other namespaces some producer wants.
    pub tables: BTreeSet<(PathBuf, String)>,
    /// Block blackholes (proto 113).
    pub blocks: bool,
    /// Learned routes (proto 114 at [`LEARNED_METRIC`]).
    pub learned: bool,
    /// Chains of plexusd's table in the node's namespace.
    pub chains: BTreeSet<String>,
}

impl Claims {
    /// Whether a listed route is ours.
    pub fn owns_route(
        &self,
        dst: &IpNet,
        proto: Option<u8>,
        metric: u32,
        gateway: Option<IpAddr>,
        dev: Option<&str>,
    ) -> bool {
        match proto {
            Some(PROTO_BLOCK) => self.blocks,
            Some(PROTO_BGP) => self.learned && metric == LEARNED_METRIC,
            _ => {
                metric == 0
                    && self
                        .overlay
                        .as_ref()
                        .is_some_and(|o| o.owns(dst, gateway, dev))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn routes_of_ours_and_of_others() {
        let c = Claims {
            overlay: Some(OverlayRoutes {
                networks: vec![net("10.5.0.0/16")],
                own_subnets: vec![net("10.5.1.0/24")],
                devices: vec!["flannel.1".into()],
            }),
            blocks: true,
            learned: true,
            ..Claims::default()
        };
        let gw = Some("10.5.2.0".parse().unwrap());
        assert!(c.owns_route(&net("10.5.2.0/24"), Some(3), 0, gw, Some("flannel.1")));
        // Our own subnet (cni0's connected route) and other networks: not ours.
        assert!(!c.owns_route(&net("10.5.1.0/24"), Some(2), 0, None, Some("cni0")));
        assert!(!c.owns_route(&net("172.16.0.0/16"), Some(4), 0, gw, Some("eth0")));
        // Block blackholes, learned routes at our metric only.
        assert!(c.owns_route(&net("10.96.0.0/26"), Some(113), 0, None, None));
        assert!(c.owns_route(&net("0.0.0.0/0"), Some(114), LEARNED_METRIC, gw, None));
        assert!(!c.owns_route(&net("0.0.0.0/0"), Some(114), 0, gw, None));
        assert!(!c.owns_route(&net("0.0.0.0/0"), Some(4), 0, gw, None));
        // Before their producers speak, not even those.
        let quiet = Claims::default();
        assert!(!quiet.owns_route(&net("10.96.0.0/26"), Some(113), 0, None, None));
        assert!(!quiet.owns_route(&net("0.0.0.0/0"), Some(114), LEARNED_METRIC, gw, None));
    }
}
