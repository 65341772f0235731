//! Logging for plugin binaries: `tracing` to stderr or a file, never stdout,
//! because stdout carries the CNI result.
//!
//! The level comes from `PLEXUS_LOG` (an `EnvFilter` directive, default
//! `warn`) or from a config's `logLevel`; the destination from a config's
//! `logFile` (appended to), else stderr.

use std::fs::OpenOptions;
use std::path::Path;
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;

/// Install the global subscriber. Safe to call more than once: later calls
/// are ignored (the first configuration wins).
pub fn init(level: Option<&str>, file: Option<&Path>) {
    let filter = std::env::var("PLEXUS_LOG")
        .ok()
        .or_else(|| level.map(|l| l.to_ascii_lowercase()))
        .and_then(|d| EnvFilter::try_new(d).ok())
        .unwrap_or_else(|| EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let opened = file.and_then(|p| {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .map_err(|e| eprintln!("plexus: cannot open log file {}: {e}", p.display()))
            .ok()
    });
    let _ = match opened {
        Some(f) => builder
            .with_ansi(false)
            .with_writer(Mutex::new(f))
            .try_init(),
        None => builder.with_writer(std::io::stderr).try_init(),
    };
}
