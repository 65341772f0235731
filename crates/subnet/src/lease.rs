//! A node's subnet lease: key `<ip>-<len>[&<ip6>-<len6>]` under
//! `<prefix>/subnets/`, value flannel's `LeaseAttrs` JSON.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use serde_json::{Map, Value};

use crate::json::{field, object, str_field, uint_field};
use crate::SubnetError;

/// One node's lease as the overlay sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The IPv4 subnet (absent in an IPv6-only network).
    pub subnet: Option<Ipv4Net>,
    /// The IPv6 subnet, when the network has one.
    pub subnet6: Option<Ipv6Net>,
    pub attrs: LeaseAttrs,
}

/// flannel's `LeaseAttrs`: `{"PublicIP":"…","PublicIPv6":null,
/// "BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"…"},
/// "BackendV6Data":…}`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeaseAttrs {
    /// `PublicIP`; flannel writes `"0.0.0.0"` for none, read back as `None`.
    pub public_ip: Option<Ipv4Addr>,
    pub public_ipv6: Option<Ipv6Addr>,
    pub backend_type: String,
    /// `BackendData` when it carries a VNI and a VTEP MAC (vxlan).
    pub backend_data: Option<VxlanBackendData>,
    pub backend_v6_data: Option<VxlanBackendData>,
}

/// The vxlan backend's part of a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanBackendData {
    pub vni: u32,
    /// The VTEP's MAC, `aa:bb:cc:dd:ee:ff`.
    pub vtep_mac: [u8; 6],
}

fn bad(key: &str, reason: impl Into<String>) -> SubnetError {
    SubnetError::Lease {
        key: key.into(),
        reason: reason.into(),
    }
}

impl Lease {
    /// The key under `<prefix>/subnets/`: `10.5.52.0-24`, `10.5.52.0-24&fc00::-64`.
    ///
    /// An IPv6-only lease is keyed `0.0.0.0-0&<ip6>-<len6>`, as flannel's
    /// `MakeSubnetKey` writes an empty IPv4 subnet.
    pub fn key(&self) -> String {
        let mut k = match self.subnet {
            Some(sn) => format!("{}-{}", sn.addr(), sn.prefix_len()),
            None => "0.0.0.0-0".to_string(),
        };
        if let Some(sn6) = self.subnet6 {
            let _ = write!(k, "&{}-{}", sn6.addr(), sn6.prefix_len());
        }
        k
    }

    /// The subnets a key names (flannel's `ParseSubnetKey`).
    pub fn parse_key(key: &str) -> Result<(Option<Ipv4Net>, Option<Ipv6Net>), SubnetError> {
        let (v4, v6) = match key.split_once('&') {
            Some((a, b)) => (a, Some(b)),
            None => (key, None),
        };
        let (ip, len) = addr_len::<Ipv4Addr>(key, v4, "IPv4")?;
        let sn = Ipv4Net::new(ip, len).map_err(|_| bad(key, "prefix length above 32"))?;
        // flannel keys an IPv6-only lease with an empty IPv4 part.
        let sn = (!(ip.is_unspecified() && len == 0)).then_some(sn);
        let sn6 = match v6 {
            None => None,
            Some(v6) => {
                let (ip, len) = addr_len::<Ipv6Addr>(key, v6, "IPv6")?;
                Some(Ipv6Net::new(ip, len).map_err(|_| bad(key, "prefix length above 128"))?)
            }
        };
        if sn.is_none() && sn6.is_none() {
            return Err(bad(key, "names no subnet"));
        }
        Ok((sn, sn6))
    }

    /// A lease from its key (the part after `<prefix>/subnets/`) and value.
    pub fn from_kv(key: &str, value: &[u8]) -> Result<Lease, SubnetError> {
        let (subnet, subnet6) = Lease::parse_key(key)?;
        let attrs = LeaseAttrs::from_json(value).map_err(|reason| bad(key, reason))?;
        Ok(Lease {
            subnet,
            subnet6,
            attrs,
        })
    }

    /// Whether two leases name the same subnets (flannel's `sameSubnet`).
    pub fn same_subnets(&self, other: &Lease) -> bool {
        self.subnet == other.subnet && self.subnet6 == other.subnet6
    }
}

/// One `<ip>-<len>` part of a key.
fn addr_len<A: std::str::FromStr>(
    key: &str,
    part: &str,
    family: &str,
) -> Result<(A, u8), SubnetError> {
    let (ip, len) = part.rsplit_once('-').ok_or_else(|| {
        bad(
            key,
            format!("expected <{family} address>-<prefix length>, got {part:?}"),
        )
    })?;
    let ip = ip
        .parse()
        .map_err(|_| bad(key, format!("{ip:?} is not an {family} address")))?;
    let len = len
        .parse()
        .map_err(|_| bad(key, format!("{len:?} is not a prefix length")))?;
    Ok((ip, len))
}

/// `aa:bb:cc:dd:ee:ff`, lower case, as Go's `net.HardwareAddr` prints.
pub fn format_mac(mac: &[u8; 6]) -> String {
    let mut s = String::with_capacity(17);
    for (i, b) in mac.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Parse `aa:bb:cc:dd:ee:ff` (or with `-`), any case.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split([':', '-']);
    for b in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

impl VxlanBackendData {
    /// `{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}`, flannel's field order.
    pub fn to_json(&self) -> String {
        format!(
            "{{\"VNI\":{},\"VtepMAC\":\"{}\"}}",
            self.vni,
            format_mac(&self.vtep_mac)
        )
    }

    /// Read backend data; `None` when it is not vxlan's (no VtepMAC).
    pub fn from_value(v: &Value) -> Result<Option<VxlanBackendData>, String> {
        let Value::Object(m) = v else {
            return Err(format!("backend data must be an object, not {v}"));
        };
        let Some(mac) = str_field(m, "VtepMAC")? else {
            return Ok(None);
        };
        let vtep_mac =
            parse_mac(mac).ok_or_else(|| format!("VtepMAC {mac:?} is not a MAC address"))?;
        let vni = uint_field(m, "VNI", u32::MAX as u64)?.unwrap_or(0) as u32;
        Ok(Some(VxlanBackendData { vni, vtep_mac }))
    }
}

impl LeaseAttrs {
    /// The value JSON, exactly as flanneld writes it: `PublicIP` always
    /// (`"0.0.0.0"` when none), `PublicIPv6` always (`null` when none), then
    /// `BackendType`, `BackendData`, `BackendV6Data`, each only when set.
    pub fn to_json(&self) -> String {
        let mut s = format!(
            "{{\"PublicIP\":\"{}\",\"PublicIPv6\":",
            self.public_ip.unwrap_or(Ipv4Addr::UNSPECIFIED)
        );
        match self.public_ipv6 {
            Some(ip) => {
                let _ = write!(s, "\"{ip}\"");
            }
            None => s.push_str("null"),
        }
        if !self.backend_type.is_empty() {
            // Through serde_json so that any string is escaped correctly.
            let _ = write!(
                s,
                ",\"BackendType\":{}",
                Value::String(self.backend_type.clone())
            );
        }
        if let Some(d) = &self.backend_data {
            let _ = write!(s, ",\"BackendData\":{}", d.to_json());
        }
        if let Some(d) = &self.backend_v6_data {
            let _ = write!(s, ",\"BackendV6Data\":{}", d.to_json());
        }
        s.push('}');
        s
    }

    /// Read a lease value (keys case-insensitive, as flannel reads them).
    pub fn from_json(json: &[u8]) -> Result<LeaseAttrs, String> {
        let m: Map<String, Value> = object(json)?;
        let public_ip = match str_field(&m, "PublicIP")? {
            None => None,
            Some(s) => {
                let ip: Ipv4Addr = s
                    .parse()
                    .map_err(|_| format!("PublicIP {s:?} is not an IPv4 address"))?;
                (!ip.is_unspecified()).then_some(ip)
            }
        };
        let public_ipv6 = match str_field(&m, "PublicIPv6")? {
            None => None,
            Some(s) => Some(
                s.parse()
                    .map_err(|_| format!("PublicIPv6 {s:?} is not an IPv6 address"))?,
            ),
        };
        let data = |key: &str| match field(&m, key) {
            None => Ok(None),
            Some(v) => VxlanBackendData::from_value(v).map_err(|e| format!("{key}: {e}")),
        };
        Ok(LeaseAttrs {
            public_ip,
            public_ipv6,
            backend_type: str_field(&m, "BackendType")?.unwrap_or("").to_string(),
            backend_data: data("BackendData")?,
            backend_v6_data: data("BackendV6Data")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x0a, 0x58, 0xc0, 0xa8, 0x01, 0xff];

    fn attrs() -> LeaseAttrs {
        LeaseAttrs {
            public_ip: Some("192.168.1.10".parse().unwrap()),
            public_ipv6: None,
            backend_type: "vxlan".into(),
            backend_data: Some(VxlanBackendData {
                vni: 1,
                vtep_mac: MAC,
            }),
            backend_v6_data: None,
        }
    }

    #[test]
    fn json_is_byte_for_byte_flannels() {
        assert_eq!(
            attrs().to_json(),
            r#"{"PublicIP":"192.168.1.10","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0a:58:c0:a8:01:ff"}}"#
        );
        let hostgw = LeaseAttrs {
            public_ip: Some("192.168.1.10".parse().unwrap()),
            backend_type: "host-gw".into(),
            ..Default::default()
        };
        assert_eq!(
            hostgw.to_json(),
            r#"{"PublicIP":"192.168.1.10","PublicIPv6":null,"BackendType":"host-gw"}"#
        );
        let dual = LeaseAttrs {
            public_ipv6: Some("fd00::10".parse().unwrap()),
            backend_v6_data: Some(VxlanBackendData {
                vni: 1,
                vtep_mac: MAC,
            }),
            ..attrs()
        };
        assert_eq!(
            dual.to_json(),
            r#"{"PublicIP":"192.168.1.10","PublicIPv6":"fd00::10","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0a:58:c0:a8:01:ff"},"BackendV6Data":{"VNI":1,"VtepMAC":"0a:58:c0:a8:01:ff"}}"#
        );
    }

    #[test]
    fn json_round_trips_and_reads_other_spellings() {
        let a = attrs();
        assert_eq!(LeaseAttrs::from_json(a.to_json().as_bytes()).unwrap(), a);
        let b = LeaseAttrs::from_json(
            br#"{"publicip":"192.168.1.10","backendtype":"vxlan","backenddata":{"vni":1,"vtepmac":"0A:58:C0:A8:01:FF"}}"#,
        )
        .unwrap();
        assert_eq!(b, a);
        // Another backend's data is kept out, not an error.
        let c = LeaseAttrs::from_json(
            br#"{"PublicIP":"0.0.0.0","BackendType":"wireguard","BackendData":{"PublicKey":"x"}}"#,
        )
        .unwrap();
        assert_eq!((c.public_ip, c.backend_data), (None, None));
        assert!(LeaseAttrs::from_json(br#"{"PublicIP":"nope"}"#)
            .unwrap_err()
            .contains("PublicIP"));
        assert!(
            LeaseAttrs::from_json(br#"{"PublicIP":"1.2.3.4","BackendData":{"VtepMAC":"zz"}}"#)
                .is_err()
        );
    }

    #[test]
    fn keys() {
        let mut l = Lease {
            subnet: Some("10.5.52.0/24".parse().unwrap()),
            subnet6: None,
            attrs: attrs(),
        };
        assert_eq!(l.key(), "10.5.52.0-24");
        l.subnet6 = Some("fc00:0:0:5::/64".parse().unwrap());
        assert_eq!(l.key(), "10.5.52.0-24&fc00:0:0:5::-64");
        assert_eq!(
            Lease::from_kv(&l.key(), l.attrs.to_json().as_bytes()).unwrap(),
            l
        );
        l.subnet = None;
        assert_eq!(l.key(), "0.0.0.0-0&fc00:0:0:5::-64");
        assert_eq!(Lease::parse_key(&l.key()).unwrap(), (None, l.subnet6));
        for k in [
            "10.5.52.0",
            "10.5.52.0-33",
            "x-24",
            "10.5.52.0-24&fc00::",
            "0.0.0.0-0",
        ] {
            let e = Lease::parse_key(k).unwrap_err().to_string();
            assert!(e.contains(k), "{e}");
        }
    }

    #[test]
    fn macs() {
        assert_eq!(format_mac(&MAC), "0a:58:c0:a8:01:ff");
        assert_eq!(parse_mac("0a-58-c0-a8-01-ff"), Some(MAC));
        assert_eq!(parse_mac("0a:58:c0:a8:01"), None);
        assert_eq!(parse_mac("0a:58:c0:a8:01:ff:00"), None);
    }
}
