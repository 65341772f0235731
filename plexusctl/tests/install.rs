//! `plexusctl install`/`uninstall` into temporary directories: a node with
//! flannel's conflist gets it wrapped, re-running install changes nothing,
//! `--watch` follows changes, uninstall leaves the directories exactly as
//! they were, and bad input changes nothing. No network namespace needed.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const PLUGINS: &[&str] = &[
    "plexus",
    "plexus-bridge",
    "plexus-host-local",
    "plexus-ipvlan",
    "plexus-vxlan",
    "plexus-bgp-routes",
    "plexus-cluster-ipam",
];

const FLANNEL: &str = r#"{
  "name": "cbr0",
  "cniVersion": "0.3.1",
  "plugins": [
    {"type": "flannel", "delegate": {"hairpinMode": true, "isDefaultGateway": true}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
"#;

/// A node's directories: bin/ and conf/ as a runtime has them, src/ with
/// the binaries to install, sa/ with a service account.
struct Node {
    dir: tempfile::TempDir,
}

impl Node {
    fn new() -> Node {
        let dir = tempfile::tempdir().unwrap();
        let n = Node { dir };
        for d in ["bin", "conf", "src", "sa"] {
            fs::create_dir(n.path(d)).unwrap();
        }
        for p in PLUGINS {
            fs::write(n.path("src").join(p), format!("#!binary {p} v2\n")).unwrap();
        }
        // The runtime's own plugins, and a plexus installed by hand earlier.
        fs::write(n.path("bin/portmap"), "portmap").unwrap();
        fs::write(n.path("bin/plexus"), "#!binary plexus v1\n").unwrap();
        fs::set_permissions(n.path("bin/plexus"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(n.path("conf/10-flannel.conflist"), FLANNEL).unwrap();
        fs::write(
            n.path("conf/99-loopback.conf"),
            r#"{"cniVersion":"0.3.1","name":"lo","type":"loopback"}"#,
        )
        .unwrap();
        fs::write(n.path("sa/token"), "eyJhbGciOi.token.sig\n").unwrap();
        fs::write(
            n.path("sa/ca.crt"),
            "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        n
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_plexusctl"));
        c.args(args)
            .arg("--cni-bin-dir")
            .arg(self.path("bin"))
            .arg("--cni-conf-dir")
            .arg(self.path("conf"))
            .env("KUBERNETES_SERVICE_HOST", "10.96.0.1")
            .env("KUBERNETES_SERVICE_PORT", "443")
            .env_remove("KUBERNETES_SERVICE_PROTOCOL");
        c
    }

    fn install_cmd(&self, extra: &[&str]) -> Command {
        let mut c = self.cmd(&["install"]);
        c.arg("--source-bin-dir")
            .arg(self.path("src"))
            .arg("--kubeconfig-from-service-account")
            .arg("--service-account-dir")
            .arg(self.path("sa"))
            .args(["--host-cni-conf-dir", "/etc/cni/net.d"])
            .args(extra);
        c
    }

    fn install(&self, extra: &[&str]) -> Output {
        self.install_cmd(extra).output().unwrap()
    }

    fn uninstall(&self) -> Output {
        self.cmd(&["uninstall"]).output().unwrap()
    }

    fn wrapper(&self) -> Value {
        serde_json::from_slice(&fs::read(self.path("conf/00-plexus.conflist")).unwrap()).unwrap()
    }

    /// Every file and directory under bin/ and conf/: content, mode, inode
    /// and mtime (a rewrite changes the inode), or "dir".
    fn tree(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        for d in ["bin", "conf"] {
            walk(&self.path(d), self.dir.path(), &mut m);
        }
        m
    }
}

fn walk(dir: &Path, base: &Path, out: &mut BTreeMap<String, String>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let rel = p.strip_prefix(base).unwrap().display().to_string();
        let md = fs::symlink_metadata(&p).unwrap();
        if md.is_dir() {
            out.insert(rel, "dir".into());
            walk(&p, base, out);
        } else {
            let content = String::from_utf8_lossy(&fs::read(&p).unwrap()).into_owned();
            out.insert(
                rel,
                format!(
                    "mode {:o} ino {} mtime {}.{} {content}",
                    md.mode() & 0o7777,
                    md.ino(),
                    md.mtime(),
                    md.mtime_nsec()
                ),
            );
        }
    }
}

fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "plexusctl failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn failed_with(o: &Output, msg: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "plexusctl succeeded; stderr: {err}");
    assert!(err.contains(msg), "expected {msg:?} in: {err}");
}

#[test]
fn wraps_flannel_reinstall_is_a_no_op_uninstall_restores() {
    let n = Node::new();
    let before = n.tree();
    ok(&n.install(&[]));

    // The wrapper: flannel's conflist as the only delegate, its cniVersion
    // and capabilities, the kubeconfig as the host sees it.
    let w = n.wrapper();
    let flannel: Value = serde_json::from_str(FLANNEL).unwrap();
    assert_eq!(w["cniVersion"], "0.3.1");
    assert_eq!(w["name"], "plexus-cni-network");
    let p = &w["plugins"][0];
    assert_eq!(p["type"], "plexus");
    assert_eq!(p["delegates"], json!([flannel]));
    assert_eq!(p["capabilities"]["portMappings"], true);
    assert_eq!(p["capabilities"]["io.kubernetes.cri.pod-annotations"], true);
    assert_eq!(p["kubeconfig"], "/etc/cni/net.d/plexus.d/plexus.kubeconfig");

    let kc = fs::read_to_string(n.path("conf/plexus.d/plexus.kubeconfig")).unwrap();
    assert!(kc.contains("server: \"https://10.96.0.1:443\""), "{kc}");
    assert!(kc.contains("token: \"eyJhbGciOi.token.sig\""), "{kc}");
    let kc_mode = fs::metadata(n.path("conf/plexus.d/plexus.kubeconfig"))
        .unwrap()
        .mode();
    assert_eq!(kc_mode & 0o777, 0o600, "the token is a secret");

    for p in PLUGINS {
        let f = n.path("bin").join(p);
        assert_eq!(
            fs::read_to_string(&f).unwrap(),
            format!("#!binary {p} v2\n")
        );
        assert_eq!(fs::metadata(&f).unwrap().mode() & 0o777, 0o755, "{p}");
    }
    // The hand-installed plexus is kept for uninstall, under a name no
    // runtime uses.
    assert_eq!(
        fs::read_to_string(n.path("bin/plexus.plexus-orig")).unwrap(),
        "#!binary plexus v1\n"
    );
    assert_eq!(
        fs::read_to_string(n.path("conf/10-flannel.conflist")).unwrap(),
        FLANNEL
    );

    // Again: not one file rewritten (inodes and mtimes unchanged).
    let installed = n.tree();
    ok(&n.install(&[]));
    assert_eq!(n.tree(), installed);

    ok(&n.uninstall());
    assert_eq!(n.tree(), before);
    // Uninstall with nothing installed: nothing to do, no error.
    ok(&n.uninstall());
    assert_eq!(n.tree(), before);
}

/// Kills the `--watch` process (by its pid) however the test ends.
struct Watcher(Child);

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits (bounded) until `cond` holds; the bound only keeps a broken
/// watcher from hanging the test, nothing is timed.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn watch_follows_the_default_network() {
    let n = Node::new();
    let before = n.tree();
    let child = n
        .install_cmd(&["--watch", "--interval-ms", "50"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut w = Watcher(child);
    let delegate = |n: &Node| -> Option<Value> {
        let b = fs::read(n.path("conf/00-plexus.conflist")).ok()?;
        let v: Value = serde_json::from_slice(&b).ok()?;
        Some(v["plugins"][0]["delegates"][0].clone())
    };
    wait_for("the first install", || {
        delegate(&n).is_some_and(|d| d["name"] == "cbr0")
    });

    // flannel's installer rewrites its conflist (say, a new MTU).
    let mut changed: Value = serde_json::from_str(FLANNEL).unwrap();
    changed["plugins"][0]["delegate"]["mtu"] = json!(1400);
    fs::write(
        n.path("conf/10-flannel.conflist"),
        serde_json::to_vec(&changed).unwrap(),
    )
    .unwrap();
    wait_for("the change to be followed", || {
        delegate(&n).is_some_and(|d| d == changed)
    });

    // Another network that sorts first becomes the default one.
    let calico = json!({"cniVersion": "1.0.0", "name": "k8s-pod-network",
        "plugins": [{"type": "calico"}]});
    fs::write(
        n.path("conf/05-calico.conflist"),
        serde_json::to_vec(&calico).unwrap(),
    )
    .unwrap();
    wait_for("the new default network", || {
        delegate(&n).is_some_and(|d| d == calico)
    });
    assert_eq!(n.wrapper()["cniVersion"], "1.0.0");

    // A broken default network keeps the last good wrapper, and the rest
    // is still followed: the token rotates while calico's file is broken.
    // Once the new token is in, a round has seen the broken file.
    fs::write(n.path("conf/05-calico.conflist"), "{ not json").unwrap();
    fs::write(n.path("sa/token"), "rotated.token\n").unwrap();
    let kubeconfig = n.path("conf/plexus.d/plexus.kubeconfig");
    wait_for("the rotated token", || {
        fs::read_to_string(&kubeconfig).is_ok_and(|k| k.contains("token: \"rotated.token\""))
    });
    assert_eq!(delegate(&n), Some(calico.clone()));
    fs::remove_file(n.path("conf/05-calico.conflist")).unwrap();
    wait_for("flannel again", || {
        delegate(&n).is_some_and(|d| d == changed)
    });
    assert!(w.0.try_wait().unwrap().is_none(), "the watcher died");
    // SIGTERM ends it (in a container it is PID 1, which would ignore it
    // without a handler) with status 0.
    let pid = nix::unistd::Pid::from_raw(w.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let mut status = None;
    wait_for("the watcher to exit on SIGTERM", || {
        status = w.0.try_wait().unwrap();
        status.is_some()
    });
    assert!(status.unwrap().success(), "{status:?}");
    drop(w);

    fs::write(n.path("conf/10-flannel.conflist"), FLANNEL).unwrap();
    ok(&n.uninstall());
    // The flannel file was rewritten by the test: compare all but it.
    let strip = |mut t: BTreeMap<String, String>| {
        t.remove("conf/10-flannel.conflist");
        t
    };
    assert_eq!(strip(n.tree()), strip(before));
}

#[test]
fn bad_input_changes_nothing() {
    let n = Node::new();
    let before = n.tree();

    let o = Command::new(env!("CARGO_BIN_EXE_plexusctl"))
        .arg("install")
        .arg("--source-bin-dir")
        .arg(n.path("src"))
        .arg("--cni-bin-dir")
        .arg(n.path("bin"))
        .arg("--cni-conf-dir")
        .arg(n.path("missing"))
        .output()
        .unwrap();
    failed_with(&o, "--cni-conf-dir");
    failed_with(&o, "missing");

    fs::remove_file(n.path("src/plexus-vxlan")).unwrap();
    failed_with(&n.install(&[]), "plexus-vxlan");
    fs::write(n.path("src/plexus-vxlan"), "#!binary plexus-vxlan v2\n").unwrap();

    fs::remove_file(n.path("sa/token")).unwrap();
    failed_with(&n.install(&[]), "token");
    fs::write(n.path("sa/token"), "t\n").unwrap();

    let o = n
        .install_cmd(&[])
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    failed_with(&o, "KUBERNETES_SERVICE_HOST");

    fs::write(n.path("conf/05-broken.conflist"), "{ not json").unwrap();
    failed_with(&n.install(&[]), "05-broken.conflist is not JSON");
    fs::write(
        n.path("conf/05-broken.conflist"),
        r#"{"name":"x","type":"bridge"}"#,
    )
    .unwrap();
    failed_with(&n.install(&[]), "cniVersion");
    fs::remove_file(n.path("conf/05-broken.conflist")).unwrap();
    // Not a regular file (a FIFO would block a plain read forever).
    nix::unistd::mkfifo(
        &n.path("conf/05-fifo.conflist"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    failed_with(&n.install(&[]), "05-fifo.conflist is not a regular file");
    fs::remove_file(n.path("conf/05-fifo.conflist")).unwrap();

    let o = n
        .install_cmd(&["--meta-config"])
        .arg(n.path("sa/token"))
        .output()
        .unwrap();
    failed_with(&o, "is not a JSON object");

    assert_eq!(n.tree(), before);

    // No default network at all.
    fs::remove_file(n.path("conf/10-flannel.conflist")).unwrap();
    fs::remove_file(n.path("conf/99-loopback.conf")).unwrap();
    let before = n.tree();
    failed_with(&n.install(&[]), "no default network");
    assert_eq!(n.tree(), before);

    // ... unless install brings one.
    fs::write(n.path("src/10-plexus-vxlan.conflist"), FLANNEL).unwrap();
    let cluster = n.path("src/10-plexus-vxlan.conflist");
    ok(&n.install(&["--cluster-network", cluster.to_str().unwrap()]));
    assert_eq!(n.wrapper()["plugins"][0]["delegates"][0]["name"], "cbr0");
    ok(&n.uninstall());
    assert_eq!(n.tree(), before);
}
