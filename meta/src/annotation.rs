//! The pod annotations that select networks, parsed and validated with
//! Multus's grammar: `k8s.v1.cni.cncf.io/networks` (short form
//! `[namespace/]name[@ifname]`, comma separated, or a JSON list) and
//! `v1.multus-cni.io/default-network`.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::MetaError;

pub const NETWORKS_KEY: &str = "k8s.v1.cni.cncf.io/networks";
pub const DEFAULT_NETWORK_KEY: &str = "v1.multus-cni.io/default-network";
pub const NETWORK_STATUS_KEY: &str = "k8s.v1.cni.cncf.io/network-status";

/// One element of the networks annotation (the Network Plumbing WG's
/// NetworkSelectionElement).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkSelection {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(
        rename = "interface",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub interface: String,
    #[serde(rename = "ips", default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    #[serde(rename = "mac", default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(
        rename = "default-route",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub default_route: Vec<IpAddr>,
    #[serde(rename = "cni-args", default, skip_serializing_if = "Option::is_none")]
    pub cni_args: Option<Map<String, Value>>,
    #[serde(
        rename = "portMappings",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub port_mappings: Option<Value>,
    #[serde(rename = "bandwidth", default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<Value>,
}

fn err(key: &'static str, msg: impl Into<String>) -> MetaError {
    MetaError::Annotation {
        key,
        msg: msg.into(),
    }
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    let ok = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.len() <= 63
        && ok(&b[0])
        && ok(&b[b.len() - 1])
        && b.iter().all(|c| ok(c) || *c == b'-')
}

/// Multus's interface-name rule: at most 15 bytes, no whitespace or '/'.
/// ':' is refused too because the kernel and libcni refuse it.
pub fn check_ifname(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 15
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c.is_whitespace() || c == '/' || c == ':')
    {
        return Err(format!(
            "invalid interface name \"{name}\": it must be 1 to 15 characters without spaces, '/' or ':'"
        ));
    }
    Ok(())
}

/// A MAC address as Go's net.ParseMAC reads the common forms: 6 bytes as
/// `aa:bb:cc:dd:ee:ff` or `aa-bb-...`.
pub fn check_mac(mac: &str) -> Result<(), String> {
    let sep = if mac.contains('-') { '-' } else { ':' };
    let parts: Vec<&str> = mac.split(sep).collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err(format!("invalid MAC address \"{mac}\""))
    }
}

/// An address with or without a prefix length.
pub fn check_ip(ip: &str) -> Result<(), String> {
    let ok = if ip.contains('/') {
        ip.parse::<ipnet::IpNet>().is_ok()
    } else {
        ip.parse::<IpAddr>().is_ok()
    };
    if ok {
        Ok(())
    } else if ip.contains('/') {
        Err(format!("invalid CIDR \"{ip}\""))
    } else {
        Err(format!("invalid IP address \"{ip}\""))
    }
}

fn parse_short_item(item: &str, key: &'static str) -> Result<NetworkSelection, MetaError> {
    let (namespace, rest) = match item.split('/').collect::<Vec<_>>().as_slice() {
        [name] => ("", *name),
        [ns, name] => (ns.trim(), *name),
        _ => {
            return Err(err(
                key,
                format!("\"{item}\": invalid network reference (more than one '/')"),
            ))
        }
    };
    let (name, interface) = match rest.split('@').collect::<Vec<_>>().as_slice() {
        [name] => (name.trim(), ""),
        [name, ifname] => (name.trim(), ifname.trim()),
        _ => {
            return Err(err(
                key,
                format!("\"{item}\": invalid network reference (more than one '@')"),
            ))
        }
    };
    if name.is_empty() {
        return Err(err(key, format!("\"{item}\": the network name is empty")));
    }
    for part in [namespace, name] {
        if !part.is_empty() && !is_dns1123_label(part) {
            return Err(err(
                key,
                format!(
                    "\"{item}\": \"{part}\" is not a valid name (lower case alphanumeric characters or '-', starting and ending with an alphanumeric character)"
                ),
            ));
        }
    }
    if !interface.is_empty() {
        check_ifname(interface).map_err(|m| err(key, format!("\"{item}\": {m}")))?;
    }
    Ok(NetworkSelection {
        name: name.into(),
        namespace: namespace.into(),
        interface: interface.into(),
        ..Default::default()
    })
}

/// Parse and validate a networks annotation. Elements without a namespace
/// get `default_namespace`.
pub fn parse_networks(
    value: &str,
    default_namespace: &str,
    key: &'static str,
) -> Result<Vec<NetworkSelection>, MetaError> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(Vec::new());
    }
    // Multus's test for the JSON form.
    let mut nets: Vec<NetworkSelection> = if value.contains(['[', '{', '"']) {
        serde_json::from_str(value)
            .map_err(|e| err(key, format!("not a valid JSON list of networks: {e}")))?
    } else {
        value
            .split(',')
            .map(|item| parse_short_item(item.trim(), key))
            .collect::<Result<_, _>>()?
    };
    for n in &mut nets {
        if n.name.is_empty() {
            return Err(err(key, "a network element has no \"name\""));
        }
        if n.name.contains('/') || (!n.namespace.is_empty() && n.namespace.contains('/')) {
            return Err(err(
                key,
                format!("\"{}\": names may not contain '/'", n.name),
            ));
        }
        if n.namespace.is_empty() {
            n.namespace = default_namespace.to_string();
        }
        let ctx = |m: String| err(key, format!("network \"{}\": {m}", n.name));
        if !n.interface.is_empty() {
            check_ifname(&n.interface).map_err(ctx)?;
        }
        if !n.mac.is_empty() {
            check_mac(&n.mac).map_err(ctx)?;
        }
        for ip in &n.ips {
            check_ip(ip).map_err(ctx)?;
        }
    }
    Ok(nets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn short(v: &str) -> Result<Vec<NetworkSelection>, MetaError> {
        parse_networks(v, "podns", NETWORKS_KEY)
    }

    #[test]
    fn short_form() {
        let n = short("net-a, other/net-b@fast0 ,net-c@x").unwrap();
        assert_eq!(n.len(), 3);
        assert_eq!(
            (
                n[0].namespace.as_str(),
                n[0].name.as_str(),
                n[0].interface.as_str()
            ),
            ("podns", "net-a", "")
        );
        assert_eq!(
            (
                n[1].namespace.as_str(),
                n[1].name.as_str(),
                n[1].interface.as_str()
            ),
            ("other", "net-b", "fast0")
        );
        assert_eq!(n[2].interface, "x");
        assert!(short("").unwrap().is_empty());
    }

    #[test]
    fn short_form_errors() {
        for bad in [
            "a/b/c",
            "a@b@c",
            "Net-A",
            "-net",
            "net-",
            "ns_x/net",
            "net@has space",
            "net@waytoolonginterface",
            "net@a/b",
            "net,,other",
            "ns/",
        ] {
            let e = short(bad).unwrap_err();
            assert!(matches!(e, MetaError::Annotation { .. }), "{bad}: {e}");
            assert_eq!(e.to_cni().code, 7, "{bad}");
        }
    }

    #[test]
    fn json_form() {
        let n = short(
            r#"[{"name":"a","interface":"data0","ips":["10.1.0.5/24","fd00::5"],"mac":"02:00:00:00:00:01",
                 "default-route":["10.1.0.1"],"cni-args":{"k":"v"},
                 "portMappings":[{"hostPort":80,"containerPort":8080}],"bandwidth":{"ingressRate":1000}},
                {"name":"b","namespace":"other"}]"#,
        )
        .unwrap();
        assert_eq!(n[0].namespace, "podns");
        assert_eq!(n[0].ips.len(), 2);
        assert_eq!(n[0].default_route, ["10.1.0.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(n[0].cni_args.as_ref().unwrap()["k"], "v");
        assert!(n[0].port_mappings.is_some() && n[0].bandwidth.is_some());
        assert_eq!(n[1].namespace, "other");
    }

    #[test]
    fn json_form_errors() {
        for (bad, says) in [
            (
                r#"[{"name":"a","ips":["10.1.0.300"]}]"#,
                "invalid IP address",
            ),
            (r#"[{"name":"a","ips":["10.1.0.3/33"]}]"#, "invalid CIDR"),
            (r#"[{"name":"a","mac":"02:00:00:00:00"}]"#, "invalid MAC"),
            (r#"[{"name":"a","mac":"zz:00:00:00:00:00"}]"#, "invalid MAC"),
            (
                r#"[{"name":"a","interface":"bad name"}]"#,
                "invalid interface",
            ),
            (r#"[{"name":"a","default-route":["x"]}]"#, "JSON"),
            (r#"[{"namespace":"a"}]"#, "JSON"),
            (r#"[{"name":""}]"#, "no \"name\""),
            (r#"{"name":"a"}"#, "JSON"),
            (r#"[{"name":"a"#, "JSON"),
        ] {
            let e = short(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn helpers() {
        assert!(is_dns1123_label("a") && is_dns1123_label("a-1"));
        assert!(!is_dns1123_label(&"a".repeat(64)));
        assert!(check_mac("02-00-00-00-00-0a").is_ok());
        assert!(check_ip("fd00::1/64").is_ok() && check_ip("fd00::1/129").is_err());
        assert!(check_ifname("net1").is_ok() && check_ifname("a:b").is_err());
    }
}
