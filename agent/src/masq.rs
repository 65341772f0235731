//! flannel's masquerade rules (`--ip-masq`) as one nftables batch, in a
//! table and chain of our own (`inet plexusd` / `overlay-masq`, a nat
//! base chain on postrouting at srcnat priority):
//!
//! ```text
//! meta mark & 0x4000 == 0x4000 accept                # kube-proxy's mark: no double NAT
//! ip saddr NETWORK ip daddr NETWORK accept           # pod to pod: untouched
//! ip saddr != NETWORK ip daddr SUBNET accept         # to our pods from outside: untouched
//! ip saddr NETWORK ip daddr != 224.0.0.0/4 masquerade fully-random  # pods leaving the cluster
//! ip saddr != NETWORK ip daddr NETWORK masquerade fully-random    # the host into the overlay
//! ```
//!
//! (and the same with `ip6` and ff00::/8). `accept` in our own base chain
//! ends only this chain, like flannel's RETURN from its FLANNEL-POSTRTG
//! chain.
//!
//! The routed network's `nat-outgoing` (agent/src/routed/natout.rs) has
//! its own chain in the same table. Both are data plane entries
//! ([`crate::dataplane::Chain`]): the data plane writes them atomically
//! and puts them back when changed by hand.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use plexus_netlink::nft::{BaseChain, CmpOp, Expr, IpVersion, Rule};

use crate::dataplane::entry::CHAIN_OVERLAY_MASQ;
use crate::dataplane::Chain;

const COMMENT: &str = "plexusd overlay ipMasq";

/// flannel's masquerade rules for one network: traffic from the pod network
/// leaving the cluster network is masqueraded, traffic inside it is not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasqRules {
    pub network: Option<Ipv4Net>,
    pub subnet: Option<Ipv4Net>,
    pub ipv6_network: Option<Ipv6Net>,
    pub ipv6_subnet: Option<Ipv6Net>,
}

/// kube-proxy's masquerade mark (`--masquerade-bit` 14): packets it marked
/// are NATed by kube-proxy's own rules, not a second time here.
const KUBE_PROXY_MARK: u32 = 0x4000;

/// `meta mark & 0x4000 == 0x4000 accept`, once for both families.
pub(crate) fn kube_proxy_rule() -> Vec<Expr> {
    Rule::new().mark_has(KUBE_PROXY_MARK).accept()
}

/// The four rules for one family: (source, destination, action).
fn rules(network: IpNet, subnet: IpNet) -> Vec<Vec<Expr>> {
    use CmpOp::{Eq, Neq};
    let v = IpVersion::of(&network);
    vec![
        Rule::ip(v).saddr(&network, Eq).daddr(&network, Eq).accept(),
        Rule::ip(v).saddr(&network, Neq).daddr(&subnet, Eq).accept(),
        Rule::ip(v)
            .saddr(&network, Eq)
            .daddr_not_multicast(v)
            .masquerade_fully_random(),
        Rule::ip(v)
            .saddr(&network, Neq)
            .daddr(&network, Eq)
            .masquerade_fully_random(),
    ]
}

/// The overlay's rules for `r`: the kube-proxy rule, then four per family.
fn overlay_rules(r: &MasqRules) -> Vec<Vec<Expr>> {
    let pairs = [
        r.network.map(IpNet::V4).zip(r.subnet.map(IpNet::V4)),
        r.ipv6_network
            .map(IpNet::V6)
            .zip(r.ipv6_subnet.map(IpNet::V6)),
    ];
    let mut all = vec![kube_proxy_rule()];
    for (net, sub) in pairs.into_iter().flatten() {
        all.extend(rules(net, sub));
    }
    all
}

/// The overlay's chain for `r`, as the data plane writes it.
pub fn chain(r: &MasqRules) -> Chain {
    Chain {
        name: CHAIN_OVERLAY_MASQ.into(),
        base: Some(BaseChain::SRCNAT),
        comment: COMMENT.into(),
        rules: overlay_rules(r),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dual_stack_chain_has_eight_rules() {
        let r = MasqRules {
            network: Some("10.5.0.0/16".parse().unwrap()),
            subnet: Some("10.5.1.0/24".parse().unwrap()),
            ipv6_network: Some("fd00:5::/48".parse().unwrap()),
            ipv6_subnet: Some("fd00:5:1::/64".parse().unwrap()),
        };
        // The kube-proxy rule, then 4 rules per family.
        assert_eq!(chain(&r).rules.len(), 1 + 8);
        let v4only = MasqRules {
            ipv6_network: None,
            ipv6_subnet: None,
            ..r
        };
        assert_eq!(chain(&v4only).rules.len(), 1 + 4);
        let rs = rules(
            "10.5.0.0/16".parse().unwrap(),
            "10.5.1.0/24".parse().unwrap(),
        );
        // meta nfproto ipv4; ip saddr 10.5.0.0/16 (2-byte load) ...
        assert_eq!(rs[0][1], Expr::cmp(CmpOp::Eq, &[2]));
        assert_eq!(rs[0][3], Expr::cmp(CmpOp::Eq, &[10, 5]));
        assert_eq!(rs[1][5], Expr::cmp(CmpOp::Eq, &[10, 5, 1]));
        assert_eq!(rs[2].last(), Some(&Expr::MasqRandomFully));
        assert_eq!(
            rs[0].last(),
            Some(&Expr::Verdict(plexus_netlink::nft::Verdict::Accept))
        );
    }
}
