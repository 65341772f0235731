//! The routed network's records as plexusd and plexusctl read them from the
//! store (plexus-ipam's `Pool`, `Block`, `BgpConfig`, `Peer`,
//! `NodeSettings` under `/plexus/routed/`), and the declared `pools.json`
//! and `bgp.json` files (`parse_pools`, `parse_bgp`).
//!
//! Input: the store key (or the file's name) on the first line, the value
//! after it. Must hold: no panic; a record written back as plexusd writes
//! it reads as the same record; a block's and a pool's arithmetic stays in
//! range; declared pools pass the pool checks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plexus_fuzz::{first_line, invariant};
use plexus_ipam::records::{BgpConfig, Block, NodeSettings, Peer, Pool};
use plexus_ipam::{arith, validate, Layout};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The record, if it decodes, after checking that it round-trips.
fn record<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(
    value: &[u8],
) -> Option<T> {
    let v: T = serde_json::from_slice(value).ok()?;
    let bytes = plexus_ipam::stored::encode(&v);
    match serde_json::from_slice::<T>(&bytes) {
        Ok(back) => invariant!(back == v, "{back:?} != {v:?}"),
        Err(e) => panic!(
            "{v:?} written as {:?} does not read back: {e}",
            String::from_utf8_lossy(&bytes)
        ),
    }
    Some(v)
}

fn pool(p: &Pool) {
    let _ = (p.size(), p.block_count());
    // Whatever the record says, a block a node claims is inside its pool.
    if let Some(b) = arith::nth_block(&p.cidr, p.block_size, 0) {
        invariant!(p.cidr.contains(&b), "{p:?}: {b}");
    }
    if validate::pool(p).is_ok() {
        // The blocks a node would claim first and last.
        let first = arith::nth_block(&p.cidr, p.block_size, 0);
        invariant!(
            first.is_some_and(|b| p.cidr.contains(&b)),
            "{p:?}: {first:?}"
        );
        let last = arith::nth_block(&p.cidr, p.block_size, p.block_count() - 1);
        invariant!(last.is_some_and(|b| p.cidr.contains(&b)), "{p:?}: {last:?}");
    }
}

fn block(b: &Block) {
    let _ = (b.size(), b.used(), b.free());
    if let Some(o) = b.first_free() {
        invariant!(
            o < b.size() && !b.allocations.contains_key(&o),
            "{b:?}: {o}"
        );
    }
    for o in b.allocations.keys().filter(|o| **o < b.size()) {
        let a = b.address(*o);
        invariant!(b.cidr.contains(&a), "{b:?}: {o} is {a}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((key, value)) = first_line(data) else {
        return;
    };
    let l = Layout::default();
    match key {
        "pools.json" => {
            if let Ok(pools) = plexus_ipam::parse_pools(value) {
                for p in &pools {
                    invariant!(validate::pool(p).is_ok(), "{p:?}");
                    pool(p);
                }
            }
        }
        "bgp.json" => {
            if let Ok(b) = plexus_ipam::parse_bgp(value) {
                invariant!(b.asn != 0, "{b:?}");
            }
        }
        k if k == l.bgp_config() => {
            let _ = record::<BgpConfig>(value);
        }
        k if k.starts_with(&l.pools()) => {
            if let Some(p) = record::<Pool>(value) {
                pool(&p);
            }
        }
        k if k.starts_with(&l.blocks()) => {
            if let Some(b) = record::<Block>(value) {
                block(&b);
            }
        }
        k if k.starts_with(&l.peers()) => {
            let _ = record::<Peer>(value);
        }
        k if k.starts_with(&l.nodes()) => {
            let _ = record::<NodeSettings>(value);
        }
        _ => {}
    }
});
