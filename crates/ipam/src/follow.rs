//! The routed network's records as they change: [`Cluster::follow`] runs
//! plexus-store's informer over the routed prefix and hands out pools,
//! blocks, BGP settings, peers and nodes as typed records, so nothing
//! outside this crate reads its raw keys.
//!
//! Every record is decoded and checked with the rules `plexusctl` applies
//! when writing it ([`crate::validate`]), and against its key: a pool
//! stored under another pool's name, a block whose key is not its CIDR, a
//! peer under another address, a node under another name, or a key that
//! is no routed record is refused (logged once, counted in
//! [`Follow::stats`], left out as if absent) and never reaches a consumer.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use plexus_store::informer::{Cache, Counts, Event, Informer, KvSource, Stats};
use plexus_store::KeyValue;
use serde::de::DeserializeOwned;

use crate::layout::block_key;
use crate::records::{BgpConfig, Block, NodeSettings, Peer, Pool};
use crate::{validate, Cluster, IpamError};

/// One routed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Pool(Pool),
    Block(Block),
    BgpConfig(BgpConfig),
    Peer(Peer),
    Filter(plexus_bgp::BgpFilter),
    Node(NodeSettings),
}

/// Which record a [`Record`] is (what its key says).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RecordId {
    Pool(String),
    Block(IpNet),
    BgpConfig,
    Peer(IpAddr),
    Filter(String),
    Node(String),
}

impl Record {
    pub fn id(&self) -> RecordId {
        match self {
            Record::Pool(p) => RecordId::Pool(p.name.clone()),
            Record::Block(b) => RecordId::Block(b.cidr),
            Record::BgpConfig(_) => RecordId::BgpConfig,
            Record::Peer(p) => RecordId::Peer(p.address),
            Record::Filter(f) => RecordId::Filter(f.name.clone()),
            Record::Node(n) => RecordId::Node(n.name.clone()),
        }
    }
}

/// What [`Follow::next`] hands out.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordEvent {
    Added(Arc<Record>),
    /// Before and now.
    Updated(Arc<Record>, Arc<Record>),
    /// The last value handed out.
    Deleted(Arc<Record>),
    /// A (re)list was handed out in full: [`Follow::records`] is the
    /// store's state at one revision.
    Synced,
}

/// Which kinds of record to follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kinds {
    pub pools: bool,
    pub blocks: bool,
    /// The BGP settings and the peers.
    pub bgp: bool,
    pub nodes: bool,
}

impl Kinds {
    pub const ALL: Kinds = Kinds {
        pools: true,
        blocks: true,
        bgp: true,
        nodes: true,
    };
    /// Everything but the blocks: every ADD writes one, and a node learns
    /// the other nodes' blocks over BGP.
    pub const CONFIG: Kinds = Kinds {
        blocks: false,
        ..Kinds::ALL
    };
}

fn corrupt(key: &str, error: impl std::fmt::Display) -> IpamError {
    IpamError::Corrupt {
        key: key.to_string(),
        error: error.to_string(),
    }
}

fn json<T: DeserializeOwned>(key: &str, kv: &KeyValue) -> Result<T, IpamError> {
    serde_json::from_slice(&kv.value).map_err(|e| corrupt(key, e))
}

/// A key's last segment, when it is exactly `dir` + one segment.
fn leaf<'a>(rest: &'a str, dir: &str) -> Option<&'a str> {
    rest.strip_prefix(dir)
        .filter(|s| !s.is_empty() && !s.contains('/'))
}

/// A routed record from its key under `prefix/` and its value, checked.
fn decode(prefix: &str, key: &str, kv: &KeyValue) -> Result<Record, IpamError> {
    let rest = key
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('/'))
        .ok_or_else(|| corrupt(key, format!("not under {prefix}/")))?;
    let bad = |e: IpamError| corrupt(key, e);
    if let Some(name) = leaf(rest, "pools/") {
        let p: Pool = json(key, kv)?;
        validate::pool(&p).map_err(bad)?;
        if p.name != name {
            return Err(corrupt(key, format!("the record is pool {:?}", p.name)));
        }
        return Ok(Record::Pool(p));
    }
    if let Some(seg) = leaf(rest, "blocks/") {
        let b: Block = json(key, kv)?;
        let (lo, hi) = match b.cidr {
            IpNet::V4(_) => (20, 32),
            IpNet::V6(_) => (116, 128),
        };
        if !(lo..=hi).contains(&b.cidr.prefix_len()) {
            return Err(corrupt(key, format!("{} is no block size", b.cidr)));
        }
        if b.cidr.trunc() != b.cidr || block_key(&b.cidr) != seg {
            return Err(corrupt(key, format!("the record is block {}", b.cidr)));
        }
        validate::name("pool", &b.pool).map_err(bad)?;
        validate::name("node", &b.node).map_err(bad)?;
        if let Some(o) = b.allocations.keys().find(|o| **o >= b.size()) {
            return Err(corrupt(
                key,
                format!("address {o} is outside the block of {}", b.size()),
            ));
        }
        return Ok(Record::Block(b));
    }
    if rest == "bgp/config" {
        let c: BgpConfig = json(key, kv)?;
        validate::bgp_config(&c).map_err(bad)?;
        return Ok(Record::BgpConfig(c));
    }
    if let Some(seg) = leaf(rest, "bgp/peers/") {
        let p: Peer = json(key, kv)?;
        if p.address.to_string() != seg {
            return Err(corrupt(key, format!("the record is peer {}", p.address)));
        }
        if p.asn == 0 {
            return Err(corrupt(key, "AS number 0 is reserved"));
        }
        if let Some(n) = &p.node {
            validate::name("node", n).map_err(bad)?;
        }
        validate::peer_settings(&p.settings).map_err(bad)?;
        return Ok(Record::Peer(p));
    }
    if let Some(name) = leaf(rest, "bgp/filters/") {
        let f: plexus_bgp::BgpFilter = json(key, kv)?;
        validate::filter(&f).map_err(bad)?;
        if f.name != name {
            return Err(corrupt(key, format!("the record is filter {:?}", f.name)));
        }
        return Ok(Record::Filter(f));
    }
    if let Some(name) = leaf(rest, "nodes/") {
        let n: NodeSettings = json(key, kv)?;
        validate::name("node", &n.name).map_err(bad)?;
        if n.name != name {
            return Err(corrupt(key, format!("the record is node {:?}", n.name)));
        }
        if n.asn == Some(0) {
            return Err(corrupt(key, "AS number 0 is reserved"));
        }
        return Ok(Record::Node(n));
    }
    Err(corrupt(key, "no routed record is kept here"))
}

/// The routed records as they change. See the module docs.
pub struct Follow {
    informer: Informer<Record>,
}

impl std::fmt::Debug for Follow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follow")
            .field("source", &self.informer.describe())
            .finish()
    }
}

fn event(ev: Event<Record>) -> RecordEvent {
    match ev {
        Event::Added(_, r) => RecordEvent::Added(r),
        Event::Updated(_, old, new) => RecordEvent::Updated(old, new),
        Event::Deleted(_, r) => RecordEvent::Deleted(r),
        Event::Synced => RecordEvent::Synced,
    }
}

impl Follow {
    /// The next change; waits as long as it takes (store failures are
    /// retried and logged).
    pub async fn next(&mut self) -> RecordEvent {
        event(self.informer.next().await)
    }

    /// Replace a watch silent this long (the informer's default otherwise).
    pub fn idle_timeout(self, idle: Duration) -> Follow {
        Follow {
            informer: self.informer.idle_timeout(idle),
        }
    }

    /// The records handed out so far; readable from any task.
    pub fn records(&self) -> Records {
        Records {
            cache: self.informer.cache(),
        }
    }

    /// Lists, refused records and watch restarts, for metrics.
    pub fn stats(&self) -> Arc<Stats> {
        self.informer.stats()
    }

    pub fn counts(&self) -> Counts {
        self.informer.stats().counts()
    }
}

/// The records a [`Follow`] handed out, by kind.
#[derive(Debug, Clone)]
pub struct Records {
    cache: Cache<Record>,
}

impl Records {
    fn each<T>(&self, f: impl Fn(&Record) -> Option<T>) -> Vec<T> {
        self.cache
            .with(|m| m.values().filter_map(|r| f(r)).collect())
    }

    /// Whether a first list was handed out in full.
    pub fn is_synced(&self) -> bool {
        self.cache.is_synced()
    }

    /// The pools, by name.
    pub fn pools(&self) -> Vec<Pool> {
        self.each(|r| match r {
            Record::Pool(p) => Some(p.clone()),
            _ => None,
        })
    }

    pub fn blocks(&self) -> Vec<Block> {
        self.each(|r| match r {
            Record::Block(b) => Some(b.clone()),
            _ => None,
        })
    }

    pub fn blocks_of(&self, node: &str) -> Vec<Block> {
        self.each(|r| match r {
            Record::Block(b) if b.node == node => Some(b.clone()),
            _ => None,
        })
    }

    /// The BGP settings; the defaults when none were set.
    pub fn bgp_config(&self) -> BgpConfig {
        self.each(|r| match r {
            Record::BgpConfig(c) => Some(c.clone()),
            _ => None,
        })
        .pop()
        .unwrap_or_default()
    }

    pub fn peers(&self) -> Vec<Peer> {
        self.each(|r| match r {
            Record::Peer(p) => Some(p.clone()),
            _ => None,
        })
    }

    /// The nodes, by name.
    pub fn nodes(&self) -> Vec<NodeSettings> {
        self.each(|r| match r {
            Record::Node(n) => Some(n.clone()),
            _ => None,
        })
    }

    pub fn node(&self, name: &str) -> Option<NodeSettings> {
        self.each(|r| match r {
            Record::Node(n) if n.name == name => Some(n.clone()),
            _ => None,
        })
        .pop()
    }
}

impl Cluster {
    /// Follow the routed records of `kinds`: every record first (then
    /// [`RecordEvent::Synced`]), then each change. Nothing is read until
    /// [`Follow::next`] is called.
    pub fn follow(&self, kinds: Kinds) -> Follow {
        let layout = self.layout().clone();
        let prefix = layout.prefix().to_string();
        let mut source = KvSource::new(self.kv().clone(), &format!("{prefix}/"));
        for (wanted, dir) in [
            (kinds.pools, layout.pools()),
            (kinds.blocks, layout.blocks()),
            (kinds.bgp, format!("{prefix}/bgp/")),
            (kinds.nodes, layout.nodes()),
        ] {
            if !wanted {
                source = source.excluding(&dir);
            }
        }
        Follow {
            informer: Informer::new(source, move |key: &str, kv: &KeyValue| {
                decode(&prefix, key, kv)
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{Encap, Handle};
    use crate::{Allocator, Layout};
    use plexus_store::{FileKv, Kv};

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn pool(name: &str, cidr: &str) -> Pool {
        Pool {
            name: name.into(),
            cidr: cidr.parse().unwrap(),
            block_size: 28,
            nat_outgoing: false,
            encap: Encap::None,
            disabled: false,
        }
    }

    async fn next(f: &mut Follow) -> RecordEvent {
        tokio::time::timeout(Duration::from_secs(20), f.next())
            .await
            .expect("an event within 20 s")
    }

    fn added(r: Record) -> RecordEvent {
        RecordEvent::Added(Arc::new(r))
    }

    #[test]
    fn typed_records_as_they_change() {
        let dir = tempfile::tempdir().unwrap();
        rt().block_on(async {
            let kv = Arc::new(FileKv::open(&dir.path().join("s")).unwrap());
            let c = Cluster::new(kv.clone(), Layout::default());
            c.add_pool(&pool("a", "10.1.0.0/24")).await.unwrap();
            c.update_node("n1", |n| n.address = Some("192.0.2.1".parse().unwrap()))
                .await
                .unwrap();
            let mut f = c.follow(Kinds::ALL);
            assert_eq!(
                next(&mut f).await,
                added(Record::Node(c.node("n1").await.unwrap().unwrap()))
            );
            assert_eq!(
                next(&mut f).await,
                added(Record::Pool(pool("a", "10.1.0.0/24")))
            );
            assert_eq!(next(&mut f).await, RecordEvent::Synced);
            let records = f.records();
            assert!(records.is_synced());
            assert_eq!(
                records.bgp_config(),
                BgpConfig::default(),
                "the defaults when unset"
            );
            c.set_bgp_config(&BgpConfig {
                asn: 65001,
                node_to_node_mesh: false,
                ..Default::default()
            })
            .await
            .unwrap();
            let peer = Peer {
                address: "2001:db8::7".parse().unwrap(),
                asn: 65002,
                node: None,
                settings: Default::default(),
            };
            c.add_peer(&peer).await.unwrap();
            c.update_pool("a", |p| p.nat_outgoing = true).await.unwrap();
            let a = Allocator::load(c.clone(), "n1").await.unwrap();
            a.allocate(&Handle::new("net", "c1", "eth0"), "a")
                .await
                .unwrap();
            c.remove_peer(&peer.address).await.unwrap();
            match next(&mut f).await {
                RecordEvent::Added(r) => assert_eq!(r.id(), RecordId::BgpConfig),
                e => panic!("{e:?}"),
            }
            assert_eq!(next(&mut f).await, added(Record::Peer(peer.clone())));
            match next(&mut f).await {
                RecordEvent::Updated(old, new) => {
                    assert!(matches!(&*old, Record::Pool(p) if !p.nat_outgoing));
                    assert!(matches!(&*new, Record::Pool(p) if p.nat_outgoing));
                }
                e => panic!("{e:?}"),
            }
            // The block claim, then the allocation written into it.
            let mut block = None;
            for _ in 0..2 {
                match next(&mut f).await {
                    RecordEvent::Added(r) | RecordEvent::Updated(_, r) => match &*r {
                        Record::Block(b) => block = Some(b.clone()),
                        r => panic!("{r:?}"),
                    },
                    e => panic!("{e:?}"),
                }
            }
            let block = block.unwrap();
            assert_eq!((block.node.as_str(), block.allocations.len()), ("n1", 1));
            assert_eq!(
                next(&mut f).await,
                RecordEvent::Deleted(Arc::new(Record::Peer(peer)))
            );
            assert_eq!(records.bgp_config().asn, 65001);
            assert_eq!(records.blocks_of("n1"), [block]);
            assert!(records.peers().is_empty());
            assert_eq!(records.pools()[0].name, "a");
            assert_eq!(records.node("n1").unwrap().name, "n1");
            assert_eq!(f.counts().refused_total, 0);
        });
    }

    #[test]
    fn records_whose_key_and_content_disagree_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        rt().block_on(async {
            let kv = Arc::new(FileKv::open(&dir.path().join("s")).unwrap());
            let c = Cluster::new(kv.clone(), Layout::default());
            let enc = |v: serde_json::Value| v.to_string().into_bytes();
            let p = "/plexus/routed";
            let bad: Vec<(String, Vec<u8>)> = vec![
                // Another pool's name, or a pool the rules refuse.
                (format!("{p}/pools/x"), enc(serde_json::json!({"name": "y", "cidr": "10.2.0.0/24", "blockSize": 28}))),
                (format!("{p}/pools/z"), enc(serde_json::json!({"name": "z", "cidr": "10.3.0.0/24", "blockSize": 8}))),
                // A block under another CIDR, or with an address outside it.
                (format!("{p}/blocks/10.1.0.16-28"), enc(serde_json::json!({"cidr": "10.1.0.32/28", "pool": "a", "node": "n1"}))),
                (format!("{p}/blocks/10.1.0.48-28"), enc(serde_json::json!({"cidr": "10.1.0.48/28", "pool": "a", "node": "n1",
                    "allocations": {"16": {"network": "n", "containerId": "c", "ifname": "eth0"}}}))),
                // A peer under another address, a node under another name.
                (format!("{p}/bgp/peers/192.0.2.1"), enc(serde_json::json!({"address": "192.0.2.2", "asn": 1}))),
                (format!("{p}/nodes/n2"), enc(serde_json::json!({"name": "n3"}))),
                (format!("{p}/bgp/config"), enc(serde_json::json!({"asn": 0, "nodeToNodeMesh": true}))),
                (format!("{p}/nodes/n4"), b"not json".to_vec()),
                (format!("{p}/elsewhere"), enc(serde_json::json!({}))),
            ];
            for (k, v) in &bad {
                kv.put(k, v, None, None).await.unwrap();
            }
            c.add_pool(&pool("a", "10.1.0.0/24")).await.unwrap();
            let mut f = c.follow(Kinds::ALL);
            assert_eq!(next(&mut f).await, added(Record::Pool(pool("a", "10.1.0.0/24"))));
            assert_eq!(next(&mut f).await, RecordEvent::Synced);
            let n = f.counts();
            assert_eq!((n.refused_total, n.refused), (bad.len() as u64, bad.len() as u64));
            // A good record after a bad one flows; a good one turned bad goes.
            c.update_node("n5", |_| {}).await.unwrap();
            assert!(matches!(next(&mut f).await, RecordEvent::Added(r) if r.id() == RecordId::Node("n5".into())));
            kv.put(&format!("{p}/nodes/n5"), &enc(serde_json::json!({"name": "n6"})), None, None)
                .await
                .unwrap();
            assert!(matches!(next(&mut f).await, RecordEvent::Deleted(r) if r.id() == RecordId::Node("n5".into())));
            assert_eq!(f.counts().refused_total, bad.len() as u64 + 1);
        });
    }

    #[test]
    fn config_only_leaves_the_blocks_out() {
        let dir = tempfile::tempdir().unwrap();
        rt().block_on(async {
            let kv = Arc::new(FileKv::open(&dir.path().join("s")).unwrap());
            let c = Cluster::new(kv.clone(), Layout::new("/x"));
            c.add_pool(&pool("a", "10.1.0.0/24")).await.unwrap();
            let a = Allocator::load(c.clone(), "n1").await.unwrap();
            a.allocate(&Handle::new("net", "c1", "eth0"), "a").await.unwrap();
            let mut f = c.follow(Kinds::CONFIG);
            assert!(matches!(next(&mut f).await, RecordEvent::Added(r) if matches!(&*r, Record::Pool(_))));
            assert_eq!(next(&mut f).await, RecordEvent::Synced);
            a.allocate(&Handle::new("net", "c2", "eth0"), "a").await.unwrap();
            c.update_node("n1", |_| {}).await.unwrap();
            assert!(matches!(next(&mut f).await, RecordEvent::Added(r) if r.id() == RecordId::Node("n1".into())));
            assert!(f.records().blocks().is_empty());
            assert_eq!(f.counts().refused_total, 0);
        });
    }
}
