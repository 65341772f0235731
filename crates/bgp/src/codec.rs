//! The wire: framing (RFC 4271 §4.1 header checks), encoding and decoding
//! through netgauze-bgp-pkt, and conversion between netgauze's UPDATE and the
//! speaker's own route model ([`PathAttrs`]).
//!
//! We frame messages ourselves instead of using netgauze's tokio codec: the
//! codec waits for as many bytes as the header's length field claims, so a
//! peer announcing a 65,535-byte message without the extended-message
//! capability would stall the session instead of getting Bad Message Length.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use netgauze_bgp_pkt::community::{Community, LargeCommunity as WireLargeCommunity};
use netgauze_bgp_pkt::iana::AS_TRANS;
use netgauze_bgp_pkt::nlri::{Ipv4Unicast, Ipv4UnicastAddress, Ipv6Unicast, Ipv6UnicastAddress};
use netgauze_bgp_pkt::notification::{
    BgpNotificationMessage, CeaseError, FiniteStateMachineError, HoldTimerExpiredError,
    MessageHeaderError, OpenMessageError, UpdateMessageError,
};
use netgauze_bgp_pkt::path_attribute::{
    As2PathSegment, As4Path, As4PathSegment, AsPath, AsPathSegmentType, AtomicAggregate, ClusterId,
    ClusterList, Communities, LargeCommunities, LocalPreference, MpReach, MpUnreach,
    MultiExitDiscriminator, NextHop, Origin as WireOrigin, Originator, PathAttribute,
    PathAttributeValue,
};
use netgauze_bgp_pkt::update::BgpUpdateMessage;
use netgauze_bgp_pkt::wire::deserializer::BgpParsingContext;
use netgauze_bgp_pkt::BgpMessage;
use netgauze_iana::address_family::AddressType;
use netgauze_parse_utils::reader::SliceReader;
use netgauze_parse_utils::traits::ParseFromWithOneInput;
use netgauze_parse_utils::WritablePdu;

use crate::attrs::{AsSegment, LargeCommunity, Origin, OtherAttr, PathAttrs};

pub const HEADER_LEN: usize = 19;
pub const MAX_MESSAGE_LEN: usize = 4096;
const MARKER: [u8; 16] = [0xff; 16];

/// Check a message header (marker, length; RFC 4271 §6.1) and return the
/// whole message's length. The type is checked by the parser.
pub fn check_header(header: &[u8; HEADER_LEN]) -> Result<usize, BgpNotificationMessage> {
    if header[..16] != MARKER {
        return Err(BgpNotificationMessage::MessageHeaderError(
            MessageHeaderError::ConnectionNotSynchronized {
                value: Box::new([]),
            },
        ));
    }
    let len = u16::from_be_bytes([header[16], header[17]]);
    if !(HEADER_LEN..=MAX_MESSAGE_LEN).contains(&(len as usize)) {
        return Err(BgpNotificationMessage::MessageHeaderError(
            MessageHeaderError::BadMessageLength {
                value: len.to_be_bytes().into(),
            },
        ));
    }
    Ok(len as usize)
}

/// Decode one whole message (header included). `asn4` says whether both
/// sides announced the 4-octet AS capability. A malformed message comes
/// back as the NOTIFICATION that answers it (RFC 4271 §6).
pub fn decode(frame: &[u8], asn4: bool) -> Result<BgpMessage, BgpNotificationMessage> {
    // Fail on malformed attributes and capabilities instead of silently
    // ignoring them: RFC 4271 wants a NOTIFICATION.
    let mut ctx = BgpParsingContext::new(
        asn4,
        HashMap::new(),
        HashMap::new(),
        true,
        true,
        false,
        true,
    );
    let mut reader = SliceReader::new(frame);
    BgpMessage::parse(&mut reader, &mut ctx).map_err(BgpNotificationMessage::from)
}

/// Encode a message with its header.
pub fn encode(msg: &BgpMessage) -> Vec<u8> {
    let mut buf = Vec::with_capacity(msg.len());
    // Writing to a Vec cannot fail for I/O; a failure here means we built an
    // invalid message, which the tests cover.
    if let Err(e) = msg.write(&mut buf) {
        tracing::error!(error = ?e, "cannot encode a BGP message we built");
        buf.clear();
    }
    buf
}

/// (error code, subcode) of a NOTIFICATION (RFC 4271 §4.5).
pub fn notification_code(n: &BgpNotificationMessage) -> (u8, u8) {
    let bytes = encode(&BgpMessage::Notification(n.clone()));
    match bytes.get(HEADER_LEN..HEADER_LEN + 2) {
        Some(cs) => (cs[0], cs[1]),
        None => (0, 0),
    }
}

/// The data field of a NOTIFICATION, for error messages.
pub fn describe_notification(n: &BgpNotificationMessage) -> String {
    let (code, sub) = notification_code(n);
    let what = match code {
        1 => "message header error",
        2 => "OPEN message error",
        3 => "UPDATE message error",
        4 => "hold timer expired",
        5 => "finite state machine error",
        6 => "cease",
        7 => "route refresh error",
        _ => "unknown error",
    };
    format!("{what} (code {code}, subcode {sub})")
}

pub fn hold_timer_expired() -> BgpNotificationMessage {
    BgpNotificationMessage::HoldTimerExpiredError(HoldTimerExpiredError::Unspecific {
        sub_code: 0,
        value: Box::new([]),
    })
}

pub fn fsm_error(state_subcode: u8) -> BgpNotificationMessage {
    let value: Box<[u8]> = Box::new([]);
    BgpNotificationMessage::FiniteStateMachineError(match state_subcode {
        1 => FiniteStateMachineError::ReceiveUnexpectedMessageInOpenSentState { value },
        2 => FiniteStateMachineError::ReceiveUnexpectedMessageInOpenConfirmState { value },
        3 => FiniteStateMachineError::ReceiveUnexpectedMessageInEstablishedState { value },
        _ => FiniteStateMachineError::Unspecific { value },
    })
}

pub fn open_error(e: OpenMessageError) -> BgpNotificationMessage {
    BgpNotificationMessage::OpenMessageError(e)
}

pub fn cease(e: CeaseError) -> BgpNotificationMessage {
    BgpNotificationMessage::CeaseError(e)
}

/// Cease / Maximum Number of Prefixes Reached (RFC 4486 §4: the data is
/// the AFI, the SAFI and the limit).
pub fn max_prefixes_reached(afi: Afi, limit: u32) -> BgpNotificationMessage {
    let afi_code: u16 = match afi {
        Afi::Ipv4 => 1,
        Afi::Ipv6 => 2,
    };
    let mut value = afi_code.to_be_bytes().to_vec();
    value.push(1); // unicast
    value.extend(limit.to_be_bytes());
    cease(CeaseError::MaximumNumberOfPrefixesReached {
        value: value.into(),
    })
}

/// What an UPDATE carries, in the speaker's model.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParsedUpdate {
    pub announced: Vec<IpNet>,
    pub attrs: Option<PathAttrs>,
    pub withdrawn: Vec<IpNet>,
    /// End-of-RIB marker for this family (RFC 4724 §2).
    pub end_of_rib: Option<Afi>,
}

/// The two address families the speaker carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Afi {
    Ipv4,
    Ipv6,
}

impl Afi {
    pub fn of(prefix: &IpNet) -> Afi {
        match prefix {
            IpNet::V4(_) => Afi::Ipv4,
            IpNet::V6(_) => Afi::Ipv6,
        }
    }

    pub fn address_type(self) -> AddressType {
        match self {
            Afi::Ipv4 => AddressType::Ipv4Unicast,
            Afi::Ipv6 => AddressType::Ipv6Unicast,
        }
    }

    pub fn from_address_type(t: AddressType) -> Option<Afi> {
        match t {
            AddressType::Ipv4Unicast => Some(Afi::Ipv4),
            AddressType::Ipv6Unicast => Some(Afi::Ipv6),
            _ => None,
        }
    }
}

/// Turn a decoded UPDATE into prefixes and attributes. Families other than
/// IPv4/IPv6 unicast are ignored (we never negotiate them). An UPDATE that
/// announces routes without ORIGIN, AS_PATH or (for IPv4 NLRI) NEXT_HOP
/// gets Missing Well-known Attribute (RFC 4271 §6.3).
pub fn parse_update(update: &BgpUpdateMessage) -> Result<ParsedUpdate, BgpNotificationMessage> {
    let mut out = ParsedUpdate {
        end_of_rib: update.end_of_rib().and_then(Afi::from_address_type),
        ..ParsedUpdate::default()
    };
    if out.end_of_rib.is_some() {
        return Ok(out);
    }
    out.withdrawn
        .extend(update.withdraw_routes().iter().filter_map(v4_prefix));
    out.announced
        .extend(update.nlri().iter().filter_map(v4_prefix));
    let mut attrs = PathAttrs::local();
    let mut as4_path: Option<Vec<AsSegment>> = None;
    let mut have_as2 = false;
    // Type codes of the well-known mandatory attributes present.
    let mut seen = [false; 4];
    for attr in update.path_attributes() {
        match attr.value() {
            PathAttributeValue::Origin(_) => seen[1] = true,
            PathAttributeValue::AsPath(_) => seen[2] = true,
            PathAttributeValue::NextHop(_) => seen[3] = true,
            _ => {}
        }
        match attr.value() {
            PathAttributeValue::Origin(o) => {
                attrs.origin = match o {
                    WireOrigin::IGP => Origin::Igp,
                    WireOrigin::EGP => Origin::Egp,
                    WireOrigin::Incomplete => Origin::Incomplete,
                }
            }
            PathAttributeValue::AsPath(AsPath::As2PathSegments(segs)) => {
                have_as2 = true;
                attrs.as_path = segs
                    .iter()
                    .map(|s| AsSegment {
                        set: s.segment_type() == AsPathSegmentType::AsSet,
                        asns: s.as_numbers().iter().map(|&a| u32::from(a)).collect(),
                    })
                    .collect();
            }
            PathAttributeValue::AsPath(AsPath::As4PathSegments(segs)) => {
                attrs.as_path = segs.iter().map(segment4).collect();
            }
            PathAttributeValue::As4Path(p) => {
                as4_path = Some(p.segments().iter().map(segment4).collect());
            }
            PathAttributeValue::NextHop(nh) => attrs.next_hop = Some(IpAddr::V4(nh.next_hop())),
            PathAttributeValue::MultiExitDiscriminator(m) => attrs.med = Some(m.metric()),
            PathAttributeValue::LocalPreference(l) => attrs.local_pref = Some(l.metric()),
            PathAttributeValue::AtomicAggregate(_) => attrs.atomic_aggregate = true,
            PathAttributeValue::Communities(c) => {
                attrs.communities = c.communities().iter().map(|c| c.value()).collect()
            }
            PathAttributeValue::LargeCommunities(c) => {
                attrs.large_communities = c
                    .communities()
                    .iter()
                    .map(|c| {
                        LargeCommunity::new(c.global_admin(), c.local_data1(), c.local_data2())
                    })
                    .collect()
            }
            PathAttributeValue::Originator(o) => attrs.originator_id = Some(o.id()),
            PathAttributeValue::ClusterList(c) => {
                attrs.cluster_list = c.cluster_list().iter().map(|c| c.id()).collect()
            }
            PathAttributeValue::MpReach(MpReach::Ipv4Unicast { next_hop, nlri, .. }) => {
                attrs.next_hop = Some(*next_hop);
                out.announced.extend(nlri.iter().filter_map(v4_prefix));
            }
            PathAttributeValue::MpReach(MpReach::Ipv6Unicast {
                next_hop_global,
                nlri,
                ..
            }) => {
                attrs.next_hop = Some(IpAddr::V6(*next_hop_global));
                out.announced.extend(nlri.iter().filter_map(v6_prefix));
            }
            PathAttributeValue::MpUnreach(MpUnreach::Ipv4Unicast { nlri }) => {
                out.withdrawn.extend(nlri.iter().filter_map(v4_prefix))
            }
            PathAttributeValue::MpUnreach(MpUnreach::Ipv6Unicast { nlri }) => {
                out.withdrawn.extend(nlri.iter().filter_map(v6_prefix))
            }
            // AGGREGATOR's encoding depends on the session's AS size; it is
            // informational, so it is not passed on.
            PathAttributeValue::Aggregator(_)
            | PathAttributeValue::MpReach(_)
            | PathAttributeValue::MpUnreach(_) => {}
            _ if attr.optional() && attr.transitive() => attrs.other.push(pass_on(attr)),
            _ => {}
        }
    }
    // RFC 6793 §4.2.3: a 2-octet speaker's path carries AS_TRANS; AS4_PATH
    // holds the real numbers of its tail.
    if let (true, Some(p4)) = (have_as2, as4_path) {
        attrs.as_path = merge_as4_path(&attrs.as_path, p4);
    }
    if !out.announced.is_empty() {
        let needs_next_hop = !update.nlri().is_empty();
        let missing = [1u8, 2, 3]
            .into_iter()
            .find(|&code| !seen[usize::from(code)] && (code != 3 || needs_next_hop));
        if let Some(code) = missing {
            return Err(BgpNotificationMessage::UpdateMessageError(
                UpdateMessageError::MissingWellKnownAttribute {
                    value: Box::new([code]),
                },
            ));
        }
        out.attrs = Some(attrs);
    }
    Ok(out)
}

/// A prefix as the speaker keeps it: without the bits past its length,
/// which RFC 4271 §4.3 calls irrelevant (netgauze keeps them, and writes
/// them as zeros). A peer's `10.1.2.3/24` is `10.1.2.0/24`, the route the
/// kernel takes and the one we announce and withdraw. `None` when that
/// prefix is no unicast one (netgauze checks the address as sent:
/// `249.0.0.0/3` passes, its network `224.0.0.0/3` does not): ignored, as
/// a prefix we could never announce again.
fn v4_prefix(a: &Ipv4UnicastAddress) -> Option<IpNet> {
    let net = a.network().address().trunc();
    Ipv4Unicast::from_net(net).ok()?;
    Some(IpNet::V4(net))
}

fn v6_prefix(a: &Ipv6UnicastAddress) -> Option<IpNet> {
    let net = a.network().address().trunc();
    Ipv6Unicast::from_net(net).ok()?;
    Some(IpNet::V6(net))
}

/// An optional transitive attribute to pass on; an unrecognised one gets
/// the Partial bit (RFC 4271 §5).
fn pass_on(attr: &PathAttribute) -> OtherAttr {
    if let PathAttributeValue::UnknownAttribute(_) = attr.value() {
        let partial = PathAttribute::from(
            true,
            true,
            true,
            attr.extended_length(),
            attr.value().clone(),
        );
        if let Ok(p) = partial {
            return OtherAttr::new(p);
        }
    }
    OtherAttr::new(attr.clone())
}

fn segment4(s: &As4PathSegment) -> AsSegment {
    AsSegment {
        set: s.segment_type() == AsPathSegmentType::AsSet,
        asns: s.as_numbers().to_vec(),
    }
}

fn merge_as4_path(as2: &[AsSegment], as4: Vec<AsSegment>) -> Vec<AsSegment> {
    let len = |p: &[AsSegment]| p.iter().map(|s| s.asns.len()).sum::<usize>();
    let (l2, l4) = (len(as2), len(&as4));
    if l4 > l2 {
        // §4.2.3: an AS4_PATH longer than AS_PATH is ignored.
        return as2.to_vec();
    }
    let mut keep = l2 - l4;
    let mut out = Vec::new();
    for seg in as2 {
        if keep == 0 {
            break;
        }
        let n = keep.min(seg.asns.len());
        out.push(AsSegment {
            set: seg.set,
            asns: seg.asns[..n].to_vec(),
        });
        keep -= n;
    }
    out.extend(as4);
    out
}

/// How to encode routes for one session.
#[derive(Debug, Clone, Copy)]
pub struct EncodeOptions {
    pub asn4: bool,
    pub ibgp: bool,
}

fn attr(optional: bool, transitive: bool, value: PathAttributeValue) -> Option<PathAttribute> {
    // extended_length costs one byte and keeps any length legal.
    PathAttribute::from(optional, transitive, false, true, value).ok()
}

/// The common attributes of an UPDATE for `attrs` (not the NLRI parts).
fn common_attrs(attrs: &PathAttrs, opts: EncodeOptions) -> Vec<PathAttribute> {
    let mut out = Vec::new();
    out.extend(attr(
        false,
        true,
        PathAttributeValue::Origin(match attrs.origin {
            Origin::Igp => WireOrigin::IGP,
            Origin::Egp => WireOrigin::EGP,
            Origin::Incomplete => WireOrigin::Incomplete,
        }),
    ));
    let seg_type = |set: bool| {
        if set {
            AsPathSegmentType::AsSet
        } else {
            AsPathSegmentType::AsSequence
        }
    };
    let as4: Vec<As4PathSegment> = attrs
        .as_path
        .iter()
        .map(|s| As4PathSegment::new(seg_type(s.set), s.asns.clone()))
        .collect();
    if opts.asn4 {
        out.extend(attr(
            false,
            true,
            PathAttributeValue::AsPath(AsPath::as4_path_segments(as4)),
        ));
    } else {
        let needs_as4 = attrs
            .as_path
            .iter()
            .any(|s| s.asns.iter().any(|&a| a > 0xffff));
        let as2: Vec<As2PathSegment> = attrs
            .as_path
            .iter()
            .map(|s| {
                let asns: Vec<u16> = s
                    .asns
                    .iter()
                    .map(|&a| u16::try_from(a).unwrap_or(AS_TRANS))
                    .collect();
                As2PathSegment::new(seg_type(s.set), asns)
            })
            .collect();
        out.extend(attr(
            false,
            true,
            PathAttributeValue::AsPath(AsPath::as2_path_segments(as2)),
        ));
        if needs_as4 {
            out.extend(attr(
                true,
                true,
                PathAttributeValue::As4Path(As4Path::new(as4)),
            ));
        }
    }
    if let Some(m) = attrs.med {
        out.extend(attr(
            true,
            false,
            PathAttributeValue::MultiExitDiscriminator(MultiExitDiscriminator::new(m)),
        ));
    }
    if opts.ibgp {
        out.extend(attr(
            false,
            true,
            PathAttributeValue::LocalPreference(LocalPreference::new(
                attrs.local_pref.unwrap_or(100),
            )),
        ));
    }
    if attrs.atomic_aggregate {
        out.extend(attr(
            false,
            true,
            PathAttributeValue::AtomicAggregate(AtomicAggregate),
        ));
    }
    if !attrs.communities.is_empty() {
        let c: Vec<Community> = attrs
            .communities
            .iter()
            .map(|&c| Community::new(c))
            .collect();
        out.extend(attr(
            true,
            true,
            PathAttributeValue::Communities(Communities::new(c)),
        ));
    }
    if !attrs.large_communities.is_empty() {
        let c: Vec<WireLargeCommunity> = attrs
            .large_communities
            .iter()
            .map(|c| WireLargeCommunity::new(c.global, c.local1, c.local2))
            .collect();
        out.extend(attr(
            true,
            true,
            PathAttributeValue::LargeCommunities(LargeCommunities::new(c)),
        ));
    }
    if let Some(o) = attrs.originator_id {
        out.extend(attr(
            true,
            false,
            PathAttributeValue::Originator(Originator::new(o)),
        ));
    }
    if !attrs.cluster_list.is_empty() {
        let c: Vec<ClusterId> = attrs
            .cluster_list
            .iter()
            .map(|&c| ClusterId::new(c))
            .collect();
        out.extend(attr(
            true,
            false,
            PathAttributeValue::ClusterList(ClusterList::new(c)),
        ));
    }
    out.extend(attrs.other.iter().map(|o| o.attr().clone()));
    out
}

// Prefix counts per UPDATE that always fit in 4096 bytes with the attributes
// we send (an IPv4 prefix takes at most 5 bytes, an IPv6 one 17).
const V4_PER_UPDATE: usize = 500;
const V6_PER_UPDATE: usize = 150;

fn v4_nlri(p: &Ipv4Net) -> Option<Ipv4UnicastAddress> {
    Ipv4Unicast::from_net(*p)
        .ok()
        .map(Ipv4UnicastAddress::new_no_path_id)
}

fn v6_nlri(p: &Ipv6Net) -> Option<Ipv6UnicastAddress> {
    Ipv6Unicast::from_net(*p)
        .ok()
        .map(|n| Ipv6UnicastAddress::new(None, n))
}

/// UPDATEs announcing `prefixes` (all of one family) with `attrs`, whose
/// next hop must be of the prefixes' family for IPv6 (IPv4 prefixes with an
/// IPv6 next hop are not supported: RFC 8950 is not negotiated).
pub fn announce(prefixes: &[IpNet], attrs: &PathAttrs, opts: EncodeOptions) -> Vec<BgpMessage> {
    let common = common_attrs(attrs, opts);
    let v4: Vec<Ipv4Net> = prefixes
        .iter()
        .filter_map(|p| match p {
            IpNet::V4(n) => Some(*n),
            IpNet::V6(_) => None,
        })
        .collect();
    let v6: Vec<Ipv6Net> = prefixes
        .iter()
        .filter_map(|p| match p {
            IpNet::V6(n) => Some(*n),
            IpNet::V4(_) => None,
        })
        .collect();
    let mut out = Vec::new();
    if let Some(IpAddr::V4(nh)) = attrs.next_hop {
        for chunk in v4.chunks(V4_PER_UPDATE) {
            let mut pa = common.clone();
            pa.extend(attr(
                false,
                true,
                PathAttributeValue::NextHop(NextHop::new(nh)),
            ));
            let nlri: Vec<_> = chunk.iter().filter_map(v4_nlri).collect();
            out.push(BgpMessage::Update(BgpUpdateMessage::new(vec![], pa, nlri)));
        }
    }
    if let Some(IpAddr::V6(nh)) = attrs.next_hop {
        for chunk in v6.chunks(V6_PER_UPDATE) {
            let mut pa = common.clone();
            let nlri: Vec<_> = chunk.iter().filter_map(v6_nlri).collect();
            pa.extend(attr(
                true,
                false,
                PathAttributeValue::MpReach(MpReach::Ipv6Unicast {
                    next_hop_global: nh,
                    next_hop_local: None,
                    nlri: nlri.into(),
                }),
            ));
            out.push(BgpMessage::Update(BgpUpdateMessage::new(
                vec![],
                pa,
                vec![],
            )));
        }
    }
    out
}

/// UPDATEs withdrawing `prefixes`.
pub fn withdraw(prefixes: &[IpNet]) -> Vec<BgpMessage> {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for p in prefixes {
        match p {
            IpNet::V4(n) => v4.extend(v4_nlri(n)),
            IpNet::V6(n) => v6.extend(v6_nlri(n)),
        }
    }
    let mut out = Vec::new();
    for chunk in v4.chunks(V4_PER_UPDATE) {
        out.push(BgpMessage::Update(BgpUpdateMessage::new(
            chunk.to_vec(),
            vec![],
            vec![],
        )));
    }
    for chunk in v6.chunks(V6_PER_UPDATE) {
        let pa: Vec<_> = attr(
            true,
            false,
            PathAttributeValue::MpUnreach(MpUnreach::Ipv6Unicast {
                nlri: chunk.to_vec().into(),
            }),
        )
        .into_iter()
        .collect();
        out.push(BgpMessage::Update(BgpUpdateMessage::new(
            vec![],
            pa,
            vec![],
        )));
    }
    out
}

/// The End-of-RIB marker for a family (RFC 4724 §2).
pub fn end_of_rib(afi: Afi) -> BgpMessage {
    match afi {
        Afi::Ipv4 => BgpMessage::Update(BgpUpdateMessage::new(vec![], vec![], vec![])),
        Afi::Ipv6 => BgpMessage::Update(BgpUpdateMessage::new(
            vec![],
            attr(
                true,
                false,
                PathAttributeValue::MpUnreach(MpUnreach::Ipv6Unicast { nlri: Box::new([]) }),
            )
            .into_iter()
            .collect::<Vec<_>>(),
            vec![],
        )),
    }
}
