//! Network policy on the control socket: the meta plugin's attach and
//! detach of a pod (so plexusd knows the pod's network namespace and its
//! interfaces), and `plexusctl policy show`.
//!
//! How the meta plugin knows policy is on: plexusd, started with policy
//! on, writes [`MARKER`] into its run directory and removes it when
//! started with policy off. The marker stays while plexusd is stopped or
//! restarting, so every ADD through the meta plugin on that node fails
//! with code 11 until plexusd answers again, rather than leaving a pod
//! open. Without the marker the meta plugin never asks.
//!
//! plexusd keeps each attachment as a file under [`PODS_DIR`] (one per
//! container, [`attachment_record`]) so a restarted plexusd knows which
//! namespaces to enforce; a DEL while plexusd is away removes the record
//! itself (the pod's tables die with its namespace).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::clusteripam::PodRef;

/// `<run-dir>/policy-enabled`: plexusd enforces policy on this node.
pub const MARKER: &str = "policy-enabled";
/// `<run-dir>/policy-pods/`: one record per attached container.
pub const PODS_DIR: &str = "policy-pods";

/// The record of `container_id`'s attachment under `run_dir`.
/// A container ID is CNI-validated (alphanumerics, `-`, `_`, `.`), never
/// a path; anything else is hex-coded so it cannot escape the directory.
pub fn attachment_record(run_dir: &Path, container_id: &str) -> PathBuf {
    let plain = !container_id.is_empty()
        && !container_id.starts_with('.')
        && container_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let name = if plain {
        container_id.to_string()
    } else {
        container_id
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    run_dir.join(PODS_DIR).join(format!("{name}.json"))
}

/// Whether plexusd enforces policy on the node whose run directory this is.
pub fn enabled(run_dir: &Path) -> bool {
    run_dir.join(MARKER).exists()
}

/// One interface of an attached pod, as the network-status annotation
/// names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyInterface {
    /// The network (`namespace/name` of its NAD, or the cluster network's
    /// name).
    pub name: String,
    pub interface: String,
    #[serde(default)]
    pub ips: Vec<String>,
    /// The cluster network's interface.
    #[serde(default)]
    pub default: bool,
}

/// The meta plugin after a successful ADD: the pod and its interfaces.
/// Answered with [`PolicyAttached`] once the pod's rules are in the
/// kernel (or it needs none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyAttach {
    pub container_id: String,
    /// The pod's network namespace (CNI_NETNS).
    pub netns: String,
    pub pod: PodRef,
    pub interfaces: Vec<PolicyInterface>,
}

/// The answer to [`PolicyAttach`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyAttached {
    /// The pod's interfaces that are isolated (have a table) now.
    pub isolated: Vec<String>,
}

/// The meta plugin's DEL: the pod's policy state goes. Answered with
/// [`PolicyDetached`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyDetach {
    pub container_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyDetached {
    /// Tables removed.
    pub removed: usize,
}

/// `plexusctl policy show`: every attached pod interface of the node, or
/// one pod's (`namespace/name`). Answered with [`PolicyStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PolicyShow {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
}

/// Packets and bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PolicyCount {
    pub packets: u64,
    pub bytes: u64,
}

/// One pod interface as plexusd enforces it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyInterfaceStatus {
    pub namespace: String,
    pub pod: String,
    pub interface: String,
    /// `cluster network` or the NAD's `namespace/name`.
    pub network: String,
    pub ingress_isolated: bool,
    pub egress_isolated: bool,
    /// The policies selecting it (`NetworkPolicy x/deny-all`).
    pub policies: Vec<String>,
    pub ingress_dropped: PolicyCount,
    pub egress_dropped: PolicyCount,
    /// Its table is in the kernel as wanted.
    pub programmed: bool,
}

/// The answer to [`PolicyShow`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PolicyStatus {
    /// Policies known (both kinds).
    pub policies: usize,
    /// The API's objects are all listed (informers synced).
    pub synced: bool,
    pub interfaces: Vec<PolicyInterfaceStatus>,
    /// Problems of the policies (logged and counted too).
    #[serde(default)]
    pub problems: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_stay_in_their_directory() {
        let d = Path::new("/run/plexus");
        assert_eq!(
            attachment_record(d, "abc-1"),
            Path::new("/run/plexus/policy-pods/abc-1.json")
        );
        let odd = attachment_record(d, "../x");
        assert_eq!(odd.parent().unwrap(), Path::new("/run/plexus/policy-pods"));
        assert!(!odd.to_string_lossy().contains(".."));
    }
}
