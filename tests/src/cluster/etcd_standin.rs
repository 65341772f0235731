//! TEMPORARY stand-in for `plexus_tests::etcd` (branch ovstore), with the
//! same API shape: Debian's etcd in its own netns, killed by pid on drop.
//! Delete this file and point `cluster` at `crate::etcd::Etcd` once that
//! module is merged.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Netns;

#[derive(Debug)]
pub struct Etcd {
    child: Child,
    ip: String,
    netns: PathBuf,
    _dir: tempfile::TempDir,
}

impl Etcd {
    /// Start etcd listening on `ip:2379` inside `ns` (which must hold `ip`),
    /// waiting until it answers.
    pub fn start(ns: &Netns, ip: &str) -> Etcd {
        let dir = tempfile::Builder::new()
            .prefix("plexus-etcd")
            .tempdir()
            .unwrap();
        let client = format!("http://{ip}:2379");
        let log = std::fs::File::create(dir.path().join("etcd.log")).unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net={}", ns.path().display()))
            .arg("etcd")
            .args(["--name", "n", "--data-dir"])
            .arg(dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args(["--listen-peer-urls", "http://127.0.0.1:2380"])
            .args(["--initial-advertise-peer-urls", "http://127.0.0.1:2380"])
            .args(["--initial-cluster", "n=http://127.0.0.1:2380"])
            .args(["--max-txn-ops", "4096"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn etcd (apt-get install etcd-server)");
        let e = Etcd {
            child,
            ip: ip.into(),
            netns: ns.path(),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while e.etcdctl(&["endpoint", "health"]).is_err() {
            assert!(Instant::now() < deadline, "etcd did not become healthy");
            std::thread::sleep(Duration::from_millis(100));
        }
        e
    }

    /// `IP:2379`.
    pub fn endpoint(&self) -> String {
        format!("{}:2379", self.ip)
    }

    /// The agent's `--store` URL.
    pub fn url(&self) -> String {
        format!("etcd://{}", self.endpoint())
    }

    /// `etcdctl ARGS` against this server, inside its netns.
    pub fn etcdctl(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", self.netns.display()))
            .arg("etcdctl")
            .arg(format!("--endpoints=http://{}", self.endpoint()))
            .args(["--dial-timeout=2s", "--command-timeout=5s"])
            .args(args)
            .env("ETCDCTL_API", "3")
            .output()
            .map_err(|e| format!("spawn etcdctl: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "etcdctl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    pub fn put(&self, key: &str, value: &str) {
        self.etcdctl(&["put", key, value]).unwrap();
    }

    pub fn get(&self, key: &str) -> Option<String> {
        let out = self.etcdctl(&["get", "--print-value-only", key]).unwrap();
        let v = out.strip_suffix('\n').unwrap_or(&out);
        (!out.is_empty()).then(|| v.to_string())
    }

    pub fn del(&self, key: &str) {
        self.etcdctl(&["del", key]).unwrap();
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
