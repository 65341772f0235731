//! `00-plexus.conflist`: the node's default network wrapped in the plexus
//! meta plugin, as Multus' (thin) auto-configuration does it:
//!
//! - the default network is the first file of the conf dir ending in
//!   `.conf` or `.conflist` by name (libcni's order), other than ours;
//! - it must have a `cniVersion`, which the wrapper takes over;
//! - it goes inline as the only entry of `delegates` (eth0);
//! - the capabilities its plugins declare are declared by the wrapper too
//!   (so the runtime passes port mappings and bandwidth on to it), plus
//!   `io.kubernetes.cri.pod-annotations`, which the meta plugin reads;
//! - `kubeconfig` points at the service account's kubeconfig when there
//!   is one.
//!
//! The file is named `00-` so that it sorts before the network it wraps:
//! kubelet's runtime uses the first file.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use plexus_base::files;
use plexus_cni::NetConf;
use serde_json::{json, Map, Value};

/// Our conflist; the default network is never this file.
pub const CONFLIST_NAME: &str = "00-plexus.conflist";
/// The wrapper's network name (Multus: `multus-cni-network`).
pub const NETWORK_NAME: &str = "plexus-cni-network";
const POD_ANNOTATIONS_CAP: &str = "io.kubernetes.cri.pod-annotations";

/// Whether `name` is a network configuration file name (Multus thin's
/// extensions).
pub fn is_conf_name(name: &str) -> bool {
    (name.ends_with(".conf") || name.ends_with(".conflist")) && !name.starts_with('.')
}

/// The name of the default network's file among `names` (the conf dir's
/// entries), if any.
pub fn pick_default<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut v: Vec<&str> = names
        .into_iter()
        .filter(|n| is_conf_name(n) && *n != CONFLIST_NAME)
        .collect();
    v.sort_unstable();
    v.first().copied()
}

/// The conf dir's file names (regular files and symlinks; not directories).
pub fn conf_names(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let e = e.with_context(|| format!("cannot list {}", dir.display()))?;
        if e.file_type().is_ok_and(|t| !t.is_dir()) {
            if let Some(n) = e.file_name().to_str() {
                out.push(n.to_string());
            }
        }
    }
    Ok(out)
}

/// Read and check a network configuration file.
pub fn read_network(path: &Path) -> Result<Value> {
    let bytes = files::read_limited(path, files::DEFAULT_READ_LIMIT)
        .with_context(|| format!("cannot read the network configuration {}", path.display()))?;
    let v: Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not JSON", path.display()))?;
    check_network(&v).with_context(|| format!("{}", path.display()))?;
    Ok(v)
}

fn check_network(v: &Value) -> Result<()> {
    let o = v
        .as_object()
        .ok_or_else(|| anyhow!("a network configuration must be a JSON object"))?;
    if !o.get("cniVersion").is_some_and(Value::is_string) {
        bail!("no \"cniVersion\" (Multus refuses such a default network too)");
    }
    let types: Vec<&str> = match o.get("plugins") {
        Some(Value::Array(p)) => p
            .iter()
            .map(|p| p.get("type").and_then(Value::as_str).unwrap_or(""))
            .collect(),
        Some(_) => bail!("\"plugins\" must be a list"),
        None => vec![o.get("type").and_then(Value::as_str).unwrap_or("")],
    };
    if types.is_empty() || types.contains(&"") {
        bail!("every plugin needs a \"type\"");
    }
    if types.contains(&"plexus") {
        bail!("it is a plexus configuration already: plexus would wrap itself");
    }
    Ok(())
}

/// What goes into the wrapper besides the default network.
#[derive(Debug, Default, Clone)]
pub struct WrapOptions {
    /// The kubeconfig path as the runtime on the host sees it.
    pub kubeconfig: Option<PathBuf>,
    /// Keys merged into the plexus entry (e.g. `readinessindicatorfile`,
    /// `defaultNetworks`, `namespaceIsolation`); they may not replace
    /// `type` or `delegates`.
    pub extra: Map<String, Value>,
}

/// The wrapper conflist for `default_network`.
pub fn render(default_network: &Value, opts: &WrapOptions) -> Result<Vec<u8>> {
    check_network(default_network)?;
    let version = default_network["cniVersion"].clone();
    let mut caps = Map::new();
    let entries: Vec<&Value> = match default_network.get("plugins") {
        Some(Value::Array(p)) => p.iter().collect(),
        _ => vec![default_network],
    };
    for p in entries {
        if let Some(Value::Object(c)) = p.get("capabilities") {
            for (k, v) in c {
                if v == &Value::Bool(true) {
                    caps.insert(k.clone(), Value::Bool(true));
                }
            }
        }
    }
    caps.insert(POD_ANNOTATIONS_CAP.into(), Value::Bool(true));

    let mut entry = Map::new();
    entry.insert("type".into(), json!("plexus"));
    entry.insert("capabilities".into(), Value::Object(caps));
    if let Some(k) = &opts.kubeconfig {
        entry.insert("kubeconfig".into(), json!(k));
    }
    for (k, v) in &opts.extra {
        if matches!(
            k.as_str(),
            "type" | "delegates" | "clusterNetwork" | "name" | "cniVersion"
        ) {
            bail!("the meta plugin options may not set {k:?}: install sets it");
        }
        entry.insert(k.clone(), v.clone());
    }
    entry.insert("delegates".into(), json!([default_network]));

    // The meta plugin must accept what we write: check it the way it will
    // see it (libcni gives each plugin of a list its name and cniVersion).
    let mut as_plugin = entry.clone();
    as_plugin.insert("name".into(), json!(NETWORK_NAME));
    as_plugin.insert("cniVersion".into(), version.clone());
    let conf = NetConf::from_value(Value::Object(as_plugin))
        .map_err(|e| anyhow!("the wrapper is not a valid CNI configuration: {e}"))?;
    plexus_meta::config::MetaConf::from_netconf(&conf)
        .map_err(|e| anyhow!("the plexus meta plugin would refuse the wrapper: {e}"))?;

    let list = json!({
        "cniVersion": version,
        "name": NETWORK_NAME,
        "plugins": [Value::Object(entry)],
    });
    let mut out = serde_json::to_vec_pretty(&list).expect("serializes");
    out.push(b'\n');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_conf_by_name_other_than_ours() {
        let names = [
            "99-loopback.conf",
            CONFLIST_NAME,
            "10-flannel.conflist",
            "foo.json",
            ".10-hidden.conflist",
            "05-x.conf.plexus-orig",
        ];
        assert_eq!(pick_default(names), Some("10-flannel.conflist"));
        assert_eq!(pick_default([CONFLIST_NAME, "README"]), None);
    }

    #[test]
    fn wraps_a_flannel_conflist() {
        let flannel: Value = serde_json::from_str(
            r#"{"name":"cbr0","cniVersion":"0.3.1","plugins":[
                {"type":"flannel","delegate":{"hairpinMode":true,"isDefaultGateway":true}},
                {"type":"portmap","capabilities":{"portMappings":true,"x":false}}]}"#,
        )
        .unwrap();
        let opts = WrapOptions {
            kubeconfig: Some("/etc/cni/net.d/plexus.d/plexus.kubeconfig".into()),
            extra: serde_json::from_str(r#"{"namespaceIsolation":true}"#).unwrap(),
        };
        let out: Value = serde_json::from_slice(&render(&flannel, &opts).unwrap()).unwrap();
        assert_eq!(out["cniVersion"], "0.3.1");
        assert_eq!(out["name"], NETWORK_NAME);
        let p = &out["plugins"][0];
        assert_eq!(p["type"], "plexus");
        assert_eq!(p["delegates"][0], flannel);
        assert_eq!(
            p["capabilities"],
            json!({"portMappings": true, POD_ANNOTATIONS_CAP: true})
        );
        assert_eq!(p["kubeconfig"], "/etc/cni/net.d/plexus.d/plexus.kubeconfig");
        assert_eq!(p["namespaceIsolation"], true);
    }

    #[test]
    fn bad_default_networks_are_refused() {
        for (bad, why) in [
            (r#"[1]"#, "JSON object"),
            (r#"{"name":"n","type":"bridge"}"#, "cniVersion"),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{}]}"#,
                "type",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"plexus"}]}"#,
                "wrap itself",
            ),
        ] {
            let v: Value = serde_json::from_str(bad).unwrap();
            let e = render(&v, &WrapOptions::default()).unwrap_err();
            assert!(format!("{e:#}").contains(why), "{bad}: {e:#}");
        }
        let ok: Value =
            serde_json::from_str(r#"{"cniVersion":"1.0.0","name":"n","type":"bridge"}"#).unwrap();
        let opts = WrapOptions {
            extra: serde_json::from_str(r#"{"delegates":[]}"#).unwrap(),
            ..Default::default()
        };
        assert!(render(&ok, &opts).is_err());
    }
}
