//! The data plane: the one component of plexusd that writes to the
//! kernel. Producers (the overlay, the routed network's blocks, learned
//! routes, tunnel and nat-outgoing, network policy) hand it the entries
//! they want; it owns the merged desired state, lists what the kernel
//! holds of ours ([`claims`]), diffs by key ([`diff`]), applies the
//! difference in order with batched netlink ([`kernel`]), and repairs
//! drift: kernel notifications ([`plexus_netlink::monitor`]) make it list
//! the kind that changed again, so an entry of ours deleted or changed by
//! hand is back within moments, and a full resync runs periodically as
//! the safety net. Nothing it does not own is ever touched: a route is
//! created only where no route sits at its place (else it is reported
//! "not ours" and left alone), and only ours are replaced or deleted.
//!
//! ```text
//!  producers ── set(owner, entries) / update(owner, put, remove) ──►  DataPlane (handle)
//!                                                                        │ commands
//!  kernel notifications ─► relist kind ─┐                                ▼
//!  resync tick ──────────► relist all ──┴─►  reconciler task: desired ⊕ actual → diff → apply
//!                                                                        │
//!                                                   Kernel: NetlinkKernel | FakeKernel
//! ```
//!
//! A producer's call returns once its entries are in the kernel (or have
//! failed), with what failed: the routed network answers an allocation
//! only after its block's blackhole is programmed.

pub mod claims;
pub mod diff;
pub mod entry;
pub mod fake;
pub mod kernel;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use plexus_netlink::monitor::{Change, Monitor, Source};
use plexus_netlink::Netns;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

pub use claims::{Claims, OverlayRoutes};
pub use entry::{Chain, Entry, Hop, Key, Kind, Link, Owner, Route, Table, Vxlan};
pub use kernel::{Failure, Kernel, NetlinkKernel};

use diff::Op;

/// How a producer's entries fared.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Entries the kernel refused, with why (retried).
    pub failed: Vec<(Key, String)>,
    /// Entries whose place an object that is not ours holds: not written,
    /// and the object left alone.
    pub not_ours: Vec<Key>,
    /// Entries another producer wants too (the first one keeps them).
    pub contested: Vec<Key>,
}

impl Outcome {
    pub fn is_ok(&self) -> bool {
        self.failed.is_empty() && self.not_ours.is_empty() && self.contested.is_empty()
    }

    /// The keys that did not make it into the kernel.
    pub fn missing(&self) -> BTreeSet<&Key> {
        self.failed
            .iter()
            .map(|(k, _)| k)
            .chain(&self.not_ours)
            .chain(&self.contested)
            .collect()
    }
}

/// What the data plane reports (status, metrics).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Entries wanted, by owner label.
    pub desired: BTreeMap<String, usize>,
    /// Entries in the kernel as wanted.
    pub programmed: usize,
    /// Entries whose last change failed.
    pub failing: usize,
    /// Entries not written because something not ours holds their place.
    pub not_ours: usize,
    /// Entries changed or deleted by someone else and put back.
    pub repaired: u64,
    /// Changes applied, and failed, since start.
    pub applied: u64,
    pub errors: u64,
    /// Full listings of the kernel.
    pub resyncs: u64,
}

/// The reconciler's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// A full listing of the kernel this often, whatever notifications say.
    pub resync_every: Duration,
    /// How long a burst of notifications is gathered before the listing.
    pub settle: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            resync_every: Duration::from_secs(60),
            settle: Duration::from_millis(20),
        }
    }
}

enum Cmd {
    Set {
        owner: Owner,
        entries: Vec<Entry>,
        reply: Option<oneshot::Sender<Outcome>>,
    },
    Update {
        owner: Owner,
        put: Vec<Entry>,
        remove: Vec<Key>,
        reply: Option<oneshot::Sender<Outcome>>,
    },
    Claim(Option<OverlayRoutes>),
    ClaimTables(Vec<(std::path::PathBuf, String)>),
    Adopt {
        owner: Owner,
        reply: oneshot::Sender<Vec<Entry>>,
    },
}

/// The producers' handle on the data plane (cheap to clone).
#[derive(Clone)]
pub struct DataPlane {
    tx: mpsc::UnboundedSender<Cmd>,
    stats: Arc<Mutex<Stats>>,
}

impl std::fmt::Debug for DataPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataPlane").finish_non_exhaustive()
    }
}

impl DataPlane {
    /// Starts the reconciler on the current runtime over `kernel`, repairing
    /// drift as `changes` report it (none: only the periodic resync).
    pub fn start<K: Kernel + 'static>(
        kernel: K,
        changes: Option<mpsc::UnboundedReceiver<Vec<Change>>>,
        settings: Settings,
    ) -> DataPlane {
        let (tx, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(Mutex::new(Stats::default()));
        let r = Reconciler {
            kernel,
            settings,
            st: State::default(),
            stats: stats.clone(),
        };
        tokio::spawn(
            r.run(rx, changes)
                .instrument(tracing::info_span!("dataplane")),
        );
        DataPlane { tx, stats }
    }

    /// The data plane over netlink in `ns`, with kernel notifications.
    pub async fn open(ns: Netns, settings: Settings) -> anyhow::Result<DataPlane> {
        let changes = watch_kernel(&ns).await?;
        let kernel = NetlinkKernel::open(ns).await?;
        Ok(DataPlane::start(kernel, Some(changes), settings))
    }

    /// `owner` wants exactly `entries` now; returns once they are in the
    /// kernel (or failed).
    pub async fn set(&self, owner: Owner, entries: Vec<Entry>) -> Outcome {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Set {
            owner,
            entries,
            reply: Some(reply),
        });
        rx.await.unwrap_or_default()
    }

    /// `owner` wants `put` besides what it wanted, and no longer `remove`.
    pub async fn update(&self, owner: Owner, put: Vec<Entry>, remove: Vec<Key>) -> Outcome {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Update {
            owner,
            put,
            remove,
            reply: Some(reply),
        });
        rx.await.unwrap_or_default()
    }

    /// `owner` takes over what the kernel holds of its kind (a previous
    /// run's learned routes or blackholes, kept through a graceful
    /// restart) as wanted, until it says otherwise; returns them.
    pub async fn adopt(&self, owner: Owner) -> Vec<Entry> {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Adopt { owner, reply });
        rx.await.unwrap_or_default()
    }

    /// Tables in other namespaces that are ours though no one wants them
    /// now (a previous run's, for pods no policy isolates any more): listed
    /// and deleted unless a producer wants them.
    pub fn claim_tables(&self, tables: Vec<(std::path::PathBuf, String)>) {
        self.send(Cmd::ClaimTables(tables));
    }

    /// The overlay's rule for which routes are its own (flannel's routes
    /// carry no protocol of ours).
    pub fn claim_overlay_routes(&self, claim: Option<OverlayRoutes>) {
        self.send(Cmd::Claim(claim));
    }

    pub fn stats(&self) -> Stats {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn send(&self, c: Cmd) {
        // The reconciler only stops with the runtime.
        let _ = self.tx.send(c);
    }
}

/// Kernel notifications of `ns` (rtnetlink and nftables) on one channel.
pub async fn watch_kernel(ns: &Netns) -> anyhow::Result<mpsc::UnboundedReceiver<Vec<Change>>> {
    let (tx, rx) = mpsc::unbounded_channel();
    for source in [Source::Rtnetlink, Source::Nftables] {
        let mut m = match Monitor::open(ns, source).await {
            Ok(m) => m,
            // A kernel without nf_tables has nothing of ours to watch there.
            Err(e) if source == Source::Nftables && e.is_not_supported() => continue,
            Err(e) => return Err(e).context("subscribe to kernel notifications"),
        };
        let tx = tx.clone();
        tokio::spawn(
            async move {
                loop {
                    match m.next().await {
                        Ok(c) => {
                            if tx.send(c).is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "kernel notifications failed; resyncing");
                            if tx.send(vec![Change::Lost]).is_err() {
                                return;
                            }
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
            }
            .instrument(tracing::info_span!("kernel-notifications", ?source)),
        );
    }
    Ok(rx)
}

use anyhow::Context;

#[derive(Default)]
struct State {
    /// What each producer wants.
    owned: BTreeMap<Owner, BTreeMap<Key, Entry>>,
    /// Merged: each key with its entry and who wants it.
    desired: BTreeMap<Key, Entry>,
    holder: BTreeMap<Key, Owner>,
    /// What the kernel holds of ours, as last listed or written.
    actual: BTreeMap<Key, Entry>,
    claims: Claims,
    overlay: Option<OverlayRoutes>,
    /// Keys to look at in the next pass.
    dirty: BTreeSet<Key>,
    /// Kinds to list again before the next pass.
    relist: BTreeSet<Kind>,
    /// Keys whose last change failed, with why and when to try again.
    failed: BTreeMap<Key, (Failure, Instant)>,
    /// Keys wanted by two owners: (key, the one refused).
    contested: BTreeMap<Key, Owner>,
}

impl State {
    /// The devices someone wants now, by name.
    fn wanted_links(&self) -> BTreeSet<String> {
        self.desired
            .keys()
            .filter_map(|k| match k {
                Key::Link(n) => Some(n.clone()),
                _ => None,
            })
            .collect()
    }
}

/// A waiting producer: its reply and the keys its call named.
struct Waiter {
    reply: oneshot::Sender<Outcome>,
    keys: Vec<Key>,
}

struct Reconciler<K> {
    kernel: K,
    settings: Settings,
    st: State,
    stats: Arc<Mutex<Stats>>,
}

/// How long a failed change waits before it is tried again.
const RETRY: Duration = Duration::from_secs(1);

impl<K: Kernel> Reconciler<K> {
    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Cmd>,
        mut changes: Option<mpsc::UnboundedReceiver<Vec<Change>>>,
    ) {
        let mut resync = tokio::time::interval(self.settings.resync_every);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        resync.tick().await;
        self.st.relist.extend(Kind::ALL);
        loop {
            let mut waiters = Vec::new();
            let mut adopters = Vec::new();
            let retry_at = self.st.failed.values().map(|(_, t)| *t).min();
            let idle = self.st.relist.is_empty() && self.st.dirty.is_empty();
            if idle {
                tokio::select! {
                    c = rx.recv() => match c {
                        Some(c) => self.command(c, &mut waiters, &mut adopters),
                        None => return,
                    },
                    Some(c) = recv_changes(&mut changes) => {
                        self.kernel_changed(&c);
                        tokio::time::sleep(self.settings.settle).await;
                    }
                    _ = resync.tick() => {
                        self.st.relist.extend(Kind::ALL);
                    }
                    _ = sleep_until(retry_at) => {}
                }
            }
            // Everything that has arrived meanwhile goes into one pass.
            while let Ok(c) = rx.try_recv() {
                self.command(c, &mut waiters, &mut adopters);
            }
            if !adopters.is_empty() {
                self.adopt(adopters).await;
            }
            if let Some(ch) = changes.as_mut() {
                while let Ok(c) = ch.try_recv() {
                    self.kernel_changed(&c);
                }
            }
            let now = Instant::now();
            let due: Vec<Key> = self
                .st
                .failed
                .iter()
                .filter(|(_, (_, t))| *t <= now)
                .map(|(k, _)| k.clone())
                .collect();
            self.st.dirty.extend(due);
            self.pass().await;
            for w in waiters {
                let _ = w.reply.send(self.outcome(&w.keys));
            }
            self.publish();
        }
    }

    fn kernel_changed(&mut self, changes: &[Change]) {
        for c in changes {
            match c {
                Change::Link | Change::Lost => self.st.relist.extend(Kind::ALL),
                Change::Addr => {
                    self.st.relist.insert(Kind::Addr);
                }
                Change::Neigh => {
                    self.st.relist.extend([Kind::Neigh, Kind::Fdb]);
                }
                Change::Route => {
                    self.st.relist.insert(Kind::Route);
                }
                Change::Nft => {
                    self.st.relist.insert(Kind::Nft);
                }
            }
        }
    }

    /// Lists the kernel (claims now include each adopter's kind), then
    /// makes what it holds of each adopter's kind that adopter's.
    async fn adopt(&mut self, adopters: Vec<(Owner, oneshot::Sender<Vec<Entry>>)>) {
        self.st.relist.extend(Kind::ALL);
        self.pass_listing().await;
        for (owner, reply) in adopters {
            let found: Vec<Entry> = self
                .st
                .actual
                .values()
                .filter(|e| !self.st.desired.contains_key(&e.key()) && adoptable(&owner, e))
                .cloned()
                .collect();
            let keys: Vec<Key> = found.iter().map(Entry::key).collect();
            let mine = self.st.owned.entry(owner.clone()).or_default();
            for e in &found {
                mine.insert(e.key(), e.clone());
            }
            self.merge_keys(&keys);
            tracing::info!(owner = %owner.label(), entries = found.len(), "kernel entries of a previous run taken over");
            let _ = reply.send(found);
        }
    }

    fn command(
        &mut self,
        c: Cmd,
        waiters: &mut Vec<Waiter>,
        adopters: &mut Vec<(Owner, oneshot::Sender<Vec<Entry>>)>,
    ) {
        match c {
            Cmd::Set {
                owner,
                entries,
                reply,
            } => {
                let new: BTreeMap<Key, Entry> = entries.into_iter().map(|e| (e.key(), e)).collect();
                let old = self.st.owned.remove(&owner).unwrap_or_default();
                let mut keys: Vec<Key> = new.keys().cloned().collect();
                for (k, e) in &old {
                    if new.get(k) != Some(e) {
                        self.st.dirty.insert(k.clone());
                    }
                }
                for (k, e) in &new {
                    if old.get(k) != Some(e) {
                        self.st.dirty.insert(k.clone());
                    }
                }
                keys.extend(old.keys().filter(|k| !new.contains_key(*k)).cloned());
                self.retry_now(new.keys());
                self.st.owned.insert(owner.clone(), new);
                self.merge_keys(&keys);
                if let Some(reply) = reply {
                    waiters.push(Waiter { reply, keys });
                }
            }
            Cmd::Update {
                owner,
                put,
                remove,
                reply,
            } => {
                let mine = self.st.owned.entry(owner.clone()).or_default();
                let mut keys = Vec::with_capacity(put.len() + remove.len());
                for k in remove {
                    if mine.remove(&k).is_some() {
                        self.st.dirty.insert(k.clone());
                    }
                    keys.push(k);
                }
                for e in put {
                    let k = e.key();
                    if mine.get(&k) != Some(&e) {
                        self.st.dirty.insert(k.clone());
                        mine.insert(k.clone(), e);
                    }
                    keys.push(k);
                }
                let asked: Vec<Key> = keys.clone();
                self.retry_now(asked.iter());
                self.merge_keys(&keys);
                if let Some(reply) = reply {
                    waiters.push(Waiter { reply, keys });
                }
            }
            Cmd::Claim(c) => {
                if self.st.overlay != c {
                    self.st.overlay = c;
                    self.st.relist.insert(Kind::Route);
                }
            }
            Cmd::ClaimTables(t) => {
                let before = self.st.claims.tables.len();
                self.st.claims.tables.extend(t);
                if self.st.claims.tables.len() != before {
                    self.st.relist.insert(Kind::Nft);
                }
            }
            Cmd::Adopt { owner, reply } => {
                // The owner has spoken: its kind is claimed from now on.
                self.st.owned.entry(owner.clone()).or_default();
                adopters.push((owner, reply));
            }
        }
        self.refresh_claims();
    }

    /// A producer asking again for what failed: try it in this pass.
    fn retry_now<'a>(&mut self, keys: impl Iterator<Item = &'a Key>) {
        let now = Instant::now();
        for k in keys {
            if let Some((f, at)) = self.st.failed.get_mut(k) {
                if !f.not_ours {
                    *at = now;
                    self.st.dirty.insert(k.clone());
                }
            }
        }
    }

    /// The merged desired state for `keys`: the first owner (in owner
    /// order) that wants a key has it.
    fn merge_keys(&mut self, keys: &[Key]) {
        for k in keys {
            let mut wanted = self
                .st
                .owned
                .iter()
                .filter_map(|(o, m)| m.get(k).map(|e| (o, e)));
            match wanted.next() {
                Some((o, e)) => {
                    self.st.desired.insert(k.clone(), e.clone());
                    self.st.holder.insert(k.clone(), o.clone());
                    match wanted.next() {
                        Some((other, _)) => {
                            tracing::error!(key = %k, owner = %o.label(), other = %other.label(), "two producers want one kernel entry; the first keeps it");
                            self.st.contested.insert(k.clone(), other.clone());
                        }
                        None => {
                            self.st.contested.remove(k);
                        }
                    }
                }
                None => {
                    self.st.desired.remove(k);
                    self.st.holder.remove(k);
                    self.st.contested.remove(k);
                }
            }
        }
    }

    /// Devices and tables are ours while someone wants them: a device
    /// newly wanted is listed (with what is on it) before anything is
    /// written, so a previous run's entries on it are found and diffed.
    fn refresh_claims(&mut self) {
        let links = self.st.wanted_links();
        let tables: BTreeSet<(std::path::PathBuf, String)> = self
            .st
            .desired
            .keys()
            .filter_map(|k| match k {
                Key::NftTable { netns, table } => Some((netns.clone(), table.clone())),
                _ => None,
            })
            .collect();
        let spoke = |o: &Owner| self.st.owned.contains_key(o);
        // A table no one wants any more stays ours until it is deleted
        // (or listed without it), as devices do: else dropping it from
        // the claims would hide it from the diff that deletes it.
        let tables = tables.union(&self.st.claims.tables).cloned().collect();
        let claims = Claims {
            // A device no one wants any more stays ours until listed
            // without it (its entries are removed first).
            links: links.union(&self.st.claims.links).cloned().collect(),
            overlay: self.st.overlay.clone(),
            tables,
            blocks: spoke(&Owner::Blocks),
            learned: spoke(&Owner::Learned),
            chains: self
                .st
                .owned
                .keys()
                .flat_map(|o| o.chains().iter().map(|c| c.to_string()))
                .collect(),
        };
        let old = &self.st.claims;
        if !claims.links.is_subset(&old.links) {
            self.st.relist.extend(Kind::ALL);
        }
        // A table newly wanted needs no listing first: its batch recreates
        // it whatever is there (and one listing enters every pod's
        // namespace, too dear for each new pod); one no longer wanted is
        // still in `actual`, so the diff deletes it.
        if claims.chains != old.chains {
            self.st.relist.insert(Kind::Nft);
        }
        if (claims.blocks, claims.learned) != (old.blocks, old.learned) {
            self.st.relist.insert(Kind::Route);
        }
        self.st.claims = claims;
    }

    async fn pass(&mut self) {
        if !self.pass_listing().await {
            return;
        }
        self.pass_apply().await;
    }

    /// Lists the kinds to list again; false when listing failed (the
    /// pass stops: a diff against a stale view could delete wrongly).
    async fn pass_listing(&mut self) -> bool {
        if !self.st.relist.is_empty() {
            let kinds: Vec<Kind> = std::mem::take(&mut self.st.relist).into_iter().collect();
            match self.kernel.list(&kinds, &self.st.claims).await {
                Ok(listed) => {
                    let full = kinds.len() == Kind::ALL.len();
                    if full {
                        self.stats().resyncs += 1;
                    }
                    let before: BTreeSet<Key> = self
                        .st
                        .actual
                        .keys()
                        .filter(|k| kinds.contains(&k.kind()))
                        .cloned()
                        .collect();
                    for k in &before {
                        self.st.actual.remove(k);
                    }
                    let listed: BTreeMap<Key, Entry> =
                        listed.into_iter().map(|e| (e.key(), e)).collect();
                    // What we wrote and is now gone or different: repaired
                    // in this pass.
                    let repaired = self
                        .st
                        .desired
                        .iter()
                        .filter(|(k, want)| {
                            kinds.contains(&k.kind())
                                && before.contains(k)
                                && !listed.get(*k).is_some_and(|have| want.satisfied_by(have))
                        })
                        .count();
                    self.stats().repaired += repaired as u64;
                    if repaired > 0 {
                        tracing::info!(
                            repaired,
                            "kernel entries of ours changed by someone else: putting them back"
                        );
                    }
                    self.st.dirty.extend(before);
                    self.st.dirty.extend(
                        self.st
                            .desired
                            .keys()
                            .filter(|k| kinds.contains(&k.kind()))
                            .cloned(),
                    );
                    self.st.dirty.extend(listed.keys().cloned());
                    self.st.actual.extend(listed);
                    // Devices no one wants: no longer ours once listed.
                    let wanted = self.st.wanted_links();
                    if kinds.contains(&Kind::Link) {
                        self.st.claims.links = wanted;
                    }
                    if kinds.contains(&Kind::Nft) {
                        // Tables no one wants and none listed: no longer ours.
                        let actual = &self.st.actual;
                        self.st.claims.tables.retain(|(netns, table)| {
                            let k = Key::NftTable {
                                netns: netns.clone(),
                                table: table.clone(),
                            };
                            actual.contains_key(&k) || self.st.desired.contains_key(&k)
                        });
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "listing the kernel failed; trying again");
                    self.st.relist.extend(kinds);
                    self.stats().errors += 1;
                    tokio::time::sleep(RETRY).await;
                    return false;
                }
            }
        }
        true
    }

    async fn pass_apply(&mut self) {
        if self.st.dirty.is_empty() {
            return;
        }
        let dirty = std::mem::take(&mut self.st.dirty);
        // A contested key's entry is the first owner's: nothing to do
        // beyond that; a failed one waits for its retry time.
        let now = Instant::now();
        let keys: Vec<&Key> = dirty
            .iter()
            .filter(|k| self.st.failed.get(*k).is_none_or(|(_, t)| *t <= now))
            .collect();
        let ops = diff::plan(&self.st.desired, &self.st.actual, keys);
        if ops.is_empty() {
            for k in &dirty {
                if self
                    .st
                    .desired
                    .get(k)
                    .is_some_and(|w| self.st.actual.get(k).is_some_and(|a| w.satisfied_by(a)))
                {
                    self.st.failed.remove(k);
                }
            }
            return;
        }
        let results = self.kernel.apply(&ops).await;
        let mut errors = 0u64;
        for (op, r) in ops.iter().zip(results) {
            let k = op.key();
            match r {
                Ok(()) => {
                    self.st.failed.remove(&k);
                    match op {
                        Op::Put { entry, .. } => {
                            self.st.actual.insert(k, entry.clone());
                        }
                        Op::Del(_) => {
                            self.st.actual.remove(&k);
                        }
                    }
                }
                Err(f) => {
                    if f.not_ours {
                        if !self.st.failed.contains_key(&k) {
                            tracing::warn!(key = %k, "not written: an entry that is not ours holds its place");
                        }
                        // Tried again when the kernel changes there.
                        self.st
                            .failed
                            .insert(k, (f, Instant::now() + self.settings.resync_every));
                    } else {
                        errors += 1;
                        tracing::warn!(key = %k, error = %f.why, "kernel change failed; retrying");
                        self.st.failed.insert(k, (f, Instant::now() + RETRY));
                    }
                }
            }
        }
        let mut s = self.stats();
        s.applied += ops.len() as u64 - errors;
        s.errors += errors;
    }

    fn stats(&self) -> std::sync::MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn outcome(&self, keys: &[Key]) -> Outcome {
        let mut o = Outcome::default();
        for k in keys {
            if let Some((f, _)) = self.st.failed.get(k) {
                if f.not_ours {
                    o.not_ours.push(k.clone());
                } else {
                    o.failed.push((k.clone(), f.why.clone()));
                }
            }
            if self.st.contested.contains_key(k) {
                o.contested.push(k.clone());
            }
        }
        o
    }

    fn publish(&self) {
        let mut desired = BTreeMap::new();
        for (o, m) in &self.st.owned {
            if !m.is_empty() {
                desired.insert(o.label(), m.len());
            }
        }
        let programmed = self
            .st
            .desired
            .iter()
            .filter(|(k, w)| self.st.actual.get(*k).is_some_and(|a| w.satisfied_by(a)))
            .count();
        let not_ours = self.st.failed.values().filter(|(f, _)| f.not_ours).count();
        let failing = self.st.failed.len() - not_ours;
        let mut s = self.stats();
        s.desired = desired;
        s.programmed = programmed;
        s.failing = failing;
        s.not_ours = not_ours;
    }
}

/// What of the kernel's an owner takes over at start.
fn adoptable(owner: &Owner, e: &Entry) -> bool {
    match (owner, e) {
        (Owner::Blocks, Entry::Route(r)) => r.proto == Some(entry::PROTO_BLOCK),
        (Owner::Learned, Entry::Route(r)) => r.proto == Some(entry::PROTO_BGP),
        _ => false,
    }
}

async fn recv_changes(c: &mut Option<mpsc::UnboundedReceiver<Vec<Change>>>) -> Option<Vec<Change>> {
    match c {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
