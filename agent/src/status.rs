//! What the agent reports: node status (control socket, `plexusctl node
//! status`) and Prometheus metrics (`/metrics`). One value shared by the
//! control loop, which writes it, and the listeners, which read it.

use std::fmt::Write;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;

/// Upper bounds (seconds) of the programming latency histogram.
const LATENCY_BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

/// The status document (JSON on the control socket).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct NodeStatus {
    pub node_name: String,
    /// The store prefix of the network (`/coreos.com/network`).
    pub network: String,
    pub backend: String,
    pub public_ip: Option<String>,
    pub public_ipv6: Option<String>,
    /// This node's lease: `10.5.52.0/24`.
    pub subnet: Option<String>,
    pub subnet6: Option<String>,
    /// Leases in the store, this node's included.
    pub leases: usize,
    /// Remote nodes whose entries are all in the kernel.
    pub remote_nodes_programmed: usize,
    /// Kernel entries (neighbours, FDB entries, routes) the overlay holds.
    pub entries: usize,
    pub ready: bool,
}

#[derive(Debug, Default)]
struct Counters {
    store_errors: u64,
    dataplane_errors: u64,
    /// Cumulative counts per bucket, then +Inf.
    latency_buckets: [u64; LATENCY_BUCKETS.len() + 1],
    latency_sum: f64,
}

/// The routed network's BGP gauges (absent in overlay mode).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BgpGauges {
    /// Sessions per RFC 4271 state name.
    pub sessions: std::collections::BTreeMap<String, usize>,
    pub prefixes_received: usize,
    pub prefixes_advertised: usize,
}

#[derive(Debug, Default)]
struct Inner {
    status: NodeStatus,
    counters: Counters,
    bgp: Option<BgpGauges>,
    /// Networks this agent runs (0 is one) and how many of them are ready.
    networks: usize,
    networks_ready: usize,
}

/// Shared, cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Shared(Arc<Mutex<Inner>>);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves plain data behind:
        // keep serving it.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn update(&self, f: impl FnOnce(&mut NodeStatus)) {
        f(&mut self.lock().status)
    }

    pub fn status(&self) -> NodeStatus {
        self.lock().status.clone()
    }

    /// This agent runs `n` networks (the overlay and the routed network):
    /// the node is ready when every one of them is.
    pub fn expect_networks(&self, n: usize) {
        self.lock().networks = n;
    }

    /// One network is ready (each says so once); true when that makes the
    /// node ready, and then `ready` is set. The caller writes the ready file.
    pub fn network_ready(&self) -> bool {
        let mut g = self.lock();
        g.networks_ready += 1;
        let all = g.networks_ready >= g.networks.max(1);
        if all {
            g.status.ready = true;
        }
        all
    }

    /// Adds a network's backend to the status (`vxlan + routed (BGP)`).
    pub fn add_backend(&self, name: &str) {
        let mut g = self.lock();
        let b = &mut g.status.backend;
        if b.is_empty() {
            *b = name.to_string();
        } else if !b.split(" + ").any(|x| x == name) {
            b.push_str(" + ");
            b.push_str(name);
        }
    }

    pub fn store_error(&self) {
        self.lock().counters.store_errors += 1;
    }

    pub fn dataplane_errors(&self, n: usize) {
        self.lock().counters.dataplane_errors += n as u64;
    }

    /// Records how long one round of programming took.
    pub fn programmed_in(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let mut g = self.lock();
        let c = &mut g.counters;
        c.latency_sum += secs;
        for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
            if secs <= *le {
                c.latency_buckets[i] += 1;
            }
        }
        c.latency_buckets[LATENCY_BUCKETS.len()] += 1;
    }

    /// The routed network's BGP gauges, refreshed by its control loop.
    pub fn set_bgp(&self, g: BgpGauges) {
        self.lock().bgp = Some(g);
    }

    /// How many rounds of programming have been recorded.
    pub fn rounds(&self) -> u64 {
        self.lock().counters.latency_buckets[LATENCY_BUCKETS.len()]
    }

    /// The Prometheus text exposition.
    pub fn metrics(&self) -> String {
        let g = self.lock();
        let (s, c) = (&g.status, &g.counters);
        let mut o = String::new();
        let mut gauge = |name: &str, help: &str, kind: &str, v: String| {
            let _ = writeln!(o, "# HELP plexusd_{name} {help}");
            let _ = writeln!(o, "# TYPE plexusd_{name} {kind}");
            let _ = writeln!(o, "plexusd_{name} {v}");
        };
        gauge(
            "leases",
            "Subnet leases in the store, this node's included.",
            "gauge",
            s.leases.to_string(),
        );
        gauge(
            "remote_nodes_programmed",
            "Remote nodes whose routes, neighbours and FDB entries are in the kernel.",
            "gauge",
            s.remote_nodes_programmed.to_string(),
        );
        gauge(
            "kernel_entries",
            "Neighbours, FDB entries and routes the overlay holds in the kernel.",
            "gauge",
            s.entries.to_string(),
        );
        gauge(
            "ready",
            "1 when the lease is held and the data plane programmed.",
            "gauge",
            u8::from(s.ready).to_string(),
        );
        gauge(
            "store_errors_total",
            "Failed store requests (config, lease, list, watch, renew).",
            "counter",
            c.store_errors.to_string(),
        );
        gauge(
            "dataplane_errors_total",
            "Kernel changes that failed.",
            "counter",
            c.dataplane_errors.to_string(),
        );
        let name = "plexusd_programming_latency_seconds";
        let _ = writeln!(
            o,
            "# HELP {name} Time from a store change (or a resync) to the kernel being programmed."
        );
        let _ = writeln!(o, "# TYPE {name} histogram");
        for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
            let _ = writeln!(o, "{name}_bucket{{le=\"{le}\"}} {}", c.latency_buckets[i]);
        }
        let total = c.latency_buckets[LATENCY_BUCKETS.len()];
        let _ = writeln!(o, "{name}_bucket{{le=\"+Inf\"}} {total}");
        let _ = writeln!(o, "{name}_sum {}", c.latency_sum);
        let _ = writeln!(o, "{name}_count {total}");
        if let Some(b) = &g.bgp {
            bgp_metrics(&mut o, b);
        }
        o
    }
}

fn bgp_metrics(o: &mut String, b: &BgpGauges) {
    let _ = writeln!(o, "# HELP plexusd_bgp_sessions BGP sessions by state.");
    let _ = writeln!(o, "# TYPE plexusd_bgp_sessions gauge");
    for (state, n) in &b.sessions {
        let _ = writeln!(o, "plexusd_bgp_sessions{{state=\"{state}\"}} {n}");
    }
    for (name, help, v) in [
        (
            "bgp_prefixes_received",
            "Prefixes received from all peers.",
            b.prefixes_received,
        ),
        (
            "bgp_prefixes_advertised",
            "Prefixes advertised to all peers.",
            b.prefixes_advertised,
        ),
    ] {
        let _ = writeln!(o, "# HELP plexusd_{name} {help}");
        let _ = writeln!(o, "# TYPE plexusd_{name} gauge");
        let _ = writeln!(o, "plexusd_{name} {v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_network_is_ready_alone() {
        let s = Shared::default();
        assert!(s.network_ready());
        assert!(s.status().ready);
    }

    #[test]
    fn two_networks_are_ready_together() {
        let s = Shared::default();
        s.expect_networks(2);
        s.add_backend("vxlan");
        assert!(!s.network_ready());
        assert!(!s.status().ready);
        s.add_backend("routed (BGP)");
        s.add_backend("vxlan");
        assert!(s.network_ready());
        let st = s.status();
        assert!(st.ready);
        assert_eq!(st.backend, "vxlan + routed (BGP)");
    }

    #[test]
    fn metrics_text() {
        let s = Shared::default();
        s.update(|st| {
            st.leases = 3;
            st.remote_nodes_programmed = 2;
            st.ready = true;
        });
        s.store_error();
        s.programmed_in(Duration::from_millis(3));
        s.programmed_in(Duration::from_millis(300));
        let m = s.metrics();
        for line in [
            "plexusd_leases 3",
            "plexusd_remote_nodes_programmed 2",
            "plexusd_ready 1",
            "plexusd_store_errors_total 1",
            "plexusd_programming_latency_seconds_bucket{le=\"0.001\"} 0",
            "plexusd_programming_latency_seconds_bucket{le=\"0.005\"} 1",
            "plexusd_programming_latency_seconds_bucket{le=\"0.5\"} 2",
            "plexusd_programming_latency_seconds_bucket{le=\"+Inf\"} 2",
            "plexusd_programming_latency_seconds_count 2",
        ] {
            assert!(m.lines().any(|l| l == line), "missing {line:?} in\n{m}");
        }
        assert!(!m.contains("plexusd_bgp_"));
        let mut g = BgpGauges {
            prefixes_received: 4,
            ..Default::default()
        };
        g.sessions.insert("Established".into(), 2);
        s.set_bgp(g);
        let m = s.metrics();
        for line in [
            "plexusd_bgp_sessions{state=\"Established\"} 2",
            "plexusd_bgp_prefixes_received 4",
            "plexusd_bgp_prefixes_advertised 0",
        ] {
            assert!(m.lines().any(|l| l == line), "missing {line:?} in\n{m}");
        }
    }
}
