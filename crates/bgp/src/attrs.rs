//! The path attributes the speaker keeps for a route, independent of the wire
//! codec: the RIB and the decision process work on these, and `codec`
//! converts them to and from netgauze's message types.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use netgauze_bgp_pkt::path_attribute::PathAttribute;
use netgauze_parse_utils::WritablePdu;

/// ORIGIN (RFC 4271 §5.1.1); the order is the preference order (IGP best).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    Igp = 0,
    Egp = 1,
    Incomplete = 2,
}

/// One AS_PATH segment with 4-octet AS numbers (RFC 6793: we always keep the
/// full path, whatever the session's encoding).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct AsSegment {
    pub set: bool,
    pub asns: Vec<u32>,
}

/// The attributes of one route (serialised for `plexusctl bgp routes`,
/// without the attributes passed through unread).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct PathAttrs {
    pub origin: Origin,
    pub as_path: Vec<AsSegment>,
    /// For IPv4 prefixes NEXT_HOP (or an MP_REACH next hop), for IPv6 the
    /// MP_REACH global next hop.
    pub next_hop: Option<IpAddr>,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    pub atomic_aggregate: bool,
    /// Standard communities (RFC 1997), as their 32-bit values.
    #[serde(serialize_with = "communities_as_text")]
    pub communities: Vec<u32>,
    /// Large communities (RFC 8092).
    pub large_communities: Vec<LargeCommunity>,
    /// RFC 4456.
    pub originator_id: Option<Ipv4Addr>,
    pub cluster_list: Vec<Ipv4Addr>,
    /// Optional transitive attributes we do not act on (extended
    /// communities, unknown ones...), passed on as RFC 4271 §5 asks.
    #[serde(skip)]
    pub other: Vec<OtherAttr>,
}

fn communities_as_text<S: serde::Serializer>(c: &[u32], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(c.iter().map(|&v| Community(v)))
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
            large_communities: Vec::new(),
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

    /// The AS that originated the route: the last AS of a path ending in
    /// an AS_SEQUENCE (None for our own routes and for aggregates ending
    /// in an AS_SET).
    pub fn origin_as(&self) -> Option<u32> {
        self.as_path
            .last()
            .filter(|s| !s.set)
            .and_then(|s| s.asns.last().copied())
    }

    /// Add communities that are not there yet (in order, after the
    /// route's own).
    pub fn add_communities(&mut self, add: &CommunitySet) {
        for c in &add.standard {
            if !self.communities.contains(&c.0) {
                self.communities.push(c.0);
            }
        }
        for c in &add.large {
            if !self.large_communities.contains(c) {
                self.large_communities.push(*c);
            }
        }
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

/// A standard community (RFC 1997), written `ASN:VALUE` (two 16-bit
/// numbers) as BIRD, FRR and GoBGP write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Community(pub u32);

impl Community {
    pub fn new(asn: u16, value: u16) -> Community {
        Community((u32::from(asn) << 16) | u32::from(value))
    }
}

impl fmt::Display for Community {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.0 >> 16, self.0 & 0xffff)
    }
}

/// A community that does not parse, with what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {input:?}: expected {expected}")]
pub struct CommunityParseError {
    what: &'static str,
    input: String,
    expected: &'static str,
}

impl FromStr for Community {
    type Err = CommunityParseError;
    fn from_str(s: &str) -> Result<Community, CommunityParseError> {
        let err = || CommunityParseError {
            what: "community",
            input: s.to_string(),
            expected: "ASN:VALUE with two numbers of 0..65535",
        };
        let (a, v) = s.trim().split_once(':').ok_or_else(err)?;
        let a: u16 = a.parse().map_err(|_| err())?;
        let v: u16 = v.parse().map_err(|_| err())?;
        Ok(Community::new(a, v))
    }
}

/// A large community (RFC 8092), written `GLOBAL:LOCAL1:LOCAL2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LargeCommunity {
    pub global: u32,
    pub local1: u32,
    pub local2: u32,
}

impl LargeCommunity {
    pub fn new(global: u32, local1: u32, local2: u32) -> LargeCommunity {
        LargeCommunity {
            global,
            local1,
            local2,
        }
    }
}

impl fmt::Display for LargeCommunity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.global, self.local1, self.local2)
    }
}

impl FromStr for LargeCommunity {
    type Err = CommunityParseError;
    fn from_str(s: &str) -> Result<LargeCommunity, CommunityParseError> {
        let err = || CommunityParseError {
            what: "large community",
            input: s.to_string(),
            expected: "GLOBAL:LOCAL1:LOCAL2 with three 32-bit numbers",
        };
        let parts: Vec<&str> = s.trim().split(':').collect();
        let [g, l1, l2] = parts[..] else {
            return Err(err());
        };
        let n = |x: &str| x.parse::<u32>().map_err(|_| err());
        Ok(LargeCommunity::new(n(g)?, n(l1)?, n(l2)?))
    }
}

macro_rules! serde_as_string {
    ($t:ty) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
serde_as_string!(Community);
serde_as_string!(LargeCommunity);

/// Communities to add to routes we announce (per originated prefix, per
/// peer on export).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CommunitySet {
    pub standard: Vec<Community>,
    pub large: Vec<LargeCommunity>,
}

impl CommunitySet {
    pub fn is_empty(&self) -> bool {
        self.standard.is_empty() && self.large.is_empty()
    }
}
