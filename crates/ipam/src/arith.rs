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
/// past the pool's end.
pub fn nth_block(pool: &IpNet, block_size: u8, index: u128) -> Option<IpNet> {
    let bits = u32::from(block_size - pool.prefix_len());
    if bits < 128 && index >= (1u128 << bits) {
        return None;
    }
    let host_bits = u32::from(pool.max_prefix_len() - block_size);
    let step = 1u128.checked_shl(host_bits)?;
    let addr = offset(pool.network(), index.checked_mul(step)?);
    IpNet::new(addr, block_size).ok()
}

/// Whether two CIDRs share an address.
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(overlaps(&p, &"10.244.0.128/25".parse().unwrap()));
        assert!(overlaps(&"10.0.0.0/8".parse().unwrap(), &p));
        assert!(!overlaps(&p, &"10.244.1.0/24".parse().unwrap()));
    }
}
