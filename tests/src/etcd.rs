//! A real etcd (Debian's `etcd-server`, v3 API) for a test: started inside a
//! test's network namespace on a temporary data dir, killed by pid on drop.
//!
//! ```ignore
//! let ns = Netns::new("etcd");
//! ns.ip(&["addr", "add", "10.99.0.10/24", "dev", "eth0"]); // or use 127.0.0.1
//! let etcd = Etcd::start(&ns, "10.99.0.10");
//! etcd.put("/coreos.com/network/config", r#"{"Network":"10.5.0.0/16",...}"#);
//! // plexusd --store etcd.url() ...
//! ```

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{output_with_stdin, Netns};

pub const ETCD: &str = "/usr/bin/etcd";
pub const ETCDCTL: &str = "/usr/bin/etcdctl";

/// Whether etcd and etcdctl are installed (scripts/install-deps.sh installs
/// them: etcd-server, etcd-client).
pub fn etcd_available() -> bool {
    std::path::Path::new(ETCD).exists() && std::path::Path::new(ETCDCTL).exists()
}

/// Return early (a SKIP, or a failure under `PLEXUS_REQUIRE_ALL=1`) when
/// etcd is not installed.
#[macro_export]
macro_rules! require_etcd {
    () => {
        if !$crate::etcd::etcd_available() {
            $crate::skip("etcd is not installed (apt-get install etcd-server etcd-client)");
            return;
        }
    };
}

/// One etcd member serving `http://IP:2379` inside a namespace.
#[derive(Debug)]
pub struct Etcd {
    child: Option<Child>,
    netns: String,
    ip: String,
    dir: tempfile::TempDir,
}

impl Etcd {
    /// Start etcd in `netns` listening for clients on `ip`:2379 (an address
    /// the namespace already has), and wait until it answers (at most 30 s;
    /// it usually takes about a second).
    pub fn start(netns: &Netns, ip: &str) -> Etcd {
        let dir = tempfile::tempdir().expect("etcd temp dir");
        let data = dir.path().join("data");
        let log = std::fs::File::create(dir.path().join("etcd.log")).expect("etcd log");
        let client = format!("http://{}:2379", bracket(ip));
        let child = netns
            .cmd(ETCD)
            .args(["--name", "n", "--data-dir"])
            .arg(&data)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", "http://127.0.0.1:2380"])
            .args(["--initial-advertise-peer-urls", "http://127.0.0.1:2380"])
            .args(["--initial-cluster", "n=http://127.0.0.1:2380"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("etcd log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {ETCD}: {e}"));
        let mut etcd = Etcd {
            child: Some(child),
            netns: netns.name.clone(),
            ip: ip.to_string(),
            dir,
        };
        etcd.wait_ready();
        etcd
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("etcd exited ({status}) before answering: {}", self.log());
            }
            let out = self
                .ctl()
                .args(["endpoint", "health"])
                .output()
                .expect("spawn etcdctl");
            if out.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not answer within 30 s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `http://IP:2379`.
    pub fn endpoint(&self) -> String {
        format!("http://{}:2379", bracket(&self.ip))
    }

    /// `etcd://IP:2379`, the `--store` URL.
    pub fn url(&self) -> String {
        format!("etcd://{}:2379", bracket(&self.ip))
    }

    /// The etcd process's pid (while running).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The data directory's parent (holds etcd.log).
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// What etcd logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    /// `etcdctl --endpoints URL` in the namespace (v3 API).
    pub fn ctl(&self) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.netns, ETCDCTL])
            .env("ETCDCTL_API", "3")
            .args([
                "--endpoints",
                &self.endpoint(),
                "--dial-timeout",
                "2s",
                "--command-timeout",
                "5s",
            ]);
        c
    }

    /// Run `etcdctl ARGS`, panic if it fails, return its stdout.
    pub fn ctl_out(&self, args: &[&str]) -> String {
        self.ctl_ok(args, None)
    }

    fn ctl_ok(&self, args: &[&str], stdin: Option<&[u8]>) -> String {
        let mut c = self.ctl();
        c.args(args);
        let out = match stdin {
            Some(input) => output_with_stdin(&mut c, input),
            None => c.output().expect("spawn etcdctl"),
        };
        assert!(
            out.status.success(),
            "etcdctl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `etcdctl put KEY` with the value on stdin (any bytes, even a leading '-').
    pub fn put(&self, key: &str, value: &str) {
        self.ctl_ok(&["put", key], Some(value.as_bytes()));
    }

    /// The value at `key`, if any.
    pub fn get(&self, key: &str) -> Option<String> {
        let v = self.get_json(key, false);
        let kv = v["kvs"].as_array()?.first()?.clone();
        Some(String::from_utf8(b64(kv["value"].as_str().unwrap_or(""))).expect("UTF-8 value"))
    }

    /// Every key under `prefix` with its value, in key order.
    pub fn get_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        let v = self.get_json(prefix, true);
        v["kvs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|kv| {
                        let k = String::from_utf8(b64(kv["key"].as_str().unwrap())).unwrap();
                        let v = String::from_utf8(b64(kv["value"].as_str().unwrap_or(""))).unwrap();
                        (k, v)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The TTL lease `key` is attached to (0 = none).
    pub fn lease_of(&self, key: &str) -> i64 {
        let v = self.get_json(key, false);
        v["kvs"][0]["lease"].as_i64().unwrap_or(0)
    }

    fn get_json(&self, key: &str, prefix: bool) -> Value {
        let mut args = vec!["get", key, "-w", "json"];
        if prefix {
            args.push("--prefix");
        }
        serde_json::from_str(&self.ctl_ok(&args, None)).expect("etcdctl JSON")
    }

    /// Delete `key`; how many keys went.
    pub fn del(&self, key: &str) -> u64 {
        self.ctl_ok(&["del", key], None).trim().parse().unwrap_or(0)
    }

    /// The store's current revision.
    pub fn revision(&self) -> i64 {
        self.get_json("/", false)["header"]["revision"]
            .as_i64()
            .expect("revision in etcdctl's answer")
    }

    /// Drop the history before `revision` (`etcdctl compact --physical`).
    pub fn compact(&self, revision: i64) {
        self.ctl_ok(&["compact", &revision.to_string(), "--physical"], None);
    }

    /// Kill etcd now (SIGKILL, by pid) and reap it: "the store went down".
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

fn bracket(ip: &str) -> String {
    if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_string()
    }
}

/// etcdctl's JSON carries keys and values base64-encoded.
fn b64(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .unwrap_or_else(|e| panic!("etcdctl sent invalid base64 {s:?}: {e}"))
}
