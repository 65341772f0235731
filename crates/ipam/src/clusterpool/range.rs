//! A range as whereabouts reads it, and which of its addresses may be
//! given: inside the CIDR, never its network or broadcast address (the
//! first and last of an IPv6 range too, as whereabouts), from `range_start`
//! to `range_end`, outside every `exclude`, never the gateway. Pure
//! arithmetic on address numbers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::IpamError;

/// An address as a number (IPv4 in the low 32 bits).
pub fn num(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The address numbered `n` in the family of `v4`.
pub fn addr(v4: bool, n: u128) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(n as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(n))
    }
}

/// The first and last address numbers of a CIDR.
pub fn bounds(net: &IpNet) -> (u128, u128) {
    (num(net.network()), num(net.broadcast()))
}

/// One range of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// The CIDR, host bits cleared.
    pub cidr: IpNet,
    first: u128,
    last: u128,
    exclude: Vec<(u128, u128)>,
    pub gateway: Option<IpAddr>,
}

fn invalid(msg: String) -> IpamError {
    IpamError::Invalid(msg)
}

impl Range {
    /// A range of `cidr` (host bits are ignored: `192.168.2.225/28` is
    /// `192.168.2.224/28`, as whereabouts reads it). `start`/`end` inside
    /// the CIDR narrow it (the network and broadcast addresses are never
    /// given even if named); outside it, or `end` before `start`, is an
    /// error, as is an exclusion or gateway of the other family.
    pub fn new(
        cidr: IpNet,
        start: Option<IpAddr>,
        end: Option<IpAddr>,
        exclude: &[IpNet],
        gateway: Option<IpAddr>,
    ) -> Result<Range, IpamError> {
        let cidr = cidr.trunc();
        let v4 = cidr.addr().is_ipv4();
        if cidr.max_prefix_len() - cidr.prefix_len() < 2 {
            return Err(invalid(format!(
                "range {cidr} is too small: it has no address besides its network and broadcast addresses"
            )));
        }
        let (net, bcast) = bounds(&cidr);
        let mut first = net + 1;
        let mut last = bcast - 1;
        for (what, a) in [("range_start", start), ("range_end", end)] {
            let Some(a) = a else { continue };
            if !cidr.contains(&a) {
                return Err(invalid(format!(
                    "{what} {a} is not inside the range {cidr}"
                )));
            }
        }
        if let Some(s) = start {
            first = first.max(num(s));
        }
        if let Some(e) = end {
            last = last.min(num(e));
        }
        if let (Some(s), Some(e)) = (start, end) {
            if num(e) < num(s) {
                return Err(invalid(format!(
                    "range_end {e} comes before range_start {s} in the range {cidr}"
                )));
            }
        }
        let mut ex = Vec::new();
        for e in exclude {
            if e.addr().is_ipv4() != v4 {
                return Err(invalid(format!(
                    "exclude {e} is not of the range {cidr}'s address family"
                )));
            }
            ex.push(bounds(&e.trunc()));
        }
        if let Some(g) = gateway {
            if g.is_ipv4() != v4 {
                return Err(invalid(format!(
                    "gateway {g} is not of the range {cidr}'s address family"
                )));
            }
        }
        Ok(Range {
            cidr,
            first,
            last,
            exclude: ex,
            gateway,
        })
    }

    pub fn is_ipv4(&self) -> bool {
        self.cidr.addr().is_ipv4()
    }

    /// The lowest and highest address that may be given (before exclusions).
    pub fn span(&self) -> (u128, u128) {
        (self.first, self.last)
    }

    /// Why `a` may not be given, or `None` when it may.
    pub fn refusal(&self, a: IpAddr) -> Option<String> {
        let c = self.cidr;
        if !c.contains(&a) {
            return Some(format!("{a} is not in the range {c}"));
        }
        let n = num(a);
        let (net, bcast) = bounds(&c);
        if n == net || n == bcast {
            return Some(format!(
                "{a} is the network or broadcast address of the range {c}"
            ));
        }
        if n < self.first || n > self.last {
            return Some(format!(
                "{a} is outside range_start..range_end of the range {c}"
            ));
        }
        if self.exclude.iter().any(|(lo, hi)| (*lo..=*hi).contains(&n)) {
            return Some(format!("{a} is excluded from the range {c}"));
        }
        if self.gateway == Some(a) {
            return Some(format!("{a} is the gateway of the range {c}"));
        }
        None
    }

    pub fn usable(&self, a: IpAddr) -> bool {
        a.is_ipv4() == self.is_ipv4() && self.refusal(a).is_none()
    }

    /// The lowest usable address number at or after `n`, jumping over
    /// whole exclusions (so a large one costs one step).
    pub fn next_usable(&self, mut n: u128) -> Option<u128> {
        n = n.max(self.first);
        loop {
            if n > self.last {
                return None;
            }
            if let Some((_, hi)) = self
                .exclude
                .iter()
                .find(|(lo, hi)| (*lo..=*hi).contains(&n))
            {
                n = hi.checked_add(1)?;
                continue;
            }
            if self.gateway.map(num) == Some(n) {
                n = n.checked_add(1)?;
                continue;
            }
            return Some(n);
        }
    }

    /// The lowest ordinal of `block` that is usable and not `taken`.
    pub fn first_free_in(&self, block: &IpNet, taken: impl Fn(u32) -> bool) -> Option<u32> {
        let (lo, hi) = bounds(block);
        let mut n = self.next_usable(lo)?;
        while n <= hi {
            let o = (n - lo) as u32;
            if !taken(o) {
                return Some(o);
            }
            n = self.next_usable(n + 1)?;
        }
        None
    }

    /// Whether `block` holds any usable address.
    pub fn touches(&self, block: &IpNet) -> bool {
        self.first_free_in(block, |_| false).is_some()
    }

    /// The cell of the grid `block_size` holding address number `n`.
    pub fn cell_of(&self, n: u128, block_size: u8) -> IpNet {
        // A prefix length within the family's bounds always makes a net.
        IpNet::new(addr(self.is_ipv4(), n), block_size)
            .map(|c| c.trunc())
            .unwrap_or(self.cidr)
    }

    /// A cell of the grid `block_size` that holds a usable address and is
    /// not `taken`, looking from address number `from` (wrapping round to
    /// the range's start once). Taken cells and exclusions are stepped over
    /// whole, so the search costs about one step per taken cell.
    pub fn free_cell(
        &self,
        block_size: u8,
        from: u128,
        taken: impl Fn(&IpNet) -> bool,
    ) -> Option<IpNet> {
        let start = self.next_usable(from).or_else(|| self.next_usable(0))?;
        let mut n = start;
        let mut wrapped = false;
        loop {
            if wrapped && n >= start {
                return None;
            }
            let cell = self.cell_of(n, block_size);
            if !taken(&cell) {
                return Some(cell);
            }
            let next = bounds(&cell)
                .1
                .checked_add(1)
                .and_then(|m| self.next_usable(m));
            match next {
                Some(m) => n = m,
                None if wrapped => return None,
                None => {
                    wrapped = true;
                    n = self.next_usable(0)?;
                }
            }
        }
    }

    /// How many addresses may be given (before any is taken), saturating.
    pub fn capacity(&self) -> u128 {
        let mut count = 0u128;
        let mut n = self.first;
        // Exclusions are few: walk usable stretches between them.
        while let Some(s) = self.next_usable(n) {
            let end = self
                .exclude
                .iter()
                .filter(|(lo, _)| *lo > s)
                .map(|(lo, _)| lo - 1)
                .chain(self.gateway.map(num).filter(|g| *g > s).map(|g| g - 1))
                .min()
                .unwrap_or(self.last)
                .min(self.last);
            count = count.saturating_add(end - s + 1);
            match end.checked_add(1) {
                Some(m) => n = m,
                None => break,
            }
        }
        count
    }
}

/// The default block size for a range: 16 addresses (/28, /124), smaller
/// for a small range so it has at least four blocks (a /28 gets /30s),
/// down to one address a block.
pub fn default_block_size(cidr: &IpNet) -> u8 {
    let (base, max) = match cidr {
        IpNet::V4(_) => (28, 32),
        IpNet::V6(_) => (124, 128),
    };
    base.max(cidr.prefix_len().saturating_add(2)).min(max)
}

/// A configured block size is a prefix length of at most 4096 addresses.
pub fn check_block_size(v4: bool, size: u8) -> Result<(), IpamError> {
    let (lo, hi) = if v4 { (20, 32) } else { (116, 128) };
    if !(lo..=hi).contains(&size) {
        return Err(invalid(format!(
            "block size /{size} is outside {lo}..{hi} for {}",
            if v4 { "IPv4" } else { "IPv6" }
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn whereabouts_reading_of_a_range() {
        // Host bits ignored; network and broadcast never given.
        let r = Range::new(net("192.168.2.225/28"), None, None, &[], None).unwrap();
        assert_eq!(r.cidr, net("192.168.2.224/28"));
        assert!(!r.usable(ip("192.168.2.224")) && !r.usable(ip("192.168.2.239")));
        assert!(r.usable(ip("192.168.2.225")) && r.usable(ip("192.168.2.238")));
        assert_eq!(r.capacity(), 14);
        // README's exclude example: .229/30 and .236/32 gone.
        let r = Range::new(
            net("192.168.2.225/28"),
            None,
            None,
            &[net("192.168.2.229/30"), net("192.168.2.236/32")],
            Some(ip("192.168.2.225")),
        )
        .unwrap();
        assert!(!r.usable(ip("192.168.2.229")) && !r.usable(ip("192.168.2.231")));
        assert!(r.refusal(ip("192.168.2.228")).unwrap().contains("excluded"));
        assert!(r.refusal(ip("192.168.2.225")).unwrap().contains("gateway"));
        assert!(r.usable(ip("192.168.2.226")));
        // 14 minus .228-.231 (4) minus .236 minus the gateway.
        assert_eq!(r.capacity(), 8);
        // IPv6: the first and last address are not given either.
        let r6 = Range::new(net("2001::/126"), None, None, &[], None).unwrap();
        assert_eq!(r6.capacity(), 2);
        assert!(!r6.usable(ip("2001::")) && !r6.usable(ip("2001::3")));
    }

    #[test]
    fn start_and_end_narrow_inside_and_are_refused_outside() {
        let r = Range::new(
            net("10.0.0.0/24"),
            Some(ip("10.0.0.0")),
            Some(ip("10.0.0.20")),
            &[],
            None,
        )
        .unwrap();
        assert_eq!(r.span(), (num(ip("10.0.0.1")), num(ip("10.0.0.20"))));
        assert!(r.refusal(ip("10.0.0.21")).unwrap().contains("range_end"));
        for (s, e, says) in [
            (Some("10.0.1.1"), None, "range_start"),
            (None, Some("10.0.1.1"), "range_end"),
            (Some("10.0.0.9"), Some("10.0.0.8"), "before"),
        ] {
            let e = Range::new(net("10.0.0.0/24"), s.map(ip), e.map(ip), &[], None).unwrap_err();
            assert!(e.to_string().contains(says), "{e}");
        }
        for bad in ["10.0.0.0/31", "10.0.0.1/32", "fd00::/127"] {
            let e = Range::new(net(bad), None, None, &[], None).unwrap_err();
            assert!(e.to_string().contains("too small"), "{bad}: {e}");
        }
        assert!(Range::new(net("10.0.0.0/24"), None, None, &[net("fd00::/64")], None).is_err());
        assert!(Range::new(net("10.0.0.0/24"), None, None, &[], Some(ip("fd00::1"))).is_err());
    }

    #[test]
    fn cells_with_room_are_found_stepping_over_taken_ones_and_exclusions() {
        let r = Range::new(net("10.0.0.0/28"), None, None, &[net("10.0.0.4/30")], None).unwrap();
        // /30 cells: .0 (usable .1-.3), .4 (excluded), .8, .12 (.12-.14).
        let taken = [net("10.0.0.0/30")];
        let cell = r.free_cell(30, 0, |c| taken.contains(c)).unwrap();
        assert_eq!(cell, net("10.0.0.8/30"));
        // From a spread start past the end: wraps round.
        let cell = r.free_cell(30, num(ip("10.0.0.13")), |c| {
            [net("10.0.0.12/30")].contains(c)
        });
        assert_eq!(cell, Some(net("10.0.0.0/30")));
        let all = [net("10.0.0.0/30"), net("10.0.0.8/30"), net("10.0.0.12/30")];
        assert_eq!(r.free_cell(30, 7, |c| all.contains(c)), None);
        // A cell bigger than the range: the one holding it.
        assert_eq!(r.free_cell(24, 0, |_| false), Some(net("10.0.0.0/24")));
        assert!(!r.touches(&net("10.0.0.4/30")));
        assert_eq!(r.first_free_in(&net("10.0.0.0/30"), |o| o == 1), Some(2));
        assert_eq!(r.first_free_in(&net("10.0.0.12/30"), |_| false), Some(0));
        assert_eq!(r.first_free_in(&net("10.0.0.12/30"), |o| o < 3), None);
        // A huge IPv6 range with a start far inside: found at once.
        let r6 = Range::new(net("fd00::/64"), Some(ip("fd00::1:0:0:0")), None, &[], None).unwrap();
        assert_eq!(
            r6.free_cell(124, 0, |_| false),
            Some(net("fd00::1:0:0:0/124"))
        );
    }

    #[test]
    fn default_block_sizes() {
        assert_eq!(default_block_size(&net("10.0.0.0/16")), 28);
        assert_eq!(default_block_size(&net("10.0.0.0/28")), 30);
        assert_eq!(default_block_size(&net("10.0.0.0/30")), 32);
        assert_eq!(default_block_size(&net("fd00::/64")), 124);
        assert_eq!(default_block_size(&net("fd00::/124")), 126);
        assert!(check_block_size(true, 19).is_err());
        assert!(check_block_size(false, 120).is_ok());
    }
}
