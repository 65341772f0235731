//! The compiled rule set of one pod interface and the packet evaluator.
//!
//! Per direction: whether the interface is isolated, and what it allows,
//! in the shape an nftables set holds it, so that the per-packet cost does
//! not grow with the number of peers, rules or policies:
//! * `any`: the peers allowed on every protocol and port (rules without
//!   `ports`), one interval set of addresses;
//! * `ports`: disjoint (address range, protocol, port range) boxes for
//!   everything else, one concatenated interval set (`ADDR . inet_proto .
//!   inet_service`): a named port resolved per destination pod is just
//!   another box, and so is an `ipBlock` with its excepts cut out.
//!
//! [`InterfaceRules::allows`] answers for one new connection what the
//! rendered nftables rules answer (replies and related packets of an
//! allowed connection always pass there, by conntrack).

use std::net::IpAddr;
use std::sync::Arc;

use crate::addr::AddrSet;
use crate::cluster::{Network, PodRef};
use crate::policy::{PolicyId, Proto};

/// Ingress: traffic to the interface (the peer is the source); egress:
/// traffic from it (the peer is the destination).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Ingress,
    Egress,
}

/// Peers on one protocol and a range of its ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRule {
    /// First and last address, of the same IP version.
    pub first: IpAddr,
    pub last: IpAddr,
    pub proto: Proto,
    /// First and last port.
    pub ports: (u16, u16),
}

/// One direction of an interface.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct DirectionRules {
    /// Some policy selecting the interface is about this direction: only
    /// what the fields below allow passes.
    pub isolated: bool,
    /// Peers allowed on every protocol and port.
    pub any: AddrSet,
    /// Disjoint boxes, sorted.
    pub ports: Vec<PortRule>,
}

/// One allowed (peers, ports) pair, before normalization: `None` ports
/// means every protocol and port.
#[derive(Debug, Clone)]
pub(crate) struct Allow {
    pub addrs: AddrSet,
    pub ports: Option<Vec<(Proto, u16, u16)>>,
}

impl DirectionRules {
    /// Not isolated: everything passes.
    pub fn open() -> DirectionRules {
        DirectionRules::default()
    }

    /// Isolated, allowing the union of `allows`.
    pub(crate) fn isolated(allows: &[Allow]) -> DirectionRules {
        let any = AddrSet::union_all(
            allows
                .iter()
                .filter(|a| a.ports.is_none())
                .map(|a| &a.addrs),
        );
        let mut boxes: Vec<Box4or6> = Vec::new();
        for a in allows {
            let Some(ports) = &a.ports else { continue };
            for &(proto, lo, hi) in ports {
                for &(alo, ahi) in a.addrs.v4.ranges() {
                    boxes.push((false, proto, alo.into(), ahi.into(), lo, hi));
                }
                for &(alo, ahi) in a.addrs.v6.ranges() {
                    boxes.push((true, proto, alo, ahi, lo, hi));
                }
            }
        }
        DirectionRules {
            isolated: true,
            any,
            ports: disjoint(boxes),
        }
    }

    /// Whether a new connection with `peer` on `l4proto` (an IP protocol
    /// number) to port `port` is allowed by the rules (the node's own
    /// addresses aside, see [`InterfaceRules::allows`]). The port is
    /// ignored for protocols the rules cannot name.
    pub fn allows(&self, peer: IpAddr, l4proto: u8, port: u16) -> bool {
        !self.isolated
            || self.any.contains(peer)
            || self.ports.iter().any(|r| {
                r.proto.number() == l4proto
                    && (r.ports.0..=r.ports.1).contains(&port)
                    && same_version(peer, r.first)
                    && r.first <= peer
                    && peer <= r.last
            })
    }
}

fn same_version(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

/// (IPv6?, protocol, first address, last address, first port, last port),
/// addresses as integers (IPv4 in the low 32 bits).
type Box4or6 = (bool, Proto, u128, u128, u16, u16);

/// Makes the union of `boxes` disjoint, as a pipapo set requires: cut the
/// address axis at every box edge, give each slice the union of the port
/// ranges of the boxes over it, and merge neighbouring slices with the
/// same ports. Sorted by version, protocol, address.
fn disjoint(mut boxes: Vec<Box4or6>) -> Vec<PortRule> {
    boxes.sort_unstable();
    let mut out = Vec::new();
    let mut start = 0;
    while start < boxes.len() {
        let (v6, proto) = (boxes[start].0, boxes[start].1);
        let end = start + boxes[start..].partition_point(|b| (b.0, b.1) == (v6, proto));
        slice_group(&boxes[start..end], v6, proto, &mut out);
        start = end;
    }
    out
}

/// One (version, protocol) group, sorted by first address.
fn slice_group(group: &[Box4or6], v6: bool, proto: Proto, out: &mut Vec<PortRule>) {
    let top: u128 = if v6 { u128::MAX } else { u32::MAX.into() };
    let mut edges: Vec<u128> = group
        .iter()
        .flat_map(|b| [Some(b.2), b.3.checked_add(1).filter(|e| *e <= top)])
        .flatten()
        .collect();
    edges.sort_unstable();
    edges.dedup();
    let addr = |x: u128| -> IpAddr {
        if v6 {
            IpAddr::from(x.to_be_bytes())
        } else {
            IpAddr::from((x as u32).to_be_bytes())
        }
    };
    // The slice being grown.
    let mut cur: Option<Slice> = None;
    let mut emit = |s: Slice| {
        for (lo, hi) in s.ports {
            out.push(PortRule {
                first: addr(s.first),
                last: addr(s.last),
                proto,
                ports: (lo, hi),
            });
        }
    };
    let mut next_box = 0;
    let mut active: Vec<&Box4or6> = Vec::new();
    for (i, &lo) in edges.iter().enumerate() {
        let hi = edges.get(i + 1).map_or(top, |e| e - 1);
        while next_box < group.len() && group[next_box].2 <= lo {
            active.push(&group[next_box]);
            next_box += 1;
        }
        active.retain(|b| b.3 >= lo);
        let mut ports: Vec<(u16, u16)> = active.iter().map(|b| (b.4, b.5)).collect();
        ports.sort_unstable();
        let ports = merge_ports(ports);
        match &mut cur {
            Some(c) if c.last.checked_add(1) == Some(lo) && c.ports == ports => c.last = hi,
            _ => {
                if let Some(c) = cur.take() {
                    emit(c);
                }
                cur = (!ports.is_empty()).then_some(Slice {
                    first: lo,
                    last: hi,
                    ports,
                });
            }
        }
    }
    if let Some(c) = cur {
        emit(c);
    }
}

/// Addresses `first..=last` (as integers) and the merged port ranges
/// allowed on all of them.
struct Slice {
    first: u128,
    last: u128,
    ports: Vec<(u16, u16)>,
}

fn merge_ports(sorted: Vec<(u16, u16)>) -> Vec<(u16, u16)> {
    let mut out: Vec<(u16, u16)> = Vec::with_capacity(sorted.len());
    for (lo, hi) in sorted {
        match out.last_mut() {
            Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

/// The compiled rules of one pod interface on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceRules {
    pub pod: PodRef,
    /// The interface's name inside the pod (`eth0`, `net1`, ...).
    pub ifname: String,
    pub network: Network,
    /// Its own addresses.
    pub addrs: Vec<IpAddr>,
    /// Shared between interfaces with the same rules.
    pub ingress: Arc<DirectionRules>,
    pub egress: Arc<DirectionRules>,
    /// The policies that select it, sorted.
    pub policies: Vec<PolicyId>,
}

impl InterfaceRules {
    /// Isolated in either direction (it then has nftables rules).
    pub fn is_isolated(&self) -> bool {
        self.ingress.isolated || self.egress.isolated
    }

    pub fn direction(&self, dir: Direction) -> &DirectionRules {
        match dir {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    /// Whether a new connection from `src` to `dst` on `l4proto`, port
    /// `dport`, passing this interface in direction `dir`, is allowed:
    /// the peer (the source for ingress, the destination for egress) is
    /// one of `node` (the node's own addresses, which always pass), or the
    /// direction allows it.
    pub fn allows(
        &self,
        node: &[IpAddr],
        dir: Direction,
        src: IpAddr,
        dst: IpAddr,
        l4proto: u8,
        dport: u16,
    ) -> bool {
        let rules = self.direction(dir);
        let peer = match dir {
            Direction::Ingress => src,
            Direction::Egress => dst,
        };
        !rules.isolated || node.contains(&peer) || rules.allows(peer, l4proto, dport)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn set(addrs: &[&str]) -> AddrSet {
        AddrSet::of_addrs(addrs.iter().map(|a| ip(a)))
    }

    #[test]
    fn overlapping_boxes_become_disjoint() {
        let block = AddrSet::block(&"10.0.0.0/24".parse().unwrap(), &[]);
        let allows = [
            Allow {
                addrs: block.clone(),
                ports: Some(vec![(Proto::Tcp, 80, 80)]),
            },
            Allow {
                addrs: set(&["10.0.0.5", "10.0.1.1", "fd00::1"]),
                ports: Some(vec![(Proto::Tcp, 81, 90), (Proto::Udp, 53, 53)]),
            },
            Allow {
                addrs: set(&["10.0.0.7"]),
                ports: Some(vec![(Proto::Tcp, 79, 85)]),
            },
            Allow {
                addrs: set(&["192.168.0.1"]),
                ports: None,
            },
        ];
        let d = DirectionRules::isolated(&allows);
        // No two boxes of one protocol overlap.
        for (i, a) in d.ports.iter().enumerate() {
            for b in &d.ports[i + 1..] {
                let addr_overlap =
                    same_version(a.first, b.first) && a.first <= b.last && b.first <= a.last;
                let port_overlap = a.ports.0 <= b.ports.1 && b.ports.0 <= a.ports.1;
                assert!(
                    !(a.proto == b.proto && addr_overlap && port_overlap),
                    "{a:?} {b:?}"
                );
            }
        }
        // And they allow exactly the union, checked point by point.
        let want = |peer: IpAddr, proto: u8, port: u16| {
            allows.iter().any(|a| {
                a.addrs.contains(peer)
                    && a.ports.as_ref().is_none_or(|ps| {
                        ps.iter()
                            .any(|&(p, lo, hi)| p.number() == proto && (lo..=hi).contains(&port))
                    })
            })
        };
        for peer in [
            "10.0.0.0",
            "10.0.0.5",
            "10.0.0.6",
            "10.0.0.7",
            "10.0.0.8",
            "10.0.0.255",
            "10.0.1.1",
            "10.0.1.2",
            "fd00::1",
            "fd00::2",
            "192.168.0.1",
            "9.255.255.255",
        ] {
            for proto in [6u8, 17, 132, 1] {
                for port in [53, 78, 79, 80, 81, 85, 86, 90, 91] {
                    assert_eq!(
                        d.allows(ip(peer), proto, port),
                        want(ip(peer), proto, port),
                        "{peer} {proto} {port}"
                    );
                }
            }
        }
        // 10.0.0.0/24 tcp 80 is split only where other boxes start and end.
        assert!(d.ports.len() < 12, "{:#?}", d.ports);
    }

    #[test]
    fn many_peers_one_port_stay_few_boxes() {
        let peers = AddrSet::of_addrs(
            (0..1000u32).map(|i| IpAddr::from((0x0a00_0000 + 2 * i).to_be_bytes())),
        );
        let d = DirectionRules::isolated(&[Allow {
            addrs: peers,
            ports: Some(vec![(Proto::Tcp, 80, 80)]),
        }]);
        assert_eq!(d.ports.len(), 1000);
        assert!(d.allows(ip("10.0.0.2"), 6, 80));
        assert!(!d.allows(ip("10.0.0.3"), 6, 80));
        // The edges of the address space.
        let all = DirectionRules::isolated(&[Allow {
            addrs: AddrSet::all(),
            ports: Some(vec![(Proto::Udp, 1, 65535)]),
        }]);
        assert_eq!(all.ports.len(), 2);
        assert!(all.allows(ip("255.255.255.255"), 17, 65535));
        assert!(all.allows(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), 17, 1));
        assert!(!all.allows(ip("0.0.0.0"), 6, 1));
    }

    #[test]
    fn open_isolated_and_node() {
        let pod = PodRef {
            namespace: "x".into(),
            name: "a".into(),
            uid: "u".into(),
        };
        let r = InterfaceRules {
            pod,
            ifname: "eth0".into(),
            network: Network::Cluster,
            addrs: vec![ip("10.0.0.1")],
            ingress: Arc::new(DirectionRules::isolated(&[])),
            egress: Arc::new(DirectionRules::open()),
            policies: vec![],
        };
        let (me, other, node) = (ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.254"));
        assert!(r.is_isolated());
        assert!(!r.allows(&[node], Direction::Ingress, other, me, 6, 80));
        assert!(r.allows(&[node], Direction::Ingress, node, me, 6, 80));
        assert!(r.allows(&[node], Direction::Egress, me, other, 17, 53));
    }
}
