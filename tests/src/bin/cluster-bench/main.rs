//! cluster-bench: the scale benchmark behind `bench/cluster.sh NODES PODS`
//! (issue 13), on the harness's simulated cluster (tests/src/cluster): an
//! underlay bridge, a real etcd, one netns per node running plexusd with
//! both networks (the flannel-style overlay from `<prefix>/config` and the
//! calico-style routed pool with its iBGP full mesh), and PODS pods per node,
//! each with eth0 on the overlay and net1 on the routed network.
//!
//! 1. Start every agent at once; per node, as soon as its agent is ready,
//!    attach its pods; then every pod pings every other pod on both networks
//!    until all have answered. Times from the agents' start.
//! 2. Each agent's peak and current RSS and CPU seconds.
//! 3. Store requests at rest: etcd's grpc_server_started_total over
//!    IDLE_SECS (default 60, the agents' routed poll interval), per node per
//!    minute (only the agents talk to etcd then).
//! 4. ADD latency with L pods already on a node (ADD_LEVELS, default
//!    10,250: 10 on node 0, 250 on node 1), ADD_ROUNDS (default 100) rounds
//!    of one ADD+DEL of one more pod on each of those nodes in turn.
//! 5. iperf3 across nodes 0 and 1 over the overlay and the routed network,
//!    and over a plain veth pair between two netns, IPERF_ROUNDS rounds.
//!
//! Environment: PLEXUS_BIN_DIR (plexusd, plexusctl), PLEXUS_PLUGIN_DIR (the
//! plugins), PLEXUS_LOG (the agents' log level), BENCH_DEBUG (more on a
//! failure), and the knobs bench/cluster.sh lists. Everything lives in
//! namespaces named `plx-<this pid>-...`, deleted on exit; the processes are
//! this program's children, killed by pid on exit.

#![allow(clippy::print_stdout)] // the report is what this program prints

mod diagnose;
mod iperf;
mod pods;
mod procs;
mod reach;
mod report;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use plexus_tests::cluster::{vxlan_config, Cluster, Daemon, ETCD_IP};
use plexus_tests::Netns;

use pods::{AddTimes, Confs, Plugins, Pod};
use report::{loadavg, median, mem_rows, percentile, row, secs, target};

const OVERLAY_NET: &str = "10.244.0.0/16";
const ROUTED_POOL: &str = "10.96.0.0/16";

struct Opts {
    nodes: usize,
    pods: usize,
    add_rounds: usize,
    add_levels: Vec<usize>,
    idle_secs: u64,
    iperf_secs: u64,
    iperf_rounds: usize,
    reach_timeout: Duration,
    plugins: Plugins,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

impl Opts {
    fn parse() -> Result<Opts, String> {
        let a: Vec<String> = std::env::args().skip(1).collect();
        let usage = "usage: cluster-bench NODES PODS_PER_NODE (see bench/cluster.sh)";
        let num = |i: usize| -> Result<usize, String> {
            a.get(i)
                .and_then(|v| v.parse().ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| usage.to_string())
        };
        let (nodes, pods) = (num(0)?, num(1)?);
        if !(2..=200).contains(&nodes) {
            return Err(format!(
                "NODES must be 2..=200 (the underlay is one /24): {nodes}"
            ));
        }
        let plugins = std::env::var_os("PLEXUS_PLUGIN_DIR")
            .map(PathBuf::from)
            .ok_or("PLEXUS_PLUGIN_DIR (the plugin binaries) is not set")?;
        let add_levels = std::env::var("ADD_LEVELS")
            .unwrap_or_else(|_| "10,250".into())
            .split(',')
            .map(|l| l.trim().parse().map_err(|_| format!("ADD_LEVELS: {l}")))
            .collect::<Result<Vec<usize>, _>>()?;
        if add_levels.iter().any(|l| *l > 250) {
            return Err("ADD_LEVELS: at most 250 (a node's overlay subnet is a /24)".into());
        }
        Ok(Opts {
            nodes,
            pods,
            add_rounds: env_or("ADD_ROUNDS", 100),
            add_levels,
            idle_secs: env_or("IDLE_SECS", 60),
            iperf_secs: env_or("IPERF_SECS", 3),
            iperf_rounds: env_or("IPERF_ROUNDS", 3),
            reach_timeout: Duration::from_secs(env_or("REACH_TIMEOUT", 120)),
            plugins: Plugins { dir: plugins },
        })
    }
}

fn main() {
    let o = match Opts::parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("cluster-bench: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&o) {
        eprintln!("cluster-bench: {e}");
        std::process::exit(1);
    }
}

fn run(o: &Opts) -> Result<(), String> {
    println!(
        "cluster-bench: {} nodes x {} pods, both networks; load before: {}",
        o.nodes,
        o.pods,
        loadavg()
    );
    let c = Cluster::new(o.nodes);
    c.set_config(&vxlan_config(OVERLAY_NET));
    c.etcd.put(
        "/plexus/routed/pools/default",
        &format!(r#"{{"name":"default","cidr":"{ROUTED_POOL}","blockSize":26}}"#),
    );
    c.etcd.put(
        "/plexus/routed/bgp/config",
        r#"{"asn":64512,"nodeToNodeMesh":true}"#,
    );
    let confs: Vec<Confs> = c.nodes.iter().map(Confs::of).collect();

    let mut agents = Vec::new();
    let conv = converge(o, &c, &confs, &mut agents)?;
    let at_convergence = usage_of(&agents);
    let rest = at_rest(o, &c, &agents);
    let adds = add_latency(o, &c, &confs, &conv.pods)?;
    let tput = throughput(o, &conv.pods[0][0], &conv.pods[1][0])?;

    println!();
    let n = conv.pods.iter().map(Vec::len).sum::<usize>();
    println!(
        "cluster-bench: {} nodes x {} pods ({n} pods, {} pairs per network); load after: {}",
        o.nodes,
        o.pods,
        n * (n - 1),
        loadavg()
    );
    conv.report();
    mem_rows("at convergence", &at_convergence, None);
    rest.report(o);
    report_adds(&adds);
    tput.report(o);
    drop(agents);
    Ok(())
}

/// Phase 1: from the agents' start to all pairs reaching each other.
struct Convergence {
    ready: Vec<f64>,
    attached: Vec<f64>,
    overlay_at: Duration,
    routed_at: Duration,
    /// Each node's pods.
    pods: Vec<Vec<Pod>>,
}

fn converge(
    o: &Opts,
    c: &Cluster,
    confs: &[Confs],
    agents: &mut Vec<Daemon>,
) -> Result<Convergence, String> {
    let t0 = Instant::now();
    // --ip-masq as deploy/base/daemonset.yaml runs it (kube-flannel's too):
    // the agent masquerades for the node, so the bridge adds no per-pod
    // nftables chain. BRIDGE_IPMASQ=1 leaves masquerading to each pod's ADD.
    let args: &[&str] = if std::env::var_os("BRIDGE_IPMASQ").is_some() {
        &[]
    } else {
        &["--ip-masq"]
    };
    agents.extend(c.nodes.iter().map(|n| n.spawn_agent(&c.etcd.url(), args)));
    // Per node, as a kubelet would: pods as soon as the agent is ready.
    type NodeRun = Result<(Duration, Duration, Vec<Pod>), String>;
    let per_node: Vec<NodeRun> = std::thread::scope(|s| {
        let hs: Vec<_> = c
            .nodes
            .iter()
            .zip(agents.iter_mut())
            .zip(confs)
            .map(|((n, a), conf)| {
                s.spawn(move || -> NodeRun {
                    a.wait_ready();
                    let ready = t0.elapsed();
                    let mut pods = Vec::new();
                    for p in 0..o.pods {
                        let tag = format!("{}-p{p}", n.name);
                        pods.push(o.plugins.add(n, conf, &tag)?.0);
                    }
                    Ok((ready, t0.elapsed(), pods))
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("a node thread"))
            .collect()
    });
    let mut conv = Convergence {
        ready: Vec::new(),
        attached: Vec::new(),
        overlay_at: Duration::ZERO,
        routed_at: Duration::ZERO,
        pods: Vec::new(),
    };
    for r in per_node {
        let (r, a, p) = r?;
        conv.ready.push(r.as_secs_f64());
        conv.attached.push(a.as_secs_f64());
        conv.pods.push(p);
    }
    let all: Vec<&Pod> = conv.pods.iter().flatten().collect();
    let deadline = Instant::now() + o.reach_timeout;
    let reached: Vec<Result<Vec<Instant>, String>> = std::thread::scope(|s| {
        let hs: Vec<_> = all
            .iter()
            .map(|p| {
                let others = || all.iter().filter(|q| q.id != p.id);
                let sets = vec![
                    ("overlay", others().map(|q| q.overlay.clone()).collect()),
                    ("routed", others().map(|q| q.routed.clone()).collect()),
                ];
                s.spawn(move || reach::until_all_answer(&p.ns, &sets, deadline))
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("a ping thread"))
            .collect()
    });
    for r in reached {
        let r = r.map_err(|e| {
            diagnose::diagnose(c);
            let pods = all.iter().map(|p| {
                let addr = p.ns.ip(&["-br", "addr"]);
                let routes = p.ns.ip(&["route"]);
                format!("{}:\n{addr}{routes}", p.ns.name)
            });
            format!(
                "not every pod reaches every other: {e}\n{}",
                pods.take(2).collect::<String>()
            )
        })?;
        conv.overlay_at = conv.overlay_at.max(r[0] - t0);
        conv.routed_at = conv.routed_at.max(r[1] - t0);
    }
    Ok(conv)
}

impl Convergence {
    fn report(&self) {
        let (mut ready, mut attached) = (self.ready.clone(), self.attached.clone());
        let s = |v: f64| secs(Duration::from_secs_f64(v));
        println!();
        row(
            "agent ready (from the agents' start), median",
            s(median(&mut ready)),
            "",
        );
        row("every agent ready", s(percentile(&mut ready, 100.0)), "");
        row(
            "every pod attached (both networks)",
            s(percentile(&mut attached, 100.0)),
            "",
        );
        row(
            "all pairs reach each other, overlay (eth0)",
            secs(self.overlay_at),
            "",
        );
        row(
            "all pairs reach each other, routed (net1)",
            secs(self.routed_at),
            "",
        );
        let full = self.overlay_at.max(self.routed_at);
        row(
            "all pairs reach each other on both networks",
            secs(full),
            &target(full.as_secs_f64() <= 10.0, "target <= 10 s at 50x4"),
        );
        println!();
    }
}

/// Phase 3: the store requests and CPU of the agents at rest.
struct AtRest {
    before: Vec<procs::Usage>,
    after: Vec<procs::Usage>,
    /// Requests per node per minute, by gRPC method, most first.
    by_method: Vec<(String, f64)>,
}

fn at_rest(o: &Opts, c: &Cluster, agents: &[Daemon]) -> AtRest {
    let etcd_metrics = || c.etcd_ns.http_get(&format!("{ETCD_IP}:2379"), "/metrics");
    // Settle first: the last pings' ARP and BGP updates.
    std::thread::sleep(Duration::from_secs(3));
    let calls0 = procs::grpc_started(&etcd_metrics());
    let before = usage_of(agents);
    std::thread::sleep(Duration::from_secs(o.idle_secs));
    let calls1 = procs::grpc_started(&etcd_metrics());
    let after = usage_of(agents);
    let per_min = 60.0 / o.idle_secs as f64 / o.nodes as f64;
    let mut by_method: Vec<(String, f64)> = calls1
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                (v - calls0.get(k).copied().unwrap_or(0.0)) * per_min,
            )
        })
        .filter(|(_, v)| *v > 0.0)
        .collect();
    by_method.sort_by(|a, b| b.1.total_cmp(&a.1));
    AtRest {
        before,
        after,
        by_method,
    }
}

impl AtRest {
    fn report(&self, o: &Opts) {
        mem_rows(
            &format!("after {} s at rest", o.idle_secs),
            &self.after,
            Some(&self.before),
        );
        println!();
        // (+ 0.0: an empty sum is -0.0)
        let total: f64 = self.by_method.iter().map(|(_, v)| v).sum::<f64>() + 0.0;
        row(
            "store requests per node per minute at rest",
            format!("{total:.1}"),
            "(etcd grpc_server_started_total)",
        );
        for (m, v) in &self.by_method {
            row(&format!("  {m}"), format!("{v:.1}"), "");
        }
        println!();
    }
}

/// Phase 4: ADD latency with each level of pods on a node: level `i` on
/// node `i` (its cluster pods count), filled up first; then rounds of one
/// ADD+DEL on each of those nodes in turn, so a busy moment of the machine
/// hits every level alike. Returns (pods on the node, times) per level.
fn add_latency(
    o: &Opts,
    c: &Cluster,
    confs: &[Confs],
    pods: &[Vec<Pod>],
) -> Result<Vec<(usize, Vec<AddTimes>)>, String> {
    if o.add_levels.len() > c.nodes.len() {
        return Err(format!(
            "ADD_LEVELS: one level per node, at most {}",
            c.nodes.len()
        ));
    }
    // Left in place at the end: the cluster's teardown removes them.
    let mut fillers: Vec<Pod> = Vec::new();
    for (i, &level) in o.add_levels.iter().enumerate() {
        for f in pods[i].len()..level {
            fillers.push(o.plugins.add(&c.nodes[i], &confs[i], &format!("f{f}"))?.0);
        }
    }
    let mut times: Vec<Vec<AddTimes>> = vec![Vec::new(); o.add_levels.len()];
    for r in 0..o.add_rounds {
        for (i, t) in times.iter_mut().enumerate() {
            let (pod, added) = o.plugins.add(&c.nodes[i], &confs[i], &format!("x{r}"))?;
            o.plugins.del(&c.nodes[i], &confs[i], &pod)?;
            t.push(added);
        }
    }
    Ok(o.add_levels
        .iter()
        .enumerate()
        .map(|(i, l)| (pods[i].len().max(*l), std::mem::take(&mut times[i])))
        .collect())
}

type Pick = fn(&AddTimes) -> Duration;
const NETWORKS: [(&str, Pick); 2] = [
    ("overlay (plexus-vxlan)", |t| t.overlay),
    ("routed (plexus-bgp-routes)", |t| t.routed),
];

fn report_adds(adds: &[(usize, Vec<AddTimes>)]) {
    let ms = |v: &[AddTimes], pick: Pick, p: f64| {
        let mut ms: Vec<f64> = v.iter().map(|t| pick(t).as_secs_f64() * 1e3).collect();
        percentile(&mut ms, p)
    };
    for (have, times) in adds {
        for (name, pick) in NETWORKS {
            row(
                &format!("ADD {name}, {have} pods on the node: p50 / p99"),
                format!(
                    "{:.1} / {:.1} ms",
                    ms(times, pick, 50.0),
                    ms(times, pick, 99.0)
                ),
                &format!("({} ADDs)", times.len()),
            );
        }
    }
    if let [(lo_n, lo), .., (hi_n, hi)] = adds {
        for (name, pick) in NETWORKS {
            let ratio = ms(hi, pick, 99.0) / ms(lo, pick, 99.0);
            row(
                &format!("ADD p99 ratio {hi_n} / {lo_n} pods, {name}"),
                format!("{ratio:.2}"),
                &target(ratio <= 1.2, "target <= 1.2"),
            );
            // On a shared machine p99 is the busiest moments; p50 shows
            // what the pod count itself costs.
            let ratio = ms(hi, pick, 50.0) / ms(lo, pick, 50.0);
            row(
                &format!("ADD p50 ratio {hi_n} / {lo_n} pods, {name}"),
                format!("{ratio:.2}"),
                "",
            );
        }
    }
    println!();
}

/// Phase 5: iperf3 medians (bits/s) per path.
struct Throughput {
    paths: Vec<(&'static str, f64)>,
}

fn throughput(o: &Opts, cli: &Pod, srv: &Pod) -> Result<Throughput, String> {
    let vc = Netns::new("veth-c");
    let vs = Netns::new("veth-s");
    vc.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &vs.name,
    ]);
    for (ns, ip) in [(&vc, "10.99.0.1/24"), (&vs, "10.99.0.2/24")] {
        ns.ip(&["addr", "add", ip, "dev", "eth0"]);
        ns.ip(&["link", "set", "eth0", "up"]);
    }
    let _servers = (iperf::Server::start(&srv.ns), iperf::Server::start(&vs));
    let paths = [
        ("overlay (VXLAN) pod -> pod", &cli.ns, srv.overlay.as_str()),
        ("routed (BGP) pod -> pod", &cli.ns, srv.routed.as_str()),
        ("plain veth pair netns -> netns", &vc, "10.99.0.2"),
    ];
    // Rounds alternate the paths, so a busy moment of the machine hits all.
    let mut bps: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
    for _ in 0..o.iperf_rounds {
        for (i, (_, from, to)) in paths.iter().enumerate() {
            bps[i].push(iperf::run(from, to, o.iperf_secs)?);
        }
    }
    Ok(Throughput {
        paths: paths
            .iter()
            .zip(bps.iter_mut())
            .map(|((name, _, _), b)| (*name, median(b)))
            .collect(),
    })
}

impl Throughput {
    fn report(&self, o: &Opts) {
        for (name, b) in &self.paths {
            row(
                &format!("iperf3 {name}"),
                format!("{:.2} Gb/s", b / 1e9),
                &format!("(median of {})", o.iperf_rounds),
            );
        }
        let [(_, ov), (_, ro), (_, ve)] = self.paths[..] else {
            return;
        };
        row("ratio overlay / veth", format!("{:.2}", ov / ve), "");
        row("ratio routed / veth", format!("{:.2}", ro / ve), "");
        row("ratio overlay / routed", format!("{:.2}", ov / ro), "");
    }
}

fn usage_of(agents: &[Daemon]) -> Vec<procs::Usage> {
    agents
        .iter()
        .map(|a| procs::usage(a.pid().expect("a running agent")))
        .collect()
}
