//! plexus-bgp-routes end to end, through plexusctl inside a node netns:
//! the routed data path (two pods ping each other through the node's /32
//! routes on a node with no default route), the secondary-network mode
//! beside plexus-bridge, DEL (netns gone, twice), CHECK of both ends, the
//! agent socket (a test double of plexusd's IPAM endpoint, absent agent)
//! and bad configs.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use plexus_agent_api::{
    Allocation, Answer, Cidr, GcDone, Released, Request, Status, ROUTE_PROTOCOL_POD, SOCKET_NAME,
};
use plexus_tests::{require_root, CniSandbox, Netns};
use serde_json::{json, Value};

const NET: &str = "routed";
const POOL: &str = "10.90.0.0/24";

fn host_local(sb: &CniSandbox, subnet: &str) -> Value {
    json!({"type": "plexus-host-local", "subnet": subnet, "dataDir": sb.data_dir})
}

/// Writes network `net` (a single plexus-bgp-routes plugin) with `keys`.
fn write_net(sb: &CniSandbox, net: &str, keys: Value) {
    let mut p = json!({"type": "plexus-bgp-routes"});
    for (k, v) in keys.as_object().unwrap() {
        p[k] = v.clone();
    }
    let conf = json!({"cniVersion": "1.1.0", "name": net, "plugins": [p]});
    sb.write_conf(&format!("10-{net}.conflist"), &conf);
}

fn setup(keys: Value) -> (CniSandbox, Netns) {
    let sb = CniSandbox::new();
    let mut k = json!({"ipam": host_local(&sb, POOL)});
    for (key, v) in keys.as_object().unwrap() {
        k[key] = v.clone();
    }
    write_net(&sb, NET, k);
    (sb, Netns::new("node"))
}

fn add(sb: &CniSandbox, node: &Netns, pod: &Netns) -> Value {
    sb.ctl(node, "add", NET, Some(&pod.path()), &[])
        .expect_success()
        .json()
}

fn del(sb: &CniSandbox, node: &Netns, pod: &Path) {
    sb.ctl(node, "del", NET, Some(pod), &[]).expect_success();
}

/// The node ends this plugin made.
fn node_veths(node: &Netns) -> Vec<String> {
    node.links()
        .into_iter()
        .filter(|l| l.starts_with("plx"))
        .collect()
}

/// The node's routes with the pod route protocol, as "dst dev".
fn pod_routes(node: &Netns) -> Vec<String> {
    let proto = ROUTE_PROTOCOL_POD.to_string();
    let mut v4 = node.ip_json(&["route", "show", "proto", &proto]);
    let v6 = node.ip_json(&["-6", "route", "show", "proto", &proto]);
    let all = v4.as_array_mut().unwrap();
    all.extend(v6.as_array().unwrap().iter().cloned());
    all.iter()
        .map(|r| {
            format!(
                "{} {}",
                r["dst"].as_str().unwrap(),
                r["dev"].as_str().unwrap()
            )
        })
        .collect()
}

/// `ip route` lines of a namespace (`-6` for IPv6).
fn routes(ns: &Netns, v6: bool) -> Vec<String> {
    let args: &[&str] = if v6 {
        &["-6", "route", "show"]
    } else {
        &["route", "show"]
    };
    ns.ip(args).lines().map(|l| l.trim().to_string()).collect()
}

fn leases(sb: &CniSandbox) -> Vec<String> {
    sb.leases()
}

fn pod_ip(result: &Value) -> String {
    let a = result["ips"][0]["address"].as_str().unwrap();
    a.split('/').next().unwrap().to_string()
}

fn assert_error(err: &Value, code: u64, needle: &str) {
    assert_eq!(err["code"], code, "{err}");
    let text = format!("{} {}", err["msg"], err["details"]);
    assert!(text.contains(needle), "expected {needle:?} in {err}");
}

#[test]
fn two_pods_ping_through_node_routes_on_a_node_without_a_default_route() {
    require_root!();
    let (sb, node) = setup(json!({"mtu": 1400}));
    let (a, b) = (Netns::new("a"), Netns::new("b"));
    let ra = add(&sb, &node, &a);
    let rb = add(&sb, &node, &b);
    assert!(routes(&node, false)
        .iter()
        .all(|r| !r.starts_with("default")));

    // The result: node end, pod end, a /32, the gateway routes.
    let ip_a = pod_ip(&ra);
    let ip_b = pod_ip(&rb);
    assert_eq!(ra["ips"][0]["address"], format!("{ip_a}/32"), "{ra}");
    assert_eq!(ra["interfaces"][1]["name"], "eth0");
    assert_eq!(ra["interfaces"][1]["mtu"], 1400);
    let host_a = ra["interfaces"][0]["name"].as_str().unwrap().to_string();
    assert!(host_a.starts_with("plx") && host_a.len() == 15, "{host_a}");
    assert_eq!(
        ra["routes"],
        json!([{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}])
    );

    // The pod: its address alone, the default route via the gateway.
    assert_eq!(a.addrs("eth0"), [format!("{ip_a}/32")]);
    let pr = routes(&a, false);
    assert!(
        pr.contains(&"default via 169.254.1.1 dev eth0 onlink".to_string()),
        "{pr:?}"
    );
    // The node: no address on its end, proxy ARP on, a /32 route per pod.
    assert!(node.addrs(&host_a).is_empty());
    let proxy = node.sh(&format!("cat /proc/sys/net/ipv4/conf/{host_a}/proxy_arp"));
    assert_eq!(String::from_utf8_lossy(&proxy.stdout).trim(), "1");
    let mut have = pod_routes(&node);
    have.sort();
    let host_b = rb["interfaces"][0]["name"].as_str().unwrap();
    let mut want = vec![format!("{ip_a} {host_a}"), format!("{ip_b} {host_b}")];
    want.sort();
    assert_eq!(have, want);

    assert!(a.ping(&ip_b), "pod a cannot reach pod b");
    assert!(b.ping(&ip_a), "pod b cannot reach pod a");
    sb.ctl(&node, "check", NET, Some(&a.path()), &[])
        .expect_success();

    // CHECK sees a missing node route.
    node.ip(&["route", "del", &format!("{ip_a}/32")]);
    let e = sb.ctl(&node, "check", NET, Some(&a.path()), &[]).err();
    assert_error(&e, 100, &format!("no route to {ip_a}"));

    del(&sb, &node, &a.path());
    del(&sb, &node, &b.path());
    assert!(node_veths(&node).is_empty(), "{:?}", node.links());
    assert!(pod_routes(&node).is_empty());
    assert!(leases(&sb).is_empty(), "{:?}", leases(&sb));
    assert_eq!(a.links(), ["lo"]);
    // DEL twice is fine.
    del(&sb, &node, &a.path());
}

#[test]
fn dual_stack_pods_ping_over_ipv6_with_a_link_local_gateway() {
    require_root!();
    let sb = CniSandbox::new();
    write_net(
        &sb,
        NET,
        json!({"ipam": {"type": "plexus-host-local", "dataDir": sb.data_dir,
            "ranges": [[{"subnet": POOL}], [{"subnet": "fd90::/120"}]]}}),
    );
    let node = Netns::new("node");
    let (a, b) = (Netns::new("a6"), Netns::new("b6"));
    let ra = add(&sb, &node, &a);
    let rb = add(&sb, &node, &b);
    let v6 = |r: &Value| -> String {
        r["ips"][1]["address"]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_string()
    };
    assert!(
        ra["ips"][1]["address"].as_str().unwrap().ends_with("/128"),
        "{ra}"
    );
    let pr = routes(&a, true);
    assert!(
        pr.iter()
            .any(|r| r.starts_with("default via fe80::1 dev eth0")),
        "{pr:?}"
    );
    assert!(a.ping(&v6(&rb)), "pod a cannot reach pod b over IPv6");
    assert!(b.ping(&pod_ip(&ra)), "pod b cannot reach pod a over IPv4");
    sb.ctl(&node, "check", NET, Some(&b.path()), &[])
        .expect_success();
    del(&sb, &node, &a.path());
    del(&sb, &node, &b.path());
    assert!(pod_routes(&node).is_empty());
    assert!(leases(&sb).is_empty());
}

#[test]
fn secondary_network_gets_pool_routes_not_a_second_default() {
    require_root!();
    let sb = CniSandbox::new();
    let cluster = json!({"cniVersion": "1.1.0", "name": "cluster", "plugins": [{
        "type": "plexus-bridge", "bridge": "plxbr9", "isGateway": true,
        "isDefaultGateway": true, "ipam": host_local(&sb, "10.91.0.0/24")}]});
    sb.write_conf("10-cluster.conflist", &cluster);
    write_net(&sb, NET, json!({"ipam": host_local(&sb, "10.92.0.0/24")}));
    write_net(
        &sb,
        "svc",
        json!({"ipam": host_local(&sb, "10.93.0.0/24"), "routes": [{"dst": "10.96.0.0/12"}]}),
    );
    let node = Netns::new("node");
    let pod = Netns::new("pod");
    sb.ctl(&node, "add", "cluster", Some(&pod.path()), &[])
        .expect_success();
    let r = sb
        .ctl(
            &node,
            "add",
            NET,
            Some(&pod.path()),
            &[("CNI_IFNAME", "net1")],
        )
        .expect_success()
        .json();
    assert_eq!(
        r["routes"].as_array().unwrap().last().unwrap(),
        &json!({"dst": "10.92.0.0/24", "gw": "169.254.1.1"}),
        "{r}"
    );
    sb.ctl(
        &node,
        "add",
        "svc",
        Some(&pod.path()),
        &[("CNI_IFNAME", "net2")],
    )
    .expect_success();
    let pr = routes(&pod, false);
    let defaults: Vec<&String> = pr.iter().filter(|r| r.starts_with("default")).collect();
    assert_eq!(defaults.len(), 1, "{pr:?}");
    assert!(defaults[0].contains("dev eth0"), "{pr:?}");
    assert!(
        pr.contains(&"10.92.0.0/24 via 169.254.1.1 dev net1 onlink".to_string()),
        "{pr:?}"
    );
    // `routes` replaces the pool routes.
    assert!(
        pr.contains(&"10.96.0.0/12 via 169.254.1.1 dev net2 onlink".to_string()),
        "{pr:?}"
    );
    assert!(!pr.iter().any(|r| r.starts_with("10.93.0.0/24")), "{pr:?}");
    sb.ctl(
        &node,
        "check",
        NET,
        Some(&pod.path()),
        &[("CNI_IFNAME", "net1")],
    )
    .expect_success();
    for (net, ifname) in [("svc", "net2"), (NET, "net1"), ("cluster", "eth0")] {
        sb.ctl(
            &node,
            "del",
            net,
            Some(&pod.path()),
            &[("CNI_IFNAME", ifname)],
        )
        .expect_success();
    }
    assert_eq!(pod.links(), ["lo"]);
    assert!(node_veths(&node).iter().all(|l| l == "plxbr9"));
    assert!(pod_routes(&node).is_empty());
    assert!(leases(&sb).is_empty());
}

#[test]
fn del_with_the_pod_netns_gone_and_twice() {
    require_root!();
    let (sb, node) = setup(json!({}));
    let pod = Netns::new("g");
    let keep = Netns::new("k");
    add(&sb, &node, &pod);
    let rk = add(&sb, &node, &keep);
    let path = pod.path();
    drop(pod);
    assert!(!path.exists());
    del(&sb, &node, &path);
    assert_eq!(
        node_veths(&node),
        [rk["interfaces"][0]["name"].as_str().unwrap()]
    );
    assert_eq!(leases(&sb).len(), 1);
    assert_eq!(pod_routes(&node).len(), 1);
    del(&sb, &node, &path);
    del(&sb, &node, &keep.path());
    del(&sb, &node, &keep.path());
    assert!(node_veths(&node).is_empty());
    assert!(pod_routes(&node).is_empty());
    assert!(leases(&sb).is_empty());
}

#[test]
fn bad_configs_are_code_7_and_create_nothing() {
    require_root!();
    let sb = CniSandbox::new();
    let node = Netns::new("node");
    let pod = Netns::new("pod");
    let ipam = host_local(&sb, POOL);
    for (i, (keys, needle)) in [
        (json!({"mtu": -1}), "mtu"),
        (json!({"mtu": "1500"}), "mtu"),
        (json!({"routes": [{"dst": "not-a-cidr"}]}), "routes"),
        (json!({"routes": "10.0.0.0/8"}), "routes"),
        (
            json!({"routes": [{"dst": "10.0.0.0/8", "gw": "10.0.0.1"}]}),
            "not reachable from a routed pod",
        ),
        (json!({"runDir": "relative"}), "runDir"),
        (json!({"ipam": {"type": 5}}), "ipam.type"),
    ]
    .into_iter()
    .enumerate()
    {
        let net = format!("bad{i}");
        let mut k = json!({"ipam": ipam});
        for (key, v) in keys.as_object().unwrap() {
            k[key] = v.clone();
        }
        write_net(&sb, &net, k);
        let e = sb.ctl(&node, "add", &net, Some(&pod.path()), &[]).err();
        assert_error(&e, 7, needle);
    }
    assert!(node_veths(&node).is_empty());
    assert_eq!(pod.links(), ["lo"]);
    assert!(leases(&sb).is_empty());
    // Unknown keys are ignored, as the reference plugins' decoding does.
    write_net(
        &sb,
        "extra",
        json!({"ipam": ipam, "someFutureKey": {"x": 1}}),
    );
    sb.ctl(&node, "add", "extra", Some(&pod.path()), &[])
        .expect_success();
    sb.ctl(&node, "del", "extra", Some(&pod.path()), &[])
        .expect_success();
}

/// A test double of plexusd's IPAM endpoint on `<dir>/plexusd.sock`: the
/// agent's side of block IPAM (block claims in the store) is not built
/// yet, so this stand-in answers with the plexus-agent-api types the real
/// agent will serve: `Allocate` gives `10.94.0.N/32` from pool
/// `10.94.0.0/16`, `Release`/`Gc`/`Status` answer as the agent would. It
/// records every request. Stopped (thread joined) on drop.
struct FakeAgent {
    dir: tempfile::TempDir,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeAgent {
    fn start() -> FakeAgent {
        let dir = tempfile::tempdir().unwrap();
        let listener = UnixListener::bind(dir.path().join(SOCKET_NAME)).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, halt) = (requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut next = 2u8;
            for conn in listener.incoming() {
                if halt.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let mut line = String::new();
                if BufReader::new(&conn).read_line(&mut line).is_err() {
                    continue;
                }
                let req: Request = serde_json::from_str(&line).unwrap();
                let answer = match &req {
                    Request::Allocate { .. } => {
                        next += 1;
                        Answer::Ok(Allocation {
                            addresses: vec![Cidr::host([10, 94, 0, next].into())],
                            pools: vec!["10.94.0.0/16".parse().unwrap()],
                            mtu: None,
                        })
                        .to_line()
                    }
                    Request::Release { .. } => Answer::Ok(Released { released: 1 }).to_line(),
                    Request::Gc { .. } => Answer::Ok(GcDone { released: 0 }).to_line(),
                    Request::Status => Answer::Ok(Status {
                        ready: true,
                        rest: Default::default(),
                    })
                    .to_line(),
                    _ => Answer::<Status>::Err(plexus_agent_api::AgentError {
                        error: "this test double has no BGP and no cluster IPAM".into(),
                        code: None,
                    })
                    .to_line(),
                };
                log.lock().unwrap().push(req);
                let _ = (&conn).write_all(&answer);
            }
        });
        FakeAgent {
            dir,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    fn run_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = std::os::unix::net::UnixStream::connect(self.dir.path().join(SOCKET_NAME));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn addresses_from_the_agent_socket() {
    require_root!();
    let agent = FakeAgent::start();
    let sb = CniSandbox::new();
    write_net(&sb, NET, json!({"runDir": agent.run_dir(), "pool": "blue"}));
    let node = Netns::new("node");
    let (a, b) = (Netns::new("a"), Netns::new("b"));
    let ra = add(&sb, &node, &a);
    let rb = add(&sb, &node, &b);
    assert_eq!(ra["ips"][0]["address"], "10.94.0.3/32", "{ra}");
    assert_eq!(rb["ips"][0]["address"], "10.94.0.4/32", "{rb}");
    assert!(a.ping("10.94.0.4"));
    sb.ctl(&node, "check", NET, Some(&a.path()), &[])
        .expect_success();
    sb.ctl_args(&node, &["status", NET], &[]).expect_success();
    let a_id = match &agent.requests()[0] {
        Request::Allocate { container_id, .. } => container_id.clone(),
        r => panic!("{r:?}"),
    };
    // GC keeping pod a: the runtime DELs pod b (a Release), then the
    // agent is told which attachments are valid.
    sb.ctl_args(&node, &["gc", NET, "--valid", &format!("{a_id}/eth0")], &[])
        .expect_success();
    assert_eq!(
        node_veths(&node),
        [ra["interfaces"][0]["name"].as_str().unwrap()]
    );
    del(&sb, &node, &a.path());
    assert!(node_veths(&node).is_empty());
    assert!(pod_routes(&node).is_empty());

    let reqs = agent.requests();
    assert_eq!(
        reqs[0],
        Request::Allocate {
            network: NET.into(),
            container_id: a_id.clone(),
            ifname: "eth0".into(),
            pool: Some("blue".into()),
            addresses: Vec::new(),
        }
    );
    let b_id = match &reqs[1] {
        Request::Allocate { container_id, .. } => container_id.clone(),
        r => panic!("{r:?}"),
    };
    let release = |id: &str| Request::Release {
        network: NET.into(),
        container_id: id.into(),
        ifname: "eth0".into(),
    };
    let gc = Request::Gc {
        network: NET.into(),
        valid: vec![plexus_agent_api::AttachmentKey {
            container_id: a_id.clone(),
            ifname: "eth0".into(),
        }],
    };
    assert_eq!(
        reqs[2..],
        [Request::Status, release(&b_id), gc, release(&a_id)],
        "{reqs:?}"
    );
}

#[test]
fn no_agent_is_code_11_and_leaves_nothing() {
    require_root!();
    let run_dir = tempfile::tempdir().unwrap();
    let sb = CniSandbox::new();
    write_net(&sb, NET, json!({"runDir": run_dir.path()}));
    let node = Netns::new("node");
    let pod = Netns::new("pod");
    let e = sb.ctl(&node, "add", NET, Some(&pod.path()), &[]).err();
    let sock = run_dir.path().join(SOCKET_NAME);
    assert_error(&e, 11, &sock.display().to_string());
    assert!(node.links() == ["lo"], "{:?}", node.links());
    assert_eq!(pod.links(), ["lo"]);
    assert!(pod_routes(&node).is_empty());
    assert!(routes(&pod, false).is_empty());
    // STATUS says the plugin cannot serve ADD.
    let e = sb.ctl_args(&node, &["status", NET], &[]).err();
    assert_error(&e, 50, &sock.display().to_string());
}

#[test]
fn a_failed_add_leaves_nothing_and_check_sees_the_pod_side() {
    require_root!();
    let (sb, node) = setup(json!({}));
    let pod = Netns::new("pod");
    // Someone else already routes the first address host-local hands out:
    // ADD fails after creating the veth and allocating, and undoes both.
    node.ip(&["route", "add", "10.90.0.2/32", "dev", "lo"]);
    let e = sb.ctl(&node, "add", NET, Some(&pod.path()), &[]).err();
    assert_error(&e, 100, "already has a route to 10.90.0.2");
    assert!(node_veths(&node).is_empty(), "{:?}", node.links());
    assert_eq!(pod.links(), ["lo"]);
    assert!(leases(&sb).is_empty(), "{:?}", leases(&sb));
    node.ip(&["route", "del", "10.90.0.2/32", "dev", "lo"]);

    add(&sb, &node, &pod);
    sb.ctl(&node, "check", NET, Some(&pod.path()), &[])
        .expect_success();
    // Without its default route, then without its gateway's neighbour
    // entry (the pod could not send): CHECK says which.
    pod.ip(&["route", "del", "default"]);
    let e = sb.ctl(&node, "check", NET, Some(&pod.path()), &[]).err();
    assert_error(&e, 100, "Expected Route 0.0.0.0/0 via 169.254.1.1");
    pod.ip(&["neigh", "del", "169.254.1.1", "dev", "eth0"]);
    let e = sb.ctl(&node, "check", NET, Some(&pod.path()), &[]).err();
    assert_error(&e, 100, "neighbour entry for its gateway 169.254.1.1");
    del(&sb, &node, &pod.path());
    assert!(node_veths(&node).is_empty());
    assert!(leases(&sb).is_empty());
}
