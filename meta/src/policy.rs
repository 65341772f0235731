//! Network policy's attach and detach: the meta plugin tells plexusd on
//! `<runDir>/plexusd.sock` which network namespace a pod has and what its
//! interfaces are, so plexusd can enforce the pod's policies there.
//!
//! Policy is on for the node when plexusd's marker file
//! (`<runDir>/policy-enabled`, [`plexus_agent_api::policy::MARKER`]) is
//! there: plexusd writes it when it starts with policy on and keeps it
//! while it is stopped. Then an ADD returns only once plexusd has the
//! pod's rules in the kernel, and fails with code 11 while plexusd is
//! away or cannot decide (the pod never runs open). Without the marker
//! nothing is asked.
//!
//! DEL tells plexusd to drop the pod's tables; while plexusd is away it
//! removes the attachment record and the pod's policy tables itself, so
//! a DEL leaves no policy state behind either way.

use std::path::Path;
use std::time::Duration;

use plexus_agent_api::policy::{
    self, PolicyAttach, PolicyAttached, PolicyDetach, PolicyDetached, PolicyInterface,
};
use plexus_agent_api::{ClientError, PodRef as ApiPod, Request, SOCKET_NAME};
use plexus_netlink::nft::{self, Family};

use crate::error::MetaError;
use crate::types::{NetworkStatus, PodRef};

/// Every policy table plexusd writes starts with this
/// (`plexus_policy::render::TABLE_PREFIX`).
pub const TABLE_PREFIX: &str = "plexus_policy_";

/// How long an ADD waits for plexusd (it answers within 8 s or refuses).
pub const ATTACH_TIMEOUT: Duration = Duration::from_secs(10);

/// After the delegates of an ADD: hands the pod to plexusd and waits
/// until its rules are programmed. Nothing when policy is off.
pub fn attach(
    run_dir: &Path,
    container_id: &str,
    netns: &Path,
    pod: &PodRef,
    statuses: &[NetworkStatus],
) -> Result<(), MetaError> {
    if !policy::enabled(run_dir) || pod.name.is_empty() {
        return Ok(());
    }
    let req = Request::PolicyAttach(PolicyAttach {
        container_id: container_id.to_string(),
        netns: netns.display().to_string(),
        pod: ApiPod {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            uid: pod.uid.clone(),
        },
        interfaces: statuses
            .iter()
            .map(|s| PolicyInterface {
                name: s.name.clone(),
                interface: s.interface.clone(),
                ips: s.ips.clone(),
                default: s.default,
            })
            .collect(),
    });
    match plexus_agent_api::call::<PolicyAttached>(&run_dir.join(SOCKET_NAME), &req, ATTACH_TIMEOUT)
    {
        Ok(a) => {
            tracing::info!(isolated = ?a.isolated, "network policy programmed before the ADD returns");
            Ok(())
        }
        Err(e) => Err(MetaError::Policy(format!(
            "network policy is on for this node ({}) and the pod's rules are not in place: {e}",
            run_dir.join(policy::MARKER).display()
        ))),
    }
}

/// On DEL: plexusd drops the pod's tables, or, while it is away, the
/// record and the tables go here. Never fails the DEL.
pub fn detach(run_dir: &Path, container_id: &str, netns: Option<&Path>) {
    let record = policy::attachment_record(run_dir, container_id);
    if !policy::enabled(run_dir) && !record.exists() {
        return;
    }
    let req = Request::PolicyDetach(PolicyDetach {
        container_id: container_id.to_string(),
    });
    match plexus_agent_api::call::<PolicyDetached>(
        &run_dir.join(SOCKET_NAME),
        &req,
        plexus_agent_api::DEFAULT_TIMEOUT,
    ) {
        Ok(_) => return,
        Err(ClientError::Agent(e)) => {
            tracing::warn!(error = %e, "plexusd refused the policy detach; removing the pod's policy state here")
        }
        Err(e) => {
            tracing::info!(error = %e, "plexusd is away; removing the pod's policy state here")
        }
    }
    let _ = std::fs::remove_file(&record);
    if let Some(ns) = netns.filter(|p| p.exists()) {
        if let Err(e) = remove_tables(ns) {
            tracing::warn!(error = %e, netns = %ns.display(), "cannot remove the pod's policy tables (they go with its namespace)");
        }
    }
}

/// Deletes every policy table in the namespace at `netns`.
fn remove_tables(netns: &Path) -> Result<(), String> {
    let ns = plexus_netlink::Netns::open(netns).map_err(|e| e.to_string())?;
    ns.run(|| -> plexus_netlink::Result<()> {
        let sock = nft::Socket::open()?;
        let mine: Vec<String> = nft::list_tables(&sock, Family::Inet)?
            .into_iter()
            .filter(|t| t.starts_with(TABLE_PREFIX))
            .collect();
        if mine.is_empty() {
            return Ok(());
        }
        let mut b = nft::Batch::new();
        for t in &mine {
            b.delete_table(Family::Inet, t);
        }
        b.commit(&sock)
    })
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_without_the_marker() {
        let d = tempfile::tempdir().unwrap();
        let pod = PodRef {
            namespace: "x".into(),
            name: "a".into(),
            uid: "u".into(),
        };
        // No marker: nothing asked, nothing fails.
        attach(d.path(), "c1", Path::new("/proc/self/ns/net"), &pod, &[]).unwrap();
        detach(d.path(), "c1", None);
        // Marker but no plexusd: the ADD fails with code 11.
        std::fs::write(d.path().join(policy::MARKER), b"on").unwrap();
        let e = attach(d.path(), "c1", Path::new("/proc/self/ns/net"), &pod, &[]).unwrap_err();
        assert_eq!(e.to_cni().code, 11, "{e}");
        // DEL with plexusd away removes the record.
        let rec = policy::attachment_record(d.path(), "c1");
        std::fs::create_dir_all(rec.parent().unwrap()).unwrap();
        std::fs::write(&rec, b"{}").unwrap();
        detach(d.path(), "c1", None);
        assert!(!rec.exists());
    }
}

#[cfg(test)]
mod prefix {
    #[test]
    fn the_engines_table_prefix() {
        assert_eq!(super::TABLE_PREFIX, plexus_policy::render::TABLE_PREFIX);
    }
}
