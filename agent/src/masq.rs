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
use plexus_netlink::nft::{
    self, BaseChain, Batch, ChainType, CmpOp, Expr, Family, Hook, MetaKey, PayloadBase, Policy,
    Verdict,
};

use crate::dataplane::MasqRules;

pub const TABLE: &str = "plexusd";
pub const CHAIN: &str = "overlay-masq";
const COMMENT: &str = "plexusd overlay ipMasq";

const MASQ_CHAIN: BaseChain = BaseChain {
    chain_type: ChainType::Nat,
    hook: Hook::Postrouting,
    priority: nft::priority::SRCNAT,
    policy: Policy::Accept,
};

/// kube-proxy's masquerade mark (`--masquerade-bit` 14): packets it marked
/// are NATed by kube-proxy's own rules, not a second time here.
const KUBE_PROXY_MARK: u32 = 0x4000;

/// `meta mark & 0x4000 == 0x4000 accept`, once for both families.
pub(crate) fn kube_proxy_rule() -> Vec<Expr> {
    let mark = KUBE_PROXY_MARK.to_ne_bytes();
    vec![
        Expr::Meta(MetaKey::Mark),
        Expr::Bitwise {
            mask: mark.to_vec(),
            xor: vec![0; 4],
        },
        Expr::cmp(CmpOp::Eq, &mark),
        Expr::Verdict(Verdict::Accept),
    ]
}

/// (nfproto, saddr offset, daddr offset, multicast prefix, its length)
pub(crate) fn family_layout(net: &IpNet) -> (u8, u32, u32, Vec<u8>, u32) {
    match net {
        IpNet::V4(_) => (2, 12, 16, vec![224, 0, 0, 0], 4),
        IpNet::V6(_) => {
            let mut ff00 = vec![0u8; 16];
            ff00[0] = 0xff;
            (10, 8, 24, ff00, 8)
        }
    }
}

pub(crate) fn addr_bytes(net: &IpNet) -> Vec<u8> {
    match net {
        IpNet::V4(n) => n.network().octets().to_vec(),
        IpNet::V6(n) => n.network().octets().to_vec(),
    }
}

/// The four rules for one family: (source, destination, action).
fn rules(network: IpNet, subnet: IpNet) -> Vec<Vec<Expr>> {
    let (nfproto, saddr, daddr, mcast, mcast_len) = family_layout(&network);
    let m = |off: u32, net: &IpNet, op: CmpOp| {
        Expr::prefix_match(
            PayloadBase::Network,
            off,
            &addr_bytes(net),
            net.prefix_len().into(),
            op,
        )
    };
    let mcast_match =
        Expr::prefix_match(PayloadBase::Network, daddr, &mcast, mcast_len, CmpOp::Neq);
    let head = || {
        vec![
            Expr::Meta(MetaKey::NfProto),
            Expr::cmp(CmpOp::Eq, &[nfproto]),
        ]
    };
    let rule = |parts: Vec<Vec<Expr>>, last: Expr| {
        let mut r = head();
        for p in parts {
            r.extend(p);
        }
        r.push(last);
        r
    };
    vec![
        rule(
            vec![m(saddr, &network, CmpOp::Eq), m(daddr, &network, CmpOp::Eq)],
            Expr::Verdict(Verdict::Accept),
        ),
        rule(
            vec![m(saddr, &network, CmpOp::Neq), m(daddr, &subnet, CmpOp::Eq)],
            Expr::Verdict(Verdict::Accept),
        ),
        rule(
            vec![m(saddr, &network, CmpOp::Eq), mcast_match],
            Expr::MasqRandomFully,
        ),
        rule(
            vec![
                m(saddr, &network, CmpOp::Neq),
                m(daddr, &network, CmpOp::Eq),
            ],
            Expr::MasqRandomFully,
        ),
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
        .add_chain(Family::Inet, TABLE, chain, Some(&MASQ_CHAIN), Some(comment))
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
        assert_eq!(rs[0].last(), Some(&Expr::Verdict(Verdict::Accept)));
        assert_eq!(remove_chain(CHAIN).len(), 2);
    }
}
