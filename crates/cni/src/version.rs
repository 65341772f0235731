//! CNI specification versions and what each one allows.

use std::fmt;
use std::str::FromStr;

use crate::error::{CniError, ErrorCode};

/// The spec versions Plexus understands. Results older than 0.3.0 (the
/// `ip4`/`ip6` format) are not supported: no runtime in use still asks for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SpecVersion {
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

impl SpecVersion {
    pub const ALL: &'static [SpecVersion] = &[
        SpecVersion::V0_3_0,
        SpecVersion::V0_3_1,
        SpecVersion::V0_4_0,
        SpecVersion::V1_0_0,
        SpecVersion::V1_1_0,
    ];
    pub const LATEST: SpecVersion = SpecVersion::V1_1_0;

    pub fn as_str(self) -> &'static str {
        match self {
            SpecVersion::V0_3_0 => "0.3.0",
            SpecVersion::V0_3_1 => "0.3.1",
            SpecVersion::V0_4_0 => "0.4.0",
            SpecVersion::V1_0_0 => "1.0.0",
            SpecVersion::V1_1_0 => "1.1.0",
        }
    }

    /// CHECK was introduced in 0.4.0.
    pub fn supports_check(self) -> bool {
        self >= SpecVersion::V0_4_0
    }

    /// STATUS and GC were introduced in 1.1.0.
    pub fn supports_status_gc(self) -> bool {
        self >= SpecVersion::V1_1_0
    }

    /// Results before 1.0.0 carry `ips[].version`.
    pub fn result_has_ip_version(self) -> bool {
        self < SpecVersion::V1_0_0
    }

    /// Parse a version string from a config, mapping failures to the spec's
    /// "incompatible CNI version" error.
    pub fn parse_config_version(s: &str) -> Result<Self, CniError> {
        s.parse().map_err(|_| {
            CniError::new(
                ErrorCode::IncompatibleVersion,
                format!("unsupported CNI version \"{s}\""),
            )
            .with_details(format!(
                "supported versions: {}",
                SpecVersion::ALL
                    .iter()
                    .map(|v| v.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
    }
}

impl fmt::Display for SpecVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown CNI version \"{0}\"")]
pub struct UnknownVersion(pub String);

impl FromStr for SpecVersion {
    type Err = UnknownVersion;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SpecVersion::ALL
            .iter()
            .copied()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownVersion(s.to_string()))
    }
}

impl serde::Serialize for SpecVersion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for SpecVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Compare two dotted version strings numerically ("0.10.0" > "0.4.0"), as
/// libcni does when it picks the highest version from `cniVersions`.
/// Components that are not numbers compare as 0.
pub fn compare_dotted(a: &str, b: &str) -> std::cmp::Ordering {
    let parse = |s: &str| -> Vec<u64> { s.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    let (va, vb) = (parse(a), parse(b));
    let n = va.len().max(vb.len());
    for i in 0..n {
        let (x, y) = (
            va.get(i).copied().unwrap_or(0),
            vb.get(i).copied().unwrap_or(0),
        );
        match x.cmp(&y) {
            std::cmp::Ordering::Equal => continue,
            o => return o,
        }
    }
    std::cmp::Ordering::Equal
}

/// The VERSION command's answer.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct VersionInfo {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    #[serde(rename = "supportedVersions")]
    pub supported_versions: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_supported_version() {
        for v in SpecVersion::ALL {
            assert_eq!(v.as_str().parse::<SpecVersion>().unwrap(), *v);
        }
        assert!("0.2.0".parse::<SpecVersion>().is_err());
        assert!("".parse::<SpecVersion>().is_err());
        assert!("1.1".parse::<SpecVersion>().is_err());
    }

    #[test]
    fn capabilities_by_version() {
        assert!(!SpecVersion::V0_3_1.supports_check());
        assert!(SpecVersion::V0_4_0.supports_check());
        assert!(!SpecVersion::V1_0_0.supports_status_gc());
        assert!(SpecVersion::V1_1_0.supports_status_gc());
        assert!(SpecVersion::V0_4_0.result_has_ip_version());
        assert!(!SpecVersion::V1_0_0.result_has_ip_version());
    }

    #[test]
    fn config_version_error_is_code_1() {
        let e = SpecVersion::parse_config_version("9.9.9").unwrap_err();
        assert_eq!(e.code, 1);
        assert!(e.msg.contains("9.9.9"));
    }

    #[test]
    fn dotted_comparison_is_numeric() {
        use std::cmp::Ordering::*;
        assert_eq!(compare_dotted("0.10.0", "0.4.0"), Greater);
        assert_eq!(compare_dotted("1.0.0", "1.0.0"), Equal);
        assert_eq!(compare_dotted("0.3.1", "1.1.0"), Less);
    }
}
