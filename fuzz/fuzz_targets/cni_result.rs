//! CNI results in every spec version's format: what a delegate prints and
//! what a chained plugin gets as `prevResult` (plexus-cni's `CniResult`,
//! read with `from_slice` and inside a config).
//!
//! Input: a result's JSON. Must hold: no panic; a result written in any
//! version's format reads back as the same result less the fields that
//! version does not have, and writing that again gives the same JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plexus_cni::{CniResult, NetConf, SpecVersion};
use plexus_fuzz::invariant;

/// `r` as a version before 1.1.0 can carry it.
fn without_1_1_fields(r: &CniResult) -> CniResult {
    let mut r = r.clone();
    for i in &mut r.interfaces {
        i.mtu = None;
        i.socket_path.clear();
        i.pci_id.clear();
    }
    for rt in &mut r.routes {
        rt.mtu = None;
        rt.advmss = None;
        rt.priority = None;
        rt.table = None;
        rt.scope = None;
    }
    r
}

fuzz_target!(|data: &[u8]| {
    let Ok(r) = CniResult::from_slice(data) else {
        return;
    };
    for &v in SpecVersion::ALL {
        let json = r.to_value(v);
        invariant!(json["cniVersion"] == v.as_str(), "{json}");
        let back = match CniResult::from_value(&json) {
            Ok(b) => b,
            Err(e) => panic!("{v} result {json} does not read back: {e:?}"),
        };
        let want = if v == SpecVersion::V1_1_0 {
            r.clone()
        } else {
            without_1_1_fields(&r)
        };
        invariant!(back == want, "{v}: {back:?} != {want:?}");
        invariant!(back.to_value(v) == json, "{v}: {json}");

        // The same result as a chained plugin's prevResult.
        let mut conf = serde_json::json!({"cniVersion": v.as_str(), "name": "n", "type": "t"});
        conf["prevResult"] = json.clone();
        let nc = NetConf::parse(conf.to_string().as_bytes());
        match nc {
            Ok(nc) => invariant!(nc.prev_result.as_ref() == Some(&back), "{v}: {nc:?}"),
            Err(e) => panic!("{v}: config with prevResult {json} refused: {e:?}"),
        }
    }
});
