//! Building the exact stdin a plugin in a chain receives.

use plexus_cni::{CniResult, SpecVersion};
use serde_json::{Map, Value};

use crate::conf::PluginConf;

/// What the runtime adds to a plugin's own config: the list's `name` and
/// `cniVersion`, the previous plugin's result, and `runtimeConfig` holding only
/// the capability arguments this plugin declared. `capabilities` itself is
/// stripped: it is a message to the runtime, not to the plugin.
pub fn plugin_stdin(
    plugin: &PluginConf,
    name: &str,
    version: SpecVersion,
    prev_result: Option<&CniResult>,
    capability_args: &Map<String, Value>,
) -> Vec<u8> {
    let mut obj = plugin.raw.clone();
    obj.remove("capabilities");
    obj.insert("name".into(), Value::String(name.into()));
    obj.insert("cniVersion".into(), Value::String(version.as_str().into()));
    if let Some(prev) = prev_result {
        let mut v = prev.to_value(version);
        // prevResult carries no cniVersion of its own in libcni's output.
        if let Some(o) = v.as_object_mut() {
            o.remove("cniVersion");
        }
        obj.insert("prevResult".into(), v);
    }
    let rc: Map<String, Value> = capability_args
        .iter()
        .filter(|(cap, _)| plugin.has_capability(cap))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !rc.is_empty() {
        // A runtimeConfig written in the file is replaced, as libcni does.
        obj.insert("runtimeConfig".into(), Value::Object(rc));
    }
    serde_json::to_vec(&Value::Object(obj)).expect("serializes")
}

/// GC and STATUS configs: name and version, plus the valid attachments for GC.
pub fn gc_or_status_stdin(
    plugin: &PluginConf,
    name: &str,
    version: SpecVersion,
    valid_attachments: Option<&Value>,
) -> Vec<u8> {
    let mut obj = plugin.raw.clone();
    obj.remove("capabilities");
    obj.insert("name".into(), Value::String(name.into()));
    obj.insert("cniVersion".into(), Value::String(version.as_str().into()));
    if let Some(v) = valid_attachments {
        obj.insert(plexus_cni::config::VALID_ATTACHMENTS_KEY.into(), v.clone());
        // The spec's first draft named it this way; libcni sends both.
        obj.insert("cni.dev/attachments".into(), v.clone());
    }
    serde_json::to_vec(&Value::Object(obj)).expect("serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn injects_and_filters_capabilities() {
        let p = PluginConf::from_value(json!({
            "type": "portmap",
            "capabilities": {"portMappings": true, "bandwidth": false},
            "runtimeConfig": {"stale": 1},
            "snat": true
        }))
        .unwrap();
        let caps = json!({"portMappings": [{"hostPort": 80}], "bandwidth": {}, "mac": "x"});
        let prev = CniResult::from_value(&json!({"ips":[{"address":"10.0.0.2/24"}]})).unwrap();
        let out: Value = serde_json::from_slice(&plugin_stdin(
            &p,
            "net",
            SpecVersion::V0_4_0,
            Some(&prev),
            caps.as_object().unwrap(),
        ))
        .unwrap();
        assert_eq!(out["name"], "net");
        assert_eq!(out["cniVersion"], "0.4.0");
        assert_eq!(out["snat"], true);
        assert!(out.get("capabilities").is_none());
        assert_eq!(
            out["runtimeConfig"],
            json!({"portMappings": [{"hostPort": 80}]})
        );
        assert_eq!(out["prevResult"]["ips"][0]["version"], "4");
    }

    #[test]
    fn no_runtime_config_when_nothing_matches() {
        let p = PluginConf::from_value(json!({"type": "bridge"})).unwrap();
        let out: Value = serde_json::from_slice(&plugin_stdin(
            &p,
            "n",
            SpecVersion::V1_0_0,
            None,
            json!({"mac": "x"}).as_object().unwrap(),
        ))
        .unwrap();
        assert!(out.get("runtimeConfig").is_none());
        assert!(out.get("prevResult").is_none());
    }

    #[test]
    fn gc_gets_valid_attachments() {
        let p = PluginConf::from_value(json!({"type": "t"})).unwrap();
        let va = json!([{"containerID": "c", "ifname": "eth0"}]);
        let out: Value =
            serde_json::from_slice(&gc_or_status_stdin(&p, "n", SpecVersion::V1_1_0, Some(&va)))
                .unwrap();
        assert_eq!(out["cni.dev/valid-attachments"], va);
    }
}
