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

/// One write of a [`set_many`] batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub name: String,
    pub value: String,
}

impl Write {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Write {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// Writes every sysctl of `writes` in `ns` in one trip into the namespace
/// (one thread, one setns) and returns one result per write, in order, so
/// the caller decides which failures matter. A sysctl that already has the
/// value is not written: a read-only /proc/sys (some sandboxes) then fails
/// only for values that really need to change.
pub async fn set_many(ns: &Netns, writes: &[Write]) -> Result<Vec<Result<()>>> {
    let mut jobs = Vec::with_capacity(writes.len());
    for w in writes {
        jobs.push((sysctl_path(&w.name), w.clone()));
    }
    let label = ns.path().display().to_string();
    ns.run_async(move || {
        jobs.into_iter()
            .map(|(path, w)| {
                let path = path?;
                let current = std::fs::read_to_string(&path);
                if current.is_ok_and(|c| c.trim_end_matches('\n') == w.value) {
                    return Ok(());
                }
                std::fs::write(&path, w.value.as_bytes()).map_err(|e| {
                    Error::io(
                        format!("write sysctl {}={} in netns {label}", w.name, w.value),
                        e,
                    )
                })
            })
            .collect()
    })
    .await
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
