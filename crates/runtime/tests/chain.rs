//! Chain semantics against recording fake plugins (shell scripts): the order
//! of calls, what each plugin receives, and the cache.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use plexus_cni::config::Attachment;
use plexus_runtime::{Cni, NetworkConfigList, RuntimeConf, RuntimeError};
use serde_json::{json, Value};

/// A fake plugin: appends `<name> <command> <stdin>` as one JSON line to
/// `log`, then answers ADD with a result that adds one IP (so prevResult
/// chaining is visible), or fails when its config says `"fail": "<CMD>"`.
fn fake_plugin(dir: &Path, name: &str, log: &Path) {
    let body = format!(
        r#"#!/bin/sh
stdin=$(cat)
printf '{{"plugin":"%s","cmd":"%s","cid":"%s","ifname":"%s","args":"%s","conf":%s}}\n' "{name}" "$CNI_COMMAND" "$CNI_CONTAINERID" "$CNI_IFNAME" "$CNI_ARGS" "$stdin" >> {log}
case "$stdin" in *"\"fail\":\"$CNI_COMMAND\""*) echo '{{"cniVersion":"1.0.0","code":120,"msg":"{name} failed on purpose"}}'; exit 1;; esac
if [ "$CNI_COMMAND" = ADD ]; then
  n=$(grep -c . {log})
  echo "{{\"cniVersion\":\"1.0.0\",\"interfaces\":[{{\"name\":\"{name}\"}}],\"ips\":[{{\"address\":\"10.0.0.$n/24\"}}]}}"
fi
"#,
        log = log.display()
    );
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

struct Fixture {
    _dir: tempfile::TempDir,
    bin: PathBuf,
    log: PathBuf,
    cni: Cni,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let log = dir.path().join("log");
    for p in ["a", "b", "c"] {
        fake_plugin(&bin, p, &log);
    }
    let cni = Cni::new(vec![bin.clone()], dir.path().join("cache"));
    Fixture {
        _dir: dir,
        bin,
        log,
        cni,
    }
}

impl Fixture {
    fn calls(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
    fn clear(&self) {
        let _ = std::fs::remove_file(&self.log);
    }
    fn seq(&self) -> Vec<String> {
        self.calls()
            .iter()
            .map(|c| {
                format!(
                    "{} {}",
                    c["plugin"].as_str().unwrap(),
                    c["cmd"].as_str().unwrap()
                )
            })
            .collect()
    }
}

fn list(version: &str, plugins: Value) -> NetworkConfigList {
    NetworkConfigList::from_bytes(
        &serde_json::to_vec(&json!({"cniVersion": version, "name": "testnet", "plugins": plugins}))
            .unwrap(),
    )
    .unwrap()
}

fn rt(cid: &str) -> RuntimeConf {
    RuntimeConf {
        container_id: cid.into(),
        netns: Some("/var/run/netns/fake".into()),
        ifname: "eth0".into(),
        args: vec![("K8S_POD_NAME".into(), "p".into())],
        capability_args: json!({"mac": "00:11:22:33:44:55", "ips": ["10.9.9.9/24"]})
            .as_object()
            .unwrap()
            .clone(),
    }
}

#[test]
fn add_runs_in_order_with_prev_result_and_caches() {
    let f = fixture();
    let l = list(
        "1.0.0",
        json!([{"type":"a","capabilities":{"mac":true}},{"type":"b"},{"type":"c","capabilities":{"ips":true}}]),
    );
    let res = f.cni.add_network_list(&l, &rt("c1")).unwrap();
    assert_eq!(f.seq(), ["a ADD", "b ADD", "c ADD"]);
    let calls = f.calls();
    assert!(calls[0]["conf"].get("prevResult").is_none());
    assert_eq!(
        calls[1]["conf"]["prevResult"]["ips"][0]["address"],
        "10.0.0.1/24"
    );
    assert_eq!(
        calls[2]["conf"]["prevResult"]["ips"][0]["address"],
        "10.0.0.2/24"
    );
    assert_eq!(
        calls[0]["conf"]["runtimeConfig"],
        json!({"mac":"00:11:22:33:44:55"})
    );
    assert!(calls[1]["conf"].get("runtimeConfig").is_none());
    assert_eq!(
        calls[2]["conf"]["runtimeConfig"],
        json!({"ips":["10.9.9.9/24"]})
    );
    assert!(calls
        .iter()
        .all(|c| c["conf"]["name"] == "testnet" && c["conf"]["cniVersion"] == "1.0.0"));
    assert!(calls
        .iter()
        .all(|c| c["conf"].get("capabilities").is_none()));
    assert_eq!(calls[0]["args"], "K8S_POD_NAME=p");
    assert_eq!(res.ips[0].address.to_string(), "10.0.0.3/24");
    let cached = f.cni.cache.read("testnet", "c1", "eth0").unwrap().unwrap();
    assert_eq!(cached.result.unwrap()["ips"][0]["address"], "10.0.0.3/24");
    assert_eq!(cached.config, l.bytes);
}

#[test]
fn del_runs_in_reverse_with_cached_result() {
    let f = fixture();
    let l = list("0.4.0", json!([{"type":"a"},{"type":"b"}]));
    f.cni.add_network_list(&l, &rt("c1")).unwrap();
    f.clear();
    f.cni.del_network_list(&l, &rt("c1")).unwrap();
    assert_eq!(f.seq(), ["b DEL", "a DEL"]);
    for c in f.calls() {
        assert_eq!(c["conf"]["prevResult"]["ips"][0]["address"], "10.0.0.2/24");
        assert_eq!(c["conf"]["prevResult"]["ips"][0]["version"], "4");
    }
    assert!(f.cni.cache.read("testnet", "c1", "eth0").unwrap().is_none());
    // Idempotent: a second DEL still calls every plugin, without prevResult.
    f.clear();
    f.cni.del_network_list(&l, &rt("c1")).unwrap();
    assert!(f
        .calls()
        .iter()
        .all(|c| c["conf"].get("prevResult").is_none()));
}

#[test]
fn pre_0_4_del_gets_no_prev_result() {
    let f = fixture();
    let l = list("0.3.1", json!([{"type":"a"}]));
    f.cni.add_network_list(&l, &rt("c1")).unwrap();
    f.clear();
    f.cni.del_network_list(&l, &rt("c1")).unwrap();
    assert!(f.calls()[0]["conf"].get("prevResult").is_none());
}

#[test]
fn del_keeps_going_and_keeps_cache_on_error() {
    let f = fixture();
    let l = list(
        "1.0.0",
        json!([{"type":"a"},{"type":"b","fail":"DEL"},{"type":"c"}]),
    );
    f.cni.add_network_list(&l, &rt("c1")).unwrap();
    f.clear();
    let err = f.cni.del_network_list(&l, &rt("c1")).unwrap_err();
    assert_eq!(f.seq(), ["c DEL", "b DEL", "a DEL"]);
    assert_eq!(err.to_cni().code, 120);
    assert!(f.cni.cache.read("testnet", "c1", "eth0").unwrap().is_some());
}

#[test]
fn add_failure_is_returned_and_nothing_cached() {
    let f = fixture();
    let l = list(
        "1.0.0",
        json!([{"type":"a"},{"type":"b","fail":"ADD"},{"type":"c"}]),
    );
    let err = f.cni.add_network_list(&l, &rt("c1")).unwrap_err();
    assert!(matches!(err, RuntimeError::Plugin { ref plugin, .. } if plugin == "b"));
    assert_eq!(f.seq(), ["a ADD", "b ADD"]);
    assert!(f.cni.cache.read("testnet", "c1", "eth0").unwrap().is_none());
}

#[test]
fn check_needs_version_and_cache() {
    let f = fixture();
    let old = list("0.3.1", json!([{"type":"a"}]));
    assert!(matches!(
        f.cni.check_network_list(&old, &rt("c1")),
        Err(RuntimeError::Unsupported(_))
    ));
    let l = list("1.0.0", json!([{"type":"a"},{"type":"b"}]));
    let e = f.cni.check_network_list(&l, &rt("c1")).unwrap_err();
    assert!(e.to_string().contains("no cached result"), "{e}");
    f.cni.add_network_list(&l, &rt("c1")).unwrap();
    f.clear();
    f.cni.check_network_list(&l, &rt("c1")).unwrap();
    assert_eq!(f.seq(), ["a CHECK", "b CHECK"]);
    assert_eq!(
        f.calls()[0]["conf"]["prevResult"]["ips"][0]["address"],
        "10.0.0.2/24"
    );
    let disabled = NetworkConfigList::from_bytes(
        br#"{"cniVersion":"1.0.0","name":"testnet","disableCheck":true,"plugins":[{"type":"a","fail":"CHECK"}]}"#,
    )
    .unwrap();
    f.cni.check_network_list(&disabled, &rt("c1")).unwrap();
}

#[test]
fn gc_deletes_stale_cached_and_passes_valid_list() {
    let f = fixture();
    let l = list("1.1.0", json!([{"type":"a"},{"type":"b"}]));
    for c in ["keep", "stale1", "stale2"] {
        f.cni.add_network_list(&l, &rt(c)).unwrap();
    }
    f.clear();
    let valid = vec![Attachment {
        container_id: "keep".into(),
        ifname: "eth0".into(),
    }];
    f.cni.gc_network_list(&l, &valid).unwrap();
    let calls = f.calls();
    let dels: Vec<_> = calls
        .iter()
        .filter(|c| c["cmd"] == "DEL")
        .map(|c| c["cid"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(dels, ["stale1", "stale1", "stale2", "stale2"]);
    let gcs: Vec<_> = calls.iter().filter(|c| c["cmd"] == "GC").collect();
    assert_eq!(gcs.len(), 2);
    assert_eq!(
        gcs[0]["conf"]["cni.dev/valid-attachments"],
        json!([{"containerID":"keep","ifname":"eth0"}])
    );
    let left: Vec<_> = f
        .cni
        .cache
        .list(Some("testnet"))
        .unwrap()
        .into_iter()
        .map(|e| e.container_id)
        .collect();
    assert_eq!(left, ["keep"]);
}

#[test]
fn status_only_for_1_1() {
    let f = fixture();
    f.cni
        .status_network_list(&list("1.0.0", json!([{"type":"a"}])))
        .unwrap();
    assert!(f.calls().is_empty());
    f.cni
        .status_network_list(&list("1.1.0", json!([{"type":"a"},{"type":"b"}])))
        .unwrap();
    assert_eq!(f.seq(), ["a STATUS", "b STATUS"]);
    let e = f
        .cni
        .status_network_list(&list("1.1.0", json!([{"type":"a","fail":"STATUS"}])))
        .unwrap_err();
    assert_eq!(e.to_cni().code, 120);
}

#[test]
fn missing_plugin_and_invalid_runtime_conf() {
    let f = fixture();
    let l = list("1.0.0", json!([{"type":"nope"}]));
    let e = f.cni.add_network_list(&l, &rt("c1")).unwrap_err();
    assert!(e.to_string().contains(&f.bin.display().to_string()), "{e}");
    let mut bad = rt("c1");
    bad.ifname = "way-too-long-ifname".into();
    assert!(f
        .cni
        .add_network_list(&list("1.0.0", json!([{"type":"a"}])), &bad)
        .is_err());
    assert!(f.calls().is_empty(), "nothing runs for invalid input");
}

#[test]
fn a_network_name_too_long_to_cache_fails_before_any_plugin_and_del_still_works() {
    let f = fixture();
    let long = "n".repeat(250);
    let l = NetworkConfigList::from_bytes(
        &serde_json::to_vec(
            &json!({"cniVersion": "1.0.0", "name": long, "plugins": [{"type": "a"}]}),
        )
        .unwrap(),
    )
    .unwrap();
    let err = f.cni.add_network_list(&l, &rt("c1")).unwrap_err();
    assert_eq!(err.to_cni().code, 7, "{err}");
    assert!(err.to_string().contains("more than 255"), "{err}");
    assert_eq!(f.seq(), [] as [String; 0]);
    // DEL of what could never be cached reads "no cached result".
    f.cni.del_network_list(&l, &rt("c1")).unwrap();
    assert_eq!(f.seq(), ["a DEL"]);
}

#[test]
fn a_results_directory_planted_as_a_symlink_is_refused_before_any_plugin() {
    let f = fixture();
    let l = list("1.1.0", json!([{"type": "a"}, {"type": "b"}]));
    let elsewhere = f._dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let cache = f._dir.path().join("cache");
    // `results` a link, then the cache directory itself a link.
    std::fs::create_dir(&cache).unwrap();
    std::os::unix::fs::symlink(&elsewhere, cache.join("results")).unwrap();
    for round in ["results", "cache dir"] {
        let err = f.cni.add_network_list(&l, &rt("c1")).unwrap_err();
        assert_eq!(err.to_cni().code, 5, "{round}: {err}");
        assert!(err.to_string().contains("symbolic link"), "{round}: {err}");
        let err = f.cni.del_network_list(&l, &rt("c1")).unwrap_err();
        assert_eq!(err.to_cni().code, 5, "{round}: {err}");
        let err = f.cni.check_network_list(&l, &rt("c1")).unwrap_err();
        assert_eq!(err.to_cni().code, 5, "{round}: {err}");
        assert_eq!(f.seq(), [] as [String; 0], "{round}: a plugin ran");
        assert_eq!(
            std::fs::read_dir(&elsewhere).unwrap().count(),
            0,
            "{round}: written through the link"
        );
        std::fs::remove_dir_all(&cache).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &cache).unwrap();
    }
}
