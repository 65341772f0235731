//! DEL of the pod interface: inside the pod netns, idempotent, and only when
//! the interface there is this attachment's. A DEL that names the wrong
//! netns (a runtime bug, a reused path) must not delete another pod's
//! interface that happens to have the same name.

use std::path::Path;

use plexus_cni::CniError;
use plexus_netlink::{Link, Netlink, Netns};

use crate::errors::{netlink_ctx, netlink_err};

/// What DEL found and did in the pod netns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodIface {
    /// No CNI_NETNS, or it is gone (no longer a namespace).
    NoNetns,
    /// The netns has no interface of that name.
    Absent,
    /// It was this attachment's and is deleted.
    Deleted,
    /// It belongs to something else and was left alone.
    Foreign,
}

/// Deletes `ifname` in the netns at `netns` if `owned` says it is this
/// attachment's. The delete does not wait for the kernel to free the device.
pub async fn delete_pod_iface(
    netns: Option<&Path>,
    ifname: &str,
    owned: impl AsyncFnOnce(&Link) -> Result<bool, CniError>,
) -> Result<PodIface, CniError> {
    let Some(path) = netns else {
        return Ok(PodIface::NoNetns);
    };
    let ns = match Netns::open(path) {
        Ok(ns) => ns,
        Err(e)
            if e.is_not_found() || matches!(e, plexus_netlink::Error::InvalidArgument { .. }) =>
        {
            tracing::debug!("DEL: pod netns {}: {e}", path.display());
            return Ok(PodIface::NoNetns);
        }
        Err(e) => return Err(crate::errors::open_pod_netns_error(path, e)),
    };
    let nl = Netlink::open(&ns).await.map_err(netlink_err)?;
    let fail = || format!("failed to delete {ifname:?} in {}", path.display());
    let Some(link) = nl.link_by_name(ifname).await.map_err(netlink_ctx(fail()))? else {
        return Ok(PodIface::Absent);
    };
    if !owned(&link).await? {
        tracing::warn!(
            ifname,
            netns = %path.display(),
            alias = link.alias.as_deref().unwrap_or(""),
            "DEL: the interface is not this attachment's; leaving it alone"
        );
        return Ok(PodIface::Foreign);
    }
    match nl.delete_link_detached(link.index).await {
        Ok(()) => Ok(PodIface::Deleted),
        Err(e) if e.is_not_found() => Ok(PodIface::Absent),
        Err(e) => Err(netlink_ctx(fail())(e)),
    }
}
