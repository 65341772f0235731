//! One current-thread tokio runtime per plugin call: a plugin is a
//! short-lived process doing a handful of netlink round trips, so a worker
//! pool would only cost threads (and a netlink socket must stay on the
//! thread whose netns it was opened in anyway).

use std::future::Future;

use plexus_cni::CniError;

/// Runs `f` to completion on a fresh current-thread runtime.
pub fn block_on<T>(f: impl Future<Output = Result<T, CniError>>) -> Result<T, CniError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| CniError::io(format!("cannot start the async runtime: {e}")))?
        .block_on(f)
}
