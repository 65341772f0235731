//! Ethernet MAC addresses.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// A 48-bit Ethernet address, written `aa:bb:cc:dd:ee:ff`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// `00:00:00:00:00:00`, used for VXLAN flood (BUM) FDB entries.
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// The raw bytes.
    pub fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// Parses a 6-byte slice (e.g. an IFLA_ADDRESS attribute).
    pub fn from_slice(b: &[u8]) -> Option<MacAddr> {
        <[u8; 6]>::try_from(b).ok().map(MacAddr)
    }

    /// True for a locally administered unicast address.
    pub fn is_local_unicast(&self) -> bool {
        self.0[0] & 0x02 != 0 && self.0[0] & 0x01 == 0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MacAddr({self})")
    }
}

impl FromStr for MacAddr {
    type Err = Error;

    /// Accepts `aa:bb:cc:dd:ee:ff` or `aa-bb-cc-dd-ee-ff` (any case).
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || {
            Error::invalid(
                "MAC address",
                s,
                "expected six hex bytes like 02:42:ac:11:00:02",
            )
        };
        let sep = if s.contains('-') { '-' } else { ':' };
        let mut out = [0u8; 6];
        let mut n = 0;
        for part in s.split(sep) {
            if n == 6 || part.len() != 2 {
                return Err(bad());
            }
            out[n] = u8::from_str_radix(part, 16).map_err(|_| bad())?;
            n += 1;
        }
        if n != 6 {
            return Err(bad());
        }
        Ok(MacAddr(out))
    }
}

impl From<[u8; 6]> for MacAddr {
    fn from(b: [u8; 6]) -> Self {
        MacAddr(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        let m: MacAddr = "02:42:AC:11:00:02".parse().unwrap();
        assert_eq!(m.0, [0x02, 0x42, 0xac, 0x11, 0x00, 0x02]);
        assert_eq!(m.to_string(), "02:42:ac:11:00:02");
        assert_eq!("02-42-ac-11-00-02".parse::<MacAddr>().unwrap(), m);
        assert!(m.is_local_unicast());
        for bad in [
            "",
            "02:42:ac:11:00",
            "02:42:ac:11:00:02:03",
            "0g:42:ac:11:00:02",
            "2:42:ac:11:00:02",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
        assert_eq!(MacAddr::from_slice(&[0; 6]), Some(MacAddr::ZERO));
        assert_eq!(MacAddr::from_slice(&[0; 4]), None);
    }
}
