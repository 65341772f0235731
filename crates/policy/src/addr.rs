//! Address sets as sorted, disjoint, merged intervals per IP version: an
//! `ipBlock` with its `except`s, the addresses of many peers, their union
//! and difference. This is exactly what an nftables interval set holds.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// The integer behind an address of one version.
pub trait Bits: Copy + Ord + std::fmt::Debug {
    const MAX: Self;
    fn succ(self) -> Option<Self>;
    fn pred(self) -> Option<Self>;
}

impl Bits for u32 {
    const MAX: u32 = u32::MAX;
    fn succ(self) -> Option<u32> {
        self.checked_add(1)
    }
    fn pred(self) -> Option<u32> {
        self.checked_sub(1)
    }
}

impl Bits for u128 {
    const MAX: u128 = u128::MAX;
    fn succ(self) -> Option<u128> {
        self.checked_add(1)
    }
    fn pred(self) -> Option<u128> {
        self.checked_sub(1)
    }
}

/// Inclusive intervals, sorted, pairwise disjoint and not adjacent.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Intervals<T>(Vec<(T, T)>);

impl<T> Default for Intervals<T> {
    fn default() -> Self {
        Intervals(Vec::new())
    }
}

impl<T: Bits> Intervals<T> {
    /// Normalizes any list of inclusive ranges (reversed ones are dropped).
    pub fn from_ranges(mut v: Vec<(T, T)>) -> Intervals<T> {
        v.retain(|(lo, hi)| lo <= hi);
        v.sort_unstable();
        let mut out: Vec<(T, T)> = Vec::with_capacity(v.len());
        for (lo, hi) in v {
            if let Some(last) = out.last_mut() {
                // Overlapping or adjacent: extend.
                if last.1.succ().is_none_or(|next| lo <= next) {
                    last.1 = last.1.max(hi);
                    continue;
                }
            }
            out.push((lo, hi));
        }
        Intervals(out)
    }

    pub fn ranges(&self) -> &[(T, T)] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, x: T) -> bool {
        // The last interval starting at or before x.
        let i = self.0.partition_point(|(lo, _)| *lo <= x);
        i > 0 && self.0[i - 1].1 >= x
    }

    pub fn union(&self, other: &Intervals<T>) -> Intervals<T> {
        let mut v = self.0.clone();
        v.extend_from_slice(&other.0);
        Intervals::from_ranges(v)
    }

    /// `self` without `other`.
    pub fn subtract(&self, other: &Intervals<T>) -> Intervals<T> {
        let cuts = &other.0;
        let mut out = Vec::new();
        // The first cut that may touch the current interval: cuts ending
        // before it touch no later one either.
        let mut first = 0;
        for &(lo, hi) in &self.0 {
            while first < cuts.len() && cuts[first].1 < lo {
                first += 1;
            }
            // What is left of [lo, hi] starts at `start`, if anything is.
            let mut start = Some(lo);
            for &(clo, chi) in cuts[first..].iter().take_while(|c| c.0 <= hi) {
                let Some(s) = start else { break };
                if clo > s {
                    out.push((s, clo.pred().expect("clo > s")));
                }
                start = chi.succ().filter(|n| *n <= hi).map(|n| n.max(s));
            }
            if let Some(s) = start {
                out.push((s, hi));
            }
        }
        Intervals(out)
    }
}

/// A set of IPv4 and IPv6 addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct AddrSet {
    pub v4: Intervals<u32>,
    pub v6: Intervals<u128>,
}

fn net_range(net: &IpNet) -> AddrSet {
    match net {
        IpNet::V4(n) => AddrSet {
            v4: Intervals(vec![(n.network().into(), n.broadcast().into())]),
            v6: Intervals::default(),
        },
        IpNet::V6(n) => AddrSet {
            v4: Intervals::default(),
            v6: Intervals(vec![(n.network().into(), n.broadcast().into())]),
        },
    }
}

impl AddrSet {
    pub fn empty() -> AddrSet {
        AddrSet::default()
    }

    /// 0.0.0.0/0 and ::/0.
    pub fn all() -> AddrSet {
        AddrSet {
            v4: Intervals(vec![(0, u32::MAX)]),
            v6: Intervals(vec![(0, u128::MAX)]),
        }
    }

    /// `cidr` without the `except`s (host bits of either are ignored).
    pub fn block(cidr: &IpNet, except: &[IpNet]) -> AddrSet {
        let mut cut = AddrSet::empty();
        for e in except {
            cut = cut.union(&net_range(e));
        }
        net_range(cidr).subtract(&cut)
    }

    /// The set of these addresses.
    pub fn of_addrs(addrs: impl IntoIterator<Item = IpAddr>) -> AddrSet {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for a in addrs {
            match a {
                IpAddr::V4(a) => v4.push((a.into(), a.into())),
                IpAddr::V6(a) => v6.push((a.into(), a.into())),
            }
        }
        AddrSet {
            v4: Intervals::from_ranges(v4),
            v6: Intervals::from_ranges(v6),
        }
    }

    /// The union of many sets at once (one sort, not one per set).
    pub fn union_all<'a>(sets: impl IntoIterator<Item = &'a AddrSet>) -> AddrSet {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for s in sets {
            v4.extend_from_slice(&s.v4.0);
            v6.extend_from_slice(&s.v6.0);
        }
        AddrSet {
            v4: Intervals::from_ranges(v4),
            v6: Intervals::from_ranges(v6),
        }
    }

    pub fn union(&self, other: &AddrSet) -> AddrSet {
        AddrSet {
            v4: self.v4.union(&other.v4),
            v6: self.v6.union(&other.v6),
        }
    }

    pub fn subtract(&self, other: &AddrSet) -> AddrSet {
        AddrSet {
            v4: self.v4.subtract(&other.v4),
            v6: self.v6.subtract(&other.v6),
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => self.v4.contains(a.into()),
            IpAddr::V6(a) => self.v6.contains(a.into()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// Every interval as (first, last) addresses, IPv4 first.
    pub fn ranges(&self) -> impl Iterator<Item = (IpAddr, IpAddr)> + '_ {
        let v4 = self
            .v4
            .ranges()
            .iter()
            .map(|&(a, b)| (Ipv4Addr::from(a).into(), Ipv4Addr::from(b).into()));
        let v6 = self
            .v6
            .ranges()
            .iter()
            .map(|&(a, b)| (Ipv6Addr::from(a).into(), Ipv6Addr::from(b).into()));
        v4.chain(v6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn normalize_merges_overlaps_and_neighbours() {
        let i = Intervals::from_ranges(vec![(5u32, 9), (1, 3), (4, 4), (20, 30), (25, 26), (8, 2)]);
        assert_eq!(i.ranges(), [(1, 9), (20, 30)]);
        assert!(i.contains(1) && i.contains(9) && i.contains(25));
        assert!(!i.contains(0) && !i.contains(10) && !i.contains(31));
        let top = Intervals::from_ranges(vec![(u32::MAX - 1, u32::MAX), (0, u32::MAX - 2)]);
        assert_eq!(top.ranges(), [(0, u32::MAX)]);
    }

    #[test]
    fn subtract_cuts_holes() {
        let a = Intervals::from_ranges(vec![(0u32, 100), (200, 300)]);
        let b = Intervals::from_ranges(vec![(0, 9), (50, 60), (95, 210), (300, 400)]);
        assert_eq!(a.subtract(&b).ranges(), [(10, 49), (61, 94), (211, 299)]);
        assert!(a.subtract(&a).is_empty());
        assert_eq!(a.subtract(&Intervals::default()), a);
        let all = Intervals::from_ranges(vec![(0u128, u128::MAX)]);
        let hole = Intervals::from_ranges(vec![(u128::MAX, u128::MAX), (0, 0)]);
        assert_eq!(all.subtract(&hole).ranges(), [(1, u128::MAX - 1)]);
    }

    #[test]
    fn blocks_with_excepts() {
        let s = AddrSet::block(
            &n("10.0.0.0/8"),
            &[n("10.1.0.0/16"), n("10.1.2.0/24"), n("10.255.0.7/32")],
        );
        assert!(s.contains(ip("10.0.0.1")));
        assert!(!s.contains(ip("10.1.2.3")));
        assert!(!s.contains(ip("10.1.255.255")));
        assert!(s.contains(ip("10.2.0.0")));
        assert!(!s.contains(ip("10.255.0.7")));
        assert!(s.contains(ip("10.255.0.8")));
        assert!(!s.contains(ip("11.0.0.0")));
        assert!(!s.contains(ip("fd00::1")));
        assert_eq!(s.v4.ranges().len(), 3);
        let v6 = AddrSet::block(&n("fd00::/16"), &[n("fd00:1::/32")]);
        assert!(v6.contains(ip("fd00:2::1")) && !v6.contains(ip("fd00:1::1")));
        let all = AddrSet::block(&n("0.0.0.0/0"), &[]);
        assert!(all.contains(ip("255.255.255.255")) && all.contains(ip("0.0.0.0")));
    }

    #[test]
    fn many_addresses_union() {
        let a = AddrSet::of_addrs((1..=10u8).map(|i| IpAddr::from([10, 0, 0, i])));
        assert_eq!(a.v4.ranges().len(), 1);
        let b = AddrSet::of_addrs([ip("10.0.0.20"), ip("fd00::1")]);
        let u = AddrSet::union_all([&a, &b]);
        assert_eq!(u.ranges().count(), 3);
        assert_eq!(u, a.union(&b));
        assert!(u.contains(ip("fd00::1")));
    }
}
