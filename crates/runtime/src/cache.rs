//! The result cache, file-compatible with libcni: one JSON file per
//! attachment at `<dir>/results/<network>-<containerID>-<ifname>`, kind
//! `cniCacheV1`, the network config base64-encoded, mode 0600 in a 0700
//! directory. A node can move between Plexus and a Go runtime and each finds
//! the other's cached results (DEL needs them to pass prevResult).

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use plexus_base::files;

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::RuntimeError;

pub const CACHE_KIND: &str = "cniCacheV1";
/// libcni's default.
pub const DEFAULT_CACHE_DIR: &str = "/var/lib/cni";

/// Cache entries are small; a larger file was not written by a runtime.
const READ_LIMIT: u64 = files::DEFAULT_READ_LIMIT;

/// The longest file name Linux stores.
pub const NAME_MAX: usize = 255;

/// Where the entries live under the cache directory (libcni's name).
pub const RESULTS_SUBDIR: &str = "results";

/// A temporary this old was left by a writer killed between create and
/// rename.
pub const STALE_TEMPORARY_AGE: Duration = Duration::from_secs(600);

/// A name too long to be stored was never stored: reading or deleting it is
/// "not found", so DEL of an attachment whose cache file could not be
/// written does not fail on it again.
fn is_absent(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::NotFound | ErrorKind::InvalidFilename)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedAttachment {
    pub kind: String,
    #[serde(rename = "containerId")]
    pub container_id: String,
    /// The conflist bytes, base64 in the file like Go's []byte.
    #[serde(with = "b64")]
    pub config: Vec<u8>,
    #[serde(rename = "ifName")]
    pub if_name: String,
    #[serde(rename = "networkName")]
    pub network_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub netns: String,
    #[serde(rename = "cniArgs", default, skip_serializing_if = "Vec::is_empty")]
    pub cni_args: Vec<[String; 2]>,
    #[serde(
        rename = "capabilityArgs",
        default,
        skip_serializing_if = "Map::is_empty"
    )]
    pub capability_args: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
}

mod b64 {
    use super::*;
    pub fn serialize<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = Option::<String>::deserialize(d)?.unwrap_or_default();
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone)]
pub struct ResultCache {
    dir: PathBuf,
}

fn safe_component(s: &str) -> bool {
    !s.is_empty() && !s.contains('/') && s != "." && s != ".."
}

impl ResultCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ResultCache { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn results_dir(&self) -> PathBuf {
        self.dir.join(RESULTS_SUBDIR)
    }

    /// The results directory for a write: created where missing, refused
    /// when it (or the cache directory) is a symlink or not ours.
    fn results_dir_for_write(&self) -> Result<PathBuf, RuntimeError> {
        Ok(files::create_state_dir(
            &self.dir,
            Path::new(RESULTS_SUBDIR),
            0o700,
        )?)
    }

    /// The results directory for a read, `None` when nothing was ever
    /// cached; refused like [`Self::results_dir_for_write`].
    fn results_dir_for_read(&self) -> Result<Option<PathBuf>, RuntimeError> {
        Ok(files::existing_state_dir(
            &self.dir,
            Path::new(RESULTS_SUBDIR),
        )?)
    }

    pub fn path(
        &self,
        net: &str,
        container_id: &str,
        ifname: &str,
    ) -> Result<PathBuf, RuntimeError> {
        if ![net, container_id, ifname]
            .iter()
            .all(|c| safe_component(c))
        {
            return Err(RuntimeError::Config(format!(
                "refusing cache path for network \"{net}\", container \"{container_id}\", interface \"{ifname}\""
            )));
        }
        Ok(self
            .results_dir()
            .join(format!("{net}-{container_id}-{ifname}")))
    }

    /// Whether an entry for this attachment can be written at all: its file
    /// name must fit NAME_MAX (255 bytes), and the results directory must
    /// not be a symlink or someone else's. Checked before ADD runs a
    /// plugin, so an entry that cannot be cached fails before anything is
    /// created.
    pub fn check_storable(
        &self,
        net: &str,
        container_id: &str,
        ifname: &str,
    ) -> Result<(), RuntimeError> {
        let path = self.path(net, container_id, ifname)?;
        self.results_dir_for_read()?;
        let len = path.file_name().map_or(0, |n| n.len());
        if len > NAME_MAX {
            return Err(RuntimeError::Config(format!(
                "network \"{net}\" with container ID {container_id} and interface {ifname}: the result cache's \
                 file name would be {len} bytes, more than {NAME_MAX}; use a shorter network name"
            )));
        }
        Ok(())
    }

    /// Write atomically (`plexus_base::files::write_atomic`: an
    /// O_EXCL|O_NOFOLLOW temporary, fsync, rename; 0600 in a 0700
    /// directory) so a crash never leaves a half-written entry that would
    /// block DEL, and a planted symlink is never written through.
    pub fn write(&self, entry: &CachedAttachment) -> Result<(), RuntimeError> {
        let path = self.path(&entry.network_name, &entry.container_id, &entry.if_name)?;
        let bytes = serde_json::to_vec(entry).expect("cache entry serializes");
        self.results_dir_for_write()?;
        files::write_atomic(&path, &bytes, true)
            .map_err(|source| RuntimeError::Cache { path, source })
    }

    /// Remove temporaries that killed writers left in the results directory.
    /// Nothing is removed behind a results directory that is refused.
    pub fn sweep_stale_temporaries(&self) -> usize {
        let Ok(Some(dir)) = self.results_dir_for_read() else {
            return 0;
        };
        files::sweep_stale_temporaries(&dir, STALE_TEMPORARY_AGE)
            + sweep_legacy_temporaries(&dir, STALE_TEMPORARY_AGE)
    }

    pub fn read(
        &self,
        net: &str,
        container_id: &str,
        ifname: &str,
    ) -> Result<Option<CachedAttachment>, RuntimeError> {
        let path = self.path(net, container_id, ifname)?;
        if self.results_dir_for_read()?.is_none() {
            return Ok(None);
        }
        let bytes = match files::read_limited(&path, READ_LIMIT) {
            Ok(b) => b,
            Err(e) if is_absent(&e) => return Ok(None),
            Err(source) => return Err(RuntimeError::Cache { path, source }),
        };
        Ok(parse_entry(&bytes, net, container_id, ifname))
    }

    pub fn delete(&self, net: &str, container_id: &str, ifname: &str) -> Result<(), RuntimeError> {
        let path = self.path(net, container_id, ifname)?;
        if self.results_dir_for_read()?.is_none() {
            return Ok(());
        }
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if is_absent(&e) => Ok(()),
            Err(source) => Err(RuntimeError::Cache { path, source }),
        }
    }

    /// Every readable cached attachment, optionally only for one network.
    /// Unreadable files are skipped with a warning: GC must still make
    /// progress past them.
    pub fn list(&self, net: Option<&str>) -> Result<Vec<CachedAttachment>, RuntimeError> {
        let Some(dir) = self.results_dir_for_read()? else {
            return Ok(Vec::new());
        };
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(RuntimeError::Cache { path: dir, source }),
        };
        let mut out = Vec::new();
        for ent in rd.filter_map(Result::ok) {
            if ent
                .file_name()
                .to_string_lossy()
                .starts_with(files::TEMP_MARKER)
            {
                continue;
            }
            let Ok(bytes) = files::read_limited(&ent.path(), READ_LIMIT) else {
                continue;
            };
            match serde_json::from_slice::<CachedAttachment>(&bytes) {
                Ok(e) if e.kind == CACHE_KIND => {
                    if net.is_none_or(|n| n == e.network_name) {
                        out.push(e);
                    }
                }
                _ => tracing::warn!("ignoring unreadable cache file {}", ent.path().display()),
            }
        }
        out.sort_by(|a, b| {
            (&a.network_name, &a.container_id, &a.if_name).cmp(&(
                &b.network_name,
                &b.container_id,
                &b.if_name,
            ))
        });
        Ok(out)
    }
}

/// Remove what the writer before `plexus_base::files::write_atomic` left when
/// it was killed: `.<name>.tmp.<pid>`, older than `age`. Returns how many.
pub fn sweep_legacy_temporaries(dir: &Path, age: Duration) -> usize {
    files::sweep_old_files(dir, age, |name| {
        name.starts_with('.')
            && name
                .rsplit_once(".tmp.")
                .is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// Files written by old libcni versions hold only the result; accept them.
fn parse_entry(bytes: &[u8], net: &str, cid: &str, ifname: &str) -> Option<CachedAttachment> {
    match serde_json::from_slice::<CachedAttachment>(bytes) {
        Ok(e) if e.kind == CACHE_KIND => Some(e),
        _ => {
            let v: Value = serde_json::from_slice(bytes).ok()?;
            if v.get("kind").is_some() {
                tracing::warn!("unknown cache kind for {net}-{cid}-{ifname}");
                return None;
            }
            Some(CachedAttachment {
                kind: CACHE_KIND.into(),
                container_id: cid.into(),
                config: Vec::new(),
                if_name: ifname.into(),
                network_name: net.into(),
                netns: String::new(),
                cni_args: Vec::new(),
                capability_args: Map::new(),
                result: Some(v),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn entry() -> CachedAttachment {
        CachedAttachment {
            kind: CACHE_KIND.into(),
            container_id: "c1".into(),
            config: br#"{"name":"n"}"#.to_vec(),
            if_name: "eth0".into(),
            network_name: "n".into(),
            netns: "/var/run/netns/x".into(),
            cni_args: vec![["K".into(), "V".into()]],
            capability_args: Map::new(),
            result: Some(serde_json::json!({"cniVersion":"1.0.0"})),
        }
    }

    #[test]
    fn round_trip_layout_and_modes() {
        let d = tempfile::tempdir().unwrap();
        let c = ResultCache::new(d.path().join("cache"));
        c.write(&entry()).unwrap();
        let p = d.path().join("cache/results/n-c1-eth0");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(p.parent().unwrap())
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
        let raw: Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
        // Go encodes []byte as standard base64.
        assert_eq!(raw["config"], "eyJuYW1lIjoibiJ9");
        assert_eq!(raw["containerId"], "c1");
        assert_eq!(raw["cniArgs"], serde_json::json!([["K", "V"]]));
        assert_eq!(c.read("n", "c1", "eth0").unwrap().unwrap(), entry());
        assert_eq!(c.list(Some("n")).unwrap().len(), 1);
        assert_eq!(c.list(Some("other")).unwrap().len(), 0);
        c.delete("n", "c1", "eth0").unwrap();
        c.delete("n", "c1", "eth0").unwrap();
        assert!(c.read("n", "c1", "eth0").unwrap().is_none());
    }

    #[test]
    fn reads_libcni_written_file() {
        // As written by libcni 1.1 (cnitool add).
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("results")).unwrap();
        fs::write(
            d.path().join("results/mynet-cnitool-abc-eth0"),
            r#"{"kind":"cniCacheV1","containerId":"cnitool-abc","config":"eyJhIjoxfQ==","ifName":"eth0","networkName":"mynet","netns":"/var/run/netns/t","result":{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/24"}]}}"#,
        )
        .unwrap();
        let c = ResultCache::new(d.path());
        let e = c.read("mynet", "cnitool-abc", "eth0").unwrap().unwrap();
        assert_eq!(e.config, br#"{"a":1}"#);
        assert!(e.result.is_some());
    }

    #[test]
    fn legacy_result_only_file_and_garbage() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("results")).unwrap();
        fs::write(
            d.path().join("results/n-c-eth0"),
            r#"{"cniVersion":"0.3.1","ips":[]}"#,
        )
        .unwrap();
        fs::write(d.path().join("results/n-d-eth0"), "garbage").unwrap();
        let c = ResultCache::new(d.path());
        assert!(c.read("n", "c", "eth0").unwrap().unwrap().result.is_some());
        assert!(c.read("n", "d", "eth0").unwrap().is_none());
        assert_eq!(
            c.list(None).unwrap().len(),
            0,
            "legacy and garbage files are not listed"
        );
    }

    #[test]
    fn legacy_temporaries_of_killed_writers_are_swept() {
        let d = tempfile::tempdir().unwrap();
        let results = d.path().join("results");
        fs::create_dir_all(&results).unwrap();
        let old = std::time::SystemTime::now() - 2 * STALE_TEMPORARY_AGE;
        for name in [".n-c1-eth0.tmp.4242", "n-c1-eth0", ".n-c2-eth0.tmp.x"] {
            fs::write(results.join(name), "x").unwrap();
            fs::File::options()
                .write(true)
                .open(results.join(name))
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        fs::write(results.join(".n-c3-eth0.tmp.7"), "x").unwrap();
        assert_eq!(ResultCache::new(d.path()).sweep_stale_temporaries(), 1);
        assert!(!results.join(".n-c1-eth0.tmp.4242").exists());
        assert!(results.join("n-c1-eth0").exists());
        assert!(results.join(".n-c2-eth0.tmp.x").exists());
        assert!(results.join(".n-c3-eth0.tmp.7").exists(), "too young");
    }

    #[test]
    fn names_too_long_to_store_read_as_absent() {
        let d = tempfile::tempdir().unwrap();
        let c = ResultCache::new(d.path());
        let long = "n".repeat(300);
        assert!(c.read(&long, "c1", "eth0").unwrap().is_none());
        c.delete(&long, "c1", "eth0").unwrap();
        assert!(c
            .write(&CachedAttachment {
                network_name: long,
                ..entry()
            })
            .is_err());
    }

    #[test]
    fn refuses_unsafe_names() {
        let c = ResultCache::new("/tmp/x");
        assert!(c.path("n", "../../etc", "eth0").is_err());
        assert!(c.path("n", "c", "").is_err());
    }
}
