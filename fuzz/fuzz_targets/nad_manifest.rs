//! NetworkAttachmentDefinition manifests as the meta plugin reads them from
//! `attachmentsDir` (meta's `nad_store::parse_manifest`): one JSON document,
//! or YAML documents (several per file, `kind: List`), and the delegate
//! config each NAD carries (read as a conf or conflist, as the planner does).
//!
//! Input: `json` or `yaml` on the first line, the manifest after it. Must
//! hold: no panic, no runaway memory (YAML aliases); every NAD read has a
//! name and a namespace.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plexus_fuzz::{first_line, invariant};
use plexus_meta::nad_store::parse_manifest;
use plexus_runtime::conf::NetworkConfigList;

fuzz_target!(|data: &[u8]| {
    let Some((kind, rest)) = first_line(data) else {
        return;
    };
    let json = match kind.trim() {
        "json" => true,
        "yaml" => false,
        _ => return,
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let Ok(nads) = parse_manifest(text, json) else {
        return;
    };
    for n in &nads {
        invariant!(!n.name.is_empty() && !n.namespace.is_empty(), "{n:?}");
        if !n.config.is_empty() {
            let _ = NetworkConfigList::from_any(n.config.as_bytes());
        }
    }
});
