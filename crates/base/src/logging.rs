//! Logging for plugin binaries: `tracing` to stderr or a file, never stdout,
//! because stdout carries the CNI result.
//!
//! The level comes from `PLEXUS_LOG` (`level` or `target=level,...`
//! directives, default `warn`) or from a config's `logLevel` (also Multus's
//! `verbose` and `panic`); the destination from a config's `logFile`
//! (appended to), else stderr.
//!
//! Filtering uses `Targets`, not `EnvFilter`: EnvFilter drags in a regex
//! engine, a few hundred KiB of code that a plugin's peak RSS would pay for.
//! When none of the three is set (the common case on a node), a minimal
//! subscriber prints warnings and errors to stderr: the `fmt` machinery costs
//! more start-up time and memory than a whole short-lived plugin call
//! otherwise needs.

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::Path;
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Install the global subscriber. Safe to call more than once: later calls
/// are ignored (the first configuration wins).
pub fn init(level: Option<&str>, file: Option<&Path>) {
    let env = std::env::var("PLEXUS_LOG").ok();
    if env.is_none() && level.is_none() && file.is_none() {
        let _ = tracing::subscriber::set_global_default(WarnToStderr);
        return;
    }
    let filter = env
        .as_deref()
        .or(level)
        .and_then(parse_filter)
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::WARN));
    // The builder filters at INFO by default; `filter` decides instead.
    let builder = tracing_subscriber::fmt()
        .with_target(false)
        .with_max_level(LevelFilter::TRACE);
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
            .finish()
            .with(filter)
            .try_init(),
        None => builder
            .with_writer(std::io::stderr)
            .finish()
            .with(filter)
            .try_init(),
    };
}

/// `debug`, `plexus_meta=trace,warn`, or one of Multus's `logLevel` words
/// (`verbose` = trace, `panic` = error). None when it does not parse.
fn parse_filter(directives: &str) -> Option<Targets> {
    let d = directives.trim().to_ascii_lowercase();
    let d = match d.as_str() {
        "verbose" => "trace",
        "panic" => "error",
        other => other,
    };
    d.parse().ok()
}

/// The default subscriber: WARN and ERROR events, one line each on stderr
/// (`LEVEL message key=value ...`). Spans are not tracked.
struct WarnToStderr;

impl Subscriber for WarnToStderr {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= Level::WARN
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::WARN)
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut line = format!("{:>5} ", event.metadata().level());
        let mut fields = Fields {
            message: String::new(),
            rest: String::new(),
        };
        event.record(&mut fields);
        line.push_str(&fields.message);
        line.push_str(&fields.rest);
        line.push('\n');
        let _ = std::io::stderr().write_all(line.as_bytes());
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

struct Fields {
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse() {
        let t = parse_filter("debug").unwrap();
        assert!(t.would_enable("anything", &Level::DEBUG));
        assert!(!t.would_enable("anything", &Level::TRACE));
        let t = parse_filter("VERBOSE").unwrap();
        assert!(t.would_enable("x", &Level::TRACE));
        let t = parse_filter("panic").unwrap();
        assert!(!t.would_enable("x", &Level::WARN));
        assert!(t.would_enable("x", &Level::ERROR));
        let t = parse_filter("warn,plexus_meta=trace").unwrap();
        assert!(t.would_enable("plexus_meta::plan", &Level::TRACE));
        assert!(!t.would_enable("plexus_runtime", &Level::INFO));
        assert!(parse_filter("plexus=loud").is_none());
    }

    #[test]
    fn default_subscriber_levels() {
        let s = WarnToStderr;
        let d = tracing::Dispatch::new(s);
        tracing::dispatcher::with_default(&d, || {
            assert!(tracing::enabled!(Level::ERROR));
            assert!(tracing::enabled!(Level::WARN));
            assert!(!tracing::enabled!(Level::INFO));
            assert!(!tracing::enabled!(Level::DEBUG));
            tracing::warn!(code = 7, "printed to stderr");
        });
    }
}
