//! A panicking plugin still answers in CNI: release builds abort on panic
//! (`panic = "abort"`), so without this hook the runtime would get an empty
//! stdout and a signal. The hook prints a CNI error JSON (code
//! [`plexus_codes::PANICKED`], the message, where it happened) on stdout
//! and aborts, in debug builds too, so both builds behave the same and a
//! panic never leaves a second answer behind.

use std::io::Write;
use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd;
use std::sync::OnceLock;

use crate::error::{plexus_codes, CniError};
use crate::version::SpecVersion;

/// The environment variable that makes a debug build panic once the config
/// is parsed, so tests can watch the hook work through a real process.
/// Release builds ignore it.
pub const TEST_TRIGGER: &str = "PLEXUS_TEST_PANIC";

static VERSION: OnceLock<SpecVersion> = OnceLock::new();

/// The version the answer should carry, once the config is parsed.
pub(crate) fn set_version(v: SpecVersion) {
    let _ = VERSION.set(v);
}

/// Panics when [`TEST_TRIGGER`] is set, in debug builds only.
pub(crate) fn test_trigger() {
    #[cfg(debug_assertions)]
    if std::env::var_os(TEST_TRIGGER).is_some() {
        panic!("{TEST_TRIGGER} is set: a deliberate panic (debug builds only)");
    }
}

/// The error a panic with `message` at `location` answers with.
pub fn panic_error(message: &str, location: Option<String>) -> CniError {
    let version = VERSION.get().copied().unwrap_or(SpecVersion::LATEST);
    let e = CniError::plugin(
        plexus_codes::PANICKED,
        format!("the plugin panicked: {message}"),
    )
    .with_version(version.as_str());
    match location {
        Some(l) => e.with_details(format!("at {l}")),
        None => e,
    }
}

/// Installs the hook (once per process, from [`crate::plugin::run`]).
pub fn install() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".to_string());
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
        let json = panic_error(&message, location).to_json();
        // Straight to fd 1: the stdout lock may be held by the code that
        // panicked.
        // SAFETY: fd 1 stays open for the process's life; ManuallyDrop
        // keeps this File from closing it.
        let mut out = ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(1) });
        let _ = out.write_all(json.as_bytes());
        // The usual message (and backtrace) on stderr, for the logs.
        default(info);
        std::process::abort();
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_names_message_and_place() {
        let e = panic_error("boom", Some("src/x.rs:1:2".into()));
        let v: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(v["code"], plexus_codes::PANICKED);
        assert_eq!(v["msg"], "the plugin panicked: boom");
        assert_eq!(v["details"], "at src/x.rs:1:2");
        assert!(v["cniVersion"].is_string());
    }
}
