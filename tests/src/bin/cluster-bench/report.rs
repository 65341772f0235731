//! The report's lines: aligned rows, seconds, percentiles, the agents'
//! memory and CPU, the machine's load.

use std::time::Duration;

use crate::procs;

/// Seconds as "1.234 s".
pub fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

pub fn median(v: &mut [f64]) -> f64 {
    percentile(v, 50.0)
}

/// Nearest-rank percentile.
pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank - 1]
}

pub fn row(label: &str, value: String, note: &str) {
    println!("{label:<62} {value:>14}  {note}");
}

pub fn target(ok: bool, what: &str) -> String {
    format!("({what}: {})", if ok { "met" } else { "MISSED" })
}

/// Median and largest peak RSS, RSS and CPU of the agents (CPU since
/// `since` when given).
pub fn mem_rows(when: &str, now: &[procs::Usage], since: Option<&[procs::Usage]>) {
    let mib = |f: fn(&procs::Usage) -> f64| {
        let mut v: Vec<f64> = now.iter().map(|u| f(u) / 1024.0).collect();
        format!(
            "{:.1} / {:.1} MiB",
            median(&mut v),
            percentile(&mut v, 100.0)
        )
    };
    row(
        &format!("agent peak RSS (VmHWM) {when}, median / max"),
        mib(|u| u.hwm_kib),
        "(target < 20 MiB)",
    );
    row(
        &format!("agent RSS (VmRSS) {when}, median / max"),
        mib(|u| u.rss_kib),
        "",
    );
    let mut cpu: Vec<f64> = match since {
        Some(b) => now
            .iter()
            .zip(b)
            .map(|(n, b)| n.cpu_secs - b.cpu_secs)
            .collect(),
        None => now.iter().map(|u| u.cpu_secs).collect(),
    };
    let what = if since.is_some() {
        "CPU during the rest"
    } else {
        "CPU since start"
    };
    row(
        &format!("agent {what}, median / max"),
        format!(
            "{:.2} / {:.2} s",
            median(&mut cpu),
            percentile(&mut cpu, 100.0)
        ),
        "",
    );
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
