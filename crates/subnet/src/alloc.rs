//! Choosing a free subnet for a node.
//!
//! flannel picks at random among the free subnets so that two nodes listing
//! the same leases at the same moment rarely race for one subnet; the store's
//! create-if-absent transaction settles the rare race. Here the caller gives
//! the randomness (`seed`, e.g. a hash of the node name and the time), so
//! this module stays pure: the search starts at `seed` modulo the number of
//! subnets and walks forward to the first free one, wrapping around.

use std::collections::HashSet;

use ipnet::{Ipv4Net, Ipv6Net};

use crate::{Lease, NetworkConfig, SubnetError};

/// The subnets to pick from: first address, step, count (all as u128).
struct Span {
    min: u128,
    step: u128,
    count: u128,
}

impl Span {
    fn new(min: u128, max: u128, len: u8, bits: u8) -> Span {
        let step = 1u128 << (bits - len);
        Span {
            min,
            step,
            count: (max - min) / step + 1,
        }
    }

    /// The first free subnet at or after index `seed % count`.
    fn pick(&self, seed: u64, taken: &HashSet<u128>) -> Option<u128> {
        if taken.len() as u128 >= self.count {
            // Only possible when every subnet is taken (taken holds in-range
            // subnets only).
            return None;
        }
        let start = seed as u128 % self.count;
        // At most taken.len() + 1 probes find a free one.
        (0..=taken.len() as u128)
            .map(|i| self.min + ((start + i) % self.count) * self.step)
            .find(|a| !taken.contains(a))
    }
}

/// A free IPv4 subnet of `cfg.subnet_len` between SubnetMin and SubnetMax
/// that is none of `taken`.
pub fn free_v4(
    cfg: &NetworkConfig,
    taken: impl IntoIterator<Item = Ipv4Net>,
    seed: u64,
) -> Result<Ipv4Net, SubnetError> {
    let (Some(net), Some(lo), Some(hi)) = (cfg.network, cfg.subnet_min, cfg.subnet_max) else {
        return Err(SubnetError::Config(
            "no IPv4 Network to allocate from".into(),
        ));
    };
    let span = Span::new(
        u32::from(lo) as u128,
        u32::from(hi) as u128,
        cfg.subnet_len,
        32,
    );
    let taken: HashSet<u128> = taken
        .into_iter()
        .filter(|s| cfg.fits_v4(s))
        .map(|s| u32::from(s.addr()) as u128)
        .collect();
    let a = span
        .pick(seed, &taken)
        .ok_or_else(|| SubnetError::Exhausted(format!("{net} (SubnetMin {lo}, SubnetMax {hi})")))?;
    Ok(Ipv4Net::new((a as u32).into(), cfg.subnet_len).expect("subnet_len <= 32"))
}

/// [`free_v4`] for the IPv6 network.
pub fn free_v6(
    cfg: &NetworkConfig,
    taken: impl IntoIterator<Item = Ipv6Net>,
    seed: u64,
) -> Result<Ipv6Net, SubnetError> {
    let (Some(net), Some(lo), Some(hi)) =
        (cfg.ipv6_network, cfg.ipv6_subnet_min, cfg.ipv6_subnet_max)
    else {
        return Err(SubnetError::Config(
            "no IPv6Network to allocate from".into(),
        ));
    };
    let span = Span::new(u128::from(lo), u128::from(hi), cfg.ipv6_subnet_len, 128);
    let taken: HashSet<u128> = taken
        .into_iter()
        .filter(|s| cfg.fits_v6(s))
        .map(|s| u128::from(s.addr()))
        .collect();
    let a = span.pick(seed, &taken).ok_or_else(|| {
        SubnetError::Exhausted(format!("{net} (IPv6SubnetMin {lo}, IPv6SubnetMax {hi})"))
    })?;
    Ok(Ipv6Net::new(a.into(), cfg.ipv6_subnet_len).expect("ipv6_subnet_len <= 128"))
}

/// Free subnets for every family the config enables, none of them used by
/// any of `leases` (in either family: a dual-stack lease blocks both).
pub fn free_subnets(
    cfg: &NetworkConfig,
    leases: &[Lease],
    seed: u64,
) -> Result<(Option<Ipv4Net>, Option<Ipv6Net>), SubnetError> {
    let v4 = if cfg.enable_ipv4 {
        Some(free_v4(cfg, leases.iter().filter_map(|l| l.subnet), seed)?)
    } else {
        None
    };
    let v6 = if cfg.enable_ipv6 {
        // A different stride for v6 so the two picks are not correlated.
        let seed6 = seed.rotate_left(29) ^ 0x9e37_79b9_7f4a_7c15;
        Some(free_v6(
            cfg,
            leases.iter().filter_map(|l| l.subnet6),
            seed6,
        )?)
    } else {
        None
    };
    Ok((v4, v6))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LeaseAttrs;

    fn cfg(s: &str) -> NetworkConfig {
        NetworkConfig::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn picks_within_min_max_and_skips_taken() {
        let c = cfg(
            r#"{"Network":"10.5.0.0/16","SubnetMin":"10.5.10.0","SubnetMax":"10.5.12.0","Backend":{"Type":"vxlan"}}"#,
        );
        let mut taken: Vec<Ipv4Net> = vec![];
        for seed in 0..3 {
            let s = free_v4(&c, taken.clone(), seed * 7).unwrap();
            assert!(c.fits_v4(&s), "{s}");
            assert!(!taken.contains(&s));
            taken.push(s);
        }
        taken.sort();
        assert_eq!(
            taken,
            ["10.5.10.0/24", "10.5.11.0/24", "10.5.12.0/24"].map(|s| s.parse().unwrap())
        );
        let e = free_v4(&c, taken, 1).unwrap_err().to_string();
        assert!(e.contains("no free subnet left in 10.5.0.0/16"), "{e}");
    }

    #[test]
    fn different_seeds_spread_over_the_range() {
        let c = cfg(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#);
        let picks: HashSet<Ipv4Net> = (0..50u64)
            .map(|s| free_v4(&c, [], s * 1_000_003).unwrap())
            .collect();
        assert!(picks.len() > 40, "{}", picks.len());
        // The first subnet (the network's own .0) is never handed out.
        assert!(!picks.contains(&"10.5.0.0/24".parse().unwrap()));
    }

    #[test]
    fn out_of_range_leases_do_not_count_as_taken() {
        let c = cfg(r#"{"Network":"10.5.0.0/28","Backend":{"Type":"vxlan"}}"#);
        // /28 → /30 subnets: .4, .8, .12 are usable.
        let taken: Vec<Ipv4Net> = ["10.5.0.4/30", "10.5.0.8/30", "10.9.0.0/30"]
            .map(|s| s.parse().unwrap())
            .to_vec();
        assert_eq!(
            free_v4(&c, taken, 0).unwrap(),
            "10.5.0.12/30".parse::<Ipv4Net>().unwrap()
        );
    }

    #[test]
    fn dual_stack_takes_both_families_into_account() {
        let c = cfg(
            r#"{"Network":"10.5.0.0/28","SubnetLen":30,"EnableIPv6":true,"IPv6Network":"fc00::/64","IPv6SubnetLen":66,"Backend":{"Type":"vxlan"}}"#,
        );
        let leases = vec![Lease {
            subnet: Some("10.5.0.4/30".parse().unwrap()),
            subnet6: Some("fc00::4000:0:0:0/66".parse().unwrap()),
            attrs: LeaseAttrs::default(),
        }];
        for seed in 0..20 {
            let (v4, v6) = free_subnets(&c, &leases, seed).unwrap();
            assert_ne!(v4, leases[0].subnet);
            assert_ne!(v6, leases[0].subnet6);
            assert!(c.fits_v6(&v6.unwrap()));
        }
    }
}
