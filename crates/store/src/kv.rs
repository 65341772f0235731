//! The revisioned key-value store every store client offers: etcd v3's
//! model (revisions, compare-and-swap, TTL leases, watches from a revision),
//! which the embedded file store reproduces for a single node.

use std::time::Duration;

use futures::stream::BoxStream;

use crate::{Revision, StoreError};

/// A TTL lease's id (etcd's lease ID); keys attached to it vanish when it
/// expires or is revoked.
pub type LeaseId = i64;

/// A key with its value and revisions, as etcd's `mvccpb.KeyValue`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision of the key's creation (0 for a deleted key's tombstone).
    pub create_revision: Revision,
    /// Revision of the key's last change.
    pub mod_revision: Revision,
    /// Number of changes since creation (1 after create).
    pub version: i64,
    /// The TTL lease the key is attached to (0 = none).
    pub lease: LeaseId,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvEvent {
    /// The key was created or changed; `kv.mod_revision` is the change's.
    Put(KeyValue),
    /// The key was deleted (or its lease expired) at `revision`; `prev` is
    /// its last value when the store still had it.
    Delete {
        key: String,
        revision: Revision,
        prev: Option<KeyValue>,
    },
}

impl KvEvent {
    pub fn key(&self) -> &str {
        match self {
            KvEvent::Put(kv) => &kv.key,
            KvEvent::Delete { key, .. } => key,
        }
    }

    pub fn revision(&self) -> Revision {
        match self {
            KvEvent::Put(kv) => kv.mod_revision,
            KvEvent::Delete { revision, .. } => *revision,
        }
    }
}

/// The keys under a prefix at one revision.
#[derive(Debug, Clone, Default)]
pub struct RangeResult {
    pub kvs: Vec<KeyValue>,
    /// The store's revision when the range was read: watch from
    /// `revision + 1` to miss nothing after it.
    pub revision: Revision,
}

/// A batch of changes, in revision order.
pub type KvWatchStream = BoxStream<'static, Result<Vec<KvEvent>, StoreError>>;

/// A revisioned key-value store (etcd v3 semantics).
#[async_trait::async_trait]
pub trait Kv: Send + Sync {
    /// One key.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;

    /// Every key starting with `prefix`, in key order.
    async fn range(&self, prefix: &str) -> Result<RangeResult, StoreError>;

    /// Create `key` only if it does not exist (a transaction comparing its
    /// version with 0). `Ok(Some(rev))` when created, `Ok(None)` when the
    /// key already existed (nothing changed).
    async fn create(
        &self,
        key: &str,
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> Result<Option<Revision>, StoreError>;

    /// Write `key`. With `expect_mod_revision`, only if the key's current
    /// mod_revision is that (0 = only if absent): `Ok(None)` when the
    /// comparison failed and nothing changed.
    async fn put(
        &self,
        key: &str,
        value: &[u8],
        lease: Option<LeaseId>,
        expect_mod_revision: Option<Revision>,
    ) -> Result<Option<Revision>, StoreError>;

    /// Delete `key` (only if its mod_revision is `expect_mod_revision` when
    /// given). `Ok(true)` when a key was deleted.
    async fn delete(
        &self,
        key: &str,
        expect_mod_revision: Option<Revision>,
    ) -> Result<bool, StoreError>;

    /// A new TTL lease (whole seconds, at least 1).
    async fn grant(&self, ttl: Duration) -> Result<LeaseId, StoreError>;

    /// Refresh a lease to its full TTL: the TTL left, or `None` when the
    /// lease no longer exists (expired or revoked).
    async fn keepalive(&self, lease: LeaseId) -> Result<Option<Duration>, StoreError>;

    /// End a lease now, deleting the keys attached to it.
    async fn revoke(&self, lease: LeaseId) -> Result<(), StoreError>;

    /// Changes to keys under `prefix` from revision `from` (inclusive).
    /// History before the store's compaction point gives
    /// `Err(StoreError::Compacted)`, at the start or as a stream item; the
    /// stream ending means the watch broke. An empty batch is a progress
    /// notification (etcd's, a Kubernetes bookmark): nothing changed, the
    /// watch is alive.
    async fn watch(&self, prefix: &str, from: Revision) -> Result<KvWatchStream, StoreError>;

    /// Drop history before `revision` (etcd's compaction).
    async fn compact(&self, revision: Revision) -> Result<(), StoreError>;
}

/// The key just past every key starting with `prefix` (etcd's `range_end`
/// for a prefix): the prefix with its last byte incremented.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff (or empty): every key from prefix on; etcd spells it "\0".
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end(b"/a/b/"), b"/a/b0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b""), vec![0]);
    }
}
