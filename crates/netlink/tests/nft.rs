//! plexus_netlink::nft against the kernel, in a throwaway netns (root only):
//! commit, listing, error reporting and atomicity; `nft list` (when the
//! binary is installed) must read back what we wrote.

mod common;

use common::{root_or_skip, TestNs};
use plexus_netlink::nft::{
    self, list_chains, BaseChain, Batch, ChainType, CmpOp, Expr, Family, Hook, MetaKey,
    PayloadBase, Policy,
};

const T: &str = "plx_test";

fn nat_chain() -> BaseChain {
    BaseChain {
        chain_type: ChainType::Nat,
        hook: Hook::Postrouting,
        priority: nft::priority::SRCNAT,
        policy: Policy::Accept,
    }
}

fn nft_list(ns: &TestNs, family: &str) -> Option<String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.name, "nft", "list", "table", family, T])
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn commit_list_and_errors() {
    if !root_or_skip("commit_list_and_errors") {
        return;
    }
    let t = TestNs::new();
    t.ns.run(|| {
        let sock = nft::Socket::open().unwrap();
        // Nothing there yet: an empty list, not an error.
        assert!(list_chains(&sock, Family::Inet, T).unwrap().is_empty());

        let mut b = Batch::new();
        b.add_table(Family::Inet, T)
            .add_chain(Family::Inet, T, "masq", Some(&nat_chain()), Some("hello"))
            .add_chain(Family::Inet, T, "plain", None, None)
            .flush_chain(Family::Inet, T, "masq");
        let mut rule = vec![
            Expr::Meta(MetaKey::NfProto),
            Expr::cmp(CmpOp::Eq, &[2]),
            Expr::Payload {
                base: PayloadBase::Network,
                offset: 12,
                len: 4,
            },
            Expr::cmp(CmpOp::Eq, &[10, 1, 0, 5]),
        ];
        rule.extend(Expr::prefix_match(
            PayloadBase::Network,
            16,
            &[10, 1, 0, 0],
            24,
            CmpOp::Neq,
        ));
        rule.extend(Expr::prefix_match(
            PayloadBase::Network,
            16,
            &[224, 0, 0, 0],
            4,
            CmpOp::Neq,
        ));
        rule.push(Expr::Masq);
        b.add_rule(Family::Inet, T, "masq", &rule, Some("r1"));
        b.commit(&sock).unwrap();
        // Idempotent: the same batch again only adds a second rule.
        b.commit(&sock).unwrap();

        let mut chains = list_chains(&sock, Family::Inet, T).unwrap();
        chains.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(chains.len(), 2);
        assert_eq!(chains[0].name, "masq");
        assert_eq!(chains[0].comment.as_deref(), Some("hello"));
        assert_eq!(chains[1].name, "plain");
        assert_eq!(chains[1].comment, None);
        // Other families and tables are not mixed in.
        assert!(list_chains(&sock, Family::Bridge, T).unwrap().is_empty());
        assert!(list_chains(&sock, Family::Inet, "other")
            .unwrap()
            .is_empty());

        // The first refused message is named; nothing of the batch applies.
        let mut bad = Batch::new();
        bad.add_chain(Family::Inet, T, "extra", None, None)
            .delete_chain(Family::Inet, T, "missing");
        let e = bad.commit(&sock).unwrap_err();
        assert!(e.is_not_found(), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("delete chain inet plx_test missing (message 2 of 2)"),
            "{msg}"
        );
        assert!(!list_chains(&sock, Family::Inet, T)
            .unwrap()
            .iter()
            .any(|c| c.name == "extra"));

        // add + flush + delete: succeeds whether or not the chain exists.
        let mut del = Batch::new();
        del.add_table(Family::Inet, T)
            .add_chain(Family::Inet, T, "masq", Some(&nat_chain()), Some("hello"))
            .flush_chain(Family::Inet, T, "masq")
            .delete_chain(Family::Inet, T, "masq");
        del.commit(&sock).unwrap();
        del.commit(&sock).unwrap();
        let names: Vec<_> = list_chains(&sock, Family::Inet, T)
            .unwrap()
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(names, ["plain"]);
    })
    .unwrap();
    // Between the two commits `nft` saw what `nft -f` would have written;
    // here only the plain chain is left.
    if let Some(text) = nft_list(&t, "inet") {
        if !text.is_empty() {
            assert!(text.contains("chain plain {"), "{text}");
            assert!(!text.contains("masq"), "{text}");
        }
    }
}

#[test]
fn nft_reads_back_rules_and_comments() {
    if !root_or_skip("nft_reads_back_rules_and_comments") {
        return;
    }
    let t = TestNs::new();
    if nft_list(&t, "inet").is_none() {
        common::skip("no nft binary (apt-get install nftables)");
        return;
    }
    t.ns.run(|| {
        let sock = nft::Socket::open().unwrap();
        let mut ifname = [0u8; 16];
        ifname[..5].copy_from_slice(b"veth0");
        let spoof = BaseChain {
            chain_type: ChainType::Filter,
            hook: Hook::Prerouting,
            priority: nft::priority::BRIDGE_DSTNAT,
            policy: Policy::Accept,
        };
        let mut b = Batch::new();
        b.add_table(Family::Bridge, T)
            .add_chain(Family::Bridge, T, "spoof", Some(&spoof), Some("c1"))
            .add_rule(
                Family::Bridge,
                T,
                "spoof",
                &[
                    Expr::Meta(MetaKey::IifName),
                    Expr::cmp(CmpOp::Eq, &ifname),
                    Expr::Payload {
                        base: PayloadBase::LinkLayer,
                        offset: 6,
                        len: 6,
                    },
                    Expr::cmp(CmpOp::Neq, &[2, 0, 0, 0, 0, 1]),
                    Expr::Verdict(nft::Verdict::Drop),
                ],
                Some("c2"),
            );
        b.commit(&sock).unwrap();
    })
    .unwrap();
    let text = nft_list(&t, "bridge").unwrap();
    let expected = "table bridge plx_test {
	chain spoof {
		comment \"c1\"
		type filter hook prerouting priority dstnat; policy accept;
		iifname \"veth0\" ether saddr != 02:00:00:00:00:01 drop comment \"c2\"
	}
}
";
    assert_eq!(text, expected);
}
