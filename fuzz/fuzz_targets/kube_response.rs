//! Answers of the Kubernetes API as Plexus reads them: a Pod and a
//! NetworkAttachmentDefinition (plexus-k8s, for the meta plugin: the pod's
//! UID and annotations, its networks annotation, the NAD's `spec.config`),
//! and Node and PlexusKey objects as plexus-store reads them in lists and
//! in watch event lines (`node_lease`: flannel's node annotations and
//! podCIDRs; `kubekv::ours`: a key's object).
//!
//! Input: `pod`, `nad`, `node-list`, `node-watch`, `key-list` or
//! `key-watch` on the first line, the answer body after it (a watch: one
//! event per line). Must hold: no panic; a node read as a lease has a
//! subnet; a PlexusKey object read as a key is the object that key names.
#![no_main]

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DynamicObject, ObjectList, WatchEvent};
use libfuzzer_sys::fuzz_target;
use plexus_fuzz::{first_line, invariant};
use plexus_runtime::conf::NetworkConfigList;
use plexus_store::kubekv::{object_name, ours};
use plexus_subnet::registry::kube::node_lease;

fn node(n: &Node) {
    if let Some(l) = node_lease(n) {
        invariant!(l.subnet.is_some() || l.subnet6.is_some(), "{l:?}");
    }
}

fn key(obj: &DynamicObject) {
    if let Some(kv) = ours(obj) {
        invariant!(
            obj.metadata.name.as_deref() == Some(object_name(&kv.key).as_str()),
            "{kv:?}"
        );
        let _ = kv.key.starts_with("/plexus/routed/");
    }
}

fn events<K: serde::de::DeserializeOwned>(body: &[u8], mut f: impl FnMut(&K)) {
    for line in body.split(|b| *b == b'\n') {
        match serde_json::from_slice::<WatchEvent<K>>(line) {
            Ok(WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o)) => f(&o),
            Ok(WatchEvent::Bookmark(b)) => {
                let _ = b.metadata.resource_version.parse::<i64>();
            }
            // An ERROR event, or a line that is not an event: the watch ends.
            Ok(WatchEvent::Error(_)) | Err(_) => return,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((kind, body)) = first_line(data) else {
        return;
    };
    match kind.trim() {
        "pod" => {
            let Ok(p) = serde_json::from_slice::<Pod>(body) else {
                return;
            };
            let info = plexus_k8s::pod_info(p);
            if let Some(v) = info.annotations.get(plexus_meta::annotation::NETWORKS_KEY) {
                let _ = plexus_meta::annotation::parse_networks(
                    v,
                    "ns1",
                    plexus_meta::annotation::NETWORKS_KEY,
                );
            }
        }
        "nad" => {
            let Ok(obj) = serde_json::from_slice::<DynamicObject>(body) else {
                return;
            };
            if let Ok(c) = plexus_k8s::nad_spec_config("ns1", "blue", &obj) {
                invariant!(!c.trim().is_empty(), "{c:?}");
                let _ = NetworkConfigList::from_any(c.as_bytes());
            }
        }
        "node-list" => {
            if let Ok(list) = serde_json::from_slice::<ObjectList<Node>>(body) {
                list.items.iter().for_each(node);
            }
        }
        "node-watch" => events::<Node>(body, node),
        "key-list" => {
            if let Ok(list) = serde_json::from_slice::<ObjectList<DynamicObject>>(body) {
                list.items.iter().for_each(key);
            }
        }
        "key-watch" => events::<DynamicObject>(body, key),
        _ => {}
    }
});
