//! The one mapping from kernel failures to CNI codes, so the same failure
//! gets the same code in every plugin:
//!
//! | failure | code |
//! | --- | --- |
//! | the pod netns cannot be opened (CNI_NETNS is wrong) | 4 (invalid environment) |
//! | the kernel lacks a feature (EOPNOTSUPP, "Unknown device type") | 101 |
//! | any other netlink or sysctl failure | 100 |

use std::path::Path;

use plexus_cni::error::plexus_codes;
use plexus_cni::CniError;
use plexus_netlink::Netns;

/// A plexus-netlink error as a CNI error.
pub fn netlink_err(e: plexus_netlink::Error) -> CniError {
    if e.is_not_supported() {
        CniError::plugin(plexus_codes::KERNEL_FEATURE_MISSING, e.to_string())
    } else {
        CniError::kernel(e.to_string())
    }
}

/// [`netlink_err`] with `what` failed in front of the message.
pub fn netlink_ctx(what: impl std::fmt::Display) -> impl FnOnce(plexus_netlink::Error) -> CniError {
    move |e| {
        let mut c = netlink_err(e);
        c.msg = format!("{what}: {}", c.msg);
        c
    }
}

/// Opens the pod's network namespace (CNI_NETNS). Failing is the
/// runtime's input being wrong: code 4.
pub fn open_pod_netns(path: &Path) -> Result<Netns, CniError> {
    Netns::open(path).map_err(|e| open_pod_netns_error(path, e))
}

pub(crate) fn open_pod_netns_error(path: &Path, e: plexus_netlink::Error) -> CniError {
    CniError::invalid_env(format!(
        "failed to open the pod network namespace {}: {e}",
        path.display()
    ))
}

/// Every error of a call that must keep going (DEL: IPAM failing must not
/// skip the link and firewall teardown). The answer carries the first
/// error's code and all messages.
#[derive(Debug, Default)]
pub struct Collected {
    errors: Vec<CniError>,
}

impl Collected {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the error of `r`, if any, under `what`.
    pub fn take<T>(&mut self, what: &str, r: Result<T, CniError>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(code = e.code, "{what}: {e}");
                self.errors.push(e);
                None
            }
        }
    }

    /// Ok when nothing failed; otherwise the first error, with the others'
    /// messages appended.
    pub fn finish(self) -> Result<(), CniError> {
        let mut it = self.errors.into_iter();
        let Some(mut first) = it.next() else {
            return Ok(());
        };
        for e in it {
            first.msg = format!("{}; also: {}", first.msg, e);
        }
        Err(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collected_keeps_all_messages_and_the_first_code() {
        assert!(Collected::new().finish().is_ok());
        let mut c = Collected::new();
        assert_eq!(c.take("a", Ok::<_, CniError>(1)), Some(1));
        assert_eq!(
            c.take::<()>("ipam", Err(CniError::plugin(103, "ipam down"))),
            None
        );
        c.take::<()>("link", Err(CniError::kernel("link busy")));
        let e = c.finish().unwrap_err();
        assert_eq!(e.code, 103);
        assert!(
            e.msg.contains("ipam down") && e.msg.contains("link busy"),
            "{}",
            e.msg
        );
    }

    #[test]
    fn a_missing_netns_is_code_4() {
        let e = open_pod_netns(Path::new("/nonexistent/plexus-netns")).unwrap_err();
        assert_eq!(e.code, 4, "{e}");
    }
}
