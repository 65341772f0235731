//! The plugin's configuration, validated when read: a key of the wrong
//! shape is code 7 and changes nothing; keys the plugin does not know are
//! ignored, as the reference plugins' JSON decoding ignores them.
//!
//! ```json
//! {"type": "plexus-bgp-routes", "name": "routed", "runDir": "/run/plexus",
//!  "pool": "default", "mtu": 1500, "routes": [{"dst": "10.96.0.0/12"}],
//!  "ipam": {"type": "plexus-host-local", ...}}
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use ipnet::IpNet;
use plexus_cni::{CniError, Dns, NetConf, Route};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The pod's IPv4 next hop: a link-local address no network uses, answered
/// by the node's end of the veth (Calico's choice too).
pub const GATEWAY_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(169, 254, 1, 1));
/// The pod's IPv6 next hop: link-local, so it needs no address on the node.
pub const GATEWAY_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1));
/// Where plexusd keeps its socket unless `runDir` says otherwise.
pub const DEFAULT_RUN_DIR: &str = "/run/plexus";

/// The gateway of `addr`'s family.
pub fn gateway_for(addr: IpAddr) -> IpAddr {
    if addr.is_ipv4() {
        GATEWAY_V4
    } else {
        GATEWAY_V6
    }
}

/// Key `key` of the config: `None` when absent or null; code 7 naming the
/// key when it has the wrong shape.
fn key<T: DeserializeOwned>(conf: &NetConf, key: &str) -> Result<Option<T>, CniError> {
    match conf.raw.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone())
            .map(Some)
            .map_err(|e| CniError::invalid_config(format!("invalid \"{key}\": {e}"))),
    }
}

/// Where the pod's addresses come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddrSource {
    /// The node agent's blocks, over `<runDir>/plexusd.sock`.
    Agent { socket: PathBuf },
    /// An IPAM plugin (`ipam.type`), e.g. plexus-host-local.
    Ipam(String),
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutedConf {
    pub network: String,
    pub source: AddrSource,
    /// `pool`: a pool name or CIDR for the agent.
    pub pool: Option<String>,
    pub mtu: Option<u32>,
    /// `routes`: replaces the default route (primary) or the pool routes
    /// (secondary network).
    pub routes: Option<Vec<Route>>,
    /// Pool CIDRs known from the config (`pool` as a CIDR, the IPAM's
    /// `subnet` / `ranges`), for a secondary network's routes.
    pub pool_cidrs: Vec<IpNet>,
    pub dns: Option<Dns>,
    /// The `ips` capability (runtimeConfig): the addresses the agent is
    /// asked for, at most one per family (an IPAM plugin reads them from
    /// its own stdin).
    pub requested_ips: Vec<IpAddr>,
    /// The `mac` capability (runtimeConfig): the pod interface's MAC.
    pub mac: Option<plexus_netlink::MacAddr>,
}

impl RoutedConf {
    /// ADD and CHECK: every key must have its shape.
    pub fn load(conf: &NetConf) -> Result<Self, CniError> {
        let c = Self::read(conf, true)?;
        plexus_plugin::conf::dns(conf)?;
        Ok(c)
    }

    /// DEL, STATUS, GC: work on whatever config ADD was given; a malformed
    /// `ipam` reads as none and `routes`/`mtu`/`dns` are not needed.
    pub fn load_lenient(conf: &NetConf) -> Result<Self, CniError> {
        Self::read(conf, false)
    }

    fn read(conf: &NetConf, strict: bool) -> Result<Self, CniError> {
        // DEL reads only what it needs, and a malformed key as absent.
        let get = |k: &str| key::<Value>(conf, k).ok().flatten();
        let run_dir: Option<PathBuf> = if strict {
            key(conf, "runDir")?
        } else {
            get("runDir").and_then(|v| v.as_str().map(PathBuf::from))
        };
        let pool: Option<String> = if strict {
            key(conf, "pool")?
        } else {
            get("pool").and_then(|v| v.as_str().map(String::from))
        };
        let (mtu, routes): (Option<i64>, Option<Vec<Route>>) = if strict {
            (key(conf, "mtu")?, key(conf, "routes")?)
        } else {
            (None, None)
        };
        let ipam = if strict {
            plexus_plugin::conf::ipam_type(conf)?
        } else {
            plexus_plugin::conf::ipam_type(conf).unwrap_or_default()
        };
        let run_dir = run_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_RUN_DIR));
        if strict && !run_dir.is_absolute() {
            return Err(CniError::invalid_config(format!(
                "\"runDir\" must be an absolute path, got {:?}",
                run_dir.display().to_string()
            )));
        }
        let source = match ipam {
            Some(t) => AddrSource::Ipam(t),
            None => AddrSource::Agent {
                socket: run_dir.join(plexus_agent_api::SOCKET_NAME),
            },
        };
        let mtu = match mtu {
            None | Some(0) => None,
            Some(m) if (68..=65535).contains(&m) => Some(m as u32),
            Some(m) => {
                return Err(CniError::invalid_config(format!(
                "invalid \"mtu\" {m}: must be between 68 and 65535 (or 0 for the kernel's default)"
            )))
            }
        };
        if let Some(p) = &pool {
            if p.is_empty() {
                return Err(CniError::invalid_config(
                    "\"pool\" is empty: name a pool or give its CIDR, or leave the key out",
                ));
            }
        }
        if let Some(routes) = &routes {
            check_routes(routes)?;
        }
        let mut pool_cidrs: Vec<IpNet> = pool
            .as_deref()
            .and_then(|p| p.parse::<IpNet>().ok())
            .map(|n| n.trunc())
            .into_iter()
            .collect();
        if matches!(source, AddrSource::Ipam(_)) {
            pool_cidrs.extend(ipam_subnets(conf));
        }
        pool_cidrs.dedup();
        let (requested_ips, mac) = if strict {
            (requested_ips(conf)?, requested_mac(conf)?)
        } else {
            (Vec::new(), None)
        };
        Ok(RoutedConf {
            network: conf.name.clone(),
            source,
            pool,
            mtu,
            routes,
            pool_cidrs,
            dns: plexus_plugin::conf::dns(conf).unwrap_or_default(),
            requested_ips,
            mac,
        })
    }
}

/// runtimeConfig `ips`: CIDR strings (`10.96.1.5/32`) or bare addresses;
/// only the address counts, the pod gets it alone.
fn requested_ips(conf: &NetConf) -> Result<Vec<IpAddr>, CniError> {
    let Some(v) = conf.runtime_config.get("ips") else {
        return Ok(Vec::new());
    };
    let bad =
        |why: String| CniError::invalid_config(format!("invalid runtimeConfig \"ips\": {why}"));
    let list: Vec<String> = serde_json::from_value(v.clone()).map_err(|e| bad(e.to_string()))?;
    let mut out: Vec<IpAddr> = Vec::new();
    for s in &list {
        let addr = s
            .parse::<IpNet>()
            .map(|n| n.addr())
            .or_else(|_| s.parse::<IpAddr>())
            .map_err(|_| bad(format!("{s:?} is not an address")))?;
        if out.iter().any(|a| a.is_ipv4() == addr.is_ipv4()) {
            return Err(bad(format!("more than one address of {addr}'s family")));
        }
        out.push(addr);
    }
    Ok(out)
}

/// runtimeConfig `mac`: a unicast MAC for the pod's interface.
fn requested_mac(conf: &NetConf) -> Result<Option<plexus_netlink::MacAddr>, CniError> {
    match conf.runtime_config.get("mac") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => plexus_plugin::conf::unicast_mac(s)
            .map(Some)
            .map_err(|e| CniError::invalid_config(format!("runtimeConfig \"mac\": {e}"))),
        Some(other) => Err(CniError::invalid_config(format!(
            "runtimeConfig \"mac\" must be a string, got {other}"
        ))),
    }
}

/// A route of `routes` goes through the pod's only next hop: a `gw`, if
/// given, must be that family's gateway.
fn check_routes(routes: &[Route]) -> Result<(), CniError> {
    for r in routes {
        if let Some(gw) = r.gw {
            let want = gateway_for(r.dst.addr());
            if gw != want {
                return Err(CniError::invalid_config(format!(
                    "invalid \"routes\": {}: \"gw\" {gw} is not reachable from a routed pod; leave \"gw\" out (the gateway is {want})",
                    r.dst
                )));
            }
        }
        if r.scope
            .is_some_and(|s| plexus_netlink::Scope::from_u8(s).is_none())
        {
            return Err(CniError::invalid_config(format!(
                "invalid \"routes\": {}: unknown scope {}",
                r.dst,
                r.scope.unwrap_or_default()
            )));
        }
    }
    Ok(())
}

/// The subnets of an IPAM section in host-local's shape (`subnet`, or
/// `ranges: [[{"subnet": ...}]]`); anything else contributes none.
fn ipam_subnets(conf: &NetConf) -> Vec<IpNet> {
    let Some(ipam) = conf.ipam() else {
        return Vec::new();
    };
    let parse = |v: &Value| v.as_str().and_then(|s| s.parse::<IpNet>().ok());
    let mut out: Vec<IpNet> = ipam.get("subnet").and_then(parse).into_iter().collect();
    if let Some(Value::Array(sets)) = ipam.get("ranges") {
        for set in sets.iter().filter_map(Value::as_array) {
            out.extend(set.iter().filter_map(|r| r.get("subnet").and_then(parse)));
        }
    }
    out.into_iter().map(|n| n.trunc()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conf(extra: Value) -> NetConf {
        let mut v = json!({"cniVersion": "1.0.0", "name": "routed", "type": "plexus-bgp-routes"});
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        NetConf::from_value(v).unwrap()
    }

    #[test]
    fn ips_and_mac_from_the_runtime_config() {
        let c = RoutedConf::load(&conf(json!({"runtimeConfig": {
            "ips": ["10.96.1.5/32", "fd00::5"], "mac": "02:42:0a:60:01:05"}})))
        .unwrap();
        let want: Vec<IpAddr> = vec!["10.96.1.5".parse().unwrap(), "fd00::5".parse().unwrap()];
        assert_eq!(c.requested_ips, want);
        assert_eq!(c.mac.unwrap().to_string(), "02:42:0a:60:01:05");
        let none = RoutedConf::load(&conf(json!({}))).unwrap();
        assert!(none.requested_ips.is_empty() && none.mac.is_none());
        for (rc, says) in [
            (json!({"ips": ["10.96.1.5", "10.96.1.6"]}), "more than one"),
            (json!({"ips": ["bad"]}), "not an address"),
            (json!({"ips": "10.96.1.5"}), "ips"),
            (json!({"mac": "01:00:00:00:00:01"}), "multicast"),
            (json!({"mac": 5}), "must be a string"),
        ] {
            let e = RoutedConf::load(&conf(json!({"runtimeConfig": rc}))).unwrap_err();
            assert_eq!(e.code, 7, "{rc}");
            assert!(e.msg.contains(says), "{rc}: {}", e.msg);
        }
        // DEL does not read them: a bad one must not block cleanup.
        let bad = conf(json!({"runtimeConfig": {"ips": ["bad"]}}));
        assert!(RoutedConf::load_lenient(&bad)
            .unwrap()
            .requested_ips
            .is_empty());
    }

    #[test]
    fn defaults_use_the_agent() {
        let c = RoutedConf::load(&conf(json!({}))).unwrap();
        assert_eq!(
            c.source,
            AddrSource::Agent {
                socket: "/run/plexus/plexusd.sock".into()
            }
        );
        assert_eq!((c.mtu, c.routes, c.pool), (None, None, None));
        assert!(c.pool_cidrs.is_empty());
        let c =
            RoutedConf::load(&conf(json!({"runDir": "/tmp/x", "pool": "10.9.0.0/16"}))).unwrap();
        assert_eq!(
            c.source,
            AddrSource::Agent {
                socket: "/tmp/x/plexusd.sock".into()
            }
        );
        assert_eq!(c.pool_cidrs, ["10.9.0.0/16".parse::<IpNet>().unwrap()]);
        // A pool name is passed on, with no CIDR to route to.
        let c = RoutedConf::load(&conf(json!({"pool": "blue"}))).unwrap();
        assert_eq!(c.pool.as_deref(), Some("blue"));
        assert!(c.pool_cidrs.is_empty());
    }

    #[test]
    fn ipam_plugin_and_its_subnets() {
        let c = RoutedConf::load(&conf(json!({
            "mtu": 1400,
            "ipam": {"type": "plexus-host-local", "ranges": [
                [{"subnet": "10.1.0.0/24"}, {"subnet": "10.1.1.0/24"}],
                [{"subnet": "fd00:1::/64"}]
            ]},
            "someFutureKey": {"x": 1}
        })))
        .unwrap();
        assert_eq!(c.source, AddrSource::Ipam("plexus-host-local".into()));
        assert_eq!(c.mtu, Some(1400));
        let want: Vec<IpNet> = ["10.1.0.0/24", "10.1.1.0/24", "fd00:1::/64"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(c.pool_cidrs, want);
        let c = RoutedConf::load(&conf(
            json!({"ipam": {"type": "host-local", "subnet": "10.2.3.4/16"}}),
        ))
        .unwrap();
        assert_eq!(c.pool_cidrs, ["10.2.0.0/16".parse::<IpNet>().unwrap()]);
    }

    #[test]
    fn bad_values_are_code_7() {
        for bad in [
            json!({"mtu": -1}),
            json!({"mtu": 20}),
            json!({"mtu": 70000}),
            json!({"mtu": "1500"}),
            json!({"runDir": "relative/dir"}),
            json!({"runDir": 5}),
            json!({"pool": ""}),
            json!({"pool": 7}),
            json!({"routes": "10.0.0.0/8"}),
            json!({"routes": [{"dst": "nope"}]}),
            json!({"routes": [{"dst": "10.0.0.0/8", "gw": "10.0.0.1"}]}),
            json!({"routes": [{"dst": "10.0.0.0/8", "scope": 42}]}),
            json!({"ipam": "x"}),
            json!({"ipam": {"type": 5}}),
            json!({"dns": "x"}),
        ] {
            let e = RoutedConf::load(&conf(bad.clone())).unwrap_err();
            assert_eq!(e.code, 7, "{bad}: {e}");
            // The message names the key.
            let k = bad.as_object().unwrap().keys().next().unwrap();
            assert!(e.msg.contains(k.as_str()), "{bad}: {e}");
        }
        // The gateway itself is a fine "gw".
        let c = RoutedConf::load(&conf(json!({"routes": [
            {"dst": "10.0.0.0/8", "gw": "169.254.1.1"}, {"dst": "fd00::/8", "gw": "fe80::1"}
        ]})))
        .unwrap();
        assert_eq!(c.routes.unwrap().len(), 2);
    }

    #[test]
    fn del_reads_what_add_would_refuse() {
        let c = RoutedConf::load_lenient(&conf(json!({
            "mtu": -1, "routes": "x", "ipam": "x", "dns": 1, "runDir": "/r"
        })))
        .unwrap();
        assert_eq!(
            c.source,
            AddrSource::Agent {
                socket: "/r/plexusd.sock".into()
            }
        );
        assert_eq!(gateway_for("fd00::1".parse().unwrap()), GATEWAY_V6);
    }

    #[test]
    fn the_examples_in_conf_load() {
        for text in [
            include_str!("../../../conf/bgp-routes/10-routed.conflist"),
            include_str!("../../../conf/bgp-routes/10-routed-host-local.conflist"),
        ] {
            let list: Value = serde_json::from_str(text).unwrap();
            let mut p = list["plugins"][0].clone();
            p["cniVersion"] = list["cniVersion"].clone();
            p["name"] = list["name"].clone();
            RoutedConf::load(&NetConf::from_value(p).unwrap()).unwrap();
        }
    }
}
