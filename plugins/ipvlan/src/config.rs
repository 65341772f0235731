//! The plugin's configuration and the decisions that need no kernel: mode
//! parsing, which master to use, which route is the default route.
//!
//! Differences from the reference ipvlan plugin, on purpose:
//! - `mode` is validated when the config is read (the reference only fails
//!   once it tries to create the link), and DEL does not need a valid mode or
//!   a resolvable master, so a broken config can still be deleted;
//! - `mtu` must not be negative (the reference passes it to the kernel);
//! - the `dns` of the config replaces the IPAM's DNS only when it is set
//!   (the reference always replaces it, even with an empty one).

use plexus_cni::{CniError, CniResult, Dns, NetConf};
use plexus_netlink::{route::TABLE_MAIN, IpvlanMode, Route};
use serde::Deserialize;

/// The keys this plugin reads, as they appear in the JSON.
#[derive(Debug, Default, Deserialize)]
struct RawConf {
    #[serde(default)]
    master: Option<String>,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    mtu: Option<i64>,
    #[serde(default, rename = "linkInContainer")]
    link_in_container: bool,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpvlanConf {
    /// `master` as configured (empty: pick one, see [`select_master`]).
    pub master: String,
    pub mode: IpvlanMode,
    /// The mode exactly as configured, for messages.
    pub mode_name: String,
    pub mtu: Option<u32>,
    /// The master lives in the pod's namespace, not the node's.
    pub link_in_container: bool,
    pub dns: Option<Dns>,
    /// `ipam.type`, if there is an IPAM section.
    pub ipam_type: Option<String>,
}

/// Parse `mode` as the reference does: exactly "", "l2", "l3" or "l3s".
pub fn parse_mode(s: &str) -> Result<IpvlanMode, CniError> {
    s.parse().map_err(|_| {
        CniError::invalid_config(format!(
            "unknown ipvlan mode {s:?}: \"mode\" must be \"l2\" (the default), \"l3\" or \"l3s\""
        ))
    })
}

impl IpvlanConf {
    /// Read and validate the plugin keys (ADD, CHECK).
    pub fn from_netconf(conf: &NetConf) -> Result<Self, CniError> {
        let c = Self::from_netconf_lenient(conf)?;
        parse_mode(&c.mode_name)?;
        plexus_plugin::conf::dns(conf)?;
        plexus_plugin::conf::ipam_type(conf)?;
        Ok(c)
    }

    /// Read the plugin keys without rejecting a bad mode, `dns` or `ipam`
    /// (DEL, STATUS, GC: they must work on whatever config ADD was given;
    /// a malformed `ipam` reads as none, as ADD allocated nothing).
    pub fn from_netconf_lenient(conf: &NetConf) -> Result<Self, CniError> {
        let raw: RawConf = conf.plugin_config()?;
        let mode_name = raw.mode.unwrap_or_default();
        let mtu = match raw.mtu {
            None | Some(0) => None,
            Some(m) if m > 0 && m <= i64::from(u32::MAX) => Some(m as u32),
            Some(m) => {
                return Err(CniError::invalid_config(format!(
                    "invalid \"mtu\" {m}: must be a positive number (or 0 for the kernel's choice)"
                )))
            }
        };
        Ok(IpvlanConf {
            master: raw.master.unwrap_or_default(),
            mode: parse_mode(&mode_name).unwrap_or_default(),
            mode_name,
            mtu,
            link_in_container: raw.link_in_container,
            dns: plexus_plugin::conf::dns(conf).unwrap_or_default(),
            ipam_type: plexus_plugin::conf::ipam_type(conf).unwrap_or_default(),
        })
    }

    /// Where the master is looked up, for messages.
    pub fn master_ns_name(&self) -> &'static str {
        if self.link_in_container {
            "pod"
        } else {
            "node"
        }
    }
}

/// Where the master comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterChoice {
    /// Configured, or the single interface of a chain's prevResult.
    Named(String),
    /// The interface of the default route (in the node's namespace, or the
    /// pod's with `linkInContainer`).
    DefaultRoute,
}

/// The reference rule: an explicit `master` wins; otherwise in a chain
/// (prevResult present) the prevResult must name exactly one interface;
/// otherwise the default route's interface.
pub fn select_master(
    conf: &IpvlanConf,
    prev: Option<&CniResult>,
) -> Result<MasterChoice, CniError> {
    if !conf.master.is_empty() {
        return Ok(MasterChoice::Named(conf.master.clone()));
    }
    match prev {
        None => Ok(MasterChoice::DefaultRoute),
        Some(r) => match r.interfaces.as_slice() {
            [one] if !one.name.is_empty() => Ok(MasterChoice::Named(one.name.clone())),
            _ => Err(CniError::invalid_config(format!(
                "no \"master\" configured and prevResult does not name a single interface to use as master ({} interfaces)",
                r.interfaces.len()
            ))
            .with_details("set \"master\", or chain after a plugin whose result has exactly one interface")),
        },
    }
}

/// The output interface of the first default route of the main table (IPv4
/// routes come first, as in a FAMILY_ALL dump).
pub fn default_route_oif(routes: &[Route]) -> Option<u32> {
    let v4 = routes.iter().filter(|r| r.dst.addr().is_ipv4());
    let v6 = routes.iter().filter(|r| r.dst.addr().is_ipv6());
    v4.chain(v6)
        .filter(|r| r.table == TABLE_MAIN && r.is_default() && r.dst.addr().is_unspecified())
        .find_map(|r| r.oif)
}

#[cfg(test)]
mod tests {
    use super::*;
    use plexus_cni::Interface;
    use serde_json::json;

    fn conf(extra: serde_json::Value) -> NetConf {
        let mut v = json!({"cniVersion": "1.0.0", "name": "ipv", "type": "plexus-ipvlan"});
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        NetConf::from_value(v).unwrap()
    }

    #[test]
    fn defaults() {
        let c = IpvlanConf::from_netconf(&conf(json!({}))).unwrap();
        assert_eq!(c.master, "");
        assert_eq!(c.mode, IpvlanMode::L2);
        assert_eq!(c.mtu, None);
        assert!(!c.link_in_container);
        assert_eq!(c.ipam_type, None);
        assert_eq!(c.dns, None);
        assert_eq!(c.master_ns_name(), "node");
    }

    #[test]
    fn all_keys() {
        let c = IpvlanConf::from_netconf(&conf(json!({
            "master": "eth1", "mode": "l3s", "mtu": 1400, "linkInContainer": true,
            "ipam": {"type": "plexus-host-local", "subnet": "10.0.0.0/24"},
            "dns": {"nameservers": ["10.0.0.53"]}
        })))
        .unwrap();
        assert_eq!(c.master, "eth1");
        assert_eq!(c.mode, IpvlanMode::L3s);
        assert_eq!(c.mtu, Some(1400));
        assert!(c.link_in_container);
        assert_eq!(c.ipam_type.as_deref(), Some("plexus-host-local"));
        assert_eq!(c.dns.clone().unwrap().nameservers, ["10.0.0.53"]);
        assert_eq!(c.master_ns_name(), "pod");
        // mtu 0 means "kernel default", like the reference.
        let c = IpvlanConf::from_netconf(&conf(json!({"mtu": 0}))).unwrap();
        assert_eq!(c.mtu, None);
    }

    #[test]
    fn modes() {
        for (s, m) in [
            ("", IpvlanMode::L2),
            ("l2", IpvlanMode::L2),
            ("l3", IpvlanMode::L3),
            ("l3s", IpvlanMode::L3s),
        ] {
            assert_eq!(parse_mode(s).unwrap(), m);
        }
        for bad in ["L2", "l4", "bridge", " l2"] {
            let e = parse_mode(bad).unwrap_err();
            assert_eq!(e.code, 7);
            assert!(e.msg.contains("unknown ipvlan mode"), "{}", e.msg);
        }
    }

    #[test]
    fn bad_values() {
        let e = IpvlanConf::from_netconf(&conf(json!({"mode": "l9"}))).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("\"l9\""));
        // DEL still reads it.
        let c = IpvlanConf::from_netconf_lenient(&conf(json!({"mode": "l9"}))).unwrap();
        assert_eq!(c.mode_name, "l9");
        let c = IpvlanConf::from_netconf_lenient(&conf(json!({"ipam": "x", "dns": 1}))).unwrap();
        assert_eq!((c.ipam_type, c.dns), (None, None));
        assert_eq!(
            IpvlanConf::from_netconf(&conf(json!({"mtu": -1})))
                .unwrap_err()
                .code,
            7
        );
        assert_eq!(
            IpvlanConf::from_netconf(&conf(json!({"master": 5})))
                .unwrap_err()
                .code,
            7
        );
        assert_eq!(
            IpvlanConf::from_netconf(&conf(json!({"linkInContainer": "yes"})))
                .unwrap_err()
                .code,
            7
        );
        for bad in [
            json!({"dns": "x"}),
            json!({"ipam": "x"}),
            json!({"ipam": {"type": 5}}),
        ] {
            assert_eq!(
                IpvlanConf::from_netconf(&conf(bad.clone()))
                    .unwrap_err()
                    .code,
                7,
                "{bad}"
            );
        }
    }

    fn iface(name: &str) -> Interface {
        Interface {
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn master_selection() {
        let explicit = IpvlanConf::from_netconf(&conf(json!({"master": "eth9"}))).unwrap();
        let empty = IpvlanConf::from_netconf(&conf(json!({}))).unwrap();
        let one = CniResult {
            interfaces: vec![iface("up0")],
            ..Default::default()
        };
        let two = CniResult {
            interfaces: vec![iface("a"), iface("b")],
            ..Default::default()
        };
        let unnamed = CniResult {
            interfaces: vec![iface("")],
            ..Default::default()
        };
        assert_eq!(
            select_master(&explicit, Some(&two)).unwrap(),
            MasterChoice::Named("eth9".into())
        );
        assert_eq!(
            select_master(&empty, None).unwrap(),
            MasterChoice::DefaultRoute
        );
        assert_eq!(
            select_master(&empty, Some(&one)).unwrap(),
            MasterChoice::Named("up0".into())
        );
        for bad in [&two, &unnamed, &CniResult::default()] {
            let e = select_master(&empty, Some(bad)).unwrap_err();
            assert_eq!(e.code, 7);
            assert!(e.msg.contains("single interface"), "{}", e.msg);
        }
    }

    #[test]
    fn default_route_pick() {
        let r = |dst: &str, oif: u32| Route::new(dst.parse().unwrap()).dev(oif);
        assert_eq!(default_route_oif(&[]), None);
        assert_eq!(
            default_route_oif(&[r("10.0.0.0/24", 2), r("fd00::/64", 3)]),
            None
        );
        // v6 default listed first: v4 still wins.
        assert_eq!(
            default_route_oif(&[r("::/0", 3), r("10.0.0.0/24", 2), r("0.0.0.0/0", 4)]),
            Some(4)
        );
        assert_eq!(default_route_oif(&[r("::/0", 3)]), Some(3));
        // Other tables do not count.
        assert_eq!(
            default_route_oif(&[r("0.0.0.0/0", 5).table(100), r("0.0.0.0/0", 6)]),
            Some(6)
        );
        // A default route without an output interface is skipped.
        let blackhole = Route::new("0.0.0.0/0".parse().unwrap());
        assert_eq!(default_route_oif(&[blackhole, r("::/0", 7)]), Some(7));
    }
}
