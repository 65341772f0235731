//! The CNI protocol as plugins and runtimes speak it: spec versions, the `CNI_*`
//! environment, network configuration, results (with conversion between result
//! formats) and error JSON, plus a small skeleton so a plugin only writes its
//! ADD/DEL/CHECK/STATUS/GC handlers.
//!
//! Nothing here touches the network or the file system; this crate is pure
//! data and I/O on stdin/stdout, so it can be unit-tested without root. The
//! small-file helpers and logging every plugin needs are plexus-base's.

pub mod args;
pub mod command;
pub mod config;
pub mod env;
pub mod error;
pub mod panic;
pub mod plugin;
pub mod result;
pub mod validate;
pub mod version;

pub use command::Command;
pub use config::NetConf;
pub use env::CniEnv;
pub use error::{CniError, ErrorCode};
pub use result::{CniResult, Dns, Interface, IpConfig, Route};
pub use version::SpecVersion;
