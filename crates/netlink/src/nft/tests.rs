//! Encoding tests against what `nft` itself sends (no root needed).

use super::*;
use crate::handle::NLMSGERR_ATTR_MSG;
use rtnetlink::packet_core::{NLM_F_ACK_TLVS, NLM_F_CAPPED};

/// `strace -e write=3 nft -f spoof.nft` (nft 1.0.6, libnftnl 1.2.4) for:
///
/// ```text
/// add table bridge plexus_bridge
/// add chain bridge plexus_bridge spoof-0123456789abcdef { type filter hook prerouting priority -300; policy accept; comment "plexus-bridge net: mynet, if: eth0, id: abc123"; }
/// flush chain bridge plexus_bridge spoof-0123456789abcdef
/// add rule bridge plexus_bridge spoof-0123456789abcdef iifname "veth01234567" ether saddr != 02:00:00:00:00:01 drop comment "plexus-bridge net: mynet, if: eth0, id: abc123"
/// delete chain bridge plexus_bridge spoof-0123456789abcdef
/// ```
const NFT_SPOOF_BATCH: &str = "\
140000001000010000000000000000000000000a30000000000a010001000000000000000700000012000100706c6578\
75735f6272696467650000000800020000000000a4000000030a010402000000000000000700000012000100706c6578\
75735f6272696467650000001b00030073706f6f662d3031323334353637383961626364656600000b00070066696c74\
65720000080005000000000114000480080001000000000008000200fffffed435000c00002f706c657875732d627269\
646765206e65743a206d796e65742c2069663a20657468302c2069643a206162633132330000000044000000080a0100\
03000000000000000700000012000100706c657875735f6272696467650000001b00020073706f6f662d303132333435\
36373839616263646566000070010000060a010c04000000000000000700000012000100706c657875735f6272696467\
650000001b00020073706f6f662d303132333435363738396162636465660000f400048024000180090001006d657461\
0000000014000280080002000000000608000100000000013800018008000100636d70002c0002800800010000000001\
0800020000000000180003801400010076657468303132333435363700000000340001800c0001007061796c6f616400\
2400028008000100000000010800020000000000080003000000000608000400000000063000018008000100636d7000\
2400028008000100000000010800020000000001100003800a0001000200000000010000300001800e000100696d6d65\
64696174650000001c0002800800010000000000100002800c000280080001000000000035000700002f706c65787573\
2d627269646765206e65743a206d796e65742c2069663a20657468302c2069643a206162633132330000000044000000\
050a010005000000000000000700000012000100706c657875735f6272696467650000001b00030073706f6f662d3031\
32333435363738396162636465660000140000001100010006000000000000000000000a";

pub(crate) fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

const TABLE: &str = "plexus_bridge";
const CHAIN: &str = "spoof-0123456789abcdef";
const COMMENT: &str = "plexus-bridge net: mynet, if: eth0, id: abc123";

fn spoof_batch() -> Batch {
    let mut ifname = [0u8; 16];
    ifname[..12].copy_from_slice(b"veth01234567");
    let base = BaseChain {
        chain_type: ChainType::Filter,
        hook: Hook::Prerouting,
        priority: priority::BRIDGE_DSTNAT,
        policy: Policy::Accept,
    };
    let mut b = Batch::new();
    b.add_table(Family::Bridge, TABLE)
        .add_chain(Family::Bridge, TABLE, CHAIN, Some(&base), Some(COMMENT))
        .flush_chain(Family::Bridge, TABLE, CHAIN)
        .add_rule(
            Family::Bridge,
            TABLE,
            CHAIN,
            &[
                Expr::Meta(MetaKey::IifName),
                Expr::cmp(CmpOp::Eq, &ifname),
                Expr::Payload {
                    base: PayloadBase::LinkLayer,
                    offset: 6,
                    len: 6,
                },
                Expr::cmp(CmpOp::Neq, &[2, 0, 0, 0, 0, 1]),
                Expr::Verdict(Verdict::Drop),
            ],
            Some(COMMENT),
        )
        .delete_chain(Family::Bridge, TABLE, CHAIN);
    b
}

/// (type, flags, seq, payload) of every message.
fn split(data: &[u8]) -> Vec<(u16, u16, u32, Vec<u8>)> {
    let msgs: Vec<_> = wire::messages(data)
        .map(|m| (m.ty, m.flags, m.seq, m.payload.to_vec()))
        .collect();
    let total: usize = msgs.iter().map(|m| wire::align4(16 + m.3.len())).sum();
    assert_eq!(total, data.len(), "trailing bytes");
    msgs
}

#[test]
fn batch_matches_nft_byte_for_byte() {
    let ours = split(&spoof_batch().encode(0));
    let nft = split(&hex(NFT_SPOOF_BATCH));
    assert_eq!(ours.len(), nft.len());
    assert_eq!(ours.len(), 7);
    for (i, (o, n)) in ours.iter().zip(&nft).enumerate() {
        assert_eq!((o.0, o.2), (n.0, n.2), "message {i}: type/seq");
        assert_eq!(o.3, n.3, "message {i}: payload");
        // Same flags except that we ask for an ACK on every change (to
        // know which one failed) and say CREATE for tables too.
        let inner = (1..6).contains(&i);
        let extra = if inner { NLM_F_ACK } else { 0 } | if i == 1 { NLM_F_CREATE } else { 0 };
        assert_eq!(o.1, n.1 | extra, "message {i}: flags");
    }
    // The markers: BATCH_BEGIN/END with res_id NFNL_SUBSYS_NFTABLES (big endian).
    assert_eq!(ours[0].0, NFNL_MSG_BATCH_BEGIN);
    assert_eq!(ours[0].3, [0, 0, 0, 10]);
    assert_eq!(ours[6].0, NFNL_MSG_BATCH_END);
}

#[test]
fn sequence_numbers_follow_the_first() {
    let b = spoof_batch();
    let seqs: Vec<u32> = split(&b.encode(u32::MAX - 1)).iter().map(|m| m.2).collect();
    assert_eq!(seqs, [u32::MAX - 1, u32::MAX, 0, 1, 2, 3, 4]);
    assert_eq!(b.len(), 5);
}

#[test]
fn bad_comment_is_reported_by_commit() {
    let mut b = Batch::new();
    b.add_rule(
        Family::Inet,
        "t",
        "c",
        &[Expr::Masq],
        Some(&"x".repeat(200)),
    );
    assert!(!b.is_empty());
    // Fails before any socket use: the check needs no root.
    let Some((what, value, reason)) = &b.invalid else {
        panic!("not flagged")
    };
    assert_eq!(*what, "nftables comment");
    assert_eq!(value.len(), 200);
    assert_eq!(reason, "longer than 128 bytes");
    assert!(Batch::new().is_empty());
}

#[test]
fn errors_name_the_failing_message() {
    // An NLMSG_ERROR answering message 2 with ENOENT and an ext-ack string.
    let mut payload = (-libc::ENOENT).to_ne_bytes().to_vec();
    payload.extend_from_slice(&[0; 16]); // the request's header (capped ack)
    wire::put_str(&mut payload, NLMSGERR_ATTR_MSG, "no such chain");
    let m = wire::RawMsg {
        ty: NLMSG_ERROR,
        flags: NLM_F_ACK_TLVS | NLM_F_CAPPED,
        seq: 2,
        payload: &payload,
    };
    assert_eq!(
        parse_error(&m),
        (libc::ENOENT, Some("no such chain".to_string()))
    );
    // Not capped: the whole request (here 24 bytes) comes before the TLVs.
    let mut payload = (-libc::EINVAL).to_ne_bytes().to_vec();
    payload.extend_from_slice(&24u32.to_ne_bytes());
    payload.extend_from_slice(&[0; 20]);
    wire::put_str(&mut payload, NLMSGERR_ATTR_MSG, "bad");
    let m = wire::RawMsg {
        ty: NLMSG_ERROR,
        flags: NLM_F_ACK_TLVS,
        seq: 2,
        payload: &payload,
    };
    assert_eq!(parse_error(&m), (libc::EINVAL, Some("bad".to_string())));
    let ack = 0i32.to_ne_bytes();
    let m = wire::RawMsg {
        ty: NLMSG_ERROR,
        flags: 0,
        seq: 2,
        payload: &ack,
    };
    assert_eq!(parse_error(&m), (0, None));
}

#[test]
fn chain_dump_entries() {
    let mut p = vec![Family::Inet as u8, 0, 0, 0];
    wire::put_str(&mut p, NFTA_CHAIN_TABLE, "plexus_bridge");
    wire::put_str(&mut p, NFTA_CHAIN_NAME, "masq-1");
    wire::put(&mut p, NFTA_CHAIN_USERDATA, &encode_comment("hi").unwrap());
    assert_eq!(
        parse_chain(&p, "plexus_bridge"),
        Some(ChainInfo {
            name: "masq-1".into(),
            comment: Some("hi".into())
        })
    );
    assert_eq!(parse_chain(&p, "other"), None);
}
