//! Address arithmetic on `IpAddr` through `u128`, which is all the reference's
//! `ip.NextIP`/`ip.Cmp` need.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The address `v` in the family of `like`; IPv4 values are truncated to 32 bits.
pub fn from_u128(v: u128, like: IpAddr) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(v as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(v)),
    }
}

/// The next address, wrapping at the end of the family like Go's `ip.NextIP`.
pub fn next(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a).wrapping_add(1))),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a).wrapping_add(1))),
    }
}

pub fn same_family(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

/// Go's `net.IP.To4()` canonicalisation: an IPv4-mapped IPv6 address is the
/// IPv4 address, so both spellings name the same file.
pub fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_wraps_within_family() {
        let v4: IpAddr = "10.0.0.255".parse().unwrap();
        assert_eq!(next(v4), "10.0.1.0".parse::<IpAddr>().unwrap());
        let top: IpAddr = "255.255.255.255".parse().unwrap();
        assert_eq!(next(top), "0.0.0.0".parse::<IpAddr>().unwrap());
        let v6: IpAddr = "fd00::ffff".parse().unwrap();
        assert_eq!(next(v6), "fd00::1:0".parse::<IpAddr>().unwrap());
        assert_eq!(from_u128(to_u128(v6), v6), v6);
        assert_eq!(
            canonical("::ffff:10.1.2.3".parse().unwrap()),
            "10.1.2.3".parse::<IpAddr>().unwrap()
        );
    }
}
