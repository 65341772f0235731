//! [`KubeKv`]: the [`Kv`] model over the Kubernetes API, so the routed
//! network's records (pools, blocks, BGP settings, nodes) live in the
//! cluster itself with `--store kubernetes`, as Calico's KDD mode keeps its
//! IPAM blocks as custom resources.
//!
//! - Each key is one cluster-scoped `PlexusKey` object
//!   (`plexuskeys.plexus.io/v1`, the CRD in deploy/). Its `spec.key` is the
//!   key and `spec.value` the value (UTF-8 text; `spec.valueBase64`
//!   otherwise). A key like `/plexus/routed/blocks/fd00::40-122` is no
//!   object name, so the name is a digest of the key (`k-` + 40 hex digits
//!   of SHA-256): one key, one name, so two creators of a key race on one
//!   object and the API server lets exactly one win (409 AlreadyExists).
//! - Revisions are `resourceVersion`s read as numbers (the API server's
//!   are etcd revisions; Calico's KDD reads them the same way).
//!   Compare-and-swap is an update carrying the expected `resourceVersion`
//!   (409 Conflict when stale) and a delete with a `resourceVersion`
//!   precondition. `version` is `metadata.generation`.
//! - `create_revision` is the `resourceVersion` while the object is
//!   unchanged since its creation (generation 1), else 1: a lower bound,
//!   which keeps "created before" right for the one comparison the routed
//!   records need (two pools added at the same moment).
//! - Each object carries a label per directory above its key
//!   (`plexus.io/d<depth>`: 16 hex digits of the directory's SHA-256), so a
//!   range over a directory (the pools, the blocks, the nodes) is a
//!   label-selected list and only those keys travel; the result is still
//!   filtered by `spec.key`. A watch is a PlexusKey watch from a
//!   `resourceVersion`, filtered the same way; 410 Gone is `Compacted`;
//!   bookmarks are empty batches (progress).
//! - TTL leases have no counterpart: the routed records need none (the
//!   overlay's leases in this mode are Node objects, in plexus-subnet's
//!   registry).

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, PostParams, Preconditions,
};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::kubeclient::{self, bounded};
use crate::kubewatch::{Change, Tick, Watch};
use crate::kv::{KeyValue, Kv, KvEvent, KvWatchStream, LeaseId, RangeResult};
use crate::{Revision, StoreError, StoreOptions};

pub const GROUP: &str = "plexus.io";
pub const VERSION: &str = "v1";
pub const KIND: &str = "PlexusKey";
pub const PLURAL: &str = "plexuskeys";

/// Unconditional puts retry this often when another writer gets in between.
const PUT_ATTEMPTS: usize = 16;

/// The PlexusKey resource.
pub fn api_resource() -> ApiResource {
    ApiResource {
        group: GROUP.into(),
        version: VERSION.into(),
        api_version: format!("{GROUP}/{VERSION}"),
        kind: KIND.into(),
        plural: PLURAL.into(),
    }
}

/// The object name holding `key`.
pub fn object_name(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let hex: String = digest[..20].iter().map(|b| format!("{b:02x}")).collect();
    format!("k-{hex}")
}

/// Keys as PlexusKey objects.
#[derive(Clone)]
pub struct KubeKv {
    api: Api<DynamicObject>,
}

impl std::fmt::Debug for KubeKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KubeKv")
    }
}

fn api_error(op: &str, e: kube::Error) -> StoreError {
    match e {
        kube::Error::Api(s) if s.code == 404 && s.details.is_none() => StoreError::NoConfig(format!(
            "{PLURAL}.{GROUP} (the API server does not serve it: apply the CRD in deploy/overlays/kubernetes): {op}: {}",
            s.message
        )),
        e => kubeclient::api_error(op, e),
    }
}

fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

fn parse_rv(rv: Option<&String>) -> Revision {
    rv.and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// A PlexusKey object as the key it holds (`None`: not one of ours, or a
/// digest collision with another key).
fn to_kv(obj: &DynamicObject) -> Option<KeyValue> {
    let spec = obj.data.get("spec")?;
    let key = spec.get("key")?.as_str()?.to_string();
    let value = match (spec.get("value"), spec.get("valueBase64")) {
        (Some(Value::String(s)), _) => s.as_bytes().to_vec(),
        (_, Some(Value::String(b))) => B64.decode(b).ok()?,
        _ => Vec::new(),
    };
    let rev = parse_rv(obj.metadata.resource_version.as_ref());
    let version = obj.metadata.generation.unwrap_or(1);
    Some(KeyValue {
        key,
        value,
        create_revision: if version <= 1 { rev } else { 1 },
        mod_revision: rev,
        version,
        lease: 0,
    })
}

/// The key an object holds, if the object is where that key lives (its
/// name is the key's digest): anything else under this resource was not
/// written by us and is ignored. Every object the API returns (get, list,
/// watch) is read through this.
pub fn ours(obj: &DynamicObject) -> Option<KeyValue> {
    to_kv(obj).filter(|kv| obj.metadata.name.as_deref() == Some(object_name(&kv.key).as_str()))
}

fn spec(key: &str, value: &[u8]) -> Value {
    match std::str::from_utf8(value) {
        Ok(s) => json!({"key": key, "value": s}),
        Err(_) => json!({"key": key, "valueBase64": B64.encode(value)}),
    }
}

/// 16 hex digits of SHA-256: a label value for a directory.
fn dir_hash(dir: &str) -> String {
    Sha256::digest(dir.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The label naming a key's ancestor directory `depth` levels down
/// (`plexus.io/d2` is `/plexus/routed/` for `/plexus/routed/pools/x`).
fn dir_label(depth: usize) -> String {
    format!("{GROUP}/d{depth}")
}

/// One label per directory above the key, so a range over any directory
/// is a label-selected list (only its keys travel), not a list of every
/// key filtered here.
fn dir_labels(key: &str) -> std::collections::BTreeMap<String, String> {
    key.match_indices('/')
        .enumerate()
        .map(|(depth, (i, _))| (dir_label(depth), dir_hash(&key[..=i])))
        .collect()
}

/// The label selector for the keys under `prefix`, if it is a directory
/// (ends with `/`).
fn dir_selector(prefix: &str) -> Option<String> {
    let depth = prefix.strip_suffix('/')?.matches('/').count();
    Some(format!("{}={}", dir_label(depth), dir_hash(prefix)))
}

fn object(key: &str, value: &[u8], resource_version: Option<Revision>) -> DynamicObject {
    let mut obj = DynamicObject::new(&object_name(key), &api_resource());
    obj.metadata.resource_version = resource_version.map(|r| r.to_string());
    obj.metadata.labels = Some(dir_labels(key));
    obj.data = json!({ "spec": spec(key, value) });
    obj
}

fn no_leases() -> StoreError {
    StoreError::Other(
        "the kubernetes store has no TTL leases (the overlay keeps its leases on Node objects)"
            .into(),
    )
}

impl KubeKv {
    /// Connect with `--kubeconfig` (or the in-cluster config).
    pub async fn connect(opts: &StoreOptions) -> Result<KubeKv, StoreError> {
        Ok(KubeKv::new(kubeclient::connect(opts).await?))
    }

    pub fn new(client: kube::Client) -> KubeKv {
        KubeKv {
            api: Api::all_with(client, &api_resource()),
        }
    }

    async fn get_object(&self, key: &str) -> Result<Option<DynamicObject>, StoreError> {
        let op = format!("get {PLURAL} {key}");
        // rbac(plexus-kube-store): get plexuskeys.plexus.io
        let obj = bounded(&op, self.api.get_opt(&object_name(key)))
            .await?
            .map_err(|e| api_error(&op, e))?;
        Ok(obj.filter(|o| ours(o).is_some_and(|kv| kv.key == key)))
    }

    /// Create the key; `None` when it exists.
    async fn create_object(&self, key: &str, value: &[u8]) -> Result<Option<Revision>, StoreError> {
        let op = format!("create {PLURAL} {key}");
        // rbac(plexus-kube-store): create plexuskeys.plexus.io
        let res = bounded(
            &op,
            self.api
                .create(&PostParams::default(), &object(key, value, None)),
        )
        .await?;
        match res {
            Ok(o) => Ok(Some(parse_rv(o.metadata.resource_version.as_ref()))),
            Err(e) if status_code(&e) == Some(409) => Ok(None),
            Err(e) => Err(api_error(&op, e)),
        }
    }

    /// Update the key if its resourceVersion is `rev`; `None` when it is
    /// not (409) or the key is gone (404).
    async fn update_object(
        &self,
        key: &str,
        value: &[u8],
        rev: Revision,
    ) -> Result<Option<Revision>, StoreError> {
        let op = format!("update {PLURAL} {key}");
        // rbac(plexus-kube-store): update plexuskeys.plexus.io
        let res = bounded(
            &op,
            self.api.replace(
                &object_name(key),
                &PostParams::default(),
                &object(key, value, Some(rev)),
            ),
        )
        .await?;
        match res {
            Ok(o) => Ok(Some(parse_rv(o.metadata.resource_version.as_ref()))),
            Err(e) if matches!(status_code(&e), Some(409 | 404)) => Ok(None),
            Err(e) => Err(api_error(&op, e)),
        }
    }
}

#[async_trait::async_trait]
impl Kv for KubeKv {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        Ok(self.get_object(key).await?.as_ref().and_then(ours))
    }

    async fn range(&self, prefix: &str) -> Result<RangeResult, StoreError> {
        let op = format!("list {PLURAL}");
        let mut lp = ListParams::default();
        if let Some(sel) = dir_selector(prefix) {
            lp = lp.labels(&sel);
        }
        // rbac(plexus-kube-store): list plexuskeys.plexus.io
        let list = bounded(&op, self.api.list(&lp))
            .await?
            .map_err(|e| api_error(&op, e))?;
        let mut kvs: Vec<KeyValue> = list
            .items
            .iter()
            .filter_map(ours)
            .filter(|kv| kv.key.starts_with(prefix))
            .collect();
        kvs.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(RangeResult {
            kvs,
            revision: parse_rv(list.metadata.resource_version.as_ref()),
        })
    }

    async fn create(
        &self,
        key: &str,
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> Result<Option<Revision>, StoreError> {
        if lease.is_some() {
            return Err(no_leases());
        }
        self.create_object(key, value).await
    }

    async fn put(
        &self,
        key: &str,
        value: &[u8],
        lease: Option<LeaseId>,
        expect_mod_revision: Option<Revision>,
    ) -> Result<Option<Revision>, StoreError> {
        if lease.is_some() {
            return Err(no_leases());
        }
        match expect_mod_revision {
            Some(0) => self.create_object(key, value).await,
            Some(rev) => self.update_object(key, value, rev).await,
            // Unconditional: whatever is there now, retried when another
            // writer gets in between.
            None => {
                for _ in 0..PUT_ATTEMPTS {
                    let done = match self.get(key).await? {
                        Some(cur) => self.update_object(key, value, cur.mod_revision).await?,
                        None => self.create_object(key, value).await?,
                    };
                    if done.is_some() {
                        return Ok(done);
                    }
                }
                Err(StoreError::Other(format!(
                    "Kubernetes API: {key} kept changing under us"
                )))
            }
        }
    }

    async fn delete(
        &self,
        key: &str,
        expect_mod_revision: Option<Revision>,
    ) -> Result<bool, StoreError> {
        if self.get_object(key).await?.is_none() {
            return Ok(false);
        }
        let dp = DeleteParams {
            preconditions: expect_mod_revision.map(|r| Preconditions {
                resource_version: Some(r.to_string()),
                uid: None,
            }),
            ..Default::default()
        };
        let op = format!("delete {PLURAL} {key}");
        // rbac(plexus-kube-store): delete plexuskeys.plexus.io
        let res = bounded(&op, self.api.delete(&object_name(key), &dp)).await?;
        match res {
            Ok(_) => Ok(true),
            Err(e) if matches!(status_code(&e), Some(409 | 404)) => Ok(false),
            Err(e) => Err(api_error(&op, e)),
        }
    }

    async fn grant(&self, _ttl: Duration) -> Result<LeaseId, StoreError> {
        Err(no_leases())
    }

    async fn keepalive(&self, _lease: LeaseId) -> Result<Option<Duration>, StoreError> {
        Err(no_leases())
    }

    async fn revoke(&self, _lease: LeaseId) -> Result<(), StoreError> {
        Err(no_leases())
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<KvWatchStream, StoreError> {
        let prefix = prefix.to_string();
        // A Kubernetes watch starts after the version it is given.
        let after = (from - 1).max(0).to_string();
        let w = Watch::start(self.api.clone(), PLURAL, dir_selector(&prefix), &after).await?;
        Ok(w.into_ticks(move |tick| {
            let (obj, deleted) = match tick {
                Tick::Change(Change::Applied(o)) => (o, false),
                Tick::Change(Change::Deleted(o)) => (o, true),
                // An empty batch: the watch is alive (see Kv::watch).
                Tick::Progress => return Some(Vec::new()),
            };
            let kv = ours(&obj).filter(|kv| kv.key.starts_with(&prefix))?;
            Some(vec![if deleted {
                KvEvent::Delete {
                    key: kv.key.clone(),
                    revision: kv.mod_revision,
                    prev: Some(kv),
                }
            } else {
                KvEvent::Put(kv)
            }])
        }))
    }

    /// The API server compacts its own history.
    async fn compact(&self, _revision: Revision) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_object_names_and_values_round_trip() {
        for key in ["/plexus/routed/blocks/fd00:10::40-122", "/a", ""] {
            let name = object_name(key);
            assert!(plexus_k8s::is_dns1123_subdomain(&name), "{name}");
            assert_eq!(name.len(), 42);
        }
        assert_ne!(object_name("/a"), object_name("/b"));
        let mut obj = object("/x/y", b"{\"a\":1}", Some(7));
        obj.metadata.generation = Some(1);
        let kv = to_kv(&obj).unwrap();
        assert_eq!(
            (kv.key.as_str(), kv.value.as_slice()),
            ("/x/y", &b"{\"a\":1}"[..])
        );
        assert_eq!((kv.mod_revision, kv.create_revision, kv.version), (7, 7, 1));
        // Changed since creation: the create revision is only a lower bound.
        obj.metadata.generation = Some(3);
        assert_eq!(to_kv(&obj).unwrap().create_revision, 1);
        // A label per directory; a directory's selector matches its keys.
        let labels = dir_labels("/plexus/routed/pools/a");
        assert_eq!(labels.len(), 4);
        let sel = dir_selector("/plexus/routed/").unwrap();
        let (k, v) = sel.split_once('=').unwrap();
        assert_eq!((k, labels[k].as_str()), ("plexus.io/d2", v));
        assert!(v.len() == 16 && plexus_k8s::is_dns1123_label(v));
        assert_eq!(dir_selector("/plexus/routed/bgp/config"), None);
        // Bytes that are not UTF-8 go as base64.
        let bin = object("/b", &[0xff, 0x00], None);
        assert!(bin.data["spec"]["valueBase64"].is_string());
        assert_eq!(to_kv(&bin).unwrap().value, vec![0xff, 0x00]);
    }
}
