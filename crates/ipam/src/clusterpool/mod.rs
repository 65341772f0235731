//! Cluster IPAM for any network (`plexus-cluster-ipam`): addresses unique
//! across the cluster from whereabouts-style ranges, served by each node's
//! agent from blocks, under a key prefix of their own ([`layout`]). Nothing
//! here touches the routed network's pools or makes a node routed.
//!
//! # Model
//! * **Spaces** ([`space`]): the ranges that must never give one address
//!   twice share a space: every range of one `network_name` with
//!   `enable_overlapping_ranges` on (the default), or one range alone with
//!   it off. Different network names never share.
//! * **Blocks**: a space is cut into blocks on one grid per address family
//!   ([`Grid`], written by the first allocation: 16 addresses by default,
//!   smaller for small ranges, see [`range::default_block_size`]), so blocks
//!   never overlap. A block's key is its CIDR: creating it if absent is the
//!   claim, exactly one node wins it.
//! * **Ranges are filters** ([`range::Range`]): CIDR, `range_start`,
//!   `range_end`, `exclude`, the gateway and the network and broadcast
//!   addresses decide which addresses of a block a request may take; blocks
//!   belong to the space, so two ranges sharing a space share its blocks.
//!
//! # Allocating ([`ClusterAllocator`])
//! 1. The address the attachment (container ID, interface) already holds for
//!    the range: asking again gives the same one.
//! 2. The lowest usable free address in one of the node's own blocks: one
//!    compare-and-swap write of that block, no read, no cluster-wide lock.
//! 3. Otherwise one listing of the space: claim a free block holding a usable
//!    address (create if absent), or adopt a block left by a removed node.
//! 4. With no block left, borrow one address from another node's block
//!    (compare-and-swap on the revision listed), as Calico does without strict
//!    affinity: a /28 shared by twenty nodes is fully usable.
//! 5. Nothing usable anywhere: the range is exhausted.
//!
//! Every address lives in one block, every write is conditional on the state
//! it was computed from, and the address is handed out only after the write:
//! never twice, never before it is stored. The store is the only record
//! ([`ClusterAllocator::load`]), so restarts give every attachment its address
//! back.
//!
//! # Freeing
//! DEL (`release`, idempotent), CNI GC (this node's addresses of a network
//! whose attachment the runtime no longer lists, borrowed ones included, never
//! another node's), and node removal ([`ClusterPools::remove_node`]: its
//! addresses everywhere, its blocks, or for a block where others still hold
//! addresses, the block left to no node for any node to adopt).
//! [`admin::check`] reports nodes not seen for a grace period
//! ([`ClusterAllocator::touch`]), addresses of attachments gone from their
//! node, and inconsistencies.

pub mod admin;
pub mod allocator;
pub mod layout;
pub mod range;
pub mod reconcile;
pub mod records;
pub mod space;

pub use admin::{
    check, usage, CheckReleased, CheckReport, ClusterPools, ClusterUsage, LocalAttachments,
    Snapshot,
};
pub use allocator::{AllocRequest, Attachment, ClusterAllocator, ClusterStats, Given};
pub use layout::{ClusterLayout, DEFAULT_CLUSTER_PREFIX};
pub use range::Range;
pub use reconcile::{confirm, PodNow, Reconciler};
pub use records::{Grid, Holder, NodeSeen, RangeRecord, SpaceBlock};
pub use space::Space;

/// The CNI code of a range with nothing left (whereabouts' and the CNI
/// spec's generic plugin failure); the agent answers with it.
pub const RANGE_EXHAUSTED: u32 = 100;
