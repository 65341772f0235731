//! Plexus netlink: network namespaces and a thin typed rtnetlink layer.
//!
//! * [`netns`]: [`Netns`] handles, running code inside a namespace on a
//!   dedicated thread, named namespaces (`ip netns add/del`).
//! * [`Netlink`]: one rtnetlink socket bound to one namespace; operations
//!   are methods grouped by module: [`link`], [`addr`], [`route`],
//!   [`neigh`], [`fdb`].
//! * [`sysctl`]: get/set inside a namespace; [`sysctl::set_many`] writes
//!   several in one trip into it.
//! * [`nft`]: nftables over NETLINK_NETFILTER (batches of tables, chains
//!   and rules; chain listing), without the `nft` binary.
//! * [`detached`]: link deletion that does not wait for the kernel to free
//!   the device.
//! * [`batch`]: many neighbour, FDB and route changes in few datagrams
//!   ([`RtBatch`] sent through a [`BatchSocket`]).
//! * [`ifname`]: the kernel's rule for interface names.
//! * [`monitor`]: notifications of kernel changes (links, addresses,
//!   neighbours, routes, nf_tables), for reconcilers that repair drift.
//! * [`Error`]: one error type with `is_not_found` / `is_exists` /
//!   `is_not_supported` for idempotent DEL and clear feature reports.
//!
//! Logging goes through `tracing`; nothing is printed to stdout.

pub mod addr;
pub mod batch;
pub mod detached;
pub mod error;
pub mod fdb;
pub mod handle;
pub mod ifname;
pub mod link;
pub mod mac;
pub mod monitor;
pub mod neigh;
pub mod netns;
pub mod nft;
pub mod route;
pub mod sysctl;

pub use addr::{AddrOptions, AddrScope, Address};
pub use batch::{BatchReport, BatchSocket, RtBatch};
pub use error::{Error, Result};
pub use fdb::Fdb;
pub use handle::Netlink;
pub use link::{
    Bridge, BridgePortSettings, BridgeVlan, BridgeVlanEntry, Ipip, Ipvlan, IpvlanMode, Link,
    Macvlan, MacvlanMode, Veth, Vxlan,
};
pub use mac::MacAddr;
pub use neigh::Neighbour;
pub use netns::{create_named, delete_named, Netns};
pub use route::{NextHop, Route, RouteFilter, RouteKind, Scope};
