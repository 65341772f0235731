//! The plexusd binary in a namespace of its own, on the embedded `file:`
//! store: lease file, readiness, control socket, SIGTERM leaving the data
//! plane in place, a restart keeping subnet and VTEP MAC, and bad configs
//! failing before anything is created.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use plexus_tests::{require_root, Netns};

const BIN: &str = env!("CARGO_BIN_EXE_plexusd");

/// A plexusd process, killed (by pid) if the test ends before it does.
struct Agent(Option<Child>);

impl Agent {
    fn start(ns: &Netns, dir: &Path, conf: &Path) -> Agent {
        let child = ns
            .cmd(BIN)
            .args(["--node-name", "n1", "--iface", "eth0", "--run-dir"])
            .arg(dir.join("run"))
            .arg("--store")
            .arg(format!("file:{}", dir.join("store").display()))
            .arg("--net-config")
            .arg(conf)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn plexusd");
        Agent(Some(child))
    }

    /// SIGTERM, then the exit status and stderr.
    fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let child = self.0.take().unwrap();
        // SAFETY: kill(2) on the pid of a child we own and have not reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let out = child.wait_with_output().unwrap();
        (
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn wait(mut self) -> (std::process::ExitStatus, String) {
        let out = self.0.take().unwrap().wait_with_output().unwrap();
        (
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Waits for `path` to exist (bounded, so a broken agent fails the test
/// instead of hanging it).
fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn node(tag: &str) -> Netns {
    let ns = Netns::new(tag);
    ns.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "peer0",
    ]);
    ns.ip(&["addr", "add", "192.168.60.1/24", "dev", "eth0"]);
    ns.ip(&["link", "set", "eth0", "up"]);
    ns.ip(&["link", "set", "peer0", "up"]);
    ns
}

fn write_conf(dir: &Path, json: &str) -> PathBuf {
    let p = dir.join("net-conf.json");
    std::fs::write(&p, json).unwrap();
    p
}

fn status(run: &Path) -> serde_json::Value {
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::os::unix::net::UnixStream::connect(run.join("plexusd.sock")).unwrap();
    s.write_all(b"{\"command\":\"status\"}\n").unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap()
}

#[test]
fn runs_reports_and_stops_leaving_the_data_plane() {
    require_root!();
    let ns = node("agentd");
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let conf = write_conf(
        dir.path(),
        r#"{"Network":"10.60.0.0/16","Backend":{"Type":"vxlan","VNI":7}}"#,
    );
    let agent = Agent::start(&ns, dir.path(), &conf);
    wait_for(&run.join("ready"));
    let env = std::fs::read_to_string(run.join("subnet.env")).unwrap();
    assert!(env.contains("FLANNEL_NETWORK=10.60.0.0/16\n"), "{env}");
    assert!(env.contains("FLANNEL_MTU=1450\n"), "{env}");
    assert!(env.contains("FLANNEL_IPMASQ=false\n"), "{env}");
    let st = status(&run);
    assert_eq!(st["node_name"], "n1");
    assert_eq!(st["backend"], "vxlan");
    assert_eq!(st["public_ip"], "192.168.60.1");
    assert_eq!(st["ready"], true);
    let subnet = st["subnet"].as_str().unwrap().to_string();
    let network_addr = subnet.split('/').next().unwrap();
    assert_eq!(ns.addrs("flannel.7"), [format!("{network_addr}/32")]);
    let mac = ns.ip_json(&["link", "show", "flannel.7"])[0]["address"].clone();

    let (code, stderr) = agent.terminate();
    assert!(code.success(), "exit {code:?}: {stderr}");
    assert!(!run.join("ready").exists());
    assert!(!run.join("plexusd.sock").exists());
    assert!(ns.has_link("flannel.7"), "the device stays after SIGTERM");

    // The device goes while the agent is down: same subnet and MAC after a restart.
    ns.ip(&["link", "del", "flannel.7"]);
    let agent = Agent::start(&ns, dir.path(), &conf);
    wait_for(&run.join("ready"));
    assert_eq!(status(&run)["subnet"], subnet.as_str());
    assert_eq!(
        ns.ip_json(&["link", "show", "flannel.7"])[0]["address"],
        mac
    );
    let (code, _) = agent.terminate();
    assert!(code.success());
}

#[test]
fn bad_configs_fail_before_anything_is_created() {
    require_root!();
    let ns = node("agentd-bad");
    for (text, why) in [
        (
            r#"{"Network":"10.60.0.0/16","Backend":{"Type":"wireguard"}}"#,
            "unknown backend",
        ),
        (r#"{"Network":"10.60.0.0/16","Backend":"#, "not valid json"),
        (
            r#"{"Network":"10.60.0.0/24","SubnetLen":16,"Backend":{"Type":"vxlan"}}"#,
            "invalid network config",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let conf = write_conf(dir.path(), text);
        let (code, stderr) = Agent::start(&ns, dir.path(), &conf).wait();
        assert!(!code.success(), "{text}: exited 0");
        assert!(stderr.contains("plexusd: "), "{stderr}");
        assert!(
            stderr.to_lowercase().contains(why),
            "{why:?} not in {stderr}"
        );
        assert!(!ns.has_link("flannel.1"));
        assert!(!dir.path().join("run/subnet.env").exists());
    }
    // No config at all.
    let dir = tempfile::tempdir().unwrap();
    let out = ns
        .cmd(BIN)
        .args(["--node-name", "n1", "--iface", "eth0", "--run-dir"])
        .arg(dir.path().join("run"))
        .arg("--store")
        .arg(format!("file:{}", dir.path().join("store").display()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no network config"));
    assert!(!ns.has_link("flannel.1"));
}
