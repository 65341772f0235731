//! cluster-ipam-bench: the benchmark behind `bench/cluster-ipam.sh NODES
//! PODS_PER_NODE` (issue 21), on the harness's simulated cluster
//! (tests/src/cluster/clusteripam.rs): NODES netns sharing one macvlan
//! segment, a real etcd, plexusd on each node serving only cluster IPAM.
//!
//! Every pod gets two macvlan interfaces from the reference macvlan plugin
//! (/usr/lib/cni), called straight (`nsenter --net`, no plexusctl between):
//! net1 with plexus-cluster-ipam (one range for the whole cluster, RANGE,
//! default a /22) and net2 with plexus-host-local (a /24 per node): the same
//! ADD with node-local IPAM, in the same run, the order alternating per pod
//! so neither always runs warm.
//!
//! 1. ADD phase: per node one thread (PARALLEL threads with PARALLEL > 1)
//!    attaching its pods one after the other, all nodes at once. Reports the
//!    time until every ADD returned, ADD p50/p99 of both IPAMs and their
//!    ratio, the p99 of the first 100 cluster-IPAM ADDs (in start order,
//!    cluster-wide) against the last 100, store requests per ADD (etcd's
//!    grpc_server_started_total over the phase, by method, also net of the
//!    agents' rate at rest measured over IDLE_SECS before; the host-local
//!    ADDs make none), and duplicates (addresses given twice: results and
//!    the store's records).
//! 2. DEL phase: every pod's two DELs; then the addresses the store still
//!    holds (`plexusctl ipam show --json`) and host-local's lease files.
//!
//! Environment: PLEXUS_BIN_DIR (plexusd, plexusctl), PLEXUS_PLUGIN_DIR
//! (plexus-cluster-ipam, plexus-host-local), PLEXUS_LOG (the agents' log
//! level), RANGE, PARALLEL, IDLE_SECS (10). Everything lives in namespaces named
//! `plx-<this pid>-...`, deleted on exit; the agents and etcd are this
//! program's children, killed by pid on exit.

#![allow(clippy::print_stdout)] // the report is what this program prints

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use plexus_tests::cluster::clusteripam::{CipamNet, Store};
use plexus_tests::cluster::{Node, ETCD_IP};
use plexus_tests::{output_with_stdin, Netns};
use serde_json::{json, Value};

const REFERENCE: &str = "/usr/lib/cni";

struct Opts {
    nodes: usize,
    pods: usize,
    range: String,
    parallel: usize,
    idle_secs: u64,
    plugins: PathBuf,
}

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize| {
        a.get(i)
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|n| *n > 0)
    };
    let (Some(nodes), Some(pods)) = (num(0), num(1)) else {
        eprintln!("usage: cluster-ipam-bench NODES PODS_PER_NODE (see bench/cluster-ipam.sh)");
        std::process::exit(2);
    };
    let Some(plugins) = std::env::var_os("PLEXUS_PLUGIN_DIR").map(PathBuf::from) else {
        eprintln!("cluster-ipam-bench: PLEXUS_PLUGIN_DIR (the plugin binaries) is not set");
        std::process::exit(2);
    };
    if pods > 250 || !(1..=200).contains(&nodes) {
        eprintln!("cluster-ipam-bench: at most 200 nodes and 250 pods per node (host-local's /24)");
        std::process::exit(2);
    }
    let o = Opts {
        nodes,
        pods,
        range: std::env::var("RANGE").unwrap_or_else(|_| "10.80.0.0/22".into()),
        parallel: std::env::var("PARALLEL")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|n| *n > 0)
            .unwrap_or(1),
        idle_secs: std::env::var("IDLE_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10),
        plugins,
    };
    if let Err(e) = run(&o) {
        eprintln!("cluster-ipam-bench: {e}");
        std::process::exit(1);
    }
}

/// Both configs of one node: cluster IPAM and host-local, on macvlan.
struct Confs {
    cluster: Value,
    local: Value,
}

fn confs(o: &Opts, i: usize, n: &Node, data: &Path) -> Confs {
    let mac = |name: &str, ipam: Value| {
        json!({"cniVersion": "1.0.0", "name": name, "type": "macvlan",
               "master": "uplink0", "mode": "bridge", "ipam": ipam})
    };
    Confs {
        cluster: mac(
            "macnet",
            json!({"type": "plexus-cluster-ipam", "range": o.range, "runDir": n.run_dir}),
        ),
        local: mac(
            "macnet-hl",
            json!({"type": "plexus-host-local", "dataDir": data,
                   "ranges": [[{"subnet": format!("10.81.{i}.0/24")}]]}),
        ),
    }
}

/// One CNI call of the macvlan plugin in `node` for pod `ns`; the result.
fn call(
    o: &Opts,
    node: &Node,
    cmd: &str,
    id: &str,
    ifname: &str,
    ns: &Netns,
    conf: &Value,
) -> Result<Value, String> {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net={}", node.ns.path().display()))
        .arg(Path::new(REFERENCE).join("macvlan"))
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", ns.path())
        .env("CNI_IFNAME", ifname)
        .env(
            "CNI_ARGS",
            format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={id};K8S_POD_UID=uid-{id}"
            ),
        )
        .env("CNI_PATH", format!("{}:{REFERENCE}", o.plugins.display()));
    let out = output_with_stdin(&mut c, &serde_json::to_vec(conf).unwrap());
    if !out.status.success() {
        return Err(format!(
            "{cmd} {id}/{ifname} on {}: {}{}",
            node.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(serde_json::from_slice(&out.stdout).unwrap_or(Value::Null))
}

fn first_ip(r: &Value) -> Result<String, String> {
    r["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .map(str::to_string)
        .ok_or_else(|| format!("a CNI result without an address: {r}"))
}

/// One cluster-IPAM ADD as measured: its start order cluster-wide, its
/// time, the address.
struct Added {
    seq: usize,
    cluster: Duration,
    local: Duration,
    addr: String,
}

/// Nearest-rank percentile of seconds.
fn pct(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank - 1]
}

fn row(label: &str, value: String, note: &str) {
    println!("{label:<58} {value:>14}  {note}");
}

fn ms(s: f64) -> String {
    format!("{:.1} ms", s * 1000.0)
}

fn grpc_started(metrics: &str) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    for l in metrics.lines() {
        let Some(rest) = l.strip_prefix("grpc_server_started_total{") else {
            continue;
        };
        let Some((labels, v)) = rest.rsplit_once("} ") else {
            continue;
        };
        let method = labels
            .split(',')
            .find_map(|kv| kv.strip_prefix("grpc_method=\""))
            .map(|v| v.trim_end_matches('"').to_string())
            .unwrap_or_default();
        *m.entry(method).or_insert(0.0) += v.trim().parse::<f64>().unwrap_or(0.0);
    }
    m
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn run(o: &Opts) -> Result<(), String> {
    let total = o.nodes * o.pods;
    println!(
        "cluster-ipam-bench: {} nodes x {} pods = {total}, net1 from {} (plexus-cluster-ipam) and net2 \
         per node (plexus-host-local), both on macvlan; load before: {}",
        o.nodes,
        o.pods,
        o.range,
        loadavg()
    );
    let ipam = json!({"type": "plexus-cluster-ipam", "range": o.range});
    let net = CipamNet::start(o.nodes, Store::Etcd, &ipam, &[]);
    let data = tempfile::tempdir().map_err(|e| e.to_string())?;
    let confs: Vec<Confs> = (0..o.nodes)
        .map(|i| confs(o, i, net.node(i), &data.path().join(format!("n{i}"))))
        .collect();
    // The pods' namespaces first: their creation is not an ADD.
    let pods: Vec<Vec<Netns>> = (0..o.nodes)
        .map(|i| {
            (0..o.pods)
                .map(|j| Netns::new(&format!("{i}-{j}")))
                .collect()
        })
        .collect();
    let metrics = || {
        net.cluster
            .etcd_ns
            .http_get(&format!("{ETCD_IP}:2379"), "/metrics")
    };
    // The agents' requests at rest (a node serving only cluster IPAM
    // still looks for a network config now and then), to tell them from
    // the ADDs'.
    let idle0 = grpc_started(&metrics());
    let idle_t = Instant::now();
    std::thread::sleep(Duration::from_secs(o.idle_secs));
    let idle_calls = grpc_started(&metrics());
    let idle_secs = idle_t.elapsed().as_secs_f64();
    let idle_rate: BTreeMap<String, f64> = idle_calls
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                (v - idle0.get(k).copied().unwrap_or(0.0)) / idle_secs,
            )
        })
        .collect();
    let calls0 = grpc_started(&metrics());
    let seq = AtomicUsize::new(0);
    let t0 = Instant::now();
    let added: Vec<Result<Vec<Added>, String>> = std::thread::scope(|s| {
        let mut handles = Vec::new();
        for i in 0..o.nodes {
            for lane in 0..o.parallel {
                let (net, confs, pods, seq) = (&net, &confs, &pods, &seq);
                handles.push(s.spawn(move || -> Result<Vec<Added>, String> {
                    let node = net.node(i);
                    let c = &confs[i];
                    let mut out = Vec::new();
                    for (j, ns) in pods[i].iter().enumerate().skip(lane).step_by(o.parallel) {
                        let id = format!("b{i}-{j}");
                        let mut cluster = Duration::ZERO;
                        let mut local = Duration::ZERO;
                        let mut addr = String::new();
                        let mut n = 0;
                        for k in 0..2 {
                            if (k + j) % 2 == 0 {
                                n = seq.fetch_add(1, Ordering::SeqCst);
                                let t = Instant::now();
                                let r = call(o, node, "ADD", &id, "net1", ns, &c.cluster)?;
                                cluster = t.elapsed();
                                addr = first_ip(&r)?;
                            } else {
                                let t = Instant::now();
                                call(o, node, "ADD", &id, "net2", ns, &c.local)?;
                                local = t.elapsed();
                            }
                        }
                        out.push(Added {
                            seq: n,
                            cluster,
                            local,
                            addr,
                        });
                    }
                    Ok(out)
                }));
            }
        }
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let all_returned = t0.elapsed();
    let calls1 = grpc_started(&metrics());
    let mut adds = Vec::new();
    for r in added {
        adds.extend(r?);
    }
    adds.sort_by_key(|a| a.seq);
    let cl: Vec<f64> = adds.iter().map(|a| a.cluster.as_secs_f64()).collect();
    let lo: Vec<f64> = adds.iter().map(|a| a.local.as_secs_f64()).collect();
    let given: BTreeSet<&str> = adds.iter().map(|a| a.addr.as_str()).collect();
    let held = net.held();
    let held_addrs: BTreeSet<&str> = held.iter().filter_map(|h| h["address"].as_str()).collect();
    println!();
    row(
        &format!("time until every ADD returned ({total} pods, both IPAMs)"),
        format!("{:.1} s", all_returned.as_secs_f64()),
        &format!(
            "({} ADD threads; load after: {})",
            o.nodes * o.parallel,
            loadavg()
        ),
    );
    let (cp50, cp99, lp50, lp99) = (
        pct(&cl, 50.0),
        pct(&cl, 99.0),
        pct(&lo, 50.0),
        pct(&lo, 99.0),
    );
    row("ADD p50, macvlan + plexus-cluster-ipam", ms(cp50), "");
    row("ADD p50, macvlan + plexus-host-local", ms(lp50), "");
    row(
        "  ratio cluster / host-local at p50",
        format!("{:.2}", cp50 / lp50),
        "(target <= 1.5)",
    );
    row("ADD p99, macvlan + plexus-cluster-ipam", ms(cp99), "");
    row("ADD p99, macvlan + plexus-host-local", ms(lp99), "");
    if cl.len() >= 200 {
        let first = pct(&cl[..100], 99.0);
        let last = pct(&cl[cl.len() - 100..], 99.0);
        row("cluster-IPAM ADD p99, first 100 pods", ms(first), "");
        row(
            &format!(
                "cluster-IPAM ADD p99, last 100 pods (to the {}th)",
                cl.len()
            ),
            ms(last),
            "",
        );
        row(
            "  growth last / first",
            format!("{:.2}", last / first),
            "(target <= 1.3)",
        );
        let first_l = pct(&lo[..100], 99.0);
        let last_l = pct(&lo[lo.len() - 100..], 99.0);
        row(
            "  host-local's, same pods (the machine's own drift)",
            format!("{:.2}", last_l / first_l),
            "",
        );
    }
    let at_rest: f64 = idle_rate.values().sum::<f64>() + 0.0;
    row(
        "store requests at rest, per node per minute",
        format!("{:.1}", at_rest * 60.0 / o.nodes as f64),
        &format!("(over {} s before the ADDs)", o.idle_secs),
    );
    let phase = all_returned.as_secs_f64();
    let mut per_add: Vec<(String, f64, f64)> = calls1
        .iter()
        .map(|(k, v)| {
            let raw = v - calls0.get(k).copied().unwrap_or(0.0);
            let rest = idle_rate.get(k).copied().unwrap_or(0.0) * phase;
            (
                k.clone(),
                raw / total as f64,
                (raw - rest).max(0.0) / total as f64,
            )
        })
        .filter(|(_, v, _)| *v > 0.0)
        .collect();
    per_add.sort_by(|a, b| b.1.total_cmp(&a.1));
    let sum: f64 = per_add.iter().map(|(_, v, _)| v).sum::<f64>() + 0.0;
    let net_sum: f64 = per_add.iter().map(|(_, _, v)| v).sum::<f64>() + 0.0;
    row(
        "store requests per cluster-IPAM ADD, all / net of at rest",
        format!("{sum:.2} / {net_sum:.2}"),
        "(etcd grpc_server_started_total over the ADD phase)",
    );
    for (m, v, n) in &per_add {
        row(&format!("  {m}"), format!("{v:.2} / {n:.2}"), "");
    }
    row(
        "duplicates (addresses given twice)",
        format!(
            "{}",
            adds.len() - given.len() + (held.len() - held_addrs.len())
        ),
        &format!(
            "(results: {} distinct of {}; store: {} records)",
            given.len(),
            adds.len(),
            held.len()
        ),
    );
    // DEL phase.
    let t1 = Instant::now();
    let deleted: Vec<Result<(), String>> = std::thread::scope(|s| {
        let mut handles = Vec::new();
        for i in 0..o.nodes {
            let (net, confs, pods) = (&net, &confs, &pods);
            handles.push(s.spawn(move || -> Result<(), String> {
                let node = net.node(i);
                for (j, ns) in pods[i].iter().enumerate() {
                    let id = format!("b{i}-{j}");
                    call(o, node, "DEL", &id, "net1", ns, &confs[i].cluster)?;
                    call(o, node, "DEL", &id, "net2", ns, &confs[i].local)?;
                }
                Ok(())
            }));
        }
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for d in deleted {
        d?;
    }
    let dels = t1.elapsed();
    let left = net.held().len();
    let leases = plexus_tests::CniSandbox::files_under(data.path())
        .into_iter()
        .filter(|f| {
            Path::new(f)
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.parse::<std::net::IpAddr>().is_ok())
        })
        .count();
    row(
        "time until every DEL returned",
        format!("{:.1} s", dels.as_secs_f64()),
        "",
    );
    row(
        "cluster-IPAM addresses left after deleting every pod",
        format!("{left}"),
        "(must be 0)",
    );
    row("host-local leases left", format!("{leases}"), "");
    drop(pods);
    drop(net);
    if left > 0 || adds.len() != given.len() || held.len() != held_addrs.len() {
        return Err("duplicates or leaked addresses (see above)".into());
    }
    Ok(())
}
