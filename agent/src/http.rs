//! The optional `--metrics-addr` listener: `/metrics` (Prometheus text),
//! `/healthz` (the process answers) and `/readyz` (lease held, data plane
//! programmed). A few lines of HTTP/1.0 over tokio, not a web framework:
//! the agent must stay small.

use std::time::Duration;
use tracing::Instrument;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::status::Shared;

const MAX_REQUEST: usize = 8192;

/// (status line, content type, body) for a request path.
pub fn route(path: &str, status: &Shared) -> (&'static str, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    match path {
        "/metrics" => ("200 OK", "text/plain; version=0.0.4", status.metrics()),
        "/healthz" => ("200 OK", TEXT, "ok\n".into()),
        "/readyz" if status.status().ready => ("200 OK", TEXT, "ready\n".into()),
        "/readyz" => ("503 Service Unavailable", TEXT, "not ready\n".into()),
        _ => ("404 Not Found", TEXT, "not found\n".into()),
    }
}

/// Serves until the task is dropped.
pub async fn serve(listener: TcpListener, status: Shared) {
    loop {
        match listener.accept().await {
            Ok((conn, _)) => {
                let status = status.clone();
                tokio::spawn(
                    async move {
                        let _ = tokio::time::timeout(Duration::from_secs(5), answer(conn, &status))
                            .await;
                    }
                    .in_current_span(),
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics listener accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn answer(mut conn: TcpStream, status: &Shared) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < MAX_REQUEST {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let mut words = head.split_whitespace();
    let (code, ctype, body) = match (words.next(), words.next()) {
        (Some("GET"), Some(path)) => route(path.split('?').next().unwrap_or(path), status),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "GET only\n".into(),
        ),
    };
    let reply = format!(
        "HTTP/1.0 {code}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(reply.as_bytes()).await?;
    conn.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_status() {
        let s = Shared::default();
        assert_eq!(route("/readyz", &s).0, "503 Service Unavailable");
        s.update(|st| st.ready = true);
        assert_eq!(route("/readyz", &s).0, "200 OK");
        assert_eq!(route("/healthz", &s).0, "200 OK");
        assert!(route("/metrics", &s).2.contains("plexusd_ready 1"));
        assert_eq!(route("/nope", &s).0, "404 Not Found");
    }
}
