//! A single plugin's network configuration, as it arrives on stdin.
//!
//! Common keys are typed; everything else stays in `raw` so each plugin can
//! deserialize its own struct with [`NetConf::plugin_config`].

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{CniError, ErrorCode};
use crate::result::CniResult;
use crate::validate;
use crate::version::SpecVersion;

#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    pub cni_version: SpecVersion,
    pub name: String,
    pub plugin_type: String,
    /// The `prevResult` of a chain, converted to the in-memory model.
    pub prev_result: Option<CniResult>,
    /// `runtimeConfig`: capability arguments the runtime passed.
    pub runtime_config: Map<String, Value>,
    /// The whole object, for plugin-specific keys.
    pub raw: Map<String, Value>,
}

/// One entry of `cni.dev/valid-attachments` (GC).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

pub const VALID_ATTACHMENTS_KEY: &str = "cni.dev/valid-attachments";

impl NetConf {
    /// Decode and validate the common keys: JSON errors are code 6, a missing
    /// or invalid `name`/`type` code 7, an unsupported `cniVersion` code 1.
    pub fn parse(bytes: &[u8]) -> Result<Self, CniError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| {
            CniError::decode(format!("network configuration is not valid JSON: {e}"))
        })?;
        Self::from_value(value)
    }

    pub fn from_value(value: Value) -> Result<Self, CniError> {
        let Value::Object(raw) = value else {
            return Err(CniError::decode(
                "network configuration must be a JSON object",
            ));
        };
        let str_key = |k: &str| -> Result<Option<String>, CniError> {
            match raw.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(CniError::invalid_config(format!(
                    "\"{k}\" must be a string, got {other}"
                ))),
            }
        };
        let version_str = str_key("cniVersion")?.unwrap_or_default();
        if version_str.is_empty() {
            return Err(CniError::new(
                ErrorCode::IncompatibleVersion,
                "network configuration has no \"cniVersion\"",
            )
            .with_details("set cniVersion to one of 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0"));
        }
        let cni_version = SpecVersion::parse_config_version(&version_str)?;
        let name = str_key("name")?.unwrap_or_default();
        validate::network_name(&name).map_err(|e| e.with_version(cni_version.as_str()))?;
        let plugin_type = str_key("type")?.unwrap_or_default();
        if plugin_type.is_empty() {
            return Err(CniError::invalid_config(format!(
                "network \"{name}\": plugin configuration has no \"type\""
            )));
        }
        let prev_result =
            match raw.get("prevResult") {
                None | Some(Value::Null) => None,
                Some(v) => Some(CniResult::from_value(v).map_err(|e| {
                    CniError::decode(format!("cannot decode prevResult: {}", e.msg))
                })?),
            };
        let runtime_config = match raw.get("runtimeConfig") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => {
                return Err(CniError::invalid_config(
                    "\"runtimeConfig\" must be an object",
                ))
            }
        };
        Ok(NetConf {
            cni_version,
            name,
            plugin_type,
            prev_result,
            runtime_config,
            raw,
        })
    }

    /// Deserialize the plugin's own view of the config; errors are code 7
    /// and name the network.
    pub fn plugin_config<T: DeserializeOwned>(&self) -> Result<T, CniError> {
        serde_json::from_value(Value::Object(self.raw.clone())).map_err(|e| {
            CniError::invalid_config(format!(
                "invalid configuration for network \"{}\" (type {}): {e}",
                self.name, self.plugin_type
            ))
        })
    }

    /// The `ipam` object, if any.
    pub fn ipam(&self) -> Option<&Map<String, Value>> {
        self.raw.get("ipam").and_then(Value::as_object)
    }

    /// `ipam.type`, if there is an IPAM section with a type.
    pub fn ipam_type(&self) -> Option<&str> {
        self.ipam()
            .and_then(|m| m.get("type"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }

    /// `args.cni.<key>`: the conventions-document way to pass per-attachment
    /// arguments in the config.
    pub fn args_cni(&self, key: &str) -> Option<&Value> {
        self.raw.get("args")?.get("cni")?.get(key)
    }

    /// GC's `cni.dev/valid-attachments`; absent means "none are valid".
    pub fn valid_attachments(&self) -> Result<Vec<Attachment>, CniError> {
        match self.raw.get(VALID_ATTACHMENTS_KEY) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(v) => serde_json::from_value(v.clone()).map_err(|e| {
                CniError::invalid_config(format!("invalid \"{VALID_ATTACHMENTS_KEY}\": {e}"))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_common_keys() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"n1","type":"plexus-bridge","bridge":"br9",
                "ipam":{"type":"plexus-host-local"},
                "runtimeConfig":{"mac":"00:11:22:33:44:55"},
                "args":{"cni":{"ips":["10.0.0.9"]}},
                "prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/24"}]}}"#,
        )
        .unwrap();
        assert_eq!(c.cni_version, SpecVersion::V1_0_0);
        assert_eq!(c.name, "n1");
        assert_eq!(c.ipam_type(), Some("plexus-host-local"));
        assert_eq!(c.runtime_config["mac"], "00:11:22:33:44:55");
        assert_eq!(c.args_cni("ips"), Some(&json!(["10.0.0.9"])));
        assert_eq!(c.prev_result.unwrap().ips.len(), 1);
        #[derive(serde::Deserialize)]
        struct B {
            bridge: String,
        }
        let b: B = NetConf::parse(br#"{"cniVersion":"1.0.0","name":"n","type":"t","bridge":"x"}"#)
            .unwrap()
            .plugin_config()
            .unwrap();
        assert_eq!(b.bridge, "x");
    }

    #[test]
    fn error_codes() {
        let code = |s: &str| NetConf::parse(s.as_bytes()).unwrap_err().code;
        assert_eq!(code("{"), 6);
        assert_eq!(code("[]"), 6);
        assert_eq!(code(r#"{"name":"n","type":"t"}"#), 1);
        assert_eq!(code(r#"{"cniVersion":"0.2.0","name":"n","type":"t"}"#), 1);
        assert_eq!(code(r#"{"cniVersion":"1.0.0","type":"t"}"#), 7);
        assert_eq!(
            code(r#"{"cniVersion":"1.0.0","name":"../x","type":"t"}"#),
            7
        );
        assert_eq!(code(r#"{"cniVersion":"1.0.0","name":"n"}"#), 7);
        assert_eq!(code(r#"{"cniVersion":"1.0.0","name":5,"type":"t"}"#), 7);
        assert_eq!(
            code(r#"{"cniVersion":"1.0.0","name":"n","type":"t","runtimeConfig":3}"#),
            7
        );
        assert_eq!(
            code(r#"{"cniVersion":"1.0.0","name":"n","type":"t","prevResult":{"ips":"x"}}"#),
            6
        );
    }

    #[test]
    fn valid_attachments() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.1.0","name":"n","type":"t",
                "cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"}]}"#,
        )
        .unwrap();
        assert_eq!(
            c.valid_attachments().unwrap(),
            vec![Attachment {
                container_id: "c1".into(),
                ifname: "eth0".into()
            }]
        );
        let c = NetConf::parse(
            br#"{"cniVersion":"1.1.0","name":"n","type":"t","cni.dev/valid-attachments":5}"#,
        )
        .unwrap();
        assert_eq!(c.valid_attachments().unwrap_err().code, 7);
    }
}
