//! What /proc says about an agent, and etcd's request counters.

use std::collections::BTreeMap;

/// An agent's memory (KiB) and CPU time so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub hwm_kib: f64,
    pub rss_kib: f64,
    pub cpu_secs: f64,
}

pub fn usage(pid: u32) -> Usage {
    // The harness's nsenter execs plexusd: the pid is the agent's own.
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert_eq!(comm.trim(), "plexusd", "pid {pid} is not an agent");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime is the
    // 14th field of the line, the 12th after ")".
    let after = stat.rsplit_once(')').map(|(_, s)| s).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| f.get(*i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Usage {
        hwm_kib: field("VmHWM:"),
        rss_kib: field("VmRSS:"),
        cpu_secs: ticks / hz,
    }
}

/// etcd's gRPC calls started, by `service/method` (from /metrics). The JSON
/// gateway plexusd speaks turns each HTTP request into one gRPC call (a
/// unary one, or a stream for watch and lease keepalive), so this counts the
/// store requests every client made.
pub fn grpc_started(metrics: &str) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    for l in metrics.lines() {
        let Some(rest) = l.strip_prefix("grpc_server_started_total{") else {
            continue;
        };
        let Some((labels, v)) = rest.rsplit_once("} ") else {
            continue;
        };
        let label = |k: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{k}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap_or_default()
        };
        let key = format!("{}/{}", label("grpc_service"), label("grpc_method"));
        *m.entry(key).or_insert(0.0) += v.trim().parse::<f64>().unwrap_or(0.0);
    }
    m
}
