//! One informer for every watch in Plexus: list at a version, watch from
//! the next, keep a cache, and hand out typed events.
//!
//! A [`Source`] is anything that can list its items at a version and
//! watch the changes after it: [`KvSource`] (a key prefix of any [`Kv`]:
//! etcd, the file store, PlexusKey objects) and [`KubeSource`] (one
//! Kubernetes resource, core or custom, with label and field selectors).
//! [`Informer`] drives one source:
//!
//! - Each raw item goes through a caller's decoder (`Fn(key, raw) ->
//!   Result<T, E>`). A refused item is logged once per version of it (not
//!   again at every relist), counted ([`Stats`]), and treated as absent: a
//!   key whose value turns bad is handed out as deleted, as Calico's syncer
//!   does, so a consumer never acts on a value the store no longer holds.
//!   Never fatal.
//! - Events are [`Event::Added`], [`Event::Updated`] (old and new),
//!   [`Event::Deleted`] (the last value handed out) and [`Event::Synced`]
//!   after each (re)list. A relist hands out exactly the differences
//!   between the new listing and what was handed out before: no delete is
//!   missed, nothing is handed out twice (a change that decodes to the
//!   value already handed out is no event).
//! - The watch starts right after the list's version, so a change made
//!   while listing arrives through the watch.
//! - It lists again when history is gone (etcd compaction, 410 Gone), when
//!   the stream breaks or ends (a Kubernetes watch call that the server
//!   ends, or that kube ends as resumable, is first made again from the
//!   last version seen inside [`KubeSource`], as client-go does; 410 on
//!   that call is a relist), and when it goes silent: nothing at all
//!   (not even a progress notification or a bookmark) for the idle timeout.
//!   Sources send signs of life on a quiet stream: etcd progress
//!   notifications (asked for on every watch), Kubernetes bookmarks and
//!   the watch calls made again every few minutes. The default timeout,
//!   [`DEFAULT_IDLE_TIMEOUT`], is longer than etcd's default progress
//!   interval (10 min), so a healthy quiet stream is never torn down, while
//!   a stuck one (a half-open connection, a wedged server-side watcher) is
//!   noticed and replaced in bounded time; a relist costs one read of the
//!   prefix and hands out nothing when nothing changed.
//! - Failures are retried forever with a capped exponential backoff and
//!   logged; [`Informer::next`] never returns an error.
//! - [`Cache`] is readable at any time from any task; it holds exactly
//!   what the events handed out so far say (each event is applied as it
//!   is handed out).
//! - Batching: [`Informer::into_stream`] with `ready_chunks(n)` hands out
//!   everything already at hand (a relist, a 1000-key transaction) as one
//!   chunk, for one round of programming.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Display;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;

use crate::kv::{KeyValue, Kv, KvEvent};
use crate::{Revision, StoreError};

/// How long a watch may stay completely silent before it is replaced:
/// longer than etcd's default progress-notification interval (10 min) and
/// than a Kubernetes watch call (290 s, then made again).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(11 * 60);
/// A list may take this long (a few thousand objects take well under it).
pub const LIST_TIMEOUT: Duration = Duration::from_secs(60);
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

// ---- sources ----

/// One item as a source holds it.
#[derive(Debug, Clone)]
pub struct RawItem<R> {
    /// Unique within the source (a Kv key; `namespace/name` or `name`).
    pub key: String,
    /// The item's own version (mod_revision, resourceVersion): a refusal
    /// is logged once per version.
    pub version: String,
    pub raw: R,
}

/// Every item at one version.
#[derive(Debug, Clone)]
pub struct Listing<R> {
    pub items: Vec<RawItem<R>>,
    /// Watch from just after this.
    pub version: String,
}

/// One change seen by a source's watch.
#[derive(Debug, Clone)]
pub enum RawChange<R> {
    /// Created or changed: the item now.
    Put(RawItem<R>),
    Delete {
        key: String,
    },
    /// Nothing changed; the stream is alive (a progress notification, a
    /// bookmark).
    Progress,
}

/// A source's watch: changes in order; an error item or the end means the
/// watch is over (`Err(Compacted)`: history is gone).
pub type RawStream<R> = BoxStream<'static, Result<RawChange<R>, StoreError>>;

/// Something that lists at a version and watches from the next.
#[async_trait::async_trait]
pub trait Source: Send + Sync + 'static {
    type Raw: Send + Sync + 'static;
    /// What is watched, for logs (`keys under /plexus/routed/`).
    fn describe(&self) -> String;
    /// Every item now, with the version to watch after.
    async fn list(&self) -> Result<Listing<Self::Raw>, StoreError>;
    /// Changes after `version` (a [`Listing::version`]).
    async fn watch(&self, version: &str) -> Result<RawStream<Self::Raw>, StoreError>;
}

/// The keys under a prefix of a [`Kv`] store.
pub struct KvSource {
    kv: Arc<dyn Kv>,
    prefix: String,
    excluded: Vec<String>,
}

impl std::fmt::Debug for KvSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvSource")
            .field("prefix", &self.prefix)
            .field("excluded", &self.excluded)
            .finish()
    }
}

impl KvSource {
    pub fn new(kv: Arc<dyn Kv>, prefix: &str) -> KvSource {
        KvSource {
            kv,
            prefix: prefix.to_string(),
            excluded: Vec::new(),
        }
    }

    /// Leave out the keys under `prefix` (they are still read by a list,
    /// never decoded or cached).
    pub fn excluding(mut self, prefix: &str) -> KvSource {
        self.excluded.push(prefix.to_string());
        self
    }

    fn wanted(&self, key: &str) -> bool {
        !self.excluded.iter().any(|p| key.starts_with(p.as_str()))
    }
}

fn kv_item(kv: KeyValue) -> RawItem<KeyValue> {
    RawItem {
        key: kv.key.clone(),
        version: kv.mod_revision.to_string(),
        raw: kv,
    }
}

#[async_trait::async_trait]
impl Source for KvSource {
    type Raw = KeyValue;

    fn describe(&self) -> String {
        format!("keys under {}", self.prefix)
    }

    async fn list(&self) -> Result<Listing<KeyValue>, StoreError> {
        let r = self.kv.range(&self.prefix).await?;
        Ok(Listing {
            items: r
                .kvs
                .into_iter()
                .filter(|kv| self.wanted(&kv.key))
                .map(kv_item)
                .collect(),
            version: r.revision.to_string(),
        })
    }

    async fn watch(&self, version: &str) -> Result<RawStream<KeyValue>, StoreError> {
        let rev: Revision = version
            .parse()
            .map_err(|_| StoreError::Other(format!("not a store revision: {version:?}")))?;
        let stream = self.kv.watch(&self.prefix, rev + 1).await?;
        let excluded = self.excluded.clone();
        let wanted = move |key: &str| !excluded.iter().any(|p| key.starts_with(p.as_str()));
        Ok(stream
            .flat_map(move |batch| {
                let out: Vec<Result<RawChange<KeyValue>, StoreError>> = match batch {
                    Err(e) => vec![Err(e)],
                    Ok(evs) => {
                        let mut out: Vec<_> = evs
                            .into_iter()
                            .filter(|e| wanted(e.key()))
                            .map(|e| {
                                Ok(match e {
                                    KvEvent::Put(kv) => RawChange::Put(kv_item(kv)),
                                    KvEvent::Delete { key, .. } => RawChange::Delete { key },
                                })
                            })
                            .collect();
                        // A progress notification, or only left-out keys:
                        // either way the stream is alive.
                        if out.is_empty() {
                            out.push(Ok(RawChange::Progress));
                        }
                        out
                    }
                };
                futures::stream::iter(out)
            })
            .boxed())
    }
}

// ---- events and the cache ----

/// What an informer hands out.
#[derive(Debug, PartialEq)]
pub enum Event<T> {
    Added(String, Arc<T>),
    /// The key, its value before and now.
    Updated(String, Arc<T>, Arc<T>),
    /// The key and the last value handed out for it.
    Deleted(String, Arc<T>),
    /// A (re)list was handed out in full: the cache is the source's state
    /// at one version.
    Synced,
}

impl<T> Clone for Event<T> {
    fn clone(&self) -> Self {
        match self {
            Event::Added(k, v) => Event::Added(k.clone(), v.clone()),
            Event::Updated(k, o, n) => Event::Updated(k.clone(), o.clone(), n.clone()),
            Event::Deleted(k, v) => Event::Deleted(k.clone(), v.clone()),
            Event::Synced => Event::Synced,
        }
    }
}

impl<T> Event<T> {
    /// The key the event is about (`None` for Synced).
    pub fn key(&self) -> Option<&str> {
        match self {
            Event::Added(k, _) | Event::Updated(k, _, _) | Event::Deleted(k, _) => Some(k),
            Event::Synced => None,
        }
    }
}

struct CacheInner<T> {
    items: BTreeMap<String, Arc<T>>,
    synced: bool,
}

/// The values handed out so far, by key; cheap to clone and share.
pub struct Cache<T> {
    inner: Arc<RwLock<CacheInner<T>>>,
}

impl<T> Clone for Cache<T> {
    fn clone(&self) -> Self {
        Cache {
            inner: self.inner.clone(),
        }
    }
}

impl<T> std::fmt::Debug for Cache<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("len", &self.len()).finish()
    }
}

impl<T> Cache<T> {
    fn new() -> Cache<T> {
        Cache {
            inner: Arc::new(RwLock::new(CacheInner {
                items: BTreeMap::new(),
                synced: false,
            })),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, CacheInner<T>> {
        // A panic while holding the lock cannot leave the map half-changed
        // (each change is one insert or remove), so a poisoned lock is fine.
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, CacheInner<T>> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, key: &str) -> Option<Arc<T>> {
        self.read().items.get(key).cloned()
    }

    /// Read the whole map without copying it.
    pub fn with<R>(&self, f: impl FnOnce(&BTreeMap<String, Arc<T>>) -> R) -> R {
        f(&self.read().items)
    }

    pub fn snapshot(&self) -> BTreeMap<String, Arc<T>> {
        self.read().items.clone()
    }

    /// The values, in key order.
    pub fn values(&self) -> Vec<Arc<T>> {
        self.read().items.values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.read().items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a first list was handed out in full.
    pub fn is_synced(&self) -> bool {
        self.read().synced
    }
}

/// An informer's counters, for metrics.
#[derive(Debug, Default)]
pub struct Stats {
    lists: AtomicU64,
    refused_total: AtomicU64,
    refused: AtomicU64,
    compacted: AtomicU64,
    broken: AtomicU64,
    silent: AtomicU64,
}

/// [`Stats`] read at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Lists made (the first one included).
    pub lists: u64,
    /// Records refused by the decoder, each version once (a counter).
    pub refused_total: u64,
    /// Keys whose current record is refused (a gauge).
    pub refused: u64,
    /// Watches ended because history was gone (compaction, 410).
    pub compacted: u64,
    /// Watches that broke or ended, or could not be opened.
    pub broken: u64,
    /// Watches replaced after the idle timeout.
    pub silent: u64,
}

impl Stats {
    pub fn counts(&self) -> Counts {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Counts {
            lists: get(&self.lists),
            refused_total: get(&self.refused_total),
            refused: get(&self.refused),
            compacted: get(&self.compacted),
            broken: get(&self.broken),
            silent: get(&self.silent),
        }
    }

    fn bump(a: &AtomicU64) {
        a.fetch_add(1, Ordering::Relaxed);
    }
}

// ---- decoding (the source's raw type erased) ----

/// An item after the decoder: the value, none (not an item of this
/// informer's), or why it was refused.
struct Decoded<T> {
    key: String,
    version: String,
    value: Result<Option<T>, String>,
}

enum Change<T> {
    Put(Decoded<T>),
    Delete(String),
    Progress,
}

type ChangeStream<T> = BoxStream<'static, Result<Change<T>, StoreError>>;

#[async_trait::async_trait]
trait Feed<T>: Send + Sync + 'static {
    async fn list(&self) -> Result<(Vec<Decoded<T>>, String), StoreError>;
    async fn watch(&self, version: &str) -> Result<ChangeStream<T>, StoreError>;
}

struct Decoding<S, F> {
    source: S,
    decode: Arc<F>,
}

fn decode_item<R, T, E: Display>(
    decode: &impl Fn(&str, &R) -> Result<Option<T>, E>,
    item: RawItem<R>,
) -> Decoded<T> {
    Decoded {
        value: decode(&item.key, &item.raw).map_err(|e| e.to_string()),
        key: item.key,
        version: item.version,
    }
}

#[async_trait::async_trait]
impl<S, F, T, E> Feed<T> for Decoding<S, F>
where
    S: Source,
    F: Fn(&str, &S::Raw) -> Result<Option<T>, E> + Send + Sync + 'static,
    E: Display,
    T: Send + 'static,
{
    async fn list(&self) -> Result<(Vec<Decoded<T>>, String), StoreError> {
        let l = self.source.list().await?;
        let items = l
            .items
            .into_iter()
            .map(|i| decode_item(&*self.decode, i))
            .collect();
        Ok((items, l.version))
    }

    async fn watch(&self, version: &str) -> Result<ChangeStream<T>, StoreError> {
        let decode = self.decode.clone();
        Ok(self
            .source
            .watch(version)
            .await?
            .map(move |c| {
                c.map(|c| match c {
                    RawChange::Put(item) => Change::Put(decode_item(&*decode, item)),
                    RawChange::Delete { key } => Change::Delete(key),
                    RawChange::Progress => Change::Progress,
                })
            })
            .boxed())
    }
}

// ---- what was handed out (pure) ----

/// The cache and the refused keys; turns listings and changes into events.
struct Tracker<T> {
    what: String,
    cache: Cache<T>,
    /// Refused keys and the version refused (logged once per version).
    refused: HashMap<String, String>,
    stats: Arc<Stats>,
}

impl<T: PartialEq> Tracker<T> {
    fn refuse(&mut self, key: &str, version: &str, why: &str) {
        if self.refused.get(key).map(String::as_str) != Some(version) {
            tracing::warn!(
                source = %self.what,
                key,
                version,
                error = why,
                "record refused: skipped (as if absent) until it changes"
            );
            Stats::bump(&self.stats.refused_total);
            self.refused.insert(key.to_string(), version.to_string());
        }
        self.gauge();
    }

    fn forget_refusal(&mut self, key: &str) {
        if self.refused.remove(key).is_some() {
            self.gauge();
        }
    }

    fn gauge(&self) {
        self.stats
            .refused
            .store(self.refused.len() as u64, Ordering::Relaxed);
    }

    /// The event a value for `key` gives against the cache (`None`: the
    /// same value was handed out already).
    fn put_event(&self, key: String, value: T) -> Option<Event<T>> {
        match self.cache.get(&key) {
            Some(old) if *old == value => None,
            Some(old) => Some(Event::Updated(key, old, Arc::new(value))),
            None => Some(Event::Added(key, Arc::new(value))),
        }
    }

    /// The events taking the cache to `items` (a whole listing):
    /// deletions first, then additions and updates, each in key order.
    fn relist(&mut self, items: Vec<Decoded<T>>) -> Vec<Event<T>> {
        let mut listed: BTreeMap<String, Option<T>> = BTreeMap::new();
        for item in items {
            match item.value {
                Ok(v) => {
                    self.forget_refusal(&item.key);
                    listed.insert(item.key, v);
                }
                Err(why) => {
                    self.refuse(&item.key, &item.version, &why);
                    listed.insert(item.key, None);
                }
            }
        }
        let before = self.refused.len();
        self.refused.retain(|k, _| listed.contains_key(k));
        if self.refused.len() != before {
            self.gauge();
        }
        let mut events: Vec<Event<T>> = self.cache.with(|cache| {
            cache
                .iter()
                .filter(|(k, _)| !matches!(listed.get(*k), Some(Some(_))))
                .map(|(k, v)| Event::Deleted(k.clone(), v.clone()))
                .collect()
        });
        for (key, value) in listed {
            if let Some(v) = value {
                events.extend(self.put_event(key, v));
            }
        }
        events
    }

    /// The event one watched change gives, if any.
    fn change(&mut self, c: Change<T>) -> Option<Event<T>> {
        match c {
            Change::Progress => None,
            Change::Put(item) => match item.value {
                Ok(Some(v)) => {
                    self.forget_refusal(&item.key);
                    self.put_event(item.key, v)
                }
                Ok(None) => {
                    self.forget_refusal(&item.key);
                    let last = self.cache.get(&item.key)?;
                    Some(Event::Deleted(item.key, last))
                }
                Err(why) => {
                    self.refuse(&item.key, &item.version, &why);
                    let last = self.cache.get(&item.key)?;
                    Some(Event::Deleted(item.key, last))
                }
            },
            Change::Delete(key) => {
                self.forget_refusal(&key);
                let last = self.cache.get(&key)?;
                Some(Event::Deleted(key, last))
            }
        }
    }

    /// Make the cache say what `ev` says (as it is handed out).
    fn apply(&self, ev: &Event<T>) {
        let mut c = self.cache.write();
        match ev {
            Event::Added(k, v) | Event::Updated(k, _, v) => {
                c.items.insert(k.clone(), v.clone());
            }
            Event::Deleted(k, _) => {
                c.items.remove(k);
            }
            Event::Synced => c.synced = true,
        }
    }
}

// ---- the informer ----

/// Why the next list is made; decides whether to wait first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Relist {
    Start,
    /// History gone: at once (unless it happens again straight away).
    Compacted,
    /// The stream broke or could not be opened: after the backoff.
    Broken,
    /// The idle timeout already waited: at once.
    Silent,
}

/// A list and the watch opened after it.
type Listed<T> = Result<(Vec<Decoded<T>>, String, Result<ChangeStream<T>, StoreError>), StoreError>;

/// One source, decoded, cached, as events. See the module docs.
pub struct Informer<T> {
    feed: Arc<dyn Feed<T>>,
    what: String,
    idle: Duration,
    tracker: Tracker<T>,
    pending: VecDeque<Event<T>>,
    stream: Option<ChangeStream<T>>,
    /// A list is due, and why.
    relist: Option<Relist>,
    /// The list under way, in a task of its own: a caller that drops
    /// `next()` (a `select!` arm) does not start it over, however often.
    listing: Option<tokio::task::JoinHandle<Listed<T>>>,
    /// The next list not before this (the backoff).
    not_before: Option<tokio::time::Instant>,
    /// The current stream delivered something (it is not failing at once).
    delivered: bool,
    backoff: Duration,
}

impl<T> std::fmt::Debug for Informer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Informer")
            .field("source", &self.what)
            .finish()
    }
}

impl<T> Drop for Informer<T> {
    fn drop(&mut self) {
        if let Some(l) = &self.listing {
            l.abort();
        }
    }
}

impl<T: PartialEq + Send + Sync + 'static> Informer<T> {
    /// An informer over `source`, each item decoded by `decode(key, raw)`.
    /// Nothing happens until [`Informer::next`] is called.
    pub fn new<S, F, E>(source: S, decode: F) -> Informer<T>
    where
        S: Source,
        F: Fn(&str, &S::Raw) -> Result<T, E> + Send + Sync + 'static,
        E: Display,
    {
        Informer::filtered(source, move |key: &str, raw: &S::Raw| {
            decode(key, raw).map(Some)
        })
    }

    /// An informer over the items `decode` keeps: `Ok(None)` is an item
    /// that is not one of this informer's (a Node without the overlay's
    /// annotations), treated as absent without a word; `Err` is a bad one,
    /// logged and counted.
    pub fn filtered<S, F, E>(source: S, decode: F) -> Informer<T>
    where
        S: Source,
        F: Fn(&str, &S::Raw) -> Result<Option<T>, E> + Send + Sync + 'static,
        E: Display,
    {
        let what = source.describe();
        let stats = Arc::new(Stats::default());
        Informer {
            feed: Arc::new(Decoding {
                source,
                decode: Arc::new(decode),
            }),
            tracker: Tracker {
                what: what.clone(),
                cache: Cache::new(),
                refused: HashMap::new(),
                stats,
            },
            what,
            idle: DEFAULT_IDLE_TIMEOUT,
            pending: VecDeque::new(),
            stream: None,
            relist: Some(Relist::Start),
            listing: None,
            not_before: None,
            delivered: false,
            backoff: BACKOFF_MIN,
        }
    }

    /// Replace a watch that stays silent this long (default
    /// [`DEFAULT_IDLE_TIMEOUT`]).
    pub fn idle_timeout(mut self, idle: Duration) -> Informer<T> {
        self.idle = idle;
        self
    }

    /// What is watched (for logs).
    pub fn describe(&self) -> &str {
        &self.what
    }

    /// The values handed out so far.
    pub fn cache(&self) -> Cache<T> {
        self.tracker.cache.clone()
    }

    pub fn stats(&self) -> Arc<Stats> {
        self.tracker.stats.clone()
    }

    /// The next event; waits as long as it takes (failures are retried and
    /// logged). The cache includes the event once it is returned.
    /// Cancel-safe: a dropped call loses nothing and starts nothing over.
    pub async fn next(&mut self) -> Event<T> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                self.tracker.apply(&ev);
                return ev;
            }
            if self.relist.is_some() {
                let listed = self.list().await;
                self.listed(listed);
                continue;
            }
            let Some(stream) = self.stream.as_mut() else {
                self.relist_after(Relist::Start);
                continue;
            };
            match tokio::time::timeout(self.idle, stream.next()).await {
                Err(_) => {
                    tracing::warn!(source = %self.what, idle = ?self.idle, "watch silent; listing again");
                    Stats::bump(&self.tracker.stats.silent);
                    self.relist_after(Relist::Silent);
                }
                Ok(None) => {
                    tracing::info!(source = %self.what, "watch ended; listing again");
                    Stats::bump(&self.tracker.stats.broken);
                    self.relist_after(Relist::Broken);
                }
                Ok(Some(Err(StoreError::Compacted(rev)))) => {
                    tracing::info!(source = %self.what, revision = rev, "watch history gone; listing again");
                    Stats::bump(&self.tracker.stats.compacted);
                    self.relist_after(Relist::Compacted);
                }
                Ok(Some(Err(e))) => {
                    tracing::warn!(source = %self.what, error = %e, "watch broke; listing again");
                    Stats::bump(&self.tracker.stats.broken);
                    self.relist_after(Relist::Broken);
                }
                Ok(Some(Ok(change))) => {
                    self.delivered = true;
                    self.backoff = BACKOFF_MIN;
                    self.pending.extend(self.tracker.change(change));
                }
            }
        }
    }

    /// The events as a stream that never ends.
    pub fn into_stream(self) -> BoxStream<'static, Event<T>> {
        futures::stream::unfold(self, |mut i| async move {
            let ev = i.next().await;
            Some((ev, i))
        })
        .boxed()
    }

    /// End the watch; list again, after the backoff if `why` calls for it.
    fn relist_after(&mut self, why: Relist) {
        let wait = match why {
            Relist::Start | Relist::Silent => false,
            Relist::Compacted => !self.delivered,
            Relist::Broken => true,
        };
        if wait {
            self.not_before = Some(tokio::time::Instant::now() + self.backoff);
            self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        }
        self.stream = None;
        self.relist = Some(why);
    }

    /// Wait out the backoff, then list and open the watch after the
    /// listing's version (in a task, see `listing`).
    async fn list(&mut self) -> Result<Listed<T>, tokio::task::JoinError> {
        if self.listing.is_none() {
            if let Some(t) = self.not_before {
                tokio::time::sleep_until(t).await;
            }
            self.not_before = None;
            self.delivered = false;
            let feed = self.feed.clone();
            self.listing = Some(tokio::spawn(async move {
                let (items, version) = tokio::time::timeout(LIST_TIMEOUT, feed.list())
                    .await
                    .map_err(|_| {
                        StoreError::Unavailable(format!("no answer within {LIST_TIMEOUT:?}"))
                    })??;
                let watch = feed.watch(&version).await;
                Ok((items, version, watch))
            }));
        }
        let done = self.listing.as_mut().expect("a list under way").await;
        self.listing = None;
        done
    }

    /// Queue a listing's differences and Synced, and keep its watch; on
    /// failure, a list is due again.
    fn listed(&mut self, listed: Result<Listed<T>, tokio::task::JoinError>) {
        let (items, version, watch) = match listed {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => {
                tracing::warn!(source = %self.what, error = %e, retry_in = ?self.backoff, "list failed");
                self.relist_after(Relist::Broken);
                return;
            }
            Err(e) => {
                tracing::warn!(source = %self.what, error = %e, "the list task failed");
                self.relist_after(Relist::Broken);
                return;
            }
        };
        self.relist = None;
        Stats::bump(&self.tracker.stats.lists);
        let events = self.tracker.relist(items);
        tracing::debug!(source = %self.what, version, changes = events.len(), "listed");
        self.pending.extend(events);
        self.pending.push_back(Event::Synced);
        match watch {
            Ok(s) => self.stream = Some(s),
            Err(StoreError::Compacted(rev)) => {
                tracing::info!(source = %self.what, revision = rev, "history gone before the watch started; listing again");
                Stats::bump(&self.tracker.stats.compacted);
                self.relist_after(Relist::Compacted);
            }
            Err(e) => {
                tracing::warn!(source = %self.what, error = %e, "watch could not start; listing again");
                Stats::bump(&self.tracker.stats.broken);
                self.relist_after(Relist::Broken);
            }
        }
    }
}

mod kubesource;
#[cfg(test)]
mod tests;

pub use kubesource::{object_key, resources, typed, KubeObject, KubeSource};
