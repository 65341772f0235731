//! The test harness: network namespaces standing for nodes and pods, a
//! throwaway CNI environment per test, and helpers to run the built binaries.
//!
//! Rules every test follows through this harness:
//! - everything happens in namespaces the test created (names carry the
//!   test process's pid, so parallel tests never collide);
//! - namespaces are deleted by `Drop`, so a failing test cleans up too, and
//!   namespaces left by a killed test process are swept on the next run;
//! - nothing is configured in the root namespace.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;

use serde_json::Value;

pub mod apiserver;
pub mod cluster;
pub mod cni;
pub mod etcd;
pub mod example;
pub mod informer;
pub mod ipam;
pub mod kernel;
pub mod probe;
pub mod proxy;
pub mod routers;

pub use cni::{CniSandbox, CtlChild, CtlOutput};
pub use kernel::{skip_kernel_feature, skip_kernel_has_feature};

/// Where Debian's containernetworking-plugins puts the reference plugins.
pub const REFERENCE_DIR: &str = "/usr/lib/cni";
const PREFIX: &str = "plx";

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether a test that cannot run must fail instead of skipping.
/// `scripts/test.sh` (and so CI) sets `PLEXUS_REQUIRE_ALL=1`: there every
/// prerequisite is installed by the script, so a missing one is breakage.
pub fn require_all() -> bool {
    std::env::var_os("PLEXUS_REQUIRE_ALL").is_some_and(|v| v == "1")
}

/// Say why a test cannot run here. Outside `PLEXUS_REQUIRE_ALL=1` it prints a
/// SKIP line and the caller returns; under it, the test fails naming what is
/// missing.
pub fn skip(why: &str) {
    assert!(
        !require_all(),
        "PLEXUS_REQUIRE_ALL=1 and this test cannot run: {why}"
    );
    eprintln!("SKIP: {why}");
}

/// Return early (a SKIP line, or a failure under `PLEXUS_REQUIRE_ALL=1`) when
/// not root.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::is_root() {
            $crate::skip("this test needs root to create network namespaces");
            return;
        }
    };
}

/// Return early (or fail, see [`skip`]) when the reference plugins are not
/// installed.
#[macro_export]
macro_rules! require_reference_plugins {
    () => {
        if !$crate::reference_available() {
            $crate::skip(&format!(
                "the reference plugins are not in {} (apt-get install containernetworking-plugins)",
                $crate::REFERENCE_DIR
            ));
            return;
        }
    };
}

pub fn reference_available() -> bool {
    Path::new(REFERENCE_DIR).join("bridge").exists()
}

/// The directory holding this workspace's built binaries (target/debug when
/// tests run in debug): the test executable lives in `<dir>/deps`.
pub fn bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("PLEXUS_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|p| {
            if p.ends_with("deps") {
                p.parent()
            } else {
                Some(p)
            }
        })
        .expect("target dir")
        .to_path_buf();
    assert!(
        dir.join("plexusctl").exists(),
        "{} has no plexusctl: run `cargo build --workspace --bins` before the integration tests",
        dir.display()
    );
    dir
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);
static SWEEP: Once = Once::new();

/// Delete `plx-<pid>-...` namespaces whose creating process is gone.
fn sweep_stale() {
    let Ok(rd) = std::fs::read_dir("/var/run/netns") else {
        return;
    };
    for ent in rd.filter_map(Result::ok) {
        let name = ent.file_name().to_string_lossy().into_owned();
        let mut parts = name.splitn(3, '-');
        if parts.next() != Some(PREFIX) {
            continue;
        }
        let Some(pid) = parts.next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
        }
    }
}

/// A named network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Create `plx-<pid>-<n>-<tag>` with loopback up.
    pub fn new(tag: &str) -> Netns {
        SWEEP.call_once(sweep_stale);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("{PREFIX}-{}-{n}-{tag}", std::process::id());
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/var/run/netns/{}", self.name))
    }

    /// A command that runs inside this namespace (`ip netns exec`, which also
    /// gives it this namespace's /sys).
    pub fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Run `ip ARGS` in the namespace; panics on failure.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut c = Command::new("ip");
        c.args(["-n", &self.name]).args(args);
        run_ok(&mut c)
    }

    /// `ip -j ARGS` parsed.
    pub fn ip_json(&self, args: &[&str]) -> Value {
        let mut c = Command::new("ip");
        c.args(["-j", "-n", &self.name]).args(args);
        let out = run_ok(&mut c);
        serde_json::from_str(if out.trim().is_empty() { "[]" } else { &out })
            .unwrap_or_else(|e| panic!("ip -j {args:?}: {e}: {out}"))
    }

    /// Run `f` to completion on a current-thread runtime on a thread inside
    /// this namespace: every socket it opens is in that namespace.
    pub fn block_on<T: Send>(&self, f: impl std::future::Future<Output = T> + Send) -> T {
        self.run(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime")
                .block_on(f)
        })
    }

    /// Run `f` on a thread that entered this namespace (setns is per
    /// thread), returning its value; a panic inside is passed on.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        use std::os::fd::AsRawFd;
        let ns = std::fs::File::open(self.path()).expect("open netns");
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: affects only this scoped thread; the fd is valid.
                let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(
                    rc,
                    0,
                    "setns {}: {}",
                    self.name,
                    std::io::Error::last_os_error()
                );
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// `GET PATH` (HTTP/1.0) to `addr` from inside this namespace: the whole
    /// response, headers included (metrics endpoints of the daemons here).
    pub fn http_get(&self, addr: &str, path: &str) -> String {
        self.run(|| {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(addr)
                .unwrap_or_else(|e| panic!("connect to {addr} in {}: {e}", self.name));
            write!(s, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
            let mut body = String::new();
            s.read_to_string(&mut body).unwrap();
            body
        })
    }

    /// Run `sh -c SCRIPT` in the namespace.
    pub fn sh(&self, script: &str) -> Output {
        self.cmd("sh")
            .args(["-c", script])
            .output()
            .expect("spawn sh")
    }

    /// Names of the links in this namespace.
    pub fn links(&self) -> Vec<String> {
        self.ip_json(&["link", "show"])
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["ifname"].as_str().unwrap().to_string())
            .collect()
    }

    /// `nft list table FAMILY TABLE` in the namespace; empty if the table
    /// does not exist.
    pub fn nft_table(&self, family: &str, table: &str) -> String {
        let out = self
            .cmd("nft")
            .args(["list", "table", family, table])
            .output()
            .expect("spawn nft");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn has_link(&self, name: &str) -> bool {
        self.links().iter().any(|l| l == name)
    }

    /// Global addresses on `dev`, as "addr/prefix".
    pub fn addrs(&self, dev: &str) -> Vec<String> {
        let v = self.ip_json(&["addr", "show", "dev", dev]);
        v[0]["addr_info"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|i| i["scope"] == "global")
                    .map(|i| format!("{}/{}", i["local"].as_str().unwrap(), i["prefixlen"]))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// True when `ping -c1` from this namespace reaches `addr`. Only ever
    /// aimed at addresses inside namespaces the test created.
    pub fn ping(&self, addr: &str) -> bool {
        let flag = if addr.contains(':') { "-6" } else { "-4" };
        let out = self
            .cmd("ping")
            .args([flag, "-c1", "-W2", addr])
            .output()
            .expect("spawn ping");
        // Exit 2 and above means ping itself could not run, not "no reply".
        assert!(
            out.status.code().is_some_and(|c| c <= 1),
            "ping could not run (is iputils-ping installed?): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.status.success()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Run a command with `input` on its stdin; stdout and stderr are captured.
pub fn output_with_stdin(c: &mut Command, input: &[u8]) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {c:?}: {e}"));
    // Dropping stdin after the write closes it, so the child sees EOF.
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(input)
        .unwrap_or_else(|e| panic!("write to {c:?}: {e}"));
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("wait for {c:?}: {e}"))
}

/// Runs the plugin binary `plugin` directly (no runtime) inside `node` for
/// container `cid` with `CNI_IFNAME=eth0` and `CNI_PATH` = our binaries,
/// then the reference plugins; `env` adds to or overrides that (CNI_NETNS,
/// CNI_ARGS, ...). Returns whether it succeeded and its stdout as JSON
/// (`Null` when empty).
pub fn call_plugin(
    node: &Netns,
    plugin: &str,
    cmd: &str,
    cid: &str,
    env: &[(&str, &str)],
    conf: &serde_json::Value,
) -> (bool, serde_json::Value) {
    let mut c = node.cmd(bin_dir().join(plugin));
    c.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", format!("{}:/usr/lib/cni", bin_dir().display()));
    c.envs(env.iter().copied());
    let out = output_with_stdin(&mut c, &serde_json::to_vec(conf).unwrap());
    let v = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.success(), v)
}

/// Run a command, panic with its output if it fails, return stdout.
pub fn run_ok(c: &mut Command) -> String {
    let out = c.output().unwrap_or_else(|e| panic!("spawn {c:?}: {e}"));
    assert!(
        out.status.success(),
        "{c:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A stream's next item; a stream that goes quiet fails the test after a
/// minute instead of hanging it (a guard, not a speed check).
pub async fn next_event<S: futures::Stream + Unpin>(w: &mut S) -> S::Item {
    use futures::StreamExt;
    tokio::time::timeout(std::time::Duration::from_secs(60), w.next())
        .await
        .expect("no event within 60 s")
        .expect("the stream ended")
}
