//! The control socket `<run-dir>/plexusd.sock`: one JSON request line in
//! (`{"command":"status"}`), one JSON answer line out. `plexusctl node
//! status` is its client. Root only (mode 0600).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::status::Shared;

/// Requests are tiny; anything longer is refused.
const MAX_REQUEST: usize = 4096;

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
pub async fn serve(listener: UnixListener, status: Shared) {
    loop {
        match listener.accept().await {
            Ok((conn, _)) => {
                let status = status.clone();
                tokio::spawn(async move {
                    let r = tokio::time::timeout(Duration::from_secs(5), answer(conn, &status));
                    if let Ok(Err(e)) | Err(e) = r.await.map_err(anyhow::Error::from) {
                        tracing::debug!(error = %e, "control socket request failed");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The answer to one request line.
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

async fn answer(conn: UnixStream, status: &Shared) -> anyhow::Result<()> {
    let (r, mut w) = conn.into_split();
    let mut line = String::new();
    let mut r = BufReader::new(r).take(MAX_REQUEST as u64);
    r.read_line(&mut line).await?;
    let mut out = serde_json::to_vec(&respond(&line, status))?;
    out.push(b'\n');
    w.write_all(&out).await?;
    w.shutdown().await?;
    Ok(())
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
}
