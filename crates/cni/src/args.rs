//! `CNI_ARGS`: `K=V;K=V` pairs, as the reference skel parses them.

use crate::error::CniError;

/// Parsed `CNI_ARGS`, in order. Keys are case-sensitive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs(pub Vec<(String, String)>);

impl CniArgs {
    pub fn parse(s: &str) -> Result<Self, CniError> {
        let mut out = Vec::new();
        if s.is_empty() {
            return Ok(CniArgs(out));
        }
        for pair in s.split(';') {
            let mut kv = pair.split('=');
            match (kv.next(), kv.next(), kv.next()) {
                (Some(k), Some(v), None) if !k.is_empty() => {
                    out.push((k.to_string(), v.to_string()))
                }
                _ => {
                    return Err(
                        CniError::invalid_env(format!("CNI_ARGS: invalid pair \"{pair}\""))
                            .with_details("CNI_ARGS must be K=V pairs separated by ';'"),
                    )
                }
            }
        }
        Ok(CniArgs(out))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// True when `IgnoreUnknown` is set to a true value (`1`, `true`, `True`...).
    pub fn ignore_unknown(&self) -> bool {
        self.get("IgnoreUnknown")
            .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "t"))
    }

    /// Reject keys the plugin does not know unless `IgnoreUnknown` is set,
    /// the reference plugins' behaviour.
    pub fn check_known(&self, known: &[&str]) -> Result<(), CniError> {
        if self.ignore_unknown() {
            return Ok(());
        }
        for (k, _) in &self.0 {
            if k != "IgnoreUnknown" && !known.contains(&k.as_str()) {
                return Err(
                    CniError::invalid_env(format!("CNI_ARGS: unknown args \"{k}\"")).with_details(
                        format!(
                            "known keys: {}; set IgnoreUnknown=1 to ignore others",
                            known.join(", ")
                        ),
                    ),
                );
            }
        }
        Ok(())
    }

    pub fn to_env_string(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(";")
    }
}

/// The keys Kubernetes runtimes pass; every Plexus plugin accepts them.
pub const K8S_KEYS: &[&str] = &[
    "K8S_POD_NAMESPACE",
    "K8S_POD_NAME",
    "K8S_POD_INFRA_CONTAINER_ID",
    "K8S_POD_UID",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pairs() {
        let a = CniArgs::parse("IgnoreUnknown=1;K8S_POD_NAME=p;IP=10.0.0.2").unwrap();
        assert_eq!(a.get("K8S_POD_NAME"), Some("p"));
        assert_eq!(a.get("IP"), Some("10.0.0.2"));
        assert!(a.ignore_unknown());
        assert_eq!(
            a.to_env_string(),
            "IgnoreUnknown=1;K8S_POD_NAME=p;IP=10.0.0.2"
        );
        assert_eq!(CniArgs::parse("").unwrap().0.len(), 0);
        assert_eq!(CniArgs::parse("A=").unwrap().get("A"), Some(""));
    }

    #[test]
    fn rejects_bad_pairs() {
        for bad in ["A", "A=B=C", "=B", "A=1;;B=2", "A=1;"] {
            assert_eq!(CniArgs::parse(bad).unwrap_err().code, 4, "{bad}");
        }
    }

    #[test]
    fn unknown_keys() {
        let a = CniArgs::parse("FOO=1").unwrap();
        assert_eq!(a.check_known(&["IP"]).unwrap_err().code, 4);
        let a = CniArgs::parse("FOO=1;IgnoreUnknown=true").unwrap();
        assert!(a.check_known(&["IP"]).is_ok());
    }
}
