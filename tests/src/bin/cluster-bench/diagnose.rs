//! What each node holds when the pods do not all reach each other: its
//! overlay and BGP routes and its sessions; with BENCH_DEBUG set, the
//! sessions that are not up and the tail of the agent's log (on stderr).

use plexus_tests::cluster::Cluster;

/// Per node, what its kernel and BGP speaker hold (on stderr), when
/// reachability was not reached.
pub fn diagnose(c: &Cluster) {
    let bin = plexus_tests::bin_dir().join("plexusctl");
    for n in &c.nodes {
        let count = |args: &[&str]| n.ip_json(args).as_array().map_or(0, Vec::len);
        let overlay = count(&["route", "show", "dev", "flannel.1"]);
        let bgp = count(&["route", "show", "proto", "114"]);
        let st =
            n.ns.cmd(&bin)
                .args(["bgp", "status", "--json", "--run-dir"])
                .arg(&n.run_dir)
                .output()
                .ok()
                .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
                .unwrap_or_default();
        let peers = st["peers"].as_array().cloned().unwrap_or_default();
        let up = peers.iter().filter(|p| p["state"] == "Established").count();
        eprintln!(
            "{} ({}): overlay routes {overlay}, BGP routes {bgp}, sessions Established {up}/{}",
            n.name,
            n.ip,
            peers.len()
        );
        if up < peers.len() && std::env::var_os("BENCH_DEBUG").is_some() {
            for p in peers.iter().filter(|p| p["state"] != "Established") {
                eprintln!("  {p}");
            }
            let log = std::fs::read_to_string(&n.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            eprintln!("  log: {}", tail.join("\n  "));
        }
    }
}
