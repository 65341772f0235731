//! The control socket `<run-dir>/plexusd.sock`: one JSON request line in
//! (`{"command":"status"}`), one JSON answer line out. `plexusctl node
//! status` is its client. Root only (mode 0600).
//!
//! The other commands of `plexus_agent_api::Request` (`allocate`,
//! `release`, `gc`, `bgp_status`) go to the network model that installed a
//! [`Handler`] in the [`Handlers`] slot (the routed network does); until
//! one is there they are answered with code 11 (try again later).

use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tracing::Instrument;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::status::Shared;

/// Answers the requests beyond `status`.
#[async_trait::async_trait]
pub trait Handler: Send + Sync {
    async fn handle(&self, request: plexus_agent_api::Request) -> serde_json::Value;
}

/// Where the running network model puts its handler; empty until ready.
pub type Handlers = std::sync::Arc<std::sync::Mutex<Option<std::sync::Arc<dyn Handler>>>>;

/// CNI's "try again later".
pub const CODE_TRY_AGAIN: u32 = 11;

/// A bound on a request (a GC's list of valid attachments can be long).
const MAX_REQUEST: usize = 1 << 20;

/// Binds the socket (replacing a stale one from a previous run).
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("remove stale {}", path.display())),
    }
    let l = UnixListener::bind(path).with_context(|| format!("bind {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod {}", path.display()))?;
    Ok(l)
}

/// Serves requests until the task is dropped.
pub async fn serve(listener: UnixListener, status: Shared, handlers: Handlers) {
    loop {
        match listener.accept().await {
            Ok((conn, _)) => {
                let status = status.clone();
                let handlers = handlers.clone();
                tokio::spawn(
                    async move {
                        let r = tokio::time::timeout(
                            Duration::from_secs(10),
                            answer(conn, &status, &handlers),
                        );
                        if let Ok(Err(e)) | Err(e) = r.await.map_err(anyhow::Error::from) {
                            tracing::debug!(error = %e, "control socket request failed");
                        }
                    }
                    .in_current_span(),
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The answer to one request line: `status` here, the rest by the handler.
pub async fn dispatch(request: &str, status: &Shared, handlers: &Handlers) -> serde_json::Value {
    let req = match serde_json::from_str::<plexus_agent_api::Request>(request) {
        Ok(plexus_agent_api::Request::Status) | Err(_) => return respond(request, status),
        Ok(req) => req,
    };
    // Every record a request changes carries its container ID, and every
    // watcher of that record reads it again: bound it for every command.
    let max = plexus_agent_api::MAX_CONTAINER_ID;
    if req.container_ids().iter().any(|c| c.len() > max) {
        return serde_json::json!({
            "error": format!("a container ID longer than {max} bytes is refused"),
            "code": plexus_cni::error::ErrorCode::InvalidEnvironment.code(),
        });
    }
    let handler = handlers.lock().unwrap_or_else(|p| p.into_inner()).clone();
    // One span per request: what the handler logs says which request.
    let span = tracing::info_span!(
        "request",
        command = req.command(),
        container = tracing::field::Empty
    );
    if let [one] = req.container_ids()[..] {
        span.record("container", one);
    }
    match handler {
        Some(h) => h.handle(req).instrument(span).await,
        None => serde_json::json!({
            "error": "the node agent has no routed network ready (yet)",
            "code": CODE_TRY_AGAIN,
        }),
    }
}

/// The answer to a `status` request line (and to what no one understands).
pub fn respond(request: &str, status: &Shared) -> serde_json::Value {
    let cmd = serde_json::from_str::<serde_json::Value>(request)
        .ok()
        .and_then(|v| v.get("command").and_then(|c| c.as_str()).map(str::to_owned))
        .unwrap_or_else(|| request.trim().to_owned());
    match cmd.as_str() {
        "status" => serde_json::to_value(status.status())
            .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() })),
        other => {
            serde_json::json!({ "error": format!("unknown command {other:?}; try \"status\"") })
        }
    }
}

async fn answer(conn: UnixStream, status: &Shared, handlers: &Handlers) -> anyhow::Result<()> {
    let (r, mut w) = conn.into_split();
    let mut line = String::new();
    let mut r = BufReader::new(r).take(MAX_REQUEST as u64);
    r.read_line(&mut line).await?;
    let served_by_handler = matches!(
        serde_json::from_str::<plexus_agent_api::Request>(&line),
        Ok(req) if !matches!(req, plexus_agent_api::Request::Status)
    );
    if served_by_handler && client_gone(r.get_ref().get_ref().as_ref()) {
        // A CNI plugin that timed out (this agent was frozen or slow) has
        // already answered the runtime: an address allocated now would
        // belong to no one, and its release may already have come and gone.
        tracing::info!(
            request = line.trim(),
            "client gone before its request was served; not served"
        );
        return Ok(());
    }
    let mut out = serde_json::to_vec(&dispatch(&line, status, handlers).await)?;
    out.push(b'\n');
    w.write_all(&out).await?;
    w.shutdown().await?;
    Ok(())
}

/// The client hung up after sending its request: a read past its one
/// line finds the end of the stream at once (clients wait for the answer
/// with the connection open, so the read would block).
fn client_gone(conn: &UnixStream) -> bool {
    use std::io::Read;
    let probe = || -> std::io::Result<usize> {
        // A real read(2) on the same socket (already non-blocking),
        // whatever readiness tokio has cached; only bytes beyond the
        // request line, which no one reads, could be consumed.
        let mut s = std::os::unix::net::UnixStream::from(conn.as_fd().try_clone_to_owned()?);
        s.set_nonblocking(true)?;
        s.read(&mut [0u8])
    };
    matches!(probe(), Ok(0))
}

/// Removes the socket file on shutdown.
pub fn remove(path: &PathBuf) {
    let _ = std::fs::remove_file(path);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_unknown_commands() {
        let s = Shared::default();
        s.update(|st| st.node_name = "n1".into());
        let v = respond("{\"command\":\"status\"}\n", &s);
        assert_eq!(v["node_name"], "n1");
        assert_eq!(v["ready"], false);
        assert_eq!(respond("status\n", &s)["node_name"], "n1");
        assert!(respond("{\"command\":\"reboot\"}", &s)["error"]
            .as_str()
            .unwrap()
            .contains("unknown command"));
    }

    #[tokio::test]
    async fn routed_commands_wait_for_a_handler() {
        let s = Shared::default();
        let h = Handlers::default();
        let v = dispatch(
            r#"{"command":"allocate","network":"n","container_id":"c","ifname":"eth0"}"#,
            &s,
            &h,
        )
        .await;
        assert_eq!(v["code"], CODE_TRY_AGAIN, "{v}");
        assert_eq!(dispatch("status", &s, &h).await["ready"], false);
    }

    /// Counts the requests it serves.
    struct Counting(std::sync::atomic::AtomicUsize);

    #[async_trait::async_trait]
    impl Handler for Counting {
        async fn handle(&self, _: plexus_agent_api::Request) -> serde_json::Value {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            serde_json::json!({"released": 0})
        }
    }

    #[tokio::test]
    async fn requests_of_clients_that_gave_up_are_not_served() {
        let s = Shared::default();
        let counting = std::sync::Arc::new(Counting(Default::default()));
        let h = Handlers::default();
        *h.lock().unwrap() = Some(counting.clone());
        let line = b"{\"command\":\"allocate\",\"network\":\"n\",\"container_id\":\"c\",\"ifname\":\"eth0\"}\n";
        let served = || counting.0.load(std::sync::atomic::Ordering::SeqCst);

        // The client timed out (a frozen agent) and closed before we read.
        let (mut client, server) = UnixStream::pair().unwrap();
        client.write_all(line).await.unwrap();
        drop(client);
        answer(server, &s, &h).await.unwrap();
        assert_eq!(served(), 0);

        // A waiting client is served and answered.
        let (mut client, server) = UnixStream::pair().unwrap();
        client.write_all(line).await.unwrap();
        answer(server, &s, &h).await.unwrap();
        assert_eq!(served(), 1);
        let mut got = String::new();
        client.read_to_string(&mut got).await.unwrap();
        assert!(got.contains("released"), "{got}");

        // `status` is answered even to a client that closed its side
        // (`echo status | nc -U`): it changes nothing.
        let (mut client, server) = UnixStream::pair().unwrap();
        client.write_all(b"status\n").await.unwrap();
        client.shutdown().await.unwrap();
        answer(server, &s, &h).await.unwrap();
        let mut got = String::new();
        client.read_to_string(&mut got).await.unwrap();
        assert!(got.contains("ready"), "{got}");
    }
}
