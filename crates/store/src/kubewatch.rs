//! One Kubernetes watch that outlives the server's watch calls: every
//! Kubernetes-backed source in this crate ([`crate::KubeSource`], which
//! every informer of Kubernetes objects uses, and [`crate::KubeKv`]'s
//! keys) follows its objects through it.
//!
//! - The first call is made at [`Watch::start`], so an unreachable API is
//!   an error there, not a silent empty stream.
//! - Label and field selectors (pods by `spec.nodeName`), and bookmarks:
//!   a bookmark moves the resume point and, like a call made again, is a
//!   sign of life ([`Tick::Progress`]) for a caller that watches for a
//!   silent stream ([`crate::informer`]).
//! - A call the server ends (`timeoutSeconds`), or that kube ends as
//!   resumable (an unexpected EOF, a read timeout), is made again from the
//!   last `resourceVersion` seen (objects and bookmarks), so nothing is
//!   missed. A call that ends at once without a word is an error instead,
//!   so a server that keeps hanging up is not called in a tight loop.
//! - Lost history (410 Gone, as a status or as an ERROR event) is
//!   `Err(Compacted)`, a broken stream `Err(Unavailable)`, any other ERROR
//!   event `Err(Other)`; after an error the watch ends (the caller lists
//!   again and starts a new one).

use std::fmt::Debug;
use std::time::{Duration, Instant};

use futures::stream::BoxStream;
use futures::StreamExt;
use kube::api::{Api, WatchEvent, WatchParams};
use kube::Resource;
use serde::de::DeserializeOwned;

use crate::StoreError;

/// A watch call's server-side length.
pub(crate) const WATCH_SECONDS: u32 = 290;
/// A call ending sooner than this with nothing delivered is a failure.
const SHORTEST_CALL: Duration = Duration::from_secs(1);

/// What a watch call may select by: label and field selectors.
#[derive(Debug, Clone, Default)]
pub(crate) struct Selectors {
    pub labels: Option<String>,
    pub fields: Option<String>,
}

/// One change, or a sign that the watch is alive and up to date.
#[derive(Debug)]
pub(crate) enum Tick<K> {
    Change(Change<K>),
    /// A bookmark arrived, or a call the server ended was made again.
    Progress,
}

/// One change to an object.
#[derive(Debug)]
pub(crate) enum Change<K> {
    /// Added or modified: the object now.
    Applied(K),
    /// Deleted: the object as it was last.
    Deleted(K),
}

type Events<K> = BoxStream<'static, Result<WatchEvent<K>, kube::Error>>;

pub(crate) struct Watch<K> {
    api: Api<K>,
    /// The resource, for messages (`nodes`, `plexuskeys`).
    what: String,
    /// Selectors, if only some objects are wanted.
    selectors: Selectors,
    rv: String,
    stream: Option<Events<K>>,
    /// When the current call was made, and whether it delivered anything.
    opened: Instant,
    delivered: bool,
    done: bool,
}

fn call_error(what: &str, e: kube::Error) -> StoreError {
    match e {
        kube::Error::Api(s) if s.code == 410 => StoreError::Compacted(0),
        kube::Error::Api(s) => StoreError::Other(format!(
            "Kubernetes API: watch {what}: {} ({})",
            s.message, s.code
        )),
        e => StoreError::Unavailable(format!("Kubernetes API: watch {what}: {e}")),
    }
}

impl<K> Watch<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    /// Watch changes after resourceVersion `after` (`""` or `"0"`: every
    /// object first, as Added) of the objects `selector` (a label
    /// selector) picks, or all.
    pub(crate) async fn start(
        api: Api<K>,
        what: &str,
        selector: Option<String>,
        after: &str,
    ) -> Result<Watch<K>, StoreError> {
        let selectors = Selectors {
            labels: selector,
            fields: None,
        };
        Watch::start_with(api, what, selectors, after).await
    }

    /// [`Watch::start`] with label and field selectors.
    pub(crate) async fn start_with(
        api: Api<K>,
        what: &str,
        selectors: Selectors,
        after: &str,
    ) -> Result<Watch<K>, StoreError> {
        let mut w = Watch {
            api,
            what: what.to_string(),
            selectors,
            rv: after.to_string(),
            stream: None,
            opened: Instant::now(),
            delivered: false,
            done: false,
        };
        w.open().await?;
        Ok(w)
    }

    async fn open(&mut self) -> Result<(), StoreError> {
        // Bookmarks are asked for (kube's default): they keep the resume
        // point fresh on a quiet resource and show the stream is alive.
        let mut wp = WatchParams::default().timeout(WATCH_SECONDS);
        if let Some(sel) = &self.selectors.labels {
            wp = wp.labels(sel);
        }
        if let Some(sel) = &self.selectors.fields {
            wp = wp.fields(sel);
        }
        // rbac(plexus-kube-store): watch nodes
        // rbac(plexus-kube-store): watch pods
        // rbac(plexus-kube-store): watch plexuskeys.plexus.io
        // rbac(plexus-policy): watch pods
        // rbac(plexus-policy): watch namespaces
        // rbac(plexus-policy): watch networkpolicies.networking.k8s.io
        // rbac(plexus-policy): watch multi-networkpolicies.k8s.cni.cncf.io
        // rbac(plexus-kube-store): watch services
        // rbac(plexus-kube-store): watch endpointslices.discovery.k8s.io
        let s = self
            .api
            .watch(&wp, &self.rv)
            .await
            .map_err(|e| call_error(&self.what, e))?;
        self.stream = Some(s.boxed());
        self.opened = Instant::now();
        self.delivered = false;
        Ok(())
    }

    fn seen(&mut self, obj: &K) {
        if let Some(rv) = &obj.meta().resource_version {
            self.rv = rv.clone();
        }
    }

    fn fail<T>(&mut self, e: StoreError) -> Option<Result<T, StoreError>> {
        self.done = true;
        Some(Err(e))
    }

    /// The next change or sign of life; `None` after an error was returned.
    pub(crate) async fn next_tick(&mut self) -> Option<Result<Tick<K>, StoreError>> {
        loop {
            if self.done {
                return None;
            }
            let Some(stream) = self.stream.as_mut() else {
                if let Err(e) = self.open().await {
                    return self.fail(e);
                }
                return Some(Ok(Tick::Progress));
            };
            let item = stream.next().await;
            if item.is_some() {
                self.delivered = true;
            }
            match item {
                None if !self.delivered && self.opened.elapsed() < SHORTEST_CALL => {
                    let e = StoreError::Unavailable(format!(
                        "Kubernetes API: {} watch call ended at once",
                        self.what
                    ));
                    return self.fail(e);
                }
                // The server ended this call: on from the last version seen.
                None => self.stream = None,
                Some(Err(e)) => {
                    let what = &self.what;
                    let e =
                        StoreError::Unavailable(format!("Kubernetes API: {what} watch broke: {e}"));
                    return self.fail(e);
                }
                Some(Ok(WatchEvent::Added(o))) | Some(Ok(WatchEvent::Modified(o))) => {
                    self.seen(&o);
                    return Some(Ok(Tick::Change(Change::Applied(o))));
                }
                Some(Ok(WatchEvent::Deleted(o))) => {
                    self.seen(&o);
                    return Some(Ok(Tick::Change(Change::Deleted(o))));
                }
                Some(Ok(WatchEvent::Bookmark(b))) => {
                    self.rv = b.metadata.resource_version;
                    return Some(Ok(Tick::Progress));
                }
                Some(Ok(WatchEvent::Error(s))) if s.code == 410 => {
                    tracing::info!(resource = %self.what, "watch expired (410)");
                    return self.fail(StoreError::Compacted(0));
                }
                Some(Ok(WatchEvent::Error(s))) => {
                    let e = StoreError::Other(format!(
                        "Kubernetes API: {} watch: {} ({})",
                        self.what, s.message, s.code
                    ));
                    return self.fail(e);
                }
            }
        }
    }

    /// Changes and signs of life as a stream, each mapped by `f` (`None`:
    /// skipped).
    pub(crate) fn into_ticks<T: Send + 'static>(
        self,
        f: impl Fn(Tick<K>) -> Option<T> + Send + 'static,
    ) -> BoxStream<'static, Result<T, StoreError>> {
        futures::stream::unfold((self, f), |(mut w, f)| async move {
            loop {
                match w.next_tick().await? {
                    Ok(t) => {
                        if let Some(t) = f(t) {
                            return Some((Ok(t), (w, f)));
                        }
                    }
                    Err(e) => return Some((Err(e), (w, f))),
                }
            }
        })
        .boxed()
    }
}
