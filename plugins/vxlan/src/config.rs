//! The plugin's own keys, flannel's names and meanings, validated before
//! anything is written.

use std::path::PathBuf;

use plexus_base::files;
use plexus_cni::{CniError, NetConf};
use serde_json::{Map, Value};

/// Where plexusd writes the lease file (flannel: /run/flannel/subnet.env).
pub const DEFAULT_SUBNET_FILE: &str = "/run/plexus/subnet.env";
/// Where rendered delegate configs are kept for DEL (flannel:
/// /var/lib/cni/flannel).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/plexus-vxlan";

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct VxlanConf {
    /// `subnetFile`.
    pub subnet_file: PathBuf,
    /// `dataDir`.
    pub data_dir: PathBuf,
    /// `delegate`: keys for the delegated plugin that override the defaults.
    pub delegate: Map<String, Value>,
    /// `ipam`: the base of the delegate's IPAM section.
    pub ipam: Map<String, Value>,
    /// `runtimeConfig`, passed on to the delegate.
    pub runtime_config: Map<String, Value>,
}

impl VxlanConf {
    pub fn load(conf: &NetConf) -> Result<VxlanConf, CniError> {
        let raw = &conf.raw;
        let bad =
            |msg: String| CniError::invalid_config(format!("network \"{}\": {msg}", conf.name));
        let subnet_file = PathBuf::from(
            string_key(raw, "subnetFile")
                .map_err(bad)?
                .unwrap_or_else(|| DEFAULT_SUBNET_FILE.into()),
        );
        if !subnet_file.is_absolute() {
            return Err(bad(format!(
                "subnetFile must be an absolute path, not {}",
                subnet_file.display()
            )));
        }
        let data_dir = PathBuf::from(
            string_key(raw, "dataDir")
                .map_err(bad)?
                .unwrap_or_else(|| DEFAULT_DATA_DIR.into()),
        );
        files::require_absolute_dir("dataDir", &data_dir).map_err(bad)?;
        let delegate = object_key(raw, "delegate").map_err(bad)?;
        // flannel's rules: the plugin sets name and ipam itself.
        if delegate.get("type").is_some_and(|t| !t.is_string()) {
            return Err(bad(
                "'delegate' dictionary, if present, must have (string) 'type' field".into(),
            ));
        }
        for key in ["name", "ipam"] {
            if delegate.contains_key(key) {
                return Err(bad(format!(
                    "'delegate' dictionary must not have '{key}' field, it is set by plexus-vxlan"
                )));
            }
        }
        let ipam = object_key(raw, "ipam").map_err(bad)?;
        if ipam.get("type").is_some_and(|t| !t.is_string()) {
            return Err(bad("ipam.type must be a string".into()));
        }
        Ok(VxlanConf {
            subnet_file,
            data_dir,
            delegate,
            ipam,
            runtime_config: conf.runtime_config.clone(),
        })
    }
}

fn string_key(raw: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match raw.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!("{key} must be a string, got {other}")),
    }
}

fn object_key(raw: &Map<String, Value>, key: &str) -> Result<Map<String, Value>, String> {
    match raw.get(key) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m.clone()),
        Some(other) => Err(format!("{key} must be an object, got {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn load(v: Value) -> Result<VxlanConf, CniError> {
        VxlanConf::load(&NetConf::from_value(v).unwrap())
    }

    #[test]
    fn defaults_mirror_flannel() {
        let c = load(json!({"cniVersion":"1.0.0","name":"cbr0","type":"plexus-vxlan"})).unwrap();
        assert_eq!(c.subnet_file, PathBuf::from("/run/plexus/subnet.env"));
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/cni/plexus-vxlan"));
        assert!(c.delegate.is_empty() && c.ipam.is_empty());
    }

    #[test]
    fn refuses_what_flannel_refuses() {
        for (delegate, want) in [
            (json!({"type": 5}), "(string) 'type'"),
            (json!({"name": "x"}), "'name'"),
            (json!({"ipam": {}}), "'ipam'"),
        ] {
            let e = load(
                json!({"cniVersion":"1.0.0","name":"n","type":"plexus-vxlan","delegate":delegate}),
            )
            .unwrap_err();
            assert_eq!(e.code, 7);
            assert!(e.msg.contains(want), "{}", e.msg);
        }
        let e =
            load(json!({"cniVersion":"1.0.0","name":"n","type":"plexus-vxlan","dataDir":"rel"}))
                .unwrap_err();
        assert!(e.msg.contains("absolute"), "{}", e.msg);
        let e = load(
            json!({"cniVersion":"1.0.0","name":"n","type":"plexus-vxlan","subnetFile":"x.env"}),
        )
        .unwrap_err();
        assert!(e.msg.contains("subnetFile"), "{}", e.msg);
        let e = load(json!({"cniVersion":"1.0.0","name":"n","type":"plexus-vxlan","delegate":[]}))
            .unwrap_err();
        assert_eq!(e.code, 7);
    }
}
