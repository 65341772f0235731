//! The one error type of this crate, with helpers to classify failures.

use std::fmt;
use std::io;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every error carries a `context`: the operation, the object it acted on
/// and the network namespace, e.g. `create veth "veth0" in netns /var/run/netns/a`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The kernel answered a netlink request with an error code.
    #[error("{context}: {}", kernel_text(*errno, message.as_deref()))]
    Kernel {
        context: String,
        /// Positive errno value (e.g. `libc::EEXIST`).
        errno: i32,
        /// The kernel's extended-ack message (e.g. "Unknown device type"), if any.
        message: Option<String>,
    },
    /// A system call or file operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// A looked-up object does not exist (e.g. a link resolved by name).
    #[error("{context}: not found")]
    NotFound { context: String },
    /// A caller-supplied value was rejected before anything was sent.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidArgument {
        what: &'static str,
        value: String,
        reason: String,
    },
    /// The netlink connection failed or the kernel answered unexpectedly.
    #[error("{context}: {detail}")]
    Protocol { context: String, detail: String },
}

fn kernel_text(errno: i32, message: Option<&str>) -> String {
    let base = io::Error::from_raw_os_error(errno);
    match message {
        Some(m) if !m.is_empty() => format!("{base}: {m}"),
        _ => base.to_string(),
    }
}

impl Error {
    pub(crate) fn io(context: impl fmt::Display, source: io::Error) -> Self {
        Error::Io {
            context: context.to_string(),
            source,
        }
    }

    pub(crate) fn errno(context: impl fmt::Display, errno: nix::errno::Errno) -> Self {
        Error::io(context, io::Error::from(errno))
    }

    pub(crate) fn not_found(context: impl fmt::Display) -> Self {
        Error::NotFound {
            context: context.to_string(),
        }
    }

    pub(crate) fn invalid(
        what: &'static str,
        value: impl fmt::Display,
        reason: impl Into<String>,
    ) -> Self {
        Error::InvalidArgument {
            what,
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn protocol(context: impl fmt::Display, detail: impl Into<String>) -> Self {
        Error::Protocol {
            context: context.to_string(),
            detail: detail.into(),
        }
    }

    /// The OS error number behind this error, if there is one.
    pub fn raw_errno(&self) -> Option<i32> {
        match self {
            Error::Kernel { errno, .. } => Some(*errno),
            Error::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    /// The kernel's extended-ack message, if it sent one.
    pub fn kernel_message(&self) -> Option<&str> {
        match self {
            Error::Kernel { message, .. } => message.as_deref(),
            _ => None,
        }
    }

    /// The object does not exist: missing link (ENODEV), route (ESRCH),
    /// address (EADDRNOTAVAIL), neighbour/FDB entry or file (ENOENT).
    /// Use this to make CNI DEL idempotent.
    pub fn is_not_found(&self) -> bool {
        match self {
            Error::NotFound { .. } => true,
            Error::Io { source, .. } if source.kind() == io::ErrorKind::NotFound => true,
            _ => matches!(
                self.raw_errno(),
                Some(libc::ENOENT | libc::ENODEV | libc::ESRCH | libc::EADDRNOTAVAIL)
            ),
        }
    }

    /// The object already exists (EEXIST).
    pub fn is_exists(&self) -> bool {
        match self {
            Error::Io { source, .. } if source.kind() == io::ErrorKind::AlreadyExists => true,
            _ => self.raw_errno() == Some(libc::EEXIST),
        }
    }

    /// The kernel lacks the feature (EOPNOTSUPP, e.g. "Unknown device type"
    /// for a link kind whose module is not available, or an unsupported
    /// address/protocol family).
    pub fn is_not_supported(&self) -> bool {
        if let Some(m) = self.kernel_message() {
            if m.contains("Unknown device type") {
                return true;
            }
        }
        matches!(
            self.raw_errno(),
            Some(libc::EOPNOTSUPP | libc::EAFNOSUPPORT | libc::EPROTONOSUPPORT | libc::ENOSYS)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel(errno: i32, message: Option<&str>) -> Error {
        Error::Kernel {
            context: "create link \"x\" in netns test".into(),
            errno,
            message: message.map(str::to_owned),
        }
    }

    #[test]
    fn classification() {
        assert!(kernel(libc::ENODEV, None).is_not_found());
        assert!(kernel(libc::ESRCH, None).is_not_found());
        assert!(kernel(libc::ENOENT, None).is_not_found());
        assert!(kernel(libc::EADDRNOTAVAIL, None).is_not_found());
        assert!(!kernel(libc::EEXIST, None).is_not_found());
        assert!(kernel(libc::EEXIST, None).is_exists());
        assert!(kernel(libc::EOPNOTSUPP, Some("Unknown device type")).is_not_supported());
        assert!(kernel(libc::EINVAL, Some("Unknown device type")).is_not_supported());
        assert!(!kernel(libc::EINVAL, None).is_not_supported());
        assert!(Error::not_found("link \"eth0\"").is_not_found());
        let io = Error::io("open netns", io::Error::from_raw_os_error(libc::ENOENT));
        assert!(io.is_not_found());
        assert_eq!(io.raw_errno(), Some(libc::ENOENT));
    }

    #[test]
    fn display_has_context_and_message() {
        let e = kernel(libc::EOPNOTSUPP, Some("Unknown device type"));
        let s = e.to_string();
        assert!(s.starts_with("create link \"x\" in netns test: "), "{s}");
        assert!(s.ends_with(": Unknown device type"), "{s}");
        let e = Error::invalid("interface name", "a/b", "must not contain '/'");
        assert_eq!(
            e.to_string(),
            "invalid interface name \"a/b\": must not contain '/'"
        );
    }
}
