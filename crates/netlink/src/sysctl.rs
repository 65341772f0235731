//! sysctl get/set inside a network namespace.
//!
//! `/proc/sys/net` shows the namespace of the thread that opens the file, so
//! every access runs through [`Netns::run`] on a dedicated thread.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::netns::Netns;

/// Maps `net.ipv4.conf.eth0.arp_notify` or `net/ipv4/conf/eth0/arp_notify`
/// (optionally prefixed by `/proc/sys/`) to its `/proc/sys` path. Use the
/// slash form when a component (an interface name like `eth0.100`)
/// contains dots.
pub fn sysctl_path(name: &str) -> Result<PathBuf> {
    let trimmed = name.strip_prefix("/proc/sys/").unwrap_or(name);
    let rel = if trimmed.contains('/') {
        trimmed.to_owned()
    } else {
        trimmed.replace('.', "/")
    };
    if rel.is_empty()
        || rel.starts_with('/')
        || rel
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == ".." || c.contains('\0'))
    {
        return Err(Error::invalid(
            "sysctl name",
            name,
            "expected a name like net.ipv4.ip_forward",
        ));
    }
    Ok(PathBuf::from("/proc/sys").join(rel))
}

/// Reads a sysctl in `ns` (value with the trailing newline trimmed).
pub fn get(ns: &Netns, name: &str) -> Result<String> {
    let path = sysctl_path(name)?;
    let ctx = format!("read sysctl {name} in netns {}", ns.path().display());
    let r = ns.run(|| std::fs::read_to_string(&path))?;
    r.map(|s| s.trim_end_matches('\n').to_owned())
        .map_err(|e| Error::io(ctx, e))
}

/// Writes a sysctl in `ns`.
pub fn set(ns: &Netns, name: &str, value: &str) -> Result<()> {
    let path = sysctl_path(name)?;
    let ctx = format!(
        "write sysctl {name}={value} in netns {}",
        ns.path().display()
    );
    let r = ns.run(|| std::fs::write(&path, value.as_bytes()))?;
    tracing::debug!(netns = %ns.path().display(), name, value, "set sysctl");
    r.map_err(|e| Error::io(ctx, e))
}

/// Async [`get`]: does not block the calling task's thread.
pub async fn get_async(ns: &Netns, name: &str) -> Result<String> {
    let path = sysctl_path(name)?;
    let ctx = format!("read sysctl {name} in netns {}", ns.path().display());
    let r = ns.run_async(move || std::fs::read_to_string(path)).await?;
    r.map(|s| s.trim_end_matches('\n').to_owned())
        .map_err(|e| Error::io(ctx, e))
}

/// Async [`set`]: does not block the calling task's thread.
pub async fn set_async(ns: &Netns, name: &str, value: &str) -> Result<()> {
    let path = sysctl_path(name)?;
    let ctx = format!(
        "write sysctl {name}={value} in netns {}",
        ns.path().display()
    );
    let v = value.to_owned();
    let r = ns.run_async(move || std::fs::write(path, v)).await?;
    r.map_err(|e| Error::io(ctx, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            sysctl_path("net.ipv4.conf.eth0.arp_notify").unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/conf/eth0/arp_notify")
        );
        assert_eq!(
            sysctl_path("net/ipv4/conf/eth0.100/rp_filter").unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/conf/eth0.100/rp_filter")
        );
        assert_eq!(
            sysctl_path("/proc/sys/net/ipv4/ip_forward").unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/ip_forward")
        );
        for bad in [
            "",
            "net..ipv4",
            "net/../../etc/passwd",
            "/etc/passwd",
            "net/ipv4/",
        ] {
            assert!(sysctl_path(bad).is_err(), "{bad}");
        }
    }
}
