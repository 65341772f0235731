//! `plexusctl status`: every attachment the meta plugin made on this node,
//! read from its cacheDir through the meta plugin's own API
//! (`plexus_meta::cache::PlanCache`, `plexus_meta::status::FileStatusSink`),
//! so it works without the API server and never hard-codes the layout.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use plexus_meta::cache::PlanCache;
use plexus_meta::status::FileStatusSink;
use serde::Serialize;

use crate::netmodel::network_model;

#[derive(Args)]
pub struct StatusCmd {
    /// The meta plugin's cacheDir.
    #[arg(long, env = "PLEXUS_META_CACHE_DIR", default_value = plexus_meta::config::DEFAULT_CACHE_DIR)]
    cache_dir: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// One row: a pod interface and what is on it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub pod: String,
    pub container_id: String,
    pub interface: String,
    pub network: String,
    /// The delegate's first plugin type, from the plan ("" when unknown).
    pub plugin: String,
    /// The network model behind the interface (see [`network_model`]).
    pub model: String,
    pub ips: Vec<String>,
    pub mac: String,
    pub default: bool,
    /// "attached", or "pending" when ADD started (plan written) but never
    /// finished: a DEL or GC for that container is owed.
    pub state: &'static str,
}

fn pod_name(ns: &str, name: &str) -> String {
    match (ns.is_empty(), name.is_empty()) {
        (_, true) => "-".into(),
        (true, false) => name.into(),
        _ => format!("{ns}/{name}"),
    }
}

/// Collect rows from a meta cacheDir. Unreadable files are reported on
/// stderr and skipped.
pub fn collect(cache_dir: &Path) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut attached = std::collections::HashSet::new();
    let plans = PlanCache::new(cache_dir).list();
    for why in &plans.unreadable {
        eprintln!("plexusctl: skipping unreadable plan {why}");
    }
    // The status file says what the pod got, the plan which plugin made
    // each interface: keyed by (container, meta ifname, pod interface).
    let mut plugins = std::collections::HashMap::new();
    for p in &plans.items {
        for a in &p.attachments {
            if let Some(t) = a.plugin_type() {
                plugins.insert(
                    (p.container_id.clone(), p.ifname.clone(), a.ifname.clone()),
                    t.to_string(),
                );
            }
        }
    }
    let statuses = FileStatusSink::new(cache_dir).list();
    for why in &statuses.unreadable {
        eprintln!("plexusctl: skipping unreadable status file {why}");
    }
    for s in statuses.items {
        attached.insert((s.container_id.clone(), s.ifname.clone()));
        for n in s.network_status {
            let plugin = plugins
                .get(&(
                    s.container_id.clone(),
                    s.ifname.clone(),
                    n.interface.clone(),
                ))
                .cloned()
                .unwrap_or_default();
            rows.push(Row {
                model: model_of(&plugin),
                plugin,
                pod: pod_name(&s.pod_namespace, &s.pod_name),
                container_id: s.container_id.clone(),
                interface: n.interface,
                network: n.name,
                ips: n.ips,
                mac: n.mac,
                default: n.default,
                state: "attached",
            });
        }
    }
    for p in plans.items {
        if attached.contains(&(p.container_id.clone(), p.ifname.clone())) {
            continue;
        }
        for a in p.attachments {
            let plugin = a.plugin_type().unwrap_or_default().to_string();
            rows.push(Row {
                model: model_of(&plugin),
                plugin,
                pod: pod_name(&p.pod_namespace, &p.pod_name),
                container_id: p.container_id.clone(),
                interface: a.ifname,
                network: a.name,
                ips: Vec::new(),
                mac: String::new(),
                default: false,
                state: "pending",
            });
        }
    }
    rows
}

/// "-" when the plan is gone (an old status file) or names no type.
fn model_of(plugin: &str) -> String {
    if plugin.is_empty() {
        "-".into()
    } else {
        network_model(plugin).into()
    }
}

/// Container IDs are 64 hex digits; 16 tell them apart.
pub fn short(id: &str) -> &str {
    &id[..id.len().min(16)]
}

pub fn run(cmd: StatusCmd) -> ExitCode {
    let rows = collect(&cmd.cache_dir);
    // A closed pipe (e.g. `| head`) is not an error worth reporting.
    let _ = write_report(&mut std::io::stdout().lock(), &cmd, &rows);
    ExitCode::SUCCESS
}

fn write_report(out: &mut impl Write, cmd: &StatusCmd, rows: &[Row]) -> std::io::Result<()> {
    if cmd.json {
        return writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(rows).expect("serializes")
        );
    }
    if rows.is_empty() {
        return writeln!(out, "no attachments in {}", cmd.cache_dir.display());
    }
    let table: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            [
                r.pod.clone(),
                short(&r.container_id).to_string(),
                r.interface.clone(),
                r.network.clone(),
                r.model.clone(),
                if r.ips.is_empty() {
                    "-".into()
                } else {
                    r.ips.join(",")
                },
                if r.mac.is_empty() {
                    "-".into()
                } else {
                    r.mac.clone()
                },
                format!("{}{}", r.state, if r.default { " default" } else { "" }),
            ]
        })
        .collect();
    let header = [
        "POD",
        "CONTAINER",
        "IFACE",
        "NETWORK",
        "MODEL",
        "ADDRESSES",
        "MAC",
        "STATE",
    ];
    crate::table::write_table(out, header, &table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_status_and_pending_plans() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("status")).unwrap();
        std::fs::create_dir_all(d.path().join("plans")).unwrap();
        std::fs::write(
            d.path().join("status/c1-eth0.json"),
            r#"{"kind":"plexusStatusV1","containerId":"c1","ifname":"eth0","podNamespace":"default","podName":"web",
                "networkStatus":[{"name":"cluster","interface":"eth0","ips":["10.88.0.2"],"mac":"aa:bb:cc:dd:ee:ff","default":true},
                                 {"name":"default/data","interface":"net1","ips":["10.20.0.2"],"mac":"aa:bb:cc:dd:ee:00"}]}"#,
        )
        .unwrap();
        // c1 finished (status present): its plan is not listed again, but
        // says which plugin made each interface.
        std::fs::write(
            d.path().join("plans/c1-eth0.json"),
            r#"{"kind":"plexusPlanV1","containerId":"c1","ifname":"eth0","attachments":[
                {"name":"cluster","ifname":"eth0","master":true,"config":{"name":"cluster","plugins":[{"type":"plexus-vxlan"}]}},
                {"name":"default/data","ifname":"net1","master":false,"config":{"name":"data","plugins":[{"type":"plexus-bgp-routes"}]}}]}"#,
        )
        .unwrap();
        std::fs::write(
            d.path().join("plans/c2-eth0.json"),
            r#"{"kind":"plexusPlanV1","containerId":"c2","ifname":"eth0","podNamespace":"ns","podName":"db","attachments":[{"name":"cluster","ifname":"eth0","master":true,"config":{"plugins":[{"type":"macvlan"}]}}]}"#,
        )
        .unwrap();
        std::fs::write(d.path().join("plans/broken.json"), "{").unwrap();
        let rows = collect(d.path());
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].pod, "default/web");
        assert_eq!(rows[0].interface, "eth0");
        assert!(rows[0].default);
        assert_eq!(rows[0].model, "overlay");
        assert_eq!(rows[1].network, "default/data");
        assert_eq!(rows[1].plugin, "plexus-bgp-routes");
        assert_eq!(rows[1].model, "routed");
        assert_eq!(rows[2].pod, "ns/db");
        assert_eq!(rows[2].state, "pending");
        assert_eq!(rows[2].model, "macvlan");

        let cmd = StatusCmd {
            cache_dir: d.path().to_path_buf(),
            json: false,
        };
        let mut out = Vec::new();
        write_report(&mut out, &cmd, &rows).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "POD          CONTAINER  IFACE  NETWORK       MODEL    ADDRESSES  MAC                STATE",
                "default/web  c1         eth0   cluster       overlay  10.88.0.2  aa:bb:cc:dd:ee:ff  attached default",
                "default/web  c1         net1   default/data  routed   10.20.0.2  aa:bb:cc:dd:ee:00  attached",
                "ns/db        c2         eth0   cluster       macvlan  -          -                  pending",
            ],
            "{text}"
        );
    }

    #[test]
    fn a_status_without_its_plan_has_no_model() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("status")).unwrap();
        std::fs::write(
            d.path().join("status/c1-eth0.json"),
            r#"{"kind":"plexusStatusV1","containerId":"c1","ifname":"eth0","networkStatus":[{"name":"cluster","interface":"eth0"}]}"#,
        )
        .unwrap();
        let rows = collect(d.path());
        assert_eq!(rows[0].model, "-");
        assert_eq!(rows[0].plugin, "");
    }

    #[test]
    fn empty_or_missing_dir() {
        assert!(collect(Path::new("/nonexistent/plexus")).is_empty());
    }
}
