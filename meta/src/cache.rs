//! The meta plugin's files under cacheDir, and the only code that knows
//! their layout (tools such as `plexusctl status` read them through this
//! module and [`crate::status`]):
//!
//! * `plans/<containerID>-<ifname>.json`: the plan, written before the first
//!   delegate runs so DEL can undo exactly what ADD did after the pod, the
//!   NADs or the API server are gone;
//! * `status/<containerID>-<ifname>.json`: see [`crate::status`];
//! * `locks/<containerID>-<ifname>.lock`: see [`crate::lock`];
//! * `delegates/results/<network>-<containerID>-<ifname>`: the inner
//!   runtime's libcni result cache.
//!
//! Every write is `plexus_base::files::write_atomic` (an O_EXCL|O_NOFOLLOW
//! temporary, then rename); every read is bounded. The formats are
//! documented in meta/README.md.

use std::path::{Path, PathBuf};

use plexus_base::files;
use plexus_runtime::cache::ResultCache;
use serde::de::DeserializeOwned;

use crate::error::MetaError;
use crate::plan::{Plan, PLAN_KIND};
use crate::types::AttachmentKey;

pub const PLANS_SUBDIR: &str = "plans";
pub const STATUS_SUBDIR: &str = "status";
pub const LOCKS_SUBDIR: &str = "locks";
/// Where the inner runtime caches delegates' results.
pub const DELEGATE_CACHE_SUBDIR: &str = "delegates";

/// The longest file name Linux stores.
pub use plexus_runtime::cache::NAME_MAX;

/// Plans and status files are small; anything larger was not written by us.
const READ_LIMIT: u64 = files::DEFAULT_READ_LIMIT;

/// A temporary older than this belongs to a writer that was killed between
/// create and rename (a live write takes milliseconds); the inner runtime's
/// threshold, so both sweep alike.
pub use plexus_runtime::cache::STALE_TEMPORARY_AGE;

/// The inner runtime's cache directory.
pub fn delegate_cache_dir(cache_dir: &Path) -> PathBuf {
    cache_dir.join(DELEGATE_CACHE_SUBDIR)
}

/// Every state directory under cacheDir, the inner runtime's included.
const STATE_SUBDIRS: [&str; 4] = [
    PLANS_SUBDIR,
    STATUS_SUBDIR,
    LOCKS_SUBDIR,
    "delegates/results",
];

/// Refuse cacheDir when it, or any state directory under it that exists,
/// is a symlink, not a directory, or not owned by us
/// ([`files::existing_state_dir`]). Every command checks before it reads
/// or writes anything there.
pub fn check_state_dirs(cache_dir: &Path) -> Result<(), MetaError> {
    for sub in STATE_SUBDIRS {
        files::existing_state_dir(cache_dir, Path::new(sub))?;
    }
    Ok(())
}

/// `cacheDir/<sub>` for a write: created 0700 where missing, refused when
/// it or cacheDir is a symlink or not ours.
pub fn state_dir(cache_dir: &Path, sub: &str) -> Result<PathBuf, MetaError> {
    Ok(files::create_state_dir(cache_dir, Path::new(sub), 0o700)?)
}

/// ADD refuses, before anything is created, an attachment whose files could
/// not be stored: a name over NAME_MAX would otherwise fail only after a
/// delegate ran, and then the rollback (which needs the same files) fails
/// too. `attachments` are the delegate networks' (network name, ifname).
pub fn check_storable<'a>(
    cache_dir: &Path,
    key: &AttachmentKey,
    attachments: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<(), MetaError> {
    let own = format!("{}.json", key.file_stem()).len();
    if own > NAME_MAX {
        return Err(MetaError::Config(format!(
            "container ID ({} characters) and interface {} are too long for the file names in cacheDir \
             (at most {NAME_MAX} bytes each)",
            key.container_id.len(),
            key.ifname
        )));
    }
    let inner = ResultCache::new(delegate_cache_dir(cache_dir));
    for (network, ifname) in attachments {
        inner
            .check_storable(network, &key.container_id, ifname)
            .map_err(|e| MetaError::Selection(format!("network \"{network}\" on {ifname}: {e}")))?;
    }
    Ok(())
}

/// [`files::write_atomic`] with the error in our terms. Plans hold full
/// network configs: 0600 in a 0700 directory.
pub fn write_atomic(
    path: &Path,
    bytes: &[u8],
    what: &'static str,
    durable: bool,
) -> Result<(), MetaError> {
    files::write_atomic(path, bytes, durable).map_err(|source| MetaError::Io {
        what,
        path: path.display().to_string(),
        source,
    })
}

/// Remove `path`; a missing file is fine.
pub fn remove(path: &Path, what: &'static str) -> Result<(), MetaError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(MetaError::Io {
            what,
            path: path.display().to_string(),
            source,
        }),
    }
}

/// What reading one of our files found.
#[derive(Debug)]
pub enum Read<T> {
    Found(T),
    Missing,
    /// Present but unreadable; the reason.
    Corrupt(String),
}

/// Read and parse one JSON file, bounded. A name too long to exist is
/// missing, not an error: such a file was never written.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Read<T> {
    let bytes = match files::read_limited(path, READ_LIMIT) {
        Ok(b) => b,
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                || e.kind() == std::io::ErrorKind::InvalidFilename =>
        {
            return Read::Missing
        }
        Err(e) => return Read::Corrupt(format!("{}: {e}", path.display())),
    };
    match serde_json::from_slice(&bytes) {
        Ok(v) => Read::Found(v),
        Err(e) => Read::Corrupt(format!("{}: {e}", path.display())),
    }
}

/// Every `*.json` file of a directory that parses and passes `keep`, in
/// file-name order, and what could not be read.
#[derive(Debug)]
pub struct Listing<T> {
    pub items: Vec<T>,
    /// "path: reason" for each file skipped.
    pub unreadable: Vec<String>,
}

/// `cacheDir/<sub>`'s files; a refused directory is one unreadable entry
/// and nothing is read behind it.
pub fn list_json<T: DeserializeOwned>(
    cache_dir: &Path,
    sub: &str,
    keep: impl Fn(&T) -> bool,
) -> Listing<T> {
    let dir = match files::existing_state_dir(cache_dir, Path::new(sub)) {
        Ok(Some(d)) => d,
        Ok(None) => {
            return Listing {
                items: Vec::new(),
                unreadable: Vec::new(),
            }
        }
        Err(e) => {
            return Listing {
                items: Vec::new(),
                unreadable: vec![e.to_string()],
            }
        }
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect()
        })
        .unwrap_or_default();
    paths.sort();
    let mut out = Listing {
        items: Vec::new(),
        unreadable: Vec::new(),
    };
    for p in paths {
        match read_json::<T>(&p) {
            Read::Found(v) if keep(&v) => out.items.push(v),
            Read::Found(_) => out
                .unreadable
                .push(format!("{}: not a file of this kind", p.display())),
            Read::Missing => {}
            Read::Corrupt(why) => out.unreadable.push(why),
        }
    }
    out
}

/// Remove what writers killed between create and rename left behind in
/// every directory we write to.
pub fn sweep_stale_temporaries(cache_dir: &Path) {
    for sub in [PLANS_SUBDIR, STATUS_SUBDIR, "delegates/results"] {
        // Nothing is removed behind a refused directory.
        let Ok(Some(d)) = files::existing_state_dir(cache_dir, Path::new(sub)) else {
            continue;
        };
        // Ours, and the `.<name>.tmp.<pid>` files of the writer before it.
        let n = files::sweep_stale_temporaries(&d, STALE_TEMPORARY_AGE)
            + plexus_runtime::cache::sweep_legacy_temporaries(&d, STALE_TEMPORARY_AGE);
        if n > 0 {
            tracing::info!(dir = %d.display(), removed = n, "removed stale temporary files");
        }
    }
}

/// `plans/`: one plan per meta attachment.
#[derive(Debug, Clone)]
pub struct PlanCache {
    cache_dir: PathBuf,
    dir: PathBuf,
}

impl PlanCache {
    pub fn new(cache_dir: &Path) -> Self {
        PlanCache {
            cache_dir: cache_dir.to_path_buf(),
            dir: cache_dir.join(PLANS_SUBDIR),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, key: &AttachmentKey) -> PathBuf {
        self.dir.join(format!("{}.json", key.file_stem()))
    }

    pub fn exists(&self, key: &AttachmentKey) -> bool {
        std::fs::symlink_metadata(self.path(key)).is_ok()
    }

    pub fn write(&self, plan: &Plan) -> Result<(), MetaError> {
        let bytes = serde_json::to_vec_pretty(plan).expect("plan serializes");
        state_dir(&self.cache_dir, PLANS_SUBDIR)?;
        // Durable: IPAM leases survive a reboot, so must the plan to undo them.
        write_atomic(
            &self.path(&plan.key()),
            &bytes,
            "cannot write plan cache",
            true,
        )
    }

    pub fn read(&self, key: &AttachmentKey) -> Read<Box<Plan>> {
        match files::existing_state_dir(&self.cache_dir, Path::new(PLANS_SUBDIR)) {
            Ok(Some(_)) => {}
            Ok(None) => return Read::Missing,
            Err(e) => return Read::Corrupt(e.to_string()),
        }
        let path = self.path(key);
        match read_json::<Plan>(&path) {
            Read::Found(p) if p.kind == PLAN_KIND && p.key() == *key => Read::Found(Box::new(p)),
            Read::Found(p) => Read::Corrupt(format!(
                "{}: kind {:?} for {}/{} does not match",
                path.display(),
                p.kind,
                p.container_id,
                p.ifname
            )),
            Read::Missing => Read::Missing,
            Read::Corrupt(why) => Read::Corrupt(why),
        }
    }

    pub fn remove(&self, key: &AttachmentKey) -> Result<(), MetaError> {
        remove(&self.path(key), "cannot remove plan cache")
    }

    /// Every readable plan (GC and `plexusctl status`), sorted by container
    /// and interface.
    pub fn list(&self) -> Listing<Plan> {
        let mut l = list_json::<Plan>(&self.cache_dir, PLANS_SUBDIR, |p| p.kind == PLAN_KIND);
        l.items
            .sort_by(|a, b| (&a.container_id, &a.ifname).cmp(&(&b.container_id, &b.ifname)));
        l
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(cid: &str) -> AttachmentKey {
        AttachmentKey {
            container_id: cid.into(),
            ifname: "eth0".into(),
        }
    }

    #[test]
    fn names_too_long_for_the_cache_are_refused_up_front() {
        let d = Path::new("/var/lib/cni/plexus");
        let k = key(&"c".repeat(64));
        assert!(check_storable(d, &k, [("cluster", "eth0")]).is_ok());
        let long = "n".repeat(190);
        let e = check_storable(d, &k, [("cluster", "eth0"), (long.as_str(), "net1")]).unwrap_err();
        assert_eq!(e.to_cni().code, 7);
        assert!(e.to_string().contains("more than 255"), "{e}");
        let e = check_storable(d, &key(&"c".repeat(250)), []).unwrap_err();
        assert_eq!(e.to_cni().code, 7);
    }

    #[test]
    fn plans_round_trip_and_list_skips_garbage() {
        let d = tempfile::tempdir().unwrap();
        let c = PlanCache::new(d.path());
        let p = Plan::empty(&key("c1"), &Default::default());
        assert!(matches!(c.read(&key("c1")), Read::Missing));
        // A name no file system stores was never written: missing.
        assert!(matches!(c.read(&key(&"x".repeat(300))), Read::Missing));
        c.write(&p).unwrap();
        assert!(c.exists(&key("c1")));
        assert!(matches!(c.read(&key("c1")), Read::Found(got) if *got == p));
        std::fs::write(c.dir().join("junk.json"), "{").unwrap();
        let l = c.list();
        assert_eq!(l.items, [p]);
        assert_eq!(l.unreadable.len(), 1);
        c.remove(&key("c1")).unwrap();
        c.remove(&key("c1")).unwrap();
    }

    #[test]
    fn stale_temporaries_are_swept() {
        let d = tempfile::tempdir().unwrap();
        let plans = d.path().join(PLANS_SUBDIR);
        std::fs::create_dir_all(&plans).unwrap();
        let stale = plans.join(format!("{}c1-eth0.json.1.0", files::TEMP_MARKER));
        std::fs::write(&stale, "x").unwrap();
        let old = std::time::SystemTime::now() - 2 * STALE_TEMPORARY_AGE;
        std::fs::File::options()
            .write(true)
            .open(&stale)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let fresh = plans.join(format!("{}c2-eth0.json.1.0", files::TEMP_MARKER));
        std::fs::write(&fresh, "x").unwrap();
        sweep_stale_temporaries(d.path());
        assert!(!stale.exists());
        assert!(fresh.exists(), "a write in progress is left alone");
    }
}
