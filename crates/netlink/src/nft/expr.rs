//! The nf_tables expressions Plexus needs, encoded as libnftnl does.
//!
//! Simple loads go to NFT_REG_1 (a 16-byte register) and every compare reads
//! it, like `nft` does for simple matches, so a rule is a flat list of
//! "load; [bitwise;] cmp" groups followed by a statement. A concatenated
//! set key is the exception: its fields are loaded one after the other into
//! consecutive 4-byte registers ([`reg32`]) and looked up from the first
//! ([`Expr::Lookup`]), as `nft` does for `ip saddr . th dport @s`.

use super::wire::{nest, put, put_be32, put_be64, put_str};

// struct nft_expr attributes (NFTA_LIST_ELEM > NFTA_EXPR_*).
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;

// NFTA_DATA_* and NFTA_VERDICT_*.
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;

const NFT_REG_VERDICT: u32 = 0;
/// The first 16-byte register (NFT_REG_1; the 4-byte ones start at 8).
pub const NFT_REG_1: u32 = 1;

/// The `n`-th 4-byte register (NFT_REG32_00 + n). Registers overlap:
/// `reg32(0..4)` are NFT_REG_1, so a concatenation that starts with a
/// 4-byte field in NFT_REG_1 continues in `reg32(1)`; `nft` prints these
/// as `reg 9`, `reg 10`, ...
pub const fn reg32(n: u32) -> u32 {
    8 + n
}

/// What `meta` loads (enum nft_meta_keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetaKey {
    /// Input interface name (16 bytes, NUL padded): `iifname`.
    IifName,
    /// Layer 3 protocol family of the packet (1 byte): `meta nfproto`.
    NfProto,
    /// The packet mark (4 bytes, host byte order): `meta mark`.
    Mark,
    /// Output interface name (16 bytes, NUL padded): `oifname`.
    OifName,
    /// Layer 4 protocol number (1 byte, after IPv6 extension headers):
    /// `meta l4proto`.
    L4Proto,
}

impl MetaKey {
    fn code(self) -> u32 {
        match self {
            MetaKey::IifName => 6,  // NFT_META_IIFNAME
            MetaKey::OifName => 7,  // NFT_META_OIFNAME
            MetaKey::NfProto => 15, // NFT_META_NFPROTO
            MetaKey::L4Proto => 16, // NFT_META_L4PROTO
            MetaKey::Mark => 3,     // NFT_META_MARK
        }
    }
}

/// What `ct` loads (enum nft_ct_keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CtKey {
    /// The connection's state bits (4 bytes, host byte order): `ct state`.
    State,
}

impl CtKey {
    fn code(self) -> u32 {
        match self {
            CtKey::State => 0, // NFT_CT_STATE
        }
    }
}

/// `ct state` bits (NF_CT_STATE_BIT of enum ip_conntrack_info, and the
/// untracked bit), to be OR-ed into a mask.
pub mod ct_state {
    pub const INVALID: u32 = 1;
    pub const ESTABLISHED: u32 = 1 << 1;
    pub const RELATED: u32 = 1 << 2;
    pub const NEW: u32 = 1 << 3;
    pub const UNTRACKED: u32 = 1 << 6;
}

/// Which header a `payload` offset counts from (enum nft_payload_bases).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadBase {
    /// The Ethernet header (`ether saddr` is offset 6, length 6).
    LinkLayer = 0,
    /// The IPv4/IPv6 header (`ip saddr` is offset 12, `ip6 saddr` offset 8).
    Network = 1,
    Transport = 2,
}

/// Comparison operators (enum nft_cmp_ops).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq = 0,
    Neq = 1,
    /// The register, read as a big-endian number, is less than the data
    /// (and so on): nft's `<`, `<=`, `>`, `>=` and ranges.
    Lt = 2,
    Lte = 3,
    Gt = 4,
    Gte = 5,
}

/// Verdicts: NF_DROP / NF_ACCEPT end the hook's evaluation; `return`
/// ends the chain (in a base chain: its policy applies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Drop,
    Accept,
    Return,
}

impl Verdict {
    fn code(self) -> u32 {
        match self {
            Verdict::Drop => 0,                // NF_DROP
            Verdict::Accept => 1,              // NF_ACCEPT
            Verdict::Return => (-5i32) as u32, // NFT_RETURN
        }
    }
}

/// One expression of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Expr {
    /// `meta load KEY => reg 1`.
    Meta(MetaKey),
    /// `payload load LEN @ BASE + OFFSET => reg 1`.
    Payload {
        base: PayloadBase,
        offset: u32,
        len: u32,
    },
    /// `reg 1 = (reg 1 & mask) ^ xor`; both must be the same length.
    Bitwise { mask: Vec<u8>, xor: Vec<u8> },
    /// Compare reg 1 with `data` (its length is the compared length).
    Cmp { op: CmpOp, data: Vec<u8> },
    /// `masquerade` (no port range or flags).
    Masq,
    /// `masquerade fully-random`: fully randomised source ports (what
    /// flannel asks iptables for), avoiding port-reuse races between
    /// connections from different pods.
    MasqRandomFully,
    /// `immediate reg 0 VERDICT`: drop / accept / return.
    Verdict(Verdict),
    /// `meta load KEY => reg DREG`: a load into another register than
    /// NFT_REG_1 (a later field of a concatenation, see [`reg32`]).
    MetaInto { key: MetaKey, dreg: u32 },
    /// `payload load LEN @ BASE + OFFSET => reg DREG`.
    PayloadInto {
        base: PayloadBase,
        offset: u32,
        len: u32,
        dreg: u32,
    },
    /// `ct load KEY => reg 1`.
    Ct(CtKey),
    /// `byteorder reg R = hton(reg R, SIZE, LEN)`: what `nft` emits after
    /// loading `meta l4proto` into a concatenation (with SIZE 2 and LEN 1
    /// it changes nothing; kept so the rule reads back as `nft` wrote it).
    Hton { reg: u32, size: u32, len: u32 },
    /// `lookup reg SREG set NAME`: matches when the key starting at SREG is
    /// in the set (or is not, with `invert`). `set_id` names a set added
    /// earlier in the same batch (an anonymous one has no usable name).
    Lookup {
        set: String,
        set_id: Option<u32>,
        sreg: u32,
        invert: bool,
    },
    /// `counter name NAME`: counts into the table's named counter object,
    /// which keeps its value when the rule is replaced.
    CounterRef(String),
    /// `counter`: an anonymous counter owned by the rule.
    Counter,
}

impl Expr {
    /// Matches the `prefix_len`-bit prefix of the field at `base + offset`
    /// (as long as `addr`) against `addr`, exactly as `nft` linearizes
    /// `ip daddr != 10.1.0.0/24`, so `nft list` prints what it would have
    /// written: a full-length compare for a host address, a shorter load for
    /// a whole-byte prefix, else a full load masked with `bitwise`.
    pub fn prefix_match(
        base: PayloadBase,
        offset: u32,
        addr: &[u8],
        prefix_len: u32,
        op: CmpOp,
    ) -> Vec<Expr> {
        let full = addr.len() as u32 * 8;
        let prefix_len = prefix_len.min(full);
        let load = |len: u32| Expr::Payload { base, offset, len };
        if prefix_len == full {
            return vec![load(addr.len() as u32), Expr::cmp(op, addr)];
        }
        if prefix_len > 0 && prefix_len.is_multiple_of(8) {
            let n = (prefix_len / 8) as usize;
            return vec![load(n as u32), Expr::cmp(op, &addr[..n])];
        }
        let mask: Vec<u8> = (0..addr.len() as u32)
            .map(|i| {
                let bits = prefix_len.saturating_sub(i * 8).min(8);
                (0xffu16 << (8 - bits)) as u8
            })
            .collect();
        let masked: Vec<u8> = addr.iter().zip(&mask).map(|(a, m)| a & m).collect();
        vec![
            load(addr.len() as u32),
            Expr::Bitwise {
                xor: vec![0; mask.len()],
                mask,
            },
            Expr::cmp(op, &masked),
        ]
    }

    pub fn cmp(op: CmpOp, data: &[u8]) -> Expr {
        Expr::Cmp {
            op,
            data: data.to_vec(),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Expr::Meta(_) => "meta",
            Expr::Payload { .. } => "payload",
            Expr::Bitwise { .. } => "bitwise",
            Expr::Cmp { .. } => "cmp",
            Expr::Masq | Expr::MasqRandomFully => "masq",
            Expr::Verdict(_) => "immediate",
            Expr::MetaInto { .. } => "meta",
            Expr::PayloadInto { .. } => "payload",
            Expr::Ct(_) => "ct",
            Expr::Hton { .. } => "byteorder",
            Expr::Lookup { .. } => "lookup",
            Expr::CounterRef(_) => "objref",
            Expr::Counter => "counter",
        }
    }

    /// The NFTA_EXPR_DATA attributes, in libnftnl's order.
    fn encode_data(&self, b: &mut Vec<u8>) {
        match self {
            Expr::Meta(key) => encode_meta(b, *key, NFT_REG_1),
            Expr::MetaInto { key, dreg } => encode_meta(b, *key, *dreg),
            Expr::Payload { base, offset, len } => {
                encode_payload(b, *base, *offset, *len, NFT_REG_1)
            }
            Expr::PayloadInto {
                base,
                offset,
                len,
                dreg,
            } => encode_payload(b, *base, *offset, *len, *dreg),
            Expr::Ct(key) => {
                put_be32(b, 2, key.code()); // NFTA_CT_KEY
                put_be32(b, 1, NFT_REG_1); // NFTA_CT_DREG
            }
            Expr::Hton { reg, size, len } => {
                put_be32(b, 1, *reg); // NFTA_BYTEORDER_SREG
                put_be32(b, 2, *reg); // NFTA_BYTEORDER_DREG
                put_be32(b, 3, 1); // NFTA_BYTEORDER_OP: NFT_BYTEORDER_HTON
                put_be32(b, 4, *len); // NFTA_BYTEORDER_LEN
                put_be32(b, 5, *size); // NFTA_BYTEORDER_SIZE
            }
            Expr::Lookup {
                set,
                set_id,
                sreg,
                invert,
            } => {
                put_str(b, 1, set); // NFTA_LOOKUP_SET
                put_be32(b, 2, *sreg); // NFTA_LOOKUP_SREG
                if let Some(id) = set_id {
                    put_be32(b, 4, *id); // NFTA_LOOKUP_SET_ID
                }
                if *invert {
                    put_be32(b, 5, 1); // NFTA_LOOKUP_FLAGS: NFT_LOOKUP_F_INV
                }
            }
            Expr::CounterRef(name) => {
                put_be32(b, 1, OBJECT_COUNTER); // NFTA_OBJREF_IMM_TYPE
                put_str(b, 2, name); // NFTA_OBJREF_IMM_NAME
            }
            Expr::Counter => {
                put_be64(b, 1, 0); // NFTA_COUNTER_BYTES
                put_be64(b, 2, 0); // NFTA_COUNTER_PACKETS
            }
            Expr::Bitwise { mask, xor } => {
                put_be32(b, 1, NFT_REG_1); // NFTA_BITWISE_SREG
                put_be32(b, 2, NFT_REG_1); // NFTA_BITWISE_DREG
                put_be32(b, 3, mask.len() as u32); // NFTA_BITWISE_LEN
                nest(b, 4, |b| put(b, NFTA_DATA_VALUE, mask)); // NFTA_BITWISE_MASK
                nest(b, 5, |b| put(b, NFTA_DATA_VALUE, xor)); // NFTA_BITWISE_XOR
            }
            Expr::Cmp { op, data } => {
                put_be32(b, 1, NFT_REG_1); // NFTA_CMP_SREG
                put_be32(b, 2, *op as u32); // NFTA_CMP_OP
                nest(b, 3, |b| put(b, NFTA_DATA_VALUE, data)); // NFTA_CMP_DATA
            }
            Expr::Masq => {}
            // NFTA_MASQ_FLAGS = NF_NAT_RANGE_PROTO_RANDOM_FULLY
            Expr::MasqRandomFully => put_be32(b, 1, 0x10),
            Expr::Verdict(v) => {
                put_be32(b, 1, NFT_REG_VERDICT); // NFTA_IMMEDIATE_DREG
                nest(b, 2, |b| {
                    // NFTA_IMMEDIATE_DATA
                    nest(b, NFTA_DATA_VERDICT, |b| {
                        put_be32(b, NFTA_VERDICT_CODE, v.code())
                    })
                });
            }
        }
    }

    /// Whether a rule ending with this expression ends with a statement
    /// (a verdict or NAT), not a match.
    pub fn is_statement(&self) -> bool {
        matches!(self, Expr::Verdict(_) | Expr::Masq | Expr::MasqRandomFully)
    }

    /// Appends this expression as one NFTA_LIST_ELEM of NFTA_RULE_EXPRESSIONS.
    pub(crate) fn encode(&self, b: &mut Vec<u8>) {
        nest(b, NFTA_LIST_ELEM, |b| {
            put_str(b, NFTA_EXPR_NAME, self.name());
            // libnftnl always writes the data nest, even empty (masq).
            nest(b, NFTA_EXPR_DATA, |b| self.encode_data(b));
        });
    }
}

/// NFT_OBJECT_COUNTER: the type of named counter objects.
pub(crate) const OBJECT_COUNTER: u32 = 1;

fn encode_meta(b: &mut Vec<u8>, key: MetaKey, dreg: u32) {
    put_be32(b, 2, key.code()); // NFTA_META_KEY
    put_be32(b, 1, dreg); // NFTA_META_DREG
}

fn encode_payload(b: &mut Vec<u8>, base: PayloadBase, offset: u32, len: u32, dreg: u32) {
    put_be32(b, 1, dreg); // NFTA_PAYLOAD_DREG
    put_be32(b, 2, base as u32); // NFTA_PAYLOAD_BASE
    put_be32(b, 3, offset); // NFTA_PAYLOAD_OFFSET
    put_be32(b, 4, len); // NFTA_PAYLOAD_LEN
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(e: &Expr) -> Vec<u8> {
        let mut b = Vec::new();
        e.encode(&mut b);
        b
    }

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    // The expected bytes are `nft --debug=mnl` output (nft 1.0.6, libnftnl
    // 1.2.4) for `meta nfproto ipv4 ip saddr 10.1.0.5 ip daddr != 224.0.0.0/4
    // masquerade` and `iifname "veth01234567" ether saddr != 02:00:00:00:00:01 drop`.

    #[test]
    fn meta_load() {
        assert_eq!(
            enc(&Expr::Meta(MetaKey::NfProto)),
            hex("2400 0180 0900 0100 6d657461 00000000
                 1400 0280 0800 0200 0000000f 0800 0100 00000001")
        );
        assert_eq!(enc(&Expr::Meta(MetaKey::IifName))[24..28], hex("00000006"));
    }

    #[test]
    fn payload_load() {
        let e = Expr::Payload {
            base: PayloadBase::Network,
            offset: 12,
            len: 4,
        };
        assert_eq!(
            enc(&e),
            hex("3400 0180 0c00 0100 7061796c 6f616400
                 2400 0280 0800 0100 00000001 0800 0200 00000001
                 0800 0300 0000000c 0800 0400 00000004")
        );
    }

    #[test]
    fn cmp() {
        assert_eq!(
            enc(&Expr::cmp(CmpOp::Eq, &[2])),
            hex("2c00 0180 0800 0100 636d7000
                 2000 0280 0800 0100 00000001 0800 0200 00000000
                 0c00 0380 0500 0100 02000000")
        );
        assert_eq!(
            enc(&Expr::cmp(CmpOp::Neq, &[2, 0, 0, 0, 0, 1])),
            hex("3000 0180 0800 0100 636d7000
                 2400 0280 0800 0100 00000001 0800 0200 00000001
                 1000 0380 0a00 0100 02000000 00010000")
        );
    }

    #[test]
    fn bitwise() {
        assert_eq!(
            enc(&Expr::Bitwise {
                mask: vec![0xf0, 0, 0, 0],
                xor: vec![0; 4],
            }),
            hex("4400 0180 0c00 0100 62697477 69736500
                 3400 0280 0800 0100 00000001 0800 0200 00000001 0800 0300 00000004
                 0c00 0480 0800 0100 f0000000
                 0c00 0580 0800 0100 00000000")
        );
    }

    #[test]
    fn masq_and_drop() {
        assert_eq!(
            enc(&Expr::Masq),
            hex("1400 0180 0900 0100 6d617371 00000000 0400 0280")
        );
        assert_eq!(
            enc(&Expr::Verdict(Verdict::Drop)),
            hex("3000 0180 0e00 0100 696d6d65 64696174 65000000
                 1c00 0280 0800 0100 00000000
                 1000 0280 0c00 0280 0800 0100 00000000")
        );
    }

    #[test]
    fn prefixes_like_nft() {
        use CmpOp::Neq;
        let net = PayloadBase::Network;
        let p = |offset, len| Expr::Payload {
            base: net,
            offset,
            len,
        };
        // ip daddr != 10.1.0.0/24: a 3-byte load, no bitwise.
        assert_eq!(
            Expr::prefix_match(net, 16, &[10, 1, 0, 0], 24, Neq),
            [p(16, 3), Expr::cmp(Neq, &[10, 1, 0])]
        );
        // A host address: the full field.
        assert_eq!(
            Expr::prefix_match(net, 16, &[10, 1, 0, 5], 32, Neq),
            [p(16, 4), Expr::cmp(Neq, &[10, 1, 0, 5])]
        );
        // ip daddr != 224.0.0.0/4 and 10.1.0.0/20: full load, masked.
        assert_eq!(
            Expr::prefix_match(net, 16, &[224, 0, 0, 0], 4, Neq),
            [
                p(16, 4),
                Expr::Bitwise {
                    mask: vec![0xf0, 0, 0, 0],
                    xor: vec![0; 4]
                },
                Expr::cmp(Neq, &[224, 0, 0, 0])
            ]
        );
        assert_eq!(
            Expr::prefix_match(net, 16, &[10, 1, 0x0f, 0], 20, Neq)[1..],
            [
                Expr::Bitwise {
                    mask: vec![0xff, 0xff, 0xf0, 0],
                    xor: vec![0; 4]
                },
                Expr::cmp(Neq, &[10, 1, 0, 0])
            ]
        );
        // /0 is masked to nothing, as nft does.
        assert_eq!(
            Expr::prefix_match(net, 16, &[10, 1, 0, 0], 0, Neq)[1],
            Expr::Bitwise {
                mask: vec![0; 4],
                xor: vec![0; 4]
            }
        );
        // ip6 daddr != ff00::/8: one byte.
        let mut ff = [0u8; 16];
        ff[0] = 0xff;
        assert_eq!(
            Expr::prefix_match(net, 24, &ff, 8, Neq),
            [p(24, 1), Expr::cmp(Neq, &[0xff])]
        );
    }
}
