//! Helpers for the informer tests (tests/tests/informer_*.rs): a source
//! that makes a change right after a list, and bounded waits for events.

use std::fmt::Debug;
use std::sync::Mutex;
use std::time::Duration;

use futures::future::BoxFuture;
use plexus_store::informer::{Event, Informer, Listing, RawStream, Source};
use plexus_store::StoreError;

pub type Hook = Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>;

/// A source whose first list runs a hook after it read the store and
/// before the informer sees the listing or watches: the hook's changes
/// happen "during the list".
pub struct AfterList<S> {
    inner: S,
    hook: Mutex<Option<Hook>>,
}

impl<S> AfterList<S> {
    pub fn new(inner: S, hook: Hook) -> AfterList<S> {
        AfterList {
            inner,
            hook: Mutex::new(Some(hook)),
        }
    }
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

/// The informer's next event; fails the test after a generous bound
/// instead of hanging it (a guard, not a speed check).
pub async fn next<T: PartialEq + Send + Sync + 'static>(i: &mut Informer<T>) -> Event<T> {
    tokio::time::timeout(Duration::from_secs(60), i.next())
        .await
        .expect("an informer event within 60 s")
}

/// The next `n` events as their debug forms, sorted: for a change that
/// races a relist (it may come before or after the Synced).
pub async fn next_sorted<T: PartialEq + Send + Sync + Debug + 'static>(
    i: &mut Informer<T>,
    n: usize,
) -> Vec<String> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(format!("{:?}", next(i).await));
    }
    v.sort();
    v
}

/// Debug forms, sorted, to compare with [`next_sorted`].
pub fn sorted<T: Debug>(evs: &[Event<T>]) -> Vec<String> {
    let mut v: Vec<String> = evs.iter().map(|e| format!("{e:?}")).collect();
    v.sort();
    v
}
