//! A real container runtime drives plexus: podman (Debian's, CNI backend,
//! runc, cgroupfs) runs a container inside a test node namespace, with a
//! plexus conflist whose defaultNetworks give the container eth0 and net1.
//! What the container itself sees is checked from inside it.

use std::path::Path;
use std::process::Command;

use plexus_tests::{bin_dir, require_root, CniSandbox, Netns};
use serde_json::json;

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A one-binary image from busybox-static, imported without a registry.
fn import_image(podman: &dyn Fn() -> Command, dir: &Path) -> String {
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    for applet in ["sh", "ip", "ping", "cat"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    let tar = dir.join("rootfs.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    let image = "localhost/plexus-busybox:test".to_string();
    let out = podman()
        .arg("import")
        .arg(&tar)
        .arg(&image)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "podman import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    image
}

#[test]
fn podman_container_gets_eth0_and_net1_through_plexus() {
    require_root!();
    for tool in ["podman", "runc", "nsenter"] {
        if !have(tool) {
            plexus_tests::skip(&format!(
                "{tool} is not installed (scripts/install-deps.sh installs it)"
            ));
            return;
        }
    }
    if !Path::new("/bin/busybox").exists() {
        plexus_tests::skip("/bin/busybox missing (apt-get install busybox-static)");
        return;
    }
    let sb = CniSandbox::new();
    let node = Netns::new("podnode");
    let d = sb.dir.path();

    // The cluster network (eth0) and one NAD every pod gets (net1), both on
    // Plexus's own plugins.
    let cluster = d.join("cluster.conflist");
    std::fs::write(
        &cluster,
        json!({"cniVersion": "1.0.0", "name": "cluster", "plugins": [{
            "type": "plexus-bridge", "bridge": "plx-clu0", "isGateway": true,
            "ipam": {"type": "plexus-host-local", "subnet": "10.61.0.0/24",
                     "routes": [{"dst": "0.0.0.0/0"}], "dataDir": sb.data_dir}}]})
        .to_string(),
    )
    .unwrap();
    let attachments = d.join("attachments");
    std::fs::create_dir_all(&attachments).unwrap();
    let storage = json!({"cniVersion": "1.0.0", "name": "storage", "type": "plexus-bridge",
        "bridge": "plx-sto0", "isGateway": true,
        "ipam": {"type": "plexus-host-local", "subnet": "10.62.0.0/24", "dataDir": sb.data_dir}});
    std::fs::write(
        attachments.join("storage.json"),
        json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
               "metadata": {"name": "storage", "namespace": "kube-system"},
               "spec": {"config": storage.to_string()}})
        .to_string(),
    )
    .unwrap();
    let meta_cache = d.join("plexus-cache");
    let podman_net = d.join("podman-net.d");
    std::fs::create_dir_all(&podman_net).unwrap();
    std::fs::write(
        podman_net.join("plexusnet.conflist"),
        json!({"cniVersion": "1.0.0", "name": "plexusnet", "plugins": [{
            "type": "plexus", "clusterNetwork": cluster, "defaultNetworks": ["storage"],
            "attachmentsDir": attachments, "cacheDir": meta_cache, "confDir": sb.conf_dir}]})
        .to_string(),
    )
    .unwrap();
    let containers_conf = d.join("containers.conf");
    std::fs::write(
        &containers_conf,
        format!(
            "[network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{}\", \"/usr/lib/cni\"]\nnetwork_config_dir = \"{}\"\n",
            bin_dir().display(),
            podman_net.display()
        ),
    )
    .unwrap();
    let (root, runroot) = (d.join("storage-root"), d.join("runroot"));
    let podman = || {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", node.path().display()))
            .arg("podman")
            .arg("--root")
            .arg(&root)
            .arg("--runroot")
            .arg(&runroot)
            .args([
                "--storage-driver",
                "vfs",
                "--network-backend",
                "cni",
                "--runtime",
                "runc",
                "--cgroup-manager=cgroupfs",
            ])
            .env("CONTAINERS_CONF", &containers_conf);
        c
    };
    let image = import_image(&podman, d);

    let out = podman()
        .args(["run", "--rm", "--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096", "--network", "plexusnet", &image])
        .args(["sh", "-c", "ip -o -4 addr show dev eth0; ip -o -4 addr show dev net1; ip route; ping -c1 -W2 10.61.0.1 && ping -c1 -W2 10.62.0.1 && echo PINGS-OK"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "podman run failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("eth0") && stdout.contains("inet 10.61.0."),
        "{stdout}"
    );
    assert!(
        stdout.contains("net1") && stdout.contains("inet 10.62.0."),
        "{stdout}"
    );
    assert!(
        stdout.contains("default via 10.61.0.1 dev eth0"),
        "{stdout}"
    );
    assert!(stdout.contains("PINGS-OK"), "{stdout}");

    // podman ran DEL when the container exited: nothing is left.
    let veths: Vec<_> = node
        .links()
        .into_iter()
        .filter(|l| l.starts_with("veth"))
        .collect();
    assert!(veths.is_empty(), "veths left: {veths:?}");
    let leases: Vec<_> = CniSandbox::files_under(&sb.data_dir)
        .into_iter()
        .filter(|f| f.contains("/10."))
        .collect();
    assert!(leases.is_empty(), "leases left: {leases:?}");
    let plans: Vec<_> = CniSandbox::files_under(&meta_cache)
        .into_iter()
        .filter(|f| f.starts_with("plans/"))
        .collect();
    assert!(plans.is_empty(), "plans left: {plans:?}");
}
