//! The pod annotations that pick a pod's networks, as the meta plugin reads
//! them: `k8s.v1.cni.cncf.io/networks` (short form or JSON list) and
//! `v1.multus-cni.io/default-network` (meta's `annotation::parse_networks`).
//!
//! Input: the annotation's value. Must hold: no panic; every accepted
//! element has a valid name, namespace and interface; the accepted list,
//! written back as the JSON form, parses to the same list.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plexus_fuzz::invariant;
use plexus_meta::annotation::{
    check_ifname, is_dns1123_label, is_dns1123_subdomain, parse_networks, DEFAULT_NETWORK_KEY,
    NETWORKS_KEY,
};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    for key in [NETWORKS_KEY, DEFAULT_NETWORK_KEY] {
        let Ok(nets) = parse_networks(value, "podns", key) else {
            continue;
        };
        for n in &nets {
            invariant!(is_dns1123_subdomain(&n.name), "{n:?}");
            invariant!(is_dns1123_label(&n.namespace), "{n:?}");
            invariant!(
                n.interface.is_empty() || check_ifname(&n.interface).is_ok(),
                "{n:?}"
            );
        }
        let json = serde_json::to_string(&nets).expect("a selection serializes");
        match parse_networks(&json, "other", key) {
            Ok(again) => invariant!(again == nets, "{json}: {again:?} != {nets:?}"),
            Err(e) => panic!("{json} (from {value:?}) does not parse again: {e}"),
        }
    }
});
