//! The bridge plugin's configuration: the reference plugin's keys and
//! defaults, validated up front so bad input never creates anything.

use plexus_cni::args::K8S_KEYS;
use plexus_cni::{CniEnv, CniError, Dns, NetConf};
use plexus_netlink::MacAddr;
use plexus_plugin::conf;
use serde::Deserialize;
use serde_json::Value;

pub const DEFAULT_BRIDGE: &str = "cni0";

fn default_bridge() -> String {
    DEFAULT_BRIDGE.to_string()
}

/// The plugin-specific keys, exactly as the reference spells them.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    #[serde(default = "default_bridge")]
    bridge: String,
    #[serde(default)]
    is_gateway: bool,
    #[serde(default)]
    is_default_gateway: bool,
    #[serde(default)]
    force_address: bool,
    #[serde(default)]
    ip_masq: bool,
    #[serde(default)]
    ip_masq_backend: Option<String>,
    #[serde(default)]
    mtu: u32,
    #[serde(default)]
    hairpin_mode: bool,
    #[serde(default)]
    promisc_mode: bool,
    #[serde(default)]
    vlan: i64,
    #[serde(default)]
    vlan_trunk: Option<Vec<VlanTrunk>>,
    #[serde(default)]
    preserve_default_vlan: bool,
    #[serde(default, rename = "macspoofchk")]
    mac_spoof_chk: bool,
    #[serde(default, rename = "enabledad")]
    enable_dad: bool,
    #[serde(default)]
    disable_container_interface: bool,
    #[serde(default)]
    port_isolation: bool,
}

/// One `vlanTrunk` entry: `{"id": N}` or `{"minID": A, "maxID": B}` (or both).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct VlanTrunk {
    #[serde(default, rename = "minID")]
    pub min_id: Option<i64>,
    #[serde(default, rename = "maxID")]
    pub max_id: Option<i64>,
    #[serde(default)]
    pub id: Option<i64>,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct BridgeConf {
    pub network: String,
    pub bridge: String,
    pub is_gateway: bool,
    pub is_default_gateway: bool,
    pub force_address: bool,
    pub ip_masq: bool,
    pub mtu: Option<u32>,
    pub hairpin: bool,
    pub promisc: bool,
    /// Access VLAN (0 = none).
    pub vlan: u16,
    /// Trunk VLANs, sorted and deduplicated.
    pub trunk: Vec<u16>,
    /// `vlanTrunk` was given (even if empty): the bridge filters VLANs.
    pub trunk_configured: bool,
    pub preserve_default_vlan: bool,
    pub mac_spoof_chk: bool,
    pub enable_dad: bool,
    pub disable_container_interface: bool,
    pub port_isolation: bool,
    /// The requested container MAC (CNI_ARGS `MAC`, then `args.cni.mac`,
    /// then `runtimeConfig.mac`; the last one set wins, as in the reference).
    pub mac: Option<MacAddr>,
    /// `ipam.type`, if any: the plugin works at layer 3.
    pub ipam_type: Option<String>,
    /// The config's own `dns`, which overrides IPAM's when set.
    pub dns: Option<Dns>,
}

impl BridgeConf {
    pub fn vlan_filtering(&self) -> bool {
        self.vlan != 0 || self.trunk_configured
    }

    pub fn is_layer3(&self) -> bool {
        self.ipam_type.is_some()
    }

    /// Name of the gateway interface used when `vlan` and `isGateway` are set.
    pub fn vlan_iface_name(&self) -> String {
        format!("{}.{}", self.bridge, self.vlan)
    }

    /// The config for ADD and CHECK: every key validated.
    pub fn load(conf: &NetConf, env: &CniEnv) -> Result<Self, CniError> {
        Self::load_with(conf, env, true)
    }

    /// The config for DEL: an `ipam` or `dns` of the wrong shape (which
    /// ADD refused before creating anything) reads as absent, so DEL of
    /// such a config succeeds and changes nothing.
    pub fn load_for_del(conf: &NetConf, env: &CniEnv) -> Result<Self, CniError> {
        Self::load_with(conf, env, false)
    }

    fn load_with(conf: &NetConf, env: &CniEnv, strict: bool) -> Result<Self, CniError> {
        let raw: Raw = conf.plugin_config()?;
        let bad = |msg: String| Err(CniError::invalid_config(msg));
        conf::ifname("bridge", &raw.bridge)?;
        if !(0..=4094).contains(&raw.vlan) {
            return bad(format!(
                "invalid VLAN ID {} (must be between 0 and 4094)",
                raw.vlan
            ));
        }
        let trunk =
            collect_vlan_trunk(raw.vlan_trunk.as_deref()).map_err(CniError::invalid_config)?;
        if raw.hairpin_mode && raw.promisc_mode {
            return bad("cannot set hairpin mode and promiscuous mode at the same time".into());
        }
        let ipam_type = match conf::ipam_type(conf) {
            Err(_) if !strict => None,
            r => r?,
        };
        if ipam_type.is_some() && raw.disable_container_interface {
            return bad("cannot use IPAM when DisableContainerInterface flag is set".into());
        }
        match raw.ip_masq_backend.as_deref() {
            None | Some("nftables") | Some("iptables") => {}
            Some(other) => return bad(format!("unknown ipmasq backend \"{other}\"")),
        }
        let is_gateway = raw.is_gateway || raw.is_default_gateway;
        let vlan = raw.vlan as u16;
        if vlan != 0 && is_gateway && ipam_type.is_some() {
            let name = format!("{}.{}", raw.bridge, vlan);
            conf::ifname("bridge", &name).map_err(|e| {
                CniError::invalid_config(format!(
                    "bridge name too long for the VLAN gateway interface: {}",
                    e.msg
                ))
            })?;
        }

        // CNI_ARGS MAC=..., then args.cni.mac, then runtimeConfig.mac.
        env.args.check_known(&[&["MAC"], K8S_KEYS].concat())?;
        let mut mac_src: Option<(String, bool)> = None;
        if let Some(m) = env.args.get("MAC").filter(|m| !m.is_empty()) {
            mac_src = Some((m.to_string(), true));
        }
        for v in [conf.args_cni("mac"), conf.runtime_config.get("mac")]
            .into_iter()
            .flatten()
        {
            match v {
                Value::String(s) if !s.is_empty() => mac_src = Some((s.clone(), false)),
                Value::String(_) | Value::Null => {}
                other => return bad(format!("\"mac\" must be a string, got {other}")),
            }
        }
        let mac = match mac_src {
            None => None,
            Some((s, from_env)) => Some(conf::unicast_mac(&s).map_err(|msg| {
                if from_env {
                    CniError::invalid_env(format!("CNI_ARGS: {msg}"))
                } else {
                    CniError::invalid_config(msg)
                }
            })?),
        };

        let dns = match conf::dns(conf) {
            Err(_) if !strict => None,
            r => r?,
        };

        Ok(BridgeConf {
            network: conf.name.clone(),
            bridge: raw.bridge,
            is_gateway,
            is_default_gateway: raw.is_default_gateway,
            force_address: raw.force_address,
            ip_masq: raw.ip_masq,
            mtu: (raw.mtu != 0).then_some(raw.mtu),
            hairpin: raw.hairpin_mode,
            promisc: raw.promisc_mode,
            vlan,
            trunk_configured: raw.vlan_trunk.is_some(),
            trunk,
            preserve_default_vlan: raw.preserve_default_vlan,
            mac_spoof_chk: raw.mac_spoof_chk,
            enable_dad: raw.enable_dad,
            disable_container_interface: raw.disable_container_interface,
            port_isolation: raw.port_isolation,
            mac,
            ipam_type,
            dns,
        })
    }
}

/// The trunk VLANs, sorted and deduplicated, with the reference's checks.
pub fn collect_vlan_trunk(trunk: Option<&[VlanTrunk]>) -> Result<Vec<u16>, String> {
    let Some(items) = trunk else {
        return Ok(Vec::new());
    };
    let ok = |v: i64| (1..=4094).contains(&v);
    let mut out = Vec::new();
    for item in items {
        match (item.min_id, item.max_id) {
            (Some(min), Some(max)) => {
                if !ok(min) {
                    return Err("incorrect trunk minID parameter".into());
                }
                if !ok(max) {
                    return Err("incorrect trunk maxID parameter".into());
                }
                if max < min {
                    return Err("minID is greater than maxID in trunk parameter".into());
                }
                out.extend((min..=max).map(|v| v as u16));
            }
            (None, Some(_)) => {
                return Err(
                    "minID and maxID should be configured simultaneously, minID is missing".into(),
                )
            }
            (Some(_), None) => {
                return Err(
                    "minID and maxID should be configured simultaneously, maxID is missing".into(),
                )
            }
            (None, None) => {}
        }
        if let Some(id) = item.id {
            if !ok(id) {
                return Err("incorrect trunk id parameter".into());
            }
            out.push(id as u16);
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Contiguous runs of sorted VLAN ids, as `(first, last)`.
pub fn vlan_ranges(vids: &[u16]) -> Vec<(u16, u16)> {
    let mut out: Vec<(u16, u16)> = Vec::new();
    for &v in vids {
        match out.last_mut() {
            Some((_, last)) if *last + 1 == v => *last = v,
            _ => out.push((v, v)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use plexus_cni::Command;

    fn env(args: &str) -> CniEnv {
        CniEnv::from_vars(
            [
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "c1"),
                ("CNI_NETNS", "/var/run/netns/x"),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", "/bin"),
                ("CNI_ARGS", args),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
        )
        .unwrap()
    }

    fn load(json: &str, args: &str) -> Result<BridgeConf, CniError> {
        let c = NetConf::parse(json.as_bytes()).unwrap();
        let e = env(args);
        assert_eq!(e.command, Command::Add);
        BridgeConf::load(&c, &e)
    }

    const BASE: &str = r#""cniVersion":"1.0.0","name":"n","type":"plexus-bridge""#;

    #[test]
    fn defaults() {
        let c = load(&format!("{{{BASE}}}"), "").unwrap();
        assert_eq!(c.bridge, "cni0");
        assert!(!c.is_gateway && !c.ip_masq && !c.hairpin && !c.vlan_filtering());
        assert_eq!(c.mtu, None);
        assert_eq!(c.mac, None);
        assert!(!c.is_layer3());
    }

    #[test]
    fn default_gateway_implies_gateway() {
        let c = load(
            &format!(r#"{{{BASE},"isDefaultGateway":true,"ipam":{{"type":"host-local"}}}}"#),
            "",
        )
        .unwrap();
        assert!(c.is_gateway && c.is_layer3());
    }

    #[test]
    fn bad_inputs_are_code_7() {
        for extra in [
            r#""hairpinMode":true,"promiscMode":true"#,
            r#""vlan":4095"#,
            r#""vlan":-1"#,
            r#""vlanTrunk":[{"id":0}]"#,
            r#""vlanTrunk":[{"minID":10}]"#,
            r#""vlanTrunk":[{"minID":10,"maxID":5}]"#,
            r#""bridge":"waytoolongbridgename""#,
            r#""mtu":-5"#,
            r#""ipMasqBackend":"ebtables""#,
            r#""disableContainerInterface":true,"ipam":{"type":"host-local"}"#,
            r#""runtimeConfig":{"mac":"zz:00:00:00:00:01"}"#,
            r#""args":{"cni":{"mac":"01:00:00:00:00:01"}}"#,
            // Wrong shapes the reference's JSON decoding refuses too.
            r#""dns":"x""#,
            r#""ipam":"x""#,
            r#""ipam":{"type":5}"#,
        ] {
            let e = load(&format!("{{{BASE},{extra}}}"), "").unwrap_err();
            assert_eq!(e.code, 7, "{extra}: {e}");
        }
    }

    #[test]
    fn del_reads_what_add_refused_as_absent() {
        let c = NetConf::parse(format!(r#"{{{BASE},"ipam":"x","dns":"x"}}"#).as_bytes()).unwrap();
        let d = BridgeConf::load_for_del(&c, &env("")).unwrap();
        assert_eq!((d.ipam_type, d.dns), (None, None));
        assert_eq!(BridgeConf::load(&c, &env("")).unwrap_err().code, 7);
    }

    #[test]
    fn mac_precedence() {
        let j = format!(
            r#"{{{BASE},"args":{{"cni":{{"mac":"02:00:00:00:00:02"}}}},"runtimeConfig":{{"mac":"02:00:00:00:00:03"}}}}"#
        );
        let c = load(&j, "MAC=02:00:00:00:00:01").unwrap();
        assert_eq!(c.mac.unwrap().to_string(), "02:00:00:00:00:03");
        let j = format!(r#"{{{BASE},"args":{{"cni":{{"mac":"02:00:00:00:00:02"}}}}}}"#);
        let c = load(&j, "MAC=02:00:00:00:00:01").unwrap();
        assert_eq!(c.mac.unwrap().to_string(), "02:00:00:00:00:02");
        let c = load(&format!("{{{BASE}}}"), "MAC=02:00:00:00:00:01").unwrap();
        assert_eq!(c.mac.unwrap().to_string(), "02:00:00:00:00:01");
        assert_eq!(
            load(&format!("{{{BASE}}}"), "MAC=nope").unwrap_err().code,
            4
        );
        assert_eq!(load(&format!("{{{BASE}}}"), "FOO=1").unwrap_err().code, 4);
        assert!(load(&format!("{{{BASE}}}"), "K8S_POD_NAME=p;IgnoreUnknown=1").is_ok());
    }

    #[test]
    fn trunks() {
        let t =
            |j: &str| collect_vlan_trunk(Some(&serde_json::from_str::<Vec<VlanTrunk>>(j).unwrap()));
        assert_eq!(
            t(r#"[{"id":5},{"minID":3,"maxID":6},{"id":100}]"#).unwrap(),
            vec![3, 4, 5, 6, 100]
        );
        assert_eq!(
            vlan_ranges(&[3, 4, 5, 6, 100, 102, 103]),
            vec![(3, 6), (100, 100), (102, 103)]
        );
        assert!(t(r#"[{"id":4095}]"#).is_err());
        let c = load(&format!(r#"{{{BASE},"vlanTrunk":[]}}"#), "").unwrap();
        assert!(c.vlan_filtering() && c.trunk.is_empty());
    }

    #[test]
    fn dns_override() {
        let c = load(
            &format!(r#"{{{BASE},"dns":{{"nameservers":["1.1.1.1"]}}}}"#),
            "",
        )
        .unwrap();
        assert_eq!(c.dns.unwrap().nameservers, vec!["1.1.1.1"]);
        let c = load(&format!(r#"{{{BASE},"dns":{{}}}}"#), "").unwrap();
        assert!(c.dns.is_none());
    }
}
