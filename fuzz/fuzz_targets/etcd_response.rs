//! Answers of etcd's JSON gateway as plexus-store's etcd client reads them
//! (crates/store/src/etcd.rs): unary answers (range, get, txn, put, delete,
//! lease grant, status, authenticate) with their HTTP status, and streamed
//! ones (watch, lease keepalive) split into lines as their frames arrive.
//!
//! Input: `<answer> [HTTP status] [frame sizes...]` on the first line, the
//! body after it. Must hold: no panic; a streamed body gives the same
//! lines however its frames are cut; an answer taken as a success has a
//! success status and no error; a granted lease has an ID.
#![no_main]

use hyper::StatusCode;
use libfuzzer_sys::fuzz_target;
use plexus_fuzz::{chunks, first_line, invariant};
use plexus_store::etcd::{self, LineSplitter};
use plexus_store::KvEvent;
use serde_json::Value;

/// The messages of a streamed body cut into `frames`, up to the first
/// line that does not parse (the client stops there).
fn lines(frames: &[&[u8]]) -> Vec<Result<Value, String>> {
    let mut out = Vec::new();
    let mut l = LineSplitter::default();
    let frames = frames.iter().map(Some).chain([None]);
    for f in frames {
        let mut next = match f {
            Some(f) => {
                l.push(f);
                l.next_line()
            }
            None => l.finish(),
        };
        while let Some(r) = next {
            match r {
                Ok(v) => out.push(Ok(v)),
                Err(e) => {
                    out.push(Err(e.to_string()));
                    return out;
                }
            }
            next = l.next_line();
        }
    }
    out
}

/// The events a watch stream yields, until its first error (the client
/// then lists again).
fn watch(lines: &[Result<Value, String>]) {
    for line in lines {
        let Ok(v) = line else { return };
        match etcd::watch_batch(v) {
            Ok(Some(events)) => {
                for e in events {
                    if let KvEvent::Delete {
                        key, prev: Some(p), ..
                    } = &e
                    {
                        let _ = (key, p.mod_revision);
                    }
                }
            }
            Ok(None) => {}
            Err(_) => return,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((tag, body)) = first_line(data) else {
        return;
    };
    let mut words = tag.split_whitespace();
    let Some(kind) = words.next() else { return };
    let status = words
        .next()
        .and_then(|s| s.parse().ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::OK);
    let sizes: Vec<u8> = words.filter_map(|w| w.parse().ok()).collect();
    match kind {
        "watch" | "keepalive" => {
            let whole = lines(&[body]);
            let cut = lines(&chunks(
                body,
                if sizes.is_empty() {
                    &[1, 7, 64, 3]
                } else {
                    &sizes
                },
            ));
            invariant!(whole == cut, "{whole:?} != {cut:?}");
            if kind == "watch" {
                watch(&whole);
            } else if let Some(Ok(first)) = whole.first() {
                let _ = etcd::keepalive_answer(first);
            }
        }
        _ => {
            let path = match kind {
                "range" | "get" => "/v3/kv/range",
                "txn" => "/v3/kv/txn",
                "put" => "/v3/kv/put",
                "delete" => "/v3/kv/deleterange",
                "grant" => "/v3/lease/grant",
                "revoke" => "/v3/lease/revoke",
                "status" => "/v3/maintenance/status",
                "auth" => "/v3/auth/authenticate",
                _ => return,
            };
            let Ok(v) = etcd::unary_answer(path, status, body) else {
                return;
            };
            invariant!(
                status.is_success() && v.get("error").is_none(),
                "{status}: {v}"
            );
            match kind {
                "range" => {
                    if let Ok(r) = etcd::range_answer(&v) {
                        let _ = r.revision;
                    }
                }
                "get" => {
                    let _ = etcd::get_answer(&v);
                }
                "txn" | "put" | "delete" => {
                    let _ = etcd::txn_answer(&v);
                }
                "grant" => {
                    if let Ok(id) = etcd::grant_answer(&v) {
                        invariant!(id != 0, "{v}");
                    }
                }
                _ => {}
            }
        }
    }
});
