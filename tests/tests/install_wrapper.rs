//! What `plexusctl install` writes works: a node whose default network is
//! the reference bridge gets `00-plexus.conflist` wrapping it, and a pod
//! ADDed through that file (with the plugins from the installed copy in the
//! CNI bin dir) gets its eth0 from the wrapped network through the meta
//! plugin; DEL releases it, and uninstall leaves the conf dir as it was.

use std::ffi::OsStr;
use std::path::Path;

use plexus_tests::{bin_dir, require_reference_plugins, require_root, CniSandbox, Netns};
use serde_json::{json, Value};

/// `plexusctl OP --cni-bin-dir BIN --cni-conf-dir CONF EXTRA...`.
fn plexusctl(op: &str, bin: &Path, conf: &Path, extra: &[&OsStr]) -> std::process::Output {
    std::process::Command::new(bin_dir().join("plexusctl"))
        .arg(op)
        .arg("--cni-bin-dir")
        .arg(bin)
        .arg("--cni-conf-dir")
        .arg(conf)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn a_pod_through_the_installed_wrapper() {
    require_root!();
    require_reference_plugins!();
    let sb = CniSandbox::new();
    sb.write_conf(
        "10-refnet.conflist",
        &json!({
            "cniVersion": "1.0.0",
            "name": "refnet",
            "plugins": [{
                "type": "bridge", "bridge": "cniwrap0", "isGateway": true,
                "ipam": {"type": "host-local", "subnet": "10.78.0.0/24",
                         "dataDir": sb.data_dir, "routes": [{"dst": "0.0.0.0/0"}]}
            }]
        }),
    );
    let listing = |d: &Path| CniSandbox::files_under(d);
    let conf_before = listing(&sb.conf_dir);

    let bin = sb.dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    // The meta plugin's state stays in the sandbox.
    let meta = sb.dir.path().join("meta.json");
    std::fs::write(
        &meta,
        json!({"cacheDir": sb.cache_dir.join("plexus")}).to_string(),
    )
    .unwrap();
    let installed = plexusctl(
        "install",
        &bin,
        &sb.conf_dir,
        &[
            "--source-bin-dir".as_ref(),
            bin_dir().as_os_str(),
            "--meta-config".as_ref(),
            meta.as_os_str(),
        ],
    );
    assert!(
        installed.status.success(),
        "{}",
        String::from_utf8_lossy(&installed.stderr)
    );

    let node = Netns::new("node");
    let pod = Netns::new("pod");
    let cni_path = format!("{}:{}", bin.display(), plexus_tests::REFERENCE_DIR);
    let env = [
        ("CNI_PATH", cni_path.as_str()),
        (
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web",
        ),
    ];
    let res: Value = sb
        .ctl(&node, "add", "plexus-cni-network", Some(&pod.path()), &env)
        .expect_success()
        .json();
    assert_eq!(res["ips"][0]["address"], "10.78.0.2/24", "{res}");
    assert_eq!(pod.addrs("eth0"), ["10.78.0.2/24"]);
    assert!(node.has_link("cniwrap0"));
    assert_eq!(sb.leases(), ["refnet/10.78.0.2"]);

    sb.ctl(&node, "del", "plexus-cni-network", Some(&pod.path()), &env)
        .expect_success();
    assert!(sb.leases().is_empty());

    let un = plexusctl("uninstall", &bin, &sb.conf_dir, &[]);
    assert!(
        un.status.success(),
        "{}",
        String::from_utf8_lossy(&un.stderr)
    );
    assert_eq!(listing(&sb.conf_dir), conf_before);
    assert!(!sb.conf_dir.join("plexus.d").exists());
    assert!(listing(&bin).is_empty());
}
