//! The plexus-cluster-ipam binary end to end against plexusd's control
//! socket served in this process (plexusd's own `ctlsock` and
//! `clusteripam` handler; the agent's main loop is not involved): two
//! "nodes", each a socket in its own run directory, sharing one store, as
//! a runtime calls the plugin. Needs no root: an IPAM plugin never enters
//! the pod's namespace.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use plexus_ipam::clusterpool::ClusterLayout;
use plexus_store::{FileKv, Kv};
use plexus_tests::{bin_dir, output_with_stdin};
use plexusd::clusteripam::{ClusterIpamHandler, WithClusterIpam};
use plexusd::ctlsock::{self, Handlers};
use plexusd::status::Shared;
use serde_json::{json, Value};

/// One node's agent: the control socket in `dir`, served on a thread
/// until dropped.
struct Agent {
    dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Agent {
    fn start(kv: Arc<dyn Kv>, node: &str, ready: bool) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join(plexus_agent_api::SOCKET_NAME);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (up, is_up) = std::sync::mpsc::channel();
        let node = node.to_string();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let cluster = ClusterIpamHandler::open(kv, ClusterLayout::default(), &node)
                    .await
                    .unwrap();
                let slot = Handlers::default();
                let front = WithClusterIpam::new(Handlers::default());
                front.set_cluster(Arc::new(cluster));
                *slot.lock().unwrap() = Some(Arc::new(front));
                let status = Shared::default();
                status.update(|s| {
                    s.node_name = node.clone();
                    s.ready = ready;
                });
                let l = ctlsock::bind(&sock).unwrap();
                up.send(()).unwrap();
                tokio::select! {
                    _ = ctlsock::serve(l, status, slot) => {}
                    _ = stopped => {}
                }
            })
        });
        is_up.recv().unwrap();
        Agent {
            dir,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn run_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// whereabouts' README example, `type` changed, and our run directory.
fn conf(version: &str, run_dir: &Path, ipam: Value) -> Value {
    let mut ipam = ipam;
    ipam["type"] = json!("plexus-cluster-ipam");
    ipam["runDir"] = json!(run_dir.display().to_string());
    json!({"cniVersion": version, "name": "whereaboutsexample", "type": "macvlan",
           "master": "eth0", "mode": "bridge", "ipam": ipam})
}

/// Run the plugin: (exit ok, stdout as JSON or Null).
fn plugin(cmd: &str, cid: &str, args: &str, conf: &Value) -> (bool, Value) {
    let mut c = Command::new(bin_dir().join("plexus-cluster-ipam"));
    c.env_clear()
        .env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_NETNS", "/var/run/netns/does-not-matter")
        .env("CNI_IFNAME", "net1")
        .env("CNI_PATH", bin_dir())
        .env("CNI_ARGS", args);
    let out = output_with_stdin(&mut c, &serde_json::to_vec(conf).unwrap());
    assert!(
        out.stdout.is_empty() || serde_json::from_slice::<Value>(&out.stdout).is_ok(),
        "stdout is not JSON: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    (
        out.status.success(),
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
    )
}

fn ok(cmd: &str, cid: &str, conf: &Value) -> Value {
    let (good, v) = plugin(cmd, cid, "", conf);
    assert!(good, "{cmd} {cid}: {v}");
    v
}

fn store() -> (tempfile::TempDir, Arc<dyn Kv>) {
    let d = tempfile::tempdir().unwrap();
    let kv: Arc<dyn Kv> = Arc::new(FileKv::open(&d.path().join("store.json")).unwrap());
    (d, kv)
}

fn addrs(r: &Value) -> Vec<String> {
    r["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["address"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_whereabouts_config_works_after_changing_type_across_two_nodes() {
    let (_d, kv) = store();
    let n1 = Agent::start(kv.clone(), "n1", true);
    let n2 = Agent::start(kv.clone(), "n2", true);
    let ipam = json!({"range": "192.168.2.225/28", "exclude": ["192.168.2.229/30", "192.168.2.236/32"],
                      "gateway": "192.168.2.238", "etcd_host": "etcd:2379", "log_level": "debug",
                      "routes": [{"dst": "10.10.0.0/16"}], "dns": {"nameservers": ["192.168.2.53"]}});
    let c1 = conf("0.3.0", n1.run_dir(), ipam.clone());
    let c2 = conf("0.3.0", n2.run_dir(), ipam.clone());
    let r = ok("ADD", "pod-a", &c1);
    // A 0.3.0 result: the address with the range's length and version.
    assert_eq!(r["cniVersion"], "0.3.0");
    assert_eq!(r["ips"][0]["version"], "4");
    assert_eq!(r["ips"][0]["address"], "192.168.2.225/28");
    assert_eq!(r["ips"][0]["gateway"], "192.168.2.238");
    assert_eq!(r["routes"][0]["dst"], "10.10.0.0/16");
    assert_eq!(r["dns"]["nameservers"][0], "192.168.2.53");
    assert_eq!(ok("ADD", "pod-a", &c1), r, "ADD again: the same address");
    // Both nodes hand out from the one /28, never the same address, never
    // an excluded one (.229/30 is .228-.231, as whereabouts parses it) or
    // the gateway.
    let mut all = vec![addrs(&r)[0].clone()];
    for i in 0..7 {
        let (c, cid) = if i % 2 == 0 {
            (&c2, format!("b{i}"))
        } else {
            (&c1, format!("a{i}"))
        };
        all.extend(addrs(&ok("ADD", &cid, c)));
    }
    let mut want: Vec<String> = [225, 226, 227, 232, 233, 234, 235, 237]
        .iter()
        .map(|i| format!("192.168.2.{i}/28"))
        .collect();
    all.sort();
    want.sort();
    assert_eq!(all, want, "every usable address once");
    // Exhausted: code 100 naming the range.
    let (good, e) = plugin("ADD", "late", "", &c2);
    assert!(!good);
    assert_eq!(e["code"], 100, "{e}");
    assert!(
        e["msg"]
            .as_str()
            .unwrap()
            .contains("192.168.2.224/28 is exhausted"),
        "{e}"
    );
    assert_eq!(e["cniVersion"], "0.3.0");
    // DEL (twice: idempotent) makes room, on either node.
    ok("DEL", "pod-a", &c1);
    ok("DEL", "pod-a", &c1);
    ok("DEL", "late", &c2);
    assert_eq!(addrs(&ok("ADD", "late", &c2)), ["192.168.2.225/28"]);
}

#[test]
fn check_gc_status_and_requested_addresses() {
    let (_d, kv) = store();
    let n1 = Agent::start(kv.clone(), "n1", true);
    let ipam = json!({"ipRanges": [{"range": "10.200.0.0/24"}, {"range": "fd00:200::/120"}]});
    let c = conf("1.1.0", n1.run_dir(), ipam.clone());
    let r = ok("ADD", "c1", &c);
    assert_eq!(
        addrs(&r),
        ["10.200.0.1/24", "fd00:200::1/120"],
        "dual stack"
    );
    ok("ADD", "c2", &c);
    ok("ADD", "c3", &c);
    // CHECK with the result as prevResult passes; after DEL it fails.
    let mut with_prev = c.clone();
    with_prev["prevResult"] = r.clone();
    ok("CHECK", "c1", &with_prev);
    ok("DEL", "c1", &c);
    let (good, e) = plugin("CHECK", "c1", "", &with_prev);
    assert!(!good && e["code"] == 3, "{e}");
    // GC keeps c3 only.
    let mut gc = c.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "c3", "ifname": "net1"}]);
    ok("GC", "", &gc);
    let (good, _) = plugin("CHECK", "c2", "", &with_prev);
    assert!(!good, "c2 was collected");
    let mut c3prev = c.clone();
    c3prev["prevResult"] = ok("ADD", "c3", &c);
    ok("CHECK", "c3", &c3prev);
    ok("STATUS", "", &c);

    // The ips capability, with the pod from CNI_ARGS.
    let mut want = c.clone();
    want["runtimeConfig"] = json!({"ips": ["10.200.0.50/24"]});
    let args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=web-0;K8S_POD_UID=u-50";
    let (good, r) = plugin("ADD", "c50", args, &want);
    assert!(good, "{r}");
    assert_eq!(addrs(&r), ["10.200.0.50/24", "fd00:200::1/120"]);
    let (good, e) = plugin("ADD", "c51", args, &want);
    assert!(!good && e["code"] == 102, "taken: {e}");
    let mut outside = c.clone();
    outside["runtimeConfig"] = json!({"ips": ["10.201.0.5"]});
    let (good, e) = plugin("ADD", "c52", args, &outside);
    assert!(!good && e["code"] == 7, "{e}");
    // The store records the pod.
    let blocks = block_on(kv.range("/plexus/clusteripam/blocks/"))
        .unwrap()
        .kvs;
    let rec: Vec<Value> = blocks
        .iter()
        .map(|kv| serde_json::from_slice::<Value>(&kv.value).unwrap())
        .collect();
    let held = rec
        .iter()
        .flat_map(|b| b["allocations"].as_object().unwrap().values().cloned())
        .find(|h| h["containerID"] == "c50")
        .expect("c50 recorded");
    assert_eq!(
        (
            &held["podNamespace"],
            &held["podName"],
            &held["podUid"],
            &held["node"]
        ),
        (&json!("ns1"), &json!("web-0"), &json!("u-50"), &json!("n1"))
    );

    // Bad configs are refused before the agent is asked: code 7.
    let mut bad = c.clone();
    bad["ipam"]["subnet"] = json!("10.0.0.0/24");
    let (good, e) = plugin("ADD", "c60", "", &bad);
    assert!(
        !good && e["code"] == 7 && e["msg"].as_str().unwrap().contains("ipam.subnet"),
        "{e}"
    );
}

#[test]
fn an_agent_away_is_code_11_and_a_not_ready_one_fails_status() {
    let (_d, kv) = store();
    let away = tempfile::tempdir().unwrap();
    let c = conf("1.1.0", away.path(), json!({"range": "10.202.0.0/24"}));
    for cmd in ["ADD", "DEL", "GC"] {
        let (good, e) = plugin(cmd, "c1", "", &c);
        assert!(!good && e["code"] == 11, "{cmd}: {e}");
    }
    let (good, e) = plugin("STATUS", "", "", &c);
    assert!(!good && e["code"] == 50, "{e}");
    let starting = Agent::start(kv, "n1", false);
    let c = conf(
        "1.1.0",
        starting.run_dir(),
        json!({"range": "10.202.0.0/24"}),
    );
    let (good, e) = plugin("STATUS", "", "", &c);
    assert!(!good && e["code"] == 50, "{e}");
    // Cluster IPAM itself is served while the rest of the agent starts.
    ok("ADD", "c1", &c);
}

/// Block on a future outside any runtime (the test's store reads).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}
