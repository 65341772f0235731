//! One node's cluster-IPAM allocator (see the module docs for the design).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ipnet::IpNet;
use plexus_store::{Kv, Revision};
use tokio::sync::Mutex;

use super::layout::ClusterLayout;
use super::range::{self, check_block_size, default_block_size, Range};
use super::records::{Grid, Holder, NodeSeen, RangeRecord, SpaceBlock};
use super::space::Space;
use crate::stored::{self, encode, Versioned};
use crate::{arith, IpamError};

/// How many write conflicts or lost claims one call rides out.
const ATTEMPTS: usize = 64;

/// A block: its space id and CIDR.
type Key = (String, IpNet);

/// One attachment asking, and its pod when the runtime said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attachment {
    /// The CNI network name (the config's `name`).
    pub network: String,
    pub container_id: String,
    pub ifname: String,
    pub pod_namespace: String,
    pub pod_name: String,
    pub pod_uid: String,
}

/// An allocation request: one address from each range.
#[derive(Debug, Clone)]
pub struct AllocRequest {
    pub attachment: Attachment,
    pub network_name: String,
    pub overlapping: bool,
    pub ranges: Vec<Range>,
    /// Requested addresses; each goes to the first range (in order) that
    /// holds it and has none requested yet.
    pub requested: Vec<IpAddr>,
    /// Block sizes for a space created now (`None`: the range's default).
    pub block_size_v4: Option<u8>,
    pub block_size_v6: Option<u8>,
}

/// One address given, for one range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Given {
    pub address: IpAddr,
    /// The range's CIDR (the pod gets the address with its prefix length).
    pub range: IpNet,
    pub gateway: Option<IpAddr>,
}

/// Counters since the allocator was loaded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ClusterStats {
    pub claims: u64,
    pub claim_races: u64,
    pub write_conflicts: u64,
    /// Addresses taken from other nodes' blocks.
    pub borrows: u64,
    /// Blocks of removed nodes taken over.
    pub adoptions: u64,
}

#[derive(Debug, Default)]
struct Counters {
    claims: AtomicU64,
    claim_races: AtomicU64,
    write_conflicts: AtomicU64,
    borrows: AtomicU64,
    adoptions: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A block this node holds, as last written or read at `rev`.
#[derive(Debug, Clone)]
struct Held {
    block: SpaceBlock,
    rev: Revision,
}

#[derive(Debug, Default)]
struct State {
    /// This node's blocks.
    own: BTreeMap<Key, Held>,
    /// This node's addresses in other nodes' blocks, as last seen.
    borrowed: BTreeMap<Key, BTreeMap<u32, Holder>>,
    /// Block size per (space, IPv4?), once read.
    grids: HashMap<(String, bool), u8>,
    /// Ranges whose record this process has written (or found).
    recorded: HashSet<(String, IpNet)>,
}

/// A node's allocator over the cluster-IPAM pools.
pub struct ClusterAllocator {
    kv: Arc<dyn Kv>,
    layout: ClusterLayout,
    node: String,
    state: Mutex<State>,
    counters: Counters,
}

impl std::fmt::Debug for ClusterAllocator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterAllocator")
            .field("node", &self.node)
            .field("layout", &self.layout)
            .finish()
    }
}

impl ClusterAllocator {
    /// The allocator of `node` with everything the store says it holds:
    /// its blocks and its addresses in other nodes' blocks (after a
    /// restart, what it gave before, with its holders).
    pub async fn load(
        kv: Arc<dyn Kv>,
        layout: ClusterLayout,
        node: &str,
    ) -> Result<ClusterAllocator, IpamError> {
        crate::validate::name("node", node)?;
        let a = ClusterAllocator {
            kv,
            layout,
            node: node.to_string(),
            state: Mutex::new(State::default()),
            counters: Counters::default(),
        };
        let all = a.list(&a.layout.blocks()).await?;
        a.reconcile(&mut *a.state.lock().await, None, &all);
        Ok(a)
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn layout(&self) -> &ClusterLayout {
        &self.layout
    }

    pub fn stats(&self) -> ClusterStats {
        let c = &self.counters;
        let l = |x: &AtomicU64| x.load(Ordering::Relaxed);
        ClusterStats {
            claims: l(&c.claims),
            claim_races: l(&c.claim_races),
            write_conflicts: l(&c.write_conflicts),
            borrows: l(&c.borrows),
            adoptions: l(&c.adoptions),
        }
    }

    /// The blocks this node holds now, with their space id.
    pub async fn blocks(&self) -> Vec<(String, IpNet)> {
        self.state.lock().await.own.keys().cloned().collect()
    }

    /// Every address this node's attachments hold (in its blocks and
    /// borrowed), with the holder.
    pub async fn allocations(&self) -> Vec<(IpAddr, Holder)> {
        let st = self.state.lock().await;
        self.mine(&st, |_| true)
    }

    /// What `container_id`/`ifname` holds now (CNI CHECK).
    pub async fn held(&self, container_id: &str, ifname: &str) -> Vec<(IpAddr, Holder)> {
        let st = self.state.lock().await;
        self.mine(&st, |h| h.is(container_id, ifname))
    }

    fn mine(&self, st: &State, keep: impl Fn(&Holder) -> bool) -> Vec<(IpAddr, Holder)> {
        let own = st.own.values().flat_map(|h| {
            h.block
                .allocations
                .iter()
                .filter(|(_, hd)| hd.node == self.node)
                .map(|(o, hd)| (h.block.address(*o), hd.clone()))
        });
        let borrowed = st.borrowed.iter().flat_map(|((_, cidr), m)| {
            m.iter()
                .map(|(o, hd)| (arith::offset(cidr.network(), u128::from(*o)), hd.clone()))
        });
        own.chain(borrowed).filter(|(_, h)| keep(h)).collect()
    }

    /// One address from each range of `req`, the same ones when the
    /// attachment asks again. While a block of this node has room an
    /// address costs one compare-and-swap write of that block and no read;
    /// otherwise the space's blocks are listed once to claim a free block
    /// or, with none left, to borrow an address from another node's block.
    /// A failure takes back what this call gave: nothing is half given.
    pub async fn allocate(&self, req: &AllocRequest) -> Result<Vec<Given>, IpamError> {
        for (v4, size) in [(true, req.block_size_v4), (false, req.block_size_v6)] {
            if let Some(s) = size {
                check_block_size(v4, s)?;
            }
        }
        let mut want: Vec<Option<IpAddr>> = vec![None; req.ranges.len()];
        for a in &req.requested {
            let slot = req
                .ranges
                .iter()
                .enumerate()
                .position(|(i, r)| want[i].is_none() && r.cidr.contains(a));
            match slot {
                Some(i) => want[i] = Some(*a),
                None => {
                    let names: Vec<String> =
                        req.ranges.iter().map(|r| r.cidr.to_string()).collect();
                    return Err(IpamError::Invalid(format!(
                        "the requested address {a} is in none of the ranges ({}) or another requested address has its range",
                        names.join(", ")
                    )));
                }
            }
        }
        let spaces = req
            .ranges
            .iter()
            .map(|r| Space::of(&req.network_name, req.overlapping, &r.cidr))
            .collect::<Result<Vec<_>, _>>()?;
        let mut st = self.state.lock().await;
        let mut out = Vec::new();
        // Ranges given an address by this call (not held before): a
        // failure takes back only these, never what an earlier ADD gave.
        let mut fresh: Vec<IpNet> = Vec::new();
        let a = &req.attachment;
        for ((range, space), want) in req.ranges.iter().zip(&spaces).zip(want) {
            let holder = Holder {
                node: self.node.clone(),
                network: a.network.clone(),
                container_id: a.container_id.clone(),
                ifname: a.ifname.clone(),
                range: range.cidr,
                pod_namespace: a.pod_namespace.clone(),
                pod_name: a.pod_name.clone(),
                pod_uid: a.pod_uid.clone(),
            };
            let size = if range.is_ipv4() {
                req.block_size_v4
            } else {
                req.block_size_v6
            };
            let held_before = self.existing(&st, space, &holder).is_some();
            let got = match self.record_range(&mut st, space, range).await {
                Err(e) => Err(e),
                Ok(()) => match want {
                    None => self.next_free(&mut st, space, range, &holder, size).await,
                    Some(addr) => self.exact(&mut st, space, range, &holder, size, addr).await,
                },
            };
            match got {
                Ok(address) => {
                    if !held_before {
                        fresh.push(range.cidr);
                    }
                    out.push(Given {
                        address,
                        range: range.cidr,
                        gateway: range.gateway,
                    })
                }
                Err(e) => {
                    let me = self.node.clone();
                    let undo = self
                        .free_where(&mut st, |h| {
                            h.node == me
                                && h.is(&a.container_id, &a.ifname)
                                && fresh.contains(&h.range)
                        })
                        .await;
                    if let Err(r) = undo {
                        tracing::warn!(error = %r, "releasing after a failed allocation");
                    }
                    return Err(e);
                }
            }
        }
        Ok(out)
    }

    /// The address `holder` already has for `range` in `space`.
    fn existing(&self, st: &State, space: &Space, holder: &Holder) -> Option<IpAddr> {
        let ours = |h: &Holder| {
            h.node == self.node
                && h.is(&holder.container_id, &holder.ifname)
                && h.range == holder.range
        };
        st.own
            .iter()
            .filter(|(k, _)| k.0 == space.id)
            .find_map(|(_, h)| {
                h.block
                    .allocations
                    .iter()
                    .find(|(_, hd)| ours(hd))
                    .map(|(o, _)| h.block.address(*o))
            })
            .or_else(|| {
                st.borrowed
                    .iter()
                    .filter(|(k, _)| k.0 == space.id)
                    .find_map(|((_, cidr), m)| {
                        m.iter()
                            .find(|(_, hd)| ours(hd))
                            .map(|(o, _)| arith::offset(cidr.network(), u128::from(*o)))
                    })
            })
    }

    /// The lowest free usable address of `range` in this node's blocks.
    fn own_free(&self, st: &State, space: &Space, range: &Range) -> Option<(Key, u32)> {
        st.own
            .iter()
            .filter(|(k, _)| k.0 == space.id)
            .find_map(|(k, h)| {
                range
                    .first_free_in(&k.1, |o| h.block.allocations.contains_key(&o))
                    .map(|o| (k.clone(), o))
            })
    }

    async fn next_free(
        &self,
        st: &mut State,
        space: &Space,
        range: &Range,
        holder: &Holder,
        size: Option<u8>,
    ) -> Result<IpAddr, IpamError> {
        for attempt in 0..ATTEMPTS {
            if let Some(a) = self.existing(st, space, holder) {
                return Ok(a);
            }
            if let Some((key, o)) = self.own_free(st, space, range) {
                let mut next = st.own[&key].block.clone();
                next.allocations.insert(o, holder.clone());
                let addr = next.address(o);
                if self.write_own(st, next).await? {
                    tracing::debug!(node = %self.node, space = %space.id, %addr, block = %key.1, holder = %holder, "allocated");
                    return Ok(addr);
                }
                continue;
            }
            // No room of our own: one listing to claim, adopt or borrow.
            let listing = self.list(&self.layout.space_blocks(&space.id)).await?;
            self.reconcile(st, Some(&space.id), &listing);
            if self.existing(st, space, holder).is_some()
                || self.own_free(st, space, range).is_some()
            {
                continue;
            }
            let size = self.grid(st, space, range, size).await?;
            let taken: HashSet<IpNet> = listing.iter().map(|b| b.value.cidr).collect();
            // The first try takes the lowest free block; after a lost race
            // a node looks from a place of its own, so nodes starting
            // together do not all race for each next lowest block.
            let (lo, hi) = range.span();
            let from = if attempt == 0 {
                lo
            } else {
                lo + u128::from(arith::spread(&self.node)) % (hi - lo + 1)
            };
            if let Some(cell) = range.free_cell(size, from, |c| taken.contains(c)) {
                self.create_block(st, space, cell).await?;
                continue;
            }
            let room = |b: &SpaceBlock| {
                range
                    .first_free_in(&b.cidr, |o| b.allocations.contains_key(&o))
                    .is_some()
            };
            if let Some(orphan) = listing
                .iter()
                .find(|b| b.value.node.is_empty() && room(&b.value))
            {
                self.adopt(st, orphan).await?;
                continue;
            }
            let lenders: Vec<&Versioned<SpaceBlock>> = listing
                .iter()
                .filter(|b| b.value.node != self.node && room(&b.value))
                .collect();
            if lenders.is_empty() {
                return Err(exhausted(space, range));
            }
            // Borrowers spread over the lenders (a hash of the node name),
            // so twenty nodes borrowing at once do not all write one block.
            let pick =
                lenders[(arith::spread(&self.node) as usize).wrapping_add(attempt) % lenders.len()];
            let o = range
                .first_free_in(&pick.value.cidr, |o| {
                    pick.value.allocations.contains_key(&o)
                })
                .expect("a lender has room");
            if let Some(addr) = self.borrow(st, space, pick, o, holder).await? {
                return Ok(addr);
            }
        }
        Err(IpamError::Conflict(format!(
            "allocation in range {} kept conflicting with other writers",
            range.cidr
        )))
    }

    /// The requested address `addr` for `holder`: from this node's block
    /// holding it, that block claimed now, or borrowed from the node whose
    /// block holds it; refused when it is not usable or is taken.
    async fn exact(
        &self,
        st: &mut State,
        space: &Space,
        range: &Range,
        holder: &Holder,
        size: Option<u8>,
        addr: IpAddr,
    ) -> Result<IpAddr, IpamError> {
        if let Some(why) = range.refusal(addr) {
            return Err(IpamError::InUse(format!(
                "the requested address is not available: {why}"
            )));
        }
        for _ in 0..ATTEMPTS {
            if let Some(have) = self.existing(st, space, holder) {
                if have == addr {
                    return Ok(addr);
                }
                return Err(IpamError::InUse(format!(
                    "{}/{} already holds {have} in range {}, not {addr}",
                    holder.container_id, holder.ifname, range.cidr
                )));
            }
            let own = st
                .own
                .iter()
                .find(|(k, _)| k.0 == space.id && k.1.contains(&addr))
                .map(|(k, h)| (k.clone(), h.block.clone()));
            if let Some((_, block)) = own {
                let o = block.ordinal(addr).expect("inside its block");
                if let Some(h) = block.allocations.get(&o) {
                    return Err(IpamError::InUse(format!("{addr} is held by {h}")));
                }
                let mut next = block;
                next.allocations.insert(o, holder.clone());
                if self.write_own(st, next).await? {
                    return Ok(addr);
                }
                continue;
            }
            let listing = self.list(&self.layout.space_blocks(&space.id)).await?;
            self.reconcile(st, Some(&space.id), &listing);
            let size = self.grid(st, space, range, size).await?;
            let Some(b) = listing.iter().find(|b| b.value.cidr.contains(&addr)) else {
                let cell = range.cell_of(range::num(addr), size);
                self.create_block(st, space, cell).await?;
                continue;
            };
            if b.value.node == self.node {
                continue;
            }
            let o = b.value.ordinal(addr).expect("inside its block");
            if let Some(h) = b.value.allocations.get(&o) {
                return Err(IpamError::InUse(format!("{addr} is held by {h}")));
            }
            if b.value.node.is_empty() {
                self.adopt(st, b).await?;
                continue;
            }
            if let Some(a) = self.borrow(st, space, b, o, holder).await? {
                return Ok(a);
            }
        }
        Err(IpamError::Conflict(format!(
            "allocation of {addr} kept conflicting with other writers"
        )))
    }

    /// Take ordinal `o` of another node's block `b` for `holder`,
    /// compare-and-swap on the revision it was listed at. `None`: the block
    /// changed meanwhile (the caller lists again).
    async fn borrow(
        &self,
        st: &mut State,
        space: &Space,
        b: &Versioned<SpaceBlock>,
        o: u32,
        holder: &Holder,
    ) -> Result<Option<IpAddr>, IpamError> {
        let mut next = b.value.clone();
        next.allocations.insert(o, holder.clone());
        let key = self.layout.block(&space.id, &next.cidr);
        if self
            .kv
            .put(&key, &encode(&next), None, Some(b.mod_revision))
            .await?
            .is_none()
        {
            bump(&self.counters.write_conflicts);
            return Ok(None);
        }
        bump(&self.counters.borrows);
        let addr = next.address(o);
        tracing::debug!(node = %self.node, space = %space.id, %addr, block = %next.cidr, owner = %next.node, holder = %holder, "borrowed an address");
        st.borrowed
            .entry((space.id.clone(), next.cidr))
            .or_default()
            .insert(o, holder.clone());
        Ok(Some(addr))
    }

    /// Make the block of a removed node (`node` empty) ours.
    async fn adopt(&self, st: &mut State, b: &Versioned<SpaceBlock>) -> Result<(), IpamError> {
        let mut next = b.value.clone();
        next.node = self.node.clone();
        let key = self.layout.block(&next.space, &next.cidr);
        match self
            .kv
            .put(&key, &encode(&next), None, Some(b.mod_revision))
            .await?
        {
            Some(rev) => {
                bump(&self.counters.adoptions);
                tracing::info!(node = %self.node, block = %next.cidr, space = %next.space, "adopted the block of a removed node");
                let k = (next.space.clone(), next.cidr);
                st.borrowed.remove(&k);
                st.own.insert(k, Held { block: next, rev });
            }
            None => bump(&self.counters.write_conflicts),
        }
        Ok(())
    }

    /// Free every address `container_id`/`ifname` holds on this node, in
    /// its blocks and borrowed ones. Freeing nothing is not an error.
    pub async fn release(&self, container_id: &str, ifname: &str) -> Result<usize, IpamError> {
        let mut st = self.state.lock().await;
        self.release_locked(&mut st, container_id, ifname).await
    }

    async fn release_locked(
        &self,
        st: &mut State,
        container_id: &str,
        ifname: &str,
    ) -> Result<usize, IpamError> {
        let me = self.node.clone();
        self.free_where(st, |h| h.node == me && h.is(container_id, ifname))
            .await
    }

    /// CNI GC: free this node's addresses of `network` (borrowed ones too)
    /// whose attachment (container ID, interface) is not in `valid`. Other
    /// nodes' addresses are never touched. Reads the store first, so what
    /// the store holds is what is collected.
    pub async fn gc(
        &self,
        network: &str,
        valid: &HashSet<(String, String)>,
    ) -> Result<usize, IpamError> {
        let mut st = self.state.lock().await;
        let all = self.list(&self.layout.blocks()).await?;
        self.reconcile(&mut st, None, &all);
        let me = self.node.clone();
        self.free_where(&mut st, |h| {
            h.node == me
                && h.network == network
                && !valid.contains(&(h.container_id.clone(), h.ifname.clone()))
        })
        .await
    }

    /// Free exactly these holders of this node (the reconciler's verdict),
    /// each only if the store still holds that very holder at that address:
    /// reads the store first, as [`ClusterAllocator::gc`] does. Returns how
    /// many went.
    pub async fn release_holders(&self, doomed: &[(IpAddr, Holder)]) -> Result<usize, IpamError> {
        let mut st = self.state.lock().await;
        let all = self.list(&self.layout.blocks()).await?;
        self.reconcile(&mut st, None, &all);
        let me = self.node.clone();
        let holders: HashSet<&Holder> = doomed
            .iter()
            .map(|(_, h)| h)
            .filter(|h| h.node == me)
            .collect();
        if holders.is_empty() {
            return Ok(0);
        }
        self.free_where(&mut st, |h| holders.contains(h)).await
    }

    async fn free_where(
        &self,
        st: &mut State,
        doomed: impl Fn(&Holder) -> bool,
    ) -> Result<usize, IpamError> {
        let mut freed = 0;
        let keys: Vec<Key> = st.own.keys().cloned().collect();
        for key in keys {
            for _ in 0..ATTEMPTS {
                let Some(held) = st.own.get(&key) else { break };
                let mut next = held.block.clone();
                next.allocations.retain(|_, h| !doomed(h));
                let n = held.block.allocations.len() - next.allocations.len();
                if n == 0 {
                    break;
                }
                if self.write_own(st, next).await? {
                    freed += n;
                    break;
                }
            }
        }
        let keys: Vec<Key> = st
            .borrowed
            .iter()
            .filter(|(_, m)| m.values().any(&doomed))
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            let (n, now) = self.edit_foreign(&key, |h| doomed(h)).await?;
            freed += n;
            self.set_borrowed(st, &key, now.as_ref());
        }
        Ok(freed)
    }

    /// Remove the allocations `doomed` picks from the block `key` (not
    /// ours), reading it fresh and writing with compare-and-swap; an
    /// orphaned block left empty is deleted. Returns how many went and the
    /// block as it is now.
    async fn edit_foreign(
        &self,
        key: &Key,
        doomed: impl Fn(&Holder) -> bool,
    ) -> Result<(usize, Option<SpaceBlock>), IpamError> {
        edit_block(&*self.kv, &self.layout.block(&key.0, &key.1), doomed).await
    }

    fn set_borrowed(&self, st: &mut State, key: &Key, block: Option<&SpaceBlock>) {
        let mine: BTreeMap<u32, Holder> = block
            .filter(|b| b.node != self.node)
            .map(|b| {
                b.allocations
                    .iter()
                    .filter(|(_, h)| h.node == self.node)
                    .map(|(o, h)| (*o, h.clone()))
                    .collect()
            })
            .unwrap_or_default();
        if mine.is_empty() {
            st.borrowed.remove(key);
        } else {
            st.borrowed.insert(key.clone(), mine);
        }
    }

    /// Re-read everything from the store (after `node remove`, or when a
    /// watch shows a change this node did not make).
    pub async fn resync(&self) -> Result<(), IpamError> {
        let mut st = self.state.lock().await;
        let all = self.list(&self.layout.blocks()).await?;
        self.reconcile(&mut st, None, &all);
        Ok(())
    }

    /// Say this node's agent is alive (`now`: seconds since the Unix
    /// epoch): `ipam check` reports nodes not seen for a grace period.
    pub async fn touch(&self, now: u64) -> Result<(), IpamError> {
        let rec = NodeSeen {
            name: self.node.clone(),
            last_seen: now,
        };
        self.kv
            .put(&self.layout.node(&self.node), &encode(&rec), None, None)
            .await?;
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Versioned<SpaceBlock>>, IpamError> {
        stored::list(&*self.kv, prefix).await
    }

    /// Bring the held state in line with a listing (of one space, or of
    /// all with `None`): our blocks as the store has them, blocks no longer
    /// ours dropped, our addresses in other blocks recomputed.
    fn reconcile(&self, st: &mut State, space: Option<&str>, listing: &[Versioned<SpaceBlock>]) {
        let inside = |k: &Key| space.is_none_or(|s| k.0 == s);
        let ours: BTreeMap<Key, &Versioned<SpaceBlock>> = listing
            .iter()
            .filter(|b| b.value.node == self.node)
            .map(|b| ((b.value.space.clone(), b.value.cidr), b))
            .collect();
        st.own.retain(|k, _| {
            let keep = !inside(k) || ours.contains_key(k);
            if !keep {
                tracing::warn!(node = %self.node, space = %k.0, block = %k.1, "block no longer ours (node removed)");
            }
            keep
        });
        for (k, b) in ours {
            st.own.insert(
                k,
                Held {
                    block: b.value.clone(),
                    rev: b.mod_revision,
                },
            );
        }
        st.borrowed.retain(|k, _| !inside(k));
        for b in listing.iter().filter(|b| b.value.node != self.node) {
            let k = (b.value.space.clone(), b.value.cidr);
            self.set_borrowed(st, &k, Some(&b.value));
        }
    }

    /// Write `next` over our block with its CIDR, only if the store still
    /// has the revision we hold. `false`: it changed (a node borrowed from
    /// it, or an operator removed this node); our copy is refreshed from
    /// the store, or dropped when the block is no longer ours.
    async fn write_own(&self, st: &mut State, next: SpaceBlock) -> Result<bool, IpamError> {
        let k = (next.space.clone(), next.cidr);
        let key = self.layout.block(&k.0, &k.1);
        let rev = st.own[&k].rev;
        if let Some(new) = self.kv.put(&key, &encode(&next), None, Some(rev)).await? {
            st.own.insert(
                k,
                Held {
                    block: next,
                    rev: new,
                },
            );
            return Ok(true);
        }
        bump(&self.counters.write_conflicts);
        match stored::get::<SpaceBlock>(&*self.kv, &key).await? {
            Some(cur) if cur.value.node == self.node => {
                tracing::debug!(node = %self.node, block = %k.1, "block changed in the store; using its copy");
                st.own.insert(
                    k,
                    Held {
                        block: cur.value,
                        rev: cur.mod_revision,
                    },
                );
            }
            cur => {
                tracing::warn!(node = %self.node, block = %k.1, "block no longer ours (node removed)");
                st.own.remove(&k);
                let block = cur.map(|c| c.value);
                self.set_borrowed(st, &k, block.as_ref());
            }
        }
        Ok(false)
    }

    /// Create block `cell` of `space` for this node if no key exists.
    async fn create_block(
        &self,
        st: &mut State,
        space: &Space,
        cell: IpNet,
    ) -> Result<bool, IpamError> {
        let block = SpaceBlock {
            space: space.id.clone(),
            cidr: cell,
            node: self.node.clone(),
            allocations: BTreeMap::new(),
        };
        let key = self.layout.block(&space.id, &cell);
        if let Some(rev) = self.kv.create(&key, &encode(&block), None).await? {
            bump(&self.counters.claims);
            tracing::info!(node = %self.node, space = %space.id, block = %cell, "claimed block");
            st.own.insert((space.id.clone(), cell), Held { block, rev });
            return Ok(true);
        }
        bump(&self.counters.claim_races);
        tracing::debug!(node = %self.node, block = %cell, "block taken by another node; next");
        Ok(false)
    }

    /// The block size of `space`'s family of `range`: the one the space was
    /// created with, else `wanted` (or the range's default) written now.
    async fn grid(
        &self,
        st: &mut State,
        space: &Space,
        range: &Range,
        wanted: Option<u8>,
    ) -> Result<u8, IpamError> {
        let v4 = range.is_ipv4();
        let gk = (space.id.clone(), v4);
        if let Some(s) = st.grids.get(&gk) {
            return Ok(*s);
        }
        let key = self.layout.grid(&space.id, v4);
        let want = wanted.unwrap_or_else(|| default_block_size(&range.cidr));
        for _ in 0..2 {
            if let Some(g) = stored::get::<Grid>(&*self.kv, &key).await? {
                if wanted.is_some_and(|w| w != g.value.block_size) {
                    tracing::info!(space = %space.id, configured = want, kept = g.value.block_size, "the space keeps the block size it was created with");
                }
                st.grids.insert(gk, g.value.block_size);
                return Ok(g.value.block_size);
            }
            let g = Grid {
                space: space.id.clone(),
                block_size: want,
            };
            if self.kv.create(&key, &encode(&g), None).await?.is_some() {
                st.grids.insert(gk, want);
                return Ok(want);
            }
        }
        Err(IpamError::Conflict(format!(
            "the block size of space {} could not be read",
            space.id
        )))
    }

    /// The range's record for `ipam show`, written once per process.
    async fn record_range(
        &self,
        st: &mut State,
        space: &Space,
        range: &Range,
    ) -> Result<(), IpamError> {
        let k = (space.id.clone(), range.cidr);
        if st.recorded.contains(&k) {
            return Ok(());
        }
        let rec = RangeRecord {
            space: space.id.clone(),
            network_name: space.network_name.clone(),
            overlapping: space.overlapping,
            range: range.cidr,
        };
        self.kv
            .create(
                &self.layout.range(&space.id, &range.cidr),
                &encode(&rec),
                None,
            )
            .await?;
        st.recorded.insert(k);
        Ok(())
    }
}

/// Remove the allocations `doomed` picks from the block at `key`, read
/// fresh and written with compare-and-swap (retried when it changed);
/// a block of no node left empty is deleted. How many went, and the block
/// as it is now (`None`: gone).
pub(crate) async fn edit_block(
    kv: &dyn Kv,
    key: &str,
    doomed: impl Fn(&Holder) -> bool,
) -> Result<(usize, Option<SpaceBlock>), IpamError> {
    for _ in 0..ATTEMPTS {
        let Some(cur) = stored::get::<SpaceBlock>(kv, key).await? else {
            return Ok((0, None));
        };
        let mut next = cur.value.clone();
        next.allocations.retain(|_, h| !doomed(h));
        let n = cur.value.allocations.len() - next.allocations.len();
        if n == 0 {
            return Ok((0, Some(cur.value)));
        }
        if next.node.is_empty() && next.allocations.is_empty() {
            if kv.delete(key, Some(cur.mod_revision)).await? {
                return Ok((n, None));
            }
        } else if kv
            .put(key, &encode(&next), None, Some(cur.mod_revision))
            .await?
            .is_some()
        {
            return Ok((n, Some(next)));
        }
    }
    Err(IpamError::Conflict(format!(
        "block {key} kept changing under us; try again"
    )))
}

fn exhausted(space: &Space, range: &Range) -> IpamError {
    let name = if space.network_name.is_empty() {
        String::new()
    } else {
        format!(" (network_name {:?})", space.network_name)
    };
    IpamError::Exhausted(format!(
        "range {}{name} is exhausted: every address it may give is in use",
        range.cidr
    ))
}
