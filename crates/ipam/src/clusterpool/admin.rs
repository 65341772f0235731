//! The cluster-wide view and operations of the cluster-IPAM pools, for
//! `plexusctl ipam show|check` and node removal: a [`Snapshot`] read from
//! the store, the pure [`usage`] and [`check`] over it, and the writes
//! (`remove_node`, `release`), each compare-and-swap.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use ipnet::IpNet;
use plexus_store::{Kv, Revision};
use serde::Serialize;

use super::allocator::edit_block;
use super::layout::ClusterLayout;
use super::range::Range;
use super::records::{Grid, Holder, NodeSeen, RangeRecord, SpaceBlock};
use crate::cluster::Freed;
use crate::stored::encode;
use crate::{arith, IpamError};

/// How many times a read-modify-write is retried.
const ATTEMPTS: usize = 32;

/// A block as listed, with its key and revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedBlock {
    pub key: String,
    pub block: SpaceBlock,
    pub mod_revision: Revision,
}

/// Everything the cluster-IPAM pools keep, read at once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub blocks: Vec<ListedBlock>,
    pub ranges: Vec<RangeRecord>,
    /// Grid key → grid.
    pub grids: BTreeMap<String, Grid>,
    pub nodes: Vec<NodeSeen>,
    /// Records that do not parse: key and error.
    pub damaged: Vec<(String, String)>,
}

/// One range's use (`ipam show`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RangeUsage {
    pub range: String,
    pub network_name: String,
    pub overlapping: bool,
    pub space: String,
    /// Addresses the range may give (network and broadcast excluded; a
    /// string: IPv6 ranges exceed JSON's numbers).
    pub size: String,
    /// Addresses in use inside the range (by any range of its space).
    pub used: u64,
    pub free: String,
    /// Blocks of the space that overlap the range, per node (a removed
    /// node's block still in use is under `(removed)`).
    pub blocks_per_node: BTreeMap<String, usize>,
    /// Addresses inside the range held by a node from another node's block.
    pub borrowed: usize,
    pub addresses: Vec<AddressUse>,
}

/// One address in use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AddressUse {
    pub address: String,
    pub node: String,
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub interface: String,
    pub network: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub pod_namespace: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub pod_name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub pod_uid: String,
    pub block: String,
    /// The node the block is affine to ("" for a removed node's).
    pub block_node: String,
    pub borrowed: bool,
}

/// One block's use (`ipam show --blocks`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SpaceBlockUsage {
    pub space: String,
    pub cidr: String,
    pub node: String,
    pub used: u32,
    pub free: u32,
    /// Of the used ones, held by other nodes.
    pub borrowed: usize,
}

/// The cluster-IPAM picture.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClusterUsage {
    pub ranges: Vec<RangeUsage>,
    pub blocks: Vec<SpaceBlockUsage>,
}

fn node_label(n: &str) -> String {
    if n.is_empty() {
        "(removed)".into()
    } else {
        n.into()
    }
}

fn address_use(b: &SpaceBlock, o: u32, h: &Holder) -> AddressUse {
    AddressUse {
        address: b.address(o).to_string(),
        node: h.node.clone(),
        container_id: h.container_id.clone(),
        interface: h.ifname.clone(),
        network: h.network.clone(),
        pod_namespace: h.pod_namespace.clone(),
        pod_name: h.pod_name.clone(),
        pod_uid: h.pod_uid.clone(),
        block: b.cidr.to_string(),
        block_node: b.node.clone(),
        borrowed: h.node != b.node,
    }
}

/// Every range (recorded, or named by an allocation) with its use, and
/// every block.
pub fn usage(s: &Snapshot) -> ClusterUsage {
    // (space, range) → network name and flag; ranges only seen in
    // allocations take their space's.
    let mut ranges: BTreeMap<(String, IpNet), (String, bool)> = s
        .ranges
        .iter()
        .map(|r| {
            (
                (r.space.clone(), r.range),
                (r.network_name.clone(), r.overlapping),
            )
        })
        .collect();
    for lb in &s.blocks {
        for h in lb.block.allocations.values() {
            let k = (lb.block.space.clone(), h.range);
            ranges.entry(k).or_insert_with(|| {
                let (net, part) = lb.block.space.split_once('/').unwrap_or(("-", "shared"));
                let net = if net == "-" { "" } else { net };
                (net.to_string(), part == "shared")
            });
        }
    }
    let mut out = ClusterUsage::default();
    for ((space, cidr), (network_name, overlapping)) in ranges {
        let in_space = || s.blocks.iter().filter(|b| b.block.space == space);
        let mut blocks_per_node: BTreeMap<String, usize> = BTreeMap::new();
        let mut addresses = Vec::new();
        for lb in in_space().filter(|b| arith::overlaps(&b.block.cidr, &cidr)) {
            *blocks_per_node
                .entry(node_label(&lb.block.node))
                .or_default() += 1;
            for (o, h) in &lb.block.allocations {
                if cidr.contains(&lb.block.address(*o)) {
                    addresses.push(address_use(&lb.block, *o, h));
                }
            }
        }
        let size = Range::new(cidr, None, None, &[], None).map_or(0, |r| r.capacity());
        let used = addresses.len() as u64;
        out.ranges.push(RangeUsage {
            range: cidr.to_string(),
            network_name,
            overlapping,
            space,
            size: size.to_string(),
            used,
            free: size.saturating_sub(u128::from(used)).to_string(),
            blocks_per_node,
            borrowed: addresses.iter().filter(|a| a.borrowed).count(),
            addresses,
        });
    }
    let mut blocks: Vec<&ListedBlock> = s.blocks.iter().collect();
    blocks.sort_by(|a, b| {
        (
            &a.block.space,
            a.block.cidr.network(),
            a.block.cidr.prefix_len(),
        )
            .cmp(&(
                &b.block.space,
                b.block.cidr.network(),
                b.block.cidr.prefix_len(),
            ))
    });
    out.blocks = blocks
        .into_iter()
        .map(|lb| {
            let used = lb.block.allocations.len() as u32;
            SpaceBlockUsage {
                space: lb.block.space.clone(),
                cidr: lb.block.cidr.to_string(),
                node: node_label(&lb.block.node),
                used,
                free: lb.block.size().saturating_sub(used),
                borrowed: lb.block.borrowed(),
            }
        })
        .collect();
    out
}

/// The attachments that exist on one node (from its runtime's records),
/// for `ipam check` to find addresses held by attachments that are gone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalAttachments {
    pub node: String,
    /// (container ID, interface).
    pub live: HashSet<(String, String)>,
}

/// A node whose agent has not been seen for the grace period (or never
/// wrote its record) but still holds blocks or addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StaleNode {
    pub node: String,
    pub last_seen: Option<u64>,
    pub blocks: usize,
    pub addresses: usize,
}

/// An address whose attachment no longer exists on its node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OrphanAddress {
    #[serde(flatten)]
    pub address: AddressUse,
    #[serde(skip)]
    pub key: String,
    #[serde(skip)]
    pub holder: Option<Holder>,
}

/// Something in the store that should not be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub key: String,
    pub problem: String,
}

/// What `ipam check` found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckReport {
    pub stale_nodes: Vec<StaleNode>,
    pub orphaned_addresses: Vec<OrphanAddress>,
    /// Blocks of removed nodes with nothing left in them (freed by
    /// `--release`).
    pub empty_orphan_blocks: Vec<String>,
    pub problems: Vec<Problem>,
}

impl CheckReport {
    pub fn is_clean(&self) -> bool {
        self.stale_nodes.is_empty()
            && self.orphaned_addresses.is_empty()
            && self.empty_orphan_blocks.is_empty()
            && self.problems.is_empty()
    }
}

/// Check a snapshot at time `now` (seconds since the Unix epoch): nodes
/// not seen for `grace` seconds, addresses of `local`'s node whose
/// attachment is not among its live ones, and inconsistencies. Pure.
pub fn check(
    s: &Snapshot,
    layout: &ClusterLayout,
    now: u64,
    grace: u64,
    local: Option<&LocalAttachments>,
) -> CheckReport {
    let mut r = CheckReport::default();
    for (key, error) in &s.damaged {
        r.problems.push(Problem {
            key: key.clone(),
            problem: format!("does not parse: {error}"),
        });
    }
    let seen: HashMap<&str, u64> = s
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.last_seen))
        .collect();
    let mut per_node: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for lb in &s.blocks {
        if !lb.block.node.is_empty() {
            per_node.entry(lb.block.node.clone()).or_default().0 += 1;
        }
        for h in lb.block.allocations.values() {
            per_node.entry(h.node.clone()).or_default().1 += 1;
        }
    }
    for (node, (blocks, addresses)) in per_node {
        let last = seen.get(node.as_str()).copied();
        if last.is_none_or(|t| now.saturating_sub(t) > grace) {
            r.stale_nodes.push(StaleNode {
                node,
                last_seen: last,
                blocks,
                addresses,
            });
        }
    }
    let mut holders: HashMap<(String, String, String, String, IpNet), String> = HashMap::new();
    for lb in &s.blocks {
        let b = &lb.block;
        let want_key = layout.block(&b.space, &b.cidr);
        if lb.key != want_key {
            r.problems.push(Problem {
                key: lb.key.clone(),
                problem: format!(
                    "holds block {} of space {} (expected at {want_key})",
                    b.cidr, b.space
                ),
            });
        }
        let grid = s.grids.get(&layout.grid(&b.space, b.cidr.addr().is_ipv4()));
        if let Some(g) = grid.filter(|g| g.block_size != b.cidr.prefix_len()) {
            r.problems.push(Problem {
                key: lb.key.clone(),
                problem: format!(
                    "block {} is not on its space's /{} grid",
                    b.cidr, g.block_size
                ),
            });
        }
        if b.node.is_empty() && b.allocations.is_empty() {
            r.empty_orphan_blocks.push(lb.key.clone());
        }
        for (o, h) in &b.allocations {
            if *o >= b.size() {
                r.problems.push(Problem {
                    key: lb.key.clone(),
                    problem: format!("allocation {o} is outside block {}", b.cidr),
                });
                continue;
            }
            let addr = b.address(*o);
            if h.node.is_empty() {
                r.problems.push(Problem {
                    key: lb.key.clone(),
                    problem: format!("{addr} names no node"),
                });
            }
            let id = (
                b.space.clone(),
                h.node.clone(),
                h.container_id.clone(),
                h.ifname.clone(),
                h.range,
            );
            if let Some(other) = holders.insert(id, addr.to_string()) {
                r.problems.push(Problem {
                    key: lb.key.clone(),
                    problem: format!("{h} holds both {other} and {addr} for range {}", h.range),
                });
            }
            if let Some(l) = local.filter(|l| l.node == h.node) {
                if !l.live.contains(&(h.container_id.clone(), h.ifname.clone())) {
                    r.orphaned_addresses.push(OrphanAddress {
                        address: address_use(b, *o, h),
                        key: lb.key.clone(),
                        holder: Some(h.clone()),
                    });
                }
            }
        }
    }
    for (i, a) in s.blocks.iter().enumerate() {
        for b in &s.blocks[i + 1..] {
            if a.block.space == b.block.space && arith::overlaps(&a.block.cidr, &b.block.cidr) {
                r.problems.push(Problem {
                    key: b.key.clone(),
                    problem: format!(
                        "block {} overlaps block {} of the same space",
                        b.block.cidr, a.block.cidr
                    ),
                });
            }
        }
    }
    r
}

/// What `ipam check --release` freed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CheckReleased {
    pub nodes: usize,
    pub blocks: usize,
    pub addresses: usize,
}

/// The cluster-IPAM pools of one store.
#[derive(Clone)]
pub struct ClusterPools {
    kv: Arc<dyn Kv>,
    layout: ClusterLayout,
}

impl std::fmt::Debug for ClusterPools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterPools")
            .field("layout", &self.layout)
            .finish()
    }
}

impl ClusterPools {
    pub fn new(kv: Arc<dyn Kv>, layout: ClusterLayout) -> ClusterPools {
        ClusterPools { kv, layout }
    }

    pub fn layout(&self) -> &ClusterLayout {
        &self.layout
    }

    /// Read everything (four range requests). Damaged records are listed,
    /// not fatal: an operator must see them.
    pub async fn snapshot(&self) -> Result<Snapshot, IpamError> {
        let mut s = Snapshot::default();
        for kv in self.kv.range(&self.layout.blocks()).await?.kvs {
            match serde_json::from_slice::<SpaceBlock>(&kv.value) {
                Ok(block) => s.blocks.push(ListedBlock {
                    key: kv.key,
                    block,
                    mod_revision: kv.mod_revision,
                }),
                Err(e) => s.damaged.push((kv.key, e.to_string())),
            }
        }
        for kv in self.kv.range(&self.layout.ranges()).await?.kvs {
            match serde_json::from_slice::<RangeRecord>(&kv.value) {
                Ok(r) => s.ranges.push(r),
                Err(e) => s.damaged.push((kv.key, e.to_string())),
            }
        }
        for kv in self.kv.range(&self.layout.grids()).await?.kvs {
            match serde_json::from_slice::<Grid>(&kv.value) {
                Ok(g) => {
                    s.grids.insert(kv.key, g);
                }
                Err(e) => s.damaged.push((kv.key, e.to_string())),
            }
        }
        for kv in self.kv.range(&self.layout.nodes()).await?.kvs {
            match serde_json::from_slice::<NodeSeen>(&kv.value) {
                Ok(n) => s.nodes.push(n),
                Err(e) => s.damaged.push((kv.key, e.to_string())),
            }
        }
        Ok(s)
    }

    /// A node leaves: its addresses everywhere are freed (borrowed ones
    /// too), its blocks deleted, or, when other nodes still hold addresses
    /// in one, left to no node so any node may adopt it; its record goes.
    /// Not an error when nothing was there.
    pub async fn remove_node(&self, name: &str) -> Result<Freed, IpamError> {
        crate::validate::name("node", name)?;
        let mut freed = Freed::default();
        let snap = self.snapshot().await?;
        for lb in &snap.blocks {
            if lb.block.node == name {
                let (addresses, deleted) = self.disown(&lb.key, name).await?;
                freed.addresses += addresses;
                freed.blocks += usize::from(deleted);
            } else if lb.block.allocations.values().any(|h| h.node == name) {
                let (n, _) = edit_block(&*self.kv, &lb.key, |h| h.node == name).await?;
                freed.addresses += n;
            }
        }
        self.kv.delete(&self.layout.node(name), None).await?;
        Ok(freed)
    }

    /// `name`'s block at `key` loses `name`'s addresses and its owner:
    /// deleted when nothing is left, else kept for no node. (addresses
    /// freed, deleted?)
    async fn disown(&self, key: &str, name: &str) -> Result<(usize, bool), IpamError> {
        for _ in 0..ATTEMPTS {
            let Some(cur) = crate::stored::get::<SpaceBlock>(&*self.kv, key).await? else {
                return Ok((0, false));
            };
            if cur.value.node != name {
                let (n, _) = edit_block(&*self.kv, key, |h| h.node == name).await?;
                return Ok((n, false));
            }
            let mut next = cur.value.clone();
            next.allocations.retain(|_, h| h.node != name);
            let n = cur.value.allocations.len() - next.allocations.len();
            next.node.clear();
            if next.allocations.is_empty() {
                if self.kv.delete(key, Some(cur.mod_revision)).await? {
                    return Ok((n, true));
                }
            } else if self
                .kv
                .put(key, &encode(&next), None, Some(cur.mod_revision))
                .await?
                .is_some()
            {
                return Ok((n, false));
            }
        }
        Err(IpamError::Conflict(format!(
            "block {key} kept changing under us; try again"
        )))
    }

    /// Free what `report` found: stale nodes removed, orphaned addresses
    /// released (each only if still held by the same attachment), empty
    /// blocks of removed nodes deleted.
    pub async fn release(&self, report: &CheckReport) -> Result<CheckReleased, IpamError> {
        let mut out = CheckReleased::default();
        for n in &report.stale_nodes {
            let f = self.remove_node(&n.node).await?;
            out.nodes += 1;
            out.blocks += f.blocks;
            out.addresses += f.addresses;
        }
        for o in &report.orphaned_addresses {
            let Some(h) = &o.holder else { continue };
            let (n, _) = edit_block(&*self.kv, &o.key, |x| x == h).await?;
            out.addresses += n;
        }
        for key in &report.empty_orphan_blocks {
            if let Some(cur) = crate::stored::get::<SpaceBlock>(&*self.kv, key).await? {
                if cur.value.node.is_empty()
                    && cur.value.allocations.is_empty()
                    && self.kv.delete(key, Some(cur.mod_revision)).await?
                {
                    out.blocks += 1;
                }
            }
        }
        Ok(out)
    }
}
