//! `plexusctl node status`: asks the node agent (plexusd) over its control
//! socket `<run-dir>/plexusd.sock` for this node's lease, public IP,
//! backend, remote nodes programmed and readiness. Unlike the other `node`
//! subcommands it needs no store, only the local agent.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::Value;

#[derive(Args)]
pub struct NodeStatusCmd {
    /// plexusd's --run-dir.
    #[arg(long, default_value = "/run/plexus")]
    run_dir: PathBuf,
}

/// `json`: print plexusd's JSON answer (`plexusctl node --json status`).
pub fn run(c: NodeStatusCmd, json: bool) -> ExitCode {
    let sock = c.run_dir.join("plexusd.sock");
    let status = match query(&sock) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("plexusctl: cannot ask plexusd at {}: {e}", sock.display());
            return ExitCode::FAILURE;
        }
    };
    if let Some(err) = status.get("error").and_then(Value::as_str) {
        eprintln!("plexusctl: plexusd answered: {err}");
        return ExitCode::FAILURE;
    }
    let text = if json {
        serde_json::to_string_pretty(&status).unwrap_or_default() + "\n"
    } else {
        render(&status)
    };
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    ExitCode::SUCCESS
}

fn query(sock: &Path) -> std::io::Result<Value> {
    let mut s = UnixStream::connect(sock)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"{\"command\":\"status\"}\n")?;
    // One answer line, at most 1 MiB.
    let mut line = String::new();
    BufReader::new(s).take(1 << 20).read_line(&mut line)?;
    serde_json::from_str(&line).map_err(std::io::Error::other)
}

/// The human-readable report.
fn render(v: &Value) -> String {
    let s = |k: &str| match &v[k] {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    let mut out = String::new();
    let mut line = |label: &str, value: String| out.push_str(&format!("{label:<24}{value}\n"));
    line("node", s("node_name"));
    line("network", s("network"));
    line("backend", s("backend"));
    line("public IP", s("public_ip"));
    if !v["public_ipv6"].is_null() {
        line("public IPv6", s("public_ipv6"));
    }
    line("subnet", s("subnet"));
    if !v["subnet6"].is_null() {
        line("subnet (IPv6)", s("subnet6"));
    }
    line("leases in store", s("leases"));
    line("remote nodes programmed", s("remote_nodes_programmed"));
    line("kernel entries", s("entries"));
    let ready = if v["ready"] == Value::Bool(true) {
        "yes"
    } else {
        "no"
    };
    line("ready", ready.into());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_status_document() {
        let v = serde_json::json!({
            "node_name": "n1", "network": "/coreos.com/network", "backend": "vxlan",
            "public_ip": "192.168.0.1", "public_ipv6": null, "subnet": "10.5.1.0/24",
            "subnet6": null, "leases": 3, "remote_nodes_programmed": 2, "entries": 6, "ready": true
        });
        let t = render(&v);
        assert!(t.contains("node                    n1\n"), "{t}");
        assert!(t.contains("remote nodes programmed 2\n"), "{t}");
        assert!(t.contains("ready                   yes\n"), "{t}");
        assert!(!t.contains("IPv6"), "{t}");
    }

    #[test]
    fn no_agent_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = query(&dir.path().join("plexusd.sock")).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    }
}
