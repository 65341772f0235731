//! Ranges and range sets, validated exactly as the reference's
//! `Range.Canonicalize` / `RangeSet.Canonicalize` do, so a config the reference
//! accepts is accepted here and allocates the same addresses.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::addr::{self, to_u128};

/// One contiguous range inside a subnet. `start` and `end` are inclusive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub subnet: IpNet,
    pub start: IpAddr,
    pub end: IpAddr,
    pub gateway: IpAddr,
}

impl Range {
    /// Apply the reference defaults and checks: the subnet must have room for
    /// at least two hosts and no host bits; gateway defaults to network+1;
    /// `rangeStart` to network+1 (the gateway is then skipped by the
    /// iterator); `rangeEnd` to the last address, minus one for IPv4 so the
    /// broadcast address is never handed out.
    pub fn new(
        subnet: IpNet,
        start: Option<IpAddr>,
        end: Option<IpAddr>,
        gateway: Option<IpAddr>,
    ) -> Result<Range, String> {
        let (prefix, max) = (subnet.prefix_len(), subnet.max_prefix_len());
        if prefix > max - 2 {
            return Err(format!(
                "Network {subnet} too small to allocate from (a /{prefix} has no usable host \
                 addresses; use at most /{} for {})",
                max - 2,
                if subnet.addr().is_ipv4() {
                    "IPv4"
                } else {
                    "IPv6"
                }
            ));
        }
        if subnet.addr() != subnet.network() {
            return Err(format!(
                "Network has host bits set. For a subnet mask of length {prefix} the network \
                 address is {}",
                subnet.network()
            ));
        }
        let network = subnet.network();
        let first = addr::next(network);
        let mut last = subnet.broadcast();
        if last.is_ipv4() {
            last = addr::from_u128(to_u128(last) - 1, last);
        }
        let mut r = Range {
            subnet,
            start: first,
            end: last,
            gateway: gateway.map(addr::canonical).unwrap_or(first),
        };
        // Like the reference, each bound is checked against the other one
        // when both are given, so rangeStart > rangeEnd is rejected.
        let start = start.map(addr::canonical);
        let end = end.map(addr::canonical);
        if let Some(s) = start {
            if !r.in_bounds(s, Some(s), end) {
                return Err(match end {
                    Some(e) if r.in_bounds(s, Some(s), None) => {
                        format!("RangeStart {s} is after RangeEnd {e}")
                    }
                    _ => format!("RangeStart {s} not in network {subnet}"),
                });
            }
            r.start = s;
        }
        if let Some(e) = end {
            if !r.in_bounds(e, start, Some(e)) {
                return Err(format!("RangeEnd {e} not in network {subnet}"));
            }
            r.end = e;
        }
        Ok(r)
    }

    fn in_bounds(&self, ip: IpAddr, start: Option<IpAddr>, end: Option<IpAddr>) -> bool {
        let ip = addr::canonical(ip);
        addr::same_family(ip, self.subnet.addr())
            && self.subnet.contains(&ip)
            && start.is_none_or(|s| to_u128(ip) >= to_u128(s))
            && end.is_none_or(|e| to_u128(ip) <= to_u128(e))
    }

    /// The reference's `Range.Contains`: same family, in the subnet, and
    /// between rangeStart and rangeEnd inclusive.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.in_bounds(ip, Some(self.start), Some(self.end))
    }

    pub fn overlaps(&self, o: &Range) -> bool {
        if !addr::same_family(self.start, o.start) {
            return false;
        }
        self.contains(o.start)
            || self.contains(o.end)
            || o.contains(self.start)
            || o.contains(self.end)
    }

    /// Addresses never handed out even when inside [start, end]: the gateway,
    /// the network address and (IPv4) the broadcast address. The reference
    /// only skips the gateway; the other two can only be inside the range if
    /// rangeStart/rangeEnd name them explicitly, which no working network wants.
    pub fn is_excluded(&self, ip: IpAddr) -> bool {
        ip == self.gateway
            || ip == self.subnet.network()
            || (ip.is_ipv4() && ip == self.subnet.broadcast())
    }

    /// How many addresses of the range can be handed out at all.
    pub fn capacity(&self) -> u128 {
        let span = (to_u128(self.end) - to_u128(self.start)).saturating_add(1);
        let excluded: std::collections::BTreeSet<IpAddr> =
            [self.gateway, self.subnet.network(), self.subnet.broadcast()]
                .into_iter()
                .filter(|ip| self.contains(*ip) && self.is_excluded(*ip))
                .collect();
        span - excluded.len() as u128
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

/// Ranges that together provide one address per ADD (one family).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSet(pub Vec<Range>);

impl RangeSet {
    /// The reference's `RangeSet.Canonicalize` checks (the ranges themselves
    /// are already canonical): not empty, one family, no overlaps.
    pub fn new(ranges: Vec<Range>) -> Result<RangeSet, String> {
        let Some(first) = ranges.first() else {
            return Err("empty range set".into());
        };
        if ranges
            .iter()
            .any(|r| !addr::same_family(r.start, first.start))
        {
            return Err("mixed address families".into());
        }
        for (i, a) in ranges.iter().enumerate() {
            for b in &ranges[i + 1..] {
                if a.overlaps(b) {
                    return Err(format!("subnets {a} and {b} overlap"));
                }
            }
        }
        Ok(RangeSet(ranges))
    }

    pub fn ranges(&self) -> &[Range] {
        &self.0
    }

    pub fn range_for(&self, ip: IpAddr) -> Option<(usize, &Range)> {
        self.0.iter().enumerate().find(|(_, r)| r.contains(ip))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.range_for(ip).is_some()
    }

    pub fn overlaps(&self, o: &RangeSet) -> bool {
        self.0.iter().any(|a| o.0.iter().any(|b| a.overlaps(b)))
    }

    pub fn is_ipv4(&self) -> bool {
        self.0[0].start.is_ipv4()
    }

    pub fn capacity(&self) -> u128 {
        self.0
            .iter()
            .fold(0u128, |acc, r| acc.saturating_add(r.capacity()))
    }
}

impl fmt::Display for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(Range::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

/// The reference's `RangeIter`, step for step, so allocation order is
/// identical: start just after the range set's last reserved address (or at
/// the first range's start), walk to the end of each range, wrap to the next
/// range and around, skip the gateway, stop on coming back to the first
/// candidate. We additionally skip network/broadcast (see [`Range::is_excluded`]).
#[derive(Debug)]
pub struct RangeIter<'a> {
    set: &'a RangeSet,
    idx: usize,
    cur: Option<IpAddr>,
    start: Option<IpAddr>,
}

impl<'a> RangeIter<'a> {
    pub fn new(set: &'a RangeSet, last_reserved: Option<IpAddr>) -> Self {
        // A last reserved address outside the set (ranges changed) just
        // loses round-robin once, as in the reference.
        match last_reserved.and_then(|ip| set.range_for(ip).map(|(i, _)| (i, ip))) {
            Some((idx, ip)) => RangeIter {
                set,
                idx,
                cur: Some(ip),
                start: None,
            },
            None => RangeIter {
                set,
                idx: 0,
                cur: None,
                start: Some(set.0[0].start),
            },
        }
    }
}

impl<'a> Iterator for RangeIter<'a> {
    type Item = (IpAddr, &'a Range);

    fn next(&mut self) -> Option<Self::Item> {
        let set: &'a RangeSet = self.set;
        loop {
            let mut r = &set.0[self.idx];
            let Some(cur) = self.cur else {
                // First call without a last reserved address: rangeStart is
                // inclusive and is the loop's end marker.
                self.cur = Some(r.start);
                self.start = Some(r.start);
                if r.is_excluded(r.start) {
                    continue;
                }
                return Some((r.start, r));
            };
            let cur = if cur == r.end {
                self.idx = (self.idx + 1) % set.0.len();
                r = &set.0[self.idx];
                r.start
            } else {
                addr::next(cur)
            };
            self.cur = Some(cur);
            match self.start {
                None => self.start = Some(cur),
                Some(s) if s == cur => return None,
                Some(_) => {}
            }
            if r.is_excluded(cur) {
                continue;
            }
            return Some((cur, r));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn range(subnet: &str, start: Option<&str>, end: Option<&str>) -> Result<Range, String> {
        Range::new(subnet.parse().unwrap(), start.map(ip), end.map(ip), None)
    }

    #[test]
    fn defaults_match_reference() {
        let r = range("10.0.0.0/24", None, None).unwrap();
        assert_eq!(r.start, ip("10.0.0.1"));
        assert_eq!(r.end, ip("10.0.0.254"));
        assert_eq!(r.gateway, ip("10.0.0.1"));
        assert_eq!(r.capacity(), 253);
        // IPv6: no broadcast, the last address is allocatable.
        let r = range("fd00::/120", None, None).unwrap();
        assert_eq!(r.start, ip("fd00::1"));
        assert_eq!(r.end, ip("fd00::ff"));
        assert_eq!(r.capacity(), 254);
        let r = range("10.0.0.0/30", None, None).unwrap();
        assert_eq!(r.capacity(), 1);
    }

    #[test]
    fn rejects_tiny_and_bad_subnets() {
        for s in ["10.0.0.0/31", "10.0.0.1/32", "fd00::/127", "fd00::1/128"] {
            let e = range(s, None, None).unwrap_err();
            assert!(e.contains("too small"), "{s}: {e}");
        }
        assert!(range("10.0.0.5/24", None, None)
            .unwrap_err()
            .contains("host bits"));
        assert!(range("10.0.0.0/24", Some("10.0.1.5"), None)
            .unwrap_err()
            .contains("RangeStart"));
        assert!(range("10.0.0.0/24", None, Some("fd00::5"))
            .unwrap_err()
            .contains("RangeEnd"));
        assert!(range("10.0.0.0/24", Some("10.0.0.9"), Some("10.0.0.5"))
            .unwrap_err()
            .contains("after RangeEnd"));
        assert!(range("10.0.0.0/24", Some("10.0.0.5"), Some("10.0.0.5")).is_ok());
    }

    #[test]
    fn overlap_and_families() {
        let a = range("10.0.0.0/24", Some("10.0.0.10"), Some("10.0.0.20")).unwrap();
        let b = range("10.0.0.0/24", Some("10.0.0.20"), Some("10.0.0.30")).unwrap();
        let c = range("10.0.0.0/24", Some("10.0.0.21"), Some("10.0.0.30")).unwrap();
        let d = range("10.0.0.0/16", None, None).unwrap();
        let v6 = range("fd00::/64", None, None).unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c));
        assert!(d.overlaps(&a) && a.overlaps(&d));
        assert!(!a.overlaps(&v6));
        assert!(RangeSet::new(vec![a.clone(), b])
            .unwrap_err()
            .contains("overlap"));
        assert!(RangeSet::new(vec![a.clone(), v6])
            .unwrap_err()
            .contains("mixed"));
        assert!(RangeSet::new(vec![]).unwrap_err().contains("empty"));
        assert!(RangeSet::new(vec![a, c]).is_ok());
    }

    fn collect(set: &RangeSet, last: Option<&str>) -> Vec<String> {
        RangeIter::new(set, last.map(ip))
            .map(|(a, _)| a.to_string())
            .collect()
    }

    #[test]
    fn iteration_order_and_wrap_around() {
        let set = RangeSet::new(vec![range("10.0.0.0/29", None, None).unwrap()]).unwrap();
        // .1 is the gateway, .7 broadcast.
        assert_eq!(
            collect(&set, None),
            ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
        );
        // Round robin: after .4 comes .5, .6, wrap, .2, .3 and finally .4.
        assert_eq!(
            collect(&set, Some("10.0.0.4")),
            ["10.0.0.5", "10.0.0.6", "10.0.0.2", "10.0.0.3", "10.0.0.4"]
        );
        // A last reserved address outside the set is ignored.
        assert_eq!(collect(&set, Some("192.168.0.1")).len(), 5);
    }

    #[test]
    fn iteration_across_ranges() {
        let set = RangeSet::new(vec![
            range("10.0.0.0/24", Some("10.0.0.10"), Some("10.0.0.11")).unwrap(),
            range("10.0.1.0/24", Some("10.0.1.1"), Some("10.0.1.3")).unwrap(),
        ])
        .unwrap();
        assert_eq!(
            collect(&set, None),
            ["10.0.0.10", "10.0.0.11", "10.0.1.2", "10.0.1.3"]
        );
        assert_eq!(
            collect(&set, Some("10.0.1.2")),
            ["10.0.1.3", "10.0.0.10", "10.0.0.11", "10.0.1.2"]
        );
        // Starting on the range end moves to the next range.
        assert_eq!(
            collect(&set, Some("10.0.0.11")),
            ["10.0.1.2", "10.0.1.3", "10.0.0.10", "10.0.0.11"]
        );
    }

    #[test]
    fn explicit_network_and_broadcast_are_skipped() {
        let set = RangeSet::new(vec![range(
            "10.0.0.0/30",
            Some("10.0.0.0"),
            Some("10.0.0.3"),
        )
        .unwrap()])
        .unwrap();
        assert_eq!(collect(&set, None), ["10.0.0.2"]);
        assert_eq!(set.capacity(), 1);
    }

    #[test]
    fn only_gateway_yields_nothing() {
        let set = RangeSet::new(vec![range(
            "10.0.0.0/24",
            Some("10.0.0.1"),
            Some("10.0.0.1"),
        )
        .unwrap()])
        .unwrap();
        assert!(collect(&set, None).is_empty());
        assert!(collect(&set, Some("10.0.0.1")).is_empty());
        assert_eq!(set.capacity(), 0);
    }
}
