//! CNI error JSON (`{cniVersion, code, msg, details}`) and the spec's codes.

use serde::{Deserialize, Serialize};

/// Well-known error codes from the CNI specification. Plugin-specific errors
/// use codes >= 100 (see [`ErrorCode::Plugin`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    IncompatibleVersion,
    UnsupportedField,
    UnknownContainer,
    InvalidEnvironment,
    Io,
    Decode,
    InvalidConfig,
    TryAgainLater,
    PluginNotAvailable,
    PluginNotAvailableLimited,
    /// A plugin-specific code (>= 100).
    Plugin(u32),
}

impl ErrorCode {
    pub fn code(self) -> u32 {
        match self {
            ErrorCode::IncompatibleVersion => 1,
            ErrorCode::UnsupportedField => 2,
            ErrorCode::UnknownContainer => 3,
            ErrorCode::InvalidEnvironment => 4,
            ErrorCode::Io => 5,
            ErrorCode::Decode => 6,
            ErrorCode::InvalidConfig => 7,
            ErrorCode::TryAgainLater => 11,
            ErrorCode::PluginNotAvailable => 50,
            ErrorCode::PluginNotAvailableLimited => 51,
            ErrorCode::Plugin(c) => c,
        }
    }
}

/// Plexus's plugin-specific codes, so callers can tell failures apart.
pub mod plexus_codes {
    /// A netlink or other kernel operation failed.
    pub const KERNEL: u32 = 100;
    /// The kernel lacks a feature the configuration needs (e.g. ipvlan).
    pub const KERNEL_FEATURE_MISSING: u32 = 101;
    /// An IPAM pool has no free address, or a requested address is taken.
    pub const ADDRESS_UNAVAILABLE: u32 = 102;
    /// A delegated plugin failed.
    pub const DELEGATE_FAILED: u32 = 103;
    /// The plugin panicked (a bug): the message says where.
    pub const PANICKED: u32 = 104;
    /// A placeholder plugin that is not implemented yet.
    pub const NOT_IMPLEMENTED: u32 = 199;
}

/// An error as the CNI spec prints it. `cni_version` is filled in when the
/// error is printed, from the config's version when known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{msg}{}", details_suffix(.details))]
pub struct CniError {
    #[serde(
        rename = "cniVersion",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub cni_version: String,
    pub code: u32,
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

fn details_suffix(d: &str) -> String {
    if d.is_empty() {
        String::new()
    } else {
        format!("; {d}")
    }
}

impl CniError {
    pub fn new(code: ErrorCode, msg: impl Into<String>) -> Self {
        CniError {
            cni_version: String::new(),
            code: code.code(),
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    pub fn with_version(mut self, v: impl Into<String>) -> Self {
        self.cni_version = v.into();
        self
    }

    pub fn invalid_config(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidConfig, msg)
    }
    pub fn invalid_env(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidEnvironment, msg)
    }
    pub fn decode(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::Decode, msg)
    }
    pub fn io(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::Io, msg)
    }
    pub fn plugin(code: u32, msg: impl Into<String>) -> Self {
        debug_assert!(code >= 100, "plugin-specific codes start at 100");
        Self::new(ErrorCode::Plugin(code), msg)
    }
    pub fn kernel(msg: impl Into<String>) -> Self {
        Self::plugin(plexus_codes::KERNEL, msg)
    }

    /// The JSON a plugin prints on stdout.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|_| format!(r#"{{"code":{},"msg":"unprintable error"}}"#, self.code))
    }
}

/// A refused state directory (a planted symlink, a file, someone else's
/// directory) is code 5, "failed to perform I/O": the call could not do
/// the I/O it needs, and the node, not the configuration (7) nor the
/// runtime's environment (4), is what has to change. Runtimes treat every
/// code the same way (they retry or give up), so a Plexus-specific code
/// would tell them nothing more; the message names the directory and why.
impl From<plexus_base::files::StateDirError> for CniError {
    fn from(e: plexus_base::files::StateDirError) -> Self {
        CniError::io(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_state_directory_is_code_5() {
        let e = plexus_base::files::StateDirError::NotOurs {
            path: "/var/lib/cni/networks/n".into(),
            owner: 1000,
            expected: 0,
        };
        let c = CniError::from(e);
        assert_eq!(c.code, 5);
        assert!(c.msg.contains("/var/lib/cni/networks/n"), "{}", c.msg);
    }

    #[test]
    fn codes_match_the_spec() {
        let expect = [
            (ErrorCode::IncompatibleVersion, 1),
            (ErrorCode::UnsupportedField, 2),
            (ErrorCode::UnknownContainer, 3),
            (ErrorCode::InvalidEnvironment, 4),
            (ErrorCode::Io, 5),
            (ErrorCode::Decode, 6),
            (ErrorCode::InvalidConfig, 7),
            (ErrorCode::TryAgainLater, 11),
            (ErrorCode::PluginNotAvailable, 50),
            (ErrorCode::PluginNotAvailableLimited, 51),
            (ErrorCode::Plugin(120), 120),
        ];
        for (c, n) in expect {
            assert_eq!(c.code(), n);
        }
    }

    #[test]
    fn json_shape() {
        let e = CniError::invalid_config("bad")
            .with_details("why")
            .with_version("1.1.0");
        let v: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"cniVersion":"1.1.0","code":7,"msg":"bad","details":"why"})
        );
        let bare = CniError::io("x");
        let v: serde_json::Value = serde_json::from_str(&bare.to_json()).unwrap();
        assert_eq!(v, serde_json::json!({"code":5,"msg":"x"}));
        assert_eq!(e.to_string(), "bad; why");
    }

    #[test]
    fn parses_reference_error_output() {
        let e: CniError = serde_json::from_str(
            r#"{"cniVersion":"1.0.0","code":11,"msg":"busy","details":"retry"}"#,
        )
        .unwrap();
        assert_eq!(e.code, 11);
        assert_eq!(e.details, "retry");
    }
}
