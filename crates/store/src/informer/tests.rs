//! The informer over the file store, with a wrapper that cuts or silences
//! its watches and a source that makes a change right after a list.

use std::sync::Mutex;

use futures::future::BoxFuture;
use tokio::sync::watch;

use super::*;
use crate::kv::{KvWatchStream, LeaseId, RangeResult};
use crate::{rt, FileKv};

/// How many times the wrapper's watches were cut and silenced.
#[derive(Debug, Clone, Copy, Default)]
struct Epochs {
    cut: u64,
    stall: u64,
}

/// The file store, whose open watches a test can cut (they end) or
/// silence (they deliver nothing more, and never end).
struct Faulty {
    inner: FileKv,
    ctl: watch::Sender<Epochs>,
}

impl Faulty {
    fn open(dir: &std::path::Path) -> Arc<Faulty> {
        Arc::new(Faulty {
            inner: FileKv::open(&dir.join("store.json")).unwrap(),
            ctl: watch::channel(Epochs::default()).0,
        })
    }

    fn cut(&self) {
        self.ctl.send_modify(|e| e.cut += 1);
    }

    fn stall(&self) {
        self.ctl.send_modify(|e| e.stall += 1);
    }
}

fn controlled(stream: KvWatchStream, rx: watch::Receiver<Epochs>) -> KvWatchStream {
    let start = *rx.borrow();
    futures::stream::unfold((stream, rx), move |(mut s, mut rx)| async move {
        loop {
            let now = *rx.borrow_and_update();
            if now.cut > start.cut {
                return None;
            }
            if now.stall > start.stall {
                // Silent: nothing is read or delivered, only a cut ends it.
                if rx.changed().await.is_err() {
                    futures::future::pending::<()>().await;
                }
                continue;
            }
            tokio::select! {
                item = s.next() => return item.map(|i| (i, (s, rx))),
                r = rx.changed() => {
                    if r.is_err() {
                        return s.next().await.map(|i| (i, (s, rx)));
                    }
                }
            }
        }
    })
    .boxed()
}

#[async_trait::async_trait]
impl Kv for Faulty {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.inner.get(key).await
    }
    async fn range(&self, prefix: &str) -> Result<RangeResult, StoreError> {
        self.inner.range(prefix).await
    }
    async fn create(
        &self,
        key: &str,
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> Result<Option<Revision>, StoreError> {
        self.inner.create(key, value, lease).await
    }
    async fn put(
        &self,
        key: &str,
        value: &[u8],
        lease: Option<LeaseId>,
        expect: Option<Revision>,
    ) -> Result<Option<Revision>, StoreError> {
        self.inner.put(key, value, lease, expect).await
    }
    async fn delete(&self, key: &str, expect: Option<Revision>) -> Result<bool, StoreError> {
        self.inner.delete(key, expect).await
    }
    async fn grant(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        self.inner.grant(ttl).await
    }
    async fn keepalive(&self, lease: LeaseId) -> Result<Option<Duration>, StoreError> {
        self.inner.keepalive(lease).await
    }
    async fn revoke(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.inner.revoke(lease).await
    }
    async fn watch(&self, prefix: &str, from: Revision) -> Result<KvWatchStream, StoreError> {
        let s = self.inner.watch(prefix, from).await?;
        Ok(controlled(s, self.ctl.subscribe()))
    }
    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.inner.compact(revision).await
    }
}

type Hook = Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>;

/// A source that runs a hook once, after its first list read the store
/// and before the informer sees the listing or watches.
struct AfterList<S> {
    inner: S,
    hook: Mutex<Option<Hook>>,
}

#[async_trait::async_trait]
impl<S: Source> Source for AfterList<S> {
    type Raw = S::Raw;
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn list(&self) -> Result<Listing<S::Raw>, StoreError> {
        let l = self.inner.list().await?;
        let hook = self.hook.lock().unwrap().take();
        if let Some(h) = hook {
            h().await;
        }
        Ok(l)
    }
    async fn watch(&self, version: &str) -> Result<RawStream<S::Raw>, StoreError> {
        self.inner.watch(version).await
    }
}

/// Values as text; a value starting with "bad" is refused.
fn decode(key: &str, kv: &KeyValue) -> Result<String, String> {
    assert_eq!(key, kv.key);
    let v = String::from_utf8(kv.value.clone()).map_err(|e| e.to_string())?;
    if v.starts_with("bad") {
        return Err(format!("{v:?} is not a value"));
    }
    Ok(v)
}

fn informer(kv: Arc<dyn Kv>) -> Informer<String> {
    Informer::new(KvSource::new(kv, "/p/"), decode)
}

/// The next event, or a failure after a generous bound (never a hang).
async fn next(i: &mut Informer<String>) -> Event<String> {
    tokio::time::timeout(Duration::from_secs(20), i.next())
        .await
        .expect("an event within 20 s")
}

fn added(k: &str, v: &str) -> Event<String> {
    Event::Added(k.into(), Arc::new(v.into()))
}

fn updated(k: &str, old: &str, new: &str) -> Event<String> {
    Event::Updated(k.into(), Arc::new(old.into()), Arc::new(new.into()))
}

fn deleted(k: &str, last: &str) -> Event<String> {
    Event::Deleted(k.into(), Arc::new(last.into()))
}

/// The next `n` events in any order (a change racing a relist may come
/// before or after its Synced), sorted by their debug form.
async fn next_n(i: &mut Informer<String>, n: usize) -> Vec<String> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(format!("{:?}", next(i).await));
    }
    v.sort();
    v
}

fn sorted(evs: &[Event<String>]) -> Vec<String> {
    let mut v: Vec<String> = evs.iter().map(|e| format!("{e:?}")).collect();
    v.sort();
    v
}

async fn put(kv: &dyn Kv, k: &str, v: &str) {
    kv.put(k, v.as_bytes(), None, None).await.unwrap();
}

#[test]
fn lists_then_follows_and_marks_the_list_synced() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let kv = Faulty::open(dir.path());
        put(&*kv, "/p/b", "2").await;
        put(&*kv, "/p/a", "1").await;
        put(&*kv, "/q/x", "elsewhere").await;
        let mut i = informer(kv.clone());
        let cache = i.cache();
        assert!(!cache.is_synced());
        assert_eq!(next(&mut i).await, added("/p/a", "1"));
        assert_eq!(next(&mut i).await, added("/p/b", "2"));
        assert_eq!(next(&mut i).await, Event::Synced);
        assert!(cache.is_synced());
        assert_eq!(cache.len(), 2);
        put(&*kv, "/p/a", "1b").await;
        // The same value again is no event; the delete after it is.
        put(&*kv, "/p/a", "1b").await;
        kv.delete("/p/b", None).await.unwrap();
        put(&*kv, "/p/c", "3").await;
        assert_eq!(next(&mut i).await, updated("/p/a", "1", "1b"));
        assert_eq!(next(&mut i).await, deleted("/p/b", "2"));
        assert_eq!(next(&mut i).await, added("/p/c", "3"));
        assert_eq!(
            cache.snapshot().keys().cloned().collect::<Vec<_>>(),
            ["/p/a", "/p/c"]
        );
        assert_eq!(*cache.get("/p/a").unwrap(), "1b");
        let c = i.stats().counts();
        assert_eq!((c.lists, c.broken, c.compacted, c.silent), (1, 0, 0, 0));
    });
}

#[test]
fn history_compacted_before_the_watch_gives_exactly_the_differences() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let kv = Faulty::open(dir.path());
        for (k, v) in [("/p/a", "1"), ("/p/b", "2"), ("/p/c", "3")] {
            put(&*kv, k, v).await;
        }
        // Between the first list and its watch: a delete, an update, an
        // addition, then the history is compacted away.
        let k2 = kv.clone();
        let hook: Hook = Box::new(move || {
            Box::pin(async move {
                k2.delete("/p/a", None).await.unwrap();
                put(&*k2, "/p/b", "2b").await;
                put(&*k2, "/p/d", "4").await;
                let rev = k2.range("/").await.unwrap().revision;
                k2.compact(rev).await.unwrap();
            })
        });
        let src = AfterList {
            inner: KvSource::new(kv.clone(), "/p/"),
            hook: Mutex::new(Some(hook)),
        };
        let mut i = Informer::new(src, decode);
        let first: Vec<_> = [next(&mut i).await, next(&mut i).await, next(&mut i).await].into();
        assert_eq!(
            first,
            [added("/p/a", "1"), added("/p/b", "2"), added("/p/c", "3")]
        );
        assert_eq!(next(&mut i).await, Event::Synced);
        // The relist: the delete first, then the rest; /p/c not again.
        assert_eq!(next(&mut i).await, deleted("/p/a", "1"));
        assert_eq!(next(&mut i).await, updated("/p/b", "2", "2b"));
        assert_eq!(next(&mut i).await, added("/p/d", "4"));
        assert_eq!(next(&mut i).await, Event::Synced);
        let c = i.stats().counts();
        assert_eq!((c.lists, c.compacted), (2, 1));
        put(&*kv, "/p/e", "5").await;
        assert_eq!(next(&mut i).await, added("/p/e", "5"));
    });
}

#[test]
fn a_change_made_during_the_list_comes_through_the_watch() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let kv = Faulty::open(dir.path());
        put(&*kv, "/p/a", "1").await;
        let k2 = kv.clone();
        let hook: Hook = Box::new(move || {
            Box::pin(async move {
                put(&*k2, "/p/a", "1b").await;
                put(&*k2, "/p/z", "26").await;
            })
        });
        let src = AfterList {
            inner: KvSource::new(kv.clone(), "/p/"),
            hook: Mutex::new(Some(hook)),
        };
        let mut i = Informer::new(src, decode);
        assert_eq!(next(&mut i).await, added("/p/a", "1"));
        assert_eq!(next(&mut i).await, Event::Synced);
        assert_eq!(next(&mut i).await, updated("/p/a", "1", "1b"));
        assert_eq!(next(&mut i).await, added("/p/z", "26"));
        assert_eq!(i.stats().counts().lists, 1, "no relist was needed");
    });
}

#[test]
fn a_cut_stream_is_listed_again_and_nothing_is_handed_out_twice() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let kv = Faulty::open(dir.path());
        put(&*kv, "/p/a", "1").await;
        put(&*kv, "/p/b", "2").await;
        let mut i = informer(kv.clone());
        for _ in 0..3 {
            next(&mut i).await;
        }
        kv.cut();
        put(&*kv, "/p/c", "3").await;
        kv.delete("/p/b", None).await.unwrap();
        assert_eq!(
            next_n(&mut i, 3).await,
            sorted(&[added("/p/c", "3"), deleted("/p/b", "2"), Event::Synced])
        );
        // On the new watch: the next change, and nothing older again.
        kv.delete("/p/a", None).await.unwrap();
        assert_eq!(next(&mut i).await, deleted("/p/a", "1"));
        let c = i.stats().counts();
        assert_eq!((c.lists, c.broken), (2, 1));
    });
}

#[test]
fn a_silent_stream_is_replaced_after_the_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let kv = Faulty::open(dir.path());
        put(&*kv, "/p/a", "1").await;
        let mut i = informer(kv.clone()).idle_timeout(Duration::from_millis(300));
        for _ in 0..2 {
            next(&mut i).await;
        }
        // The open watch will never deliver this: only a new list can.
        kv.stall();
        put(&*kv, "/p/b", "2").await;
        assert_eq!(
            next_n(&mut i, 2).await,
            sorted(&[added("/p/b", "2"), Event::Synced])
        );
        let c = i.stats().counts();
        assert_eq!((c.lists, c.silent, c.broken), (2, 1, 0));
        put(&*kv, "/p/c", "3").await;
        assert_eq!(next(&mut i).await, added("/p/c", "3"));
    });
}

/// Log lines of a test, captured.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn lines_with(&self, what: &[&str]) -> usize {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter(|l| what.iter().all(|w| l.contains(w)))
            .count()
    }
}

#[test]
fn a_bad_record_is_skipped_counted_and_logged_once() {
    let dir = tempfile::tempdir().unwrap();
    let logs = Logs::default();
    let w = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || w.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    rt().block_on(async {
        let kv = Faulty::open(dir.path());
        put(&*kv, "/p/a", "1").await;
        put(&*kv, "/p/bad", "bad one").await;
        let mut i = informer(kv.clone());
        assert_eq!(next(&mut i).await, added("/p/a", "1"));
        assert_eq!(next(&mut i).await, Event::Synced);
        let c = i.stats().counts();
        assert_eq!((c.refused_total, c.refused), (1, 1));
        // Relisting sees the same bad record: not logged or counted again.
        kv.cut();
        assert_eq!(next(&mut i).await, Event::Synced);
        assert_eq!(i.stats().counts().refused_total, 1);
        assert_eq!(logs.lines_with(&["record refused", "/p/bad"]), 1);
        // Fixed: it appears; broken again: it goes (the store no longer
        // holds a value for it), counted and logged again.
        put(&*kv, "/p/bad", "fine").await;
        assert_eq!(next(&mut i).await, added("/p/bad", "fine"));
        assert_eq!(i.stats().counts().refused, 0);
        put(&*kv, "/p/bad", "bad again").await;
        assert_eq!(next(&mut i).await, deleted("/p/bad", "fine"));
        let c = i.stats().counts();
        assert_eq!((c.refused_total, c.refused), (2, 1));
        assert_eq!(logs.lines_with(&["record refused", "/p/bad"]), 2);
        // Deleting a refused key says nothing, and clears the gauge.
        kv.delete("/p/bad", None).await.unwrap();
        put(&*kv, "/p/c", "3").await;
        assert_eq!(next(&mut i).await, added("/p/c", "3"));
        assert_eq!(i.stats().counts().refused, 0);
        assert!(i.cache().get("/p/bad").is_none());
    });
}

#[test]
fn excluded_keys_are_never_decoded() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let kv = Faulty::open(dir.path());
        put(&*kv, "/p/blocks/x", "bad: never decoded").await;
        put(&*kv, "/p/a", "1").await;
        let src = KvSource::new(kv.clone(), "/p/").excluding("/p/blocks/");
        let mut i = Informer::new(src, decode);
        assert_eq!(next(&mut i).await, added("/p/a", "1"));
        assert_eq!(next(&mut i).await, Event::Synced);
        put(&*kv, "/p/blocks/y", "bad too").await;
        put(&*kv, "/p/b", "2").await;
        assert_eq!(next(&mut i).await, added("/p/b", "2"));
        assert_eq!(i.stats().counts().refused_total, 0);
    });
}

#[test]
fn a_store_that_fails_is_retried_until_it_answers() {
    // A source whose first two lists fail.
    struct Flaky {
        inner: KvSource,
        fails: Mutex<u32>,
    }
    #[async_trait::async_trait]
    impl Source for Flaky {
        type Raw = KeyValue;
        fn describe(&self) -> String {
            "flaky".into()
        }
        async fn list(&self) -> Result<Listing<KeyValue>, StoreError> {
            let failing = {
                let mut f = self.fails.lock().unwrap();
                let failing = *f > 0;
                *f = f.saturating_sub(1);
                failing
            };
            if failing {
                return Err(StoreError::Unavailable("down".into()));
            }
            self.inner.list().await
        }
        async fn watch(&self, v: &str) -> Result<RawStream<KeyValue>, StoreError> {
            self.inner.watch(v).await
        }
    }
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let kv = Faulty::open(dir.path());
        put(&*kv, "/p/a", "1").await;
        let src = Flaky {
            inner: KvSource::new(kv.clone(), "/p/"),
            fails: Mutex::new(2),
        };
        let mut i = Informer::new(src, decode);
        assert_eq!(next(&mut i).await, added("/p/a", "1"));
        assert_eq!(next(&mut i).await, Event::Synced);
        assert_eq!(i.stats().counts().lists, 1);
    });
}

#[test]
fn a_caller_that_keeps_dropping_next_still_gets_everything_once() {
    // A list slower than the caller's patience: each call is dropped long
    // before the list is done, as a select! with a fast tick would.
    struct Slow(KvSource);
    #[async_trait::async_trait]
    impl Source for Slow {
        type Raw = KeyValue;
        fn describe(&self) -> String {
            "slow".into()
        }
        async fn list(&self) -> Result<Listing<KeyValue>, StoreError> {
            tokio::time::sleep(Duration::from_millis(200)).await;
            self.0.list().await
        }
        async fn watch(&self, v: &str) -> Result<RawStream<KeyValue>, StoreError> {
            self.0.watch(v).await
        }
    }
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let kv = Faulty::open(dir.path());
        put(&*kv, "/p/a", "1").await;
        let mut i = Informer::new(Slow(KvSource::new(kv.clone(), "/p/")), decode);
        let mut got = Vec::new();
        let all = async {
            while got.len() < 3 {
                if let Ok(ev) = tokio::time::timeout(Duration::from_millis(10), i.next()).await {
                    got.push(ev);
                    if got.len() == 2 {
                        put(&*kv, "/p/b", "2").await;
                    }
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(20), all)
            .await
            .expect("every event within 20 s");
        assert_eq!(got, [added("/p/a", "1"), Event::Synced, added("/p/b", "2")]);
        assert_eq!(i.stats().counts().lists, 1);
    });
}

#[test]
fn items_not_ours_are_absent_without_a_word() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let kv = Faulty::open(dir.path());
        put(&*kv, "/p/a", "ours:1").await;
        put(&*kv, "/p/b", "plain").await;
        // "ours:" values are items, anything else is not one of ours.
        let mut i = Informer::filtered(KvSource::new(kv.clone(), "/p/"), |key, kv| {
            decode(key, kv).map(|v| v.strip_prefix("ours:").map(str::to_string))
        });
        assert_eq!(next(&mut i).await, added("/p/a", "1"));
        assert_eq!(next(&mut i).await, Event::Synced);
        // An item that stops being ours is handed out as deleted; one that
        // becomes ours as added; neither is a refusal.
        put(&*kv, "/p/a", "plain").await;
        put(&*kv, "/p/b", "ours:2").await;
        assert_eq!(next(&mut i).await, deleted("/p/a", "1"));
        assert_eq!(next(&mut i).await, added("/p/b", "2"));
        let c = i.stats().counts();
        assert_eq!((c.refused_total, c.refused), (0, 0));
    });
}
