//! The routed (calico-style) network's cluster state and block IPAM, kept
//! in a [`plexus_store::Kv`] (etcd, or the embedded file store). No netlink:
//! the agent turns this state into routes.
//!
//! # Store layout
//! See [`layout`]: pools, blocks, BGP config and peers, node settings, each
//! a JSON record ([`records`]) under `/plexus/routed/`.
//!
//! # Block IPAM
//! A pool is cut into blocks of `block_size` (default /26, /122 for IPv6).
//! A block's store key is its CIDR, and its record names the node holding
//! it and maps each used address (its ordinal in the block) to its holder,
//! a [`Handle`] (network, container ID, ifname).
//!
//! * **Claiming** ([`Allocator`], when the node's blocks of a pool are
//!   full): list the blocks, pick the lowest CIDR without a key, and create
//!   its key if absent (an etcd transaction comparing its version with 0).
//!   Exactly one creator succeeds, so **two nodes never hold one block**; a
//!   node that loses the race tries the next free CIDR.
//! * **Allocating**: only the holder writes a block. The node keeps each
//!   held block and the `mod_revision` it last wrote it at; an allocation
//!   picks the lowest free ordinal from that copy, **reads nothing**, and
//!   writes the block once with compare-and-swap on that revision. Another
//!   writer in between (an operator's `node remove` or `pool remove
//!   --force`) fails the swap: the node re-reads that one block and retries
//!   (or drops it when it is no longer its own). Since every address is in
//!   exactly one block, one holder writes it and each write is conditional
//!   on the state it was computed from, **no address is given twice**.
//!   The write is what makes the address durable before the plugin hands it
//!   to a pod; it touches only the node's own key, so nodes never contend.
//! * **Restarts**: the store is the only record. [`Allocator::load`] reads
//!   the blocks naming the node, with their handles, so an attachment
//!   asking again (`allocate` is idempotent per handle and pool) gets the
//!   address it had, and nothing given before is handed out again.
//! * **Releasing**: by handle (DEL, idempotent), by GC (every handle of a
//!   network not in the runtime's valid list), and for a whole node
//!   ([`Cluster::remove_node`]: its blocks are deleted, each with
//!   compare-and-swap so an allocation landing meanwhile goes with it).
//!   Empty blocks stay with their node (its routes stay aggregated).
//!
//! The agent installs a blackhole route per held block and announces them:
//! [`Allocator::blocks`] locally, [`Cluster::blocks_of`] for any node.
//!
//! # Cluster IPAM for any network
//! [`clusterpool`]: whereabouts-style ranges served from blocks under their
//! own prefix (`/plexus/clusteripam`), for `plexus-cluster-ipam`.

pub mod allocator;
pub mod arith;
pub mod checked;
pub mod cluster;
pub mod clusterpool;
pub mod declared;
pub mod follow;
pub mod layout;
pub mod records;
pub mod stored;
pub mod validate;

pub use allocator::{Allocator, Journal, Reasserted, Stats};
pub use cluster::{BlockListing, BlockUsage, Cluster, Freed, PoolUsage, Usage};
pub use declared::{parse_bgp, parse_pools, Applied};
pub use follow::{Follow, Kinds, Record, RecordEvent, RecordId, Records};
pub use layout::{Layout, DEFAULT_PREFIX};
pub use plexus_bgp::BgpFilter;
pub use records::{
    default_block_size, BfdSettings, BgpConfig, Block, Encap, Handle, NodeSettings, PasswordSource,
    Peer, PeerSettings, Pool, PrefixAdvertisement, SecretKeyRef,
};

/// What can go wrong; each message is meant for an operator.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// Bad input (a CIDR, a block size, an ASN, a name...).
    #[error("{0}")]
    Invalid(String),
    /// Something by that name exists already, or writers kept colliding.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    /// Addresses are in use (removing a pool without `--force`).
    #[error("{0}")]
    InUse(String),
    /// No block or address left in the pool.
    #[error("{0}")]
    Exhausted(String),
    /// The store's revision went back below one this node saw: it was
    /// wiped (and perhaps re-seeded). Nothing is written until the node
    /// has put its records back ([`Allocator::reassert`]).
    #[error("the store was reset ({0}); this node re-registers its blocks first")]
    Reset(String),
    /// A record in the store does not parse.
    #[error("store record {key} is damaged: {error}")]
    Corrupt { key: String, error: String },
    #[error(transparent)]
    Store(#[from] plexus_store::StoreError),
}
