//! Input checks shared by `plexusctl` and the agent: each says what is
//! wrong in words an operator can act on.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;

use crate::records::{BgpConfig, Encap, PeerSettings, Pool};
use crate::IpamError;

fn invalid(msg: String) -> IpamError {
    IpamError::Invalid(msg)
}

/// A pool, node or network name: 1..=253 characters of `[A-Za-z0-9._-]`,
/// starting with a letter or digit (a Kubernetes object name fits).
pub fn name(what: &str, s: &str) -> Result<(), IpamError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if s.is_empty() || s.len() > 253 {
        return Err(invalid(format!(
            "{what} name {s:?} must be 1 to 253 characters"
        )));
    }
    if !s.starts_with(|c: char| c.is_ascii_alphanumeric()) || !s.chars().all(ok_char) {
        return Err(invalid(format!(
            "{what} name {s:?} may hold only letters, digits, '.', '_' and '-', and must start with a letter or digit"
        )));
    }
    Ok(())
}

/// A pool's CIDR: parseable and with no host bits set.
pub fn pool_cidr(s: &str) -> Result<IpNet, IpamError> {
    let net: IpNet = s
        .parse()
        .map_err(|_| invalid(format!("{s:?} is not a CIDR (e.g. 10.244.0.0/16)")))?;
    if net.trunc() != net {
        return Err(invalid(format!(
            "{s} has host bits set: the network is {}",
            net.trunc()
        )));
    }
    Ok(net)
}

/// An ASN: 1..=4294967295 (4-byte ASNs, RFC 6793), as decimal text.
pub fn asn(s: &str) -> Result<u32, IpamError> {
    let n: u64 = s
        .trim()
        .parse()
        .map_err(|_| invalid(format!("AS number {s:?} is not a decimal number")))?;
    if n == 0 {
        return Err(invalid("AS number 0 is reserved (RFC 7607)".into()));
    }
    u32::try_from(n).map_err(|_| {
        invalid(format!(
            "AS number {n} is out of range: the largest is 4294967295"
        ))
    })
}

/// An IP address (a peer's, a node's).
pub fn address(what: &str, s: &str) -> Result<IpAddr, IpamError> {
    s.trim()
        .parse()
        .map_err(|_| invalid(format!("{what} {s:?} is not an IPv4 or IPv6 address")))
}

/// A route-reflector cluster ID: an IPv4-style dotted quad or a 32-bit
/// number, as BIRD and Calico accept.
pub fn cluster_id(s: &str) -> Result<Ipv4Addr, IpamError> {
    if let Ok(a) = s.parse::<Ipv4Addr>() {
        return Ok(a);
    }
    match s.parse::<u32>() {
        Ok(n) if n != 0 => Ok(Ipv4Addr::from(n)),
        _ => Err(invalid(format!(
            "route-reflector cluster ID {s:?} must be a dotted quad (244.0.0.1) or a non-zero 32-bit number"
        ))),
    }
}

/// A pool on its own: name, block size for its family and length, and an
/// encapsulation its family supports.
pub fn pool(p: &Pool) -> Result<(), IpamError> {
    name("pool", &p.name)?;
    let (lo, hi) = match p.cidr {
        IpNet::V4(_) => (20, 32),
        IpNet::V6(_) => (116, 128),
    };
    if !(lo..=hi).contains(&p.block_size) {
        return Err(invalid(format!(
            "block size {} is outside {lo}..{hi} for an IPv{} pool",
            p.block_size,
            if p.cidr.max_prefix_len() == 32 { 4 } else { 6 }
        )));
    }
    if p.block_size < p.cidr.prefix_len() {
        return Err(invalid(format!(
            "block size /{} is larger than the pool {} itself",
            p.block_size, p.cidr
        )));
    }
    if matches!(p.cidr, IpNet::V6(_)) && p.encap != Encap::None {
        return Err(invalid(format!(
            "encapsulation {} carries IPv4 only: an IPv6 pool takes --encap none",
            p.encap
        )));
    }
    Ok(())
}

/// The longest TCP MD5 key the kernel takes (`TCP_MD5SIG_MAXKEYLEN`).
pub const MD5_MAX_KEY: usize = 80;

/// BFD intervals we accept, in milliseconds: below 10 ms a userspace
/// daemon cannot keep time; above a minute BFD detects nothing BGP would
/// not.
pub const BFD_MS: std::ops::RangeInclusive<u32> = 10..=60_000;

/// A session's settings on their own (a peer's or the mesh's); filters are
/// checked by name only (the filter records on their own).
pub fn peer_settings(s: &PeerSettings) -> Result<(), IpamError> {
    if let Some(p) = &s.password {
        match (&p.value, &p.secret_key_ref) {
            (Some(v), None) => {
                if v.is_empty() || v.len() > MD5_MAX_KEY {
                    return Err(invalid(format!(
                        "a TCP MD5 password has 1 to {MD5_MAX_KEY} bytes"
                    )));
                }
            }
            (None, Some(r)) => {
                if r.name.is_empty() || r.key.is_empty() {
                    return Err(invalid(
                        "a password's secretKeyRef needs a name and a key".into(),
                    ));
                }
                if let Some(ns) = &r.namespace {
                    name("namespace", ns)?;
                }
            }
            _ => {
                return Err(invalid(
                    "a password is either a value or a secretKeyRef, exactly one".into(),
                ))
            }
        }
    }
    if let Some(b) = &s.bfd {
        for (what, ms) in [("minTxMs", b.min_tx_ms), ("minRxMs", b.min_rx_ms)] {
            if !BFD_MS.contains(&ms) {
                return Err(invalid(format!(
                    "BFD {what} {ms} is outside {}..{} ms",
                    BFD_MS.start(),
                    BFD_MS.end()
                )));
            }
        }
        if b.multiplier == 0 {
            return Err(invalid("the BFD multiplier is at least 1".into()));
        }
    }
    for f in &s.filters {
        name("filter", f)?;
    }
    if s.ttl_security == Some(0) {
        return Err(invalid("TTL security needs at least 1 hop".into()));
    }
    if s.max_prefixes == Some(0) {
        return Err(invalid("maxPrefixes is at least 1".into()));
    }
    Ok(())
}

/// The cluster's BGP settings on their own.
pub fn bgp_config(c: &BgpConfig) -> Result<(), IpamError> {
    if c.asn == 0 {
        return Err(invalid("AS number 0 is reserved".into()));
    }
    peer_settings(&c.mesh).map_err(|e| invalid(format!("mesh: {e}")))?;
    if c.max_paths == Some(0) {
        return Err(invalid("maxPaths is at least 1".into()));
    }
    for (kind, net) in c.service_ranges() {
        if net.trunc() != *net {
            return Err(invalid(format!(
                "service {kind} range {net} has host bits set"
            )));
        }
    }
    for a in &c.prefix_advertisements {
        if a.cidr.trunc() != a.cidr {
            return Err(invalid(format!(
                "prefixAdvertisements CIDR {} has host bits set",
                a.cidr
            )));
        }
    }
    Ok(())
}

/// A filter record on its own.
pub fn filter(f: &plexus_bgp::BgpFilter) -> Result<(), IpamError> {
    name("filter", &f.name)?;
    f.validate().map_err(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(cidr: &str, bs: u8, encap: Encap) -> Pool {
        Pool {
            name: "p".into(),
            cidr: cidr.parse().unwrap(),
            block_size: bs,
            nat_outgoing: false,
            encap,
            disabled: false,
        }
    }

    fn err<T: std::fmt::Debug>(r: Result<T, IpamError>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn asns() {
        assert_eq!(asn("64512").unwrap(), 64512);
        assert_eq!(asn("4294967295").unwrap(), u32::MAX);
        assert!(err(asn("0")).contains("reserved"));
        assert!(err(asn("4294967296")).contains("out of range"));
        assert!(err(asn("-1")).contains("not a decimal"));
        assert!(err(asn("AS1")).contains("not a decimal"));
    }

    #[test]
    fn pools() {
        assert!(pool(&p("10.0.0.0/16", 26, Encap::Ipip)).is_ok());
        assert!(pool(&p("fd00::/48", 122, Encap::None)).is_ok());
        assert!(err(pool(&p("10.0.0.0/16", 19, Encap::None))).contains("outside 20..32"));
        assert!(err(pool(&p("10.0.0.0/16", 33, Encap::None))).contains("outside 20..32"));
        assert!(err(pool(&p("fd00::/48", 64, Encap::None))).contains("outside 116..128"));
        assert!(err(pool(&p("10.0.0.0/28", 26, Encap::None))).contains("larger than the pool"));
        assert!(err(pool(&p("fd00::/48", 122, Encap::Ipip))).contains("IPv4 only"));
        assert!(err(pool_cidr("10.0.0.1/16")).contains("network is 10.0.0.0/16"));
        assert!(err(pool_cidr("10.0.0.0")).contains("not a CIDR"));
        assert!(err(name("pool", "a/b")).contains("only letters"));
        assert!(err(name("pool", "")).contains("1 to 253"));
    }

    #[test]
    fn addresses_and_cluster_ids() {
        assert!(address("peer address", "192.0.2.1").is_ok());
        assert!(address("peer address", "2001:db8::1").is_ok());
        assert!(err(address("peer address", "192.0.2.300")).contains("not an IPv4 or IPv6"));
        assert_eq!(
            cluster_id("244.0.0.1").unwrap(),
            Ipv4Addr::new(244, 0, 0, 1)
        );
        assert_eq!(cluster_id("1").unwrap(), Ipv4Addr::new(0, 0, 0, 1));
        assert!(err(cluster_id("x")).contains("dotted quad"));
        assert!(err(cluster_id("0")).contains("dotted quad"));
    }
}
