//! policy-bench: network policy at scale against real plexusd (driven by
//! bench/policy.sh; prints one `key value` line per figure).
//!
//! A simulated cluster of NODES nodes (tests/src/cluster: etcd, plexusd
//! with both networks and `--policy on`, the API stand-in as the
//! Kubernetes API), then:
//!
//! 1. **Enforcement latency.** PODS pods in namespace `bench`, spread over
//!    the nodes, each a network namespace attached to its node's plexusd
//!    through the meta plugin's request (`policy_attach`, the pod's eth0
//!    with an address of its own; no interface is needed for the table),
//!    groups of one pod per node sharing a `slot` label. Then POLICIES
//!    NetworkPolicies, one at a time, each selecting one slot (a pod on
//!    every node) and allowing TCP 80 from the next slot: the time from
//!    its creation in the API to every selected pod's table holding it, as
//!    each node's plexusd reports on its socket (`policy_show`, polled every
//!    2 ms), p50 and p99.
//! 2. **Memory.** The API then holds RSS_PODS pods and RSS_POLICIES
//!    policies; node0's plexusd RSS (VmRSS) once it has programmed them,
//!    beside its RSS before any pod or policy existed (the anchor).
//! 3. **Data path.** Two real pods on node0 through the meta plugin (eth0
//!    on the overlay); iperf3 pod to pod and TCP connections per second
//!    (connect, read the server's answer, close; one client thread),
//!    without policy and with an allowing policy on the server whose peers
//!    are 1,000 /32 blocks besides the client, rounds interleaved.
//!
//! Knobs: NODES (3), PODS (200), POLICIES (200), RSS_PODS (1000),
//! RSS_POLICIES (500), IPERF_SECS (3), ROUNDS (3), CONN_SECS (2).

#![allow(clippy::print_stdout)] // the report is what this program prints

#[path = "cluster-bench/iperf.rs"]
mod iperf;

use std::collections::BTreeSet;
use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use plexus_agent_api::policy::{
    PolicyAttach, PolicyAttached, PolicyInterface, PolicyShow, PolicyStatus,
};
use plexus_agent_api::{PodRef, Request, SOCKET_NAME};
use plexus_tests::apiserver::FakeApiServer;
use plexus_tests::cluster::multinet::{MultiNet, Options, META};
use plexus_tests::cluster::{wait_for, ETCD_IP};
use plexus_tests::Netns;
use serde_json::{json, Value};

const NP: &str = "networkpolicies.networking.k8s.io";

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn show(run_dir: &std::path::Path, pod: Option<String>) -> PolicyStatus {
    plexus_agent_api::call(
        &run_dir.join(SOCKET_NAME),
        &Request::PolicyShow(PolicyShow { pod }),
        Duration::from_secs(10),
    )
    .expect("policy_show")
}

fn pod_object(i: usize, node: &str, slot: usize, ip: &str) -> Value {
    json!({
        "metadata": {"name": format!("p{i}"), "namespace": "bench", "uid": format!("uid-p{i}"),
                     "labels": {"slot": format!("s{slot}")}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}
    })
}

fn pod_ip(i: usize) -> String {
    format!("10.250.{}.{}", i / 250, i % 250 + 1)
}

fn main() {
    let nodes = knob("NODES", 3);
    let pods = knob("PODS", 200);
    let policies = knob("POLICIES", 200);
    let rss_pods = knob("RSS_PODS", 1000).max(pods);
    let rss_policies = knob("RSS_POLICIES", 500).max(policies);
    let iperf_secs = knob("IPERF_SECS", 3) as u64;
    let rounds = knob("ROUNDS", 3);
    let conn_secs = knob("CONN_SECS", 2) as u64;

    let (net, api) = MultiNet::start_with(nodes, Options::default(), |c| {
        let api = FakeApiServer::start_at(&c.etcd_ns, ETCD_IP);
        let args = vec![
            "--policy".to_string(),
            "on".into(),
            "--kubeconfig".into(),
            api.kubeconfig.display().to_string(),
            "--ip-masq".into(),
        ];
        (api, args)
    });
    api.apply("namespaces", json!({"metadata": {"name": "bench"}}));
    let pid0 = net.agents[0].pid().expect("node0's plexusd runs");
    // Let the informers list and settle before the anchor is read.
    wait_for("node0 synced", || show(&net.node(0).run_dir, None).synced);
    let rss_before = rss_kib(pid0);

    // 1. Latency.
    let slots = pods.div_ceil(nodes);
    let mut netns = Vec::new();
    for i in 0..pods {
        let node = i % nodes;
        let slot = i / nodes;
        let ip = pod_ip(i);
        api.create("pods", pod_object(i, &net.node(node).name, slot, &ip));
        let ns = Netns::new(&format!("bp{i}"));
        let a = PolicyAttach {
            container_id: format!("bench-{i}"),
            netns: ns.path().display().to_string(),
            pod: PodRef {
                namespace: "bench".into(),
                name: format!("p{i}"),
                uid: format!("uid-p{i}"),
            },
            interfaces: vec![PolicyInterface {
                name: "cbr0".into(),
                interface: "eth0".into(),
                ips: vec![ip],
                default: true,
            }],
        };
        let _: PolicyAttached = plexus_agent_api::call(
            &net.node(node).run_dir.join(SOCKET_NAME),
            &Request::PolicyAttach(a),
            Duration::from_secs(10),
        )
        .expect("policy_attach");
        netns.push(ns);
    }
    let mut lat = Vec::new();
    for j in 0..policies {
        let slot = j % slots;
        let name = format!("pol{j}");
        let selected: Vec<(usize, String)> = (0..pods)
            .filter(|i| i / nodes == slot)
            .map(|i| (i % nodes, format!("bench/p{i}")))
            .collect();
        let want = format!("NetworkPolicy bench/{name}");
        let t0 = Instant::now();
        api.create(
            NP,
            json!({"metadata": {"namespace": "bench", "name": name},
                   "spec": {"podSelector": {"matchLabels": {"slot": format!("s{slot}")}},
                            "ingress": [{"from": [{"podSelector": {"matchLabels": {"slot": format!("s{}", (slot + 1) % slots)}}}],
                                         "ports": [{"protocol": "TCP", "port": 80}]}]}}),
        );
        let mut left: BTreeSet<(usize, String)> = selected.into_iter().collect();
        while !left.is_empty() {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "{name} not enforced in 60 s: {left:?}"
            );
            left.retain(|(node, pod)| {
                let st = show(&net.node(*node).run_dir, Some(pod.clone()));
                !st.interfaces
                    .iter()
                    .any(|i| i.programmed && i.policies.contains(&want))
            });
            if !left.is_empty() {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        lat.push(t0.elapsed().as_secs_f64());
    }
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("latency_pods {pods}");
    println!("latency_policies {policies}");
    println!("latency_nodes {nodes}");
    println!("latency_p50_ms {:.1}", percentile(&lat, 0.5) * 1e3);
    println!("latency_p99_ms {:.1}", percentile(&lat, 0.99) * 1e3);
    println!(
        "latency_max_ms {:.1}",
        lat.last().copied().unwrap_or(f64::NAN) * 1e3
    );

    // 2. Memory: more pods (not attached) and policies in the API.
    for i in pods..rss_pods {
        let node = i % nodes;
        api.create(
            "pods",
            pod_object(i, &net.node(node).name, i / nodes, &pod_ip(i)),
        );
    }
    for j in policies..rss_policies {
        let slot = j % slots;
        api.create(
            NP,
            json!({"metadata": {"namespace": "bench", "name": format!("pol{j}")},
                   "spec": {"podSelector": {"matchLabels": {"slot": format!("s{slot}")}},
                            "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"slot": format!("s{}", (j * 7) % (rss_pods / nodes))}}}]}]}}),
        );
    }
    wait_for("node0 holds every policy", || {
        show(&net.node(0).run_dir, None).policies == rss_policies
    });
    std::thread::sleep(Duration::from_secs(3));
    println!("rss_pods {rss_pods}");
    println!("rss_policies {rss_policies}");
    println!("rss_before_kib {rss_before}");
    println!("rss_after_kib {}", rss_kib(pid0));

    // 3. Data path: two real pods on node0 (eth0 on the overlay).
    api.delete_all(NP);
    wait_for("node0 holds no policy", || {
        show(&net.node(0).run_dir, None).policies == 0
    });
    let cli = real_pod(&net, &api, "cli");
    let srv = real_pod(&net, &api, "srv");
    accept_forever(&srv.0, srv.1, 8080);
    let _iperf = iperf::Server::start(&srv.0);
    let mut blocks: Vec<Value> = (0..1000)
        .map(|k| json!({"ipBlock": {"cidr": format!("10.252.{}.{}/32", k / 250, k % 250 + 1)}}))
        .collect();
    blocks.push(json!({"ipBlock": {"cidr": format!("{}/32", cli.1)}}));
    let allowing = json!({"metadata": {"namespace": "bench", "name": "allow-1000"},
        "spec": {"podSelector": {"matchLabels": {"slot": "srv"}}, "ingress": [{"from": blocks}]}});
    let mut tput = [Vec::new(), Vec::new()];
    let mut conns = [Vec::new(), Vec::new()];
    for _ in 0..rounds {
        for (k, with) in [false, true].into_iter().enumerate() {
            api.delete_all(NP);
            if with {
                api.create(NP, allowing.clone());
            }
            let want = if with {
                vec!["NetworkPolicy bench/allow-1000".to_string()]
            } else {
                vec![]
            };
            wait_for("policy state on node0", || {
                show(&net.node(0).run_dir, Some("bench/srv".into()))
                    .interfaces
                    .iter()
                    .any(|i| i.interface == "eth0" && i.programmed && i.policies == want)
            });
            let bps = iperf::run(&cli.0, &srv.1.to_string(), iperf_secs).expect("iperf3");
            tput[k].push(bps);
            conns[k].push(conn_rate(&cli.0, srv.1, conn_secs));
        }
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        percentile(v, 0.5)
    };
    let (t0, t1) = (med(&mut tput[0]), med(&mut tput[1]));
    let (c0, c1) = (med(&mut conns[0]), med(&mut conns[1]));
    println!("iperf_no_policy_gbps {:.2}", t0 / 1e9);
    println!("iperf_policy_1000_peers_gbps {:.2}", t1 / 1e9);
    println!("iperf_ratio {:.3}", t1 / t0);
    println!("conn_no_policy_per_s {c0:.0}");
    println!("conn_policy_1000_peers_per_s {c1:.0}");
    println!("conn_ratio {:.3}", c1 / c0);
    drop(netns);
}

/// A pod on node0 through the meta plugin, in the API with label
/// `slot: NAME`; its netns and eth0 address.
fn real_pod(net: &MultiNet, api: &FakeApiServer, name: &str) -> (Netns, IpAddr) {
    let n = net.node(0);
    api.create(
        "pods",
        json!({"metadata": {"name": name, "namespace": "bench", "uid": format!("uid-{name}"),
                            "labels": {"slot": name}},
               "spec": {"nodeName": n.name, "containers": [{"name": "c", "image": "busybox"}]},
               "status": {"phase": "Running"}}),
    );
    let ns = Netns::new(name);
    let caps = json!({"io.kubernetes.cri.pod-annotations": {}}).to_string();
    let args = format!("K8S_POD_NAMESPACE=bench;K8S_POD_NAME={name};K8S_POD_UID=uid-{name}");
    n.cni
        .ctl(
            &n.ns,
            "add",
            META,
            Some(&ns.path()),
            &[("CAP_ARGS", &caps), ("CNI_ARGS", &args)],
        )
        .expect_success();
    let ip: IpAddr = ns.addrs("eth0")[0]
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    api.patch(
        "pods",
        "bench",
        name,
        json!({"status": {"podIP": ip.to_string(), "podIPs": [{"ip": ip.to_string()}]}}),
    );
    (ns, ip)
}

/// A blocking TCP server in `ns` on `ip:port` for the rest of the run:
/// each connection gets `ok` and is closed.
fn accept_forever(ns: &Netns, ip: IpAddr, port: u16) {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(ns.path()).expect("open netns");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // SAFETY: affects only this new thread; the fd is valid.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        let l = std::net::TcpListener::bind(SocketAddr::new(ip, port)).expect("bind");
        tx.send(()).unwrap();
        for mut c in l.incoming().flatten() {
            let _ = c.write_all(b"ok");
        }
    });
    rx.recv().unwrap();
}

/// TCP connections per second from `ns` to `dst`:8080 (connect, read the
/// answer, close), one thread for `secs` seconds.
fn conn_rate(ns: &Netns, dst: IpAddr, secs: u64) -> f64 {
    ns.run(|| {
        let addr = SocketAddr::new(dst, 8080);
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < Duration::from_secs(secs) {
            if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                let mut buf = [0u8; 2];
                let _ = s.read(&mut buf);
                n += 1;
            }
        }
        n as f64 / start.elapsed().as_secs_f64()
    })
}
