//! A throwaway CNI environment: config dir, cache dir, IPAM data dir, and
//! plexusctl runs inside a node namespace.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::{bin_dir, Netns, REFERENCE_DIR};

/// Per-test directories. Plugin configs should put IPAM state under
/// [`CniSandbox::data_dir`] so nothing lands in /var/lib/cni.
#[derive(Debug)]
pub struct CniSandbox {
    pub dir: tempfile::TempDir,
    pub conf_dir: PathBuf,
    pub cache_dir: PathBuf,
    pub data_dir: PathBuf,
    /// CNI_PATH: our binaries first, then the reference plugins.
    pub cni_path: String,
}

/// What a plexusctl call printed.
#[derive(Debug)]
pub struct CtlOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl CtlOutput {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr))
    }

    /// Assert that the call succeeded (panic with everything it printed
    /// otherwise) and hand the output on.
    pub fn expect_success(self) -> Self {
        assert!(
            self.success,
            "plexusctl failed:\n{}\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Panic unless the call failed; return the CNI error JSON.
    pub fn err(self) -> Value {
        assert!(
            !self.success,
            "plexusctl unexpectedly succeeded:\n{}",
            self.stdout
        );
        self.json()
    }
}

/// A plexusctl call running in the background.
#[derive(Debug)]
pub struct CtlChild(std::process::Child);

impl CtlChild {
    pub fn wait(self) -> CtlOutput {
        let out = self.0.wait_with_output().expect("wait for plexusctl");
        CtlOutput {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Default for CniSandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl CniSandbox {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("plexus-test")
            .tempdir()
            .unwrap();
        let conf_dir = dir.path().join("net.d");
        let cache_dir = dir.path().join("cache");
        let data_dir = dir.path().join("ipam");
        std::fs::create_dir_all(&conf_dir).unwrap();
        CniSandbox {
            cni_path: format!("{}:{REFERENCE_DIR}", bin_dir().display()),
            dir,
            conf_dir,
            cache_dir,
            data_dir,
        }
    }

    /// Write `conf` as `<name>.conflist` (or `.conf` when it has no plugins).
    pub fn write_conf(&self, file: &str, conf: &Value) -> PathBuf {
        let p = self.conf_dir.join(file);
        std::fs::write(&p, serde_json::to_vec_pretty(conf).unwrap()).unwrap();
        p
    }

    /// `plexusctl cni <op> <net> <netns>` run inside `node`, with `env`
    /// added (CNI_ARGS, CAP_ARGS, CNI_IFNAME...).
    pub fn ctl(
        &self,
        node: &Netns,
        op: &str,
        net: &str,
        pod: Option<&Path>,
        env: &[(&str, &str)],
    ) -> CtlOutput {
        let mut args = vec![op.to_string(), net.to_string()];
        if let Some(p) = pod {
            args.push(p.display().to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.ctl_args(node, &args, env)
    }

    /// [`CniSandbox::ctl`] started in the background (a call the test
    /// interferes with while it runs); [`CtlChild::wait`] for its outcome.
    pub fn spawn_ctl(
        &self,
        node: &Netns,
        op: &str,
        net: &str,
        pod: Option<&Path>,
        env: &[(&str, &str)],
    ) -> CtlChild {
        let mut args = vec![op.to_string(), net.to_string()];
        if let Some(p) = pod {
            args.push(p.display().to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut c = self.ctl_command(node, &args, env);
        let child = c
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn plexusctl");
        CtlChild(child)
    }

    /// `plexusctl cni ARGS...` inside `node`.
    pub fn ctl_args(&self, node: &Netns, args: &[&str], env: &[(&str, &str)]) -> CtlOutput {
        let out = self
            .ctl_command(node, args, env)
            .output()
            .expect("spawn plexusctl");
        CtlOutput {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn ctl_command(&self, node: &Netns, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut c: Command = node.cmd(bin_dir().join("plexusctl"));
        c.arg("cni").args(args);
        c.env("NETCONFPATH", &self.conf_dir)
            .env("CNI_PATH", &self.cni_path)
            .env("PLEXUS_CACHE_DIR", &self.cache_dir)
            .env_remove("CNI_ARGS")
            .env_remove("CAP_ARGS")
            .env_remove("CNI_IFNAME");
        for (k, v) in env {
            c.env(k, v);
        }
        c
    }

    /// Addresses host-local (ours or the reference) still holds in
    /// [`CniSandbox::data_dir`]: the files named like an IP address.
    pub fn leases(&self) -> Vec<String> {
        Self::files_under(&self.data_dir)
            .into_iter()
            .filter(|f| {
                Path::new(f)
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.parse::<std::net::IpAddr>().is_ok())
            })
            .collect()
    }

    /// Files below `dir` (relative paths, sorted), for leak checks.
    pub fn files_under(dir: &Path) -> Vec<String> {
        fn walk(base: &Path, d: &Path, out: &mut Vec<String>) {
            if let Ok(rd) = std::fs::read_dir(d) {
                for e in rd.filter_map(Result::ok) {
                    let p = e.path();
                    if p.is_dir() {
                        walk(base, &p, out);
                    } else {
                        out.push(p.strip_prefix(base).unwrap().display().to_string());
                    }
                }
            }
        }
        let mut out = Vec::new();
        walk(dir, dir, &mut out);
        out.sort();
        out
    }
}
