//! Sets: their key types, their elements and how both are encoded.
//!
//! Three kinds, as `nft` makes them:
//! * plain sets (a hash): one key per element;
//! * single-field interval sets (the kernel's rbtree): every range is sent
//!   as its start and its end plus one, flagged INTERVAL_END (a range that
//!   reaches the top of the key space has no end element);
//! * concatenated interval sets (the kernel's pipapo, Linux 5.6+): a KEY and
//!   a KEY_END per element, every field padded to 4 bytes, and the field
//!   lengths in the set's description.
//!
//! The kernel refuses overlapping ranges in an interval set (EEXIST), and
//! adjacent ones may collide on the end-plus-one element: callers hand in
//! disjoint, merged ranges (what `nft`'s auto-merge would have made).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::wire::{align4, nest, put, put_be32, put_str};

// NFTA_SET_*
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_DESC: u16 = 9;
const NFTA_SET_ID: u16 = 10;
const NFTA_SET_DESC_CONCAT: u16 = 2;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_FIELD_LEN: u16 = 1;

// NFTA_SET_ELEM_LIST_* and NFTA_SET_ELEM_*
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFTA_SET_ELEM_KEY_END: u16 = 10;
const NFTA_DATA_VALUE: u16 = 1;
const NFT_SET_ELEM_INTERVAL_END: u32 = 1;

// enum nft_set_flags
const NFT_SET_ANONYMOUS: u32 = 0x1;
const NFT_SET_CONSTANT: u32 = 0x2;
const NFT_SET_INTERVAL: u32 = 0x4;
const NFT_SET_CONCAT: u32 = 0x80;

/// The name the kernel turns into `__set0`, `__set1`, ... for an
/// anonymous set; elements and lookups then refer to it by its batch ID.
pub(crate) const ANONYMOUS_NAME: &str = "__set%d";

/// Past this many bytes of elements a new message starts: an attribute's
/// length is 16 bits, and smaller messages keep the kernel's allocations
/// small.
const ELEMS_PER_MSG_BYTES: usize = 32 * 1024;

/// The data types `nft` knows set keys by (its `enum datatypes`), so that
/// `nft list` prints elements as addresses, protocols and services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// `ipv4_addr`, 4 bytes, network order.
    Ipv4Addr,
    /// `ipv6_addr`, 16 bytes, network order.
    Ipv6Addr,
    /// `inet_proto`, 1 byte (what `meta l4proto` loads).
    InetProto,
    /// `inet_service`, 2 bytes, network order (what `th dport` loads).
    InetService,
}

impl KeyType {
    fn nft_type(self) -> u32 {
        match self {
            KeyType::Ipv4Addr => 7,
            KeyType::Ipv6Addr => 8,
            KeyType::InetProto => 12,
            KeyType::InetService => 13,
        }
    }

    /// The field's length in bytes.
    pub fn width(self) -> usize {
        match self {
            KeyType::Ipv4Addr => 4,
            KeyType::Ipv6Addr => 16,
            KeyType::InetProto => 1,
            KeyType::InetService => 2,
        }
    }

    /// The key type of an address of this family.
    pub fn addr(ip: &IpAddr) -> KeyType {
        match ip {
            IpAddr::V4(_) => KeyType::Ipv4Addr,
            IpAddr::V6(_) => KeyType::Ipv6Addr,
        }
    }
}

/// One value of one key field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    V4(Ipv4Addr),
    V6(Ipv6Addr),
    Proto(u8),
    Port(u16),
}

impl From<IpAddr> for Key {
    fn from(ip: IpAddr) -> Key {
        match ip {
            IpAddr::V4(a) => Key::V4(a),
            IpAddr::V6(a) => Key::V6(a),
        }
    }
}

impl Key {
    pub fn key_type(&self) -> KeyType {
        match self {
            Key::V4(_) => KeyType::Ipv4Addr,
            Key::V6(_) => KeyType::Ipv6Addr,
            Key::Proto(_) => KeyType::InetProto,
            Key::Port(_) => KeyType::InetService,
        }
    }

    fn put(&self, out: &mut Vec<u8>) {
        match self {
            Key::V4(a) => out.extend_from_slice(&a.octets()),
            Key::V6(a) => out.extend_from_slice(&a.octets()),
            Key::Proto(p) => out.push(*p),
            Key::Port(p) => out.extend_from_slice(&p.to_be_bytes()),
        }
    }

    /// The next value, or `None` at the top of the key space.
    fn succ(&self) -> Option<Key> {
        Some(match *self {
            Key::V4(a) => Key::V4(u32::from(a).checked_add(1)?.into()),
            Key::V6(a) => Key::V6(u128::from(a).checked_add(1)?.into()),
            Key::Proto(p) => Key::Proto(p.checked_add(1)?),
            Key::Port(p) => Key::Port(p.checked_add(1)?),
        })
    }
}

/// An inclusive range of one field; `lo == hi` for a single value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Range {
    pub lo: Key,
    pub hi: Key,
}

impl Range {
    pub fn one(k: Key) -> Range {
        Range { lo: k, hi: k }
    }
}

/// One element: a range per key field (one field unless the set's key is
/// a concatenation).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Elem(pub Vec<Range>);

impl Elem {
    /// A single value of a one-field set.
    pub fn one(k: Key) -> Elem {
        Elem(vec![Range::one(k)])
    }

    /// `lo-hi` in a one-field interval set.
    pub fn range(lo: Key, hi: Key) -> Elem {
        Elem(vec![Range { lo, hi }])
    }
}

/// A set's definition: `set NAME { type K1 . K2; flags interval; }`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SetSpec {
    pub name: String,
    /// One type, or several for a concatenation.
    pub key: Vec<KeyType>,
    /// `flags interval`: elements may be ranges.
    pub interval: bool,
}

impl SetSpec {
    fn concat(&self) -> bool {
        self.key.len() > 1
    }

    /// NFTA_SET_KEY_LEN: a concatenation pads every field to 4 bytes.
    fn key_len(&self) -> usize {
        if self.concat() {
            self.key.iter().map(|k| align4(k.width())).sum()
        } else {
            self.key.iter().map(|k| k.width()).sum()
        }
    }

    /// `nft`'s concatenated type number: 6 bits per field, first field
    /// highest (`ipv4_addr . inet_proto . inet_service` is 0x730d).
    fn key_type_id(&self) -> u32 {
        self.key.iter().fold(0, |acc, k| (acc << 6) | k.nft_type())
    }

    fn flags(&self, anonymous: bool) -> u32 {
        let mut f = 0;
        if anonymous {
            f |= NFT_SET_ANONYMOUS | NFT_SET_CONSTANT;
        }
        if self.interval {
            f |= NFT_SET_INTERVAL;
            if self.concat() {
                f |= NFT_SET_CONCAT;
            }
        }
        f
    }

    /// Why `e` does not fit this set, if it does not.
    pub(crate) fn check(&self, e: &Elem) -> Result<(), String> {
        if e.0.len() != self.key.len() {
            return Err(format!(
                "{} fields for a key of {}",
                e.0.len(),
                self.key.len()
            ));
        }
        for (r, k) in e.0.iter().zip(&self.key) {
            if r.lo.key_type() != *k || r.hi.key_type() != *k {
                return Err(format!("a {:?} value in a {k:?} field", r.lo.key_type()));
            }
            if r.lo > r.hi {
                return Err(format!("range {:?}-{:?} runs backwards", r.lo, r.hi));
            }
            if r.lo != r.hi && !self.interval {
                return Err("a range in a set without the interval flag".into());
            }
        }
        Ok(())
    }

    /// The NEWSET attributes.
    pub(crate) fn encode(&self, table: &str, id: u32, anonymous: bool) -> Vec<u8> {
        let mut b = Vec::new();
        put_str(&mut b, NFTA_SET_TABLE, table);
        put_str(
            &mut b,
            NFTA_SET_NAME,
            if anonymous {
                ANONYMOUS_NAME
            } else {
                &self.name
            },
        );
        put_be32(&mut b, NFTA_SET_FLAGS, self.flags(anonymous));
        put_be32(&mut b, NFTA_SET_KEY_TYPE, self.key_type_id());
        put_be32(&mut b, NFTA_SET_KEY_LEN, self.key_len() as u32);
        put_be32(&mut b, NFTA_SET_ID, id);
        if self.concat() {
            nest(&mut b, NFTA_SET_DESC, |b| {
                nest(b, NFTA_SET_DESC_CONCAT, |b| {
                    for k in &self.key {
                        nest(b, NFTA_LIST_ELEM, |b| {
                            put_be32(b, NFTA_SET_FIELD_LEN, k.width() as u32)
                        });
                    }
                });
            });
        }
        b
    }

    /// The key bytes of one end of `e` (`lo` or `hi` of every field).
    fn key_bytes(&self, e: &Elem, hi: bool) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.key_len());
        for r in &e.0 {
            let start = v.len();
            (if hi { r.hi } else { r.lo }).put(&mut v);
            if self.concat() {
                v.resize(start + align4(v.len() - start), 0);
            }
        }
        v
    }

    /// The NFTA_SET_ELEM nests for `elems`, each one an encoded list
    /// element, in order.
    fn encode_elems(&self, elems: &[Elem]) -> Vec<Vec<u8>> {
        let mut out = Vec::with_capacity(elems.len());
        let key = |b: &mut Vec<u8>, ty: u16, bytes: &[u8]| {
            nest(b, ty, |b| put(b, NFTA_DATA_VALUE, bytes));
        };
        for e in elems {
            let lo = self.key_bytes(e, false);
            if self.interval && self.concat() {
                let hi = self.key_bytes(e, true);
                let mut b = Vec::new();
                nest(&mut b, NFTA_LIST_ELEM, |b| {
                    key(b, NFTA_SET_ELEM_KEY, &lo);
                    key(b, NFTA_SET_ELEM_KEY_END, &hi);
                });
                out.push(b);
            } else if self.interval {
                let mut b = Vec::new();
                nest(&mut b, NFTA_LIST_ELEM, |b| key(b, NFTA_SET_ELEM_KEY, &lo));
                out.push(b);
                if let Some(end) = e.0[0].hi.succ() {
                    let mut end_bytes = Vec::new();
                    end.put(&mut end_bytes);
                    let mut b = Vec::new();
                    nest(&mut b, NFTA_LIST_ELEM, |b| {
                        put_be32(b, NFTA_SET_ELEM_FLAGS, NFT_SET_ELEM_INTERVAL_END);
                        key(b, NFTA_SET_ELEM_KEY, &end_bytes);
                    });
                    out.push(b);
                }
            } else {
                let mut b = Vec::new();
                nest(&mut b, NFTA_LIST_ELEM, |b| key(b, NFTA_SET_ELEM_KEY, &lo));
                out.push(b);
            }
        }
        out
    }

    /// NEWSETELEM bodies for `elems`, split so that none grows past
    /// [`ELEMS_PER_MSG_BYTES`]; with `id`, the set is one added in the
    /// same batch (by an anonymous name).
    pub(crate) fn encode_elem_msgs(
        &self,
        table: &str,
        name: &str,
        id: Option<u32>,
        elems: &[Elem],
    ) -> Vec<Vec<u8>> {
        let encoded = self.encode_elems(elems);
        let mut msgs = Vec::new();
        let mut chunk: Vec<&[u8]> = Vec::new();
        let mut size = 0;
        let flush = |chunk: &mut Vec<&[u8]>, msgs: &mut Vec<Vec<u8>>| {
            if chunk.is_empty() {
                return;
            }
            let mut b = Vec::new();
            put_str(&mut b, NFTA_SET_ELEM_LIST_TABLE, table);
            put_str(&mut b, NFTA_SET_ELEM_LIST_SET, name);
            if let Some(id) = id {
                put_be32(&mut b, NFTA_SET_ELEM_LIST_SET_ID, id);
            }
            nest(&mut b, NFTA_SET_ELEM_LIST_ELEMENTS, |b| {
                for e in chunk.iter() {
                    b.extend_from_slice(e);
                }
            });
            msgs.push(b);
            chunk.clear();
        };
        for e in &encoded {
            if size + e.len() > ELEMS_PER_MSG_BYTES {
                flush(&mut chunk, &mut msgs);
                size = 0;
            }
            chunk.push(e);
            size += e.len();
        }
        flush(&mut chunk, &mut msgs);
        msgs
    }
}

/// The NFTA_SET_ELEM_LIST body naming a set and no elements: with
/// DELSETELEM, `flush set`.
pub(crate) fn encode_set_ref(table: &str, name: &str) -> Vec<u8> {
    let mut b = Vec::new();
    put_str(&mut b, NFTA_SET_ELEM_LIST_TABLE, table);
    put_str(&mut b, NFTA_SET_ELEM_LIST_SET, name);
    b
}

/// The DELSET body.
pub(crate) fn encode_set_name(table: &str, name: &str) -> Vec<u8> {
    let mut b = Vec::new();
    put_str(&mut b, NFTA_SET_TABLE, table);
    put_str(&mut b, NFTA_SET_NAME, name);
    b
}

#[cfg(test)]
mod tests {
    use super::super::tests::hex;
    use super::super::wire::attrs;
    use super::*;

    fn concat4() -> SetSpec {
        SetSpec {
            name: "s4".into(),
            key: vec![KeyType::Ipv4Addr, KeyType::InetProto, KeyType::InetService],
            interval: true,
        }
    }

    /// The NEWSET attributes `nft --debug=mnl` (nft 1.0.6) shows for
    /// `add set inet t s4 { type ipv4_addr . inet_proto . inet_service;
    /// flags interval; }`, without its userdata (display hints only).
    #[test]
    fn concat_set_like_nft() {
        let b = concat4().encode("t", 1, false);
        let want = hex("0600 0100 74000000  0700 0200 73340000
             0800 0300 00000084  0800 0400 0000730d  0800 0500 0000000c
             0800 0a00 00000001
             2c00 0980 2800 0280 0c00 0180 0800 0100 00000004
             0c00 0180 0800 0100 00000001 0c00 0180 0800 0100 00000002");
        assert_eq!(b, want);
    }

    #[test]
    fn concat_elements_like_nft() {
        // 10.0.0.0-10.0.0.255 . tcp . 80-81
        let e = Elem(vec![
            Range {
                lo: Key::V4([10, 0, 0, 0].into()),
                hi: Key::V4([10, 0, 0, 255].into()),
            },
            Range::one(Key::Proto(6)),
            Range {
                lo: Key::Port(80),
                hi: Key::Port(81),
            },
        ]);
        let msgs = concat4().encode_elem_msgs("t", "s4", Some(1), &[e]);
        assert_eq!(msgs.len(), 1);
        let want = hex("0600 0100 74000000  0700 0200 73340000  0800 0400 00000001
             3000 0380 2c00 0180
               1400 0180 1000 0100 0a000000 06000000 00500000
               1400 0a80 1000 0100 0a0000ff 06000000 00510000");
        assert_eq!(msgs[0], want);
    }

    #[test]
    fn rbtree_ranges_are_start_and_end_plus_one() {
        let s = SetSpec {
            name: "a4".into(),
            key: vec![KeyType::Ipv4Addr],
            interval: true,
        };
        assert_eq!(s.flags(false), NFT_SET_INTERVAL);
        assert_eq!(s.key_len(), 4);
        let elems = [
            Elem::range(
                Key::V4([10, 0, 0, 0].into()),
                Key::V4([10, 255, 255, 255].into()),
            ),
            // Up to the top: no end element.
            Elem::range(Key::V4([200, 0, 0, 0].into()), Key::V4(Ipv4Addr::BROADCAST)),
        ];
        let enc = s.encode_elems(&elems);
        assert_eq!(enc.len(), 3);
        // The end of 10.0.0.0/8 is 11.0.0.0 flagged INTERVAL_END.
        assert_eq!(
            enc[1],
            hex("1800 0180 0800 0300 00000001 0c00 0180 0800 0100 0b000000")
        );
        let flagged = enc
            .iter()
            .filter(|e| e.windows(8).any(|w| w == hex("0800 0300 00000001")))
            .count();
        assert_eq!(flagged, 1);
    }

    #[test]
    fn anonymous_sets_and_checks() {
        let s = SetSpec {
            name: String::new(),
            key: vec![KeyType::InetService],
            interval: false,
        };
        assert_eq!(s.flags(true), NFT_SET_ANONYMOUS | NFT_SET_CONSTANT);
        let b = s.encode("t", 7, true);
        let name = attrs(&b).find(|(t, _)| *t == NFTA_SET_NAME).unwrap().1;
        assert_eq!(name, b"__set%d\0");
        assert!(s.check(&Elem::one(Key::Port(53))).is_ok());
        assert!(s.check(&Elem::one(Key::Proto(6))).is_err());
        assert!(s
            .check(&Elem::range(Key::Port(1), Key::Port(2)))
            .unwrap_err()
            .contains("interval"));
        let c = concat4();
        assert!(c.check(&Elem::one(Key::Port(1))).is_err());
        assert!(c
            .check(&Elem(vec![
                Range::one(Key::V4([1, 1, 1, 1].into())),
                Range::one(Key::Proto(6)),
                Range {
                    lo: Key::Port(9),
                    hi: Key::Port(8)
                },
            ]))
            .unwrap_err()
            .contains("backwards"));
    }

    #[test]
    fn many_elements_are_split_across_messages() {
        let s = SetSpec {
            name: "a6".into(),
            key: vec![KeyType::Ipv6Addr],
            interval: false,
        };
        let elems: Vec<Elem> = (0..5000u128)
            .map(|i| Elem::one(Key::V6((0xfd00u128 << 112 | i).into())))
            .collect();
        let msgs = s.encode_elem_msgs("t", "a6", None, &elems);
        assert!(msgs.len() > 1);
        assert!(msgs.iter().all(|m| m.len() < 40 * 1024));
        let total: usize = msgs
            .iter()
            .map(|m| {
                let (_, list) = attrs(m)
                    .find(|(t, _)| *t == NFTA_SET_ELEM_LIST_ELEMENTS)
                    .unwrap();
                attrs(list).count()
            })
            .sum();
        assert_eq!(total, 5000);
    }
}
