//! flannel's network config (`<prefix>/config`, or net-conf.json in
//! Kubernetes mode), parsed, defaulted and validated as flannel's
//! `ParseConfig` + `CheckNetworkConfig` do.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use serde_json::{Map, Value};

use crate::json::{bool_field, field, object, str_field, uint_field};
use crate::SubnetError;

/// The parsed, defaulted and validated network config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// `EnableIPv4` (default true, as flannel: then `Network` is required).
    pub enable_ipv4: bool,
    /// `EnableIPv6`.
    pub enable_ipv6: bool,
    /// `Network`.
    pub network: Option<Ipv4Net>,
    /// `SubnetLen`: default 24, or network prefix + 2 when the network is
    /// smaller than a /22, as flannel does.
    pub subnet_len: u8,
    /// `SubnetMin` / `SubnetMax`: default the second and the last subnet
    /// (always `Some` after parsing when IPv4 is enabled).
    pub subnet_min: Option<Ipv4Addr>,
    pub subnet_max: Option<Ipv4Addr>,
    /// `IPv6Network`, `IPv6SubnetLen` (default 64), `IPv6SubnetMin/Max`.
    pub ipv6_network: Option<Ipv6Net>,
    pub ipv6_subnet_len: u8,
    pub ipv6_subnet_min: Option<Ipv6Addr>,
    pub ipv6_subnet_max: Option<Ipv6Addr>,
    /// `Backend`.
    pub backend: Backend,
}

/// `Backend.Type` and its keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    Vxlan(VxlanConfig),
    HostGw,
}

impl Backend {
    /// The `BackendType` string leases carry (`vxlan`, `host-gw`).
    pub fn type_name(&self) -> &'static str {
        match self {
            Backend::Vxlan(_) => "vxlan",
            Backend::HostGw => "host-gw",
        }
    }
}

/// The vxlan backend's keys, defaulted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanConfig {
    /// `VNI`, default 1.
    pub vni: u32,
    /// `Port`, default 8472 (the Linux default, not IANA's 4789, as flannel).
    pub port: u16,
    /// `MTU`; `None` = underlay MTU - 50 (IPv4) / - 70 (IPv6).
    pub mtu: Option<u32>,
    /// `DirectRouting`: a node on the same L2 gets a plain route.
    pub direct_routing: bool,
    /// `Learning`: off by default; entries are static.
    pub learning: bool,
}

pub const DEFAULT_VNI: u32 = 1;
pub const DEFAULT_VXLAN_PORT: u16 = 8472;
const MAX_VNI: u64 = (1 << 24) - 1;

fn err(msg: impl Into<String>) -> SubnetError {
    SubnetError::Config(msg.into())
}

impl NetworkConfig {
    /// Parse, default and validate flannel's config JSON.
    pub fn parse(json: &[u8]) -> Result<NetworkConfig, SubnetError> {
        let obj = object(json).map_err(err)?;
        let enable_ipv4 = bool_field(&obj, "EnableIPv4").map_err(err)?.unwrap_or(true);
        let enable_ipv6 = bool_field(&obj, "EnableIPv6")
            .map_err(err)?
            .unwrap_or(false);
        if !enable_ipv4 && !enable_ipv6 {
            return Err(err(
                "EnableIPv4 and EnableIPv6 are both false: nothing to do",
            ));
        }
        let mut cfg = NetworkConfig {
            enable_ipv4,
            enable_ipv6,
            network: None,
            subnet_len: 0,
            subnet_min: None,
            subnet_max: None,
            ipv6_network: None,
            ipv6_subnet_len: 0,
            ipv6_subnet_min: None,
            ipv6_subnet_max: None,
            backend: parse_backend(&obj)?,
        };
        // Like Go's decoder, every present key is parsed (and must be well
        // formed) even when its family is disabled.
        let network = parse_v4_net(&obj, "Network")?;
        let subnet_len = uint_field(&obj, "SubnetLen", 32).map_err(err)?.unwrap_or(0) as u8;
        let subnet_min = parse_v4_addr(&obj, "SubnetMin")?;
        let subnet_max = parse_v4_addr(&obj, "SubnetMax")?;
        let network6 = parse_v6_net(&obj, "IPv6Network")?;
        let subnet_len6 = uint_field(&obj, "IPv6SubnetLen", 128)
            .map_err(err)?
            .unwrap_or(0) as u8;
        let subnet_min6 = parse_v6_addr(&obj, "IPv6SubnetMin")?;
        let subnet_max6 = parse_v6_addr(&obj, "IPv6SubnetMax")?;
        if enable_ipv4 {
            let network = network.ok_or_else(|| {
                err("Network is missing: set Network (e.g. \"10.244.0.0/16\"), or EnableIPv4 false")
            })?;
            let range = Range::check(
                Family::V4,
                u32::from(network.network()) as u128,
                network.prefix_len(),
                subnet_len,
                subnet_min.map(|a| u32::from(a) as u128),
                subnet_max.map(|a| u32::from(a) as u128),
            )?;
            cfg.network = Some(network);
            cfg.subnet_len = range.len;
            cfg.subnet_min = Some(Ipv4Addr::from(range.min as u32));
            cfg.subnet_max = Some(Ipv4Addr::from(range.max as u32));
        }
        if enable_ipv6 {
            let network6 = network6.ok_or_else(|| {
                err("EnableIPv6 is true but IPv6Network is missing (e.g. \"fc00::/48\")")
            })?;
            let range = Range::check(
                Family::V6,
                u128::from(network6.network()),
                network6.prefix_len(),
                subnet_len6,
                subnet_min6.map(u128::from),
                subnet_max6.map(u128::from),
            )?;
            cfg.ipv6_network = Some(network6);
            cfg.ipv6_subnet_len = range.len;
            cfg.ipv6_subnet_min = Some(Ipv6Addr::from(range.min));
            cfg.ipv6_subnet_max = Some(Ipv6Addr::from(range.max));
        }
        Ok(cfg)
    }

    /// Whether `sn` is a subnet this config could hand out: inside the
    /// network, of the subnet length, between SubnetMin and SubnetMax
    /// (flannel's `isSubnetConfigCompat`). A lease failing this is not reused.
    pub fn fits_v4(&self, sn: &Ipv4Net) -> bool {
        match (self.network, self.subnet_min, self.subnet_max) {
            (Some(n), Some(lo), Some(hi)) => {
                n.contains(sn)
                    && sn.prefix_len() == self.subnet_len
                    && sn.network() == sn.addr()
                    && sn.addr() >= lo
                    && sn.addr() <= hi
            }
            _ => false,
        }
    }

    /// [`fits_v4`](Self::fits_v4) for the IPv6 subnet.
    pub fn fits_v6(&self, sn: &Ipv6Net) -> bool {
        match (
            self.ipv6_network,
            self.ipv6_subnet_min,
            self.ipv6_subnet_max,
        ) {
            (Some(n), Some(lo), Some(hi)) => {
                n.contains(sn)
                    && sn.prefix_len() == self.ipv6_subnet_len
                    && sn.network() == sn.addr()
                    && sn.addr() >= lo
                    && sn.addr() <= hi
            }
            _ => false,
        }
    }

    /// Whether a lease's subnets fit this config in every enabled family.
    pub fn fits(&self, lease: &crate::Lease) -> bool {
        (!self.enable_ipv4 || lease.subnet.as_ref().is_some_and(|s| self.fits_v4(s)))
            && (!self.enable_ipv6 || lease.subnet6.as_ref().is_some_and(|s| self.fits_v6(s)))
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Family {
    V4,
    V6,
}

/// A family's subnet range, checked with flannel's rules and messages.
struct Range {
    len: u8,
    min: u128,
    max: u128,
}

impl Range {
    fn check(
        fam: Family,
        net: u128,
        prefix: u8,
        len: u8,
        min: Option<u128>,
        max: Option<u128>,
    ) -> Result<Range, SubnetError> {
        let (bits, def_len, key, net_key) = match fam {
            Family::V4 => (32u8, 24u8, "", "Network"),
            Family::V6 => (128u8, 64u8, "IPv6", "IPv6Network"),
        };
        let len = if len > 0 {
            // A tunnel and a bridge address per host, and at least four
            // subnets since the first one is never used.
            if len > bits - 2 {
                return Err(err(format!(
                    "{key}SubnetLen /{len} is too long: it must be at most /{}",
                    bits - 2
                )));
            }
            if len < prefix + 2 {
                return Err(err(format!(
                    "{net_key} /{prefix} is too small for {key}SubnetLen /{len}: the network must hold at least four subnets (SubnetLen at least /{})",
                    prefix + 2
                )));
            }
            len
        } else if prefix > bits - 4 {
            return Err(err(format!(
                "{net_key} /{prefix} is too small: the minimum useful prefix is /{}",
                bits - 4
            )));
        } else if prefix <= def_len - 2 {
            def_len
        } else {
            prefix + 2
        };
        let size: u128 = 1 << (bits - len);
        let net_size: u128 = if prefix == 0 && bits == 128 {
            u128::MAX
        } else {
            (1u128 << (bits - prefix)) - 1
        };
        let last = net + net_size; // the network's last address
        let inside = |a: u128| a >= net && a <= last;
        let name = |a: u128| match fam {
            Family::V4 => Ipv4Addr::from(a as u32).to_string(),
            Family::V6 => Ipv6Addr::from(a).to_string(),
        };
        let min = match min {
            Some(a) if a != 0 => {
                if !inside(a) {
                    return Err(err(format!(
                        "{key}SubnetMin {} is not in the range of the {net_key}",
                        name(a)
                    )));
                }
                a
            }
            // Skip the first subnet: its .0 is the network's own address.
            _ => net + size,
        };
        let max = match max {
            Some(a) if a != 0 => {
                if !inside(a) {
                    return Err(err(format!(
                        "{key}SubnetMax {} is not in the range of the {net_key}",
                        name(a)
                    )));
                }
                a
            }
            _ => last - (size - 1),
        };
        for (which, a) in [("Min", min), ("Max", max)] {
            if a & (size - 1) != 0 {
                return Err(err(format!(
                    "{key}Subnet{which} {} is not on a {key}SubnetLen (/{len}) boundary",
                    name(a)
                )));
            }
        }
        if min > max {
            return Err(err(format!(
                "{key}SubnetMin {} is above {key}SubnetMax {}",
                name(min),
                name(max)
            )));
        }
        Ok(Range { len, min, max })
    }
}

/// A string field parsed as `T` (`what` names T in the error).
fn parse_field<T: std::str::FromStr>(
    obj: &Map<String, Value>,
    key: &str,
    what: &str,
) -> Result<Option<T>, SubnetError> {
    let Some(s) = str_field(obj, key).map_err(err)? else {
        return Ok(None);
    };
    s.parse()
        .map(Some)
        .map_err(|_| err(format!("{key} {s:?} is not {what}")))
}

// Go's net.ParseCIDR: host bits are allowed and masked off.
fn parse_v4_net(obj: &Map<String, Value>, key: &str) -> Result<Option<Ipv4Net>, SubnetError> {
    Ok(
        parse_field::<Ipv4Net>(obj, key, "an IPv4 CIDR (e.g. \"10.244.0.0/16\")")?
            .map(|n| n.trunc()),
    )
}

fn parse_v6_net(obj: &Map<String, Value>, key: &str) -> Result<Option<Ipv6Net>, SubnetError> {
    Ok(parse_field::<Ipv6Net>(obj, key, "an IPv6 CIDR (e.g. \"fc00::/48\")")?.map(|n| n.trunc()))
}

fn parse_v4_addr(obj: &Map<String, Value>, key: &str) -> Result<Option<Ipv4Addr>, SubnetError> {
    parse_field(obj, key, "an IPv4 address")
}

fn parse_v6_addr(obj: &Map<String, Value>, key: &str) -> Result<Option<Ipv6Addr>, SubnetError> {
    parse_field(obj, key, "an IPv6 address")
}

fn parse_backend(obj: &Map<String, Value>) -> Result<Backend, SubnetError> {
    let be = match field(obj, "Backend") {
        None => {
            // flannel's default is "udp", which Plexus does not implement.
            return Err(err(
                "Backend is missing (flannel would default to \"udp\", which Plexus does not support): set Backend.Type to \"vxlan\" or \"host-gw\"",
            ));
        }
        Some(Value::Object(m)) => m,
        Some(v) => return Err(err(format!("Backend must be an object, not {v}"))),
    };
    let ty = str_field(be, "Type").map_err(err)?.unwrap_or("");
    match ty.to_ascii_lowercase().as_str() {
        "vxlan" => {
            let e = |m: String| err(format!("Backend: {m}"));
            let vni = uint_field(be, "VNI", MAX_VNI).map_err(e)?;
            let port = uint_field(be, "Port", u16::MAX as u64).map_err(e)?;
            let mtu = uint_field(be, "MTU", u32::MAX as u64).map_err(e)?;
            Ok(Backend::Vxlan(VxlanConfig {
                vni: vni.map_or(DEFAULT_VNI, |v| v as u32),
                // 0 means the kernel's default port, 8472.
                port: match port {
                    None | Some(0) => DEFAULT_VXLAN_PORT,
                    Some(p) => p as u16,
                },
                mtu: mtu.filter(|m| *m > 0).map(|m| m as u32),
                direct_routing: bool_field(be, "DirectRouting").map_err(e)?.unwrap_or(false),
                learning: bool_field(be, "Learning").map_err(e)?.unwrap_or(false),
            }))
        }
        "host-gw" => Ok(Backend::HostGw),
        "" => Err(err(
            "Backend.Type is missing: set it to \"vxlan\" or \"host-gw\"",
        )),
        other => Err(err(format!(
            "unknown backend type {other:?}: Plexus supports \"vxlan\" and \"host-gw\""
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<NetworkConfig, SubnetError> {
        NetworkConfig::parse(s.as_bytes())
    }

    fn msg(s: &str) -> String {
        parse(s).unwrap_err().to_string()
    }

    #[test]
    fn flannel_default_config() {
        let c = parse(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#).unwrap();
        assert!(c.enable_ipv4 && !c.enable_ipv6);
        assert_eq!(c.network, Some("10.5.0.0/16".parse().unwrap()));
        assert_eq!(c.subnet_len, 24);
        assert_eq!(c.subnet_min, Some("10.5.1.0".parse().unwrap()));
        assert_eq!(c.subnet_max, Some("10.5.255.0".parse().unwrap()));
        assert_eq!(
            c.backend,
            Backend::Vxlan(VxlanConfig {
                vni: 1,
                port: 8472,
                mtu: None,
                direct_routing: false,
                learning: false
            })
        );
    }

    #[test]
    fn keys_match_case_insensitively_as_go_does() {
        let c = parse(
            r#"{"network":"10.5.0.0/16","SUBNETLEN":26,"backend":{"type":"vxlan","vni":4,"port":4789,"mtu":1400,"directrouting":true,"Learning":true}}"#,
        )
        .unwrap();
        assert_eq!(c.subnet_len, 26);
        assert_eq!(
            c.backend,
            Backend::Vxlan(VxlanConfig {
                vni: 4,
                port: 4789,
                mtu: Some(1400),
                direct_routing: true,
                learning: true
            })
        );
    }

    #[test]
    fn subnet_len_defaults_follow_flannel() {
        // /22 and larger: /24 per host.
        assert_eq!(
            parse(r#"{"Network":"10.0.0.0/22","Backend":{"Type":"host-gw"}}"#)
                .unwrap()
                .subnet_len,
            24
        );
        // smaller than /22: prefix + 2.
        let c = parse(r#"{"Network":"10.0.0.0/23","Backend":{"Type":"host-gw"}}"#).unwrap();
        assert_eq!(c.subnet_len, 25);
        assert_eq!(c.subnet_min, Some("10.0.0.128".parse().unwrap()));
        assert_eq!(c.subnet_max, Some("10.0.1.128".parse().unwrap()));
        assert_eq!(
            parse(r#"{"Network":"10.0.0.0/28","Backend":{"Type":"host-gw"}}"#)
                .unwrap()
                .subnet_len,
            30
        );
        // host bits are masked off, as Go's ParseCIDR does.
        let c = parse(r#"{"Network":"10.5.7.9/16","Backend":{"Type":"host-gw"}}"#).unwrap();
        assert_eq!(c.network, Some("10.5.0.0/16".parse().unwrap()));
    }

    #[test]
    fn a_network_too_small_is_a_clear_error() {
        let m = msg(r#"{"Network":"10.0.0.0/29","Backend":{"Type":"vxlan"}}"#);
        assert!(m.contains("too small") && m.contains("/28"), "{m}");
        let m = msg(r#"{"Network":"10.0.0.0/24","SubnetLen":25,"Backend":{"Type":"vxlan"}}"#);
        assert!(m.contains("at least four subnets"), "{m}");
        let m = msg(r#"{"Network":"10.0.0.0/16","SubnetLen":31,"Backend":{"Type":"vxlan"}}"#);
        assert!(m.contains("at most /30"), "{m}");
    }

    #[test]
    fn subnet_min_max_are_checked() {
        let c = parse(
            r#"{"Network":"10.5.0.0/16","SubnetMin":"10.5.10.0","SubnetMax":"10.5.20.0","Backend":{"Type":"vxlan"}}"#,
        )
        .unwrap();
        assert_eq!(c.subnet_min, Some("10.5.10.0".parse().unwrap()));
        assert_eq!(c.subnet_max, Some("10.5.20.0".parse().unwrap()));
        let m =
            msg(r#"{"Network":"10.5.0.0/16","SubnetMin":"10.6.0.0","Backend":{"Type":"vxlan"}}"#);
        assert!(m.contains("SubnetMin 10.6.0.0 is not in the range"), "{m}");
        let m =
            msg(r#"{"Network":"10.5.0.0/16","SubnetMax":"10.5.3.7","Backend":{"Type":"vxlan"}}"#);
        assert!(m.contains("boundary"), "{m}");
        let m = msg(
            r#"{"Network":"10.5.0.0/16","SubnetMin":"10.5.9.0","SubnetMax":"10.5.3.0","Backend":{"Type":"vxlan"}}"#,
        );
        assert!(m.contains("above"), "{m}");
    }

    #[test]
    fn backends() {
        let c = parse(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"host-gw"}}"#).unwrap();
        assert_eq!(c.backend, Backend::HostGw);
        assert_eq!(c.backend.type_name(), "host-gw");
        let m = msg(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"wireguard"}}"#);
        assert!(m.contains("unknown backend type \"wireguard\""), "{m}");
        let m = msg(r#"{"Network":"10.5.0.0/16"}"#);
        assert!(m.contains("Backend is missing"), "{m}");
        let m = msg(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","VNI":16777216}}"#);
        assert!(m.contains("VNI"), "{m}");
        let m = msg(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","Port":"x"}}"#);
        assert!(m.contains("Port"), "{m}");
    }

    #[test]
    fn missing_or_bad_network() {
        assert!(msg(r#"{"Backend":{"Type":"vxlan"}}"#).contains("Network is missing"));
        assert!(msg(r#"{"Network":"fc00::/48","Backend":{"Type":"vxlan"}}"#).contains("IPv4 CIDR"));
        assert!(msg("[1]").contains("JSON object"));
        assert!(msg("{").contains("not valid JSON"));
        assert!(
            msg(r#"{"Network":"10.5.0.0/16","EnableIPv6":"yes","Backend":{"Type":"vxlan"}}"#)
                .contains("EnableIPv6")
        );
    }

    #[test]
    fn ipv6_defaults_and_dual_stack() {
        let c = parse(
            r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}"#,
        )
        .unwrap();
        assert_eq!(c.ipv6_subnet_len, 64);
        assert_eq!(c.ipv6_subnet_min, Some("fc00:0:0:1::".parse().unwrap()));
        assert_eq!(c.ipv6_subnet_max, Some("fc00:0:0:ffff::".parse().unwrap()));
        let c = parse(
            r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/120","Backend":{"Type":"vxlan"}}"#,
        )
        .unwrap();
        assert!(!c.enable_ipv4 && c.network.is_none());
        assert_eq!(c.ipv6_subnet_len, 122);
        assert!(
            msg(r#"{"EnableIPv6":true,"EnableIPv4":false,"Backend":{"Type":"vxlan"}}"#)
                .contains("IPv6Network is missing")
        );
        assert!(msg(r#"{"EnableIPv6":true,"EnableIPv4":false,"IPv6Network":"fc00::/125","Backend":{"Type":"vxlan"}}"#)
            .contains("/124"));
    }

    #[test]
    fn fits_checks_network_length_and_range() {
        let c = parse(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#).unwrap();
        assert!(c.fits_v4(&"10.5.52.0/24".parse().unwrap()));
        assert!(!c.fits_v4(&"10.5.0.0/24".parse().unwrap()));
        assert!(!c.fits_v4(&"10.5.52.0/25".parse().unwrap()));
        assert!(!c.fits_v4(&"10.6.52.0/24".parse().unwrap()));
    }
}
