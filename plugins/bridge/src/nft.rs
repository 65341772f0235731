//! nftables rules for ipMasq and macspoofchk, sent over NETLINK_NETFILTER
//! ([`plexus_netlink::nft`]) in the current (node) network namespace.
//!
//! Every attachment gets its own *base* chains, named from a hash of
//! network, interface and container ID, in Plexus's own tables
//! (`inet plexus_bridge` for masquerading, `bridge plexus_bridge` for the MAC
//! spoof check). Nothing else references those chains, so DEL removes them
//! with one fixed batch (`add; flush; delete`) that needs neither the pod
//! netns nor its addresses, succeeds when they are already gone, and never
//! has to list the ruleset first. Chains and rules carry a comment naming
//! the network, interface and container ID so an operator can find them.
//!
//! The batches are what `nft -f` sends for the equivalent script (the unit
//! tests compare the bytes), so `nft list ruleset` prints the same rules as
//! when Plexus ran the `nft` binary, without its fork+exec and memory.

use ipnet::IpNet;
pub use plexus_netlink::nft::Batch;
use plexus_netlink::nft::{
    self, BaseChain, ChainType, CmpOp, Expr, Family, Hook, IpVersion, Policy, Rule,
};
use plexus_netlink::MacAddr;
use sha2::{Digest, Sha256};

pub use plexus_netlink::Error as NftError;

pub const TABLE: &str = "plexus_bridge";
/// nftables comments hold at most 128 bytes.
const COMMENT_MAX: usize = nft::COMMENT_MAX;
const COMMENT_PREFIX: &str = "plexus-bridge";

/// `type nat hook postrouting priority srcnat; policy accept;`
const MASQ_CHAIN: BaseChain = BaseChain::SRCNAT;

/// `type filter hook prerouting priority -300; policy accept;`
const SPOOF_CHAIN: BaseChain = BaseChain {
    chain_type: ChainType::Filter,
    hook: Hook::Prerouting,
    priority: nft::priority::BRIDGE_DSTNAT,
    policy: Policy::Accept,
};

/// One attachment's identity.
#[derive(Debug, Clone, Copy)]
pub struct Attachment<'a> {
    pub network: &'a str,
    pub ifname: &'a str,
    pub container_id: &'a str,
}

impl Attachment<'_> {
    fn hash(&self) -> String {
        let mut h = Sha256::new();
        for part in [self.network, self.ifname, self.container_id] {
            h.update(part.as_bytes());
            h.update([0u8]);
        }
        h.finalize()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    pub fn masq_chain(&self) -> String {
        format!("masq-{}", self.hash())
    }

    pub fn spoof_chain(&self) -> String {
        format!("spoof-{}", self.hash())
    }

    /// `plexus-bridge net: NET, if: IF, id: CONTAINERID` (truncated to fit).
    /// Quotes, backslashes and newlines are dropped, as they were when the
    /// comment went through an `nft` script, so comments stay the same. A
    /// network name too long to leave room for the rest is shortened by
    /// [`net_label`], so the network part is always whole.
    pub fn comment(&self) -> String {
        let clean = |s: &str| s.replace(['"', '\\', '\n', '\0'], "");
        let mut c = format!(
            "{COMMENT_PREFIX} net: {}, if: {}, id: {}",
            net_label(self.network),
            clean(self.ifname),
            clean(self.container_id)
        );
        if c.len() > COMMENT_MAX {
            let mut end = COMMENT_MAX;
            while !c.is_char_boundary(end) {
                end -= 1;
            }
            c.truncate(end);
        }
        c
    }
}

/// Network names up to this length appear whole in chain comments.
const NET_LABEL_MAX: usize = 64;

/// The network as chain comments name it: the name itself, or for a longer
/// one its first 40 characters, `~` and a hash of the whole name (`~` never
/// appears in a network name, so the two forms cannot collide). It always
/// fits in a comment, so GC can tell a chain's network even when the
/// container ID at the end was cut off.
pub fn net_label(network: &str) -> String {
    if network.len() <= NET_LABEL_MAX && !network.contains(['"', '\\', '\n', '\0']) {
        return network.to_string();
    }
    let head: String = network
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(40)
        .collect();
    let digest = Sha256::digest(network.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{head}~{hex}")
}

/// The network part of one of our chain comments.
fn comment_network(c: &str) -> Option<&str> {
    let rest = c.strip_prefix(COMMENT_PREFIX)?.strip_prefix(" net: ")?;
    Some(rest.split_once(", if: ")?.0)
}

/// `add table; add chain { ... comment }; flush chain` for one chain.
fn declare(b: &mut Batch, family: Family, chain: &str, base: &BaseChain, comment: &str) {
    b.add_table(family, TABLE)
        .add_chain(family, TABLE, chain, Some(base), Some(comment))
        .flush_chain(family, TABLE, chain);
}

/// `ip saddr A ip daddr != SUBNET ip daddr != 224.0.0.0/4 masquerade`
/// (`ip6 ... ff00::/8` for IPv6), preceded by the `meta nfproto ipv4|ipv6`
/// that `nft` adds in the inet family.
fn masq_exprs(ip: &IpNet) -> Vec<Expr> {
    let v = IpVersion::of(ip);
    Rule::ip(v)
        .saddr(&IpNet::from(ip.addr()), CmpOp::Eq)
        .daddr(ip, CmpOp::Neq)
        .daddr_not_multicast(v)
        .masquerade()
}

/// Masquerade traffic from each of `ips` to anything outside its subnet
/// (multicast excepted), like the reference's nftables backend.
pub fn add_masq(b: &mut Batch, a: &Attachment, ips: &[IpNet]) {
    let (chain, comment) = (a.masq_chain(), a.comment());
    declare(b, Family::Inet, &chain, &MASQ_CHAIN, &comment);
    for ip in ips {
        b.add_rule(Family::Inet, TABLE, &chain, &masq_exprs(ip), Some(&comment));
    }
}

/// Drop frames entering from `host_veth` whose source MAC is not `mac`:
/// `iifname "HOSTVETH" ether saddr != MAC drop`.
pub fn add_spoof(b: &mut Batch, a: &Attachment, host_veth: &str, mac: MacAddr) {
    let (chain, comment) = (a.spoof_chain(), a.comment());
    declare(b, Family::Bridge, &chain, &SPOOF_CHAIN, &comment);
    let exprs = Rule::new()
        .iifname(host_veth, CmpOp::Eq)
        .ether_saddr(mac.octets(), CmpOp::Neq)
        .drop();
    b.add_rule(Family::Bridge, TABLE, &chain, &exprs, Some(&comment));
}

/// Removes the attachment's chains; succeeds when they do not exist.
pub fn teardown(a: &Attachment, masq: bool, spoof: bool) -> Batch {
    let mut b = Batch::new();
    let comment = a.comment();
    if masq {
        let chain = a.masq_chain();
        declare(&mut b, Family::Inet, &chain, &MASQ_CHAIN, &comment);
        b.delete_chain(Family::Inet, TABLE, &chain);
    }
    if spoof {
        let chain = a.spoof_chain();
        declare(&mut b, Family::Bridge, &chain, &SPOOF_CHAIN, &comment);
        b.delete_chain(Family::Bridge, TABLE, &chain);
    }
    b
}

/// Applies a batch atomically in the calling thread's network namespace;
/// an empty batch does nothing (and opens no socket).
pub fn apply(b: &Batch) -> Result<(), NftError> {
    if b.is_empty() {
        return Ok(());
    }
    let sock = nft::Socket::open()?;
    b.commit(&sock)
}

/// Deletes the chains in our tables that belong to `network` but to none
/// of the `valid` attachments (container ID, ifname). A kernel without
/// nf_tables cannot hold any: nothing to do.
pub fn gc(network: &str, valid: &[(String, String)]) -> Result<(), NftError> {
    match collect(network, valid) {
        Err(e) if e.is_not_supported() => {
            tracing::debug!("{e}: no nftables chains to collect");
            Ok(())
        }
        r => r,
    }
}

/// A chain is this network's when its comment names the network; it is
/// stale when its name is none of the valid attachments' chain names (the
/// name is a hash of network, ifname and container ID, so a comment cut
/// short by a long container ID does not matter).
fn collect(network: &str, valid: &[(String, String)]) -> Result<(), NftError> {
    let label = net_label(network);
    let keep: std::collections::HashSet<String> = valid
        .iter()
        .flat_map(|(id, ifname)| {
            let a = Attachment {
                network,
                ifname,
                container_id: id,
            };
            [a.masq_chain(), a.spoof_chain()]
        })
        .collect();
    let sock = nft::Socket::open()?;
    let mut b = Batch::new();
    for family in [Family::Inet, Family::Bridge] {
        for chain in nft::list_chains(&sock, family, TABLE)? {
            let ours = chain.comment.as_deref().and_then(comment_network) == Some(label.as_str());
            if !ours || keep.contains(&chain.name) {
                continue;
            }
            tracing::debug!(chain = chain.name, %family, "removing stale chain");
            b.flush_chain(family, TABLE, &chain.name)
                .delete_chain(family, TABLE, &chain.name);
        }
    }
    b.commit(&sock)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Attachment = Attachment {
        network: "mynet",
        ifname: "eth0",
        container_id: "abc123",
    };

    #[test]
    fn names_are_stable_and_distinct() {
        assert_eq!(A.masq_chain(), A.masq_chain());
        assert_eq!(A.masq_chain().len(), "masq-".len() + 16);
        let b = Attachment {
            container_id: "abc124",
            ..A
        };
        assert_ne!(A.masq_chain(), b.masq_chain());
        assert_eq!(
            A.comment(),
            "plexus-bridge net: mynet, if: eth0, id: abc123"
        );
        assert_eq!(comment_network(&A.comment()), Some("mynet"));
        let long = "x".repeat(300);
        let c = Attachment {
            container_id: &long,
            ..A
        };
        assert_eq!(c.comment().len(), COMMENT_MAX);
        assert_eq!(comment_network(&c.comment()), Some("mynet"));
    }

    #[test]
    fn long_network_names_stay_whole_in_comments() {
        let id = "f".repeat(64);
        let name64 = "n".repeat(64);
        let name200 = "n".repeat(200);
        let name201 = "n".repeat(201);
        for net in [name64.as_str(), name200.as_str(), name201.as_str()] {
            let a = Attachment {
                network: net,
                ifname: "eth0",
                container_id: &id,
            };
            assert!(a.comment().len() <= COMMENT_MAX);
            assert_eq!(comment_network(&a.comment()), Some(net_label(net).as_str()));
        }
        assert_eq!(net_label(&name64), name64);
        assert_ne!(net_label(&name200), net_label(&name201));
        assert!(net_label(&name200).len() <= NET_LABEL_MAX);
    }

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Clears the NLM_F_ACK and NLM_F_CREATE flags of every message: `nft`
    /// 1.0.6 asks for neither on a table, nor for ACKs at all.
    fn without_ack_create(mut data: Vec<u8>) -> Vec<u8> {
        let mut off = 0;
        while off + 16 <= data.len() {
            let len = u32::from_ne_bytes(data[off..off + 4].try_into().unwrap()) as usize;
            let ty = u16::from_ne_bytes([data[off + 4], data[off + 5]]);
            let mut flags = u16::from_ne_bytes([data[off + 6], data[off + 7]]);
            flags &= !0x4;
            if ty == 10 << 8 {
                flags &= !0x400; // NEWTABLE
            }
            data[off + 6..off + 8].copy_from_slice(&flags.to_ne_bytes());
            off += (len + 3) & !3;
        }
        assert_eq!(off, data.len());
        data
    }

    /// `strace -e write=3 nft -f -` (nft 1.0.6, libnftnl 1.2.4) for the
    /// script the `nft`-based plugin wrote for
    /// `masq_script(&A, &["10.1.0.5/24", "fd00::5/64"])`:
    ///
    /// ```text
    /// add table inet plexus_bridge
    /// add chain inet plexus_bridge masq-… { type nat hook postrouting priority srcnat; policy accept; comment "…"; }
    /// flush chain inet plexus_bridge masq-…
    /// add rule inet plexus_bridge masq-… ip saddr 10.1.0.5 ip daddr != 10.1.0.0/24 ip daddr != 224.0.0.0/4 masquerade comment "…"
    /// add rule inet plexus_bridge masq-… ip6 saddr fd00::5 ip6 daddr != fd00::/64 ip6 daddr != ff00::/8 masquerade comment "…"
    /// ```
    const NFT_MASQ_BATCH: &str = "\
    140000001000010000000000000000000000000a30000000000a010001000000000000000100000012000100706c6578\
    75735f6272696467650000000800020000000000a0000000030a010402000000000000000100000012000100706c6578\
    75735f6272696467650000001a0003006d6173712d36653966623963363465373237313438000000080007006e617400\
    0800050000000001140004800800010000000004080002000000006435000c00002f706c657875732d62726964676520\
    6e65743a206d796e65742c2069663a20657468302c2069643a206162633132330000000044000000080a010003000000\
    000000000100000012000100706c657875735f6272696467650000001a0002006d6173712d3665396662396336346537\
    323731343800000048020000060a010c04000000000000000100000012000100706c657875735f627269646765000000\
    1a0002006d6173712d36653966623963363465373237313438000000cc01048024000180090001006d65746100000000\
    14000280080002000000000f08000100000000012c00018008000100636d700020000280080001000000000108000200\
    000000000c0003800500010002000000340001800c0001007061796c6f61640024000280080001000000000108000200\
    00000001080003000000000c08000400000000042c00018008000100636d700020000280080001000000000108000200\
    000000000c000380080001000a010005340001800c0001007061796c6f61640024000280080001000000000108000200\
    00000001080003000000001008000400000000032c00018008000100636d700020000280080001000000000108000200\
    000000010c000380070001000a010000340001800c0001007061796c6f61640024000280080001000000000108000200\
    0000000108000300000000100800040000000004440001800c0001006269747769736500340002800800010000000001\
    080002000000000108000300000000040c00048008000100f00000000c00058008000100000000002c00018008000100\
    636d700020000280080001000000000108000200000000010c00038008000100e000000014000180090001006d617371\
    000000000400028035000700002f706c657875732d627269646765206e65743a206d796e65742c2069663a2065746830\
    2c2069643a206162633132330000000014020000060a010c05000000000000000100000012000100706c657875735f62\
    72696467650000001a0002006d6173712d36653966623963363465373237313438000000980104802400018009000100\
    6d6574610000000014000280080002000000000f08000100000000012c00018008000100636d70002000028008000100\
    0000000108000200000000000c000380050001000a000000340001800c0001007061796c6f6164002400028008000100\
    000000010800020000000001080003000000000808000400000000103800018008000100636d70002c00028008000100\
    0000000108000200000000001800038014000100fd000000000000000000000000000005340001800c0001007061796c\
    6f6164002400028008000100000000010800020000000001080003000000001808000400000000083000018008000100\
    636d70002400028008000100000000010800020000000001100003800c000100fd00000000000000340001800c000100\
    7061796c6f6164002400028008000100000000010800020000000001080003000000001808000400000000012c000180\
    08000100636d700020000280080001000000000108000200000000010c00038005000100ff0000001400018009000100\
    6d617371000000000400028035000700002f706c657875732d627269646765206e65743a206d796e65742c2069663a20\
    657468302c2069643a2061626331323300000000140000001100010006000000000000000000000a";

    #[test]
    fn masq_batch_is_what_nft_sends() {
        let mut b = Batch::new();
        add_masq(
            &mut b,
            &A,
            &[
                "10.1.0.5/24".parse().unwrap(),
                "fd00::5/64".parse().unwrap(),
            ],
        );
        assert_eq!(
            without_ack_create(b.encode(0)),
            hex(NFT_MASQ_BATCH),
            "masq batch differs from nft's"
        );
    }

    #[test]
    fn spoof_and_teardown_batches() {
        let mut b = Batch::new();
        add_spoof(&mut b, &A, "veth01234567", MacAddr([2, 0, 0, 0, 0, 1]));
        assert_eq!(b.len(), 4);
        let bytes = b.encode(0);
        let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        assert!(has(b"veth01234567\0\0\0\0"));
        assert!(has(A.spoof_chain().as_bytes()));
        assert!(has(b"plexus-bridge net: mynet, if: eth0, id: abc123\0"));
        // add table, add chain, flush, delete: twice.
        assert_eq!(teardown(&A, true, true).len(), 8);
        assert_eq!(teardown(&A, false, true).len(), 4);
        assert!(teardown(&A, false, false).is_empty());
        assert!(apply(&Batch::new()).is_ok());
    }

    #[test]
    fn host_address_and_odd_prefixes() {
        // A /32 pod address: `ip daddr != 10.1.0.5`, a plain compare.
        let e = masq_exprs(&"10.1.0.5/32".parse().unwrap());
        assert_eq!(e.len(), 10);
        assert_eq!(e[5], Expr::cmp(CmpOp::Neq, &[10, 1, 0, 5]));
        // /20: a masked full load, like nft.
        let e = masq_exprs(&"10.1.31.5/20".parse().unwrap());
        assert!(matches!(&e[5], Expr::Bitwise { mask, .. } if mask == &[255, 255, 240, 0]));
        assert_eq!(e[6], Expr::cmp(CmpOp::Neq, &[10, 1, 16, 0]));
    }
}
