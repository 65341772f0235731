//! Reading the store as a daemon must: every record is checked against
//! the key it sits under and against the records it depends on (a block
//! against its pool, every pool against the others and against the
//! prefixes the node protects) before anyone acts on it. A record that
//! fails is skipped and reported once (key and reason, a counter for
//! metrics); the rest of the store stays usable. One garbage record must
//! never stop a block claim or an agent.
//!
//! The checks are pure functions of the record, its key and the context;
//! [`Damage`] remembers what was reported so that a record is logged once,
//! not at every read.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use ipnet::IpNet;

use crate::arith;
use crate::layout::{block_key, Layout};
use crate::records::{Block, NodeSettings, Peer, Pool};
use crate::validate;

/// Records skipped because they failed a check, as last seen.
#[derive(Debug, Default)]
pub struct Damage {
    /// key → why, for the records failing now.
    bad: Mutex<BTreeMap<String, String>>,
    /// How many distinct (key, reason) reports were made.
    reported: AtomicU64,
}

impl Damage {
    /// Notes that the record at `key` was skipped; logs it the first time
    /// (or when the reason changes).
    pub fn report(&self, key: &str, why: &str) {
        let mut bad = self.bad.lock().unwrap_or_else(|p| p.into_inner());
        if bad.get(key).map(String::as_str) == Some(why) {
            return;
        }
        tracing::warn!(key, reason = why, "store record skipped: it fails a check");
        self.reported.fetch_add(1, Ordering::Relaxed);
        bad.insert(key.to_string(), why.to_string());
    }

    /// The record at `key` read well: forget an earlier report.
    pub fn clear(&self, key: &str) {
        let mut bad = self.bad.lock().unwrap_or_else(|p| p.into_inner());
        if bad.remove(key).is_some() {
            tracing::info!(key, "store record reads well again");
        }
    }

    /// Forget reports of keys under `prefix` that are not in `seen` (the
    /// record was deleted or fixed since).
    pub fn retain_under(&self, prefix: &str, seen: &dyn Fn(&str) -> bool) {
        let mut bad = self.bad.lock().unwrap_or_else(|p| p.into_inner());
        bad.retain(|k, _| !k.starts_with(prefix) || seen(k));
    }

    /// The records skipped now, key → why.
    pub fn current(&self) -> BTreeMap<String, String> {
        self.bad.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// How many times a bad record was reported since start.
    pub fn reported(&self) -> u64 {
        self.reported.load(Ordering::Relaxed)
    }
}

/// A pool record at `key`: the key names it, the pool is valid on its own
/// (validate::pool) and its CIDR has no host bits.
pub fn pool(layout: &Layout, key: &str, p: &Pool) -> Result<(), String> {
    if key != layout.pool(&p.name) {
        return Err(format!(
            "the record names pool {:?}, the key another",
            p.name
        ));
    }
    validate::pool(p).map_err(|e| e.to_string())?;
    if p.cidr.trunc() != p.cidr {
        return Err(format!("pool CIDR {} has host bits set", p.cidr));
    }
    Ok(())
}

/// Which of `pools` (each valid on its own, with its creation revision) a
/// node may use: none overlapping a prefix it protects (its underlay, the
/// nodes' addresses), and of two overlapping pools only the one created
/// first (then the lower name). Returns the usable pools and, for each
/// refused one, its name and why.
pub fn usable_pools(
    mut pools: Vec<(Pool, i64)>,
    protected: &[IpNet],
) -> (Vec<Pool>, Vec<(String, String)>) {
    pools.sort_by(|a, b| (a.1, &a.0.name).cmp(&(b.1, &b.0.name)));
    let mut ok: Vec<Pool> = Vec::new();
    let mut refused = Vec::new();
    for (p, _) in pools {
        if let Some(n) = protected.iter().find(|n| arith::overlaps(n, &p.cidr)) {
            refused.push((
                p.name.clone(),
                format!("pool {} overlaps {n}, which this node protects (its underlay or a node's address)", p.cidr),
            ));
            continue;
        }
        if let Some(o) = ok.iter().find(|o| arith::overlaps(&o.cidr, &p.cidr)) {
            refused.push((
                p.name.clone(),
                format!(
                    "pool {} overlaps pool {} ({}), which was there first",
                    p.cidr, o.name, o.cidr
                ),
            ));
            continue;
        }
        ok.push(p);
    }
    ok.sort_by(|a, b| a.name.cmp(&b.name));
    (ok, refused)
}

/// A block record at `key`: the key is its CIDR, it lies in the pool it
/// names (one of the usable `pools`) with that pool's block size, its node
/// name is valid, and every allocation is inside it.
pub fn block(layout: &Layout, key: &str, b: &Block, pools: &[Pool]) -> Result<(), String> {
    if key != layout.block(&b.cidr) {
        return Err(format!(
            "the record is block {} (key {}), the key another",
            b.cidr,
            block_key(&b.cidr)
        ));
    }
    if b.cidr.trunc() != b.cidr {
        return Err(format!("block CIDR {} has host bits set", b.cidr));
    }
    let Some(pool) = pools.iter().find(|p| p.name == b.pool) else {
        return Err(format!(
            "block {} names pool {:?}, which does not exist or is refused",
            b.cidr, b.pool
        ));
    };
    if !pool.cidr.contains(&b.cidr) || b.cidr.prefix_len() != pool.block_size {
        return Err(format!(
            "block {} is not a /{} block of pool {} ({})",
            b.cidr, pool.block_size, pool.name, pool.cidr
        ));
    }
    validate::name("node", &b.node).map_err(|e| e.to_string())?;
    if let Some((o, _)) = b.allocations.iter().find(|(o, _)| **o >= b.size()) {
        return Err(format!(
            "block {} holds ordinal {o}, past its {} addresses",
            b.cidr,
            b.size()
        ));
    }
    Ok(())
}

/// A node record at `key`: the key names it; its address, if any, is one a
/// node can have.
pub fn node(layout: &Layout, key: &str, n: &NodeSettings) -> Result<(), String> {
    validate::name("node", &n.name).map_err(|e| e.to_string())?;
    if key != layout.node(&n.name) {
        return Err(format!(
            "the record names node {:?}, the key another",
            n.name
        ));
    }
    if let Some(a) = n.address {
        unicast("node address", a)?;
    }
    if n.asn == Some(0) {
        return Err("AS number 0 is reserved".into());
    }
    Ok(())
}

/// A peer record at `key`: the key is its address, a unicast one; its AS
/// is not 0; the node it belongs to, if any, has a valid name.
pub fn peer(layout: &Layout, key: &str, p: &Peer) -> Result<(), String> {
    if key != layout.peer(&p.address) {
        return Err(format!("the record is peer {}, the key another", p.address));
    }
    unicast("peer address", p.address)?;
    if p.asn == 0 {
        return Err("AS number 0 is reserved".into());
    }
    if let Some(n) = &p.node {
        validate::name("node", n).map_err(|e| e.to_string())?;
    }
    validate::peer_settings(&p.settings).map_err(|e| e.to_string())?;
    Ok(())
}

/// A filter record at `key`: the key names it, its rules can work.
pub fn filter(layout: &Layout, key: &str, f: &plexus_bgp::BgpFilter) -> Result<(), String> {
    if key != layout.filter(&f.name) {
        return Err(format!(
            "the record names filter {:?}, the key another",
            f.name
        ));
    }
    validate::filter(f).map_err(|e| e.to_string())
}

/// An address a host or router can have: not unspecified, loopback,
/// multicast or broadcast.
fn unicast(what: &str, a: IpAddr) -> Result<(), String> {
    let bad = a.is_unspecified()
        || a.is_loopback()
        || a.is_multicast()
        || matches!(a, IpAddr::V4(v4) if v4.is_broadcast());
    if bad {
        return Err(format!("{what} {a} is not a unicast address"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::Handle;

    fn pool_(name: &str, cidr: &str) -> Pool {
        Pool {
            name: name.into(),
            cidr: cidr.parse().unwrap(),
            block_size: 26,
            nat_outgoing: false,
            encap: Default::default(),
            disabled: false,
        }
    }

    fn block_(cidr: &str, pool: &str) -> Block {
        Block {
            cidr: cidr.parse().unwrap(),
            pool: pool.into(),
            node: "n1".into(),
            allocations: Default::default(),
        }
    }

    #[test]
    fn pools_must_match_their_key_and_be_valid() {
        let l = Layout::default();
        let p = pool_("a", "10.96.0.0/16");
        assert!(pool(&l, &l.pool("a"), &p).is_ok());
        assert!(pool(&l, &l.pool("b"), &p).unwrap_err().contains("the key"));
        let mut host_bits = p.clone();
        host_bits.cidr = "10.96.0.1/16".parse().unwrap();
        assert!(pool(&l, &l.pool("a"), &host_bits)
            .unwrap_err()
            .contains("host bits"));
        let mut tiny = p;
        tiny.block_size = 12;
        assert!(pool(&l, &l.pool("a"), &tiny).is_err());
    }

    #[test]
    fn overlapping_and_protected_pools_are_refused() {
        let underlay: IpNet = "10.200.0.0/24".parse().unwrap();
        let (ok, refused) = usable_pools(
            vec![
                // Sorts first by name, created last: still refused.
                (pool_("aaa", "10.200.0.0/16"), 9),
                (pool_("main", "10.96.0.0/16"), 3),
                (pool_("dup", "10.96.128.0/17"), 5),
                (pool_("other", "10.97.0.0/16"), 4),
            ],
            &[underlay],
        );
        let names: Vec<&str> = ok.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["main", "other"]);
        let why = |n: &str| refused.iter().find(|r| r.0 == n).unwrap().1.clone();
        assert_eq!(refused.len(), 2);
        assert!(why("aaa").contains("protects"), "{refused:?}");
        assert!(why("dup").contains("there first"), "{refused:?}");
    }

    #[test]
    fn blocks_must_fit_their_key_and_pool() {
        let l = Layout::default();
        let pools = [pool_("p", "10.96.0.0/16")];
        let b = block_("10.96.0.64/26", "p");
        assert!(block(&l, &l.block(&b.cidr), &b, &pools).is_ok());
        // The key says one block, the record another.
        let other = l.block(&"10.96.0.128/26".parse().unwrap());
        assert!(block(&l, &other, &b, &pools).unwrap_err().contains("key"));
        // Outside the pool (the underlay), another size, an unknown pool.
        let under = block_("10.200.0.0/26", "p");
        assert!(block(&l, &l.block(&under.cidr), &under, &pools)
            .unwrap_err()
            .contains("not a /26 block"));
        let big = block_("10.96.0.0/24", "p");
        assert!(block(&l, &l.block(&big.cidr), &big, &pools).is_err());
        let orphan = block_("10.96.0.64/26", "gone");
        assert!(block(&l, &l.block(&orphan.cidr), &orphan, &pools)
            .unwrap_err()
            .contains("does not exist"));
        let mut past = b.clone();
        past.allocations.insert(64, Handle::new("n", "c", "eth0"));
        assert!(block(&l, &l.block(&past.cidr), &past, &pools)
            .unwrap_err()
            .contains("past its 64"));
    }

    #[test]
    fn nodes_and_peers() {
        let l = Layout::default();
        let n = NodeSettings {
            name: "n1".into(),
            address: Some("10.0.0.1".parse().unwrap()),
            ..Default::default()
        };
        assert!(node(&l, &l.node("n1"), &n).is_ok());
        assert!(node(&l, &l.node("n2"), &n).is_err());
        let mut lo = n;
        lo.address = Some("127.0.0.1".parse().unwrap());
        assert!(node(&l, &l.node("n1"), &lo)
            .unwrap_err()
            .contains("not a unicast"));
        let p = Peer {
            address: "10.0.0.9".parse().unwrap(),
            asn: 65000,
            node: None,
            settings: Default::default(),
        };
        assert!(peer(&l, &l.peer(&p.address), &p).is_ok());
        assert!(peer(&l, &l.peer(&"10.0.0.8".parse().unwrap()), &p).is_err());
        let mut zero = p.clone();
        zero.asn = 0;
        assert!(peer(&l, &l.peer(&zero.address), &zero).is_err());
        let mut bad = p;
        bad.settings.ttl_security = Some(0);
        assert!(peer(&l, &l.peer(&bad.address), &bad)
            .unwrap_err()
            .contains("TTL"));
        bad.settings.ttl_security = None;
        bad.settings.bfd = Some(crate::records::BfdSettings {
            min_tx_ms: 1,
            ..Default::default()
        });
        assert!(peer(&l, &l.peer(&bad.address), &bad)
            .unwrap_err()
            .contains("minTxMs"));
        bad.settings.bfd = None;
        bad.settings.password = Some(crate::records::PasswordSource {
            value: Some("x".repeat(81)),
            secret_key_ref: None,
        });
        assert!(peer(&l, &l.peer(&bad.address), &bad)
            .unwrap_err()
            .contains("1 to 80"));
    }

    #[test]
    fn damage_is_reported_once_per_reason() {
        let d = Damage::default();
        d.report("/k/1", "bad");
        d.report("/k/1", "bad");
        assert_eq!(d.reported(), 1);
        d.report("/k/1", "worse");
        assert_eq!(d.reported(), 2);
        d.report("/k/2", "bad");
        d.retain_under("/k/", &|k| k == "/k/2");
        assert_eq!(d.current().keys().collect::<Vec<_>>(), ["/k/2"]);
        d.clear("/k/2");
        assert!(d.current().is_empty());
    }
}
