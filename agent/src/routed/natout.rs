//! A pool's `nat-outgoing`, as Calico's natOutgoing: packets from a pod of
//! such a pool to anything outside every pool leave with the node's
//! address (masquerade, fully random ports); pod-to-pod traffic, across
//! pools too, keeps its source. One nat chain of our own in plexusd's
//! table (see [`crate::masq`]):
//!
//! ```text
//! meta mark & 0x4000 == 0x4000 accept            # kube-proxy NATs these itself
//! ip daddr POOL accept                           # for every pool
//! ip saddr NAT_POOL ip daddr != 224.0.0.0/4 masquerade fully-random
//! ```
//!
//! [`rules`] and [`chain`] are pure; [`sync`] hands the chain to the data
//! plane (none when no pool wants NAT: then the chain goes).

use plexus_ipam::Pool;
use plexus_netlink::nft::{BaseChain, CmpOp, Expr, IpVersion, Rule};

use crate::dataplane::entry::CHAIN_NAT_OUTGOING;
use crate::dataplane::{Chain, DataPlane, Entry, Owner};
use crate::masq::kube_proxy_rule;

pub const CHAIN: &str = CHAIN_NAT_OUTGOING;
const COMMENT: &str = "plexusd routed nat-outgoing";

/// The chain's rules for these pools, or `None` when no pool asks for NAT
/// (then the chain should not exist).
pub fn rules(pools: &[Pool]) -> Option<Vec<Vec<Expr>>> {
    if !pools.iter().any(|p| p.nat_outgoing) {
        return None;
    }
    let mut all = vec![kube_proxy_rule()];
    for p in pools {
        let v = IpVersion::of(&p.cidr);
        all.push(Rule::ip(v).daddr(&p.cidr, CmpOp::Eq).accept());
    }
    for p in pools.iter().filter(|p| p.nat_outgoing) {
        let v = IpVersion::of(&p.cidr);
        all.push(
            Rule::ip(v)
                .saddr(&p.cidr, CmpOp::Eq)
                .daddr_not_multicast(v)
                .masquerade_fully_random(),
        );
    }
    Some(all)
}

/// The chain in the node's namespace for these pools, as the data plane
/// writes it; `None` when no pool asks for NAT (then the chain goes).
pub fn chain(pools: &[Pool]) -> Option<Chain> {
    rules(pools).map(|rules| Chain {
        name: CHAIN_NAT_OUTGOING.into(),
        base: Some(BaseChain::SRCNAT),
        comment: COMMENT.into(),
        rules,
    })
}

/// Hands the chain for `pools` to the data plane (a failure is counted
/// and logged; the data plane retries it).
pub async fn sync(dp: &DataPlane, pools: &[Pool], status: &crate::status::Shared) {
    let entries: Vec<Entry> = chain(pools).into_iter().map(Entry::Chain).collect();
    let o = dp.set(Owner::NatOutgoing, entries).await;
    if !o.is_ok() {
        status.dataplane_errors(o.failed.len());
        for (k, why) in &o.failed {
            tracing::error!(key = %k, error = %why, "writing the nat-outgoing rules");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(name: &str, cidr: &str, nat: bool) -> Pool {
        Pool {
            name: name.into(),
            cidr: cidr.parse().unwrap(),
            block_size: 26,
            nat_outgoing: nat,
            encap: Default::default(),
            disabled: false,
        }
    }

    #[test]
    fn no_chain_without_a_nat_pool() {
        assert_eq!(rules(&[pool("a", "10.96.0.0/16", false)]), None);
        assert_eq!(rules(&[]), None);
    }

    #[test]
    fn every_pool_is_exempt_and_only_nat_pools_are_masqueraded() {
        let pools = [
            pool("a", "10.96.0.0/16", true),
            pool("b", "10.97.0.0/16", false),
            pool("v6", "fd96::/48", true),
        ];
        let r = rules(&pools).unwrap();
        // kube-proxy, 3 exemptions, 2 masquerades.
        assert_eq!(r.len(), 6);
        assert_eq!(r[0], kube_proxy_rule());
        for (i, p) in pools.iter().enumerate() {
            let rule = &r[1 + i];
            assert_eq!(
                rule.last(),
                Some(&Expr::Verdict(plexus_netlink::nft::Verdict::Accept))
            );
            let nfproto = IpVersion::of(&p.cidr).nfproto();
            assert_eq!(rule[1], Expr::cmp(CmpOp::Eq, &[nfproto]));
        }
        // ip saddr 10.96.0.0/16 (a 2-byte compare after the load)...
        let v4 = &r[4];
        assert_eq!(v4[1], Expr::cmp(CmpOp::Eq, &[2]));
        assert!(v4.contains(&Expr::cmp(CmpOp::Eq, &[10, 96])));
        assert_eq!(v4.last(), Some(&Expr::MasqRandomFully));
        // ...and the IPv6 pool's with nfproto ipv6.
        assert_eq!(r[5][1], Expr::cmp(CmpOp::Eq, &[10]));
        assert_eq!(r[5].last(), Some(&Expr::MasqRandomFully));
        // Pool b is exempt as a destination but never masqueraded.
        assert!(!r[4..]
            .iter()
            .any(|x| x.contains(&Expr::cmp(CmpOp::Eq, &[10, 97]))));
    }
}
