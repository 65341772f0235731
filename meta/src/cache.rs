//! The plan cache: before the first delegate runs, ADD writes the whole plan
//! to `<cacheDir>/plans/<containerID>-<ifname>.json` (temp file + rename), so
//! DEL can undo exactly what ADD did after the pod, the NADs or the API
//! server are gone. The format is documented in meta/README.md.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::MetaError;
use crate::plan::{Plan, PLAN_KIND};
use crate::source::AttachmentKey;

/// What reading a plan found.
#[derive(Debug)]
pub enum CachedPlan {
    Found(Box<Plan>),
    Missing,
    /// Present but unreadable; the reason is logged and DEL falls back.
    Corrupt(String),
}

#[derive(Debug, Clone)]
pub struct PlanCache {
    dir: PathBuf,
}

impl PlanCache {
    pub fn new(cache_dir: &Path) -> Self {
        PlanCache {
            dir: cache_dir.join("plans"),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, key: &AttachmentKey) -> PathBuf {
        self.dir
            .join(format!("{}-{}.json", key.container_id, key.ifname))
    }

    pub fn write(&self, plan: &Plan) -> Result<(), MetaError> {
        let bytes = serde_json::to_vec_pretty(plan).expect("plan serializes");
        // Durable: IPAM leases survive a reboot, so must the plan to undo them.
        write_atomic(
            &self.path(&plan.key()),
            &bytes,
            "cannot write plan cache",
            true,
        )
    }

    pub fn read(&self, key: &AttachmentKey) -> CachedPlan {
        let path = self.path(key);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return CachedPlan::Missing,
            Err(e) => return CachedPlan::Corrupt(format!("{}: {e}", path.display())),
        };
        match serde_json::from_slice::<Plan>(&bytes) {
            Ok(p) if p.kind == PLAN_KIND && p.key() == *key => CachedPlan::Found(Box::new(p)),
            Ok(p) => CachedPlan::Corrupt(format!(
                "{}: kind {:?} for {}/{} does not match",
                path.display(),
                p.kind,
                p.container_id,
                p.ifname
            )),
            Err(e) => CachedPlan::Corrupt(format!("{}: {e}", path.display())),
        }
    }

    pub fn remove(&self, key: &AttachmentKey) -> Result<(), MetaError> {
        let path = self.path(key);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(MetaError::Io {
                what: "cannot remove plan cache",
                path: path.display().to_string(),
                source,
            }),
        }
    }

    /// Every readable plan (GC and `plexusctl status`); unreadable files are
    /// skipped with a warning.
    pub fn list(&self) -> Vec<Plan> {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out: Vec<Plan> = rd
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| {
                let p = fs::read(e.path())
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Plan>(&b).ok());
                if p.is_none() {
                    tracing::warn!("ignoring unreadable plan {}", e.path().display());
                }
                p
            })
            .collect();
        out.sort_by(|a, b| (&a.container_id, &a.ifname).cmp(&(&b.container_id, &b.ifname)));
        out
    }
}

/// [`plexus_runtime::cache::write_atomic`] (temp file + rename, 0600 in a
/// 0700 directory: plans hold full network configs), with the error in our
/// terms.
pub fn write_atomic(
    path: &Path,
    bytes: &[u8],
    what: &'static str,
    durable: bool,
) -> Result<(), MetaError> {
    plexus_runtime::cache::write_atomic(path, bytes, durable).map_err(|e| match e {
        plexus_runtime::RuntimeError::Cache { path, source } => MetaError::Io {
            what,
            path: path.display().to_string(),
            source,
        },
        other => MetaError::Io {
            what,
            path: path.display().to_string(),
            source: std::io::Error::other(other.to_string()),
        },
    })
}
