//! The container side of a Plexus plugin, written once (what the reference
//! plugins share through `pkg/ipam.ConfigureIface` and `pkg/ip`):
//!
//! * [`errors`]: one mapping from kernel failures to CNI codes, and the
//!   error collector DEL uses to keep going;
//! * [`runtime`]: the one async runtime of a plugin call;
//! * [`conf`]: config keys every plugin reads the same way (`ipam`, `dns`,
//!   interface names, a requested MAC);
//! * [`names`]: temporary interface names;
//! * [`owner`]: the alias that marks a link as one attachment's;
//! * [`iface`]: configuring the pod interface from a result (sysctls,
//!   addresses, link up, IPv6 DAD, routes);
//! * [`check`]: CHECK of addresses and routes against prevResult;
//! * [`del`]: deleting the pod interface, only when it is this
//!   attachment's.
//!
//! A plugin keeps only what is its own: the host side, its config keys,
//! what CHECK verifies beyond addresses and routes.

pub mod check;
pub mod conf;
pub mod del;
pub mod errors;
pub mod iface;
pub mod names;
pub mod owner;
pub mod runtime;

pub use errors::{netlink_ctx, netlink_err, open_pod_netns, Collected};
pub use runtime::block_on;
