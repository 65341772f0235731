//! The `ipam` section, read with whereabouts' keys and meanings, so a
//! whereabouts configuration works after changing `type`:
//!
//! ```json
//! "ipam": {"type": "plexus-cluster-ipam", "range": "192.168.2.225/28",
//!          "exclude": ["192.168.2.229/30"], "gateway": "192.168.2.1",
//!          "ipRanges": [{"range": "fd00:2::/64"}], "network_name": "blue",
//!          "enable_overlapping_ranges": true, "routes": [...], "dns": {...},
//!          "runDir": "/run/plexus"}
//! ```
//!
//! * `range` is a CIDR (host bits ignored: `192.168.2.225/28` is the /28) or
//!   `FIRST-LAST/LEN` (the CIDR of LAST/LEN from FIRST to LAST); with
//!   `range_start`, `range_end` and `exclude` it is the first range;
//!   `ipRanges` entries (`range`, `range_start`, `range_end`, `exclude`)
//!   follow. One address per range.
//! * Keys configuring whereabouts' own machinery (`kubernetes`, `datastore`,
//!   `etcd_*`, `leader_*`, `log_*`, `reconciler_cron_expression`,
//!   `node_slice_size`, `configuration_path`, `sleep_for_race`) are accepted
//!   and ignored with a log line: plexusd's store holds the pools.
//! * Plexus's own: `runDir` (where plexusd's socket is), `blockSize` /
//!   `blockSizeV6` (the block prefix length of a range's address space when
//!   this configuration creates it).
//! * Anything else is refused (code 7), as is a value of the wrong shape.
//!
//! Requested addresses come from the `ips` capability (`runtimeConfig.ips`)
//! and `CNI_ARGS` `IP=` (comma-separated); the pod from `CNI_ARGS`
//! `K8S_POD_NAMESPACE`, `K8S_POD_NAME`, `K8S_POD_UID`.

use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use plexus_agent_api::{Cidr, ClusterRange, PodRef};
use plexus_cni::args::{CniArgs, K8S_KEYS};
use plexus_cni::{CniError, Dns, NetConf, Route};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// Where plexusd keeps its socket unless `runDir` says otherwise.
pub const DEFAULT_RUN_DIR: &str = "/run/plexus";

/// Keys whereabouts reads to configure itself: accepted, ignored.
const IGNORED: &[&str] = &[
    "kubernetes",
    "datastore",
    "reconciler_cron_expression",
    "node_slice_size",
    "configuration_path",
    "sleep_for_race",
];
const IGNORED_PREFIXES: &[&str] = &["etcd_", "leader_", "log_"];

/// Keys of the `ipam` section this plugin reads.
const KNOWN: &[&str] = &[
    "type",
    "range",
    "range_start",
    "range_end",
    "exclude",
    "gateway",
    "routes",
    "ipRanges",
    "network_name",
    "enable_overlapping_ranges",
    "dns",
    "runDir",
    "blockSize",
    "blockSizeV6",
];

/// The validated configuration of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpamConf {
    pub socket: PathBuf,
    pub ranges: Vec<ClusterRange>,
    pub network_name: String,
    pub overlapping: bool,
    pub routes: Vec<Route>,
    pub dns: Dns,
    pub requested: Vec<IpAddr>,
    pub pod: PodRef,
    pub block_size_v4: Option<u8>,
    pub block_size_v6: Option<u8>,
}

fn bad(msg: impl Into<String>) -> CniError {
    CniError::invalid_config(msg)
}

/// `ipam.<key>`: `None` when absent or null; code 7 naming the key when it
/// has the wrong shape.
fn key<T: DeserializeOwned>(m: &Map<String, Value>, k: &str) -> Result<Option<T>, CniError> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone())
            .map(Some)
            .map_err(|e| bad(format!("invalid \"ipam.{k}\": {e}"))),
    }
}

fn ipam(conf: &NetConf) -> Result<&Map<String, Value>, CniError> {
    match conf.raw.get("ipam") {
        Some(Value::Object(m)) => Ok(m),
        None | Some(Value::Null) => Err(bad("IPAM config missing 'ipam' key")),
        Some(other) => Err(bad(format!("\"ipam\" must be an object, got {other}"))),
    }
}

/// An address, as whereabouts takes it ("" is none).
fn address(what: &str, s: Option<String>) -> Result<Option<IpAddr>, CniError> {
    match s.as_deref() {
        None | Some("") => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| bad(format!("invalid {what} {s:?}: not an IP address"))),
    }
}

fn cidr_of(n: IpNet) -> Cidr {
    Cidr {
        addr: n.network(),
        prefix_len: n.prefix_len(),
    }
}

/// `exclude`: CIDRs, or single addresses (whereabouts takes both).
fn excludes(what: &str, list: Option<Vec<String>>) -> Result<Vec<Cidr>, CniError> {
    list.unwrap_or_default()
        .iter()
        .map(|s| {
            s.parse::<IpNet>()
                .map(|n| n.trunc())
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map(cidr_of)
                .map_err(|_| {
                    bad(format!(
                        "invalid {what} entry {s:?}: not a CIDR or an address"
                    ))
                })
        })
        .collect()
}

/// One range from its keys: `range` (CIDR or FIRST-LAST/LEN), `range_start`,
/// `range_end`, `exclude`.
fn one_range(
    what: &str,
    range: &str,
    start: Option<String>,
    end: Option<String>,
    exclude: Option<Vec<String>>,
) -> Result<ClusterRange, CniError> {
    let (mut start, mut end) = (
        address(&format!("{what} range_start"), start)?,
        address(&format!("{what} range_end"), end)?,
    );
    let cidr: IpNet = match range.split_once('-') {
        // FIRST-LAST/LEN: IPv6 addresses have no '-', so the split is safe.
        Some((first, last)) => {
            let first: IpAddr = first.trim().parse().map_err(|_| {
                bad(format!(
                    "invalid {what} {range:?}: {first:?} is not an IP address"
                ))
            })?;
            let last: IpNet = last.trim().parse().map_err(|_| {
                bad(format!(
                    "invalid {what} {range:?}: {last:?} is not ADDRESS/PREFIXLEN"
                ))
            })?;
            if !last.contains(&first) {
                return Err(bad(format!(
                    "invalid {what} {range:?}: {first} is not inside {}",
                    last.trunc()
                )));
            }
            start = Some(first);
            end = Some(last.addr());
            last.trunc()
        }
        None => range
            .trim()
            .parse::<IpNet>()
            .map(|n| n.trunc())
            .map_err(|_| {
                bad(format!(
                    "invalid {what} {range:?}: not a CIDR such as 192.168.2.0/24"
                ))
            })?,
    };
    let family_ok = |a: &IpAddr| a.is_ipv4() == cidr.addr().is_ipv4();
    for (k, a) in [("range_start", start), ("range_end", end)] {
        if let Some(a) = a {
            if !cidr.contains(&a) || !family_ok(&a) {
                return Err(bad(format!(
                    "{what} {k} {a} is not inside the range {cidr}"
                )));
            }
        }
    }
    if let (Some(s), Some(e)) = (start, end) {
        if e < s {
            return Err(bad(format!(
                "{what}: range_end {e} comes before range_start {s}"
            )));
        }
    }
    if cidr.max_prefix_len() - cidr.prefix_len() < 2 {
        return Err(bad(format!(
            "{what} {cidr} is too small: it has no address besides its network and broadcast addresses"
        )));
    }
    let exclude = excludes(&format!("{what} exclude"), exclude)?;
    if let Some(e) = exclude.iter().find(|e| !family_ok(&e.addr)) {
        return Err(bad(format!(
            "{what} exclude {e} is not of the range {cidr}'s family"
        )));
    }
    Ok(ClusterRange {
        range: cidr_of(cidr),
        range_start: start,
        range_end: end,
        exclude,
        gateway: None,
    })
}

/// The `runDir` of a config, read leniently (DEL, GC, STATUS must work on
/// whatever ADD was given): the default unless an absolute path is there.
pub fn socket_lenient(conf: &NetConf) -> PathBuf {
    let dir = conf
        .ipam()
        .and_then(|m| m.get("runDir"))
        .and_then(Value::as_str)
        .filter(|d| d.starts_with('/'))
        .unwrap_or(DEFAULT_RUN_DIR);
    PathBuf::from(dir).join(plexus_agent_api::SOCKET_NAME)
}

/// `CNI_ARGS` keys read: Kubernetes' and whereabouts' `IP`/`GATEWAY`.
fn known_args() -> Vec<&'static str> {
    let mut k = vec!["IP", "GATEWAY"];
    k.extend_from_slice(K8S_KEYS);
    k
}

fn parse_requested(what: &str, s: &str) -> Result<IpAddr, String> {
    s.parse::<IpNet>()
        .map(|n| n.addr())
        .or_else(|_| s.parse::<IpAddr>())
        .map_err(|_| format!("invalid {what}: {s:?} is not an address"))
}

impl IpamConf {
    /// ADD and CHECK: every key checked.
    pub fn load(conf: &NetConf, args: &CniArgs) -> Result<IpamConf, CniError> {
        let m = ipam(conf)?;
        for k in m.keys() {
            if KNOWN.contains(&k.as_str()) {
                continue;
            }
            if IGNORED.contains(&k.as_str()) || IGNORED_PREFIXES.iter().any(|p| k.starts_with(p)) {
                tracing::info!(key = %k, "whereabouts key ignored: plexusd's store holds the pools");
                continue;
            }
            if k == "addresses" {
                return Err(bad(
                    "\"ipam.addresses\" (whereabouts' static addresses) is not supported: request addresses through the \"ips\" capability (runtimeConfig.ips) instead",
                ));
            }
            return Err(
                bad(format!("unknown key \"ipam.{k}\" for plexus-cluster-ipam"))
                    .with_details(format!("known keys: {}", KNOWN.join(", "))),
            );
        }
        let run_dir: Option<String> = key(m, "runDir")?;
        let run_dir = PathBuf::from(run_dir.as_deref().unwrap_or(DEFAULT_RUN_DIR));
        if !run_dir.is_absolute() {
            return Err(bad(format!(
                "\"ipam.runDir\" must be an absolute path, got {:?}",
                run_dir.display().to_string()
            )));
        }
        let mut ranges = Vec::new();
        if let Some(r) = key::<String>(m, "range")?.filter(|r| !r.is_empty()) {
            ranges.push(one_range(
                "range",
                &r,
                key(m, "range_start")?,
                key(m, "range_end")?,
                key(m, "exclude")?,
            )?);
        } else {
            for k in ["range_start", "range_end", "exclude"] {
                if m.get(k).is_some_and(|v| !v.is_null()) {
                    return Err(bad(format!(
                        "\"ipam.{k}\" needs \"ipam.range\" (in \"ipRanges\" each entry has its own)"
                    )));
                }
            }
        }
        let entries: Vec<Map<String, Value>> = key(m, "ipRanges")?.unwrap_or_default();
        for (i, e) in entries.iter().enumerate() {
            let what = format!("ipRanges[{i}]");
            if let Some(k) = e
                .keys()
                .find(|k| !["range", "range_start", "range_end", "exclude"].contains(&k.as_str()))
            {
                return Err(bad(format!("unknown key \"{k}\" in ipam.{what}")));
            }
            let r: String =
                key(e, "range")?.ok_or_else(|| bad(format!("ipam.{what} has no \"range\"")))?;
            ranges.push(one_range(
                &format!("ipam.{what}.range"),
                &r,
                key(e, "range_start")?,
                key(e, "range_end")?,
                key(e, "exclude")?,
            )?);
        }
        if ranges.is_empty() {
            return Err(bad(
                "no range to allocate from: set \"ipam.range\" or \"ipam.ipRanges\"",
            ));
        }
        let gateway = address("ipam.gateway", key(m, "gateway")?)?;
        if let Some(g) = gateway {
            // Never handed out, and the gateway of every range of its family.
            for r in ranges
                .iter_mut()
                .filter(|r| r.range.addr.is_ipv4() == g.is_ipv4())
            {
                r.gateway = Some(g);
            }
        }
        let network_name: String = key(m, "network_name")?.unwrap_or_default();
        if !network_name.is_empty() {
            let ok = network_name.len() <= 253
                && network_name.starts_with(|c: char| c.is_ascii_alphanumeric())
                && network_name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            if !ok {
                return Err(bad(format!(
                    "invalid \"ipam.network_name\" {network_name:?}: letters, digits, '.', '_' and '-' only, starting with a letter or digit"
                )));
            }
        }
        let overlapping = key(m, "enable_overlapping_ranges")?.unwrap_or(true);
        let routes: Vec<Route> = key(m, "routes")?.unwrap_or_default();
        let dns = match m.get("dns") {
            None | Some(Value::Null) => Dns::default(),
            Some(Value::Object(d)) => {
                // A null list is an empty one, as Go's decoding has it.
                let d: Map<String, Value> = d
                    .iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                serde_json::from_value(Value::Object(d))
                    .map_err(|e| bad(format!("invalid \"ipam.dns\": {e}")))?
            }
            Some(other) => return Err(bad(format!("\"ipam.dns\" must be an object, got {other}"))),
        };
        let block_size_v4: Option<u8> = key(m, "blockSize")?;
        let block_size_v6: Option<u8> = key(m, "blockSizeV6")?;
        for (k, v, lo, hi) in [
            ("blockSize", block_size_v4, 20, 32),
            ("blockSizeV6", block_size_v6, 116, 128),
        ] {
            if let Some(v) = v.filter(|v| !(lo..=hi).contains(v)) {
                return Err(bad(format!(
                    "invalid \"ipam.{k}\" {v}: a prefix length from {lo} to {hi}"
                )));
            }
        }

        args.check_known(&known_args())?;
        let mut requested = Vec::new();
        if let Some(v) = args.get("IP").filter(|v| !v.is_empty()) {
            for part in v.split(',') {
                requested.push(
                    parse_requested("CNI_ARGS IP", part.trim()).map_err(CniError::invalid_env)?,
                );
            }
        }
        if args.get("GATEWAY").is_some_and(|g| !g.is_empty()) {
            tracing::info!("CNI_ARGS GATEWAY ignored: the gateway comes from \"ipam.gateway\"");
        }
        match conf.runtime_config.get("ips") {
            None | Some(Value::Null) => {}
            Some(v) => {
                let list: Vec<String> = serde_json::from_value(v.clone())
                    .map_err(|e| bad(format!("invalid runtimeConfig \"ips\": {e}")))?;
                for s in &list {
                    requested.push(parse_requested("runtimeConfig \"ips\"", s).map_err(bad)?);
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        requested.retain(|a| seen.insert(*a));
        let pod = PodRef {
            namespace: args.get("K8S_POD_NAMESPACE").unwrap_or_default().into(),
            name: args.get("K8S_POD_NAME").unwrap_or_default().into(),
            uid: args.get("K8S_POD_UID").unwrap_or_default().into(),
        };
        Ok(IpamConf {
            socket: run_dir.join(plexus_agent_api::SOCKET_NAME),
            ranges,
            network_name,
            overlapping,
            routes,
            dns,
            requested,
            pod,
            block_size_v4,
            block_size_v6,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conf(ipam: Value, rt: Value) -> NetConf {
        NetConf::from_value(json!({"cniVersion": "0.3.0", "name": "whereaboutsexample",
            "type": "macvlan", "master": "eth0", "ipam": ipam, "runtimeConfig": rt}))
        .unwrap()
    }

    fn load(ipam: Value) -> Result<IpamConf, CniError> {
        IpamConf::load(&conf(ipam, Value::Null), &CniArgs::default())
    }

    fn r(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn whereabouts_readme_configs_load_unchanged_but_for_type() {
        let c = load(
            json!({"type": "plexus-cluster-ipam", "range": "192.168.2.225/28",
            "exclude": ["192.168.2.229/30", "192.168.2.236/32"]}),
        )
        .unwrap();
        assert_eq!(c.ranges.len(), 1);
        assert_eq!(c.ranges[0].range, r("192.168.2.224/28"));
        assert_eq!(
            c.ranges[0].exclude,
            [r("192.168.2.228/30"), r("192.168.2.236/32")]
        );
        assert_eq!(c.socket, PathBuf::from("/run/plexus/plexusd.sock"));
        assert!(c.overlapping && c.network_name.is_empty());
        // IPv6 with a gateway.
        let c =
            load(json!({"type": "whereabouts", "range": "2001::0/116", "gateway": "2001::f:1"}))
                .unwrap();
        assert_eq!(c.ranges[0].gateway, Some("2001::f:1".parse().unwrap()));
        // ipRanges after range, dual stack.
        let c = load(
            json!({"type": "x", "ipRanges": [{"range": "192.168.10.1/24"},
            {"range": "176.168.10.1/16"}], "range": "abcd::1/64"}),
        )
        .unwrap();
        let got: Vec<Cidr> = c.ranges.iter().map(|x| x.range).collect();
        assert_eq!(
            got,
            [r("abcd::/64"), r("192.168.10.0/24"), r("176.168.0.0/16")]
        );
        // The extended-configuration example: etcd and log keys ignored.
        let c = load(
            json!({"type": "x", "etcd_host": "example-etcd-cluster-client.cluster.local:2379",
            "range": "192.168.2.225/28", "log_file": "/tmp/whereabouts.log", "log_level": "debug",
            "gateway": "192.168.2.1", "datastore": "kubernetes",
            "kubernetes": {"kubeconfig": "/etc/cni/net.d/whereabouts.d/whereabouts.kubeconfig"},
            "leader_lease_duration": 1500, "reconciler_cron_expression": "30 4 * * *",
            "node_slice_size": "/22", "configuration_path": "/x", "sleep_for_race": 1,
            "network_name": "net-a", "enable_overlapping_ranges": false}),
        )
        .unwrap();
        assert_eq!(c.network_name, "net-a");
        assert!(!c.overlapping);
        assert_eq!(c.ranges[0].gateway, Some("192.168.2.1".parse().unwrap()));
    }

    #[test]
    fn the_range_end_syntax_and_start_end_keys() {
        let c = load(json!({"type": "x", "range": "192.168.2.225-192.168.2.230/28"})).unwrap();
        let x = &c.ranges[0];
        assert_eq!(x.range, r("192.168.2.224/28"));
        assert_eq!(x.range_start, Some("192.168.2.225".parse().unwrap()));
        assert_eq!(x.range_end, Some("192.168.2.230".parse().unwrap()));
        let c = load(
            json!({"type": "x", "range": "10.0.0.0/24", "range_start": "10.0.0.10",
            "range_end": "10.0.0.20"}),
        )
        .unwrap();
        assert_eq!(c.ranges[0].range_end, Some("10.0.0.20".parse().unwrap()));
        let c = load(json!({"type": "x", "ipRanges": [{"range": "10.0.0.0/24",
            "range_start": "10.0.0.5", "exclude": ["10.0.0.9"]}]}))
        .unwrap();
        assert_eq!(c.ranges[0].exclude, [r("10.0.0.9/32")]);
    }

    #[test]
    fn bad_configs_are_code_7_naming_what_is_wrong() {
        for (ipam, says) in [
            (json!({"type": "x"}), "no range"),
            (json!({"type": "x", "range": "10.0.0.0"}), "not a CIDR"),
            (json!({"type": "x", "range": "10.0.0.0/31"}), "too small"),
            (
                json!({"type": "x", "range": "10.0.1.5-10.0.0.9/24"}),
                "not inside",
            ),
            (json!({"type": "x", "range": "x-10.0.0.9/24"}), "not an IP"),
            (
                json!({"type": "x", "range": "10.0.0.0/24", "range_start": "10.1.0.1"}),
                "not inside",
            ),
            (
                json!({"type": "x", "range": "10.0.0.0/24", "range_start": "10.0.0.9", "range_end": "10.0.0.8"}),
                "before",
            ),
            (
                json!({"type": "x", "range": "10.0.0.0/24", "exclude": ["nope"]}),
                "exclude",
            ),
            (
                json!({"type": "x", "range": "10.0.0.0/24", "exclude": ["fd00::/64"]}),
                "family",
            ),
            (
                json!({"type": "x", "range": "10.0.0.0/24", "exclude": "10.0.0.1"}),
                "exclude",
            ),
            (
                json!({"type": "x", "range": "10.0.0.0/24", "gateway": "x"}),
                "gateway",
            ),
            (json!({"type": "x", "range_start": "10.0.0.1"}), "needs"),
            (
                json!({"type": "x", "ipRanges": [{"range_start": "10.0.0.1"}]}),
                "no \"range\"",
            ),
            (
                json!({"type": "x", "ipRanges": [{"range": "10.0.0.0/24", "gateway": "10.0.0.1"}]}),
                "unknown key",
            ),
            (
                json!({"type": "x", "range": "10.0.0.0/24", "subnet": "10.0.0.0/24"}),
                "unknown key \"ipam.subnet\"",
            ),
            (
                json!({"type": "x", "range": "10.0.0.0/24", "addresses": []}),
                "not supported",
            ),
            (
                json!({"type": "x", "range": "10.0.0.0/24", "network_name": "a/b"}),
                "network_name",
            ),
            (
                json!({"type": "x", "range": "10.0.0.0/24", "enable_overlapping_ranges": "yes"}),
                "enable_overlapping_ranges",
            ),
            (
                json!({"type": "x", "range": "10.0.0.0/24", "runDir": "run"}),
                "absolute",
            ),
            (
                json!({"type": "x", "range": "10.0.0.0/24", "blockSize": 12}),
                "blockSize",
            ),
            (
                json!({"type": "x", "range": "10.0.0.0/24", "dns": "x"}),
                "dns",
            ),
            (
                json!({"type": "x", "range": "10.0.0.0/24", "routes": [{"dst": "x"}]}),
                "routes",
            ),
        ] {
            let e = load(ipam.clone()).unwrap_err();
            assert_eq!(e.code, 7, "{ipam}: {e}");
            assert!(e.to_string().contains(says), "{ipam}: {e}");
        }
        let e = IpamConf::load(
            &NetConf::from_value(json!({"cniVersion": "1.0.0", "name": "n", "type": "macvlan"}))
                .unwrap(),
            &CniArgs::default(),
        )
        .unwrap_err();
        assert_eq!(e.code, 7);
    }

    #[test]
    fn requested_addresses_pod_routes_and_dns() {
        let args = CniArgs::parse(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=web-0;K8S_POD_UID=u-1;K8S_POD_INFRA_CONTAINER_ID=c",
        )
        .unwrap();
        let c = IpamConf::load(
            &conf(
                json!({"type": "x", "range": "10.0.0.0/24", "routes": [{"dst": "10.1.0.0/16", "gw": "10.0.0.1"}],
                       "dns": {"nameservers": ["10.0.0.53"], "search": null}, "runDir": "/tmp/p"}),
                json!({"ips": ["10.0.0.7/24", "10.0.0.8"]}),
            ),
            &args,
        )
        .unwrap();
        let want: Vec<IpAddr> = vec!["10.0.0.7".parse().unwrap(), "10.0.0.8".parse().unwrap()];
        assert_eq!(c.requested, want);
        assert_eq!(
            (
                c.pod.namespace.as_str(),
                c.pod.name.as_str(),
                c.pod.uid.as_str()
            ),
            ("ns1", "web-0", "u-1")
        );
        assert_eq!(c.routes.len(), 1);
        assert_eq!(c.dns.nameservers, ["10.0.0.53"]);
        assert_eq!(c.socket, PathBuf::from("/tmp/p/plexusd.sock"));
        // CNI_ARGS IP= too; an unknown CNI_ARGS key without IgnoreUnknown: 4.
        let c = IpamConf::load(
            &conf(json!({"type": "x", "range": "10.0.0.0/24"}), Value::Null),
            &CniArgs::parse("IP=10.0.0.9/24").unwrap(),
        )
        .unwrap();
        assert_eq!(c.requested, vec!["10.0.0.9".parse::<IpAddr>().unwrap()]);
        let e = IpamConf::load(
            &conf(json!({"type": "x", "range": "10.0.0.0/24"}), Value::Null),
            &CniArgs::parse("FOO=1").unwrap(),
        )
        .unwrap_err();
        assert_eq!(e.code, 4);
        let e = IpamConf::load(
            &conf(
                json!({"type": "x", "range": "10.0.0.0/24"}),
                json!({"ips": ["x"]}),
            ),
            &CniArgs::default(),
        )
        .unwrap_err();
        assert_eq!(e.code, 7);
    }

    #[test]
    fn the_example_in_conf_loads() {
        let list: Value = serde_json::from_str(include_str!(
            "../../../conf/cluster-ipam/20-macvlan.conflist"
        ))
        .unwrap();
        let mut p = list["plugins"][0].clone();
        p["cniVersion"] = list["cniVersion"].clone();
        p["name"] = list["name"].clone();
        let c = IpamConf::load(&NetConf::from_value(p).unwrap(), &CniArgs::default()).unwrap();
        assert_eq!(c.ranges.len(), 2);
        assert_eq!(c.ranges[0].gateway, Some("192.168.60.1".parse().unwrap()));
        assert_eq!(c.ranges[1].gateway, None);
    }

    #[test]
    fn del_finds_the_socket_whatever_else_is_wrong() {
        let c = conf(
            json!({"type": "x", "range": "nonsense", "runDir": "/r"}),
            Value::Null,
        );
        assert_eq!(socket_lenient(&c), PathBuf::from("/r/plexusd.sock"));
        let c = conf(json!({"type": "x", "runDir": 5}), Value::Null);
        assert_eq!(
            socket_lenient(&c),
            PathBuf::from("/run/plexus/plexusd.sock")
        );
    }
}
