//! plexus_netlink::nft's sets, elements, lookups, `ct state`, interface
//! matches and named counters against the kernel, in throwaway
//! namespaces: `nft -j list` must read back what we wrote, a second batch
//! must replace elements while counters keep counting, and real packets
//! (ping, TCP, over IPv4 and IPv6) must be accepted or dropped as the sets
//! say.

use std::net::IpAddr;

use plexus_netlink::nft::{
    self, ct_state, AddrField, BaseChain, Batch, CmpOp, Elem, Family, Hook, IpVersion, Key,
    KeyType, Range, Rule, SetSpec,
};
use plexus_tests::{probe, require_root, Netns};
use serde_json::Value;

const T: &str = "plexus_settest";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn set(name: &str, key: &[KeyType], interval: bool) -> SetSpec {
    SetSpec {
        name: name.into(),
        key: key.to_vec(),
        interval,
    }
}

fn range(lo: &str, hi: &str) -> Range {
    Range {
        lo: ip(lo).into(),
        hi: ip(hi).into(),
    }
}

/// `ADDR-RANGE . PROTO . PORT-RANGE`
fn box_elem(lo: &str, hi: &str, proto: u8, p: (u16, u16)) -> Elem {
    Elem(vec![
        range(lo, hi),
        Range::one(Key::Proto(proto)),
        Range {
            lo: Key::Port(p.0),
            hi: Key::Port(p.1),
        },
    ])
}

const V4_PORTS: [KeyType; 3] = [KeyType::Ipv4Addr, KeyType::InetProto, KeyType::InetService];
const V6_PORTS: [KeyType; 3] = [KeyType::Ipv6Addr, KeyType::InetProto, KeyType::InetService];

fn nft_json(ns: &Netns) -> Value {
    let out = ns
        .cmd("nft")
        .args(["-j", "list", "table", "inet", T])
        .output()
        .expect("spawn nft");
    assert!(
        out.status.success(),
        "nft -j list: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("nft -j output")
}

/// The `elem` list of set `name` in `nft -j` output.
fn elems(j: &Value, name: &str) -> Vec<Value> {
    j["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.get("set"))
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no set {name} in {j}"))
        .get("elem")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn counter(ns: &Netns, name: &str) -> nft::CounterInfo {
    ns.run(|| {
        let sock = nft::Socket::open().unwrap();
        nft::list_counters(&sock, Family::Inet, T)
            .unwrap()
            .into_iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no counter {name}"))
    })
}

/// Everything of one table: a counter, interval, concatenated, plain and
/// anonymous sets, and a chain using each.
fn full_batch(a4_first: Elem) -> Batch {
    let f = Family::Inet;
    let a4 = set("a4", &[KeyType::Ipv4Addr], true);
    let a6 = set("a6", &[KeyType::Ipv6Addr], true);
    let p4 = set("p4", &V4_PORTS, true);
    let p6 = set("p6", &V6_PORTS, true);
    let ports = set("ports", &[KeyType::InetService], false);
    let mut b = Batch::new();
    b.add_table(f, T).add_counter(f, T, "drops");
    for s in [&a4, &a6, &p4, &p6, &ports] {
        b.add_set(f, T, s).flush_set(f, T, &s.name);
    }
    b.add_elements(
        f,
        T,
        &a4,
        &[
            a4_first,
            Elem::one(ip("192.168.0.1").into()),
            Elem(vec![range("200.0.0.0", "255.255.255.255")]),
        ],
    )
    .add_elements(
        f,
        T,
        &a6,
        &[
            Elem(vec![range("fd00::", "fd00::ffff:ffff:ffff:ffff")]),
            Elem(vec![range("fd01::1", "fd01::5")]),
        ],
    )
    .add_elements(
        f,
        T,
        &p4,
        &[
            box_elem("10.0.0.0", "10.0.0.255", 6, (80, 81)),
            box_elem("10.0.1.5", "10.0.1.5", 17, (53, 53)),
        ],
    )
    .add_elements(f, T, &p6, &[box_elem("fd02::1", "fd02::1", 132, (9, 9))])
    .add_elements(
        f,
        T,
        &ports,
        &[Elem::one(Key::Port(53)), Elem::one(Key::Port(80))],
    );
    let chain = "in";
    b.add_chain(f, T, chain, Some(&BaseChain::filter(Hook::Input)), None)
        .flush_chain(f, T, chain);
    let anon = b.add_anonymous_set(
        f,
        T,
        &[KeyType::InetService],
        false,
        &[Elem::one(Key::Port(22)), Elem::one(Key::Port(443))],
    );
    let rules = [
        Rule::new().iifname("lo", CmpOp::Eq).accept(),
        Rule::new()
            .ct_state(ct_state::ESTABLISHED | ct_state::RELATED)
            .accept(),
        Rule::new().icmpv6_types(133, 137).accept(),
        Rule::new()
            .addr_in(IpVersion::V4, AddrField::Source, "a4")
            .accept(),
        Rule::new()
            .addr_in(IpVersion::V6, AddrField::Source, "a6")
            .accept(),
        Rule::new()
            .addr_proto_port_in(IpVersion::V4, AddrField::Source, "p4")
            .accept(),
        Rule::new()
            .addr_proto_port_in(IpVersion::V6, AddrField::Destination, "p6")
            .accept(),
        Rule::new()
            .push(nft::Expr::Payload {
                base: nft::PayloadBase::Transport,
                offset: 2,
                len: 2,
            })
            .push(anon.lookup(nft::NFT_REG_1, false))
            .accept(),
        Rule::new().counter("drops").drop(),
    ];
    for r in &rules {
        b.add_rule(f, T, chain, r, None);
    }
    b
}

#[test]
fn sets_counters_and_rules_read_back() {
    require_root!();
    let ns = Netns::new("nftsets");
    let ten8 = Elem(vec![range("10.0.0.0", "10.255.255.255")]);
    ns.run(|| {
        let sock = nft::Socket::open().unwrap();
        full_batch(ten8.clone()).commit(&sock).unwrap();
        assert!(nft::list_tables(&sock, Family::Inet)
            .unwrap()
            .contains(&T.to_string()));
    });

    let j = nft_json(&ns);
    let a4 = elems(&j, "a4");
    assert_eq!(
        a4,
        serde_json::json!([
            {"prefix": {"addr": "10.0.0.0", "len": 8}},
            "192.168.0.1",
            {"range": ["200.0.0.0", "255.255.255.255"]},
        ])
        .as_array()
        .unwrap()
        .clone(),
        "{j}"
    );
    assert_eq!(
        elems(&j, "a6"),
        serde_json::json!([
            {"prefix": {"addr": "fd00::", "len": 64}},
            {"range": ["fd01::1", "fd01::5"]},
        ])
        .as_array()
        .unwrap()
        .clone()
    );
    assert_eq!(
        elems(&j, "p4"),
        serde_json::json!([
            {"concat": [{"prefix": {"addr": "10.0.0.0", "len": 24}}, "tcp", {"range": [80, 81]}]},
            {"concat": ["10.0.1.5", "udp", 53]},
        ])
        .as_array()
        .unwrap()
        .clone()
    );
    assert_eq!(
        elems(&j, "p6"),
        serde_json::json!([{"concat": ["fd02::1", "sctp", 9]}])
            .as_array()
            .unwrap()
            .clone()
    );
    assert_eq!(elems(&j, "ports"), [Value::from(53), Value::from(80)]);

    // The rules read back as the nft script that writes them.
    let text = ns.nft_table("inet", T);
    for line in [
        "type filter hook input priority filter; policy accept;",
        "iifname \"lo\" accept",
        "ct state established,related accept",
        "icmpv6 type 133-137 accept",
        "ip saddr @a4 accept",
        "ip6 saddr @a6 accept",
        "ip saddr . meta l4proto . th dport @p4 accept",
        "ip6 daddr . meta l4proto . th dport @p6 accept",
        "th dport { 22, 443 } accept",
        "counter name \"drops\" drop",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    assert_eq!(counter(&ns, "drops").packets, 0);

    // The same batch with other elements: the sets hold only the new ones,
    // and it can be sent again and again.
    let other = Elem(vec![range("172.16.0.0", "172.31.255.255")]);
    ns.run(|| {
        let sock = nft::Socket::open().unwrap();
        full_batch(other.clone()).commit(&sock).unwrap();
        full_batch(other.clone()).commit(&sock).unwrap();
    });
    let a4 = elems(&nft_json(&ns), "a4");
    assert_eq!(
        a4[0],
        serde_json::json!({"prefix": {"addr": "172.16.0.0", "len": 12}})
    );
    assert_eq!(a4.len(), 3);
    let text = ns.nft_table("inet", T);
    assert_eq!(text.matches("counter name").count(), 1, "{text}");

    // Input errors are caught before anything is sent; kernel errors name
    // the message.
    ns.run(|| {
        let sock = nft::Socket::open().unwrap();
        let mut bad = Batch::new();
        bad.add_elements(
            Family::Inet,
            T,
            &set("a4", &[KeyType::Ipv4Addr], true),
            &[Elem::one(Key::Port(1))],
        );
        let e = bad.commit(&sock).unwrap_err().to_string();
        assert!(e.contains("set element"), "{e}");
        let mut clash = Batch::new();
        clash.add_set(Family::Inet, T, &set("a4", &[KeyType::Ipv6Addr], true));
        let e = clash.commit(&sock).unwrap_err().to_string();
        assert!(e.contains("add set inet plexus_settest a4"), "{e}");

        // add + delete: the table and all in it go, whether or not it was there.
        let mut gone = Batch::new();
        gone.add_table(Family::Inet, T)
            .delete_table(Family::Inet, T);
        gone.commit(&sock).unwrap();
        gone.commit(&sock).unwrap();
        assert!(!nft::list_tables(&sock, Family::Inet)
            .unwrap()
            .contains(&T.to_string()));
        assert!(nft::list_counters(&sock, Family::Inet, T)
            .unwrap()
            .is_empty());
    });
}

/// A veth pair between `a` (10.9.0.1, 10.9.0.3, fd09::1, fd09::3) and `b`
/// (10.9.0.2, fd09::2).
fn pair() -> (Netns, Netns) {
    let a = Netns::new("nfta");
    let b = Netns::new("nftb");
    a.ip(&[
        "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", &b.name,
    ]);
    for (ns, dev, addrs) in [
        (
            &a,
            "va",
            &["10.9.0.1/24", "10.9.0.3/24", "fd09::1/64", "fd09::3/64"][..],
        ),
        (&b, "vb", &["10.9.0.2/24", "fd09::2/64"][..]),
    ] {
        for addr in addrs {
            ns.ip(&["addr", "add", addr, "dev", dev, "nodad"]);
        }
        ns.ip(&["link", "set", dev, "up"]);
    }
    (a, b)
}

fn ping_from(ns: &Netns, src: &str, dst: &str) -> bool {
    let out = ns
        .cmd("ping")
        .args(["-c1", "-W1", "-I", src, dst])
        .output()
        .expect("spawn ping");
    assert!(
        out.status.code().is_some_and(|c| c <= 1),
        "ping could not run"
    );
    out.status.success()
}

#[test]
fn packets_follow_the_sets() {
    require_root!();
    let (a, b) = pair();
    let f = Family::Inet;
    let allow4 = set("allow4", &[KeyType::Ipv4Addr], true);
    let allow6 = set("allow6", &[KeyType::Ipv6Addr], true);
    let ports4 = set("ports4", &V4_PORTS, true);
    let ports6 = set("ports6", &V6_PORTS, true);
    b.run(|| {
        let mut batch = Batch::new();
        batch.add_table(f, T).add_counter(f, T, "drops");
        for s in [&allow4, &allow6, &ports4, &ports6] {
            batch.add_set(f, T, s);
        }
        batch
            .add_elements(f, T, &allow4, &[Elem::one(ip("10.9.0.1").into())])
            .add_elements(f, T, &allow6, &[Elem::one(ip("fd09::1").into())])
            .add_elements(
                f,
                T,
                &ports4,
                &[box_elem("10.9.0.3", "10.9.0.3", 6, (8080, 8080))],
            )
            .add_elements(
                f,
                T,
                &ports6,
                &[box_elem("fd09::3", "fd09::3", 6, (8080, 8080))],
            )
            .add_chain(f, T, "in", Some(&BaseChain::filter(Hook::Input)), None);
        for r in [
            Rule::new().iifname("vb", CmpOp::Neq).ret(),
            Rule::new()
                .ct_state(ct_state::ESTABLISHED | ct_state::RELATED)
                .accept(),
            Rule::new().icmpv6_types(133, 137).accept(),
            Rule::new()
                .addr_in(IpVersion::V4, AddrField::Source, "allow4")
                .accept(),
            Rule::new()
                .addr_in(IpVersion::V6, AddrField::Source, "allow6")
                .accept(),
            Rule::new()
                .addr_proto_port_in(IpVersion::V4, AddrField::Source, "ports4")
                .accept(),
            Rule::new()
                .addr_proto_port_in(IpVersion::V6, AddrField::Source, "ports6")
                .accept(),
            Rule::new().counter("drops").drop(),
        ] {
            batch.add_rule(f, T, "in", &r, None);
        }
        batch.commit(&nft::Socket::open().unwrap()).unwrap();
    });
    let _v4 = probe::Server::start(&b, ip("10.9.0.2"), &[8080, 8081], &[]);
    let _v6 = probe::Server::start(&b, ip("fd09::2"), &[8080, 8081], &[]);

    for (all, some, dst) in [
        ("10.9.0.1", "10.9.0.3", "10.9.0.2"),
        ("fd09::1", "fd09::3", "fd09::2"),
    ] {
        // All protocols and ports from the address-only set...
        assert!(ping_from(&a, all, dst), "ping {all} -> {dst}");
        assert!(probe::tcp(&a, Some(ip(all)), ip(dst), 8081));
        // ...one port from the concatenation, nothing else.
        assert!(
            probe::tcp(&a, Some(ip(some)), ip(dst), 8080),
            "{some} -> {dst}:8080"
        );
        assert!(
            !probe::tcp(&a, Some(ip(some)), ip(dst), 8081),
            "{some} -> {dst}:8081"
        );
        assert!(!ping_from(&a, some, dst), "ping {some} -> {dst}");
    }
    // Four dropped exchanges, each at least one packet.
    let drops = counter(&b, "drops");
    assert!(drops.packets >= 4, "{drops:?}");
    assert!(drops.bytes > drops.packets * 40, "{drops:?}");
}
