//! The IPAM delegate of one call, run on its own thread so that an IPAM
//! that never looks at the interface works while the veth is being wired.

use std::thread::JoinHandle;

use plexus_cni::plugin::Request;
use plexus_cni::{CniEnv, CniError, CniResult};
use plexus_runtime::delegate;

/// IPAM plugins that only hand out addresses and never look at the
/// interface: their ADD can run while the veth is being set up.
const LOCAL_IPAMS: &[&str] = &["host-local", "plexus-host-local", "static", "whereabouts"];

pub fn is_local(ipam: &str) -> bool {
    LOCAL_IPAMS.contains(&ipam)
}

/// A delegate call running on its own thread.
pub struct Job<T>(JoinHandle<Result<T, CniError>>);

impl<T: Send + 'static> Job<T> {
    fn spawn(f: impl FnOnce() -> Result<T, CniError> + Send + 'static) -> Self {
        Job(std::thread::spawn(f))
    }

    pub fn join(self) -> Result<T, CniError> {
        self.0
            .join()
            .unwrap_or_else(|_| Err(CniError::io("the IPAM thread panicked")))
    }
}

pub fn spawn_add(ipam: &str, req: &Request) -> Job<CniResult> {
    let (t, stdin, env) = (ipam.to_string(), req.stdin.to_vec(), req.env.clone());
    Job::spawn(move || delegate::add(&t, &stdin, &env))
}

pub fn spawn_del(ipam: &str, req: &Request) -> Job<()> {
    let (t, stdin, env) = (ipam.to_string(), req.stdin.to_vec(), req.env.clone());
    Job::spawn(move || delegate::del(&t, &stdin, &env))
}

/// Best-effort IPAM release after a failed ADD.
pub fn release(ipam: &str, stdin: &[u8], env: &CniEnv) {
    if let Err(e) = delegate::del(ipam, stdin, env) {
        tracing::warn!("releasing the IPAM allocation after a failed ADD: {e}");
    }
}
