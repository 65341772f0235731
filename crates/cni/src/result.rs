//! CNI results. The in-memory model is the 1.1.0 result; [`CniResult::to_value`]
//! writes any supported version's format and [`CniResult::from_value`] reads
//! any of them, so a chain can mix plugins of different versions.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::CniError;
use crate::version::SpecVersion;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub dns: Dns,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The netns path for container interfaces; empty for host interfaces.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
    #[serde(
        rename = "socketPath",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub socket_path: String,
    #[serde(rename = "pciID", default, skip_serializing_if = "String::is_empty")]
    pub pci_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// Address with prefix length, host bits kept (e.g. 10.1.0.5/24).
    pub address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u8>,
}

impl Route {
    pub fn new(dst: IpNet, gw: Option<IpAddr>) -> Self {
        Route {
            dst,
            gw,
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_empty()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

/// Fields that 1.1.0 added; older results must not carry them.
const IFACE_1_1_FIELDS: &[&str] = &["mtu", "socketPath", "pciID"];
const ROUTE_1_1_FIELDS: &[&str] = &["mtu", "advmss", "priority", "table", "scope"];

impl CniResult {
    /// Read a result in any supported format (the `cniVersion` it carries is
    /// not needed: pre-1.0 `ips[].version` is simply ignored).
    pub fn from_value(v: &Value) -> Result<Self, CniError> {
        serde_json::from_value(v.clone())
            .map_err(|e| CniError::decode(format!("cannot decode CNI result: {e}")))
    }

    pub fn from_slice(bytes: &[u8]) -> Result<Self, CniError> {
        let v: Value = serde_json::from_slice(bytes)
            .map_err(|e| CniError::decode(format!("result is not JSON: {e}")))?;
        Self::from_value(&v)
    }

    /// The result as `version`'s format, with `cniVersion` set.
    pub fn to_value(&self, version: SpecVersion) -> Value {
        let mut v = serde_json::to_value(self).expect("result serializes");
        let obj = v.as_object_mut().expect("result is an object");
        if version < SpecVersion::V1_1_0 {
            strip(obj.get_mut("interfaces"), IFACE_1_1_FIELDS);
            strip(obj.get_mut("routes"), ROUTE_1_1_FIELDS);
        }
        if version.result_has_ip_version() {
            if let Some(Value::Array(ips)) = obj.get_mut("ips") {
                for ip in ips.iter_mut().filter_map(Value::as_object_mut) {
                    let fam = match ip.get("address").and_then(Value::as_str) {
                        Some(a) if a.contains(':') => "6",
                        _ => "4",
                    };
                    ip.insert("version".into(), Value::String(fam.into()));
                }
            }
        }
        let mut out = serde_json::Map::new();
        out.insert("cniVersion".into(), Value::String(version.as_str().into()));
        out.extend(std::mem::take(obj));
        Value::Object(out)
    }

    /// The interface index `name` has in `interfaces`, if it is there and (when
    /// `sandbox` is given) in that sandbox.
    pub fn interface_index(&self, name: &str, sandbox: Option<&str>) -> Option<usize> {
        self.interfaces
            .iter()
            .position(|i| i.name == name && sandbox.is_none_or(|s| i.sandbox == s))
    }
}

fn strip(list: Option<&mut Value>, fields: &[&str]) {
    if let Some(Value::Array(items)) = list {
        for item in items.iter_mut().filter_map(Value::as_object_mut) {
            for f in fields {
                item.remove(*f);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> CniResult {
        CniResult {
            interfaces: vec![
                Interface {
                    name: "cni0".into(),
                    mac: "aa:bb:cc:dd:ee:ff".into(),
                    mtu: Some(1500),
                    ..Default::default()
                },
                Interface {
                    name: "eth0".into(),
                    mac: "aa:bb:cc:dd:ee:01".into(),
                    sandbox: "/var/run/netns/p".into(),
                    socket_path: "/s".into(),
                    pci_id: "0000:00:01.0".into(),
                    mtu: Some(9000),
                },
            ],
            ips: vec![
                IpConfig {
                    address: "10.1.0.5/24".parse().unwrap(),
                    gateway: Some("10.1.0.1".parse().unwrap()),
                    interface: Some(1),
                },
                IpConfig {
                    address: "fd00::5/64".parse().unwrap(),
                    gateway: None,
                    interface: Some(1),
                },
            ],
            routes: vec![Route {
                dst: "0.0.0.0/0".parse().unwrap(),
                gw: Some("10.1.0.1".parse().unwrap()),
                mtu: Some(1400),
                advmss: Some(1360),
                priority: Some(10),
                table: Some(100),
                scope: Some(0),
            }],
            dns: Dns {
                nameservers: vec!["10.1.0.1".into()],
                ..Default::default()
            },
        }
    }

    #[test]
    fn v1_1_keeps_everything_and_round_trips() {
        let r = sample();
        let v = r.to_value(SpecVersion::V1_1_0);
        assert_eq!(v["cniVersion"], "1.1.0");
        assert_eq!(v["interfaces"][1]["pciID"], "0000:00:01.0");
        assert_eq!(v["routes"][0]["table"], 100);
        assert!(v["ips"][0].get("version").is_none());
        assert_eq!(CniResult::from_value(&v).unwrap(), r);
    }

    #[test]
    fn v1_0_drops_1_1_fields() {
        let v = sample().to_value(SpecVersion::V1_0_0);
        assert_eq!(v["cniVersion"], "1.0.0");
        assert!(v["interfaces"][1].get("mtu").is_none());
        assert!(v["interfaces"][1].get("socketPath").is_none());
        assert!(v["routes"][0].get("advmss").is_none());
        assert_eq!(v["routes"][0]["gw"], "10.1.0.1");
        assert!(v["ips"][0].get("version").is_none());
    }

    #[test]
    fn pre_1_0_adds_ip_version() {
        for ver in [
            SpecVersion::V0_3_0,
            SpecVersion::V0_3_1,
            SpecVersion::V0_4_0,
        ] {
            let v = sample().to_value(ver);
            assert_eq!(v["cniVersion"], ver.as_str());
            assert_eq!(v["ips"][0]["version"], "4");
            assert_eq!(v["ips"][1]["version"], "6");
            assert!(v["routes"][0].get("priority").is_none());
            // Reading it back loses only the 1.1.0 fields.
            let back = CniResult::from_value(&v).unwrap();
            assert_eq!(back.ips, sample().ips);
            assert_eq!(back.interfaces[1].mtu, None);
        }
    }

    #[test]
    fn reads_reference_plugin_output() {
        let v = json!({
            "cniVersion": "0.4.0",
            "interfaces": [{"name": "cni0", "mac": "12:34:56:78:9a:bc"},
                           {"name": "eth0", "mac": "12:34:56:78:9a:bd", "sandbox": "/proc/1/ns/net"}],
            "ips": [{"version": "4", "interface": 1, "address": "10.22.0.2/16", "gateway": "10.22.0.1"}],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dns": {}
        });
        let r = CniResult::from_value(&v).unwrap();
        assert_eq!(r.ips[0].address.to_string(), "10.22.0.2/16");
        assert_eq!(r.interface_index("eth0", Some("/proc/1/ns/net")), Some(1));
        assert_eq!(r.interface_index("eth0", Some("/other")), None);
        assert!(r.dns.is_empty());
    }

    #[test]
    fn ipam_result_without_interfaces() {
        let v =
            json!({"cniVersion":"1.0.0","ips":[{"address":"10.1.0.2/24","gateway":"10.1.0.1"}]});
        let r = CniResult::from_value(&v).unwrap();
        assert!(r.interfaces.is_empty());
        let out = r.to_value(SpecVersion::V1_0_0);
        assert!(out.get("interfaces").is_none());
        assert_eq!(out["dns"], json!({}));
    }

    #[test]
    fn decode_errors_are_code_6() {
        assert_eq!(CniResult::from_slice(b"nope").unwrap_err().code, 6);
        let bad = json!({"ips":[{"address":"300.1.1.1/24"}]});
        assert_eq!(CniResult::from_value(&bad).unwrap_err().code, 6);
    }
}
