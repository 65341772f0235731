//! BGP messages off the wire as plexusd's speaker reads them (plexus-bgp's
//! codec over netgauze-bgp-pkt): the header checks, the framing of a TCP
//! stream, OPEN with its capabilities (and the negotiation on it), UPDATE
//! with every attribute (turned into the speaker's routes), NOTIFICATION,
//! ROUTE-REFRESH and KEEPALIVE.
//!
//! Input: one flags byte (bit 0: the session uses 4-octet AS numbers),
//! then the bytes a peer sends. Must hold: no panic; a decoded message the
//! speaker could send as it is, encoded again, decodes to the same message
//! (the same routes, for an UPDATE) and encodes to the same bytes; the
//! NOTIFICATION answering a
//! malformed one decodes; the routes of an UPDATE, announced and withdrawn
//! again as the speaker sends them (in messages of at most 4096 bytes),
//! read back as the same prefixes and attributes.
#![no_main]

use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;
use netgauze_bgp_pkt::capabilities::BgpCapability;
use netgauze_bgp_pkt::open::BgpOpenMessageParameter;
use netgauze_bgp_pkt::path_attribute::{MpReach, MpUnreach, PathAttributeValue};
use netgauze_bgp_pkt::update::BgpUpdateMessage;
use netgauze_bgp_pkt::BgpMessage;
use plexus_bgp::codec::{self, EncodeOptions, ParsedUpdate, HEADER_LEN, MAX_MESSAGE_LEN};
use plexus_bgp::open::negotiate;
use plexus_fuzz::invariant;

/// Encode as the speaker sends, checking the size limit of a session
/// without the extended-message capability.
fn wire(msg: &BgpMessage) -> Vec<u8> {
    let bytes = codec::encode(msg);
    invariant!(!bytes.is_empty(), "{msg:?} does not encode");
    invariant!(
        bytes.len() <= MAX_MESSAGE_LEN,
        "{} bytes: {msg:?}",
        bytes.len()
    );
    bytes
}

/// The UPDATEs `msgs`, decoded in a 4-octet session and parsed.
fn reparse(msgs: &[BgpMessage]) -> Vec<ParsedUpdate> {
    msgs.iter()
        .map(|m| {
            let bytes = wire(m);
            match codec::decode(&bytes, true) {
                Ok(BgpMessage::Update(u)) => match codec::parse_update(&u) {
                    Ok(p) => p,
                    Err(n) => panic!("our {m:?} is refused: {n:?}"),
                },
                other => panic!("our {m:?} decodes as {other:?}"),
            }
        })
        .collect()
}

fn sorted(mut v: Vec<IpNet>) -> Vec<IpNet> {
    v.sort();
    v
}

fn update_round_trip(p: &ParsedUpdate) {
    if let Some(attrs) = &p.attrs {
        let nh_v4 = attrs.next_hop.is_some_and(|n| n.is_ipv4());
        let same_family: Vec<IpNet> = p
            .announced
            .iter()
            .filter(|n| matches!(n, IpNet::V4(_)) == nh_v4)
            .copied()
            .collect();
        let opts = EncodeOptions {
            asn4: true,
            ibgp: true,
        };
        let back = reparse(&codec::announce(&same_family, attrs, opts));
        let mut want = attrs.clone();
        want.local_pref = Some(attrs.local_pref.unwrap_or(100));
        for b in &back {
            invariant!(b.attrs.as_ref() == Some(&want), "{:?} != {want:?}", b.attrs);
        }
        let got: Vec<IpNet> = back.into_iter().flat_map(|b| b.announced).collect();
        invariant!(
            sorted(got.clone()) == sorted(same_family.clone()),
            "{got:?} != {same_family:?}"
        );
    }
    let back = reparse(&codec::withdraw(&p.withdrawn));
    let got: Vec<IpNet> = back.into_iter().flat_map(|b| b.withdrawn).collect();
    invariant!(
        sorted(got.clone()) == sorted(p.withdrawn.clone()),
        "{got:?} != {:?}",
        p.withdrawn
    );
}

/// Whether an UPDATE's prefixes have no bits set past their length (the
/// speaker sends none such; netgauze writes those bits as zeros, which may
/// make a prefix it read one it refuses: 249.0.0.0/3 is 224.0.0.0/3).
fn canonical(u: &BgpUpdateMessage) -> bool {
    let v4 = |n: ipnet::Ipv4Net| n == n.trunc();
    let v6 = |n: ipnet::Ipv6Net| n == n.trunc();
    u.withdraw_routes()
        .iter()
        .all(|a| v4(a.network().address()))
        && u.nlri().iter().all(|a| v4(a.network().address()))
        && u.path_attributes().iter().all(|a| match a.value() {
            PathAttributeValue::MpReach(MpReach::Ipv4Unicast { nlri, .. })
            | PathAttributeValue::MpUnreach(MpUnreach::Ipv4Unicast { nlri }) => {
                nlri.iter().all(|a| v4(a.network().address()))
            }
            PathAttributeValue::MpReach(MpReach::Ipv6Unicast { nlri, .. })
            | PathAttributeValue::MpUnreach(MpUnreach::Ipv6Unicast { nlri }) => {
                nlri.iter().all(|a| v6(a.network().address()))
            }
            _ => true,
        })
}

/// Whether the speaker could send `msg` as it is: an OPEN with the
/// capabilities ours carries, an UPDATE with the attributes it writes or
/// passes on, any KEEPALIVE, NOTIFICATION or ROUTE-REFRESH. Other parts
/// are only read (parse_update and negotiate drop them), and netgauze 0.13
/// cannot write some of them back: MP_REACH_NLRI of another family (its
/// length counted two bytes long), capabilities such as Multiple Labels.
fn sendable(msg: &BgpMessage) -> bool {
    match msg {
        BgpMessage::Open(o) => o.params().iter().all(|p| {
            let BgpOpenMessageParameter::Capabilities(caps) = p;
            caps.iter().all(|c| {
                matches!(
                    c,
                    BgpCapability::MultiProtocolExtensions(_)
                        | BgpCapability::RouteRefresh
                        | BgpCapability::FourOctetAs(_)
                        | BgpCapability::GracefulRestartCapability(_)
                )
            })
        }),
        BgpMessage::Update(u) => {
            canonical(u)
                && u.path_attributes().iter().all(|a| match a.value() {
                    PathAttributeValue::Origin(_)
                    | PathAttributeValue::AsPath(_)
                    | PathAttributeValue::NextHop(_)
                    | PathAttributeValue::MultiExitDiscriminator(_)
                    | PathAttributeValue::LocalPreference(_)
                    | PathAttributeValue::AtomicAggregate(_)
                    | PathAttributeValue::Communities(_)
                    | PathAttributeValue::Originator(_)
                    | PathAttributeValue::ClusterList(_)
                    | PathAttributeValue::MpReach(
                        MpReach::Ipv4Unicast { .. } | MpReach::Ipv6Unicast { .. },
                    )
                    | PathAttributeValue::MpUnreach(
                        MpUnreach::Ipv4Unicast { .. } | MpUnreach::Ipv6Unicast { .. },
                    ) => true,
                    PathAttributeValue::As4Path(_)
                    | PathAttributeValue::Aggregator(_)
                    | PathAttributeValue::MpReach(_)
                    | PathAttributeValue::MpUnreach(_) => false,
                    _ => a.optional() && a.transitive(),
                })
        }
        BgpMessage::Notification(_) | BgpMessage::KeepAlive | BgpMessage::RouteRefresh(_) => true,
    }
}

fn message(msg: &BgpMessage, asn4: bool) {
    if sendable(msg) {
        round_trip(msg, asn4);
    }
    kinds(msg);
}

/// A message encodes to bytes that decode to it again and mean the same
/// routes to the speaker.
fn round_trip(msg: &BgpMessage, asn4: bool) {
    let bytes = wire(msg);
    let again = match codec::decode(&bytes, asn4) {
        Ok(m) => m,
        Err(n) => panic!("{msg:?} encoded as {bytes:02x?} does not decode: {n:?}"),
    };
    invariant!(wire(&again) == bytes, "{msg:?} re-decodes as {again:?}");
    if let (BgpMessage::Update(a), BgpMessage::Update(b)) = (msg, &again) {
        let (pa, pb) = (codec::parse_update(a), codec::parse_update(b));
        invariant!(pa == pb, "{pa:?} != {pb:?}");
    } else {
        invariant!(&again == msg, "{msg:?} re-decodes as {again:?}");
    }
}

/// What the speaker does with each kind of message.
fn kinds(msg: &BgpMessage) {
    match msg {
        BgpMessage::Open(open) => {
            let ours = "10.0.0.1".parse().unwrap();
            if let Ok(n) = negotiate(open, open.my_asn4(), ours, 90) {
                invariant!(
                    n.hold_time <= 90 && n.hold_time != 1 && n.hold_time != 2,
                    "{n:?}"
                );
                invariant!(
                    n.keepalive >= 1 && n.keepalive <= n.hold_time.max(1),
                    "{n:?}"
                );
            }
        }
        BgpMessage::Update(u) => {
            if let Ok(p) = codec::parse_update(u) {
                update_round_trip(&p);
            }
        }
        BgpMessage::Notification(n) => {
            let _ = (codec::notification_code(n), codec::describe_notification(n));
        }
        BgpMessage::RouteRefresh(rr) => {
            let _ = codec::Afi::from_address_type(rr.address_type());
        }
        BgpMessage::KeepAlive => {}
    }
}

/// The NOTIFICATION we would send for a malformed message must itself be
/// a message a peer can read.
fn answer(n: netgauze_bgp_pkt::notification::BgpNotificationMessage, asn4: bool) {
    let code = codec::notification_code(&n);
    let bytes = wire(&BgpMessage::Notification(n));
    match codec::decode(&bytes, asn4) {
        Ok(BgpMessage::Notification(back)) => {
            invariant!(codec::notification_code(&back) == code, "{back:?}")
        }
        other => panic!("our NOTIFICATION {bytes:02x?} decodes as {other:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut stream)) = data.split_first() else {
        return;
    };
    let asn4 = flags & 1 == 1;
    // The speaker's reader: a header, its checks, the rest of the message.
    while stream.len() >= HEADER_LEN {
        let header: [u8; HEADER_LEN] = stream[..HEADER_LEN].try_into().unwrap();
        let len = match codec::check_header(&header) {
            Ok(len) => len,
            Err(n) => return answer(n, asn4),
        };
        invariant!((HEADER_LEN..=MAX_MESSAGE_LEN).contains(&len), "{len}");
        let Some(frame) = stream.get(..len) else {
            return;
        };
        stream = &stream[len..];
        match codec::decode(frame, asn4) {
            Ok(msg) => message(&msg, asn4),
            Err(n) => return answer(n, asn4),
        }
    }
});
