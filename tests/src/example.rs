//! The example configuration in conf/ (the plexus conflist, the cluster
//! network and the NADs) installed into a test node, with what a real node
//! has and a test node has not filled in: IPAM state under the sandbox's
//! data dir, and the storage NAD's macvlan master ("eth1" in conf/) replaced
//! by `uplink0`, one end of a veth pair in the node namespace.

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use crate::{CniSandbox, Netns};

pub fn conf_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf")
}

/// Rewrite a file from conf/ for the sandbox.
pub fn localize(text: &str, sb: &CniSandbox) -> String {
    text.replace("/var/lib/cni/networks", &sb.data_dir.display().to_string())
        .replace(r#"\"master\":\"eth1\""#, r#"\"master\":\"uplink0\""#)
}

/// A node and a pod namespace with conf/ staged for the meta plugin.
#[derive(Debug)]
pub struct ExampleNode {
    pub sb: CniSandbox,
    pub node: Netns,
    pub pod: Netns,
    /// The meta plugin's confDir (the cluster network).
    pub plexus_dir: PathBuf,
    pub attachments: PathBuf,
    /// The meta plugin's cacheDir.
    pub cache: PathBuf,
}

impl Default for ExampleNode {
    fn default() -> Self {
        Self::new()
    }
}

impl ExampleNode {
    pub fn new() -> Self {
        let sb = CniSandbox::new();
        let node = Netns::new("node");
        let pod = Netns::new("pod");
        node.ip(&[
            "link", "add", "uplink0", "type", "veth", "peer", "name", "uplink0p",
        ]);
        node.ip(&["link", "set", "uplink0", "up"]);
        node.ip(&["link", "set", "uplink0p", "up"]);
        let plexus_dir = sb.dir.path().join("plexus-net.d");
        let attachments = sb.dir.path().join("attachments");
        let cache = sb.dir.path().join("plexus-cache");
        for (from, to) in [
            (conf_src().join("plexus/net.d"), &plexus_dir),
            (conf_src().join("plexus/attachments"), &attachments),
        ] {
            std::fs::create_dir_all(to).unwrap();
            for f in std::fs::read_dir(&from).unwrap() {
                let f = f.unwrap().path();
                let text = std::fs::read_to_string(&f).unwrap();
                std::fs::write(to.join(f.file_name().unwrap()), localize(&text, &sb)).unwrap();
            }
        }
        ExampleNode {
            sb,
            node,
            pod,
            plexus_dir,
            attachments,
            cache,
        }
    }

    /// Write conf/plexus.conflist as `00-plexus.conflist`, pointed at the
    /// staged directories, debug logging into the sandbox, `extra` keys set
    /// on the plexus entry last.
    pub fn write_plexus_conflist(&self, extra: &Map<String, Value>) {
        let mut conf: Value =
            serde_json::from_slice(&std::fs::read(conf_src().join("plexus.conflist")).unwrap())
                .unwrap();
        let p = &mut conf["plugins"][0];
        p["confDir"] = json!(self.plexus_dir);
        p["attachmentsDir"] = json!(self.attachments);
        p["cacheDir"] = json!(self.cache);
        p["logFile"] = json!(self.sb.dir.path().join("plexus.log"));
        p["logLevel"] = json!("debug");
        for (k, v) in extra {
            p[k] = v.clone();
        }
        self.sb.write_conf("00-plexus.conflist", &conf);
    }
}
