//! The wire: round trips through netgauze and the NOTIFICATION that answers
//! each class of malformed message (RFC 4271 §6).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use netgauze_bgp_pkt::BgpMessage;
use plexus_bgp::attrs::{AsSegment, LargeCommunity, Origin, PathAttrs};
use plexus_bgp::codec::{self, Afi, EncodeOptions, HEADER_LEN};

fn header(len: u16, kind: u8) -> Vec<u8> {
    let mut v = vec![0xff; 16];
    v.extend(len.to_be_bytes());
    v.push(kind);
    v
}

/// The NOTIFICATION (code, subcode) a received message gets, through the
/// same two steps as the runtime: header check, then decode.
fn verdict(msg: &[u8]) -> Option<(u8, u8)> {
    let h: [u8; HEADER_LEN] = msg[..HEADER_LEN].try_into().unwrap();
    if let Err(n) = codec::check_header(&h) {
        return Some(codec::notification_code(&n));
    }
    codec::decode(msg, true)
        .err()
        .map(|n| codec::notification_code(&n))
}

fn open_body(version: u8, asn: u16, hold: u16, id: [u8; 4]) -> Vec<u8> {
    let mut b = vec![version];
    b.extend(asn.to_be_bytes());
    b.extend(hold.to_be_bytes());
    b.extend(id);
    b.push(0); // no optional parameters
    b
}

fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = header((HEADER_LEN + body.len()) as u16, kind);
    m.extend(body);
    m
}

#[test]
fn a_good_keepalive_and_open_decode() {
    assert_eq!(verdict(&message(4, &[])), None);
    assert_eq!(
        verdict(&message(1, &open_body(4, 65001, 90, [1, 2, 3, 4]))),
        None
    );
}

#[test]
fn bad_marker_is_connection_not_synchronized() {
    let mut m = message(4, &[]);
    m[3] = 0;
    assert_eq!(verdict(&m), Some((1, 1)));
}

#[test]
fn bad_lengths_are_bad_message_length() {
    assert_eq!(verdict(&header(18, 4)), Some((1, 2)));
    assert_eq!(verdict(&header(4097, 2)), Some((1, 2)));
    // A KEEPALIVE with a body.
    assert_eq!(verdict(&message(4, &[0])), Some((1, 2)));
}

#[test]
fn unknown_type_is_bad_message_type() {
    assert_eq!(verdict(&message(9, &[])), Some((1, 3)));
}

#[test]
fn open_errors() {
    assert_eq!(
        verdict(&message(1, &open_body(3, 65001, 90, [1, 2, 3, 4]))),
        Some((2, 1))
    );
    assert_eq!(
        verdict(&message(1, &open_body(4, 65001, 1, [1, 2, 3, 4]))),
        Some((2, 6))
    );
    // A truncated OPEN.
    assert_eq!(verdict(&message(1, &[4, 0xfd])).map(|c| c.0), Some(2));
}

fn update(withdrawn: &[u8], attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend((withdrawn.len() as u16).to_be_bytes());
    b.extend(withdrawn);
    b.extend((attrs.len() as u16).to_be_bytes());
    b.extend(attrs);
    b.extend(nlri);
    message(2, &b)
}

#[test]
fn update_errors() {
    // Attribute list length longer than the message: malformed list.
    let mut m = update(&[], &[], &[]);
    let at = HEADER_LEN + 2;
    m[at..at + 2].copy_from_slice(&50u16.to_be_bytes());
    assert_eq!(verdict(&m), Some((3, 1)));
    // ORIGIN with an undefined value (7): invalid ORIGIN attribute.
    let origin = [0x40, 1, 1, 7];
    assert_eq!(verdict(&update(&[], &origin, &[])), Some((3, 6)));
    // An attribute whose length runs past the list: attribute length error
    // or malformed list, both UPDATE errors.
    let bad = [0x40, 1, 9, 0];
    assert_eq!(verdict(&update(&[], &bad, &[])).map(|c| c.0), Some(3));
    // ORIGIN flagged optional: attribute flags error.
    let flags = [0xc0, 1, 1, 0];
    assert_eq!(verdict(&update(&[], &flags, &[])), Some((3, 4)));
}

fn attrs(nh: IpAddr) -> PathAttrs {
    PathAttrs {
        origin: Origin::Egp,
        as_path: vec![AsSegment {
            set: false,
            asns: vec![65010, 4_200_000_000, 65020],
        }],
        next_hop: Some(nh),
        med: Some(50),
        local_pref: Some(200),
        atomic_aggregate: false,
        communities: vec![0xfde8_0001],
        large_communities: vec![LargeCommunity::new(4_200_000_000, 1, 2)],
        originator_id: Some(Ipv4Addr::new(1, 1, 1, 1)),
        cluster_list: vec![Ipv4Addr::new(2, 2, 2, 2)],
        other: vec![],
    }
}

fn roundtrip(msg: &BgpMessage, asn4: bool) -> codec::ParsedUpdate {
    let bytes = codec::encode(msg);
    match codec::decode(&bytes, asn4).expect("decodes") {
        BgpMessage::Update(u) => codec::parse_update(&u).expect("valid UPDATE"),
        other => panic!("not an UPDATE: {other:?}"),
    }
}

#[test]
fn ipv4_and_ipv6_announcements_round_trip() {
    let p4: Vec<IpNet> = vec![
        "10.1.0.0/26".parse().unwrap(),
        "10.1.0.64/26".parse().unwrap(),
    ];
    let a = attrs(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
    let opts = EncodeOptions {
        asn4: true,
        ibgp: true,
    };
    let msgs = codec::announce(&p4, &a, opts);
    assert_eq!(msgs.len(), 1);
    let u = roundtrip(&msgs[0], true);
    assert_eq!(u.announced, p4);
    assert_eq!(u.attrs.as_ref(), Some(&a));

    let p6: Vec<IpNet> = vec!["fd00:1::/64".parse().unwrap()];
    let a6 = attrs(IpAddr::V6("fd00::1".parse::<Ipv6Addr>().unwrap()));
    let u = roundtrip(&codec::announce(&p6, &a6, opts)[0], true);
    assert_eq!(u.announced, p6);
    assert_eq!(u.attrs.as_ref(), Some(&a6));

    let both: Vec<IpNet> = p4.iter().chain(&p6).copied().collect();
    let msgs = codec::withdraw(&both);
    assert_eq!(msgs.len(), 2);
    assert_eq!(roundtrip(&msgs[0], true).withdrawn, p4);
    assert_eq!(roundtrip(&msgs[1], true).withdrawn, p6);
}

#[test]
fn two_octet_session_carries_as_trans_and_as4_path() {
    let a = attrs(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
    let p: Vec<IpNet> = vec!["10.2.0.0/24".parse().unwrap()];
    let opts = EncodeOptions {
        asn4: false,
        ibgp: false,
    };
    let msg = &codec::announce(&p, &a, opts)[0];
    let BgpMessage::Update(raw) = codec::decode(&codec::encode(msg), false).unwrap() else {
        panic!()
    };
    // The 2-octet AS_PATH has AS_TRANS where the 4-octet number was.
    let as2: Vec<u32> = raw
        .path_attributes()
        .iter()
        .find_map(|pa| match pa.value() {
            netgauze_bgp_pkt::path_attribute::PathAttributeValue::AsPath(p) => {
                Some(Vec::<u32>::from(p.clone()))
            }
            _ => None,
        })
        .unwrap();
    assert_eq!(as2, vec![65010, 23456, 65020]);
    // ...and the receiver rebuilds the real path from AS4_PATH.
    let u = codec::parse_update(&raw).unwrap();
    assert_eq!(u.attrs.unwrap().as_path, a.as_path);
}

#[test]
fn large_tables_are_split_into_legal_messages() {
    let p: Vec<IpNet> = (0..2000u32)
        .map(|i| {
            IpNet::V4(ipnet::Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + (i << 8)), 24).unwrap())
        })
        .collect();
    let a = attrs(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
    let msgs = codec::announce(
        &p,
        &a,
        EncodeOptions {
            asn4: true,
            ibgp: true,
        },
    );
    let mut seen = Vec::new();
    for m in &msgs {
        let bytes = codec::encode(m);
        assert!(bytes.len() <= 4096, "{} bytes", bytes.len());
        seen.extend(roundtrip(m, true).announced);
    }
    assert_eq!(seen, p);
}

#[test]
fn end_of_rib_markers_round_trip() {
    for afi in [Afi::Ipv4, Afi::Ipv6] {
        assert_eq!(
            roundtrip(&codec::end_of_rib(afi), true).end_of_rib,
            Some(afi)
        );
    }
}

#[test]
fn optional_transitive_attributes_are_passed_on_unknown_ones_marked_partial() {
    use netgauze_bgp_pkt::community::{ExtendedCommunity, TransitiveTwoOctetExtendedCommunity};
    use netgauze_bgp_pkt::path_attribute::{
        ExtendedCommunities, PathAttribute, PathAttributeValue, UnknownAttribute,
    };
    let large = PathAttribute::from(
        true,
        true,
        false,
        false,
        PathAttributeValue::ExtendedCommunities(ExtendedCommunities::new(vec![
            ExtendedCommunity::TransitiveTwoOctet(
                TransitiveTwoOctetExtendedCommunity::RouteTarget {
                    global_admin: 65000,
                    local_admin: 7,
                },
            ),
        ])),
    )
    .unwrap();
    let unknown = PathAttribute::from(
        true,
        true,
        false,
        false,
        PathAttributeValue::UnknownAttribute(UnknownAttribute::new(250, vec![9, 9])),
    )
    .unwrap();
    // Optional non-transitive unknown: dropped.
    let local_only = PathAttribute::from(
        true,
        false,
        false,
        false,
        PathAttributeValue::UnknownAttribute(UnknownAttribute::new(251, vec![7])),
    )
    .unwrap();
    let mut pa: Vec<PathAttribute> = Vec::new();
    let base = attrs(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
    let p: Vec<IpNet> = vec!["10.3.0.0/24".parse().unwrap()];
    let BgpMessage::Update(u) = &codec::announce(
        &p,
        &base,
        EncodeOptions {
            asn4: true,
            ibgp: true,
        },
    )[0] else {
        panic!()
    };
    pa.extend(u.path_attributes().iter().cloned());
    pa.extend([large.clone(), unknown, local_only]);
    let msg = BgpMessage::Update(netgauze_bgp_pkt::update::BgpUpdateMessage::new(
        vec![],
        pa,
        u.nlri().to_vec(),
    ));
    let got = roundtrip(&msg, true).attrs.unwrap();
    assert_eq!(got.other.len(), 2);
    assert_eq!(got.other[0].attr(), &large);
    assert!(got.other[1].attr().partial());
    // ...and they go out again.
    let again = roundtrip(
        &codec::announce(
            &p,
            &got,
            EncodeOptions {
                asn4: true,
                ibgp: true,
            },
        )[0],
        true,
    );
    assert_eq!(again.attrs.unwrap().other, got.other);
}

#[test]
fn announcements_without_mandatory_attributes_are_missing_well_known_attribute() {
    let origin = [0x40, 1, 1, 0];
    let as_path = [0x40, 2, 0];
    let next_hop = [0x40, 3, 4, 10, 0, 0, 2];
    let nlri = [24, 10, 1, 0];
    let cases: [(Vec<u8>, u8); 3] = [
        ([&as_path[..], &next_hop].concat(), 1),
        ([&origin[..], &next_hop].concat(), 2),
        ([&origin[..], &as_path].concat(), 3),
    ];
    for (attrs, missing) in cases {
        let m = update(&[], &attrs, &nlri);
        let BgpMessage::Update(u) = codec::decode(&m, true).unwrap() else {
            panic!()
        };
        let n = codec::parse_update(&u).unwrap_err();
        assert_eq!(codec::notification_code(&n), (3, 3));
        let bytes = codec::encode(&BgpMessage::Notification(n));
        assert_eq!(bytes[21], missing, "data names the missing attribute");
    }
    // All three present: fine. A pure withdrawal needs none.
    let all = [&origin[..], &as_path, &next_hop].concat();
    let BgpMessage::Update(u) = codec::decode(&update(&[], &all, &nlri), true).unwrap() else {
        panic!()
    };
    assert_eq!(codec::parse_update(&u).unwrap().announced.len(), 1);
    let BgpMessage::Update(u) = codec::decode(&update(&nlri, &[], &[]), true).unwrap() else {
        panic!()
    };
    assert_eq!(codec::parse_update(&u).unwrap().withdrawn.len(), 1);
}

/// Found by fuzz/fuzz_targets/bgp_message.rs (its corpus keeps the input):
/// NLRI whose bits past the prefix length are set. RFC 4271 §4.3 calls
/// them irrelevant; the speaker must keep the prefix the kernel takes and
/// that it announces again (netgauze writes those bits as zeros), not one
/// no later withdrawal or re-announcement matches.
#[test]
fn prefixes_with_bits_past_their_length_are_read_as_their_network() {
    let attrs = attrs_v4();
    // Withdrawn 192.0.2.129/25, announced 10.1.2.0/22 (bits past /22 set).
    let m = update(&[25, 192, 0, 2, 129], &attrs, &[22, 10, 1, 2]);
    let Ok(BgpMessage::Update(u)) = codec::decode(&m, true) else {
        panic!("{m:?} does not decode");
    };
    let p = codec::parse_update(&u).unwrap();
    assert_eq!(p.announced, ["10.1.0.0/22".parse::<IpNet>().unwrap()]);
    assert_eq!(p.withdrawn, ["192.0.2.128/25".parse::<IpNet>().unwrap()]);

    // IPv6 in MP_REACH_NLRI: 2020:10d::/29 is 2020:108::/29.
    let mut mp = vec![0, 2, 1, 16];
    mp.extend("fd00:1::2".parse::<Ipv6Addr>().unwrap().octets());
    mp.extend([0, 29, 0x20, 0x20, 0x01, 0x0d]);
    let mut attrs = vec![0x40, 1, 1, 0, 0x40, 2, 0, 0x90, 14];
    attrs.extend((mp.len() as u16).to_be_bytes());
    attrs.extend(mp);
    let Ok(BgpMessage::Update(u)) = codec::decode(&update(&[], &attrs, &[]), true) else {
        panic!("MP_REACH_NLRI does not decode");
    };
    let p = codec::parse_update(&u).unwrap();
    assert_eq!(p.announced, ["2020:108::/29".parse::<IpNet>().unwrap()]);

    // 249.0.0.0/3 is sent as a unicast address, but it is 224.0.0.0/3, a
    // prefix starting with multicast: not taken (nor announced on).
    let m = update(&[], &attrs_v4(), &[3, 249, 16, 10, 1]);
    let Ok(BgpMessage::Update(u)) = codec::decode(&m, true) else {
        panic!("{m:?} does not decode");
    };
    let p = codec::parse_update(&u).unwrap();
    assert_eq!(p.announced, ["10.1.0.0/16".parse::<IpNet>().unwrap()]);
}

/// ORIGIN, an empty AS_PATH, NEXT_HOP 10.0.0.2.
fn attrs_v4() -> Vec<u8> {
    vec![0x40, 1, 1, 0, 0x40, 2, 0, 0x40, 3, 4, 10, 0, 0, 2]
}
