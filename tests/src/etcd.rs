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

/// One etcd member serving `http://IP:2379` (or `https://` with
/// [`Etcd::start_tls`]) inside a namespace.
#[derive(Debug)]
pub struct Etcd {
    child: Option<Child>,
    netns: String,
    ip: String,
    dir: tempfile::TempDir,
    tls: Option<TlsFiles>,
    /// Extra flags it was started with (for a restart).
    extra: Vec<String>,
}

/// The PEM files of a TLS etcd: a throwaway CA, and a client certificate
/// it signed (the server demands one: `--client-cert-auth`).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
}

/// Make a CA, a server certificate for `ip` and a client certificate in
/// `dir` with openssl (EC P-256: quick to generate). The server certificate
/// is good for client auth too: with `--client-cert-auth`, etcd's JSON
/// gateway dials etcd's own gRPC port presenting the server certificate.
fn make_certs(dir: &std::path::Path, ip: &str) -> TlsFiles {
    let p = |n: &str| dir.join(n);
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("spawn openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &key,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=plexus-test-ca",
            ],
        ]
        .concat(),
    );
    for (name, ext) in [
        (
            "server",
            format!("subjectAltName=IP:{ip}\nextendedKeyUsage=serverAuth,clientAuth\n"),
        ),
        ("client", "extendedKeyUsage=clientAuth\n".to_string()),
    ] {
        std::fs::write(p(&format!("{name}.ext")), ext).unwrap();
        let (k, csr, crt, extf) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
            format!("{name}.ext"),
        );
        openssl(
            &[
                &["req"][..],
                &key,
                &["-keyout", &k, "-out", &csr, "-subj", &format!("/CN={name}")],
            ]
            .concat(),
        );
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "2",
            "-extfile",
            &extf,
        ]);
    }
    TlsFiles {
        ca: p("ca.crt"),
        client_cert: p("client.crt"),
        client_key: p("client.key"),
        server_cert: p("server.crt"),
        server_key: p("server.key"),
    }
}

impl Etcd {
    /// Start etcd in `netns` listening for clients on `ip`:2379 (an address
    /// the namespace already has), and wait until it answers (at most 30 s;
    /// it usually takes about a second).
    pub fn start(netns: &Netns, ip: &str) -> Etcd {
        Etcd::spawn(netns, ip, false, &[])
    }

    /// [`Etcd::start`] with extra etcd flags, e.g. `["--max-txn-ops",
    /// "4096"]` for a transaction writing a thousand leases.
    pub fn start_with(netns: &Netns, ip: &str, extra: &[&str]) -> Etcd {
        Etcd::spawn(netns, ip, false, extra)
    }

    /// [`Etcd::start`] serving HTTPS only, requiring client certificates
    /// signed by its own throwaway CA ([`Etcd::tls_files`]).
    pub fn start_tls(netns: &Netns, ip: &str) -> Etcd {
        Etcd::spawn(netns, ip, true, &[])
    }

    fn spawn(netns: &Netns, ip: &str, tls: bool, extra: &[&str]) -> Etcd {
        let dir = tempfile::tempdir().expect("etcd temp dir");
        let tls = tls.then(|| make_certs(dir.path(), ip));
        let mut etcd = Etcd {
            child: None,
            netns: netns.name.clone(),
            ip: ip.to_string(),
            dir,
            tls,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        etcd.launch();
        etcd
    }

    /// Start the etcd process (on its data dir as it is) and wait for it.
    fn launch(&mut self) {
        let data = self.dir.path().join("data");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .expect("etcd log");
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://{}:2379", bracket(&self.ip));
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns, ETCD]);
        cmd.args(&self.extra);
        if let Some(t) = &self.tls {
            cmd.arg("--cert-file")
                .arg(&t.server_cert)
                .arg("--key-file")
                .arg(&t.server_key)
                .arg("--trusted-ca-file")
                .arg(&t.ca)
                .arg("--client-cert-auth");
        }
        let child = cmd
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
        self.child = Some(child);
        self.wait_ready();
    }

    /// Kill etcd, delete its data and start it again empty, at the same
    /// address: a store "restarted with its data wiped".
    pub fn restart_wiped(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(self.dir.path().join("data"));
        self.launch();
    }

    /// Freeze (SIGSTOP) or thaw (SIGCONT) the etcd process: requests hang.
    pub fn freeze(&self, on: bool) {
        if let Some(pid) = self.pid() {
            let sig = if on { libc::SIGSTOP } else { libc::SIGCONT };
            // SAFETY: a signal to a child process of ours, by pid.
            unsafe { libc::kill(pid as i32, sig) };
        }
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

    /// `http://IP:2379` (`https://` for a TLS etcd).
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}:2379", bracket(&self.ip))
    }

    /// The CA and client certificate of a TLS etcd.
    pub fn tls_files(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
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
        if let Some(t) = &self.tls {
            c.arg("--cacert")
                .arg(&t.ca)
                .arg("--cert")
                .arg(&t.client_cert)
                .arg("--key")
                .arg(&t.client_key);
        }
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
