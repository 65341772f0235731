//! The embedded single-node store (`file:PATH`): etcd's model in one JSON
//! file, for a node with no cluster.
//!
//! - The file holds every key (value, create/mod revision, version, lease),
//!   the revision counter and the TTL leases (with their wall-clock expiry,
//!   so a lease outlives an agent restart exactly as in etcd). Each change
//!   rewrites it atomically (temporary file + rename, fsynced), so a crash
//!   leaves the old state or the new one.
//! - One process owns the file: an exclusive lock on `PATH.lock`.
//! - Watches are in-process: the change history since this process opened
//!   the store is kept in memory (bounded); watching from before it is
//!   `Compacted`, which makes the registry relist, as after an etcd
//!   compaction.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::kv::{KeyValue, Kv, KvEvent, KvWatchStream, LeaseId, RangeResult};
use crate::{Revision, StoreError};

/// Changes kept in memory for watches that fall behind.
const HISTORY: usize = 10_000;
/// The largest store file read back (a guard against a wrong path).
const MAX_FILE: u64 = 256 << 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredKey {
    /// The value as text when it is UTF-8 (flannel's values are JSON)...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    /// ...else base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value_b64: Option<String>,
    create_revision: Revision,
    mod_revision: Revision,
    version: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    lease: LeaseId,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct StoredLease {
    ttl_secs: u64,
    /// Unix time in milliseconds.
    expires_ms: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Data {
    revision: Revision,
    next_lease: LeaseId,
    keys: BTreeMap<String, StoredKey>,
    leases: BTreeMap<LeaseId, StoredLease>,
}

struct State {
    data: Data,
    /// Changes after `compacted`, oldest first.
    history: VecDeque<KvEvent>,
    compacted: Revision,
}

struct Inner {
    path: PathBuf,
    _lock: File,
    state: Mutex<State>,
    tx: broadcast::Sender<Arc<Vec<KvEvent>>>,
}

/// The `file:PATH` store. Cheap to clone.
#[derive(Clone)]
pub struct FileKv {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for FileKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileKv")
            .field("path", &self.inner.path)
            .finish()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn to_kv(key: &str, s: &StoredKey) -> KeyValue {
    let value = match (&s.value, &s.value_b64) {
        (Some(v), _) => v.as_bytes().to_vec(),
        (None, Some(b)) => B64.decode(b).unwrap_or_default(),
        (None, None) => Vec::new(),
    };
    KeyValue {
        key: key.to_string(),
        value,
        create_revision: s.create_revision,
        mod_revision: s.mod_revision,
        version: s.version,
        lease: s.lease,
    }
}

fn stored(kv: &KeyValue) -> StoredKey {
    let (value, value_b64) = match std::str::from_utf8(&kv.value) {
        Ok(s) => (Some(s.to_string()), None),
        Err(_) => (None, Some(B64.encode(&kv.value))),
    };
    StoredKey {
        value,
        value_b64,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        lease: kv.lease,
    }
}

impl FileKv {
    /// Open (or create) the store at `path`.
    pub fn open(path: &Path) -> Result<FileKv, StoreError> {
        let ctx = |what: &str, e: std::io::Error| {
            StoreError::Other(format!("file store {}: {what}: {e}", path.display()))
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| ctx("cannot create its directory", e))?;
        }
        let mut lock_path = path.as_os_str().to_owned();
        lock_path.push(".lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| ctx("cannot open its lock file", e))?;
        lock.try_lock().map_err(|e| {
            StoreError::Other(format!(
                "file store {} is in use by another process ({e})",
                path.display()
            ))
        })?;
        let data = match plexus_base::files::read_limited(path, MAX_FILE) {
            Ok(bytes) => serde_json::from_slice::<Data>(&bytes).map_err(|e| {
                StoreError::Other(format!(
                    "file store {} is not a Plexus store file: {e}",
                    path.display()
                ))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Data::default(),
            Err(e) => return Err(ctx("cannot read it", e)),
        };
        let compacted = data.revision;
        let (tx, _) = broadcast::channel(1024);
        let inner = Arc::new(Inner {
            path: path.to_path_buf(),
            _lock: lock,
            state: Mutex::new(State {
                data,
                history: VecDeque::new(),
                compacted,
            }),
            tx,
        });
        // Expire leases even when nobody writes (a watch must see expiry).
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let weak: Weak<Inner> = Arc::downgrade(&inner);
            rt.spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let Some(inner) = weak.upgrade() else { return };
                    FileKv { inner }.read(|_| ());
                }
            });
        }
        Ok(FileKv { inner })
    }

    /// Apply `f` to a copy of the data (after expiring leases), persist the
    /// copy, then make it current and publish its events. `f`'s events get
    /// revisions from the caller through `Txn`.
    fn mutate<T>(
        &self,
        f: impl FnOnce(&mut Txn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut st = self.inner.state.lock().unwrap();
        let mut txn = Txn {
            data: st.data.clone(),
            events: Vec::new(),
            changed: false,
        };
        txn.expire(now_ms());
        let out = f(&mut txn)?;
        if txn.changed {
            let bytes = serde_json::to_vec(&txn.data).expect("store data serialises");
            plexus_base::files::write_atomic(&self.inner.path, &bytes, true).map_err(|e| {
                StoreError::Other(format!(
                    "file store {}: cannot write: {e}",
                    self.inner.path.display()
                ))
            })?;
            st.data = txn.data;
            for ev in &txn.events {
                st.history.push_back(ev.clone());
            }
            while st.history.len() > HISTORY {
                if let Some(ev) = st.history.pop_front() {
                    st.compacted = st.compacted.max(ev.revision());
                }
            }
            if !txn.events.is_empty() {
                // No receiver is fine.
                let _ = self.inner.tx.send(Arc::new(txn.events));
            }
        }
        Ok(out)
    }

    fn read<T>(&self, f: impl FnOnce(&Data) -> T) -> T {
        // Reads see expiry too: a key whose lease is past its time is gone.
        let expired = {
            let st = self.inner.state.lock().unwrap();
            let now = now_ms();
            st.data.leases.values().any(|l| l.expires_ms <= now)
        };
        if expired {
            if let Err(e) = self.mutate(|_| Ok(())) {
                tracing::warn!(error = %e, "file store: expiring leases failed");
            }
        }
        let st = self.inner.state.lock().unwrap();
        f(&st.data)
    }
}

/// One change in progress.
struct Txn {
    data: Data,
    events: Vec<KvEvent>,
    changed: bool,
}

impl Txn {
    fn next_rev(&mut self) -> Revision {
        self.data.revision += 1;
        self.changed = true;
        self.data.revision
    }

    fn expire(&mut self, now: u64) {
        let gone: Vec<LeaseId> = self
            .data
            .leases
            .iter()
            .filter(|(_, l)| l.expires_ms <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.drop_lease(id);
        }
    }

    fn drop_lease(&mut self, id: LeaseId) -> bool {
        if self.data.leases.remove(&id).is_none() {
            return false;
        }
        self.changed = true;
        let keys: Vec<String> = self
            .data
            .keys
            .iter()
            .filter(|(_, k)| k.lease == id)
            .map(|(k, _)| k.clone())
            .collect();
        // etcd deletes a lease's keys in one revision.
        if !keys.is_empty() {
            let rev = self.next_rev();
            for k in keys {
                self.delete_at(&k, rev);
            }
        }
        true
    }

    fn delete_at(&mut self, key: &str, rev: Revision) {
        if let Some(old) = self.data.keys.remove(key) {
            self.events.push(KvEvent::Delete {
                key: key.to_string(),
                revision: rev,
                prev: Some(to_kv(key, &old)),
            });
        }
    }

    fn put(
        &mut self,
        key: &str,
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> Result<Revision, StoreError> {
        let lease = lease.unwrap_or(0);
        if lease != 0 && !self.data.leases.contains_key(&lease) {
            return Err(StoreError::Other(format!(
                "file store: lease {lease:x} not found (expired or revoked)"
            )));
        }
        let rev = self.next_rev();
        let old = self.data.keys.get(key);
        let kv = KeyValue {
            key: key.to_string(),
            value: value.to_vec(),
            create_revision: old.map_or(rev, |o| o.create_revision),
            mod_revision: rev,
            version: old.map_or(1, |o| o.version + 1),
            lease,
        };
        self.data.keys.insert(key.to_string(), stored(&kv));
        self.events.push(KvEvent::Put(kv));
        Ok(rev)
    }

    fn mod_revision(&self, key: &str) -> Revision {
        self.data.keys.get(key).map_or(0, |k| k.mod_revision)
    }
}

fn matching(events: &[KvEvent], prefix: &str, from: Revision) -> Vec<KvEvent> {
    events
        .iter()
        .filter(|e| e.key().starts_with(prefix) && e.revision() >= from)
        .cloned()
        .collect()
}

#[async_trait::async_trait]
impl Kv for FileKv {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        Ok(self.read(|d| d.keys.get(key).map(|s| to_kv(key, s))))
    }

    async fn range(&self, prefix: &str) -> Result<RangeResult, StoreError> {
        Ok(self.read(|d| RangeResult {
            kvs: d
                .keys
                .range(prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, s)| to_kv(k, s))
                .collect(),
            revision: d.revision,
        }))
    }

    async fn create(
        &self,
        key: &str,
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> Result<Option<Revision>, StoreError> {
        self.mutate(|t| {
            if t.data.keys.contains_key(key) {
                return Ok(None);
            }
            t.put(key, value, lease).map(Some)
        })
    }

    async fn put(
        &self,
        key: &str,
        value: &[u8],
        lease: Option<LeaseId>,
        expect_mod_revision: Option<Revision>,
    ) -> Result<Option<Revision>, StoreError> {
        self.mutate(|t| {
            if expect_mod_revision.is_some_and(|r| r != t.mod_revision(key)) {
                return Ok(None);
            }
            t.put(key, value, lease).map(Some)
        })
    }

    async fn delete(
        &self,
        key: &str,
        expect_mod_revision: Option<Revision>,
    ) -> Result<bool, StoreError> {
        self.mutate(|t| {
            if !t.data.keys.contains_key(key)
                || expect_mod_revision.is_some_and(|r| r != t.mod_revision(key))
            {
                return Ok(false);
            }
            let rev = t.next_rev();
            t.delete_at(key, rev);
            Ok(true)
        })
    }

    async fn grant(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let ttl_secs = ttl.as_secs().max(1);
        self.mutate(|t| {
            t.data.next_lease += 1;
            let id = t.data.next_lease;
            t.data.leases.insert(
                id,
                StoredLease {
                    ttl_secs,
                    expires_ms: now_ms() + ttl_secs * 1000,
                },
            );
            t.changed = true;
            Ok(id)
        })
    }

    async fn keepalive(&self, lease: LeaseId) -> Result<Option<Duration>, StoreError> {
        self.mutate(|t| {
            let Some(l) = t.data.leases.get_mut(&lease) else {
                return Ok(None);
            };
            l.expires_ms = now_ms() + l.ttl_secs * 1000;
            t.changed = true;
            Ok(Some(Duration::from_secs(l.ttl_secs)))
        })
    }

    async fn revoke(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.mutate(|t| {
            t.drop_lease(lease);
            Ok(())
        })
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<KvWatchStream, StoreError> {
        let (backlog, rx, from) = {
            let st = self.inner.state.lock().unwrap();
            // 0 = from now on, as etcd.
            let from = if from <= 0 {
                st.data.revision + 1
            } else {
                from
            };
            if from <= st.compacted {
                return Err(StoreError::Compacted(st.compacted));
            }
            let backlog: Vec<KvEvent> = st
                .history
                .iter()
                .filter(|e| e.key().starts_with(prefix) && e.revision() >= from)
                .cloned()
                .collect();
            // Subscribed under the lock: nothing falls between backlog and rx.
            (backlog, self.inner.tx.subscribe(), from)
        };
        let prefix = prefix.to_string();
        let first = (!backlog.is_empty()).then_some(backlog);
        let stream = futures::stream::unfold((rx, first, false), move |(mut rx, first, done)| {
            let prefix = prefix.clone();
            async move {
                if done {
                    return None;
                }
                if let Some(b) = first {
                    return Some((Ok(b), (rx, None, false)));
                }
                loop {
                    match rx.recv().await {
                        Ok(evs) => {
                            let b = matching(&evs, &prefix, from);
                            if !b.is_empty() {
                                return Some((Ok(b), (rx, None, false)));
                            }
                        }
                        // This watcher fell too far behind: like an
                        // etcd compaction, the caller relists.
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            return Some((Err(StoreError::Compacted(0)), (rx, None, true)))
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        });
        Ok(stream.boxed())
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let mut st = self.inner.state.lock().unwrap();
        if revision > st.data.revision {
            return Err(StoreError::Other(format!(
                "file store: cannot compact to {revision}, past the current revision {}",
                st.data.revision
            )));
        }
        while st.history.front().is_some_and(|e| e.revision() <= revision) {
            st.history.pop_front();
        }
        st.compacted = st.compacted.max(revision);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rt;

    #[test]
    fn create_put_delete_with_revisions_and_persistence() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.json");
        rt().block_on(async {
            let kv = FileKv::open(&path).unwrap();
            assert_eq!(kv.create("/p/a", b"1", None).await.unwrap(), Some(1));
            assert_eq!(kv.create("/p/a", b"2", None).await.unwrap(), None);
            assert_eq!(kv.put("/p/a", b"3", None, Some(7)).await.unwrap(), None);
            assert_eq!(kv.put("/p/a", b"3", None, Some(1)).await.unwrap(), Some(2));
            let a = kv.get("/p/a").await.unwrap().unwrap();
            assert_eq!(
                (
                    a.value.as_slice(),
                    a.create_revision,
                    a.mod_revision,
                    a.version
                ),
                (&b"3"[..], 1, 2, 2)
            );
            kv.put("/p/b", &[0xff, 0], None, None).await.unwrap();
            kv.put("/q", b"x", None, None).await.unwrap();
            let r = kv.range("/p/").await.unwrap();
            assert_eq!(
                r.kvs.iter().map(|k| k.key.as_str()).collect::<Vec<_>>(),
                ["/p/a", "/p/b"]
            );
            assert_eq!(r.revision, 4);
            assert!(!kv.delete("/p/a", Some(1)).await.unwrap());
            assert!(kv.delete("/p/a", Some(2)).await.unwrap());
            assert!(!kv.delete("/p/a", None).await.unwrap());
            // A second opener is refused while this one holds the file.
            let e = FileKv::open(&path).unwrap_err().to_string();
            assert!(e.contains("in use by another process"), "{e}");
        });
        rt().block_on(async {
            let kv = FileKv::open(&path).unwrap();
            let r = kv.range("/").await.unwrap();
            assert_eq!(r.revision, 5);
            assert_eq!(r.kvs.len(), 2);
            assert_eq!(kv.get("/p/b").await.unwrap().unwrap().value, vec![0xff, 0]);
            // History from before this open is gone: the watcher relists.
            assert!(matches!(
                kv.watch("/", 3).await,
                Err(StoreError::Compacted(5))
            ));
        });
    }

    #[test]
    fn leases_expire_and_take_their_keys() {
        let dir = tempfile::tempdir().unwrap();
        rt().block_on(async {
            let kv = FileKv::open(&dir.path().join("s.json")).unwrap();
            let l = kv.grant(Duration::from_secs(1)).await.unwrap();
            kv.create("/k", b"v", Some(l)).await.unwrap();
            assert_eq!(kv.keepalive(l).await.unwrap(), Some(Duration::from_secs(1)));
            let mut w = kv.watch("/", 0).await.unwrap();
            // Expiry happens by the clock: wait for the delete event.
            let ev = w.next().await.unwrap().unwrap();
            assert!(matches!(&ev[0], KvEvent::Delete { key, prev: Some(_), .. } if key == "/k"));
            assert_eq!(kv.get("/k").await.unwrap(), None);
            assert_eq!(kv.keepalive(l).await.unwrap(), None);
            let e = kv
                .put("/k", b"v", Some(l), None)
                .await
                .unwrap_err()
                .to_string();
            assert!(e.contains("not found"), "{e}");
            let l2 = kv.grant(Duration::from_secs(60)).await.unwrap();
            kv.put("/k2", b"v", Some(l2), None).await.unwrap();
            kv.revoke(l2).await.unwrap();
            assert_eq!(kv.get("/k2").await.unwrap(), None);
        });
    }

    #[test]
    fn watch_replays_history_then_follows_and_reports_compaction() {
        let dir = tempfile::tempdir().unwrap();
        rt().block_on(async {
            let kv = FileKv::open(&dir.path().join("s.json")).unwrap();
            kv.put("/p/a", b"1", None, None).await.unwrap();
            kv.put("/other", b"1", None, None).await.unwrap();
            kv.put("/p/b", b"1", None, None).await.unwrap();
            let mut w = kv.watch("/p/", 1).await.unwrap();
            let b = w.next().await.unwrap().unwrap();
            assert_eq!(
                b.iter().map(|e| e.key()).collect::<Vec<_>>(),
                ["/p/a", "/p/b"]
            );
            kv.delete("/p/a", None).await.unwrap();
            let b = w.next().await.unwrap().unwrap();
            assert!(matches!(&b[0], KvEvent::Delete { key, revision: 4, .. } if key == "/p/a"));
            kv.compact(3).await.unwrap();
            assert!(matches!(
                kv.watch("/p/", 2).await,
                Err(StoreError::Compacted(3))
            ));
            let mut w = kv.watch("/p/", 4).await.unwrap();
            assert_eq!(w.next().await.unwrap().unwrap()[0].revision(), 4);
        });
    }
}
