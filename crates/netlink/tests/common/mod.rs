//! Helpers for root integration tests: every test builds its topology in
//! network namespaces it creates and deletes itself (never the root netns).

#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};

use plexus_netlink::{netns, Netlink, Netns};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// True when the tests can run; otherwise prints why (stderr) and the test returns.
pub fn root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        true
    } else {
        eprintln!("skipping {test}: needs root (network namespaces)");
        false
    }
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
