//! The data plane's I/O: [`Kernel`] lists what the kernel holds of ours
//! and applies ordered changes; [`NetlinkKernel`] does it over netlink in
//! one namespace (neighbours, FDB entries and routes in batches: 64 KiB
//! datagrams, one ACK per datagram), the unit tests with
//! [`super::fake::FakeKernel`].

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context;
use plexus_netlink::nft::{self, Family};
use plexus_netlink::route::{NextHop, RouteFilter, RouteKind, TABLE_MAIN};
use plexus_netlink::{
    AddrOptions, AddrScope, BatchSocket, Fdb, Ipip, Netlink, Netns, RtBatch, Vxlan as NlVxlan,
};

use super::claims::Claims;
use super::diff::Op;
use super::entry::{Chain, Entry, Hop, Kind, Link, Route, Table, Vxlan, NFT_TABLE};

/// Why one change was not made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub why: String,
    /// An object that is not ours holds the place; nothing was touched.
    pub not_ours: bool,
}

impl Failure {
    pub fn new(why: impl std::fmt::Display) -> Failure {
        Failure {
            why: why.to_string(),
            not_ours: false,
        }
    }
}

/// The kernel as the reconciler uses it.
#[async_trait::async_trait]
pub trait Kernel: Send {
    /// What the kernel holds of ours, of `kinds`.
    async fn list(&mut self, kinds: &[Kind], claims: &Claims) -> anyhow::Result<Vec<Entry>>;
    /// Applies `ops` in order; one outcome per op. Deleting what is gone
    /// already is a success.
    async fn apply(&mut self, ops: &[Op]) -> Vec<Result<(), Failure>>;
}

/// The rule handles of each chain of a table, by chain name.
type Handles = Vec<(String, Vec<u64>)>;

/// What a chain or table looked like right after we wrote it: its rule
/// handles. A listing that finds other handles (a rule deleted, added or
/// replaced by hand) reads as changed, so the diff writes it again.
#[derive(Debug, Clone)]
struct Written<T> {
    entry: T,
    handles: Handles,
}

/// [`Kernel`] over netlink in one namespace (the agent's own in
/// production; a test's otherwise).
pub struct NetlinkKernel {
    ns: Netns,
    nl: Netlink,
    batch: BatchSocket,
    /// Device indexes by name (refreshed on a miss and at each listing).
    index: HashMap<String, u32>,
    names: HashMap<u32, String>,
    chains: BTreeMap<String, Written<Chain>>,
    tables: BTreeMap<(PathBuf, String), Written<Table>>,
}

impl std::fmt::Debug for NetlinkKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetlinkKernel")
            .field("netns", &self.ns.path())
            .finish_non_exhaustive()
    }
}

impl NetlinkKernel {
    pub async fn open(ns: Netns) -> anyhow::Result<NetlinkKernel> {
        let nl = Netlink::open(&ns).await.context("open netlink")?;
        let batch = BatchSocket::open(&ns)
            .await
            .context("open a netlink batch socket")?;
        Ok(NetlinkKernel {
            ns,
            nl,
            batch,
            index: HashMap::new(),
            names: HashMap::new(),
            chains: BTreeMap::new(),
            tables: BTreeMap::new(),
        })
    }

    pub fn netns(&self) -> &Netns {
        &self.ns
    }

    async fn refresh_links(&mut self) -> anyhow::Result<Vec<plexus_netlink::Link>> {
        let links = self.nl.links().await.context("list links")?;
        self.index = links.iter().map(|l| (l.name.clone(), l.index)).collect();
        self.names = links.iter().map(|l| (l.index, l.name.clone())).collect();
        Ok(links)
    }

    async fn index_of(&mut self, name: &str) -> anyhow::Result<u32> {
        if let Some(i) = self.index.get(name) {
            return Ok(*i);
        }
        self.refresh_links().await?;
        self.index
            .get(name)
            .copied()
            .with_context(|| format!("no device {name}"))
    }

    fn name_of(&self, index: Option<u32>) -> Option<String> {
        index.and_then(|i| self.names.get(&i).cloned())
    }

    async fn list_chains(&mut self, claims: &Claims) -> anyhow::Result<Vec<Entry>> {
        let chains = self.chains.clone();
        let claimed = claims.chains.clone();
        let found = self
            .ns
            .run_async(move || -> plexus_netlink::Result<Handles> {
                let sock = match nft::Socket::open() {
                    Ok(s) => s,
                    Err(e) if e.is_not_supported() => return Ok(Vec::new()),
                    Err(e) => return Err(e),
                };
                let mut out = Vec::new();
                for c in nft::list_chains(&sock, Family::Inet, NFT_TABLE)? {
                    if !claimed.contains(&c.name) {
                        continue;
                    }
                    let handles = nft::list_rules(&sock, Family::Inet, NFT_TABLE, &c.name)?;
                    out.push((c.name, handles));
                }
                Ok(out)
            })
            .await??;
        Ok(found
            .into_iter()
            .map(|(name, handles)| match chains.get(&name) {
                Some(w) if w.handles == [(name.clone(), handles.clone())] => {
                    Entry::Chain(w.entry.clone())
                }
                // A previous run's, or changed by hand: what it holds is
                // unknown, so it differs from anything wanted.
                _ => Entry::Chain(Chain {
                    name,
                    base: None,
                    comment: format!("unknown ({} rules)", handles.len()),
                    rules: Vec::new(),
                }),
            })
            .collect())
    }

    async fn list_tables(&mut self, claims: &Claims) -> Vec<Entry> {
        let mut out = Vec::new();
        for (netns, name) in &claims.tables {
            let Ok(ns) = Netns::open(netns) else {
                // The pod's namespace is gone: so is its table.
                continue;
            };
            let table = name.clone();
            let got = ns
                .run_async(move || -> plexus_netlink::Result<Option<Handles>> {
                    let sock = nft::Socket::open()?;
                    if !nft::list_tables(&sock, Family::Inet)?.contains(&table) {
                        return Ok(None);
                    }
                    let mut chains = Vec::new();
                    for c in nft::list_chains(&sock, Family::Inet, &table)? {
                        let h = nft::list_rules(&sock, Family::Inet, &table, &c.name)?;
                        chains.push((c.name, h));
                    }
                    chains.sort();
                    Ok(Some(chains))
                })
                .await;
            let Ok(Ok(Some(handles))) = got else {
                continue;
            };
            let key = (netns.clone(), name.clone());
            let entry = match self.tables.get(&key) {
                Some(w) if w.handles == handles => w.entry.clone(),
                _ => Table {
                    netns: netns.clone(),
                    name: name.clone(),
                    batch: Default::default(),
                    fingerprint: 0,
                },
            };
            out.push(Entry::Table(entry));
        }
        out
    }

    async fn list_routes(&mut self, claims: &Claims) -> anyhow::Result<Vec<Entry>> {
        let routes = self
            .nl
            .routes(RouteFilter::default().table(TABLE_MAIN))
            .await
            .context("list routes")?;
        let mut out = Vec::new();
        for r in routes {
            let metric = r.metric.unwrap_or(0);
            let dev = self.name_of(r.oif);
            let gw = r
                .gateway
                .or_else(|| r.multipath.first().and_then(|h| h.gateway));
            if !claims.owns_route(&r.dst, r.protocol, metric, gw, dev.as_deref()) {
                continue;
            }
            let hops = if r.kind == RouteKind::Blackhole {
                Vec::new()
            } else if r.multipath.is_empty() {
                vec![Hop {
                    gateway: r.gateway,
                    dev,
                    onlink: r.onlink,
                }]
            } else {
                r.multipath
                    .iter()
                    .map(|h| Hop {
                        gateway: h.gateway,
                        dev: self.name_of(h.oif),
                        onlink: h.onlink,
                    })
                    .collect()
            };
            out.push(Entry::Route(Route {
                table: r.table,
                dst: r.dst,
                metric,
                proto: r.protocol,
                blackhole: r.kind == RouteKind::Blackhole,
                hops,
            }));
        }
        Ok(out)
    }

    /// The netlink route for `r`, device names resolved.
    async fn nl_route(&mut self, r: &Route) -> anyhow::Result<plexus_netlink::Route> {
        let mut nr = plexus_netlink::Route::new(r.dst)
            .table(r.table)
            .metric(r.metric);
        if let Some(p) = r.proto {
            nr = nr.protocol(p);
        }
        if r.blackhole {
            return Ok(nr.kind(RouteKind::Blackhole));
        }
        match r.hops.as_slice() {
            [] => {}
            [h] => {
                if let Some(gw) = h.gateway {
                    nr = nr.via(gw);
                }
                if let Some(d) = &h.dev {
                    nr = nr.dev(self.index_of(d).await?);
                }
                if h.onlink {
                    nr = nr.onlink();
                }
            }
            many => {
                let mut hops = Vec::new();
                for h in many {
                    let mut nh = NextHop::via(h.gateway.unwrap_or(IpAddr::from([0, 0, 0, 0])));
                    if let Some(d) = &h.dev {
                        nh = nh.dev(self.index_of(d).await?);
                    }
                    if h.onlink {
                        nh = nh.onlink();
                    }
                    hops.push(nh);
                }
                nr = nr.multipath(hops);
            }
        }
        Ok(nr)
    }

    /// The route a delete names: exactly ours (destination, table, metric,
    /// and our protocol where we set one).
    fn nl_route_del(r: &Route) -> plexus_netlink::Route {
        let mut nr = plexus_netlink::Route::new(r.dst)
            .table(r.table)
            .metric(r.metric);
        if let Some(p) = r.proto {
            nr = nr.protocol(p);
        }
        if r.blackhole {
            nr = nr.kind(RouteKind::Blackhole);
        } else if let Some(gw) = r.hops.first().and_then(|h| h.gateway) {
            nr = nr.via(gw);
        }
        nr
    }

    async fn put_link(&mut self, l: &Link) -> anyhow::Result<()> {
        match l {
            Link::Vxlan(v) => self.put_vxlan(v).await,
            Link::Ipip { name, mtu, up } => {
                let link = self
                    .nl
                    .ensure_ipip(&Ipip::new(name).mtu(*mtu))
                    .await
                    .with_context(|| format!("the IP-in-IP device {name} (kernel module ipip)"))?;
                if link.mtu != *mtu {
                    self.nl.set_mtu(link.index, *mtu).await?;
                }
                self.nl.set_link_up(link.index, *up).await?;
                self.index.insert(name.clone(), link.index);
                self.names.insert(link.index, name.clone());
                Ok(())
            }
        }
    }

    async fn put_vxlan(&mut self, v: &Vxlan) -> anyhow::Result<()> {
        let underlay = self.index_of(&v.underlay).await?;
        let existing = self.nl.link_by_name(&v.name).await?;
        let fits = |l: &plexus_netlink::Link| {
            l.kind.as_deref() == Some("vxlan")
                && l.vxlan.as_ref().is_some_and(|x| {
                    x.vni == v.vni
                        && x.local == Some(v.local)
                        && x.port == Some(v.port)
                        && x.learning == v.learning
                })
        };
        let link = match existing {
            Some(l) if fits(&l) => l,
            Some(l) => {
                anyhow::ensure!(
                    l.kind.as_deref() == Some("vxlan"),
                    "{} exists and is not a VXLAN device",
                    v.name
                );
                tracing::warn!(device = %v.name, "the VXLAN device does not match the config; recreating it");
                self.nl.delete_link(l.index).await?;
                self.create_vxlan(v, underlay).await?
            }
            None => self.create_vxlan(v, underlay).await?,
        };
        if link.mtu != v.mtu {
            self.nl.set_mtu(link.index, v.mtu).await?;
        }
        if link.mac != Some(v.mac) {
            self.nl.set_mac(link.index, v.mac).await?;
        }
        self.nl.set_link_up(link.index, true).await?;
        self.index.insert(v.name.clone(), link.index);
        self.names.insert(link.index, v.name.clone());
        Ok(())
    }

    async fn create_vxlan(
        &mut self,
        v: &Vxlan,
        underlay: u32,
    ) -> anyhow::Result<plexus_netlink::Link> {
        let x = NlVxlan::new(&v.name, v.vni)
            .local(v.local)
            .port(v.port)
            .underlay(underlay)
            .learning(v.learning)
            .mtu(v.mtu)
            .mac(v.mac);
        let l = self
            .nl
            .create_vxlan(&x)
            .await
            .with_context(|| format!("create VXLAN device {}", v.name))?;
        tracing::info!(device = %v.name, vni = v.vni, mac = %v.mac, "created VXLAN device");
        Ok(l)
    }

    async fn put_chain(&mut self, c: &Chain) -> anyhow::Result<()> {
        let c2 = c.clone();
        let handles = self
            .ns
            .run_async(move || -> plexus_netlink::Result<Vec<u64>> {
                let sock = nft::Socket::open()?;
                let mut b = nft::Batch::new();
                b.add_table(Family::Inet, NFT_TABLE).add_chain(
                    Family::Inet,
                    NFT_TABLE,
                    &c2.name,
                    c2.base.as_ref(),
                    Some(&c2.comment),
                );
                b.flush_chain(Family::Inet, NFT_TABLE, &c2.name);
                for r in &c2.rules {
                    b.add_rule(Family::Inet, NFT_TABLE, &c2.name, r, Some(&c2.comment));
                }
                b.commit(&sock)?;
                nft::list_rules(&sock, Family::Inet, NFT_TABLE, &c2.name)
            })
            .await??;
        self.chains.insert(
            c.name.clone(),
            Written {
                entry: c.clone(),
                handles: vec![(c.name.clone(), handles)],
            },
        );
        Ok(())
    }

    async fn del_chain(&mut self, name: &str) -> anyhow::Result<()> {
        self.chains.remove(name);
        let n = name.to_string();
        self.ns
            .run_async(move || -> plexus_netlink::Result<()> {
                let sock = nft::Socket::open()?;
                let exists = nft::list_chains(&sock, Family::Inet, NFT_TABLE)?
                    .iter()
                    .any(|c| c.name == n);
                if exists {
                    let mut b = nft::Batch::new();
                    b.flush_chain(Family::Inet, NFT_TABLE, &n).delete_chain(
                        Family::Inet,
                        NFT_TABLE,
                        &n,
                    );
                    b.commit(&sock)?;
                }
                Ok(())
            })
            .await??;
        Ok(())
    }

    async fn put_table(&mut self, t: &Table) -> anyhow::Result<()> {
        let ns = Netns::open(&t.netns)
            .with_context(|| format!("open the namespace {}", t.netns.display()))?;
        let (batch, name) = (t.batch.clone(), t.name.clone());
        let handles = ns
            .run_async(move || -> plexus_netlink::Result<Handles> {
                let sock = nft::Socket::open()?;
                batch.commit(&sock)?;
                let mut chains = Vec::new();
                for c in nft::list_chains(&sock, Family::Inet, &name)? {
                    let h = nft::list_rules(&sock, Family::Inet, &name, &c.name)?;
                    chains.push((c.name, h));
                }
                chains.sort();
                Ok(chains)
            })
            .await??;
        self.tables.insert(
            (t.netns.clone(), t.name.clone()),
            Written {
                entry: t.clone(),
                handles,
            },
        );
        Ok(())
    }

    async fn del_table(&mut self, t: &Table) -> anyhow::Result<()> {
        self.tables.remove(&(t.netns.clone(), t.name.clone()));
        let Ok(ns) = Netns::open(&t.netns) else {
            return Ok(());
        };
        let name = t.name.clone();
        ns.run_async(move || -> plexus_netlink::Result<()> {
            let sock = nft::Socket::open()?;
            if nft::list_tables(&sock, Family::Inet)?.contains(&name) {
                let mut b = nft::Batch::new();
                b.delete_table(Family::Inet, &name);
                b.commit(&sock)?;
            }
            Ok(())
        })
        .await??;
        Ok(())
    }

    /// One op that is not batched (links, addresses, nftables).
    async fn single(&mut self, op: &Op) -> Result<(), Failure> {
        let r: anyhow::Result<()> = match op {
            Op::Put {
                entry: Entry::Link(l),
                ..
            } => self.put_link(l).await,
            Op::Del(Entry::Link(_)) => Ok(()),
            Op::Put {
                entry: Entry::Addr { dev, net },
                ..
            } => match self.index_of(dev).await {
                Ok(i) => {
                    let opts = AddrOptions {
                        replace: true,
                        nodad: true,
                        ..AddrOptions::default()
                    };
                    self.nl
                        .addr_add_with(i, *net, opts)
                        .await
                        .map_err(Into::into)
                }
                Err(e) => Err(e),
            },
            Op::Del(Entry::Addr { dev, net }) => match self.index_of(dev).await {
                Ok(i) => match self.nl.addr_del(i, *net).await {
                    Err(e) if !e.is_not_found() => Err(e.into()),
                    _ => Ok(()),
                },
                Err(_) => Ok(()),
            },
            Op::Put {
                entry: Entry::Chain(c),
                ..
            } => self.put_chain(c).await,
            Op::Del(Entry::Chain(c)) => self.del_chain(&c.name).await,
            Op::Put {
                entry: Entry::Table(t),
                ..
            } => self.put_table(t).await,
            Op::Del(Entry::Table(t)) => self.del_table(t).await,
            _ => unreachable!("batched ops are not single"),
        };
        r.map_err(|e| Failure::new(format!("{e:#}")))
    }

    /// Neighbours, FDB entries and routes in one batch.
    async fn batched(&mut self, ops: &[&Op]) -> Vec<Result<(), Failure>> {
        let mut out: Vec<Result<(), Failure>> = vec![Ok(()); ops.len()];
        let mut b = RtBatch::new();
        // Which op each batch message is.
        let mut pos = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            let queued: anyhow::Result<()> = async {
                match op {
                    Op::Put {
                        entry: Entry::Neigh { dev, ip, mac },
                        ..
                    } => {
                        let d = self.index_of(dev).await?;
                        b.neigh_replace(d, *ip, *mac);
                    }
                    Op::Del(Entry::Neigh { dev, ip, .. }) => {
                        let d = self.index_of(dev).await?;
                        b.neigh_del(d, *ip);
                    }
                    Op::Put {
                        entry: Entry::Fdb { dev, mac, dst },
                        ..
                    } => {
                        let d = self.index_of(dev).await?;
                        b.fdb_replace(&Fdb::new(d, *mac).dst(*dst));
                    }
                    Op::Del(Entry::Fdb { dev, mac, dst }) => {
                        let d = self.index_of(dev).await?;
                        b.fdb_del(&Fdb::new(d, *mac).dst(*dst));
                    }
                    Op::Put {
                        entry: Entry::Route(r),
                        replace,
                    } => {
                        let nr = self.nl_route(r).await?;
                        if *replace {
                            b.route_replace(&nr);
                        } else {
                            b.route_add(&nr);
                        }
                    }
                    Op::Del(Entry::Route(r)) => {
                        b.route_del(&Self::nl_route_del(r));
                    }
                    _ => unreachable!("only neighbours, FDB entries and routes are batched"),
                }
                Ok(())
            }
            .await;
            match queued {
                Ok(()) => pos.push(i),
                // A device missing: for a delete, its entries are gone.
                Err(e) if matches!(op, Op::Del(_)) => {
                    tracing::debug!(error = %format!("{e:#}"), "delete of an entry on a gone device");
                }
                Err(e) => out[i] = Err(Failure::new(format!("{e:#}"))),
            }
        }
        if b.is_empty() {
            return out;
        }
        let report = match self.batch.apply(&b).await {
            Ok(r) => r,
            Err(e) => {
                for i in &pos {
                    out[*i] = Err(Failure::new(format!("netlink batch: {e}")));
                }
                return out;
            }
        };
        for (j, e) in report.failed {
            let i = pos[j];
            let op = ops[i];
            let gone = matches!(op, Op::Del(_)) && e.is_not_found();
            if gone {
                continue;
            }
            let not_ours = matches!(
                op,
                Op::Put {
                    replace: false,
                    entry: Entry::Route(_)
                }
            ) && e.is_exists();
            out[i] = Err(Failure {
                why: e.to_string(),
                not_ours,
            });
        }
        out
    }
}

fn batched_kind(op: &Op) -> bool {
    matches!(op.key().kind(), Kind::Neigh | Kind::Fdb | Kind::Route)
}

#[async_trait::async_trait]
impl Kernel for NetlinkKernel {
    async fn list(&mut self, kinds: &[Kind], claims: &Claims) -> anyhow::Result<Vec<Entry>> {
        let links = self.refresh_links().await?;
        let ours: HashMap<u32, &plexus_netlink::Link> = links
            .iter()
            .filter(|l| claims.links.contains(&l.name))
            .map(|l| (l.index, l))
            .collect();
        let mut out = Vec::new();
        for kind in kinds {
            match kind {
                Kind::Link => {
                    for l in ours.values() {
                        let entry = match (&l.kind, &l.vxlan) {
                            (Some(k), Some(x)) if k == "vxlan" => Link::Vxlan(Vxlan {
                                name: l.name.clone(),
                                vni: x.vni,
                                port: x.port.unwrap_or(0),
                                local: x.local.unwrap_or(IpAddr::from([0, 0, 0, 0])),
                                underlay: self.name_of(x.underlay).unwrap_or_default(),
                                learning: x.learning,
                                mtu: l.mtu,
                                mac: l.mac.unwrap_or_default(),
                            }),
                            _ => Link::Ipip {
                                name: l.name.clone(),
                                mtu: l.mtu,
                                up: l.admin_up,
                            },
                        };
                        out.push(Entry::Link(entry));
                    }
                }
                Kind::Addr => {
                    for a in self.nl.addrs(None).await.context("list addresses")? {
                        let Some(l) = ours.get(&a.index) else {
                            continue;
                        };
                        if a.scope == AddrScope::Link {
                            continue;
                        }
                        out.push(Entry::Addr {
                            dev: l.name.clone(),
                            net: a.net,
                        });
                    }
                }
                Kind::Neigh => {
                    for n in self.nl.neighbours(None).await.context("list neighbours")? {
                        let (Some(l), true, Some(mac)) = (ours.get(&n.index), n.permanent, n.mac)
                        else {
                            continue;
                        };
                        out.push(Entry::Neigh {
                            dev: l.name.clone(),
                            ip: n.ip,
                            mac,
                        });
                    }
                }
                Kind::Fdb => {
                    for f in self.nl.fdb_list(None).await.context("list FDB entries")? {
                        let (Some(l), false, Some(dst)) = (ours.get(&f.index), f.master, f.dst)
                        else {
                            continue;
                        };
                        out.push(Entry::Fdb {
                            dev: l.name.clone(),
                            mac: f.mac,
                            dst,
                        });
                    }
                }
                Kind::Route => out.extend(self.list_routes(claims).await?),
                Kind::Nft => {
                    out.extend(self.list_chains(claims).await?);
                    out.extend(self.list_tables(claims).await);
                }
            }
        }
        Ok(out)
    }

    async fn apply(&mut self, ops: &[Op]) -> Vec<Result<(), Failure>> {
        let mut out: Vec<Result<(), Failure>> = Vec::with_capacity(ops.len());
        let mut i = 0;
        while i < ops.len() {
            if batched_kind(&ops[i]) {
                let mut j = i;
                while j < ops.len() && batched_kind(&ops[j]) {
                    j += 1;
                }
                let run: Vec<&Op> = ops[i..j].iter().collect();
                out.extend(self.batched(&run).await);
                i = j;
            } else {
                out.push(self.single(&ops[i]).await);
                i += 1;
            }
        }
        out
    }
}
