//! The cluster configuration `plexusctl` edits: pools, BGP settings and
//! peers, node settings, and the whole-cluster IPAM operations (removing a
//! pool or a node with its blocks, the usage report).

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use ipnet::IpNet;
use plexus_store::Kv;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::checked::{self, Damage};
use crate::layout::Layout;
use crate::records::{BgpConfig, Block, NodeSettings, Peer, Pool};
use crate::stored::{self, encode, Versioned};
use crate::{arith, validate, IpamError};

/// How many times a read-modify-write is retried when another writer got
/// in between.
const CAS_ATTEMPTS: usize = 32;

/// What a removal freed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Freed {
    pub blocks: usize,
    pub addresses: usize,
}

/// One pool's use (`ipam show`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolUsage {
    pub pool: String,
    pub cidr: String,
    /// Addresses in the pool (a string: IPv6 pools exceed JSON's numbers).
    pub size: String,
    pub blocks: usize,
    pub in_use: u64,
}

/// One block's use (`ipam show --blocks`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockUsage {
    pub cidr: String,
    pub pool: String,
    pub node: String,
    pub used: u32,
    pub free: u32,
}

/// The whole IPAM picture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub pools: Vec<PoolUsage>,
    pub blocks: Vec<BlockUsage>,
}

/// Every block record in the store: the ones that pass their checks, and
/// every CIDR a block key occupies (valid or not: a damaged record still
/// holds its key, so no claim may try it).
#[derive(Debug, Clone, Default)]
pub struct BlockListing {
    pub blocks: Vec<Versioned<Block>>,
    pub occupied: HashSet<IpNet>,
    /// The store's revision at the listing.
    pub revision: i64,
}

/// The routed network's state in one store. Every list it reads is
/// checked record by record ([`crate::checked`]): a record that fails is
/// skipped and reported in [`Cluster::damage`], never an error for the
/// whole read.
#[derive(Clone)]
pub struct Cluster {
    kv: Arc<dyn Kv>,
    layout: Layout,
    damage: Arc<Damage>,
    /// Prefixes no pool of this node's may overlap (its underlay subnets,
    /// the nodes' addresses): set by the agent.
    protected: Arc<RwLock<Vec<IpNet>>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("layout", &self.layout)
            .finish()
    }
}

impl Cluster {
    pub fn new(kv: Arc<dyn Kv>, layout: Layout) -> Cluster {
        Cluster {
            kv,
            layout,
            damage: Arc::default(),
            protected: Arc::default(),
        }
    }

    pub fn kv(&self) -> &Arc<dyn Kv> {
        &self.kv
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The records skipped because they failed a check.
    pub fn damage(&self) -> &Damage {
        &self.damage
    }

    /// Pools overlapping any of `nets` are refused from now on (the agent
    /// passes its underlay subnets and the nodes' addresses).
    pub fn set_protected(&self, nets: Vec<IpNet>) {
        *self.protected.write().unwrap_or_else(|p| p.into_inner()) = nets;
    }

    /// Every record under `prefix` that decodes and passes `check`; the
    /// others are reported and skipped. With the creation revisions.
    async fn checked_list<T: DeserializeOwned>(
        &self,
        prefix: &str,
        check: impl Fn(&str, &T) -> Result<(), String>,
    ) -> Result<Vec<(String, Versioned<T>, i64)>, IpamError> {
        let r = self.kv.range(prefix).await?;
        Ok(self.check_kvs(prefix, &r.kvs, check))
    }

    /// [`Cluster::checked_list`] over records already read.
    fn check_kvs<T: DeserializeOwned>(
        &self,
        prefix: &str,
        kvs: &[plexus_store::KeyValue],
        check: impl Fn(&str, &T) -> Result<(), String>,
    ) -> Vec<(String, Versioned<T>, i64)> {
        let mut out = Vec::new();
        let mut bad = HashSet::new();
        for kv in kvs {
            let checked = serde_json::from_slice::<T>(&kv.value)
                .map_err(|e| format!("does not parse: {e}"))
                .and_then(|v| check(&kv.key, &v).map(|()| v));
            match checked {
                Ok(value) => out.push((
                    kv.key.clone(),
                    Versioned {
                        value,
                        mod_revision: kv.mod_revision,
                    },
                    kv.create_revision,
                )),
                Err(why) => {
                    self.damage.report(&kv.key, &why);
                    bad.insert(kv.key.as_str());
                }
            }
        }
        // Reports of records deleted or fixed since are forgotten.
        self.damage.retain_under(prefix, &|k| bad.contains(k));
        out
    }

    // ---- pools ----

    /// The pools this node may use, by name: each valid and matching its
    /// key, none overlapping a protected prefix, and of overlapping pools
    /// only the one created first.
    pub async fn pools(&self) -> Result<Vec<Pool>, IpamError> {
        let layout = &self.layout;
        let listed = self
            .checked_list::<Pool>(&layout.pools(), |k, p| checked::pool(layout, k, p))
            .await?;
        let protected = self
            .protected
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let (ok, refused) = checked::usable_pools(
            listed
                .into_iter()
                .map(|(_, v, created)| (v.value, created))
                .collect(),
            &protected,
        );
        for (name, why) in refused {
            self.damage.report(&layout.pool(&name), &why);
        }
        Ok(ok)
    }

    pub async fn pool(&self, name: &str) -> Result<Option<Pool>, IpamError> {
        Ok(stored::get::<Pool>(&*self.kv, &self.layout.pool(name))
            .await?
            .map(|r| r.value))
    }

    /// The pool a request names, by name or by CIDR (as the agent protocol
    /// allows), or with `None` the default pools: the enabled ones, the
    /// first by name of each family.
    pub async fn resolve_pools(&self, wanted: Option<&str>) -> Result<Vec<Pool>, IpamError> {
        let pools = self.pools().await?;
        let Some(w) = wanted else {
            let v4 = pools
                .iter()
                .find(|p| !p.disabled && p.cidr.addr().is_ipv4());
            let v6 = pools
                .iter()
                .find(|p| !p.disabled && p.cidr.addr().is_ipv6());
            let out: Vec<Pool> = v4.into_iter().chain(v6).cloned().collect();
            if out.is_empty() {
                return Err(IpamError::NotFound(
                    "no enabled pool: add one with plexusctl pool add".into(),
                ));
            }
            return Ok(out);
        };
        let cidr: Option<ipnet::IpNet> = w.parse().ok();
        pools
            .into_iter()
            .find(|p| p.name == w || Some(p.cidr) == cidr)
            .map(|p| vec![p])
            .ok_or_else(|| IpamError::NotFound(format!("no pool named {w}")))
    }

    /// Add a pool: valid on its own, a new name, overlapping no other pool.
    pub async fn add_pool(&self, pool: &Pool) -> Result<(), IpamError> {
        validate::pool(pool)?;
        for other in self.pools().await? {
            if other.name == pool.name {
                return Err(IpamError::Conflict(format!(
                    "pool {} already exists ({})",
                    pool.name, other.cidr
                )));
            }
            if arith::overlaps(&other.cidr, &pool.cidr) {
                return Err(IpamError::Invalid(format!(
                    "{} overlaps pool {} ({})",
                    pool.cidr, other.name, other.cidr
                )));
            }
        }
        let key = self.layout.pool(&pool.name);
        let Some(rev) = self.kv.create(&key, &encode(pool), None).await? else {
            return Err(IpamError::Conflict(format!(
                "pool {} was created by someone else just now",
                pool.name
            )));
        };
        // Another add may have passed the same check meanwhile: the pool
        // created first stays, a later overlapping one is taken back.
        for kv in self.kv.range(&self.layout.pools()).await?.kvs {
            let Ok(other) = serde_json::from_slice::<Pool>(&kv.value) else {
                continue;
            };
            if kv.key != key && kv.create_revision < rev && arith::overlaps(&other.cidr, &pool.cidr)
            {
                self.kv.delete(&key, Some(rev)).await?;
                return Err(IpamError::Invalid(format!(
                    "{} overlaps pool {} ({}), added at the same time",
                    pool.cidr, other.name, other.cidr
                )));
            }
        }
        Ok(())
    }

    /// Read, change and write back one record, compare-and-swap on the
    /// revision read, up to [`CAS_ATTEMPTS`] times. `absent` is what to
    /// start from when the key holds nothing (or the error to return);
    /// `change` gets the stored value and the copy to edit, and checks it.
    /// `what` names the record in the error when it kept changing.
    async fn update_record<T: Serialize + DeserializeOwned + Clone>(
        &self,
        key: &str,
        what: &str,
        absent: impl Fn() -> Result<T, IpamError>,
        change: impl Fn(&T, &mut T) -> Result<(), IpamError>,
    ) -> Result<T, IpamError> {
        for _ in 0..CAS_ATTEMPTS {
            let (cur, rev) = match stored::get::<T>(&*self.kv, key).await? {
                Some(v) => (v.value, v.mod_revision),
                None => (absent()?, 0),
            };
            let mut next = cur.clone();
            change(&cur, &mut next)?;
            if self
                .kv
                .put(key, &encode(&next), None, Some(rev))
                .await?
                .is_some()
            {
                return Ok(next);
            }
        }
        Err(IpamError::Conflict(format!(
            "{what} kept changing under us; try again"
        )))
    }

    /// Change a pool's settings with `f` (compare-and-swap). Its name,
    /// CIDR and block size cannot change: blocks were cut by them.
    pub async fn update_pool(&self, name: &str, f: impl Fn(&mut Pool)) -> Result<Pool, IpamError> {
        let missing = || Err(IpamError::NotFound(format!("no pool named {name}")));
        self.update_record(
            &self.layout.pool(name),
            &format!("pool {name}"),
            missing,
            |cur, next: &mut Pool| {
                f(next);
                if (&next.name, next.cidr, next.block_size) != (&cur.name, cur.cidr, cur.block_size)
                {
                    return Err(IpamError::Invalid(format!(
                    "pool {name}: name, CIDR and block size cannot change (remove and add it again)"
                )));
                }
                validate::pool(next)
            },
        )
        .await
    }

    /// Remove a pool. Its blocks go with it; if any address is in use the
    /// removal is refused unless `force`.
    pub async fn remove_pool(&self, name: &str, force: bool) -> Result<Freed, IpamError> {
        let key = self.layout.pool(name);
        if self.kv.get(&key).await?.is_none() {
            return Err(IpamError::NotFound(format!("no pool named {name}")));
        }
        let blocks: Vec<Versioned<Block>> = self
            .blocks()
            .await?
            .into_iter()
            .filter(|b| b.value.pool == name)
            .collect();
        let in_use: usize = blocks.iter().map(|b| b.value.allocations.len()).sum();
        if in_use > 0 && !force {
            return Err(IpamError::InUse(format!(
                "pool {name} has {in_use} address(es) in use in {} block(s); release them first or use --force",
                blocks.len()
            )));
        }
        // The pool first: no node claims a new block of it after this.
        self.kv.delete(&key, None).await?;
        let mut freed = Freed::default();
        for b in blocks {
            freed.add(self.delete_block(&b.value, |_| true).await?);
        }
        Ok(freed)
    }

    // ---- BGP ----

    /// The BGP settings; the defaults when none were set.
    /// A damaged record is an error here (and reported): falling back to
    /// the defaults would change every session's AS.
    pub async fn bgp_config(&self) -> Result<BgpConfig, IpamError> {
        let key = self.layout.bgp_config();
        let got = stored::get::<BgpConfig>(&*self.kv, &key)
            .await
            .and_then(|r| match r {
                Some(v) => match validate::bgp_config(&v.value) {
                    Ok(()) => Ok(Some(v)),
                    Err(e) => Err(IpamError::Corrupt {
                        key: key.clone(),
                        error: e.to_string(),
                    }),
                },
                None => Ok(None),
            });
        match got {
            Ok(r) => {
                self.damage.clear(&key);
                Ok(r.map(|r| r.value).unwrap_or_default())
            }
            Err(IpamError::Corrupt { key, error }) => {
                self.damage.report(&key, &error);
                Err(IpamError::Corrupt { key, error })
            }
            Err(e) => Err(e),
        }
    }

    pub async fn set_bgp_config(&self, cfg: &BgpConfig) -> Result<(), IpamError> {
        validate::bgp_config(cfg)?;
        self.kv
            .put(&self.layout.bgp_config(), &encode(cfg), None, None)
            .await?;
        Ok(())
    }

    /// Change the BGP settings with `f` (compare-and-swap), starting from
    /// the defaults when none were set.
    pub async fn update_bgp_config(
        &self,
        f: impl Fn(&mut BgpConfig) -> Result<(), IpamError>,
    ) -> Result<BgpConfig, IpamError> {
        let defaults = || Ok(BgpConfig::default());
        self.update_record(
            &self.layout.bgp_config(),
            "the BGP settings",
            defaults,
            |_, cfg| {
                f(cfg)?;
                validate::bgp_config(cfg)
            },
        )
        .await
    }

    /// Change one peer's settings with `f` (compare-and-swap); its address
    /// cannot change.
    pub async fn update_peer(
        &self,
        address: &IpAddr,
        f: impl Fn(&mut Peer) -> Result<(), IpamError>,
    ) -> Result<Peer, IpamError> {
        let missing = || Err(IpamError::NotFound(format!("no peer {address}")));
        self.update_record(
            &self.layout.peer(address),
            &format!("peer {address}"),
            missing,
            |_, next: &mut Peer| {
                f(next)?;
                next.address = *address;
                check_peer(next)
            },
        )
        .await
    }

    // ---- BGP filters ----

    /// The filters that pass their checks, by name.
    pub async fn filters(
        &self,
    ) -> Result<std::collections::BTreeMap<String, plexus_bgp::BgpFilter>, IpamError> {
        let layout = &self.layout;
        Ok(self
            .checked_list::<plexus_bgp::BgpFilter>(&layout.filters(), |k, f| {
                checked::filter(layout, k, f)
            })
            .await?
            .into_iter()
            .map(|(_, r, _)| (r.value.name.clone(), r.value))
            .collect())
    }

    /// Create or replace a filter.
    pub async fn set_filter(&self, f: &plexus_bgp::BgpFilter) -> Result<(), IpamError> {
        validate::filter(f)?;
        self.kv
            .put(&self.layout.filter(&f.name), &encode(f), None, None)
            .await?;
        Ok(())
    }

    /// Remove a filter; refused while a peer or the mesh names it.
    pub async fn remove_filter(&self, name: &str) -> Result<(), IpamError> {
        let users: Vec<String> = self
            .peers()
            .await?
            .iter()
            .filter(|p| p.settings.filters.iter().any(|f| f == name))
            .map(|p| p.address.to_string())
            .chain(
                self.bgp_config()
                    .await?
                    .mesh
                    .filters
                    .iter()
                    .any(|f| f == name)
                    .then(|| "the mesh".to_string()),
            )
            .collect();
        if !users.is_empty() {
            return Err(IpamError::InUse(format!(
                "filter {name} is used by {}: take it off them first",
                users.join(", ")
            )));
        }
        if self.kv.delete(&self.layout.filter(name), None).await? {
            Ok(())
        } else {
            Err(IpamError::NotFound(format!("no filter named {name}")))
        }
    }

    pub async fn peers(&self) -> Result<Vec<Peer>, IpamError> {
        let layout = &self.layout;
        Ok(self
            .checked_list::<Peer>(&layout.peers(), |k, p| checked::peer(layout, k, p))
            .await?
            .into_iter()
            .map(|(_, r, _)| r.value)
            .collect())
    }

    /// Add a peer; an address already configured is refused (remove it first).
    pub async fn add_peer(&self, peer: &Peer) -> Result<(), IpamError> {
        check_peer(peer)?;
        match self
            .kv
            .create(&self.layout.peer(&peer.address), &encode(peer), None)
            .await?
        {
            Some(_) => Ok(()),
            None => Err(IpamError::Conflict(format!(
                "peer {} already exists: remove it first to change it",
                peer.address
            ))),
        }
    }

    pub async fn remove_peer(&self, address: &IpAddr) -> Result<(), IpamError> {
        if self.kv.delete(&self.layout.peer(address), None).await? {
            Ok(())
        } else {
            Err(IpamError::NotFound(format!("no peer {address}")))
        }
    }

    // ---- nodes ----

    pub async fn nodes(&self) -> Result<Vec<NodeSettings>, IpamError> {
        let layout = &self.layout;
        Ok(self
            .checked_list::<NodeSettings>(&layout.nodes(), |k, n| checked::node(layout, k, n))
            .await?
            .into_iter()
            .map(|(_, r, _)| r.value)
            .collect())
    }

    pub async fn node(&self, name: &str) -> Result<Option<NodeSettings>, IpamError> {
        Ok(stored::get(&*self.kv, &self.layout.node(name))
            .await?
            .map(|r| r.value))
    }

    /// Change one node's settings with `f` (a compare-and-swap: the agent
    /// may write the same record), creating it when absent.
    pub async fn update_node(
        &self,
        name: &str,
        f: impl Fn(&mut NodeSettings),
    ) -> Result<NodeSettings, IpamError> {
        validate::name("node", name)?;
        let fresh = || {
            Ok(NodeSettings {
                name: name.into(),
                ..Default::default()
            })
        };
        self.update_record(
            &self.layout.node(name),
            &format!("node {name}"),
            fresh,
            |_, node| {
                f(node);
                Ok(())
            },
        )
        .await
    }

    /// A node leaves: its blocks (and every address in them) are freed and
    /// its settings deleted. Not an error when nothing was there.
    pub async fn remove_node(&self, name: &str) -> Result<Freed, IpamError> {
        validate::name("node", name)?;
        let mut freed = Freed::default();
        for b in self.blocks_of(name).await? {
            let node = name.to_string();
            freed.add(self.delete_block(&b, move |cur| cur.node == node).await?);
        }
        self.kv.delete(&self.layout.node(name), None).await?;
        Ok(freed)
    }

    // ---- blocks ----

    /// Every block in the store that passes its checks (against the
    /// usable pools), with its revision.
    pub async fn blocks(&self) -> Result<Vec<Versioned<Block>>, IpamError> {
        Ok(self.block_listing().await?.blocks)
    }

    /// The valid blocks, and every CIDR a block key occupies.
    pub async fn block_listing(&self) -> Result<BlockListing, IpamError> {
        let pools = self.pools().await?;
        let layout = &self.layout;
        let prefix = layout.blocks();
        let r = self.kv.range(&prefix).await?;
        let occupied: HashSet<IpNet> = r
            .kvs
            .iter()
            .filter_map(|kv| kv.key.strip_prefix(&prefix).and_then(cidr_of_key))
            .collect();
        let blocks = self
            .check_kvs::<Block>(&prefix, &r.kvs, |k, b| checked::block(layout, k, b, &pools))
            .into_iter()
            .map(|(_, r, _)| r)
            .collect();
        Ok(BlockListing {
            blocks,
            occupied,
            revision: r.revision,
        })
    }

    /// The blocks `node` holds (the agent installs a blackhole route for
    /// each and announces them).
    pub async fn blocks_of(&self, node: &str) -> Result<Vec<Block>, IpamError> {
        Ok(self
            .blocks()
            .await?
            .into_iter()
            .map(|b| b.value)
            .filter(|b| b.node == node)
            .collect())
    }

    /// Delete `block`'s key while `still(current)` holds, retrying when the
    /// owner changed it in between (an allocation landing meanwhile is
    /// freed with it).
    async fn delete_block(
        &self,
        block: &Block,
        still: impl Fn(&Block) -> bool,
    ) -> Result<Freed, IpamError> {
        let key = self.layout.block(&block.cidr);
        for _ in 0..CAS_ATTEMPTS {
            let Some(cur) = stored::get::<Block>(&*self.kv, &key).await? else {
                return Ok(Freed::default());
            };
            if !still(&cur.value) {
                return Ok(Freed::default());
            }
            if self.kv.delete(&key, Some(cur.mod_revision)).await? {
                return Ok(Freed {
                    blocks: 1,
                    addresses: cur.value.allocations.len(),
                });
            }
        }
        Err(IpamError::Conflict(format!(
            "block {} kept changing under us; try again",
            block.cidr
        )))
    }

    /// Pools and blocks with their use.
    pub async fn usage(&self) -> Result<Usage, IpamError> {
        let pools = self.pools().await?;
        let mut blocks: Vec<Block> = self.blocks().await?.into_iter().map(|b| b.value).collect();
        blocks.sort_by(|a, b| {
            (a.cidr.network(), a.cidr.prefix_len()).cmp(&(b.cidr.network(), b.cidr.prefix_len()))
        });
        let pool_rows = pools
            .iter()
            .map(|p| {
                let mine = blocks.iter().filter(|b| b.pool == p.name);
                PoolUsage {
                    pool: p.name.clone(),
                    cidr: p.cidr.to_string(),
                    size: p.size().to_string(),
                    blocks: mine.clone().count(),
                    in_use: mine.map(|b| u64::from(b.used())).sum(),
                }
            })
            .collect();
        let block_rows = blocks
            .iter()
            .map(|b| BlockUsage {
                cidr: b.cidr.to_string(),
                pool: if pools.iter().any(|p| p.name == b.pool) {
                    b.pool.clone()
                } else {
                    format!("{} (removed)", b.pool)
                },
                node: b.node.clone(),
                used: b.used(),
                free: b.free(),
            })
            .collect();
        Ok(Usage {
            pools: pool_rows,
            blocks: block_rows,
        })
    }
}

/// A peer record as plexusctl may write it.
fn check_peer(peer: &Peer) -> Result<(), IpamError> {
    if peer.asn == 0 {
        return Err(IpamError::Invalid("AS number 0 is reserved".into()));
    }
    if let Some(n) = &peer.node {
        validate::name("node", n)?;
    }
    validate::peer_settings(&peer.settings)
}

/// The CIDR a block key segment names (`10.96.0.64-26`), if it names one.
fn cidr_of_key(seg: &str) -> Option<IpNet> {
    let (addr, len) = seg.rsplit_once('-')?;
    format!("{addr}/{len}").parse().ok()
}

impl Freed {
    fn add(&mut self, o: Freed) {
        self.blocks += o.blocks;
        self.addresses += o.addresses;
    }
}
