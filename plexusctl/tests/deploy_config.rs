//! The ConfigMap in deploy/ holds what plexusd accepts, and the DaemonSet
//! hands plexusd those keys: the routed network's `pools.json` and
//! `bgp.json` pass plexus-ipam's checks (the ones plexusd applies at
//! start), and every `--*-file`/`--net-config` argument names a key of the
//! ConfigMap mounted where the argument points.

use std::path::{Path, PathBuf};

use serde_json::Value;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/base")
}

fn yaml(file: &str) -> Value {
    let text = std::fs::read_to_string(deploy().join(file)).unwrap();
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
}

#[test]
fn the_configmap_is_what_plexusd_accepts_and_the_daemonset_passes_it() {
    let cm = yaml("configmap.yaml");
    let data = cm["data"].as_object().unwrap();
    let pools = plexus_ipam::parse_pools(data["pools.json"].as_str().unwrap().as_bytes())
        .expect("pools.json passes plexusd's checks");
    // Shipped empty: the overlay runs unless pools are declared.
    assert!(pools.is_empty(), "{pools:?}");
    plexus_ipam::parse_bgp(data["bgp.json"].as_str().unwrap().as_bytes())
        .expect("bgp.json passes plexusd's checks");

    let ds = yaml("daemonset.yaml");
    let spec = &ds["spec"]["template"]["spec"];
    let plexusd = spec["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "plexusd")
        .unwrap();
    // Where the ConfigMap volume is mounted in plexusd.
    let volume = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["configMap"]["name"] == cm["metadata"]["name"])
        .unwrap()["name"]
        .clone();
    let mount = plexusd["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == volume)
        .unwrap()["mountPath"]
        .as_str()
        .unwrap()
        .to_string();
    let args: Vec<&str> = plexusd["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    for flag in ["--net-config", "--pools-file", "--bgp-file"] {
        let value = args
            .iter()
            .find_map(|a| a.strip_prefix(&format!("{flag}=")))
            .unwrap_or_else(|| panic!("plexusd gets no {flag}: {args:?}"));
        let key = value
            .strip_prefix(&format!("{mount}/"))
            .unwrap_or_else(|| panic!("{flag}={value} is not under the ConfigMap mount {mount}"));
        assert!(data.contains_key(key), "{flag}: no ConfigMap key {key}");
    }
}
