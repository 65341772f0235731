//! From configuration + pod annotations + NADs to a plan: the ordered list of
//! delegate networks, each with its interface name, full config and the
//! exact CNI_ARGS and capability arguments it gets. Everything that can be
//! wrong with a selection is found here, before anything is created.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use plexus_runtime::conf::conf_files;
use plexus_runtime::NetworkConfigList;
use serde_json::{Map, Value};

use crate::annotation::{self, NetworkSelection, DEFAULT_NETWORK_KEY, NETWORKS_KEY};
use crate::config::MetaConf;
use crate::error::MetaError;
use crate::plan::{Plan, PlannedAttachment, PLAN_KIND};
use crate::source::NadStore;
use crate::types::{AttachmentKey, Nad, PodInfo, PodRef};

/// The call being planned.
#[derive(Debug, Clone)]
pub struct PlanRequest<'a> {
    pub conf: &'a MetaConf,
    pub key: AttachmentKey,
    pub netns: Option<&'a Path>,
    pub pod: PodRef,
    /// The meta plugin's own CNI_ARGS.
    pub args: &'a [(String, String)],
    /// The meta plugin's own runtimeConfig (given to the cluster network).
    pub capability_args: &'a Map<String, Value>,
    /// binDir + CNI_PATH.
    pub plugin_path: &'a [PathBuf],
    /// ADD: every network must resolve. DEL fallback: skip what is gone.
    pub strict: bool,
}

/// A network before interface naming.
struct Selected {
    name: String,
    list: NetworkConfigList,
    request: Option<NetworkSelection>,
}

pub fn build_plan(
    req: &PlanRequest,
    pod: Option<&PodInfo>,
    nads: &dyn NadStore,
) -> Result<Plan, MetaError> {
    let conf = req.conf;
    // Positions are kept for networks skipped in lenient mode so the others
    // keep the interface names ADD gave them.
    let mut selected: Vec<Option<Selected>> = Vec::new();
    let lenient = |r: Result<Selected, MetaError>, out: &mut Vec<Option<Selected>>| match r {
        Ok(s) => {
            out.push(Some(s));
            Ok(())
        }
        Err(e) if !req.strict => {
            tracing::warn!("skipping a network that cannot be resolved any more: {e}");
            out.push(None);
            Ok(())
        }
        Err(e) => Err(e),
    };

    // 0. Both annotations are parsed (and every name in them checked)
    // before any network is looked up, so a bad one never reaches a NAD
    // store or the API.
    let annotations = pod.map(|p| &p.annotations);
    let default_override = match annotations.and_then(|a| a.get(DEFAULT_NETWORK_KEY)) {
        Some(v) => {
            let nets = annotation::parse_networks(v, &conf.plexus_namespace, DEFAULT_NETWORK_KEY)?;
            let [one] =
                <[NetworkSelection; 1]>::try_from(nets).map_err(|nets| MetaError::Annotation {
                    key: DEFAULT_NETWORK_KEY,
                    msg: format!("exactly one network must be named, got {}", nets.len()),
                })?;
            Some(one)
        }
        None => None,
    };
    let requested = match (pod, annotations.and_then(|a| a.get(NETWORKS_KEY))) {
        (Some(p), Some(v)) => {
            let sels = annotation::parse_networks(v, &p.namespace, NETWORKS_KEY)?;
            for sel in &sels {
                if conf.namespace_isolation
                    && sel.namespace != p.namespace
                    && !conf.global_namespaces.contains(&sel.namespace)
                {
                    return Err(MetaError::Selection(format!(
                        "namespace isolation: pod {}/{} may not use network {}/{} (only its own namespace and [{}])",
                        p.namespace,
                        p.name,
                        sel.namespace,
                        sel.name,
                        conf.global_namespaces.join(", ")
                    )));
                }
            }
            sels
        }
        _ => Vec::new(),
    };

    // 1. The cluster network, unless the pod overrides it.
    let master = match &default_override {
        Some(one) => resolve_nad(conf, nads, one),
        None if !conf.cluster_network.is_empty() => {
            resolve_named(conf, nads, &conf.cluster_network)
        }
        None => inline_delegate(&conf.delegates[0], 0),
    };
    lenient(master, &mut selected)?;

    // 2. Inline delegates after the first, then defaultNetworks (not for
    // pods in systemNamespaces, as Multus).
    if conf.cluster_network.is_empty() {
        for (i, d) in conf.delegates.iter().enumerate().skip(1) {
            lenient(inline_delegate(d, i), &mut selected)?;
        }
    }
    if !conf.is_system_namespace(&req.pod.namespace) {
        for n in &conf.default_networks {
            lenient(resolve_named(conf, nads, n), &mut selected)?;
        }
    }

    // 3. The networks the pod asks for.
    for sel in &requested {
        lenient(resolve_nad(conf, nads, sel), &mut selected)?;
    }

    check_default_routes(&selected)?;

    // 4. Interface names: the cluster network gets the runtime's ifname,
    // the others netN by position (Multus) unless they asked for a name.
    let mut used = HashSet::new();
    let mut attachments = Vec::new();
    for (i, s) in selected.into_iter().enumerate() {
        let Some(s) = s else { continue };
        let is_master = i == 0;
        let ifname = match &s.request {
            _ if is_master => req.key.ifname.clone(),
            Some(r) if !r.interface.is_empty() => r.interface.clone(),
            _ => format!("net{i}"),
        };
        if !used.insert(ifname.clone()) && req.strict {
            return Err(MetaError::Selection(format!(
                "interface name {ifname} is used by more than one network (network \"{}\")",
                s.name
            )));
        }
        if req.strict {
            check_plugins(&s.name, &s.list, req.plugin_path)?;
        }
        attachments.push(attach(req, s, ifname, is_master)?);
    }
    Ok(Plan {
        kind: PLAN_KIND.into(),
        container_id: req.key.container_id.clone(),
        ifname: req.key.ifname.clone(),
        netns: req
            .netns
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        pod_namespace: req.pod.namespace.clone(),
        pod_name: req.pod.name.clone(),
        pod_uid: req.pod.uid.clone(),
        attachments,
    })
}

fn attach(
    req: &PlanRequest,
    s: Selected,
    ifname: String,
    master: bool,
) -> Result<PlannedAttachment, MetaError> {
    let mut config: Value = serde_json::from_slice(&s.list.bytes).expect("list bytes are JSON");
    let mut caps = Map::new();
    // Multus's K8S args first, IgnoreUnknown so strict plugins accept them.
    let mut args: Vec<(String, String)> = vec![("IgnoreUnknown".into(), "true".into())];
    for (k, v) in req.args {
        set_arg(&mut args, k, v);
    }
    if master {
        // What the runtime meant for the pod (portMappings, bandwidth...)
        // goes to the pod's primary network only.
        caps = req.capability_args.clone();
    }
    if let Some(r) = &s.request {
        if let Some(extra) = &r.cni_args {
            merge_cni_args(&mut config, extra);
        }
        if r.ips.len() > 1 && !declares_capability(&config, "ips") {
            // CNI_ARGS IP= carries one address; more reach the plugins only
            // through the ips capability. Without it they would be dropped.
            return Err(MetaError::Selection(format!(
                "network \"{}\": {} addresses requested, but none of its plugins declares the \"ips\" capability, \
                 so only one could be passed (CNI_ARGS IP)",
                s.name,
                r.ips.len()
            )));
        }
        if !r.ips.is_empty() {
            caps.insert("ips".into(), r.ips.clone().into());
            // CNI_ARGS IP= holds one address (host-local reads one); with
            // more, the ips capability carries them.
            if let [one] = r.ips.as_slice() {
                set_arg(&mut args, "IP", one);
            }
        }
        if !r.mac.is_empty() {
            caps.insert("mac".into(), r.mac.clone().into());
            set_arg(&mut args, "MAC", &r.mac);
        }
        if let Some(pm) = &r.port_mappings {
            caps.insert("portMappings".into(), pm.clone());
        }
        if let Some(bw) = &r.bandwidth {
            caps.insert("bandwidth".into(), bw.clone());
        }
    }
    Ok(PlannedAttachment {
        name: s.name,
        ifname,
        master,
        config,
        cni_args: args.into_iter().map(|(k, v)| [k, v]).collect(),
        capability_args: caps,
        request: s.request,
        add_failed: false,
    })
}

/// Whether a plugin of the conflist object `list` declares `capability`.
fn declares_capability(list: &Value, capability: &str) -> bool {
    list.get("plugins")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|p| p["capabilities"][capability] == Value::Bool(true))
}

fn set_arg(args: &mut Vec<(String, String)>, k: &str, v: &str) {
    match args.iter_mut().find(|(key, _)| key == k) {
        Some(slot) => slot.1 = v.to_string(),
        None => args.push((k.to_string(), v.to_string())),
    }
}

/// `cni-args` go into every plugin's `args.cni` (Multus).
pub fn merge_cni_args(list: &mut Value, extra: &Map<String, Value>) {
    let Some(Value::Array(plugins)) = list.get_mut("plugins") else {
        return;
    };
    for p in plugins.iter_mut().filter_map(Value::as_object_mut) {
        let args = p.entry("args").or_insert_with(|| Value::Object(Map::new()));
        if !args.is_object() {
            *args = Value::Object(Map::new());
        }
        let cni = args
            .as_object_mut()
            .expect("object")
            .entry("cni")
            .or_insert_with(|| Value::Object(Map::new()));
        if !cni.is_object() {
            *cni = Value::Object(Map::new());
        }
        let cni = cni.as_object_mut().expect("object");
        for (k, v) in extra {
            cni.insert(k.clone(), v.clone());
        }
    }
}

/// At most one default-route gateway per address family (no ECMP, as Multus).
fn check_default_routes(selected: &[Option<Selected>]) -> Result<(), MetaError> {
    let gws: Vec<&IpAddr> = selected
        .iter()
        .flatten()
        .filter_map(|s| s.request.as_ref())
        .flat_map(|r| r.default_route.iter())
        .collect();
    for v4 in [true, false] {
        if gws.iter().filter(|g| g.is_ipv4() == v4).count() > 1 {
            return Err(MetaError::Selection(format!(
                "more than one IPv{} default-route requested; only one gateway per family is supported",
                if v4 { 4 } else { 6 }
            )));
        }
    }
    Ok(())
}

/// A network type must be a plain binary name found in binDir/CNI_PATH, and
/// so must the IPAM type (the delegate looks it up with the same path).
fn check_plugins(name: &str, list: &NetworkConfigList, path: &[PathBuf]) -> Result<(), MetaError> {
    for p in &list.plugins {
        let ipam = p
            .raw
            .get("ipam")
            .and_then(|i| i.get("type"))
            .and_then(Value::as_str);
        for t in std::iter::once(p.plugin_type.as_str()).chain(ipam) {
            plexus_runtime::exec::find_in_path(t, path).map_err(|e| {
                MetaError::Selection(format!("network \"{name}\": plugin type \"{t}\": {e}"))
            })?;
        }
    }
    Ok(())
}

fn inline_delegate(v: &Value, i: usize) -> Result<Selected, MetaError> {
    let list = NetworkConfigList::from_any(&serde_json::to_vec(v).expect("serializes"))
        .map_err(|e| MetaError::Config(format!("delegates[{i}]: {e}")))?;
    Ok(Selected {
        name: list.name.clone(),
        list,
        request: None,
    })
}

/// clusterNetwork / defaultNetworks entries: a path (file, or directory
/// whose first config is used), else a NAD in the plexus namespace, else a
/// network of that name in confDir.
fn resolve_named(conf: &MetaConf, nads: &dyn NadStore, name: &str) -> Result<Selected, MetaError> {
    let sel_err = |e: plexus_runtime::RuntimeError| {
        MetaError::Selection(format!("cannot load network \"{name}\": {e}"))
    };
    if name.contains('/') {
        let path = Path::new(name);
        let file = if path.is_dir() {
            let mut files = conf_files(path, &["conflist"]).map_err(sel_err)?;
            files.extend(conf_files(path, &["conf", "json"]).map_err(sel_err)?);
            files.into_iter().next().ok_or_else(|| {
                MetaError::Selection(format!("no network configuration in directory {name}"))
            })?
        } else {
            path.to_path_buf()
        };
        let list = NetworkConfigList::from_file(&file).map_err(sel_err)?;
        return Ok(Selected {
            name: list.name.clone(),
            list,
            request: None,
        });
    }
    if let Some(nad) = nads.get(&conf.plexus_namespace, name)? {
        let list = nad_list(conf, &nad)?;
        return Ok(Selected {
            name: format!("{}/{}", nad.namespace, nad.name),
            list,
            request: None,
        });
    }
    let list = NetworkConfigList::load(&conf.conf_dir, name).map_err(sel_err)?;
    Ok(Selected {
        name: list.name.clone(),
        list,
        request: None,
    })
}

fn resolve_nad(
    conf: &MetaConf,
    nads: &dyn NadStore,
    sel: &NetworkSelection,
) -> Result<Selected, MetaError> {
    let nad = nads.get(&sel.namespace, &sel.name)?.ok_or_else(|| {
        MetaError::Selection(format!(
            "cannot find a network-attachment-definition ({}) in namespace ({})",
            sel.name, sel.namespace
        ))
    })?;
    Ok(Selected {
        name: format!("{}/{}", nad.namespace, nad.name),
        list: nad_list(conf, &nad)?,
        request: Some(sel.clone()),
    })
}

/// A NAD's `spec.config` as a list: a config without `name` gets the NAD's
/// name (Multus), an empty config means the network of that name in confDir.
fn nad_list(conf: &MetaConf, nad: &Nad) -> Result<NetworkConfigList, MetaError> {
    let ctx = |e: String| {
        MetaError::Selection(format!(
            "network-attachment-definition {}/{}: {e}",
            nad.namespace, nad.name
        ))
    };
    if nad.config.trim().is_empty() {
        return NetworkConfigList::load(&conf.conf_dir, &nad.name).map_err(|e| ctx(e.to_string()));
    }
    let mut v: Value = serde_json::from_str(&nad.config)
        .map_err(|e| ctx(format!("spec.config is not valid JSON: {e}")))?;
    let obj = v
        .as_object_mut()
        .ok_or_else(|| ctx("spec.config must be a JSON object".into()))?;
    if obj
        .get("name")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        obj.insert("name".into(), Value::String(nad.name.clone()));
    }
    NetworkConfigList::from_any(&serde_json::to_vec(&v).expect("serializes"))
        .map_err(|e| ctx(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::NadStore;
    use plexus_cni::NetConf;
    use std::collections::{BTreeMap, HashMap};

    struct Nads(HashMap<(String, String), String>);
    impl NadStore for Nads {
        fn get(&self, ns: &str, name: &str) -> Result<Option<Nad>, MetaError> {
            Ok(self.0.get(&(ns.into(), name.into())).map(|c| Nad {
                namespace: ns.into(),
                name: name.into(),
                config: c.clone(),
                annotations: BTreeMap::new(),
            }))
        }
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        conf: MetaConf,
        bin: Vec<PathBuf>,
        nads: Nads,
    }

    fn fixture(extra: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        let confd = dir.path().join("net.d");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&confd).unwrap();
        for b in ["bridge", "host-local", "macvlan"] {
            std::fs::write(bin.join(b), "").unwrap();
        }
        std::fs::write(
            confd.join("10-cbr0.conflist"),
            r#"{"cniVersion":"1.0.0","name":"cbr0","plugins":[{"type":"bridge","ipam":{"type":"host-local"}}]}"#,
        )
        .unwrap();
        let s = format!(
            r#"{{"cniVersion":"1.0.0","name":"plexus","type":"plexus","clusterNetwork":"cbr0","confDir":{:?}{extra}}}"#,
            confd.display().to_string()
        );
        let conf = MetaConf::from_netconf(&NetConf::parse(s.as_bytes()).unwrap()).unwrap();
        let mut nads = HashMap::new();
        for (ns, n) in [
            ("team", "blue"),
            ("team", "red"),
            ("default", "shared"),
            ("other", "x"),
        ] {
            nads.insert(
                (ns.to_string(), n.to_string()),
                r#"{"cniVersion":"1.0.0","type":"macvlan","ipam":{"type":"host-local"}}"#
                    .to_string(),
            );
        }
        Fixture {
            _dir: dir,
            conf,
            bin: vec![bin],
            nads: Nads(nads),
        }
    }

    fn plan(f: &Fixture, annotations: &[(&str, &str)]) -> Result<Plan, MetaError> {
        let pod = PodInfo {
            namespace: "team".into(),
            name: "p".into(),
            uid: String::new(),
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let args = vec![("K8S_POD_NAMESPACE".to_string(), "team".to_string())];
        let caps = Map::new();
        let req = PlanRequest {
            conf: &f.conf,
            key: AttachmentKey {
                container_id: "c1".into(),
                ifname: "eth0".into(),
            },
            netns: Some(Path::new("/var/run/netns/p")),
            pod: PodRef {
                namespace: "team".into(),
                name: "p".into(),
                uid: String::new(),
            },
            args: &args,
            capability_args: &caps,
            plugin_path: &f.bin,
            strict: true,
        };
        build_plan(&req, Some(&pod), &f.nads)
    }

    fn ifnames(p: &Plan) -> Vec<(&str, &str)> {
        p.attachments
            .iter()
            .map(|a| (a.name.as_str(), a.ifname.as_str()))
            .collect()
    }

    #[test]
    fn interface_naming() {
        let f = fixture("");
        let p = plan(&f, &[(NETWORKS_KEY, "blue, red@fast0, default/shared")]).unwrap();
        assert_eq!(
            ifnames(&p),
            [
                ("cbr0", "eth0"),
                ("team/blue", "net1"),
                ("team/red", "fast0"),
                ("default/shared", "net3")
            ]
        );
        assert!(p.attachments[0].master && !p.attachments[1].master);
        // A NAD config without a name gets the NAD's name.
        assert_eq!(p.attachments[1].config["name"], "blue");
        assert_eq!(p.attachments[1].config["plugins"][0]["type"], "macvlan");
    }

    #[test]
    fn default_networks_come_before_annotations() {
        let f = fixture(r#","defaultNetworks":["cbr0"]"#);
        let p = plan(&f, &[(NETWORKS_KEY, "blue")]).unwrap();
        assert_eq!(
            ifnames(&p),
            [("cbr0", "eth0"), ("cbr0", "net1"), ("team/blue", "net2")]
        );
    }

    #[test]
    fn duplicate_ifname_is_an_error() {
        let f = fixture("");
        let e = plan(&f, &[(NETWORKS_KEY, "blue@net2,red")]).unwrap_err();
        assert!(
            e.to_string().contains("net2 is used by more than one"),
            "{e}"
        );
        let e = plan(&f, &[(NETWORKS_KEY, "blue@eth0")]).unwrap_err();
        assert_eq!(e.to_cni().code, 7);
    }

    #[test]
    fn requests_become_args_and_capabilities() {
        let f = fixture("");
        let p = plan(
            &f,
            &[(
                NETWORKS_KEY,
                r#"[{"name":"blue","ips":["10.1.0.9/24"],"mac":"02:00:00:00:00:09",
                     "cni-args":{"foo":"bar"},"portMappings":[{"hostPort":1}],"bandwidth":{"ingressRate":1}}]"#,
            )],
        )
        .unwrap();
        let a = &p.attachments[1];
        assert_eq!(a.capability_args["ips"], serde_json::json!(["10.1.0.9/24"]));
        assert_eq!(a.capability_args["mac"], "02:00:00:00:00:09");
        assert!(a.capability_args.contains_key("portMappings"));
        assert!(a.capability_args.contains_key("bandwidth"));
        let args: Vec<_> = a.cni_args.iter().map(|[k, v]| format!("{k}={v}")).collect();
        assert_eq!(
            args,
            [
                "IgnoreUnknown=true",
                "K8S_POD_NAMESPACE=team",
                "IP=10.1.0.9/24",
                "MAC=02:00:00:00:00:09"
            ]
        );
        assert_eq!(a.config["plugins"][0]["args"]["cni"]["foo"], "bar");
        // The cluster network gets none of it.
        assert!(p.attachments[0].capability_args.is_empty());
    }

    #[test]
    fn several_addresses_need_the_ips_capability() {
        let mut f = fixture("");
        let two = r#"[{"name":"blue","ips":["10.1.0.9/24","10.1.0.10/24"]}]"#;
        let e = plan(&f, &[(NETWORKS_KEY, two)]).unwrap_err();
        assert_eq!(e.to_cni().code, 7);
        assert!(e.to_string().contains("\"ips\" capability"), "{e}");
        f.nads.0.insert(
            ("team".into(), "blue".into()),
            r#"{"cniVersion":"1.0.0","type":"macvlan","capabilities":{"ips":true},"ipam":{"type":"host-local"}}"#
                .into(),
        );
        let p = plan(&f, &[(NETWORKS_KEY, two)]).unwrap();
        assert_eq!(
            p.attachments[1].capability_args["ips"],
            serde_json::json!(["10.1.0.9/24", "10.1.0.10/24"])
        );
    }

    #[test]
    fn namespace_isolation() {
        let f = fixture(r#","namespaceIsolation":true"#);
        assert!(plan(&f, &[(NETWORKS_KEY, "blue,default/shared")]).is_ok());
        let e = plan(&f, &[(NETWORKS_KEY, "other/x")]).unwrap_err();
        assert!(e.to_string().contains("namespace isolation"), "{e}");
        let f = fixture("");
        assert!(plan(&f, &[(NETWORKS_KEY, "other/x")]).is_ok());
    }

    #[test]
    fn unknown_network_and_plugin() {
        let f = fixture("");
        let e = plan(&f, &[(NETWORKS_KEY, "nope")]).unwrap_err();
        assert!(e
            .to_string()
            .contains("cannot find a network-attachment-definition (nope) in namespace (team)"));
        let mut f = fixture("");
        f.nads.0.insert(
            ("team".into(), "evil".into()),
            r#"{"cniVersion":"1.0.0","type":"../../bin/sh"}"#.into(),
        );
        f.nads.0.insert(
            ("team".into(), "evil-ipam".into()),
            r#"{"cniVersion":"1.0.0","type":"bridge","ipam":{"type":"/bin/sh"}}"#.into(),
        );
        f.nads.0.insert(
            ("team".into(), "missing".into()),
            r#"{"cniVersion":"1.0.0","type":"nosuchplugin"}"#.into(),
        );
        for n in ["evil", "evil-ipam", "missing"] {
            let e = plan(&f, &[(NETWORKS_KEY, n)]).unwrap_err();
            assert!(e.to_string().contains("plugin type"), "{n}: {e}");
        }
    }

    #[test]
    fn default_network_override_and_route_checks() {
        let mut f = fixture("");
        f.nads.0.insert(
            ("kube-system".into(), "alt".into()),
            r#"{"cniVersion":"1.0.0","type":"bridge"}"#.into(),
        );
        let p = plan(&f, &[(DEFAULT_NETWORK_KEY, "alt")]).unwrap();
        assert_eq!(ifnames(&p), [("kube-system/alt", "eth0")]);
        assert!(plan(&f, &[(DEFAULT_NETWORK_KEY, "alt,alt")]).is_err());
        let e = plan(
            &f,
            &[(
                NETWORKS_KEY,
                r#"[{"name":"blue","default-route":["10.1.0.1"]},{"name":"red","default-route":["10.2.0.1"]}]"#,
            )],
        )
        .unwrap_err();
        assert!(e.to_string().contains("more than one IPv4 default-route"));
    }

    #[test]
    fn lenient_mode_skips_missing() {
        let f = fixture("");
        let req_nads = Nads(HashMap::new());
        let args = vec![];
        let caps = Map::new();
        let req = PlanRequest {
            conf: &f.conf,
            key: AttachmentKey {
                container_id: "c1".into(),
                ifname: "eth0".into(),
            },
            netns: None,
            pod: PodRef::default(),
            args: &args,
            capability_args: &caps,
            plugin_path: &f.bin,
            strict: false,
        };
        let pod = PodInfo {
            namespace: "team".into(),
            annotations: [(NETWORKS_KEY.to_string(), "gone".to_string())].into(),
            ..Default::default()
        };
        let p = build_plan(&req, Some(&pod), &req_nads).unwrap();
        assert_eq!(ifnames(&p), [("cbr0", "eth0")]);
    }
}
