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
//! The routed network's `nat-outgoing` (agent/src/routed/natout.rs) writes
//! its own chain in the same table through [`apply_chain`].

use ipnet::IpNet;
use plexus_netlink::nft::{self, BaseChain, Batch, CmpOp, Expr, Family, IpVersion, Rule};

use crate::olddp::MasqRules;

pub const TABLE: &str = "plexusd";
pub const CHAIN: &str = "overlay-masq";
const COMMENT: &str = "plexusd overlay ipMasq";

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

/// The batch that (re)writes `chain` (a nat base chain on postrouting in
/// our table) to hold exactly `rules`, atomically.
pub fn write_chain(chain: &str, comment: &str, rules: &[Vec<Expr>]) -> Batch {
    let mut b = Batch::new();
    b.add_table(Family::Inet, TABLE)
        .add_chain(
            Family::Inet,
            TABLE,
            chain,
            Some(&BaseChain::SRCNAT),
            Some(comment),
        )
        .flush_chain(Family::Inet, TABLE, chain);
    for exprs in rules {
        b.add_rule(Family::Inet, TABLE, chain, exprs, Some(comment));
    }
    b
}

/// The batch that removes `chain` (only send it when the chain exists:
/// the kernel answers ENOENT otherwise).
pub fn remove_chain(chain: &str) -> Batch {
    let mut b = Batch::new();
    b.flush_chain(Family::Inet, TABLE, chain)
        .delete_chain(Family::Inet, TABLE, chain);
    b
}

/// Applies the overlay's rules (or their absence) on the calling thread's
/// namespace.
pub fn apply(r: Option<&MasqRules>) -> Result<(), plexus_netlink::Error> {
    apply_chain(CHAIN, COMMENT, r.map(overlay_rules).as_deref())
}

/// Writes `chain` with `rules`, or removes it when `None` (no table is
/// created just to be empty), on the calling thread's namespace.
pub fn apply_chain(
    chain: &str,
    comment: &str,
    rules: Option<&[Vec<Expr>]>,
) -> Result<(), plexus_netlink::Error> {
    match rules {
        Some(rules) => {
            let sock = nft::Socket::open()?;
            write_chain(chain, comment, rules).commit(&sock)
        }
        None => {
            let sock = match nft::Socket::open() {
                Ok(s) => s,
                Err(e) if e.is_not_supported() => return Ok(()),
                Err(e) => return Err(e),
            };
            let ours = nft::list_chains(&sock, Family::Inet, TABLE)?
                .iter()
                .any(|c| c.name == chain);
            if ours {
                remove_chain(chain).commit(&sock)?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The batch that (re)writes the overlay's chain with the rules for `r`.
    fn install(r: &MasqRules) -> Batch {
        write_chain(CHAIN, COMMENT, &overlay_rules(r))
    }

    #[test]
    fn dual_stack_chain_has_eight_rules() {
        let r = MasqRules {
            network: Some("10.5.0.0/16".parse().unwrap()),
            subnet: Some("10.5.1.0/24".parse().unwrap()),
            ipv6_network: Some("fd00:5::/48".parse().unwrap()),
            ipv6_subnet: Some("fd00:5:1::/64".parse().unwrap()),
        };
        // table, chain, flush, the kube-proxy rule, then 4 rules per family.
        assert_eq!(install(&r).len(), 4 + 8);
        let v4only = MasqRules {
            ipv6_network: None,
            ipv6_subnet: None,
            ..r
        };
        assert_eq!(install(&v4only).len(), 4 + 4);
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
        assert_eq!(remove_chain(CHAIN).len(), 2);
    }
}
