//! Address arithmetic: the n-th block of a pool, an address at an offset.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// `base + n` (wrapping within the family; callers stay inside a CIDR).
pub fn offset(base: IpAddr, n: u128) -> IpAddr {
    match base {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a).wrapping_add(n as u32))),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a).wrapping_add(n))),
    }
}

/// How far `addr` is past `base`: the inverse of [`offset`]; `None` across
/// families or below `base`.
pub fn distance(base: IpAddr, addr: IpAddr) -> Option<u128> {
    match (base, addr) {
        (IpAddr::V4(b), IpAddr::V4(a)) => u32::from(a).checked_sub(u32::from(b)).map(u128::from),
        (IpAddr::V6(b), IpAddr::V6(a)) => u128::from(a).checked_sub(u128::from(b)),
        _ => None,
    }
}

/// The `index`-th block of prefix length `block_size` in `pool`, or `None`
/// past the pool's end (and for a block size no block of the pool has:
/// shorter than the pool's own prefix or longer than an address).
pub fn nth_block(pool: &IpNet, block_size: u8, index: u128) -> Option<IpNet> {
    let bits = u32::from(block_size.checked_sub(pool.prefix_len())?);
    if bits < 128 && index >= (1u128 << bits) {
        return None;
    }
    let host_bits = u32::from(pool.max_prefix_len().checked_sub(block_size)?);
    let step = 1u128.checked_shl(host_bits)?;
    let addr = offset(pool.network(), index.checked_mul(step)?);
    IpNet::new(addr, block_size).ok()
}

/// The block indices of a pool with `2^bits` blocks in the order a node
/// tries them: from `start` (taken modulo the count) up, wrapping around,
/// each once.
pub fn block_order(bits: u32, start: u64) -> impl Iterator<Item = u128> {
    let count = 1u128.checked_shl(bits);
    let start = count.map_or(0, |c| u128::from(start) % c);
    let end = count.unwrap_or(u128::MAX);
    (0..end).map(move |i| match count {
        // start + i without overflow: i < c and start < c.
        Some(c) if i >= c - start => i - (c - start),
        _ => start + i,
    })
}

/// A stable 64-bit FNV-1a hash: where a node starts looking for a free
/// block after losing a race (the same every run, different per node).
pub fn spread(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Whether two CIDRs share an address.
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_order_wraps_from_the_start_and_visits_each_once() {
        assert_eq!(block_order(2, 0).collect::<Vec<_>>(), [0, 1, 2, 3]);
        assert_eq!(block_order(2, 6).collect::<Vec<_>>(), [2, 3, 0, 1]);
        assert_eq!(block_order(0, 9).collect::<Vec<_>>(), [0]);
        let big: Vec<u128> = block_order(127, u64::MAX).take(2).collect();
        assert_eq!(big, [u128::from(u64::MAX), u128::from(u64::MAX) + 1]);
        assert_ne!(spread("node1"), spread("node2"));
        assert_eq!(spread(""), 0xcbf2_9ce4_8422_2325);
    }

    #[test]
    fn distance_inverts_offset() {
        let b: IpAddr = "10.96.0.64".parse().unwrap();
        assert_eq!(distance(b, offset(b, 5)), Some(5));
        assert_eq!(distance(b, "10.96.0.63".parse().unwrap()), None);
        assert_eq!(distance(b, "fd00::1".parse().unwrap()), None);
        let b6: IpAddr = "fd00::".parse().unwrap();
        assert_eq!(distance(b6, "fd00::1:0".parse().unwrap()), Some(65536));
    }

    #[test]
    fn blocks_of_a_pool() {
        let p: IpNet = "10.244.0.0/24".parse().unwrap();
        assert_eq!(nth_block(&p, 26, 0), Some("10.244.0.0/26".parse().unwrap()));
        assert_eq!(
            nth_block(&p, 26, 3),
            Some("10.244.0.192/26".parse().unwrap())
        );
        assert_eq!(nth_block(&p, 26, 4), None);
        assert_eq!(nth_block(&p, 24, 0), Some(p));
        let p6: IpNet = "fd00::/64".parse().unwrap();
        assert_eq!(
            nth_block(&p6, 122, 2),
            Some("fd00::80/122".parse().unwrap())
        );
        // Found by fuzz/fuzz_targets/routed_records.rs: a pool record
        // written past the checks, with blocks larger than the pool (or
        // longer than an address), has no blocks rather than a wrapped
        // subtraction's (a /13 "block" of a /16 pool).
        assert_eq!(nth_block(&"10.244.0.0/16".parse().unwrap(), 13, 0), None);
        assert_eq!(nth_block(&p, 33, 0), None);
        assert_eq!(nth_block(&p6, 129, 0), None);
        assert!(overlaps(&p, &"10.244.0.128/25".parse().unwrap()));
        assert!(overlaps(&"10.0.0.0/8".parse().unwrap(), &p));
        assert!(!overlaps(&p, &"10.244.1.0/24".parse().unwrap()));
    }
}
