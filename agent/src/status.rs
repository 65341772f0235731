//! What the agent reports: node status (control socket, `plexusctl node
//! status`) and Prometheus metrics (`/metrics`). One value shared by the
//! control loop, which writes it, and the listeners, which read it.

use std::fmt::Write;
use std::path::Path;
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
    /// The control socket answers cluster-IPAM requests (from the moment
    /// the store is open, whatever the networks wait for).
    pub cluster_ipam: bool,
    /// Why the node is not ready now although it was (a network waiting
    /// for the store to hold its config again), by network.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub waiting: std::collections::BTreeMap<String, String>,
    /// Store records skipped because they failed a check, key → why.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub skipped_records: std::collections::BTreeMap<String, String>,
}

impl NodeStatus {
    /// Record one network's backend. An agent serving the overlay and the
    /// routed network reports both ("routed (BGP) + vxlan", sorted, so the
    /// order they start in does not show), not whichever wrote last.
    pub fn add_backend(&mut self, name: &str) {
        let mut all: Vec<&str> = self
            .backend
            .split(" + ")
            .filter(|b| !b.is_empty())
            .collect();
        if !all.contains(&name) {
            all.push(name);
        }
        all.sort_unstable();
        self.backend = all.join(" + ");
    }
}

/// Events the agent counts (Prometheus counters `plexusd_<name>_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Event {
    /// A store record failed a check and was skipped (each record once).
    RecordSkipped,
    /// Another writer changed this node's own lease.
    LeaseConflict,
    /// The store lost this node's records (config gone, or reset).
    StoreLost,
    /// Records this node held were written back after the store lost them.
    Reregistered,
    /// A kernel entry was not written because one that is not ours holds
    /// its place (a route of another protocol, a connected route).
    NotOurs,
}

impl Event {
    pub const ALL: [Event; 5] = [
        Event::RecordSkipped,
        Event::LeaseConflict,
        Event::StoreLost,
        Event::Reregistered,
        Event::NotOurs,
    ];

    fn name(self) -> &'static str {
        match self {
            Event::RecordSkipped => "store_records_skipped",
            Event::LeaseConflict => "lease_conflicts",
            Event::StoreLost => "store_lost",
            Event::Reregistered => "records_reregistered",
            Event::NotOurs => "kernel_entries_not_ours",
        }
    }

    fn help(self) -> &'static str {
        match self {
            Event::RecordSkipped => "Store records skipped because they failed a check (counted once per record and reason).",
            Event::LeaseConflict => "Times another writer changed this node's lease (it was re-asserted).",
            Event::StoreLost => "Times the store lost this node's network config or records (the data plane stayed; the agent waited).",
            Event::Reregistered => "Records this node held that it wrote back to the store after the store lost them.",
            Event::NotOurs => "Kernel entries not written because an entry of someone else holds their place.",
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    store_errors: u64,
    programming_failures: u64,
    events: std::collections::BTreeMap<Event, u64>,
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
    dataplane: Option<crate::dataplane::Stats>,
    /// Each store informer's counters, by what it follows.
    informers: std::collections::BTreeMap<&'static str, Arc<plexus_store::informer::Stats>>,
    status: NodeStatus,
    counters: Counters,
    bgp: Option<BgpGauges>,
    /// Networks still to report ready; `None` is one (the usual agent).
    networks_pending: Option<usize>,
    /// Every network has reported ready once.
    all_reported: bool,
    /// Metrics text of parts that keep their own (network policy).
    extra_metrics: std::collections::BTreeMap<&'static str, String>,
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
    /// it is ready once every one of them is.
    pub fn expect_networks(&self, n: usize) {
        self.lock().networks_pending = Some(n);
    }

    /// One network is ready (each calls this once). When it was the last,
    /// the node is ready: the status says so and `<run_dir>/ready` is
    /// written; returns whether that happened.
    pub fn network_ready(&self, run_dir: &Path) -> anyhow::Result<bool> {
        {
            let mut g = self.lock();
            let left = g.networks_pending.unwrap_or(1).saturating_sub(1);
            g.networks_pending = Some(left);
            if left > 0 {
                return Ok(false);
            }
            g.all_reported = true;
            if !g.status.waiting.is_empty() {
                return Ok(false);
            }
            g.status.ready = true;
        }
        crate::runfiles::mark_ready(run_dir)?;
        Ok(true)
    }

    pub fn store_error(&self) {
        self.lock().counters.store_errors += 1;
    }

    pub fn count(&self, e: Event, n: u64) {
        *self.lock().counters.events.entry(e).or_default() += n;
    }

    /// How often `e` was counted.
    pub fn counted(&self, e: Event) -> u64 {
        self.lock().counters.events.get(&e).copied().unwrap_or(0)
    }

    /// `network` waits (`Some(why)`: the store lost its config) or is back
    /// (`None`). While any network waits the node is not ready and
    /// `<run_dir>/ready` is gone, so CNI ADDs that check it get code 11;
    /// the data plane stays as it is.
    pub fn set_waiting(&self, run_dir: &Path, network: &str, why: Option<&str>) {
        let (was, now) = {
            let mut g = self.lock();
            let was = g.status.ready;
            match why {
                Some(w) => {
                    g.status.waiting.insert(network.to_string(), w.to_string());
                }
                None => {
                    g.status.waiting.remove(network);
                }
            }
            g.status.ready = g.all_reported && g.status.waiting.is_empty();
            (was, g.status.ready)
        };
        match (was, now) {
            (true, false) => crate::runfiles::clear_ready(run_dir),
            (false, true) => {
                if let Err(e) = crate::runfiles::mark_ready(run_dir) {
                    tracing::warn!(error = %e, "cannot write the readiness file");
                }
            }
            _ => {}
        }
    }

    /// The store records skipped now (key → why), for status.
    pub fn set_skipped_records(&self, bad: std::collections::BTreeMap<String, String>) {
        self.lock().status.skipped_records = bad;
    }

    /// `n` entries a network asked for did not get into the kernel (the
    /// kernel refused them, or an entry not ours holds their place).
    pub fn programming_failed(&self, n: usize) {
        self.lock().counters.programming_failures += n as u64;
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

    /// The data plane's figures, refreshed by the agent.
    pub fn set_dataplane(&self, s: crate::dataplane::Stats) {
        self.lock().dataplane = Some(s);
    }

    /// Report the counters of the informer following `source` (`leases`,
    /// `routed records`, `nodes`) in the metrics.
    pub fn add_informer(&self, source: &'static str, stats: Arc<plexus_store::informer::Stats>) {
        self.lock().informers.insert(source, stats);
    }

    /// A part's own metrics text (network policy's), appended to /metrics
    /// as given; replaces what `part` set before.
    pub fn set_extra_metrics(&self, part: &'static str, text: String) {
        self.lock().extra_metrics.insert(part, text);
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
            "programming_failures_total",
            "Entries a network asked for that did not get into the kernel (refused, or held by an entry not ours).",
            "counter",
            c.programming_failures.to_string(),
        );
        for e in Event::ALL {
            gauge(
                &format!("{}_total", e.name()),
                e.help(),
                "counter",
                c.events.get(&e).copied().unwrap_or(0).to_string(),
            );
        }
        gauge(
            "store_records_skipped",
            "Store records skipped now because they fail a check.",
            "gauge",
            s.skipped_records.len().to_string(),
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
        if let Some(d) = &g.dataplane {
            dataplane_metrics(&mut o, d);
        }
        informer_metrics(&mut o, &g.informers);
        for text in g.extra_metrics.values() {
            o.push_str(text);
        }
        o
    }
}

fn informer_metrics(
    o: &mut String,
    informers: &std::collections::BTreeMap<&'static str, Arc<plexus_store::informer::Stats>>,
) {
    if informers.is_empty() {
        return;
    }
    let counts: Vec<_> = informers
        .iter()
        .map(|(src, s)| (*src, s.counts()))
        .collect();
    type Pick = fn(&plexus_store::informer::Counts) -> u64;
    let series: [(&str, &str, &str, Pick); 3] = [
        (
            "informer_lists_total",
            "Lists of the store made by each informer (the first included).",
            "counter",
            |c| c.lists,
        ),
        (
            "informer_refused_total",
            "Store records an informer refused as malformed (each version once).",
            "counter",
            |c| c.refused_total,
        ),
        (
            "informer_refused",
            "Store records refused as malformed now.",
            "gauge",
            |c| c.refused,
        ),
    ];
    for (name, help, kind, pick) in series {
        let _ = writeln!(o, "# HELP plexusd_{name} {help}");
        let _ = writeln!(o, "# TYPE plexusd_{name} {kind}");
        for (src, c) in &counts {
            let _ = writeln!(o, "plexusd_{name}{{source=\"{src}\"}} {}", pick(c));
        }
    }
    let name = "informer_watch_restarts_total";
    let _ = writeln!(
        o,
        "# HELP plexusd_{name} Watches an informer replaced, by why: history gone (compaction, 410), broken, silent."
    );
    let _ = writeln!(o, "# TYPE plexusd_{name} counter");
    for (src, c) in &counts {
        for (reason, v) in [
            ("compacted", c.compacted),
            ("broken", c.broken),
            ("silent", c.silent),
        ] {
            let _ = writeln!(
                o,
                "plexusd_{name}{{source=\"{src}\",reason=\"{reason}\"}} {v}"
            );
        }
    }
}

fn dataplane_metrics(o: &mut String, d: &crate::dataplane::Stats) {
    let _ = writeln!(
        o,
        "# HELP plexusd_dataplane_desired Kernel entries the producers want, by owner."
    );
    let _ = writeln!(o, "# TYPE plexusd_dataplane_desired gauge");
    for (owner, n) in &d.desired {
        let _ = writeln!(o, "plexusd_dataplane_desired{{owner=\"{owner}\"}} {n}");
    }
    for (name, help, kind, v) in [
        (
            "dataplane_programmed",
            "Kernel entries in place as wanted.",
            "gauge",
            d.programmed as u64,
        ),
        (
            "dataplane_failing",
            "Kernel entries whose last change failed (retried).",
            "gauge",
            d.failing as u64,
        ),
        (
            "dataplane_not_ours",
            "Kernel entries not written: an entry that is not ours holds their place.",
            "gauge",
            d.not_ours as u64,
        ),
        (
            "dataplane_repaired_total",
            "Entries of ours changed or deleted by someone else and put back.",
            "counter",
            d.repaired,
        ),
        (
            "dataplane_changes_total",
            "Kernel changes applied.",
            "counter",
            d.applied,
        ),
        (
            "dataplane_errors_total",
            "Kernel changes and listings that failed.",
            "counter",
            d.errors,
        ),
        (
            "dataplane_resyncs_total",
            "Full listings of the kernel.",
            "counter",
            d.resyncs,
        ),
    ] {
        let _ = writeln!(o, "# HELP plexusd_{name} {help}");
        let _ = writeln!(o, "# TYPE plexusd_{name} {kind}");
        let _ = writeln!(o, "plexusd_{name} {v}");
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
    fn both_networks_show_in_the_backend() {
        let mut s = NodeStatus::default();
        s.add_backend("vxlan");
        assert_eq!(s.backend, "vxlan");
        s.add_backend("vxlan");
        assert_eq!(
            s.backend, "vxlan",
            "a lease renewed is not a second network"
        );
        s.add_backend("routed (BGP)");
        assert_eq!(s.backend, "routed (BGP) + vxlan");
        let mut t = NodeStatus::default();
        t.add_backend("routed (BGP)");
        t.add_backend("vxlan");
        assert_eq!(
            t.backend, s.backend,
            "the order they start in does not matter"
        );
    }

    #[test]
    fn ready_once_every_network_is() {
        let dir = tempfile::tempdir().unwrap();
        let ready = dir.path().join(crate::runfiles::READY);
        // One network (the usual agent): ready at once.
        let one = Shared::default();
        assert!(one.network_ready(dir.path()).unwrap());
        assert!(one.status().ready && ready.exists());
        std::fs::remove_file(&ready).unwrap();
        // Overlay and routed network in one agent: ready after both.
        let both = Shared::default();
        both.expect_networks(2);
        assert!(!both.network_ready(dir.path()).unwrap());
        assert!(!both.status().ready && !ready.exists());
        assert!(both.network_ready(dir.path()).unwrap());
        assert!(both.status().ready && ready.exists());
        // A network waiting for the store takes readiness away until back.
        both.set_waiting(dir.path(), "routed", Some("no pools"));
        assert!(!both.status().ready && !ready.exists());
        assert_eq!(both.status().waiting["routed"], "no pools");
        both.set_waiting(dir.path(), "overlay", Some("no config"));
        both.set_waiting(dir.path(), "routed", None);
        assert!(!both.status().ready && !ready.exists());
        both.set_waiting(dir.path(), "overlay", None);
        assert!(both.status().ready && ready.exists());
        // Waiting before the first readiness holds it back too.
        let early = Shared::default();
        early.set_waiting(dir.path(), "overlay", Some("no config"));
        std::fs::remove_file(&ready).unwrap();
        assert!(!early.network_ready(dir.path()).unwrap());
        assert!(!ready.exists());
        early.set_waiting(dir.path(), "overlay", None);
        assert!(early.status().ready && ready.exists());
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
