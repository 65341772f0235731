//! The path attributes the speaker keeps for a route, independent of the wire
//! codec: the RIB and the decision process work on these, and `codec`
//! converts them to and from netgauze's message types.

use std::net::{IpAddr, Ipv4Addr};

use netgauze_bgp_pkt::path_attribute::PathAttribute;
use netgauze_parse_utils::WritablePdu;

/// ORIGIN (RFC 4271 §5.1.1); the order is the preference order (IGP best).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Origin {
    Igp = 0,
    Egp = 1,
    Incomplete = 2,
}

/// One AS_PATH segment with 4-octet AS numbers (RFC 6793: we always keep the
/// full path, whatever the session's encoding).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AsSegment {
    pub set: bool,
    pub asns: Vec<u32>,
}

/// The attributes of one route.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PathAttrs {
    pub origin: Origin,
    pub as_path: Vec<AsSegment>,
    /// For IPv4 prefixes NEXT_HOP (or an MP_REACH next hop), for IPv6 the
    /// MP_REACH global next hop.
    pub next_hop: Option<IpAddr>,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    pub atomic_aggregate: bool,
    pub communities: Vec<u32>,
    /// RFC 4456.
    pub originator_id: Option<Ipv4Addr>,
    pub cluster_list: Vec<Ipv4Addr>,
    /// Optional transitive attributes we do not act on (large and extended
    /// communities, unknown ones...), passed on as RFC 4271 §5 asks.
    pub other: Vec<OtherAttr>,
}

/// An attribute passed through untouched; compared by its encoding.
#[derive(Debug, Clone)]
pub struct OtherAttr {
    attr: PathAttribute,
    wire: Vec<u8>,
}

impl OtherAttr {
    pub fn new(attr: PathAttribute) -> OtherAttr {
        let mut wire = Vec::new();
        // A failed encoding leaves an empty key: such attributes then
        // compare equal by kind only, which is harmless.
        let _ = attr.write(&mut wire);
        OtherAttr { attr, wire }
    }

    pub fn attr(&self) -> &PathAttribute {
        &self.attr
    }
}

impl PartialEq for OtherAttr {
    fn eq(&self, other: &Self) -> bool {
        self.wire == other.wire
    }
}

impl Eq for OtherAttr {}

impl std::hash::Hash for OtherAttr {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.wire.hash(state)
    }
}

impl PathAttrs {
    /// The attributes of a locally originated prefix.
    pub fn local() -> PathAttrs {
        PathAttrs {
            origin: Origin::Igp,
            as_path: Vec::new(),
            next_hop: None,
            med: None,
            local_pref: None,
            atomic_aggregate: false,
            communities: Vec::new(),
            originator_id: None,
            cluster_list: Vec::new(),
            other: Vec::new(),
        }
    }

    /// AS_PATH length for the decision process: an AS_SET counts as one
    /// (RFC 4271 §9.1.2.2 a).
    pub fn as_path_len(&self) -> usize {
        self.as_path
            .iter()
            .map(|s| if s.set { 1 } else { s.asns.len() })
            .sum()
    }

    /// The neighbouring AS a route came from (the first AS of the path), for
    /// the MED comparison.
    pub fn neighbour_as(&self) -> Option<u32> {
        self.as_path
            .first()
            .filter(|s| !s.set)
            .and_then(|s| s.asns.first().copied())
    }

    pub fn contains_as(&self, asn: u32) -> bool {
        self.as_path.iter().any(|s| s.asns.contains(&asn))
    }

    /// Prepend `asn` to the path (eBGP export).
    pub fn prepend(&mut self, asn: u32) {
        match self.as_path.first_mut() {
            Some(seg) if !seg.set && seg.asns.len() < 255 => seg.asns.insert(0, asn),
            _ => self.as_path.insert(
                0,
                AsSegment {
                    set: false,
                    asns: vec![asn],
                },
            ),
        }
    }
}
