//! The bottom of the workspace: what plugins, the meta plugin, the runtime,
//! plexusctl and plexusd share that is no protocol's business.
//!
//! * [`files`]: small-file I/O for state and user-named files (atomic
//!   writes that never follow a planted link, bounded reads, state
//!   directories that are refused when they are links or someone else's);
//! * [`logging`]: `tracing` to stderr or a file, never stdout.
//!
//! Nothing here knows CNI or the kernel's network API; the crates that do
//! (plexus-cni, plexus-netlink) sit above it.

pub mod files;
pub mod logging;
