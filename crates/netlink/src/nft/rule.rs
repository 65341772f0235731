//! A typed builder for the rules Plexus writes, so that every writer (the
//! overlay's ipMasq, the routed network's nat-outgoing, plexus-bridge,
//! network policy) says `ip saddr 10.5.0.0/16` the same way: as `nft`
//! linearizes it (`meta nfproto` first in the inet family, the prefix
//! compare of [`Expr::prefix_match`]), so `nft list` prints what an `nft`
//! script would have written.
//!
//! ```
//! use plexus_netlink::nft::{CmpOp, IpVersion, Rule};
//! let net = "10.5.0.0/16".parse().unwrap();
//! let v = IpVersion::of(&net);
//! // ip saddr 10.5.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random
//! let exprs = Rule::ip(v)
//!     .saddr(&net, CmpOp::Eq)
//!     .daddr_not_multicast(v)
//!     .masquerade_fully_random();
//! // nfproto (2), a 2-byte prefix compare (2), the 4-bit multicast mask (3), masquerade
//! assert_eq!(exprs.len(), 8);
//! ```

use std::net::IpAddr;

use ipnet::IpNet;

use super::expr::{reg32, CmpOp, CtKey, Expr, MetaKey, PayloadBase, Verdict, NFT_REG_1};
use super::set::KeyType;

/// The IP version a match is about; in the inet family every address
/// match starts with `meta nfproto` of its version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpVersion {
    V4,
    V6,
}

impl IpVersion {
    pub fn of(net: &IpNet) -> IpVersion {
        match net {
            IpNet::V4(_) => IpVersion::V4,
            IpNet::V6(_) => IpVersion::V6,
        }
    }

    pub fn of_addr(ip: &IpAddr) -> IpVersion {
        match ip {
            IpAddr::V4(_) => IpVersion::V4,
            IpAddr::V6(_) => IpVersion::V6,
        }
    }

    /// NFPROTO_IPV4 / NFPROTO_IPV6.
    pub fn nfproto(self) -> u8 {
        match self {
            IpVersion::V4 => 2,
            IpVersion::V6 => 10,
        }
    }

    /// The source address's offset in the network header.
    fn saddr_offset(self) -> u32 {
        match self {
            IpVersion::V4 => 12,
            IpVersion::V6 => 8,
        }
    }

    fn daddr_offset(self) -> u32 {
        match self {
            IpVersion::V4 => 16,
            IpVersion::V6 => 24,
        }
    }

    fn addr_len(self) -> u32 {
        match self {
            IpVersion::V4 => 4,
            IpVersion::V6 => 16,
        }
    }

    /// 224.0.0.0/4 or ff00::/8.
    pub fn multicast(self) -> IpNet {
        match self {
            IpVersion::V4 => "224.0.0.0/4".parse().expect("valid"),
            IpVersion::V6 => "ff00::/8".parse().expect("valid"),
        }
    }

    /// The set key type of an address of this version.
    pub fn addr_key(self) -> KeyType {
        match self {
            IpVersion::V4 => KeyType::Ipv4Addr,
            IpVersion::V6 => KeyType::Ipv6Addr,
        }
    }
}

/// Which address of the packet a match reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrField {
    Source,
    Destination,
}

impl AddrField {
    fn offset(self, v: IpVersion) -> u32 {
        match self {
            AddrField::Source => v.saddr_offset(),
            AddrField::Destination => v.daddr_offset(),
        }
    }
}

/// IPPROTO_ICMPV6.
const IPPROTO_ICMPV6: u8 = 58;

/// The matches of one rule, in order; a terminal method (`accept`,
/// `drop`, `masquerade`, ...) adds the statement and returns the
/// expressions for [`super::Batch::add_rule`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rule {
    exprs: Vec<Expr>,
}

impl Rule {
    pub fn new() -> Rule {
        Rule::default()
    }

    /// A rule about IP version `v`: starts with `meta nfproto ipv4|ipv6`.
    pub fn ip(v: IpVersion) -> Rule {
        Rule::new().nfproto(v)
    }

    /// `meta nfproto ipv4|ipv6`.
    pub fn nfproto(mut self, v: IpVersion) -> Rule {
        self.exprs.push(Expr::Meta(MetaKey::NfProto));
        self.exprs.push(Expr::cmp(CmpOp::Eq, &[v.nfproto()]));
        self
    }

    fn addr_match(mut self, which: AddrField, net: &IpNet, op: CmpOp) -> Rule {
        let v = IpVersion::of(net);
        let bytes = match net {
            IpNet::V4(n) => n.network().octets().to_vec(),
            IpNet::V6(n) => n.network().octets().to_vec(),
        };
        self.exprs.extend(Expr::prefix_match(
            PayloadBase::Network,
            which.offset(v),
            &bytes,
            net.prefix_len().into(),
            op,
        ));
        self
    }

    /// `ip[6] saddr [!=] NET` (a host address is a full-length prefix:
    /// `IpNet::from(addr)`). The caller has matched the version first.
    pub fn saddr(self, net: &IpNet, op: CmpOp) -> Rule {
        self.addr_match(AddrField::Source, net, op)
    }

    /// `ip[6] daddr [!=] NET`.
    pub fn daddr(self, net: &IpNet, op: CmpOp) -> Rule {
        self.addr_match(AddrField::Destination, net, op)
    }

    /// `ip daddr != 224.0.0.0/4` / `ip6 daddr != ff00::/8`.
    pub fn daddr_not_multicast(self, v: IpVersion) -> Rule {
        self.daddr(&v.multicast(), CmpOp::Neq)
    }

    /// `meta mark & BITS == BITS`: all of `bits` are set.
    pub fn mark_has(mut self, bits: u32) -> Rule {
        let b = bits.to_ne_bytes();
        self.exprs.push(Expr::Meta(MetaKey::Mark));
        self.exprs.push(Expr::Bitwise {
            mask: b.to_vec(),
            xor: vec![0; 4],
        });
        self.exprs.push(Expr::cmp(CmpOp::Eq, &b));
        self
    }

    fn ifname(mut self, key: MetaKey, name: &str, op: CmpOp) -> Rule {
        // The kernel compares the whole IFNAMSIZ field, NUL padded (as nft).
        let mut field = [0u8; 16];
        let n = name.len().min(15);
        field[..n].copy_from_slice(&name.as_bytes()[..n]);
        self.exprs.push(Expr::Meta(key));
        self.exprs.push(Expr::cmp(op, &field));
        self
    }

    /// `iifname [!=] "NAME"`.
    pub fn iifname(self, name: &str, op: CmpOp) -> Rule {
        self.ifname(MetaKey::IifName, name, op)
    }

    /// `oifname [!=] "NAME"`.
    pub fn oifname(self, name: &str, op: CmpOp) -> Rule {
        self.ifname(MetaKey::OifName, name, op)
    }

    /// `ether saddr [!=] MAC`.
    pub fn ether_saddr(mut self, mac: [u8; 6], op: CmpOp) -> Rule {
        self.exprs.push(Expr::Payload {
            base: PayloadBase::LinkLayer,
            offset: 6,
            len: 6,
        });
        self.exprs.push(Expr::cmp(op, &mac));
        self
    }

    /// `ct state S1,S2`: any of the [`super::ct_state`] bits in `mask`.
    pub fn ct_state(mut self, mask: u32) -> Rule {
        self.exprs.push(Expr::Ct(CtKey::State));
        self.exprs.push(Expr::Bitwise {
            mask: mask.to_ne_bytes().to_vec(),
            xor: vec![0; 4],
        });
        self.exprs.push(Expr::cmp(CmpOp::Neq, &[0; 4]));
        self
    }

    /// `icmpv6 type LO-HI` (with the `meta nfproto ipv6` and `meta
    /// l4proto ipv6-icmp` that `nft` puts before it in the inet family).
    pub fn icmpv6_types(mut self, lo: u8, hi: u8) -> Rule {
        self = self.nfproto(IpVersion::V6);
        self.exprs.push(Expr::Meta(MetaKey::L4Proto));
        self.exprs.push(Expr::cmp(CmpOp::Eq, &[IPPROTO_ICMPV6]));
        self.exprs.push(Expr::Payload {
            base: PayloadBase::Transport,
            offset: 0,
            len: 1,
        });
        self.exprs.push(Expr::cmp(CmpOp::Gte, &[lo]));
        self.exprs.push(Expr::cmp(CmpOp::Lte, &[hi]));
        self
    }

    /// `meta nfproto V` and the whole address into NFT_REG_1: the start of
    /// a set lookup by address.
    fn load_addr(self, v: IpVersion, which: AddrField) -> Rule {
        self.nfproto(v).push(Expr::Payload {
            base: PayloadBase::Network,
            offset: which.offset(v),
            len: v.addr_len(),
        })
    }

    fn lookup(self, set: &str) -> Rule {
        self.push(Expr::Lookup {
            set: set.into(),
            set_id: None,
            sreg: NFT_REG_1,
            invert: false,
        })
    }

    /// `ip[6] saddr|daddr @SET`: the address is in the named set (whose
    /// key is `v`'s address type).
    pub fn addr_in(self, v: IpVersion, which: AddrField, set: &str) -> Rule {
        self.load_addr(v, which).lookup(set)
    }

    /// `ip[6] saddr|daddr . meta l4proto . th dport @SET`: the address, the
    /// layer 4 protocol and the destination port are in the named set
    /// (key `ADDR . inet_proto . inet_service`), loaded the way `nft` does.
    pub fn addr_proto_port_in(self, v: IpVersion, which: AddrField, set: &str) -> Rule {
        // The address fills 1 (IPv4) or 4 (IPv6) 4-byte registers. After
        // an IPv6 address `nft` names the next one by its 16-byte number
        // (NFT_REG_2, the same storage as reg32(4)); we do as it does.
        let (proto_reg, port_reg) = match v {
            IpVersion::V4 => (reg32(1), reg32(2)),
            IpVersion::V6 => (NFT_REG_1 + 1, reg32(5)),
        };
        self.load_addr(v, which)
            .push(Expr::MetaInto {
                key: MetaKey::L4Proto,
                dreg: proto_reg,
            })
            .push(Expr::Hton {
                reg: proto_reg,
                size: 2,
                len: 1,
            })
            .push(Expr::PayloadInto {
                base: PayloadBase::Transport,
                offset: 2,
                len: 2,
                dreg: port_reg,
            })
            .lookup(set)
    }

    /// `counter name "NAME"`.
    pub fn counter(mut self, name: &str) -> Rule {
        self.exprs.push(Expr::CounterRef(name.into()));
        self
    }

    /// Any expression the builder has no method for.
    pub fn push(mut self, e: Expr) -> Rule {
        self.exprs.push(e);
        self
    }

    /// The matches alone, without a statement.
    pub fn into_exprs(self) -> Vec<Expr> {
        self.exprs
    }

    fn then(mut self, e: Expr) -> Vec<Expr> {
        self.exprs.push(e);
        self.exprs
    }

    pub fn accept(self) -> Vec<Expr> {
        self.then(Expr::Verdict(Verdict::Accept))
    }

    pub fn drop(self) -> Vec<Expr> {
        self.then(Expr::Verdict(Verdict::Drop))
    }

    /// `return`: ends this chain (a base chain's policy then applies).
    pub fn ret(self) -> Vec<Expr> {
        self.then(Expr::Verdict(Verdict::Return))
    }

    pub fn masquerade(self) -> Vec<Expr> {
        self.then(Expr::Masq)
    }

    pub fn masquerade_fully_random(self) -> Vec<Expr> {
        self.then(Expr::MasqRandomFully)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_per_version() {
        let v4: IpNet = "10.5.0.0/16".parse().unwrap();
        let r = Rule::ip(IpVersion::V4).saddr(&v4, CmpOp::Eq).into_exprs();
        assert_eq!(
            r,
            [
                Expr::Meta(MetaKey::NfProto),
                Expr::cmp(CmpOp::Eq, &[2]),
                Expr::Payload {
                    base: PayloadBase::Network,
                    offset: 12,
                    len: 2
                },
                Expr::cmp(CmpOp::Eq, &[10, 5]),
            ]
        );
        // Host bits of the prefix are ignored; IPv6 daddr is at 24.
        let v6: IpNet = "fd00:5::7/48".parse().unwrap();
        let r = Rule::new().daddr(&v6, CmpOp::Neq).into_exprs();
        assert_eq!(
            r[0],
            Expr::Payload {
                base: PayloadBase::Network,
                offset: 24,
                len: 6
            }
        );
        assert_eq!(r[1], Expr::cmp(CmpOp::Neq, &[0xfd, 0, 0, 5, 0, 0]));
        // A host address: the whole field.
        let host = IpNet::from(IpAddr::from([10, 1, 0, 5]));
        assert_eq!(
            Rule::new().saddr(&host, CmpOp::Eq).into_exprs()[1],
            Expr::cmp(CmpOp::Eq, &[10, 1, 0, 5])
        );
    }

    #[test]
    fn not_multicast_and_statements() {
        let r = Rule::new().daddr_not_multicast(IpVersion::V6).drop();
        assert_eq!(r[1], Expr::cmp(CmpOp::Neq, &[0xff]));
        assert_eq!(r.last(), Some(&Expr::Verdict(Verdict::Drop)));
        let r = Rule::new().daddr_not_multicast(IpVersion::V4).masquerade();
        assert!(matches!(&r[1], Expr::Bitwise { mask, .. } if mask == &[0xf0, 0, 0, 0]));
        assert_eq!(r.last(), Some(&Expr::Masq));
        assert!(r.last().unwrap().is_statement());
        assert!(!r[0].is_statement());
    }

    #[test]
    fn concatenated_lookup_registers() {
        // nft: ip saddr => reg 1, l4proto => reg 9, dport => reg 10;
        // ip6 saddr => reg 1 (four 4-byte registers), then reg 2 (the
        // 16-byte register after it) and reg 13.
        let r4 = Rule::new()
            .addr_proto_port_in(IpVersion::V4, AddrField::Source, "s")
            .accept();
        assert_eq!(
            r4[3],
            Expr::MetaInto {
                key: MetaKey::L4Proto,
                dreg: 9
            }
        );
        assert!(matches!(
            r4[5],
            Expr::PayloadInto {
                dreg: 10,
                offset: 2,
                len: 2,
                ..
            }
        ));
        let r6 = Rule::new()
            .addr_proto_port_in(IpVersion::V6, AddrField::Destination, "s")
            .accept();
        assert!(matches!(
            r6[2],
            Expr::Payload {
                offset: 24,
                len: 16,
                ..
            }
        ));
        assert!(matches!(r6[3], Expr::MetaInto { dreg: 2, .. }));
        assert!(matches!(r6[5], Expr::PayloadInto { dreg: 13, .. }));
        assert!(matches!(&r6[6], Expr::Lookup { sreg: 1, set, .. } if set == "s"));
    }

    #[test]
    fn interface_names_are_padded() {
        let r = Rule::new().oifname("net1", CmpOp::Neq).ret();
        let mut want = [0u8; 16];
        want[..4].copy_from_slice(b"net1");
        assert_eq!(r[1], Expr::cmp(CmpOp::Neq, &want));
        assert_eq!(r[2], Expr::Verdict(Verdict::Return));
    }
}
