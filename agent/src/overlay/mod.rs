//! The flannel-style overlay: start-up ([`start`]) and the control loop
//! ([`Overlay::run`]). Both only talk to the store through
//! [`LeaseRegistry`] and to the kernel through [`DataPlane`], so they are
//! tested against in-memory fakes of both.

pub mod check;
pub mod plan;
mod startup;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::StreamExt;
use plexus_store::{Event as LeaseChange, LeaseRegistry, StoreError};
use plexus_subnet::{Lease, NetworkConfig};

use crate::dataplane::{DataPlane, Entry, Key, Outcome, Owner};
use crate::status::{Event, Shared};
use crate::underlay::UnderlaySelect;
use plan::{lease_id, LeaseId, Local};

pub use startup::start;

/// The agent's settings for one overlay network (from the command line).
#[derive(Debug, Clone)]
pub struct Settings {
    pub node_name: String,
    pub run_dir: PathBuf,
    /// The store prefix, for logs and status.
    pub network: String,
    pub select: UnderlaySelect,
    pub ip_masq: bool,
    /// How often the lease is renewed (its TTL is 24 h).
    pub renew_every: Duration,
    /// How often the kernel is listed again and compared with the store
    /// (repairs entries removed by hand).
    pub resync_every: Duration,
    /// How long start-up keeps retrying an unreachable store.
    pub store_wait: Duration,
}

impl Settings {
    pub fn new(node_name: impl Into<String>, run_dir: impl Into<PathBuf>) -> Settings {
        Settings {
            node_name: node_name.into(),
            run_dir: run_dir.into(),
            network: "/coreos.com/network".into(),
            select: UnderlaySelect::default(),
            ip_masq: false,
            renew_every: Duration::from_secs(3600),
            resync_every: Duration::from_secs(60),
            store_wait: Duration::from_secs(5),
        }
    }
}

/// A running overlay: this node's lease, the remote leases, and the model
/// of what is in the kernel.
#[derive(Debug)]
pub struct Overlay {
    settings: Settings,
    lease: Lease,
    local: Local,
    /// Remote leases (and ours) by subnets.
    leases: BTreeMap<LeaseId, Lease>,
    /// The VXLAN devices and their addresses (always wanted).
    devices: Vec<Entry>,
    /// What the overlay last handed the data plane.
    desired: Vec<Entry>,
    /// Of those, what is not in the kernel (failed, or not ours there).
    missing: std::collections::BTreeSet<Key>,
    status: Shared,
    ready: bool,
    cfg: NetworkConfig,
    /// Remote leases refused by [`check::remote_lease`], with why (each
    /// logged once).
    skipped: BTreeMap<LeaseId, String>,
    /// Our lease vanished from the store with the rest (a wiped store):
    /// no remote entry is removed until then, so the others have time to
    /// write their leases back; pods keep talking meanwhile.
    hold_deletions_until: Option<Instant>,
    /// Lease conflicts in a row (another writer changed our lease): the
    /// re-assertions back off.
    conflicts: u32,
    /// The store lost the network config: waiting, data plane kept.
    waiting: bool,
}

/// What one round of reconciling did.
#[derive(Debug, Default)]
pub(super) struct Reconciled {
    pub changed: bool,
    pub outcome: Outcome,
}

/// After our lease was found gone with the others, how long remote
/// entries stay while the other nodes write their leases back.
const HOLD_AFTER_LOSS: Duration = Duration::from_secs(30);
/// How often a lost lease is tried again while the store cannot give it.
const LOST_RETRY: Duration = Duration::from_secs(2);

impl Overlay {
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// The entries the overlay wants in the kernel now.
    pub fn desired(&self) -> &[Entry] {
        &self.desired
    }

    /// Runs until the kernel or the lease fails for good (the store's
    /// failures are retried by the informer). Dropping the future (on
    /// SIGTERM) leaves the data plane as it is. The kernel is the data
    /// plane's: it repairs drift and resyncs by itself.
    pub async fn run(&mut self, reg: &dyn LeaseRegistry, dp: &DataPlane) -> anyhow::Result<()> {
        let mut renew = tokio::time::interval(self.settings.renew_every);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The lease was just acquired.
        renew.tick().await;
        // While our lease is missing (or the store lost the config) nothing
        // may arrive on the watch: try again on a clock.
        let mut lost = tokio::time::interval(LOST_RETRY);
        lost.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Everything the store has delivered at once is one round of
        // programming: 1000 leases written in one transaction, or a
        // relist, become one diff and one netlink batch.
        let leases = reg.follow();
        self.status.add_informer("leases", leases.stats());
        let listed = leases.cache();
        let mut chunks = leases.into_stream().ready_chunks(4096);
        loop {
            tokio::select! {
                chunk = chunks.next() => {
                    // The informer's stream never ends.
                    let Some(chunk) = chunk else { continue };
                    let started = Instant::now();
                    tracing::debug!(events = chunk.len(), "lease events");
                    let mut synced = false;
                    for ev in chunk {
                        synced |= matches!(ev, LeaseChange::Synced);
                        self.on_event(ev);
                    }
                    if synced {
                        // A (re)list is the truth, whatever start-up read.
                        self.replace_leases(listed.values().iter().map(|l| (**l).clone()).collect());
                    }
                    if self.reconcile(dp).await?.changed {
                        self.status.programmed_in(started.elapsed());
                    }
                    self.check_own_lease(reg).await?;
                    if synced {
                        self.set_ready();
                    }
                }
                _ = renew.tick() => self.renew(reg).await?,
                // Also while entries are missing from the kernel: asking
                // the data plane again retries them and shows whether
                // they are in now.
                _ = lost.tick(), if self.waiting
                    || !self.leases.contains_key(&self.local.own)
                    || self.hold_deletions_until.is_some()
                    || !self.missing.is_empty() => {
                    self.check_own_lease(reg).await?;
                    if self.hold_deletions_until.is_some_and(|t| Instant::now() >= t) {
                        self.hold_deletions_until = None;
                    }
                    if self.leases.contains_key(&self.local.own) {
                        self.reconcile(dp).await?;
                    }
                }
            }
        }
    }

    pub(super) fn replace_leases(&mut self, leases: Vec<Lease>) {
        self.leases = leases.into_iter().map(|l| (lease_id(&l), l)).collect();
    }

    fn on_event(&mut self, ev: LeaseChange<Lease>) {
        match ev {
            LeaseChange::Added(_, l) => {
                tracing::trace!(subnet = ?l.subnet, subnet6 = ?l.subnet6, public_ip = ?l.attrs.public_ip, "lease added");
                self.leases.insert(lease_id(&l), (*l).clone());
            }
            LeaseChange::Updated(_, old, l) => {
                tracing::trace!(subnet = ?l.subnet, subnet6 = ?l.subnet6, public_ip = ?l.attrs.public_ip, "lease changed");
                self.leases.remove(&lease_id(&old));
                self.leases.insert(lease_id(&l), (*l).clone());
            }
            LeaseChange::Deleted(_, l) => {
                tracing::trace!(subnet = ?l.subnet, subnet6 = ?l.subnet6, "lease removed");
                self.leases.remove(&lease_id(&l));
            }
            LeaseChange::Synced => tracing::debug!("leases listed"),
        }
    }

    /// Hands the data plane what the leases want now (the devices and
    /// every believed remote lease's entries); returns how it went and
    /// whether anything changed.
    pub(super) async fn reconcile(&mut self, dp: &DataPlane) -> anyhow::Result<Reconciled> {
        self.check_leases();
        let skipped = &self.skipped;
        let believed = self
            .leases
            .iter()
            .filter(|(id, _)| !skipped.contains_key(*id))
            .map(|(_, l)| l);
        let mut desired = self.devices.clone();
        desired.extend(plan::desired(&self.local, believed));
        let holding = !self.leases.contains_key(&self.local.own)
            || self
                .hold_deletions_until
                .is_some_and(|t| Instant::now() < t);
        if holding {
            // The store lost our lease too: keep every remote entry until
            // the other nodes have had time to write theirs back.
            let keys: std::collections::BTreeSet<Key> = desired.iter().map(Entry::key).collect();
            let kept: Vec<Entry> = self
                .desired
                .iter()
                .filter(|e| !keys.contains(&e.key()))
                .cloned()
                .collect();
            if !kept.is_empty() {
                tracing::info!(
                    kept = kept.len(),
                    "remote entries kept: the store lost our lease too, the other nodes are writing theirs back"
                );
            }
            desired.extend(kept);
        }
        if desired == self.desired && self.missing.is_empty() {
            self.publish();
            return Ok(Reconciled::default());
        }
        let before: std::collections::BTreeSet<Key> = self.desired.iter().map(Entry::key).collect();
        let after: std::collections::BTreeSet<Key> = desired.iter().map(Entry::key).collect();
        let (added, removed) = (
            after.difference(&before).count(),
            before.difference(&after).count(),
        );
        let outcome = dp.set(Owner::Overlay, desired.clone()).await;
        self.missing = outcome.missing().into_iter().cloned().collect();
        self.status
            .dataplane_errors(outcome.failed.len() + outcome.not_ours.len());
        for (k, why) in &outcome.failed {
            tracing::warn!(key = %k, error = %why, "kernel change failed; the data plane retries it");
        }
        self.desired = desired;
        tracing::info!(
            added,
            removed,
            missing = self.missing.len(),
            "programmed the overlay"
        );
        self.publish();
        Ok(Reconciled {
            changed: true,
            outcome,
        })
    }

    /// Which leases fail [`check::remote_lease`] (into `skipped`); each
    /// newly refused one is logged once and counted.
    fn check_leases(&mut self) {
        let mut refused = BTreeMap::new();
        for (id, l) in &self.leases {
            if let Err(why) = check::remote_lease(&self.cfg, &self.local, &self.lease, l) {
                if self.skipped.get(id) != Some(&why) {
                    tracing::warn!(key = %l.key(), public_ip = ?l.attrs.public_ip, reason = %why, "lease skipped: it fails a check");
                    self.status.count(Event::RecordSkipped, 1);
                }
                refused.insert(*id, why);
            }
        }
        self.skipped = refused;
    }

    fn publish(&self) {
        let remote = self
            .leases
            .iter()
            .filter(|(id, l)| {
                let e = plan::entries_for(&self.local, l);
                !self.skipped.contains_key(*id)
                    && !e.is_empty()
                    && e.iter().all(|e| !self.missing.contains(&e.key()))
            })
            .count();
        let (leases, entries) = (self.leases.len(), self.desired.len() - self.missing.len());
        self.status.update(|s| {
            s.leases = leases;
            s.remote_nodes_programmed = remote;
            s.entries = entries;
        });
    }

    fn set_ready(&mut self) {
        if self.ready {
            return;
        }
        self.ready = true;
        match self.status.network_ready(&self.settings.run_dir) {
            Ok(node_ready) => {
                tracing::info!(
                    node_ready,
                    "overlay ready: lease held, data plane programmed"
                )
            }
            Err(e) => tracing::warn!(error = %e, "cannot write the readiness file"),
        }
    }

    /// Our lease must stay ours. Gone from the store (expired, deleted by
    /// hand, the store wiped): acquire it again, holding every remote
    /// entry meanwhile. Changed by another writer (a lease conflict, as
    /// flannel #283/#621/#1289): logged, counted, and ours written back,
    /// with a growing pause if it keeps happening.
    async fn check_own_lease(&mut self, reg: &dyn LeaseRegistry) -> anyhow::Result<()> {
        let Some(now) = self.leases.get(&self.local.own) else {
            tracing::warn!(subnet = ?self.lease.subnet, "our lease is gone from the store; acquiring it again");
            self.hold_deletions_until = Some(Instant::now() + HOLD_AFTER_LOSS);
            return self.reacquire(reg).await;
        };
        if now.attrs == self.lease.attrs {
            self.conflicts = 0;
            return Ok(());
        }
        self.conflicts += 1;
        self.status.count(Event::LeaseConflict, 1);
        tracing::error!(
            subnet = ?self.lease.subnet,
            theirs = ?now.attrs.public_ip,
            ours = ?self.lease.attrs.public_ip,
            conflicts = self.conflicts,
            "another writer changed our lease (a lease conflict): writing ours back"
        );
        if self.conflicts > 1 {
            let pause =
                Duration::from_secs(1 << self.conflicts.min(8)).min(Duration::from_secs(300));
            tokio::time::sleep(pause).await;
        }
        match reg.reassert(&self.lease).await {
            Ok(()) => {
                let id = self.local.own;
                self.leases.insert(id, self.lease.clone());
                Ok(())
            }
            Err(e) => {
                self.status.store_error();
                tracing::warn!(error = %e, "cannot write our lease back; trying again at the next event");
                Ok(())
            }
        }
    }

    async fn reacquire(&mut self, reg: &dyn LeaseRegistry) -> anyhow::Result<()> {
        let req = startup::acquire_request(&self.settings, &self.lease);
        let got = match reg.acquire(&req).await {
            Ok(l) => l,
            Err(StoreError::Unavailable(why)) => {
                // The lease lives 24 h: try again at the next renewal.
                self.status.store_error();
                tracing::warn!(error = %why, "store unavailable; keeping our lease and retrying later");
                return Ok(());
            }
            Err(StoreError::NoConfig(what)) => {
                // Wiped: wait for the config to come back, keeping the
                // data plane as it is.
                if !self.waiting {
                    self.waiting = true;
                    self.status.count(Event::StoreLost, 1);
                    tracing::warn!(%what, "the store lost the network config: waiting for it, data plane kept");
                    self.status.set_waiting(
                        &self.settings.run_dir,
                        "overlay",
                        Some("the store holds no network config: waiting for it"),
                    );
                }
                return Ok(());
            }
            Err(e) => {
                self.status.store_error();
                return Err(e).context("acquire our lease again");
            }
        };
        if lease_id(&got) != self.local.own {
            bail!(
                "our lease {:?} was lost and the store gave {:?} instead; restart the agent and the pods of this node",
                self.local.own,
                lease_id(&got)
            );
        }
        if self.waiting {
            self.waiting = false;
            self.status.count(Event::Reregistered, 1);
            tracing::info!(subnet = ?got.subnet, "the network config is back: our lease is written back");
            self.status
                .set_waiting(&self.settings.run_dir, "overlay", None);
        }
        self.leases.insert(lease_id(&got), got.clone());
        self.lease = got;
        Ok(())
    }

    async fn renew(&mut self, reg: &dyn LeaseRegistry) -> anyhow::Result<()> {
        match reg.renew(&self.lease).await {
            Ok(()) => {
                tracing::debug!("lease renewed");
                Ok(())
            }
            Err(e) => {
                self.status.store_error();
                tracing::warn!(error = %e, "cannot renew our lease; acquiring it again");
                self.reacquire(reg).await
            }
        }
    }
}

#[cfg(test)]
mod tests;
