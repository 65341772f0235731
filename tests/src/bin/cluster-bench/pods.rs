//! Pods on both networks, attached by calling the plugins as a runtime
//! would: eth0 through plexus-vxlan (the overlay), net1 through
//! plexus-bgp-routes (the routed network, addresses from the node's agent).
//! The plugins run straight from their directory (`nsenter --net`, no
//! plexusctl in between), so a timed ADD is the plugin's own time.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use plexus_tests::cluster::{Node, NETWORK};
use plexus_tests::{output_with_stdin, Netns};
use serde_json::{json, Value};

/// The routed network's CNI name.
pub const ROUTED: &str = "routed";

/// The two network configs of one node.
#[derive(Debug, Clone)]
pub struct Confs {
    pub overlay: Value,
    pub routed: Value,
}

impl Confs {
    /// The overlay's: plugin 0 of the node's conflist (conf/overlay's, as
    /// the harness wrote it); the routed one asks the node's agent.
    pub fn of(node: &Node) -> Confs {
        let list: Value = serde_json::from_slice(
            &std::fs::read(node.cni.conf_dir.join(format!("{NETWORK}.conflist")))
                .expect("the node's overlay conflist"),
        )
        .expect("conflist JSON");
        let mut overlay = list["plugins"][0].clone();
        overlay["cniVersion"] = json!("1.0.0");
        overlay["name"] = json!(NETWORK);
        let routed = json!({"cniVersion": "1.1.0", "name": ROUTED,
                            "type": "plexus-bgp-routes", "runDir": node.run_dir});
        Confs { overlay, routed }
    }
}

/// A pod: its netns and its address on each network.
#[derive(Debug)]
pub struct Pod {
    pub ns: Netns,
    pub id: String,
    pub overlay: String,
    pub routed: String,
}

/// How long each ADD of [`add`] took.
#[derive(Debug, Clone, Copy)]
pub struct AddTimes {
    pub overlay: Duration,
    pub routed: Duration,
}

#[derive(Debug, Clone)]
pub struct Plugins {
    pub dir: PathBuf,
}

impl Plugins {
    /// One CNI call of `plugin` in `node` for `att`; its JSON result.
    pub fn call(
        &self,
        node: &Node,
        plugin: &str,
        cmd: &str,
        att: &Attach,
        conf: &Value,
    ) -> Result<Value, String> {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", node.ns.path().display()))
            .arg(self.dir.join(plugin))
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", cmd)
            .env("CNI_CONTAINERID", att.id)
            .env("CNI_NETNS", att.netns)
            .env("CNI_IFNAME", att.ifname)
            .env("CNI_PATH", &self.dir);
        let out = output_with_stdin(&mut c, &serde_json::to_vec(conf).unwrap());
        if !out.status.success() {
            return Err(format!(
                "{plugin} {cmd} {}/{} on {}: {}{}",
                att.id,
                att.ifname,
                node.name,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(serde_json::from_slice(&out.stdout).unwrap_or(Value::Null))
    }

    /// A new pod netns `tag` on `node`, eth0 on the overlay and net1 routed.
    pub fn add(&self, node: &Node, confs: &Confs, tag: &str) -> Result<(Pod, AddTimes), String> {
        let ns = Netns::new(tag);
        let id = format!("bench-{}-{tag}", node.name);
        let path = ns.path();
        let eth0 = Attach::new(&id, "eth0", &path);
        let t = Instant::now();
        let r = self.call(node, "plexus-vxlan", "ADD", &eth0, &confs.overlay)?;
        let overlay_t = t.elapsed();
        let overlay = first_ip(&r)?;
        let net1 = Attach::new(&id, "net1", &path);
        let t = Instant::now();
        let r = self.call(node, "plexus-bgp-routes", "ADD", &net1, &confs.routed)?;
        let routed_t = t.elapsed();
        let routed = first_ip(&r)?;
        let times = AddTimes {
            overlay: overlay_t,
            routed: routed_t,
        };
        Ok((
            Pod {
                ns,
                id,
                overlay,
                routed,
            },
            times,
        ))
    }

    /// DEL on both networks (routed first, the reverse of ADD).
    pub fn del(&self, node: &Node, confs: &Confs, pod: &Pod) -> Result<(), String> {
        let path = pod.ns.path();
        let net1 = Attach::new(&pod.id, "net1", &path);
        self.call(node, "plexus-bgp-routes", "DEL", &net1, &confs.routed)?;
        let eth0 = Attach::new(&pod.id, "eth0", &path);
        self.call(node, "plexus-vxlan", "DEL", &eth0, &confs.overlay)?;
        Ok(())
    }
}

/// One attachment: container ID, interface name, pod netns.
#[derive(Debug, Clone, Copy)]
pub struct Attach<'a> {
    pub id: &'a str,
    pub ifname: &'a str,
    pub netns: &'a Path,
}

impl<'a> Attach<'a> {
    pub fn new(id: &'a str, ifname: &'a str, netns: &'a Path) -> Self {
        Attach { id, ifname, netns }
    }
}

/// The first address of a CNI result, without its prefix length.
fn first_ip(r: &Value) -> Result<String, String> {
    r["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .map(str::to_string)
        .ok_or_else(|| format!("a CNI result without an address: {r}"))
}
