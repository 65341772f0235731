//! Config keys every plugin reads the same way, validated strictly: a value
//! of the wrong shape is code 7, never silently ignored (the reference's
//! JSON decoding rejects them too).

use plexus_cni::{CniError, Dns, NetConf};
use plexus_netlink::MacAddr;
use serde_json::Value;

/// `ipam.type`: `None` without an `ipam` section; code 7 for an `ipam` that
/// is not an object or whose `type` is not a non-empty string.
pub fn ipam_type(conf: &NetConf) -> Result<Option<String>, CniError> {
    match conf.raw.get("ipam") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => match m.get("type") {
            Some(Value::String(t)) if !t.is_empty() => Ok(Some(t.clone())),
            // An empty section (`"ipam": {}`) means no IPAM, as in libcni.
            None | Some(Value::Null) if m.is_empty() => Ok(None),
            Some(Value::String(_)) | None | Some(Value::Null) => Err(CniError::invalid_config(
                "\"ipam\" has no \"type\" naming the IPAM plugin",
            )),
            Some(other) => Err(CniError::invalid_config(format!(
                "\"ipam.type\" must be a string, got {other}"
            ))),
        },
        Some(other) => Err(CniError::invalid_config(format!(
            "\"ipam\" must be an object, got {other}"
        ))),
    }
}

/// The config's own `dns`: `None` when absent or empty (it then does not
/// replace the IPAM's), code 7 when it is not a DNS object.
pub fn dns(conf: &NetConf) -> Result<Option<Dns>, CniError> {
    match conf.raw.get("dns") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => {
            // A null list is an empty one, as Go's decoding has it.
            let m: serde_json::Map<String, Value> = m
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            serde_json::from_value::<Dns>(Value::Object(m))
                .map(|d| (!d.is_empty()).then_some(d))
                .map_err(|e| CniError::invalid_config(format!("invalid \"dns\": {e}")))
        }
        Some(other) => Err(CniError::invalid_config(format!(
            "\"dns\" must be an object, got {other}"
        ))),
    }
}

/// An interface name from the config (`bridge`, `master`, ...): code 7
/// naming the key when the kernel would refuse it.
pub fn ifname(key: &str, name: &str) -> Result<(), CniError> {
    plexus_netlink::link::validate_ifname(name)
        .map_err(|e| CniError::invalid_config(format!("invalid \"{key}\": {e}")))
}

/// A MAC address a pod interface can take: six bytes, unicast, not zero.
/// The message says what is wrong; the caller picks the code (4 for
/// CNI_ARGS, 7 for the config).
pub fn unicast_mac(s: &str) -> Result<MacAddr, String> {
    let m: MacAddr = s.parse().map_err(|e| format!("{e}"))?;
    if m.0[0] & 1 != 0 {
        return Err(format!("invalid MAC address \"{s}\": multicast address"));
    }
    if m == MacAddr::ZERO {
        return Err(format!("invalid MAC address \"{s}\": all zeros"));
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A config of the common keys plus `keys`.
    fn conf(keys: Value) -> NetConf {
        let Value::Object(mut m) = keys else {
            panic!("keys must be an object")
        };
        for (k, v) in [("cniVersion", "1.0.0"), ("name", "n"), ("type", "t")] {
            m.insert(k.into(), json!(v));
        }
        NetConf::from_value(Value::Object(m)).unwrap()
    }

    #[test]
    fn ipam_shapes() {
        assert_eq!(ipam_type(&conf(json!({}))).unwrap(), None);
        assert_eq!(ipam_type(&conf(json!({"ipam": null}))).unwrap(), None);
        assert_eq!(ipam_type(&conf(json!({"ipam": {}}))).unwrap(), None);
        assert_eq!(
            ipam_type(&conf(json!({"ipam": {"type": "host-local"}}))).unwrap(),
            Some("host-local".into())
        );
        for bad in [
            json!({"ipam": "x"}),
            json!({"ipam": {"type": 5}}),
            json!({"ipam": {"type": ""}}),
            json!({"ipam": {"subnet": "10.0.0.0/24"}}),
            json!({"ipam": [1]}),
        ] {
            assert_eq!(ipam_type(&conf(bad.clone())).unwrap_err().code, 7, "{bad}");
        }
    }

    #[test]
    fn dns_shapes() {
        assert_eq!(dns(&conf(json!({}))).unwrap(), None);
        assert_eq!(dns(&conf(json!({"dns": {}}))).unwrap(), None);
        assert_eq!(
            dns(&conf(json!({"dns": {"nameservers": null, "domain": null}}))).unwrap(),
            None
        );
        assert_eq!(
            dns(&conf(json!({"dns": {"nameservers": ["10.0.0.53"]}})))
                .unwrap()
                .unwrap()
                .nameservers,
            ["10.0.0.53"]
        );
        for bad in [
            json!({"dns": "x"}),
            json!({"dns": {"nameservers": "x"}}),
            json!({"dns": 1}),
        ] {
            assert_eq!(dns(&conf(bad.clone())).unwrap_err().code, 7, "{bad}");
        }
    }

    #[test]
    fn names_and_macs() {
        assert!(ifname("bridge", "cni0").is_ok());
        let e = ifname("bridge", "waytoolongbridgename").unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("\"bridge\""), "{}", e.msg);
        assert_eq!(
            unicast_mac("02:00:00:00:00:01").unwrap().to_string(),
            "02:00:00:00:00:01"
        );
        assert!(unicast_mac("01:00:00:00:00:01")
            .unwrap_err()
            .contains("multicast"));
        assert!(unicast_mac("00:00:00:00:00:00")
            .unwrap_err()
            .contains("zeros"));
        assert!(unicast_mac("zz").is_err());
    }
}
