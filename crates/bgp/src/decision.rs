//! The decision process (RFC 4271 §9.1.2.2, with RFC 4456 §9's tie
//! breakers): which of a prefix's candidate paths is best.

use std::cmp::Ordering;
use std::net::{IpAddr, Ipv4Addr};

use crate::attrs::PathAttrs;

/// LOCAL_PREF assumed for routes without one (eBGP-learned routes).
pub const DEFAULT_LOCAL_PREF: u32 = 100;

/// One candidate path as the decision process sees it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub attrs: &'a PathAttrs,
    /// None for a locally originated prefix.
    pub peer: Option<IpAddr>,
    pub ibgp: bool,
    pub peer_router_id: Ipv4Addr,
}

impl Candidate<'_> {
    fn local_pref(&self) -> u32 {
        if self.ibgp {
            self.attrs.local_pref.unwrap_or(DEFAULT_LOCAL_PREF)
        } else {
            DEFAULT_LOCAL_PREF
        }
    }
}

/// `Less` when `a` is preferred over `b`.
pub fn compare(a: &Candidate, b: &Candidate) -> Ordering {
    preference(a, b).then_with(|| tie_break(a, b))
}

/// Whether `a` and `b` are equally good up to the tie breakers (router ID,
/// CLUSTER_LIST length, peer address): paths that may share the traffic
/// (ECMP, as BIRD's `merge paths` and FRR's `maximum-paths`).
pub fn multipath_equal(a: &Candidate, b: &Candidate) -> bool {
    preference(a, b) == Ordering::Equal
}

/// RFC 4271 §9.1.2.2 a) to d), after our own prefixes.
fn preference(a: &Candidate, b: &Candidate) -> Ordering {
    // Our own prefixes first (what a "weight" does elsewhere): a node never
    // routes its own block through a neighbour.
    a.peer
        .is_some()
        .cmp(&b.peer.is_some())
        // a) highest LOCAL_PREF
        .then_with(|| b.local_pref().cmp(&a.local_pref()))
        // a) shortest AS_PATH
        .then_with(|| a.attrs.as_path_len().cmp(&b.attrs.as_path_len()))
        // b) lowest ORIGIN
        .then_with(|| a.attrs.origin.cmp(&b.attrs.origin))
        // c) lowest MED, only between routes from the same neighbouring AS
        .then_with(|| {
            if a.attrs.neighbour_as() == b.attrs.neighbour_as() {
                a.attrs.med.unwrap_or(0).cmp(&b.attrs.med.unwrap_or(0))
            } else {
                Ordering::Equal
            }
        })
        // d) eBGP over iBGP
        .then_with(|| a.ibgp.cmp(&b.ibgp))
}

/// §9.1.2.2 f) and g), with RFC 4456 §9's CLUSTER_LIST rule between; a
/// total order among learned paths (peer addresses differ).
pub fn tie_break(a: &Candidate, b: &Candidate) -> Ordering {
    // f) lowest BGP identifier (the ORIGINATOR_ID for reflected routes)
    let id = |c: &Candidate| u32::from(c.attrs.originator_id.unwrap_or(c.peer_router_id));
    id(a)
        .cmp(&id(b))
        // RFC 4456 §9: shortest CLUSTER_LIST
        .then_with(|| a.attrs.cluster_list.len().cmp(&b.attrs.cluster_list.len()))
        // g) lowest peer address
        .then_with(|| a.peer.cmp(&b.peer))
}
