//! host-local IPAM, compatible with the reference plugin
//! (containernetworking/plugins `plugins/ipam/host-local`): same config, same
//! allocation order and the same on-disk layout, so a node can switch between
//! the two binaries in either direction. On top of the reference it adds STATUS,
//! GC, atomic reservation files and a single lock held for the whole call.
//!
//! Layout: [`config`] parses and validates, [`range`] is address arithmetic,
//! [`allocator`] holds every decision and talks to a [`store::Store`], of which
//! [`disk::DiskStore`] is the real one and [`store::MemStore`] the test double.

pub mod addr;
pub mod allocator;
pub mod config;
pub mod disk;
pub mod error;
pub mod plugin;
pub mod range;
pub mod resolv;
pub mod store;

pub use error::Error;
pub use plugin::HostLocal;
