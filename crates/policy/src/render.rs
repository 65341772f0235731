//! A pod interface's compiled rules as nftables objects, for the pod's
//! own network namespace (see the crate docs for why there).
//!
//! One table per interface, `inet plexus_policy_<ifname>`, so that eth0's
//! NetworkPolicy and net1's MultiNetworkPolicy are replaced independently:
//!
//! ```text
//! table inet plexus_policy_net1 {
//!   counter ingress_drops {}                  counter egress_drops {}
//!   set node4 { type ipv4_addr; flags interval; }             (node6)
//!   set ingress_any4 { type ipv4_addr; flags interval; }      (any6)
//!   set ingress_ports4 { type ipv4_addr . inet_proto . inet_service; flags interval; }
//!   ... the same four for egress ...
//!   chain ingress {
//!     type filter hook input priority filter; policy accept;
//!     iifname != "net1" return
//!     ct state established,related accept     # replies to allowed connections
//!     icmpv6 type 130-137 accept              # neighbour discovery, MLD
//!     icmpv6 type 143 accept                  # MLDv2 reports
//!     ip saddr @node4 accept                  # the node itself (kubelet probes)
//!     ip saddr @ingress_any4 accept           # peers on every port
//!     ip saddr . meta l4proto . th dport @ingress_ports4 accept
//!     (the same three for ip6)
//!     counter name "ingress_drops" drop
//!   }
//!   chain egress { type filter hook output ...; oifname != "net1" return; ... daddr ... }
//! }
//! ```
//!
//! A direction that is not isolated has no chain (no cost per packet); an
//! interface isolated in neither has no table. [`render`] is idempotent
//! and atomic (one batch): it creates what is missing, replaces every
//! set's elements and every chain's rules, and leaves the counters
//! counting, so `plexusctl policy show` sees drops since the interface was
//! first isolated.

use std::net::IpAddr;

use plexus_netlink::nft::{
    ct_state, AddrField, BaseChain, Batch, CmpOp, CounterInfo, Elem, Family, Hook, IpVersion, Key,
    KeyType, Range, Rule, SetSpec,
};

use crate::addr::AddrSet;
use crate::rules::{Direction, DirectionRules, InterfaceRules, PortRule};

/// Every policy table's name starts with this.
pub const TABLE_PREFIX: &str = "plexus_policy_";
/// The named counters of dropped packets.
pub const INGRESS_DROPS: &str = "ingress_drops";
pub const EGRESS_DROPS: &str = "egress_drops";

const FAMILY: Family = Family::Inet;

/// The table of interface `ifname`. Interface names may hold characters
/// an `nft` script could not write in an identifier; those are hex-coded.
pub fn table_name(ifname: &str) -> String {
    let plain = ifname
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if plain && !ifname.is_empty() {
        format!("{TABLE_PREFIX}{ifname}")
    } else {
        let hex: String = ifname.bytes().map(|b| format!("{b:02x}")).collect();
        format!("{TABLE_PREFIX}x{hex}")
    }
}

impl Direction {
    fn name(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }

    fn counter(self) -> &'static str {
        match self {
            Direction::Ingress => INGRESS_DROPS,
            Direction::Egress => EGRESS_DROPS,
        }
    }

    /// Which address of a packet is the peer's.
    fn peer(self) -> AddrField {
        match self {
            Direction::Ingress => AddrField::Source,
            Direction::Egress => AddrField::Destination,
        }
    }
}

fn addr_set(name: String, v: IpVersion) -> SetSpec {
    SetSpec {
        name,
        key: vec![v.addr_key()],
        interval: true,
    }
}

fn ports_set(name: String, v: IpVersion) -> SetSpec {
    SetSpec {
        name,
        key: vec![v.addr_key(), KeyType::InetProto, KeyType::InetService],
        interval: true,
    }
}

fn version_tag(v: IpVersion) -> char {
    match v {
        IpVersion::V4 => '4',
        IpVersion::V6 => '6',
    }
}

fn any_set(dir: Direction, v: IpVersion) -> SetSpec {
    addr_set(format!("{}_any{}", dir.name(), version_tag(v)), v)
}

fn port_set(dir: Direction, v: IpVersion) -> SetSpec {
    ports_set(format!("{}_ports{}", dir.name(), version_tag(v)), v)
}

fn node_set(v: IpVersion) -> SetSpec {
    addr_set(format!("node{}", version_tag(v)), v)
}

const VERSIONS: [IpVersion; 2] = [IpVersion::V4, IpVersion::V6];
const DIRECTIONS: [Direction; 2] = [Direction::Ingress, Direction::Egress];

fn addr_elems(s: &AddrSet, v: IpVersion) -> Vec<Elem> {
    s.ranges()
        .filter(|(first, _)| IpVersion::of_addr(first) == v)
        .map(|(first, last)| Elem::range(first.into(), last.into()))
        .collect()
}

fn port_elems(rules: &[PortRule], v: IpVersion) -> Vec<Elem> {
    rules
        .iter()
        .filter(|r| IpVersion::of_addr(&r.first) == v)
        .map(|r| {
            Elem(vec![
                Range {
                    lo: r.first.into(),
                    hi: r.last.into(),
                },
                Range::one(Key::Proto(r.proto.number())),
                Range {
                    lo: Key::Port(r.ports.0),
                    hi: Key::Port(r.ports.1),
                },
            ])
        })
        .collect()
}

/// The rules of an isolated direction's chain.
fn chain_rules(dir: Direction, ifname: &str) -> Vec<Vec<plexus_netlink::nft::Expr>> {
    let peer = dir.peer();
    let mut rules = vec![
        match dir {
            Direction::Ingress => Rule::new().iifname(ifname, CmpOp::Neq).ret(),
            Direction::Egress => Rule::new().oifname(ifname, CmpOp::Neq).ret(),
        },
        Rule::new()
            .ct_state(ct_state::ESTABLISHED | ct_state::RELATED)
            .accept(),
        // Neighbour discovery and MLD: without them IPv6 stops working
        // for the allowed traffic too.
        Rule::new().icmpv6_types(130, 137).accept(),
        Rule::new().icmpv6_types(143, 143).accept(),
    ];
    for v in VERSIONS {
        rules.push(Rule::new().addr_in(v, peer, &node_set(v).name).accept());
    }
    for v in VERSIONS {
        rules.push(Rule::new().addr_in(v, peer, &any_set(dir, v).name).accept());
        rules.push(
            Rule::new()
                .addr_proto_port_in(v, peer, &port_set(dir, v).name)
                .accept(),
        );
    }
    rules.push(Rule::new().counter(dir.counter()).drop());
    rules
}

fn comment(rules: &InterfaceRules, dir: Direction) -> String {
    let mut c = format!(
        "plexus policy {} {} of {}",
        dir.name(),
        rules.ifname,
        rules.pod
    );
    if c.len() > plexus_netlink::nft::COMMENT_MAX {
        let mut end = plexus_netlink::nft::COMMENT_MAX;
        while !c.is_char_boundary(end) {
            end -= 1;
        }
        c.truncate(end);
    }
    c.replace('\0', "")
}

/// The batch that makes the interface's table hold exactly `rules`, run in
/// the pod's network namespace. `node` are the node's own addresses
/// (traffic from and to them always passes). An interface isolated in
/// neither direction gets [`remove`].
pub fn render(rules: &InterfaceRules, node: &[IpAddr]) -> Batch {
    render_batch(rules, node, false)
}

/// [`render`], deleting the table first: for a table that `render` cannot
/// update (one an older layout left, with sets of other types). The drop
/// counters restart from zero.
pub fn render_replacing(rules: &InterfaceRules, node: &[IpAddr]) -> Batch {
    render_batch(rules, node, true)
}

fn render_batch(rules: &InterfaceRules, node: &[IpAddr], fresh: bool) -> Batch {
    if !rules.is_isolated() {
        return remove(&rules.ifname);
    }
    let table = table_name(&rules.ifname);
    let mut b = Batch::new();
    b.add_table(FAMILY, &table);
    if fresh {
        b.delete_table(FAMILY, &table).add_table(FAMILY, &table);
    }
    for dir in DIRECTIONS {
        b.add_counter(FAMILY, &table, dir.counter());
    }
    let node_addrs = AddrSet::of_addrs(node.iter().copied());
    for v in VERSIONS {
        let s = node_set(v);
        b.add_set(FAMILY, &table, &s)
            .flush_set(FAMILY, &table, &s.name)
            .add_elements(FAMILY, &table, &s, &addr_elems(&node_addrs, v));
    }
    let empty = DirectionRules::open();
    for dir in DIRECTIONS {
        let d = rules.direction(dir);
        let d = if d.isolated { d } else { &empty };
        for v in VERSIONS {
            let any = any_set(dir, v);
            let ports = port_set(dir, v);
            b.add_set(FAMILY, &table, &any)
                .flush_set(FAMILY, &table, &any.name)
                .add_elements(FAMILY, &table, &any, &addr_elems(&d.any, v))
                .add_set(FAMILY, &table, &ports)
                .flush_set(FAMILY, &table, &ports.name)
                .add_elements(FAMILY, &table, &ports, &port_elems(&d.ports, v));
        }
    }
    for dir in DIRECTIONS {
        let hook = match dir {
            Direction::Ingress => Hook::Input,
            Direction::Egress => Hook::Output,
        };
        let base = BaseChain::filter(hook);
        let c = comment(rules, dir);
        b.add_chain(FAMILY, &table, dir.name(), Some(&base), Some(&c))
            .flush_chain(FAMILY, &table, dir.name());
        if rules.direction(dir).isolated {
            for r in chain_rules(dir, &rules.ifname) {
                b.add_rule(FAMILY, &table, dir.name(), &r, None);
            }
        } else {
            b.delete_chain(FAMILY, &table, dir.name());
        }
    }
    b
}

/// The batch that removes the interface's table, whether or not it is
/// there (for a pod no policy isolates any more, and on the pod's DEL).
pub fn remove(ifname: &str) -> Batch {
    let table = table_name(ifname);
    let mut b = Batch::new();
    b.add_table(FAMILY, &table).delete_table(FAMILY, &table);
    b
}

/// Packets and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Count {
    pub packets: u64,
    pub bytes: u64,
}

/// What an interface's table dropped so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drops {
    pub ingress: Count,
    pub egress: Count,
}

/// The drops in `nft::list_counters(sock, Family::Inet, &table_name(ifname))`.
pub fn drops(counters: &[CounterInfo]) -> Drops {
    let get = |name: &str| {
        counters
            .iter()
            .find(|c| c.name == name)
            .map(|c| Count {
                packets: c.packets,
                bytes: c.bytes,
            })
            .unwrap_or_default()
    };
    Drops {
        ingress: get(INGRESS_DROPS),
        egress: get(EGRESS_DROPS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::cluster::{Network, PodRef};
    use crate::policy::Proto;
    use crate::rules::Allow;

    fn iface(ingress: DirectionRules, egress: DirectionRules) -> InterfaceRules {
        InterfaceRules {
            pod: PodRef {
                namespace: "x".into(),
                name: "a".into(),
                uid: "u".into(),
            },
            ifname: "net1".into(),
            network: Network::Attachment("x/n".into()),
            addrs: vec![],
            ingress: Arc::new(ingress),
            egress: Arc::new(egress),
            policies: vec![],
        }
    }

    #[test]
    fn names() {
        assert_eq!(table_name("eth0"), "plexus_policy_eth0");
        assert_eq!(table_name("net@1"), "plexus_policy_x6e65744031");
        assert!(table_name("a b").starts_with(TABLE_PREFIX));
    }

    #[test]
    fn not_isolated_is_removed() {
        let r = iface(DirectionRules::open(), DirectionRules::open());
        assert_eq!(render(&r, &[]).len(), 2);
        assert_eq!(remove("net1").len(), 2);
    }

    #[test]
    fn one_direction_one_chain() {
        let ing = DirectionRules::isolated(&[Allow {
            addrs: AddrSet::of_addrs(["10.0.0.2".parse().unwrap()]),
            ports: Some(vec![(Proto::Tcp, 80, 80)]),
        }]);
        let r = iface(ing, DirectionRules::open());
        let b = render(&r, &["10.0.0.254".parse().unwrap()]);
        let fresh = render_replacing(&r, &[]);
        // Delete and add the table: two more; no node address: one fewer.
        assert_eq!(fresh.len(), b.len() + 1);
        // table, 2 counters, node sets (2 x add, flush) + 1 element
        // message, 8 direction sets (add, flush) + 1 element message, the
        // ingress chain (add, flush, 11 rules), the egress chain (add,
        // flush, delete).
        assert_eq!(b.len(), 1 + 2 + (4 + 1) + (16 + 1) + (2 + 11) + 3);
        let rules = chain_rules(Direction::Ingress, "net1");
        assert_eq!(rules.len(), 11);
        assert!(rules.last().unwrap().last().unwrap().is_statement());
    }

    #[test]
    fn drop_counters() {
        let c = [
            CounterInfo {
                name: INGRESS_DROPS.into(),
                packets: 3,
                bytes: 180,
            },
            CounterInfo {
                name: "other".into(),
                packets: 9,
                bytes: 9,
            },
        ];
        let d = drops(&c);
        assert_eq!(
            d.ingress,
            Count {
                packets: 3,
                bytes: 180
            }
        );
        assert_eq!(d.egress, Count::default());
    }
}
