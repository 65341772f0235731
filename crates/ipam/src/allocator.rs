//! One node's block allocator (see the crate docs for the design).

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use ipnet::IpNet;
use plexus_store::Revision;
use tokio::sync::Mutex;

use crate::cluster::Cluster;
use crate::records::{Block, Handle};
use crate::stored::{self, encode};
use crate::{arith, IpamError};

/// How many write conflicts one allocation or release rides out before
/// giving up (each conflict re-reads only the block concerned).
const ATTEMPTS: usize = 64;

/// A block this node holds, as last written (or read) at `mod_revision`.
#[derive(Debug, Clone)]
struct Held {
    block: Block,
    mod_revision: Revision,
}

/// The node's blocks, by CIDR.
#[derive(Debug, Default)]
struct State {
    blocks: BTreeMap<IpNet, Held>,
    /// Blocks whose last write failed without an answer (the store went
    /// away mid-request): it may still land. Each is read again before it
    /// is used, so a release after such an allocation frees what did land.
    uncertain: std::collections::BTreeSet<IpNet>,
}

impl State {
    /// Where `handle` holds an address in `pool`.
    fn find(&self, handle: &Handle, pool: &str) -> Option<(IpNet, u32)> {
        self.blocks.iter().find_map(|(cidr, h)| {
            if h.block.pool != pool {
                return None;
            }
            h.block
                .allocations
                .iter()
                .find(|(_, hd)| *hd == handle)
                .map(|(o, _)| (*cidr, *o))
        })
    }

    /// A held block of `pool` with a free address, and that address's ordinal.
    fn free_slot(&self, pool: &str) -> Option<(IpNet, u32)> {
        self.blocks
            .iter()
            .filter(|(_, h)| h.block.pool == pool)
            .find_map(|(cidr, h)| h.block.first_free().map(|o| (*cidr, o)))
    }
}

/// Counters since the allocator was loaded (for the agent's metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Blocks claimed.
    pub claims: u64,
    /// Claims lost to another node creating the same block first.
    pub claim_races: u64,
    /// Block writes refused because the block changed in the store.
    pub write_conflicts: u64,
}

#[derive(Debug, Default)]
struct Counters {
    claims: AtomicU64,
    claim_races: AtomicU64,
    write_conflicts: AtomicU64,
}

/// A node's own record of the blocks it holds, beside the store: after
/// the store lost them (etcd wiped and re-seeded) the node puts them back
/// with every allocation, so no address a running pod holds is handed out
/// again. The agent keeps it in its run directory (gone with a reboot,
/// like the pods).
pub trait Journal: Send + Sync {
    /// The blocks as last saved (empty when there is no record).
    fn load(&self) -> Vec<Block>;
    /// Called after every change of the held blocks.
    fn save(&self, blocks: &[Block]);
}

/// What [`Allocator::reassert`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reasserted {
    /// Blocks missing from the store, written back with their allocations.
    pub restored: usize,
    /// Blocks missing from the store whose key another node holds now:
    /// dropped here, their pods' addresses at risk (logged as an error).
    pub lost: usize,
}

/// A node's allocator: addresses from the blocks it holds, blocks claimed
/// from the pools when they are full.
pub struct Allocator {
    cluster: Cluster,
    node: String,
    state: Mutex<State>,
    counters: Counters,
    journal: Option<std::sync::Arc<dyn Journal>>,
    /// Prefixes other nodes announce (their blocks, as BGP carries them):
    /// never claimed here, even when the store has no key for them (a
    /// store that lost its records while those nodes still route them).
    excluded: std::sync::Mutex<Vec<IpNet>>,
    /// The highest store revision this allocator has seen: a store showing
    /// a lower one was reset.
    seen: std::sync::atomic::AtomicI64,
}

impl std::fmt::Debug for Allocator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Allocator")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl Allocator {
    /// The allocator of `node`, with every block the store says it holds
    /// (after a restart: the addresses given before, with their handles).
    pub async fn load(cluster: Cluster, node: &str) -> Result<Allocator, IpamError> {
        Allocator::load_with(cluster, node, None).await
    }

    /// [`Allocator::load`], then the blocks `journal` records that the
    /// store lacks are written back ([`Allocator::reassert`]) before the
    /// allocator serves anything; every later change is saved to it.
    pub async fn load_with(
        cluster: Cluster,
        node: &str,
        journal: Option<std::sync::Arc<dyn Journal>>,
    ) -> Result<Allocator, IpamError> {
        crate::validate::name("node", node)?;
        let listing = cluster.block_listing().await?;
        let all = listing.blocks;
        let a = Allocator {
            cluster,
            node: node.to_string(),
            state: Mutex::new(State::default()),
            counters: Counters::default(),
            journal,
            excluded: Default::default(),
            seen: std::sync::atomic::AtomicI64::new(listing.revision),
        };
        {
            let mut st = a.state.lock().await;
            let recorded = a.journal.as_ref().map(|j| j.load()).unwrap_or_default();
            for b in recorded.into_iter().filter(|b| b.node == a.node) {
                st.blocks.insert(
                    b.cidr,
                    Held {
                        block: b,
                        mod_revision: 0,
                    },
                );
            }
            a.reassert_held(&mut st, &all).await?;
        }
        Ok(a)
    }

    /// Prefixes announced by other nodes, never to be claimed here.
    pub fn set_excluded(&self, nets: Vec<IpNet>) {
        *self.excluded.lock().unwrap_or_else(|p| p.into_inner()) = nets;
    }

    /// After the store lost records (a wiped etcd, re-seeded): every block
    /// this node holds that the store lacks is created again with its
    /// allocations; blocks the store has are taken as it has them.
    pub async fn reassert(&self) -> Result<Reasserted, IpamError> {
        let mut st = self.state.lock().await;
        let listing = self.cluster.block_listing().await?;
        // The store's history starts again here.
        self.seen.store(listing.revision, Ordering::SeqCst);
        self.reassert_held(&mut st, &listing.blocks).await
    }

    /// Fails with [`IpamError::Reset`] when `revision` is below one seen
    /// before; else remembers it.
    fn check_revision(&self, revision: i64) -> Result<(), IpamError> {
        let seen = self.seen.fetch_max(revision, Ordering::SeqCst);
        if revision < seen {
            return Err(IpamError::Reset(format!(
                "revision {revision} after {seen}"
            )));
        }
        Ok(())
    }

    async fn reassert_held(
        &self,
        st: &mut State,
        all: &[crate::stored::Versioned<Block>],
    ) -> Result<Reasserted, IpamError> {
        let mut done = Reasserted::default();
        let missing: Vec<Block> = st
            .blocks
            .values()
            .filter(|h| !all.iter().any(|b| b.value.cidr == h.block.cidr))
            .map(|h| h.block.clone())
            .collect();
        for b in missing {
            let key = self.cluster.layout().block(&b.cidr);
            match self.cluster.kv().create(&key, &encode(&b), None).await? {
                Some(rev) => {
                    tracing::warn!(node = %self.node, block = %b.cidr, addresses = b.allocations.len(),
                        "block missing from the store: written back with its allocations");
                    done.restored += 1;
                    st.blocks.insert(
                        b.cidr,
                        Held {
                            block: b,
                            mod_revision: rev,
                        },
                    );
                }
                None => {
                    // Someone created the key between our listing and now:
                    // the next reconcile shows whose it is.
                    tracing::error!(node = %self.node, block = %b.cidr, addresses = b.allocations.len(),
                        "block missing from the store was claimed by someone else before we could write it back");
                    done.lost += 1;
                }
            }
        }
        let all = if done.restored + done.lost > 0 {
            self.cluster.blocks().await?
        } else {
            all.to_vec()
        };
        self.reconcile(st, &all);
        Ok(done)
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn stats(&self) -> Stats {
        let c = &self.counters;
        Stats {
            claims: c.claims.load(Ordering::Relaxed),
            claim_races: c.claim_races.load(Ordering::Relaxed),
            write_conflicts: c.write_conflicts.load(Ordering::Relaxed),
        }
    }

    /// The blocks this node holds now (blackhole routes and announcements).
    pub async fn blocks(&self) -> Vec<IpNet> {
        self.state.lock().await.blocks.keys().copied().collect()
    }

    /// Every address given, with its holder and pool.
    pub async fn allocations(&self) -> Vec<(IpAddr, Handle, String)> {
        let st = self.state.lock().await;
        st.blocks
            .values()
            .flat_map(|h| {
                h.block
                    .allocations
                    .iter()
                    .map(|(o, hd)| (h.block.address(*o), hd.clone(), h.block.pool.clone()))
            })
            .collect()
    }

    /// An address for `handle` from `pool`; the one it already holds there
    /// when asked again. While a held block of the pool has room this reads
    /// nothing and writes that block once (compare-and-swap on the
    /// revision this node last wrote it at).
    pub async fn allocate(&self, handle: &Handle, pool: &str) -> Result<IpAddr, IpamError> {
        let mut st = self.state.lock().await;
        self.settle(&mut st).await?;
        for _ in 0..ATTEMPTS {
            if let Some((cidr, o)) = st.find(handle, pool) {
                return Ok(st.blocks[&cidr].block.address(o));
            }
            let Some((cidr, ordinal)) = st.free_slot(pool) else {
                self.claim(&mut st, pool).await?;
                continue;
            };
            let held = &st.blocks[&cidr];
            let mut next = held.block.clone();
            next.allocations.insert(ordinal, handle.clone());
            if self.write(&mut st, next).await? {
                let addr = st.blocks[&cidr].block.address(ordinal);
                tracing::debug!(node = %self.node, %handle, %addr, block = %cidr, "allocated");
                return Ok(addr);
            }
        }
        Err(IpamError::Conflict(format!(
            "allocation for {handle} in pool {pool} kept conflicting with other writers"
        )))
    }

    /// The address `addr` for `handle` (a requested address: CNI `ips`),
    /// from the block of `pool` holding it: one this node holds, or that
    /// block claimed now when no node has it. Refused: an address outside
    /// the pool (`Invalid`), one another attachment holds or in another
    /// node's block (`InUse`), a second address for a handle that holds one
    /// in the pool already (`InUse`). Asked again by the same handle, the
    /// same address.
    pub async fn allocate_address(
        &self,
        handle: &Handle,
        pool: &str,
        addr: IpAddr,
    ) -> Result<IpAddr, IpamError> {
        let mut st = self.state.lock().await;
        self.settle(&mut st).await?;
        for _ in 0..ATTEMPTS {
            let held = st
                .blocks
                .iter()
                .find(|(c, h)| h.block.pool == pool && c.contains(&addr))
                .map(|(c, _)| *c);
            let Some(cidr) = held else {
                self.claim_block_of(&mut st, pool, addr).await?;
                continue;
            };
            let ordinal = arith::distance(cidr.network(), addr)
                .and_then(|d| u32::try_from(d).ok())
                .expect("an address inside its block");
            let block = &st.blocks[&cidr].block;
            match block.allocations.get(&ordinal) {
                Some(hd) if hd == handle => return Ok(addr),
                Some(hd) => return Err(IpamError::InUse(format!("{addr} is held by {hd}"))),
                None => {}
            }
            if let Some((c, o)) = st.find(handle, pool) {
                let other = st.blocks[&c].block.address(o);
                return Err(IpamError::InUse(format!(
                    "{handle} already holds {other} in pool {pool}, not {addr}"
                )));
            }
            let mut next = block.clone();
            next.allocations.insert(ordinal, handle.clone());
            if self.write(&mut st, next).await? {
                tracing::debug!(node = %self.node, %handle, %addr, block = %cidr, "allocated the requested address");
                return Ok(addr);
            }
        }
        Err(IpamError::Conflict(format!(
            "allocation of {addr} for {handle} kept conflicting with other writers"
        )))
    }

    /// Free every address `handle` holds (in every pool). Freeing nothing
    /// is not an error: DEL is idempotent.
    pub async fn release(&self, handle: &Handle) -> Result<usize, IpamError> {
        let mut st = self.state.lock().await;
        self.settle(&mut st).await?;
        self.release_where(&mut st, |h| h == handle).await
    }

    /// CNI GC: free the addresses of `network`'s attachments not in `valid`.
    pub async fn gc(&self, network: &str, valid: &HashSet<Handle>) -> Result<usize, IpamError> {
        let mut st = self.state.lock().await;
        self.settle(&mut st).await?;
        self.release_where(&mut st, |h| h.network == network && !valid.contains(h))
            .await
    }

    /// Re-read the node's blocks from the store (after `node remove`, a pool
    /// removal, or to pick up a block claimed by a previous run).
    /// The agent calls this when a watch on the blocks' prefix reports a
    /// change it did not make, so that [`Allocator::blocks`] stops naming a
    /// block taken away; without it a stale block is only noticed at the
    /// next write to it or the next claim.
    pub async fn resync(&self) -> Result<(), IpamError> {
        let mut st = self.state.lock().await;
        let listing = self.cluster.block_listing().await?;
        self.check_revision(listing.revision)?;
        self.reconcile(&mut st, &listing.blocks);
        Ok(())
    }

    async fn release_where(
        &self,
        st: &mut State,
        doomed: impl Fn(&Handle) -> bool,
    ) -> Result<usize, IpamError> {
        let mut freed = 0;
        let cidrs: Vec<IpNet> = st.blocks.keys().copied().collect();
        for cidr in cidrs {
            for _ in 0..ATTEMPTS {
                let Some(held) = st.blocks.get(&cidr) else {
                    break;
                };
                let mut next = held.block.clone();
                next.allocations.retain(|_, h| !doomed(h));
                let n = held.block.allocations.len() - next.allocations.len();
                if n == 0 {
                    break;
                }
                if self.write(st, next).await? {
                    freed += n;
                    break;
                }
            }
        }
        Ok(freed)
    }

    /// Write `next` over the held block with its CIDR, only if the store
    /// still has the revision we hold. `Ok(false)`: someone else changed or
    /// removed the block; our copy was refreshed from the store (or
    /// dropped, when the block is no longer ours), and the caller retries.
    /// Reads again every block whose last write may or may not have
    /// landed, taking the store's copy (still ours) or dropping it (not).
    /// While the store cannot be reached this fails, and so does the
    /// caller: its answer would rest on a guess.
    async fn settle(&self, st: &mut State) -> Result<(), IpamError> {
        while let Some(cidr) = st.uncertain.first().copied() {
            let key = self.cluster.layout().block(&cidr);
            match stored::get::<Block>(&**self.cluster.kv(), &key).await? {
                Some(cur) if cur.value.node == self.node => {
                    tracing::info!(node = %self.node, block = %cidr, "block read again after a write with no answer");
                    st.blocks.insert(
                        cidr,
                        Held {
                            block: cur.value,
                            mod_revision: cur.mod_revision,
                        },
                    );
                }
                _ => {
                    st.blocks.remove(&cidr);
                }
            }
            st.uncertain.remove(&cidr);
            self.persist(st);
        }
        Ok(())
    }

    async fn write(&self, st: &mut State, next: Block) -> Result<bool, IpamError> {
        let cidr = next.cidr;
        let key = self.cluster.layout().block(&cidr);
        let rev = st.blocks[&cidr].mod_revision;
        // Until the store answers, what it holds is unknown: the write may
        // be applied and its answer lost (a frozen or lost store), or the
        // caller may give up on this future before it ends (the control
        // socket's deadline). Either way the block is read again first.
        st.uncertain.insert(cidr);
        let written = self
            .cluster
            .kv()
            .put(&key, &encode(&next), None, Some(rev))
            .await?;
        st.uncertain.remove(&cidr);
        if let Some(new_rev) = written {
            self.seen.fetch_max(new_rev, Ordering::SeqCst);
            st.blocks.insert(
                cidr,
                Held {
                    block: next,
                    mod_revision: new_rev,
                },
            );
            self.persist(st);
            return Ok(true);
        }
        self.counters
            .write_conflicts
            .fetch_add(1, Ordering::Relaxed);
        let cur = stored::get::<Block>(&**self.cluster.kv(), &key).await?;
        if cur.is_none() {
            // Gone: removed by an operator, or the whole store was reset.
            // A reset keeps the block (it is written back first).
            let now = self.cluster.kv().range(&key).await?.revision;
            self.check_revision(now)?;
        }
        match cur {
            Some(cur) if cur.value.node == self.node => {
                tracing::info!(node = %self.node, block = %cidr, "block changed in the store; using its copy");
                st.blocks.insert(
                    cidr,
                    Held {
                        block: cur.value,
                        mod_revision: cur.mod_revision,
                    },
                );
            }
            _ => {
                tracing::warn!(node = %self.node, block = %cidr, "block no longer ours (node or pool removed)");
                st.blocks.remove(&cidr);
            }
        }
        self.persist(st);
        Ok(false)
    }

    /// The held blocks into the journal, if there is one.
    fn persist(&self, st: &State) {
        if let Some(j) = &self.journal {
            let blocks: Vec<Block> = st.blocks.values().map(|h| h.block.clone()).collect();
            j.save(&blocks);
        }
    }

    /// Bring the held blocks in line with a listing of the store: blocks
    /// deleted or now someone else's are dropped (no longer announced),
    /// ours are taken as the store has them.
    fn reconcile(&self, st: &mut State, all: &[crate::stored::Versioned<Block>]) {
        let ours: BTreeMap<IpNet, &crate::stored::Versioned<Block>> = all
            .iter()
            .filter(|b| b.value.node == self.node)
            .map(|b| (b.value.cidr, b))
            .collect();
        st.blocks.retain(|cidr, _| {
            let keep = ours.contains_key(cidr);
            if !keep {
                tracing::warn!(node = %self.node, block = %cidr, "block no longer ours (node or pool removed)");
            }
            keep
        });
        for (cidr, b) in ours {
            st.blocks.insert(
                cidr,
                Held {
                    block: b.value.clone(),
                    mod_revision: b.mod_revision,
                },
            );
        }
        self.persist(st);
    }

    /// The enabled pool `pool_name`.
    async fn usable_pool(&self, pool_name: &str) -> Result<crate::Pool, IpamError> {
        // Through the checked listing: a pool refused there (damaged,
        // overlapping, covering the underlay) gives no block.
        let pool = self
            .cluster
            .pools()
            .await?
            .into_iter()
            .find(|p| p.name == pool_name)
            .ok_or_else(|| IpamError::NotFound(format!("no usable pool named {pool_name}")))?;
        if pool.disabled {
            return Err(IpamError::Invalid(format!("pool {pool_name} is disabled")));
        }
        Ok(pool)
    }

    /// Claim the block of `pool_name` holding `addr` (for a requested
    /// address). `Ok` also when the store shows it is ours already.
    async fn claim_block_of(
        &self,
        st: &mut State,
        pool_name: &str,
        addr: IpAddr,
    ) -> Result<(), IpamError> {
        let pool = self.usable_pool(pool_name).await?;
        if !pool.cidr.contains(&addr) {
            return Err(IpamError::Invalid(format!(
                "{addr} is not in pool {pool_name} ({})",
                pool.cidr
            )));
        }
        let cidr = IpNet::new(addr, pool.block_size)
            .map_err(|e| IpamError::Invalid(format!("block of {addr}: {e}")))?
            .trunc();
        for _ in 0..ATTEMPTS {
            let listing = self.cluster.block_listing().await?;
            self.check_revision(listing.revision)?;
            self.reconcile(st, &listing.blocks);
            if let Some(b) = listing.blocks.iter().find(|b| b.value.cidr == cidr) {
                if b.value.node == self.node {
                    return Ok(());
                }
                return Err(IpamError::InUse(format!(
                    "{addr} is in block {cidr}, held by node {}",
                    b.value.node
                )));
            }
            if listing.occupied.contains(&cidr) {
                return Err(IpamError::InUse(format!(
                    "{addr} is in block {cidr}, whose store record is damaged"
                )));
            }
            let excluded = self
                .excluded
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if let Some(x) = excluded.iter().find(|x| arith::overlaps(x, &cidr)) {
                return Err(IpamError::InUse(format!(
                    "{addr} is in {x}, which another node announces"
                )));
            }
            if self.create_block(st, pool_name, cidr).await? {
                return Ok(());
            }
        }
        Err(IpamError::Conflict(format!(
            "could not claim block {cidr}: other writers kept changing the blocks"
        )))
    }

    /// Claim a free block of `pool`: the lowest one no key exists for,
    /// created if absent. A node that loses the race looks next from a
    /// place of its own (a hash of its name), as Calico starts from a
    /// random block: nodes starting together (a cluster coming up) would
    /// otherwise all race for each next lowest block, one winner a round.
    async fn claim(&self, st: &mut State, pool_name: &str) -> Result<(), IpamError> {
        let pool = self.usable_pool(pool_name).await?;
        // Checked when the pool was read; a bound here too, so no record
        // can make this arithmetic wrap.
        let bits = pool
            .block_size
            .checked_sub(pool.cidr.prefix_len())
            .map(u32::from)
            .ok_or_else(|| {
                IpamError::Invalid(format!(
                    "pool {pool_name}: block size /{} is larger than the pool {}",
                    pool.block_size, pool.cidr
                ))
            })?;
        for attempt in 0..ATTEMPTS {
            let start = if attempt == 0 {
                0
            } else {
                arith::spread(&self.node)
            };
            let listing = self.cluster.block_listing().await?;
            self.check_revision(listing.revision)?;
            self.reconcile(st, &listing.blocks);
            let taken: HashSet<IpNet> = listing.occupied;
            let excluded = self
                .excluded
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            // At most |taken| + |excluded| + 1 candidates are looked at:
            // the first free one is tried.
            let candidate = arith::block_order(bits, start)
                .map_while(|i| arith::nth_block(&pool.cidr, pool.block_size, i))
                .find(|c| !taken.contains(c) && !excluded.iter().any(|x| arith::overlaps(x, c)));
            let Some(cidr) = candidate else {
                return Err(IpamError::Exhausted(format!(
                    "pool {pool_name} ({}) has no free block left",
                    pool.cidr
                )));
            };
            if self.create_block(st, pool_name, cidr).await? {
                return Ok(());
            }
            tracing::debug!(node = %self.node, block = %cidr, "block taken by another node; next");
        }
        Err(IpamError::Conflict(format!(
            "could not claim a block of pool {pool_name}: other nodes kept taking them"
        )))
    }

    /// Create the record of block `cidr` for this node if no key exists
    /// for it; `false` when another node was first.
    async fn create_block(
        &self,
        st: &mut State,
        pool_name: &str,
        cidr: IpNet,
    ) -> Result<bool, IpamError> {
        let block = Block {
            cidr,
            pool: pool_name.to_string(),
            node: self.node.clone(),
            allocations: BTreeMap::new(),
        };
        let key = self.cluster.layout().block(&cidr);
        if let Some(rev) = self
            .cluster
            .kv()
            .create(&key, &encode(&block), None)
            .await?
        {
            self.seen.fetch_max(rev, Ordering::SeqCst);
            tracing::info!(node = %self.node, block = %cidr, pool = pool_name, "claimed block");
            self.counters.claims.fetch_add(1, Ordering::Relaxed);
            st.blocks.insert(
                cidr,
                Held {
                    block,
                    mod_revision: rev,
                },
            );
            self.persist(st);
            return Ok(true);
        }
        self.counters.claim_races.fetch_add(1, Ordering::Relaxed);
        Ok(false)
    }
}
