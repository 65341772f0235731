//! Network configuration files, found and read the way libcni does.
//!
//! A directory is searched in sorted order: `*.conflist` files first, then
//! single-plugin `*.conf`/`*.json` files, which become a one-plugin list.

use std::path::{Path, PathBuf};

use plexus_cni::version::compare_dotted;
use plexus_cni::{validate, SpecVersion};
use serde_json::{Map, Value};

use crate::error::RuntimeError;

/// A conflist: a named chain of plugin configs sharing one version.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfigList {
    pub name: String,
    pub cni_version: SpecVersion,
    pub disable_check: bool,
    pub disable_gc: bool,
    pub plugins: Vec<PluginConf>,
    /// The bytes the list was read from; cached with each result like libcni.
    pub bytes: Vec<u8>,
}

/// One plugin's config object from a list, as written by the user.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConf {
    pub plugin_type: String,
    /// `capabilities`: which runtimeConfig keys this plugin wants.
    pub capabilities: Map<String, Value>,
    pub raw: Map<String, Value>,
}

impl PluginConf {
    pub fn from_value(v: Value) -> Result<Self, RuntimeError> {
        let Value::Object(raw) = v else {
            return Err(RuntimeError::Config(
                "error parsing configuration: a plugin config must be an object".into(),
            ));
        };
        let plugin_type = raw
            .get("type")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                RuntimeError::Config("error parsing configuration: missing 'type'".into())
            })?
            .to_string();
        let capabilities = match raw.get("capabilities") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => {
                return Err(RuntimeError::Config(format!(
                    "plugin {plugin_type}: \"capabilities\" must be an object of booleans"
                )))
            }
        };
        Ok(PluginConf {
            plugin_type,
            capabilities,
            raw,
        })
    }

    /// True when the plugin declares `cap` as a supported capability.
    pub fn has_capability(&self, cap: &str) -> bool {
        self.capabilities.get(cap).and_then(Value::as_bool) == Some(true)
    }
}

fn bool_key(obj: &Map<String, Value>, key: &str) -> Result<bool, RuntimeError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        Some(other) => Err(RuntimeError::Config(format!(
            "error parsing configuration list: invalid {key} value {other}"
        ))),
    }
}

/// The version a list runs at: the highest of `cniVersions` we speak, else
/// `cniVersion`.
fn pick_version(obj: &Map<String, Value>) -> Result<SpecVersion, RuntimeError> {
    if let Some(Value::Array(vs)) = obj.get("cniVersions") {
        let mut best: Option<&str> = None;
        for v in vs {
            let s = v.as_str().ok_or_else(|| {
                RuntimeError::Config("\"cniVersions\" must be a list of strings".into())
            })?;
            if s.parse::<SpecVersion>().is_ok() && best.is_none_or(|b| compare_dotted(s, b).is_gt())
            {
                best = Some(s);
            }
        }
        if let Some(b) = best {
            return Ok(b.parse().expect("checked above"));
        }
    }
    let v = obj.get("cniVersion").and_then(Value::as_str).unwrap_or("");
    v.parse().map_err(|_| {
        RuntimeError::Unsupported(format!(
            "network configuration has unsupported cniVersion \"{v}\" (supported: 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0)"
        ))
    })
}

impl NetworkConfigList {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, RuntimeError> {
        let v: Value = serde_json::from_slice(bytes)
            .map_err(|e| RuntimeError::Config(format!("error parsing configuration list: {e}")))?;
        let Value::Object(obj) = v else {
            return Err(RuntimeError::Config(
                "error parsing configuration list: not a JSON object".into(),
            ));
        };
        let name = obj
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if name.is_empty() {
            return Err(RuntimeError::Config(
                "error parsing configuration list: no name".into(),
            ));
        }
        validate::network_name(&name).map_err(|e| RuntimeError::Config(e.to_string()))?;
        let cni_version = pick_version(&obj)?;
        let plugins = match obj.get("plugins") {
            Some(Value::Array(p)) if !p.is_empty() => p
                .iter()
                .cloned()
                .map(PluginConf::from_value)
                .collect::<Result<Vec<_>, _>>()?,
            Some(Value::Array(_)) | None => {
                return Err(RuntimeError::Config(format!(
                    "error parsing configuration list: no plugins in list \"{name}\""
                )))
            }
            Some(_) => {
                return Err(RuntimeError::Config(
                    "error parsing configuration list: \"plugins\" must be a list".into(),
                ))
            }
        };
        Ok(NetworkConfigList {
            disable_check: bool_key(&obj, "disableCheck")?,
            disable_gc: bool_key(&obj, "disableGC")?,
            name,
            cni_version,
            plugins,
            bytes: bytes.to_vec(),
        })
    }

    /// A single-plugin `.conf` turned into a list, as libcni's
    /// ConfListFromConf does.
    pub fn from_single_conf(bytes: &[u8]) -> Result<Self, RuntimeError> {
        let v: Value = serde_json::from_slice(bytes)
            .map_err(|e| RuntimeError::Config(format!("error parsing configuration: {e}")))?;
        let plugin = PluginConf::from_value(v)?;
        let list = serde_json::json!({
            "cniVersion": plugin.raw.get("cniVersion").cloned().unwrap_or(Value::Null),
            "name": plugin.raw.get("name").cloned().unwrap_or(Value::Null),
            "plugins": [Value::Object(plugin.raw)],
        });
        Self::from_bytes(&serde_json::to_vec(&list).expect("serializes"))
    }

    /// Parse either a conflist or a single conf, by content.
    pub fn from_any(bytes: &[u8]) -> Result<Self, RuntimeError> {
        let is_list = serde_json::from_slice::<Value>(bytes)
            .ok()
            .is_some_and(|v| v.get("plugins").is_some());
        if is_list {
            Self::from_bytes(bytes)
        } else {
            Self::from_single_conf(bytes)
        }
    }

    /// Read a conf or conflist file: a regular file of at most
    /// [`plexus_base::files::DEFAULT_READ_LIMIT`] bytes (a FIFO or
    /// `/dev/zero` in a config directory must not hang or exhaust memory).
    pub fn from_file(path: &Path) -> Result<Self, RuntimeError> {
        let bytes = plexus_base::files::read_limited(path, plexus_base::files::DEFAULT_READ_LIMIT)
            .map_err(|e| RuntimeError::Config(format!("cannot read {}: {e}", path.display())))?;
        let list = if path.extension().is_some_and(|e| e == "conflist") {
            Self::from_bytes(&bytes)
        } else {
            Self::from_any(&bytes)
        };
        list.map_err(|e| RuntimeError::Config(format!("{}: {e}", path.display())))
    }

    /// Find the network `name` in `dir`.
    pub fn load(dir: &Path, name: &str) -> Result<Self, RuntimeError> {
        for ext in [&["conflist"][..], &["conf", "json"][..]] {
            for file in conf_files(dir, ext)? {
                // A broken file elsewhere in the directory must not hide the
                // network we were asked for, as with libcni.
                match Self::from_file(&file) {
                    Ok(list) if list.name == name => return Ok(list),
                    Ok(_) => {}
                    Err(e) => tracing::debug!("skipping {}: {e}", file.display()),
                }
            }
        }
        Err(RuntimeError::NetworkNotFound {
            name: name.to_string(),
            dir: dir.to_path_buf(),
        })
    }

    /// The plugin config as the plugin receives it, minus runtime injection.
    pub fn plugin_bytes(&self, i: usize) -> Vec<u8> {
        serde_json::to_vec(&self.plugins[i].raw).expect("serializes")
    }
}

/// Files in `dir` with one of `extensions`, sorted by name.
pub fn conf_files(dir: &Path, extensions: &[&str]) -> Result<Vec<PathBuf>, RuntimeError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(RuntimeError::Config(format!(
                "cannot read config directory {}: {e}",
                dir.display()
            )))
        }
    };
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| !t.is_dir()))
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| extensions.contains(&e))
        })
        .collect();
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, body: &str) {
        std::fs::write(dir.join(name), body).unwrap();
    }

    #[test]
    fn finds_conflist_before_single_conf() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "10-a.conf",
            r#"{"cniVersion":"0.4.0","name":"net","type":"single"}"#,
        );
        write(
            d.path(),
            "20-b.conflist",
            r#"{"cniVersion":"1.0.0","name":"net","plugins":[{"type":"listed"}]}"#,
        );
        write(d.path(), "00-broken.conflist", "{");
        let l = NetworkConfigList::load(d.path(), "net").unwrap();
        assert_eq!(l.plugins[0].plugin_type, "listed");
        assert_eq!(l.cni_version, SpecVersion::V1_0_0);
    }

    #[test]
    fn single_conf_becomes_list() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "a.json",
            r#"{"cniVersion":"0.3.1","name":"one","type":"bridge","capabilities":{"mac":true}}"#,
        );
        let l = NetworkConfigList::load(d.path(), "one").unwrap();
        assert_eq!(l.plugins.len(), 1);
        assert!(l.plugins[0].has_capability("mac"));
        assert!(!l.plugins[0].has_capability("ips"));
        assert_eq!(l.cni_version, SpecVersion::V0_3_1);
    }

    #[test]
    fn sorted_first_match_wins() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "b.conflist",
            r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"second"}]}"#,
        );
        write(
            d.path(),
            "a.conflist",
            r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"first"}]}"#,
        );
        assert_eq!(
            NetworkConfigList::load(d.path(), "n").unwrap().plugins[0].plugin_type,
            "first"
        );
    }

    #[test]
    fn missing_network_and_dir() {
        let d = tempfile::tempdir().unwrap();
        assert!(matches!(
            NetworkConfigList::load(d.path(), "x"),
            Err(RuntimeError::NetworkNotFound { .. })
        ));
        assert!(matches!(
            NetworkConfigList::load(&d.path().join("nope"), "x"),
            Err(RuntimeError::NetworkNotFound { .. })
        ));
    }

    #[test]
    fn cni_versions_picks_highest_supported() {
        let l = NetworkConfigList::from_bytes(
            br#"{"cniVersion":"0.4.0","cniVersions":["0.4.0","1.1.0","9.0.0"],"name":"n","plugins":[{"type":"t"}]}"#,
        )
        .unwrap();
        assert_eq!(l.cni_version, SpecVersion::V1_1_0);
    }

    #[test]
    fn list_errors() {
        let err = |s: &str| {
            NetworkConfigList::from_bytes(s.as_bytes())
                .unwrap_err()
                .to_string()
        };
        assert!(err(r#"{"cniVersion":"1.0.0","plugins":[{"type":"t"}]}"#).contains("no name"));
        assert!(err(r#"{"cniVersion":"1.0.0","name":"n","plugins":[]}"#).contains("no plugins"));
        assert!(
            err(r#"{"cniVersion":"1.0.0","name":"n","plugins":[{}]}"#).contains("missing 'type'")
        );
        assert!(
            err(r#"{"cniVersion":"7.0.0","name":"n","plugins":[{"type":"t"}]}"#)
                .contains("unsupported cniVersion")
        );
        assert!(
            err(r#"{"cniVersion":"1.0.0","name":"a b","plugins":[{"type":"t"}]}"#)
                .contains("invalid characters")
        );
        assert!(err(
            r#"{"cniVersion":"1.0.0","name":"n","disableCheck":3,"plugins":[{"type":"t"}]}"#
        )
        .contains("disableCheck"));
        let ok = NetworkConfigList::from_bytes(
            br#"{"cniVersion":"1.0.0","name":"n","disableCheck":"true","disableGC":true,"plugins":[{"type":"t"}]}"#,
        )
        .unwrap();
        assert!(ok.disable_check && ok.disable_gc);
    }
}
