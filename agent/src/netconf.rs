//! The routed network's configuration as files (`--pools-file`,
//! `--bgp-file`: deploy/'s ConfigMap keys `pools.json` and `bgp.json`
//! mounted at /etc/plexus), read and checked at start and applied to the
//! store by [`plexus_ipam::Cluster::apply_declared`].
//!
//! A file that is missing or wrong is an error naming the file and what is
//! wrong in it; the agent then logs it and waits for a fixed file (a
//! ConfigMap edit reaches the mounted file without a restart) instead of
//! crash-looping or starting a routed network from half a configuration.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use plexus_ipam::{BgpConfig, Cluster, IpamError, Pool};

use crate::status::Shared;

/// The largest configuration file read.
const MAX_FILE: u64 = 1 << 20;
/// How often a bad configuration is read again.
pub const RETRY: Duration = Duration::from_secs(10);

/// Where the files are.
#[derive(Debug, Clone, Default)]
pub struct Files {
    pub pools: Option<PathBuf>,
    pub bgp: Option<PathBuf>,
}

/// What they declare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    pub pools: Vec<Pool>,
    pub bgp: Option<BgpConfig>,
}

impl Files {
    pub fn any(&self) -> bool {
        self.pools.is_some() || self.bgp.is_some()
    }

    /// Read and check both files; the error names the file.
    pub fn load(&self) -> Result<Declared, String> {
        let read = |p: &Path| {
            plexus_base::files::read_limited(p, MAX_FILE)
                .map_err(|e| format!("{}: {e}", p.display()))
        };
        let pools = match &self.pools {
            Some(p) => {
                plexus_ipam::parse_pools(&read(p)?).map_err(|e| format!("{}: {e}", p.display()))?
            }
            None => Vec::new(),
        };
        let bgp = match &self.bgp {
            Some(p) => Some(
                plexus_ipam::parse_bgp(&read(p)?).map_err(|e| format!("{}: {e}", p.display()))?,
            ),
            None => None,
        };
        Ok(Declared { pools, bgp })
    }
}

/// Apply the files to the store. A bad file is logged and read again
/// every [`RETRY`] until it is fixed: no network starts meanwhile, and the
/// agent stays up (alive, not ready). A store error fails the start as any
/// other.
pub async fn apply_until_valid(
    cluster: &Cluster,
    files: &Files,
    status: &Shared,
) -> anyhow::Result<()> {
    loop {
        let why = match files.load() {
            Ok(d) => match cluster.apply_declared(&d.pools, d.bgp.as_ref()).await {
                Ok(applied) => {
                    if applied.changed() {
                        tracing::info!(
                            added = ?applied.added,
                            updated = ?applied.updated,
                            bgp_set = applied.bgp_set,
                            "routed network configuration applied to the store"
                        );
                    }
                    return Ok(());
                }
                Err(IpamError::Invalid(e)) => e,
                Err(e) => {
                    status.store_error();
                    return Err(e).context("apply the routed network configuration");
                }
            },
            Err(e) => e,
        };
        tracing::error!(
            error = %why,
            retry_secs = RETRY.as_secs(),
            "the routed network configuration is invalid: no network starts until it is fixed"
        );
        tokio::time::sleep(RETRY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let pools = dir.path().join("pools.json");
        let bgp = dir.path().join("bgp.json");
        std::fs::write(
            &pools,
            r#"[{"name":"routed","cidr":"10.245.0.0/16","blockSize":26}]"#,
        )
        .unwrap();
        std::fs::write(&bgp, r#"{"asn": 64512}"#).unwrap();
        let files = Files {
            pools: Some(pools.clone()),
            bgp: Some(bgp.clone()),
        };
        let d = files.load().unwrap();
        assert_eq!(d.pools[0].name, "routed");
        assert_eq!(d.bgp.unwrap().asn, 64512);
        std::fs::write(&bgp, r#"{"asn": "x"}"#).unwrap();
        let e = files.load().unwrap_err();
        assert!(
            e.starts_with(&bgp.display().to_string()) && e.contains("invalid type"),
            "{e}"
        );
        std::fs::remove_file(&pools).unwrap();
        let e = files.load().unwrap_err();
        assert!(e.starts_with(&pools.display().to_string()), "{e}");
        assert!(!Files::default().any());
    }
}
