//! The pod annotations that select networks, parsed and validated with
//! Multus's grammar: `k8s.v1.cni.cncf.io/networks` (short form
//! `[namespace/]name[@ifname]`, comma separated, or a JSON list) and
//! `v1.multus-cni.io/default-network`.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::MetaError;

/// The Kubernetes name rules, shared with the API client that puts these
/// names into URLs.
pub use plexus_k8s::{is_dns1123_label, is_dns1123_subdomain};

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

/// Multus's interface-name rule is the kernel's (at most 15 bytes, no
/// whitespace or '/'; ':' is refused too because the kernel and libcni
/// refuse it): plexus-netlink's one copy of it.
pub fn check_ifname(name: &str) -> Result<(), String> {
    match plexus_netlink::ifname::ifname_problem(name) {
        None => Ok(()),
        Some(_) => Err(format!(
            "invalid interface name \"{name}\": it must be 1 to 15 characters without spaces, '/' or ':'"
        )),
    }
}

/// A MAC address an interface can have, in the common forms Go's
/// net.ParseMAC reads (6 bytes as `aa:bb:cc:dd:ee:ff` or `aa-bb-...`).
/// Multicast (broadcast included) and all-zero addresses are refused: the
/// kernel refuses them on an interface, and a delegate would then fail
/// every command that carries them.
pub fn check_mac(mac: &str) -> Result<(), String> {
    let sep = if mac.contains('-') { '-' } else { ':' };
    let bytes: Option<Vec<u8>> = mac
        .split(sep)
        .map(|p| {
            (p.len() == 2)
                .then(|| u8::from_str_radix(p, 16).ok())
                .flatten()
        })
        .collect();
    match bytes {
        Some(b) if b.len() == 6 && b[0] & 1 == 1 => Err(format!(
            "invalid MAC address \"{mac}\": a multicast address cannot be an interface's address"
        )),
        Some(b) if b.len() == 6 && b.iter().all(|x| *x == 0) => Err(format!(
            "invalid MAC address \"{mac}\": the all-zero address cannot be an interface's address"
        )),
        Some(b) if b.len() == 6 => Ok(()),
        _ => Err(format!("invalid MAC address \"{mac}\"")),
    }
}

/// The `cni-args` keys the conventions give a meaning (`ips`, `mac`) must
/// have it: they go into every plugin's `args.cni`, and a plugin refusing
/// them refuses DEL too. Other keys pass through untouched.
fn check_cni_args(args: &Map<String, Value>) -> Result<(), String> {
    if let Some(ips) = args.get("ips") {
        let list = ips
            .as_array()
            .ok_or_else(|| format!("cni-args \"ips\" must be a list of addresses, got {ips}"))?;
        for ip in list {
            let s = ip
                .as_str()
                .ok_or_else(|| format!("cni-args \"ips\": {ip} is not a string"))?;
            check_ip(s).map_err(|e| format!("cni-args \"ips\": {e}"))?;
        }
    }
    if let Some(mac) = args.get("mac") {
        let s = mac
            .as_str()
            .ok_or_else(|| format!("cni-args \"mac\" must be a string, got {mac}"))?;
        check_mac(s).map_err(|e| format!("cni-args \"mac\": {e}"))?;
    }
    Ok(())
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
        // Names end up in API URLs and file lookups: Kubernetes names only.
        if !is_dns1123_subdomain(&n.name) {
            return Err(err(
                key,
                format!(
                    "\"{}\" is not a valid network name (a Kubernetes object name: lower case alphanumeric characters, '-' or '.')",
                    n.name
                ),
            ));
        }
        if !is_dns1123_label(&n.namespace) {
            return Err(err(
                key,
                format!(
                    "network \"{}\": \"{}\" is not a valid namespace (lower case alphanumeric characters or '-')",
                    n.name, n.namespace
                ),
            ));
        }
        let ctx = |m: String| err(key, format!("network \"{}\": {m}", n.name));
        if !n.interface.is_empty() {
            check_ifname(&n.interface).map_err(ctx)?;
        }
        if !n.mac.is_empty() {
            check_mac(&n.mac).map_err(ctx)?;
        }
        for (i, ip) in n.ips.iter().enumerate() {
            check_ip(ip).map_err(ctx)?;
            if n.ips[..i].contains(ip) {
                return Err(ctx(format!("address \"{ip}\" is requested twice")));
            }
        }
        if let Some(a) = &n.cni_args {
            check_cni_args(a).map_err(ctx)?;
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
            (r#"[{"name":"a","mac":"01:00:5e:00:00:01"}]"#, "multicast"),
            (r#"[{"name":"a","mac":"ff:ff:ff:ff:ff:ff"}]"#, "multicast"),
            (r#"[{"name":"a","mac":"00:00:00:00:00:00"}]"#, "all-zero"),
            (
                r#"[{"name":"a","cni-args":{"ips":"10.0.0.1"}}]"#,
                "must be a list",
            ),
            (
                r#"[{"name":"a","cni-args":{"ips":["x"]}}]"#,
                "invalid IP address",
            ),
            (r#"[{"name":"a","cni-args":{"ips":[5]}}]"#, "not a string"),
            (
                r#"[{"name":"a","cni-args":{"mac":"03:00:00:00:00:01"}}]"#,
                "multicast",
            ),
            (
                r#"[{"name":"a","ips":["10.0.0.1/24","10.0.0.1/24"]}]"#,
                "requested twice",
            ),
            (r#"[{"name":".."}]"#, "not a valid network name"),
            (r#"[{"name":"a?watch=true"}]"#, "not a valid network name"),
            (r#"[{"name":"a%2Fb"}]"#, "not a valid network name"),
            (
                r#"[{"name":"a","namespace":".."}]"#,
                "not a valid namespace",
            ),
            (
                r#"[{"name":"a","namespace":"a.b"}]"#,
                "not a valid namespace",
            ),
        ] {
            let e = short(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    /// Found by fuzz/fuzz_targets/networks_annotation.rs (its corpus keeps
    /// the input): a number in `cni-args` must reach the delegates as the
    /// user wrote it; serde_json's default float parsing was one unit in
    /// the last place off for some long literals, so writing the selection
    /// out and reading it again changed it.
    #[test]
    fn numbers_in_cni_args_survive_a_round_trip() {
        let v = format!(
            r#"[{{"name":"a","cni-args":{{"e":{}000}}}}]"#,
            "5".repeat(12) + "7" + &"5".repeat(69)
        );
        let n = short(&v).unwrap();
        let again = short(&serde_json::to_string(&n).unwrap()).unwrap();
        assert_eq!(again, n);
    }

    #[test]
    fn helpers() {
        assert!(is_dns1123_label("a") && is_dns1123_label("a-1"));
        assert!(!is_dns1123_label(&"a".repeat(64)));
        assert!(check_mac("02-00-00-00-00-0a").is_ok());
        assert!(check_ip("fd00::1/64").is_ok() && check_ip("fd00::1/129").is_err());
        assert!(check_ifname("net1").is_ok() && check_ifname("a:b").is_err());
        assert!(is_dns1123_subdomain("a.b-c") && !is_dns1123_subdomain("a..b"));
        assert!(!is_dns1123_subdomain(&"a".repeat(254)) && !is_dns1123_subdomain(""));
        assert!(check_mac("02:00:00:00:00:01").is_ok());
    }
}
