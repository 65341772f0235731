//! Checks shared by the block IPAM tests against each store (etcd, the
//! Kubernetes API stand-in).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::Value;

/// What each node `n<i>` got: the addresses it handed out and the blocks
/// it holds.
pub type NodeClaims = (Vec<IpAddr>, Vec<IpNet>);

/// Nodes claiming at once never shared a block or an address: every
/// address given once and inside its node's blocks; the store's block
/// records (`stored`, plexus-ipam's JSON) name exactly those owners and
/// record every allocation once.
pub fn assert_disjoint_claims(results: &[NodeClaims], stored: &[Value]) {
    let all: Vec<IpAddr> = results.iter().flat_map(|r| r.0.clone()).collect();
    assert_eq!(
        all.iter().collect::<HashSet<_>>().len(),
        all.len(),
        "an address was given twice"
    );
    let mut owner: HashMap<String, String> = HashMap::new();
    let mut recorded = 0;
    for b in stored {
        owner.insert(
            b["cidr"].as_str().unwrap().into(),
            b["node"].as_str().unwrap().into(),
        );
        recorded += b["allocations"].as_object().unwrap().len();
    }
    assert_eq!(recorded, all.len(), "allocations recorded in the store");
    let mut seen = HashSet::new();
    for (n, (addrs, blocks)) in results.iter().enumerate() {
        for b in blocks {
            assert!(seen.insert(*b), "block {b} held by two nodes");
            assert_eq!(owner[&b.to_string()], format!("n{n}"), "{b}");
        }
        for a in addrs {
            assert!(
                blocks.iter().any(|b| b.contains(a)),
                "{a} not in n{n}'s blocks"
            );
        }
    }
    assert_eq!(seen.len(), stored.len(), "blocks in the store");
}
