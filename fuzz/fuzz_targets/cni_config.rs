//! CNI network configuration as a runtime hands it to a plugin on stdin,
//! and conflists as a runtime (and the meta plugin) read them from confDir:
//! plexus-cni's `NetConf` (with its `prevResult`), plexus-runtime's
//! `NetworkConfigList`, and each Plexus plugin's own view of its keys (the
//! meta plugin, plexus-bridge, plexus-host-local, plexus-vxlan).
//!
//! Input: the config bytes; after a NUL byte, the `CNI_ARGS` string.
//! Must hold: no panic; a parsed config has a name and a type; a conflist
//! has a name and at least one plugin, each with a type.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plexus_cni::args::CniArgs;
use plexus_cni::{CniEnv, NetConf};
use plexus_fuzz::invariant;
use plexus_runtime::conf::NetworkConfigList;

fuzz_target!(|data: &[u8]| {
    let (conf, args) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (
            data,
            &b"IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p"[..],
        ),
    };
    let args = String::from_utf8_lossy(args).into_owned();

    for list in [
        NetworkConfigList::from_any(conf),
        NetworkConfigList::from_bytes(conf),
    ]
    .into_iter()
    .flatten()
    {
        invariant!(!list.plugins.is_empty(), "{list:?}");
        invariant!(!list.name.is_empty(), "{list:?}");
        // What each plugin of the chain gets on stdin, and reads.
        let rc = serde_json::Map::new();
        for p in &list.plugins {
            invariant!(!p.plugin_type.is_empty(), "{p:?}");
            let stdin =
                plexus_runtime::inject::plugin_stdin(p, &list.name, list.cni_version, None, &rc);
            let _ = NetConf::parse(&stdin);
        }
    }

    let Ok(nc) = NetConf::parse(conf) else {
        return;
    };
    invariant!(!nc.name.is_empty() && !nc.plugin_type.is_empty(), "{nc:?}");
    let _ = nc.valid_attachments();
    let _ = nc.ipam_type();

    let vars = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/var/run/netns/x"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
        ("CNI_ARGS", args.as_str()),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()));
    let parsed_args = CniArgs::parse(&args);
    if let Ok(env) = CniEnv::from_vars(vars) {
        let _ = plexus_bridge::config::BridgeConf::load(&nc, &env);
        let _ = plexus_bridge::config::BridgeConf::load_for_del(&nc, &env);
    }
    if let Ok(a) = &parsed_args {
        let _ = plexus_host_local::config::IpamConfig::load(&nc, a);
    }
    let _ = plexus_vxlan::config::VxlanConf::load(&nc);
    let _ = plexus_meta::config::MetaConf::from_netconf(&nc);
});
