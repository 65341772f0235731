//! `10.244.1.5/32`: an address and a prefix length, host bits kept (an
//! allocated address and the length the pod gets), serialised as that
//! string.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

impl Cidr {
    /// `None` when `prefix_len` is longer than the family allows.
    pub fn new(addr: IpAddr, prefix_len: u8) -> Option<Cidr> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix_len <= max).then_some(Cidr { addr, prefix_len })
    }

    /// The address alone: `/32` or `/128`.
    pub fn host(addr: IpAddr) -> Cidr {
        Cidr {
            addr,
            prefix_len: if addr.is_ipv4() { 32 } else { 128 },
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// Why a string is not a [`Cidr`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CidrError(String);

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid CIDR {:?}: want ADDRESS/PREFIXLEN", self.0)
    }
}

impl std::error::Error for CidrError {}

impl FromStr for Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let bad = || CidrError(s.to_owned());
        let (a, l) = s.split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = a.parse().map_err(|_| bad())?;
        // Digits only: u8's parser would take "+8".
        if l.is_empty() || !l.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let len: u8 = l.parse().map_err(|_| bad())?;
        Cidr::new(addr, len).ok_or_else(bad)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print() {
        for s in ["10.244.1.5/32", "10.244.0.0/16", "fd00::5/128", "::/0"] {
            assert_eq!(s.parse::<Cidr>().unwrap().to_string(), s);
        }
        for bad in [
            "10.0.0.1",
            "10.0.0.1/33",
            "fd00::/129",
            "x/8",
            "10.0.0.0/+8",
            "10.0.0.0/",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        assert_eq!(Cidr::host("fd00::1".parse().unwrap()).prefix_len, 128);
        let j = serde_json::to_string(&Cidr::host("10.0.0.1".parse().unwrap())).unwrap();
        assert_eq!(j, "\"10.0.0.1/32\"");
        assert!(serde_json::from_str::<Cidr>("\"10.0.0.1/40\"").is_err());
    }
}
