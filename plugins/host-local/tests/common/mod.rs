//! Helpers shared by the integration tests: run a host-local binary (ours or
//! the reference) as a runtime would, and snapshot a data directory.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

pub const OURS: &str = env!("CARGO_BIN_EXE_plexus-host-local");
pub const REFERENCE: &str = "/usr/lib/cni/host-local";

/// The reference binary, or `None` with a message on stderr saying why the
/// caller is skipping. Under `PLEXUS_REQUIRE_ALL=1` (scripts/test.sh, CI) a
/// missing reference fails the test instead.
pub fn reference() -> Option<&'static str> {
    if Path::new(REFERENCE).exists() {
        Some(REFERENCE)
    } else {
        assert!(
            std::env::var_os("PLEXUS_REQUIRE_ALL").is_none_or(|v| v != "1"),
            "PLEXUS_REQUIRE_ALL=1 and the reference plugin {REFERENCE} is missing"
        );
        eprintln!(
            "SKIPPED: reference plugin {REFERENCE} is missing; install it with \
             `apt-get install -y containernetworking-plugins`"
        );
        None
    }
}

#[derive(Debug)]
pub struct Out {
    pub ok: bool,
    pub json: Value,
    pub raw: String,
}

impl Out {
    /// The error code, panicking with the output if the call succeeded.
    pub fn code(&self) -> u64 {
        assert!(!self.ok, "expected failure, got {}", self.raw);
        self.json["code"]
            .as_u64()
            .unwrap_or_else(|| panic!("no code in {}", self.raw))
    }
    /// The allocated addresses of an ADD result.
    pub fn ips(&self) -> Vec<String> {
        assert!(self.ok, "expected success, got {}", self.raw);
        self.json["ips"]
            .as_array()
            .unwrap_or_else(|| panic!("no ips in {}", self.raw))
            .iter()
            .map(|i| i["address"].as_str().unwrap().to_string())
            .collect()
    }
}

/// One CNI call. `env` entries override the defaults (an empty value removes
/// the variable).
pub fn call(
    bin: &str,
    cmd: &str,
    conf: &Value,
    cid: &str,
    ifname: &str,
    env: &[(&str, &str)],
) -> Out {
    call_raw(bin, cmd, conf.to_string().as_bytes(), cid, ifname, env)
}

pub fn call_raw(
    bin: &str,
    cmd: &str,
    stdin: &[u8],
    cid: &str,
    ifname: &str,
    env: &[(&str, &str)],
) -> Out {
    let mut c = Command::new(bin);
    c.env_clear()
        .env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_NETNS", "/var/run/netns/test")
        .env("CNI_IFNAME", ifname)
        .env("CNI_PATH", "/usr/lib/cni");
    for (k, v) in env {
        if v.is_empty() {
            c.env_remove(k);
        } else {
            c.env(k, v);
        }
    }
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn plugin");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let o = child.wait_with_output().unwrap();
    let raw = String::from_utf8_lossy(&o.stdout).to_string();
    let json = if raw.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&raw).unwrap_or_else(|e| panic!("{bin} {cmd}: bad JSON {raw:?}: {e}"))
    };
    Out {
        ok: o.status.success(),
        json,
        raw,
    }
}

/// A network config with the given `ipam` section (dataDir filled in).
pub fn conf(version: &str, name: &str, data_dir: &Path, mut ipam: Value) -> Value {
    ipam["type"] = json!("host-local");
    ipam["dataDir"] = json!(data_dir);
    json!({"cniVersion": version, "name": name, "type": "bridge", "ipam": ipam})
}

/// Every file under `dir`: relative path -> (content, mode).
pub fn snapshot(dir: &Path) -> BTreeMap<String, (String, u32)> {
    fn walk(root: &Path, d: &Path, out: &mut BTreeMap<String, (String, u32)>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().to_string();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let mode = md.permissions().mode() & 0o7777;
            if md.is_dir() {
                out.insert(format!("{rel}/"), (String::new(), mode));
                walk(root, &p, out);
            } else {
                out.insert(rel, (std::fs::read_to_string(&p).unwrap_or_default(), mode));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// File names in a network directory, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

pub fn tempdir() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().to_path_buf();
    (t, p)
}
