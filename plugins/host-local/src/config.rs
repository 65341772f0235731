//! The `ipam` section, parsed the way the reference's `LoadIPAMConfig` does:
//! legacy single range first, then `ranges`; `runtimeConfig.ipRanges`
//! prepended; requested addresses from `CNI_ARGS` `IP=`, then `args.cni.ips`,
//! then `runtimeConfig.ips`.

use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use plexus_cni::args::{CniArgs, K8S_KEYS};
use plexus_cni::{NetConf, Route};
use serde::Deserialize;
use serde_json::Value;

use crate::addr;
use crate::error::Error;
use crate::range::{Range, RangeSet};

pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

/// `CNI_ARGS` keys we understand: the reference's (`IP`, `IgnoreUnknown`)
/// plus the ones Kubernetes runtimes always pass.
pub fn known_args() -> Vec<&'static str> {
    let mut k = vec!["IP"];
    k.extend_from_slice(K8S_KEYS);
    k
}

#[derive(Debug, Clone, PartialEq)]
pub struct IpamConfig {
    /// The network name: the directory under `data_dir`.
    pub name: String,
    pub ranges: Vec<RangeSet>,
    pub routes: Vec<Route>,
    pub data_dir: PathBuf,
    pub resolv_conf: Option<PathBuf>,
    /// Requested addresses in the reference's priority order, deduplicated.
    pub requested: Vec<IpAddr>,
}

#[derive(Debug, Default, Deserialize)]
struct RawRange {
    #[serde(default)]
    subnet: Option<String>,
    #[serde(default, rename = "rangeStart")]
    range_start: Option<String>,
    #[serde(default, rename = "rangeEnd")]
    range_end: Option<String>,
    #[serde(default)]
    gateway: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawIpam {
    #[serde(flatten)]
    legacy: RawRange,
    #[serde(default)]
    ranges: Option<Vec<Vec<RawRange>>>,
    #[serde(default)]
    routes: Option<Vec<Route>>,
    #[serde(default, rename = "dataDir")]
    data_dir: Option<String>,
    #[serde(default, rename = "resolvConf")]
    resolv_conf: Option<String>,
}

fn cfg<E: std::fmt::Display>(what: &str) -> impl Fn(E) -> Error + '_ {
    move |e| Error::Config(format!("{what}: {e}"))
}

/// An IP as the reference's `ip.IP` text form accepts it: a bare address or
/// an address with a prefix length (the prefix is ignored).
pub fn parse_requested_ip(s: &str) -> Option<IpAddr> {
    let ip = if s.contains('/') {
        s.parse::<IpNet>().ok()?.addr()
    } else {
        s.parse::<IpAddr>().ok()?
    };
    Some(addr::canonical(ip))
}

/// An optional address field; Go treats "" like an absent field.
fn opt_ip(field: &str, v: &Option<String>) -> Result<Option<IpAddr>, String> {
    match v.as_deref() {
        None | Some("") => Ok(None),
        Some(s) => s
            .parse::<IpAddr>()
            .map(|ip| Some(addr::canonical(ip)))
            .map_err(|_| format!("invalid {field} \"{s}\": not an IP address")),
    }
}

impl RawRange {
    fn build(&self) -> Result<Range, String> {
        let subnet_s = self.subnet.as_deref().unwrap_or("");
        let subnet: IpNet = subnet_s.parse().map_err(|_| {
            format!("invalid subnet \"{subnet_s}\": not a CIDR such as 10.1.0.0/24")
        })?;
        Range::new(
            subnet,
            opt_ip("rangeStart", &self.range_start)?,
            opt_ip("rangeEnd", &self.range_end)?,
            opt_ip("gateway", &self.gateway)?,
        )
    }
}

fn ip_list(what: &str, v: Option<&Value>) -> Result<Vec<IpAddr>, Error> {
    let items = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(other) => {
            return Err(Error::Config(format!(
                "{what} must be a list of IP addresses, got {other}"
            )))
        }
    };
    items
        .iter()
        .filter(|i| !i.is_null())
        .map(|i| {
            i.as_str()
                .and_then(parse_requested_ip)
                .ok_or_else(|| Error::Config(format!("{what}: invalid IP address {i}")))
        })
        .collect()
}

impl IpamConfig {
    pub fn load(net: &NetConf, args: &CniArgs) -> Result<IpamConfig, Error> {
        let Some(ipam) = net.raw.get("ipam").filter(|v| !v.is_null()) else {
            return Err(Error::Config("IPAM config missing 'ipam' key".into()));
        };
        let raw: RawIpam = serde_json::from_value(ipam.clone()).map_err(cfg("invalid ipam"))?;

        args.check_known(&known_args())
            .map_err(|e| Error::Args(e.to_string()))?;
        let mut requested = Vec::new();
        // The reference reads a single IP from CNI_ARGS; a comma-separated
        // list (one per family) is a superset that some runtimes send.
        if let Some(v) = args.get("IP").filter(|v| !v.is_empty()) {
            for part in v.split(',') {
                let ip = parse_requested_ip(part.trim()).ok_or_else(|| {
                    Error::Args(format!("CNI_ARGS: invalid IP address \"{part}\""))
                })?;
                requested.push(ip);
            }
        }
        requested.extend(ip_list("args.cni.ips", net.args_cni("ips"))?);
        requested.extend(ip_list("runtimeConfig.ips", net.runtime_config.get("ips"))?);
        let mut seen = std::collections::HashSet::new();
        requested.retain(|ip| seen.insert(*ip));

        let mut raw_sets: Vec<Vec<RawRange>> = Vec::new();
        if let Some(rt) = net.runtime_config.get("ipRanges").filter(|v| !v.is_null()) {
            let rt: Vec<Vec<RawRange>> = serde_json::from_value(rt.clone())
                .map_err(cfg("invalid runtimeConfig.ipRanges"))?;
            raw_sets.extend(rt);
        }
        // Legacy single range: only when it has a subnet, then `ranges`.
        if raw.legacy.subnet.is_some() {
            raw_sets.push(vec![raw.legacy]);
        }
        raw_sets.extend(raw.ranges.unwrap_or_default());
        if raw_sets.is_empty() {
            return Err(Error::Config("no IP ranges specified".into()));
        }
        let mut ranges = Vec::with_capacity(raw_sets.len());
        for (i, set) in raw_sets.iter().enumerate() {
            let built = set
                .iter()
                .map(RawRange::build)
                .collect::<Result<Vec<_>, _>>()
                .and_then(RangeSet::new)
                .map_err(|e| Error::Config(format!("invalid range set {i}: {e}")))?;
            ranges.push(built);
        }
        for (i, a) in ranges.iter().enumerate() {
            for (j, b) in ranges.iter().enumerate().skip(i + 1) {
                if a.overlaps(b) {
                    return Err(Error::Config(format!("range set {i} overlaps with {j}")));
                }
            }
        }
        let data_dir = raw
            .data_dir
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| DEFAULT_DATA_DIR.into());
        Ok(IpamConfig {
            name: net.name.clone(),
            ranges,
            routes: raw.routes.unwrap_or_default(),
            data_dir: PathBuf::from(data_dir),
            resolv_conf: raw.resolv_conf.filter(|s| !s.is_empty()).map(PathBuf::from),
            requested,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn load(ipam: Value, rt: Value, cni_args: &str) -> Result<IpamConfig, Error> {
        let conf = json!({"cniVersion":"1.0.0","name":"net","type":"x","ipam":ipam,
                          "runtimeConfig": rt, "args": {"cni": {"ips": ["10.9.0.7"]}}});
        let net = NetConf::from_value(conf).unwrap();
        IpamConfig::load(&net, &CniArgs::parse(cni_args).unwrap())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn legacy_form_is_prepended_and_defaults_apply() {
        let c = load(
            json!({"type":"host-local","subnet":"10.1.0.0/16","rangeEnd":"10.1.0.100",
                   "ranges":[[{"subnet":"fd00::/64"}]],
                   "routes":[{"dst":"0.0.0.0/0"},{"dst":"192.168.0.0/16","gw":"10.1.0.254"}]}),
            Value::Null,
            "",
        )
        .unwrap();
        assert_eq!(c.ranges.len(), 2);
        assert_eq!(c.ranges[0].0[0].subnet.to_string(), "10.1.0.0/16");
        assert_eq!(c.ranges[0].0[0].end, ip("10.1.0.100"));
        assert!(!c.ranges[1].is_ipv4());
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(c.routes.len(), 2);
        assert_eq!(c.routes[1].gw, Some(ip("10.1.0.254")));
        assert_eq!(c.requested, vec![ip("10.9.0.7")]);
    }

    #[test]
    fn requested_ip_priority_and_forms() {
        let c = load(
            json!({"ranges":[[{"subnet":"10.9.0.0/24"}]]}),
            json!({"ips":["10.9.0.8/24","10.9.0.7"], "ipRanges":[[{"subnet":"10.8.0.0/24"}]]}),
            "IgnoreUnknown=1;IP=10.9.0.5,fd00::5;K8S_POD_NAME=x",
        )
        .unwrap();
        assert_eq!(
            c.requested,
            vec![
                ip("10.9.0.5"),
                ip("fd00::5"),
                ip("10.9.0.7"),
                ip("10.9.0.8")
            ]
        );
        // runtimeConfig.ipRanges comes first.
        assert_eq!(c.ranges[0].0[0].subnet.to_string(), "10.8.0.0/24");
    }

    #[test]
    fn config_errors() {
        let bad = |ipam: Value| load(ipam, Value::Null, "").unwrap_err();
        assert!(matches!(
            load(Value::Null, Value::Null, ""),
            Err(Error::Config(_))
        ));
        assert!(bad(json!({})).to_string().contains("no IP ranges"));
        assert!(bad(json!({"subnet":"10.0.0.0/31"}))
            .to_string()
            .contains("too small"));
        assert!(bad(json!({"subnet":"nonsense"}))
            .to_string()
            .contains("invalid subnet"));
        assert!(bad(json!({"ranges":[[]]}))
            .to_string()
            .contains("empty range set"));
        let e = bad(json!({"ranges":[[{"subnet":"10.0.0.0/24"}],[{"subnet":"10.0.0.0/16"}]]}));
        assert_eq!(e.to_string(), "range set 0 overlaps with 1");
        assert_eq!(e.code(), 7);
        assert!(bad(json!({"subnet":"10.0.0.0/24","gateway":"x"}))
            .to_string()
            .contains("gateway"));
        assert!(bad(json!({"ranges":"x"}))
            .to_string()
            .contains("invalid ipam"));
    }

    #[test]
    fn args_errors() {
        let ipam = json!({"subnet":"10.9.0.0/24"});
        let e = load(ipam.clone(), Value::Null, "IP=notanip").unwrap_err();
        assert_eq!(e.code(), 4);
        let e = load(ipam.clone(), Value::Null, "FOO=1").unwrap_err();
        assert_eq!(e.code(), 4);
        let e = load(ipam, json!({"ips":[5]}), "").unwrap_err();
        assert_eq!(e.code(), 7);
    }
}
