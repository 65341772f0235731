//! The plexus conflist entry: Multus-compatible keys plus `attachmentsDir`
//! and `parallelSecondary`.

use std::path::PathBuf;

use plexus_base::files;
use plexus_cni::NetConf;
use plexus_runtime::NetworkConfigList;
use serde::Deserialize;
use serde_json::Value;

use crate::error::MetaError;

pub const DEFAULT_CACHE_DIR: &str = "/var/lib/cni/plexus";
pub const DEFAULT_CONF_DIR: &str = "/etc/cni/net.d";
/// plexusd's run directory.
pub const DEFAULT_RUN_DIR: &str = "/run/plexus";
/// Multus's default: where clusterNetwork/defaultNetworks NADs and the
/// default-network annotation's NADs live when no namespace is given.
pub const DEFAULT_PLEXUS_NAMESPACE: &str = "kube-system";

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    #[serde(default)]
    cluster_network: String,
    #[serde(default)]
    default_networks: Vec<String>,
    /// Objects only (checked below): `[5]` is an error (Multus).
    #[serde(default)]
    delegates: Vec<Value>,
    #[serde(default)]
    kubeconfig: String,
    conf_dir: Option<PathBuf>,
    /// `cniDir` is Multus's name for the same thing.
    #[serde(alias = "cniDir")]
    cache_dir: Option<PathBuf>,
    bin_dir: Option<PathBuf>,
    #[serde(default)]
    namespace_isolation: bool,
    /// Comma separated, as in Multus.
    global_namespaces: Option<String>,
    system_namespaces: Option<Vec<String>>,
    /// Multus's `multusNamespace`; `plexusNamespace` is our spelling.
    #[serde(alias = "multusNamespace")]
    plexus_namespace: Option<String>,
    #[serde(rename = "readinessindicatorfile", default)]
    readiness_indicator_file: String,
    attachments_dir: Option<PathBuf>,
    #[serde(default)]
    parallel_secondary: bool,
    /// plexusd's run directory (its socket, the policy marker).
    run_dir: Option<PathBuf>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct MetaConf {
    pub name: String,
    pub cluster_network: String,
    pub default_networks: Vec<String>,
    pub delegates: Vec<Value>,
    pub kubeconfig: Option<String>,
    pub conf_dir: PathBuf,
    pub cache_dir: PathBuf,
    pub bin_dir: Option<PathBuf>,
    pub namespace_isolation: bool,
    pub global_namespaces: Vec<String>,
    pub system_namespaces: Vec<String>,
    pub plexus_namespace: String,
    pub readiness_indicator_file: Option<PathBuf>,
    pub attachments_dir: Option<PathBuf>,
    pub parallel_secondary: bool,
    /// plexusd's run directory: `plexusd.sock` and the network-policy
    /// marker (`runDir`, default /run/plexus, as plexus-bgp-routes has it).
    pub run_dir: PathBuf,
}

impl MetaConf {
    pub fn from_netconf(conf: &NetConf) -> Result<Self, MetaError> {
        let raw: Raw = serde_json::from_value(Value::Object(conf.raw.clone()))
            .map_err(|e| MetaError::Config(e.to_string()))?;
        if raw.cluster_network.is_empty() && raw.delegates.is_empty() {
            return Err(MetaError::Config(
                "at least one of \"clusterNetwork\" or \"delegates\" must be set".into(),
            ));
        }
        // Every inline delegate must be a usable conf or conflist, whether
        // or not clusterNetwork makes it unused: a typo must not hide.
        let delegates = raw.delegates;
        for (i, d) in delegates.iter().enumerate() {
            if !d.is_object() {
                return Err(MetaError::Config(format!(
                    "delegates[{i}] must be a network configuration object, got {d}"
                )));
            }
            NetworkConfigList::from_any(&serde_json::to_vec(d).expect("serializes"))
                .map_err(|e| MetaError::Config(format!("delegates[{i}]: {e}")))?;
        }
        let cache_dir = raw.cache_dir.unwrap_or_else(|| DEFAULT_CACHE_DIR.into());
        // Empty or relative, the plans and locks would land in whatever
        // directory the runtime runs us from.
        files::require_absolute_dir("cacheDir", &cache_dir).map_err(MetaError::Config)?;
        let global_namespaces = match raw.global_namespaces {
            // Multus: "default" is global unless the key says otherwise.
            None => vec!["default".to_string()],
            Some(s) => s
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
        };
        Ok(MetaConf {
            name: conf.name.clone(),
            cluster_network: raw.cluster_network,
            default_networks: raw.default_networks,
            delegates,
            kubeconfig: Some(raw.kubeconfig).filter(|s| !s.is_empty()),
            conf_dir: raw.conf_dir.unwrap_or_else(|| DEFAULT_CONF_DIR.into()),
            cache_dir,
            bin_dir: raw.bin_dir,
            namespace_isolation: raw.namespace_isolation,
            global_namespaces,
            system_namespaces: raw
                .system_namespaces
                .unwrap_or_else(|| vec!["kube-system".to_string()]),
            plexus_namespace: raw
                .plexus_namespace
                .unwrap_or_else(|| DEFAULT_PLEXUS_NAMESPACE.to_string()),
            readiness_indicator_file: Some(raw.readiness_indicator_file)
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            attachments_dir: raw.attachments_dir,
            parallel_secondary: raw.parallel_secondary,
            run_dir: raw.run_dir.unwrap_or_else(|| DEFAULT_RUN_DIR.into()),
        })
    }

    /// Where delegates are looked up: binDir first, then CNI_PATH (Multus
    /// order).
    pub fn plugin_path(&self, cni_path: &[PathBuf]) -> Vec<PathBuf> {
        self.bin_dir
            .iter()
            .cloned()
            .chain(cni_path.iter().cloned())
            .collect()
    }

    pub fn is_system_namespace(&self, ns: &str) -> bool {
        self.system_namespaces.iter().any(|s| s == ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(extra: &str) -> Result<MetaConf, MetaError> {
        let s = format!(r#"{{"cniVersion":"1.0.0","name":"plexus","type":"plexus"{extra}}}"#);
        MetaConf::from_netconf(&NetConf::parse(s.as_bytes()).unwrap())
    }

    #[test]
    fn defaults_follow_multus() {
        let c = conf(r#","clusterNetwork":"cbr0""#).unwrap();
        assert_eq!(c.global_namespaces, ["default"]);
        assert_eq!(c.system_namespaces, ["kube-system"]);
        assert_eq!(c.plexus_namespace, "kube-system");
        assert_eq!(c.cache_dir, PathBuf::from(DEFAULT_CACHE_DIR));
        assert!(c.kubeconfig.is_none() && c.readiness_indicator_file.is_none());
        assert!(!c.parallel_secondary);
    }

    #[test]
    fn keys_are_read() {
        let c = conf(
            r#","clusterNetwork":"cbr0","globalNamespaces":" a, b ,","cniDir":"/x",
               "namespaceIsolation":true,"readinessindicatorfile":"/r","multusNamespace":"m",
               "parallelSecondary":true,"attachmentsDir":"/nads","binDir":"/b""#,
        )
        .unwrap();
        assert_eq!(c.global_namespaces, ["a", "b"]);
        assert_eq!(c.cache_dir, PathBuf::from("/x"));
        assert_eq!(c.plexus_namespace, "m");
        assert!(c.namespace_isolation && c.parallel_secondary);
        assert_eq!(
            c.plugin_path(&["/p".into()]),
            [PathBuf::from("/b"), PathBuf::from("/p")]
        );
    }

    #[test]
    fn bad_delegates_and_cache_dirs_are_refused() {
        for (extra, says) in [
            (r#","delegates":[5]"#, "delegates"),
            (r#","delegates":[{"cniVersion":"1.0.0"}]"#, "delegates[0]"),
            (r#","clusterNetwork":"c","delegates":["x"]"#, "delegates"),
            (
                r#","clusterNetwork":"c","cacheDir":"""#,
                "cacheDir must not be empty",
            ),
            (
                r#","clusterNetwork":"c","cniDir":"rel""#,
                "cacheDir must be an absolute path",
            ),
        ] {
            let e = conf(extra).unwrap_err();
            assert_eq!(e.to_cni().code, 7, "{extra}");
            assert!(e.to_string().contains(says), "{extra}: {e}");
        }
        let c =
            conf(r#","delegates":[{"cniVersion":"1.0.0","name":"d","type":"bridge"}]"#).unwrap();
        assert_eq!(c.delegates.len(), 1);
    }

    #[test]
    fn needs_a_network() {
        assert!(conf("").unwrap_err().to_string().contains("clusterNetwork"));
        assert!(conf(r#","clusterNetwork":5"#).is_err());
    }
}
