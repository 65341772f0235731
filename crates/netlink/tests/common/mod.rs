//! Helpers for root integration tests: every test builds its topology in
//! network namespaces it creates and deletes itself (never the root netns).

#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};

use plexus_netlink::{netns, Netlink, Netns};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// True when the tests can run; otherwise prints why (stderr) and the test
/// returns. Under `PLEXUS_REQUIRE_ALL=1` (scripts/test.sh, CI), where every
/// prerequisite is installed, not being root fails the test instead, like
/// every other skip (plexus-tests' `skip`).
pub fn root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        !require_all(),
        "PLEXUS_REQUIRE_ALL=1 and {test} cannot run: it needs root (network namespaces)"
    );
    eprintln!("SKIP: {test}: needs root (network namespaces)");
    false
}

/// Say why a test cannot run: a SKIP line, or a failure under
/// `PLEXUS_REQUIRE_ALL=1`. The caller returns.
pub fn skip(why: &str) {
    assert!(
        !require_all(),
        "PLEXUS_REQUIRE_ALL=1 and this test cannot run: {why}"
    );
    eprintln!("SKIP: {why}");
}

fn require_all() -> bool {
    std::env::var_os("PLEXUS_REQUIRE_ALL").is_some_and(|v| v == "1")
}

/// A uniquely named netns (`plxnl-<pid>-<n>`), deleted on drop even if the
/// test panics.
pub struct TestNs {
    pub name: String,
    pub ns: Netns,
}

impl TestNs {
    pub fn new() -> TestNs {
        let name = format!(
            "plxnl-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        netns::create_named(&name).expect("create test netns");
        let guard = Cleanup(name.clone());
        let ns = Netns::open_named(&name).expect("open test netns");
        std::mem::forget(guard);
        TestNs { name, ns }
    }

    pub async fn nl(&self) -> Netlink {
        Netlink::open(&self.ns)
            .await
            .expect("open netlink in test netns")
    }
}

struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = netns::delete_named(&self.0);
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        if let Err(e) = netns::delete_named(&self.name) {
            eprintln!("cleanup of netns {} failed: {e}", self.name);
        }
    }
}
