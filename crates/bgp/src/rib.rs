//! The RIB: Adj-RIB-In per peer, the Loc-RIB chosen by the decision process,
//! and Adj-RIB-Out per established peer after the export rules (iBGP split
//! horizon, route reflection, eBGP next-hop-self and AS_PATH prepend, the
//! peer's export filters and communities).
//!
//! The Adj-RIB-In keeps every path as received, before policy (soft
//! reconfiguration inbound), with its [`Verdict`]: a new [`Guard`] or new
//! filters judge every stored path again and the resulting best-route
//! changes come out at once, without asking peers to send their routes
//! again. Only accepted paths take part in the decision process.
//!
//! Every change returns a [`RibOutput`]: the best-route changes for the
//! routing component and the announcements/withdrawals per peer, already
//! diffed against what each peer was sent.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ipnet::IpNet;

use crate::attrs::{CommunitySet, PathAttrs};
use crate::codec::{Afi, ParsedUpdate};
use crate::decision::{self, Candidate, DEFAULT_LOCAL_PREF};
use crate::policy::filter::{self, Direction};
use crate::policy::{BgpFilter, Guard, Reason, Stage, Verdict};

/// The speaker-wide settings the RIB needs.
#[derive(Debug, Clone, Copy)]
pub struct RibConfig {
    pub router_id: Ipv4Addr,
    /// Route reflector CLUSTER_ID (RFC 4456); defaults to the router ID.
    pub cluster_id: Option<Ipv4Addr>,
    /// Most paths a best route is installed over (ECMP): paths equal up to
    /// the router-ID / peer-address tie breakers. 1: the best path only.
    pub max_paths: usize,
}

impl RibConfig {
    /// One path per prefix, the router ID as CLUSTER_ID.
    pub fn new(router_id: Ipv4Addr) -> RibConfig {
        RibConfig {
            router_id,
            cluster_id: None,
            max_paths: 1,
        }
    }
}

/// An established peer, as the RIB needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    pub addr: IpAddr,
    pub remote_as: u32,
    pub local_as: u32,
    pub router_id: Ipv4Addr,
    pub rr_client: bool,
    /// Our next hop towards this peer (next-hop-self), per family; a family
    /// without one is not sent to the peer.
    pub next_hop_v4: Option<Ipv4Addr>,
    pub next_hop_v6: Option<Ipv6Addr>,
    /// Families negotiated on the session.
    pub families: BTreeSet<Afi>,
}

impl PeerInfo {
    pub fn ibgp(&self) -> bool {
        self.remote_as == self.local_as
    }
}

/// A best route for the routing component to install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BestRoute {
    /// The best path's next hop.
    pub next_hop: IpAddr,
    /// Every next hop to install (ECMP), sorted and without duplicates;
    /// `next_hop` alone unless `max_paths` > 1 and equal paths exist.
    pub next_hops: Vec<IpAddr>,
    /// The peer it was learned from.
    pub peer: IpAddr,
    pub attrs: Arc<PathAttrs>,
}

/// A best-route change: `route` None means "remove the route" (the prefix is
/// gone, or it is now our own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteChange {
    pub prefix: IpNet,
    pub route: Option<BestRoute>,
}

/// One Loc-RIB entry: the best path of a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocRibEntry {
    pub prefix: IpNet,
    /// Where the best path came from; None: we originate it.
    pub peer: Option<IpAddr>,
    pub attrs: Arc<PathAttrs>,
}

/// What to send one peer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutUpdate {
    pub announce: Vec<(IpNet, Arc<PathAttrs>)>,
    pub withdraw: Vec<IpNet>,
}

impl OutUpdate {
    pub fn is_empty(&self) -> bool {
        self.announce.is_empty() && self.withdraw.is_empty()
    }
}

/// A peer's policy: its filters and what its announcements get added.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerPolicy {
    /// Import and export filters, tried in order (first match wins).
    pub filters: Vec<BgpFilter>,
    /// Communities added to everything sent to the peer.
    pub export_communities: CommunitySet,
}

/// A peer's prefix counters (`plexusctl bgp status`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PrefixCounts {
    /// In the Adj-RIB-In, before policy.
    pub received: usize,
    pub accepted: usize,
    /// Rejected by the default rules (loops and the guard).
    pub rejected_by_guard: usize,
    pub rejected_by_filter: usize,
    /// In the Adj-RIB-Out.
    pub sent: usize,
}

/// One received path with its verdict (`plexusctl bgp routes`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AdjRibInEntry {
    pub peer: IpAddr,
    pub prefix: IpNet,
    #[serde(serialize_with = "serialize_arc")]
    pub attrs: Arc<PathAttrs>,
    pub verdict: Verdict,
    /// Held stale (the peer restarts gracefully).
    pub stale: bool,
    /// The Loc-RIB's best path for the prefix.
    pub best: bool,
    /// One of the paths the best route is installed over (ECMP; the best
    /// path too).
    pub multipath: bool,
}

fn serialize_arc<S: serde::Serializer, T: serde::Serialize>(
    v: &Arc<T>,
    s: S,
) -> Result<S::Ok, S::Error> {
    T::serialize(v, s)
}

#[derive(Debug, Default, PartialEq)]
pub struct RibOutput {
    pub changes: Vec<RouteChange>,
    pub out: BTreeMap<IpAddr, OutUpdate>,
}

#[derive(Debug, Clone)]
struct InPath {
    attrs: Arc<PathAttrs>,
    stale: bool,
    verdict: Verdict,
}

#[derive(Debug, Clone, PartialEq)]
struct Best {
    peer: Option<IpAddr>,
    attrs: Arc<PathAttrs>,
    /// The installed next hops (sorted, no duplicates) and the peers whose
    /// paths they are; empty for our own prefixes.
    next_hops: Vec<IpAddr>,
    paths: Vec<IpAddr>,
}

#[derive(Debug)]
pub struct Rib {
    cfg: RibConfig,
    /// Every peer we hold routes of or send routes to (the last session's
    /// facts are kept while its routes are stale).
    known: HashMap<IpAddr, PeerInfo>,
    up: BTreeSet<IpAddr>,
    adj_in: HashMap<IpAddr, HashMap<IpNet, InPath>>,
    /// Our own prefixes with the attributes they are announced with.
    local: BTreeMap<IpNet, Arc<PathAttrs>>,
    guard: Guard,
    policies: HashMap<IpAddr, PeerPolicy>,
    loc: BTreeMap<IpNet, Best>,
    adj_out: HashMap<IpAddr, HashMap<IpNet, Arc<PathAttrs>>>,
    /// The exported attributes, one copy of each: most (peer, prefix)
    /// pairs get equal ones (every eBGP peer behind one address gets the
    /// same path from us), so 100 peers × 10,000 routes hold a few hundred
    /// attribute sets, not a million.
    interned: HashSet<Arc<PathAttrs>>,
    /// Size of `interned` at which the unused ones are dropped.
    purge_at: usize,
}

/// Smallest `purge_at`: below this, unused attribute sets just stay.
const INTERN_MIN: usize = 1024;

impl Rib {
    pub fn new(cfg: RibConfig) -> Rib {
        Rib {
            cfg,
            known: HashMap::new(),
            up: BTreeSet::new(),
            adj_in: HashMap::new(),
            local: BTreeMap::new(),
            guard: Guard::default(),
            policies: HashMap::new(),
            loc: BTreeMap::new(),
            adj_out: HashMap::new(),
            interned: HashSet::new(),
            purge_at: INTERN_MIN,
        }
    }

    /// The shared copy of `attrs`; the unused copies go once the set has
    /// doubled since the last purge (amortised O(1)).
    fn intern(&mut self, attrs: PathAttrs) -> Arc<PathAttrs> {
        if let Some(a) = self.interned.get(&attrs) {
            return a.clone();
        }
        if self.interned.len() >= self.purge_at {
            self.interned.retain(|a| Arc::strong_count(a) > 1);
            self.purge_at = (self.interned.len() * 2).max(INTERN_MIN);
        }
        let a = Arc::new(attrs);
        self.interned.insert(a.clone());
        a
    }

    /// How many distinct exported attribute sets are held (tests).
    pub fn exported_attr_sets(&self) -> usize {
        self.interned.len()
    }

    fn cluster_id(&self) -> Ipv4Addr {
        self.cfg.cluster_id.unwrap_or(self.cfg.router_id)
    }

    /// A new route-reflector CLUSTER_ID for what is reflected from now on
    /// (the caller re-establishes the sessions so nothing keeps the old).
    pub fn set_cluster_id(&mut self, id: Option<Ipv4Addr>) {
        self.cfg.cluster_id = id;
    }

    /// Prefixes received from (in Adj-RIB-In, before policy) and sent to a
    /// peer.
    pub fn counts(&self, peer: &IpAddr) -> (usize, usize) {
        (
            self.adj_in.get(peer).map_or(0, HashMap::len),
            self.adj_out.get(peer).map_or(0, HashMap::len),
        )
    }

    /// A peer's counters: received, accepted, rejected (by stage), sent.
    pub fn prefix_counts(&self, peer: &IpAddr) -> PrefixCounts {
        let mut c = PrefixCounts {
            sent: self.adj_out.get(peer).map_or(0, HashMap::len),
            ..PrefixCounts::default()
        };
        for path in self.adj_in.get(peer).into_iter().flat_map(HashMap::values) {
            c.received += 1;
            match path.verdict.reason().map(Reason::stage) {
                None => c.accepted += 1,
                Some(Stage::Guard) => c.rejected_by_guard += 1,
                Some(Stage::Filter) => c.rejected_by_filter += 1,
            }
        }
        c
    }

    /// Every received path (of one peer, or all), sorted by peer and
    /// prefix, with its verdict.
    pub fn adj_rib_in(&self, peer: Option<&IpAddr>) -> Vec<AdjRibInEntry> {
        let mut v: Vec<AdjRibInEntry> = self
            .adj_in
            .iter()
            .filter(|(a, _)| peer.is_none_or(|p| p == *a))
            .flat_map(|(a, table)| {
                table.iter().map(move |(prefix, path)| AdjRibInEntry {
                    peer: *a,
                    prefix: *prefix,
                    attrs: path.attrs.clone(),
                    verdict: path.verdict.clone(),
                    stale: path.stale,
                    best: self.loc.get(prefix).is_some_and(|b| b.peer == Some(*a)),
                    multipath: self.loc.get(prefix).is_some_and(|b| b.paths.contains(a)),
                })
            })
            .collect();
        v.sort_by_key(|e| (e.peer, e.prefix));
        v
    }

    pub fn guard(&self) -> &Guard {
        &self.guard
    }

    /// A new guard: every stored path is judged again.
    pub fn set_guard(&mut self, guard: Guard) -> RibOutput {
        self.guard = guard.normalised();
        self.reevaluate(None)
    }

    /// A peer's new filters and export communities: its stored paths are
    /// judged again and what it is sent is brought in line.
    pub fn set_policy(&mut self, addr: IpAddr, policy: PeerPolicy) -> RibOutput {
        if policy == PeerPolicy::default() {
            self.policies.remove(&addr);
        } else {
            self.policies.insert(addr, policy);
        }
        let mut out = self.reevaluate(Some(addr));
        if self.up.contains(&addr) {
            let prefixes: Vec<IpNet> = self.loc.keys().copied().collect();
            for p in prefixes {
                self.sync_peer(addr, p, &mut out);
            }
        }
        out
    }

    fn policy(&self, addr: &IpAddr) -> Option<&PeerPolicy> {
        self.policies.get(addr)
    }

    /// Judge one path from `info`'s peer: loops, then the guard, then the
    /// peer's import filters.
    fn judge(&self, info: &PeerInfo, prefix: &IpNet, attrs: &PathAttrs) -> Verdict {
        let looped = if info.ibgp() {
            if attrs.originator_id == Some(self.cfg.router_id) {
                Some(Reason::OriginatorLoop)
            } else if attrs.cluster_list.contains(&self.cluster_id()) {
                Some(Reason::ClusterLoop)
            } else {
                None
            }
        } else if attrs.contains_as(info.local_as) {
            Some(Reason::AsPathLoop { asn: info.local_as })
        } else {
            None
        };
        if let Some(r) = looped {
            return Verdict::Rejected(r);
        }
        if let Err(r) = self.guard.check(&info.addr, prefix, attrs.next_hop) {
            return Verdict::Rejected(r);
        }
        let filters = self.policy(&info.addr).map_or(&[][..], |p| &p.filters);
        match filter::evaluate(filters, Direction::Import, prefix, attrs, true) {
            Some((name, rule)) => Verdict::Rejected(Reason::Filter {
                filter: name.to_string(),
                rule,
            }),
            None => Verdict::Accepted,
        }
    }

    /// Judge the stored paths (of one peer, or all) again; recompute the
    /// prefixes whose acceptance changed.
    fn reevaluate(&mut self, peer: Option<IpAddr>) -> RibOutput {
        let mut touched = BTreeSet::new();
        let addrs: Vec<IpAddr> = self
            .adj_in
            .keys()
            .copied()
            .filter(|a| peer.is_none_or(|p| p == *a))
            .collect();
        for addr in addrs {
            let Some(info) = self.known.get(&addr).cloned() else {
                continue;
            };
            let Some(mut table) = self.adj_in.remove(&addr) else {
                continue;
            };
            for (prefix, path) in table.iter_mut() {
                let v = self.judge(&info, prefix, &path.attrs);
                if v.accepted() != path.verdict.accepted() {
                    touched.insert(*prefix);
                }
                path.verdict = v;
            }
            self.adj_in.insert(addr, table);
        }
        let mut out = RibOutput::default();
        for p in touched {
            self.recompute(p, &mut out);
        }
        out
    }

    /// The Loc-RIB: every prefix with its best path's attributes and the
    /// peer it came from (None: ours).
    pub fn loc_rib(&self) -> Vec<LocRibEntry> {
        self.loc
            .iter()
            .map(|(p, b)| LocRibEntry {
                prefix: *p,
                peer: b.peer,
                attrs: b.attrs.clone(),
            })
            .collect()
    }

    /// Whether a peer's route for `prefix` is held stale.
    pub fn is_stale(&self, peer: &IpAddr, prefix: &IpNet) -> Option<bool> {
        self.adj_in.get(peer)?.get(prefix).map(|p| p.stale)
    }

    /// A session came up: send it everything it may have.
    pub fn peer_up(&mut self, info: PeerInfo) -> RibOutput {
        let addr = info.addr;
        self.known.insert(addr, info);
        self.up.insert(addr);
        self.adj_out.insert(addr, HashMap::new());
        let mut out = RibOutput::default();
        let prefixes: Vec<IpNet> = self.loc.keys().copied().collect();
        for p in prefixes {
            self.sync_peer(addr, p, &mut out);
        }
        out
    }

    /// A session went down. `graceful`: keep its routes, marked stale, until
    /// [`Rib::purge_stale`] (graceful-restart helper).
    pub fn peer_down(&mut self, addr: IpAddr, graceful: bool) -> RibOutput {
        self.up.remove(&addr);
        self.adj_out.remove(&addr);
        if graceful {
            for p in self.adj_in.entry(addr).or_default().values_mut() {
                p.stale = true;
            }
            return RibOutput::default();
        }
        let gone: Vec<IpNet> = self
            .adj_in
            .remove(&addr)
            .map(|m| m.into_keys().collect())
            .unwrap_or_default();
        let mut out = RibOutput::default();
        for p in gone {
            self.recompute(p, &mut out);
        }
        out
    }

    /// Forget a removed peer entirely.
    pub fn remove_peer(&mut self, addr: IpAddr) -> RibOutput {
        let out = self.peer_down(addr, false);
        self.known.remove(&addr);
        out
    }

    /// Drop a peer's stale routes (all families, or one).
    pub fn purge_stale(&mut self, addr: IpAddr, afi: Option<Afi>) -> RibOutput {
        let mut gone = Vec::new();
        if let Some(m) = self.adj_in.get_mut(&addr) {
            m.retain(|p, path| {
                let purge = path.stale && afi.is_none_or(|a| Afi::of(p) == a);
                if purge {
                    gone.push(*p);
                }
                !purge
            });
        }
        let mut out = RibOutput::default();
        for p in gone {
            self.recompute(p, &mut out);
        }
        out
    }

    /// Routes from a peer's UPDATE. Each announced path is stored with its
    /// verdict (loops, guard, filters); a rejected one replaces (withdraws)
    /// the peer's earlier path for the prefix.
    pub fn update(&mut self, addr: IpAddr, update: &ParsedUpdate) -> RibOutput {
        let mut out = RibOutput::default();
        let Some(info) = self.known.get(&addr).cloned() else {
            return out;
        };
        let mut touched = Vec::new();
        let mut table = self.adj_in.remove(&addr).unwrap_or_default();
        for p in &update.withdrawn {
            if table.remove(p).is_some_and(|old| old.verdict.accepted()) {
                touched.push(*p);
            }
        }
        if let Some(attrs) = &update.attrs {
            let attrs = Arc::new(attrs.clone());
            for p in &update.announced {
                let verdict = self.judge(&info, p, &attrs);
                let accepted = verdict.accepted();
                if let Some(r) = verdict.reason() {
                    tracing::debug!(peer = %addr, prefix = %p, reason = %r, "BGP path rejected");
                }
                let old = table.insert(
                    *p,
                    InPath {
                        attrs: attrs.clone(),
                        stale: false,
                        verdict,
                    },
                );
                if accepted || old.is_some_and(|o| o.verdict.accepted()) {
                    touched.push(*p);
                }
            }
        }
        self.adj_in.insert(addr, table);
        for p in touched {
            self.recompute(p, &mut out);
        }
        out
    }

    /// Announce one of our own prefixes (the node's blocks).
    pub fn originate(&mut self, prefix: IpNet) -> RibOutput {
        self.originate_with(prefix, &CommunitySet::default())
    }

    /// Announce one of our own prefixes with communities (a pool's); an
    /// originated prefix given new communities is announced again.
    pub fn originate_with(&mut self, prefix: IpNet, communities: &CommunitySet) -> RibOutput {
        let mut out = RibOutput::default();
        let mut attrs = PathAttrs::local();
        attrs.add_communities(communities);
        if self.local.get(&prefix).is_some_and(|a| **a == attrs) {
            return out;
        }
        self.local.insert(prefix, Arc::new(attrs));
        self.recompute(prefix, &mut out);
        out
    }

    pub fn withdraw_local(&mut self, prefix: IpNet) -> RibOutput {
        let mut out = RibOutput::default();
        if self.local.remove(&prefix).is_some() {
            self.recompute(prefix, &mut out);
        }
        out
    }

    pub fn originated(&self) -> impl Iterator<Item = &IpNet> {
        self.local.keys()
    }

    /// Everything a peer was sent for one family (ROUTE-REFRESH).
    pub fn adj_out(&self, addr: &IpAddr, afi: Afi) -> OutUpdate {
        let mut u = OutUpdate::default();
        if let Some(m) = self.adj_out.get(addr) {
            let mut v: Vec<_> = m
                .iter()
                .filter(|(p, _)| Afi::of(p) == afi)
                .map(|(p, a)| (*p, a.clone()))
                .collect();
            v.sort_by_key(|e| e.0);
            u.announce = v;
        }
        u
    }

    fn best_of(&self, prefix: &IpNet) -> Option<Best> {
        let mut cands: Vec<(Candidate, Option<IpAddr>, &Arc<PathAttrs>)> = Vec::new();
        if let Some(local_attrs) = self.local.get(prefix) {
            let c = Candidate {
                attrs: local_attrs,
                peer: None,
                ibgp: false,
                peer_router_id: self.cfg.router_id,
            };
            cands.push((c, None, local_attrs));
        }
        for (addr, table) in &self.adj_in {
            let (Some(path), Some(info)) = (table.get(prefix), self.known.get(addr)) else {
                continue;
            };
            if !path.verdict.accepted() {
                continue;
            }
            let c = Candidate {
                attrs: &path.attrs,
                peer: Some(*addr),
                ibgp: info.ibgp(),
                peer_router_id: info.router_id,
            };
            cands.push((c, Some(*addr), &path.attrs));
        }
        // min_by, not a sort: the MED rule is not transitive, so the order
        // is not total.
        let (best, peer, attrs) = cands.iter().min_by(|a, b| decision::compare(&a.0, &b.0))?;
        let mut best_route = Best {
            peer: *peer,
            attrs: (*attrs).clone(),
            next_hops: Vec::new(),
            paths: Vec::new(),
        };
        if let (Some(p), Some(nh)) = (peer, attrs.next_hop) {
            best_route.paths.push(*p);
            best_route.next_hops.push(nh);
            // The paths equal to the best up to the tie breakers, in
            // tie-breaker order (total: peer addresses differ).
            let mut equal: Vec<_> = cands
                .iter()
                .filter(|(c, p, _)| {
                    p.is_some() && *p != *peer && decision::multipath_equal(best, c)
                })
                .collect();
            equal.sort_by(|a, b| decision::tie_break(&a.0, &b.0));
            let room = self.cfg.max_paths.max(1) - 1;
            for (_, p, a) in equal.into_iter().take(room) {
                // Accepted learned paths always have both.
                if let (Some(p), Some(nh)) = (p, a.next_hop) {
                    best_route.paths.push(*p);
                    best_route.next_hops.push(nh);
                }
            }
            best_route.next_hops.sort();
            best_route.next_hops.dedup();
        }
        Some(best_route)
    }

    fn install_view(best: Option<&Best>) -> Option<BestRoute> {
        let b = best?;
        Some(BestRoute {
            next_hop: b.attrs.next_hop?,
            next_hops: b.next_hops.clone(),
            peer: b.peer?,
            attrs: b.attrs.clone(),
        })
    }

    fn recompute(&mut self, prefix: IpNet, out: &mut RibOutput) {
        let new = self.best_of(&prefix);
        let old = self.loc.get(&prefix);
        if old == new.as_ref() {
            return;
        }
        let (old_view, new_view) = (Self::install_view(old), Self::install_view(new.as_ref()));
        if old_view != new_view {
            out.changes.push(RouteChange {
                prefix,
                route: new_view,
            });
        }
        match new {
            Some(b) => self.loc.insert(prefix, b),
            None => self.loc.remove(&prefix),
        };
        let peers: Vec<IpAddr> = self.up.iter().copied().collect();
        for p in peers {
            self.sync_peer(p, prefix, out);
        }
    }

    /// Bring one peer's Adj-RIB-Out for `prefix` in line with the Loc-RIB.
    fn sync_peer(&mut self, addr: IpAddr, prefix: IpNet, out: &mut RibOutput) {
        let want = self
            .loc
            .get(&prefix)
            .and_then(|b| {
                self.known
                    .get(&addr)
                    .and_then(|to| self.export(&prefix, b, to))
            })
            .map(|a| self.intern(a));
        let table = self.adj_out.entry(addr).or_default();
        let entry = out.out.entry(addr).or_default();
        match want {
            Some(a) => {
                if table.get(&prefix) != Some(&a) {
                    table.insert(prefix, a.clone());
                    entry.announce.push((prefix, a));
                }
            }
            None => {
                if table.remove(&prefix).is_some() {
                    entry.withdraw.push(prefix);
                }
            }
        }
        if entry.is_empty() {
            out.out.remove(&addr);
        }
    }

    /// The export rules: what `to` is sent for `best`, if anything.
    fn export(&self, prefix: &IpNet, best: &Best, to: &PeerInfo) -> Option<PathAttrs> {
        if best.peer == Some(to.addr) || !to.families.contains(&Afi::of(prefix)) {
            return None;
        }
        let self_nh: Option<IpAddr> = match prefix {
            IpNet::V4(_) => to.next_hop_v4.map(IpAddr::V4),
            IpNet::V6(_) => to.next_hop_v6.map(IpAddr::V6),
        };
        let policy = self.policy(&to.addr);
        let filters = policy.map_or(&[][..], |p| &p.filters);
        if filter::evaluate(
            filters,
            Direction::Export,
            prefix,
            &best.attrs,
            best.peer.is_some(),
        )
        .is_some()
        {
            return None;
        }
        let from = best.peer.and_then(|p| self.known.get(&p));
        let mut attrs = (*best.attrs).clone();
        if to.ibgp() {
            match from {
                Some(src) if src.ibgp() => {
                    // iBGP-learned to iBGP: only as a route reflector
                    // (RFC 4456 §6): client routes to everyone, non-client
                    // routes to clients.
                    if !(src.rr_client || to.rr_client) {
                        return None;
                    }
                    attrs.originator_id.get_or_insert(src.router_id);
                    attrs.cluster_list.insert(0, self.cluster_id());
                }
                _ => {
                    attrs.next_hop = Some(self_nh?);
                    attrs.local_pref.get_or_insert(DEFAULT_LOCAL_PREF);
                    attrs.originator_id = None;
                    attrs.cluster_list.clear();
                }
            }
        } else {
            attrs.next_hop = Some(self_nh?);
            attrs.local_pref = None;
            attrs.originator_id = None;
            attrs.cluster_list.clear();
            // A MED from another AS is not passed on (RFC 4271 §5.1.4).
            if from.is_some() {
                attrs.med = None;
            }
            attrs.prepend(to.local_as);
        }
        if let Some(p) = policy {
            attrs.add_communities(&p.export_communities);
        }
        Some(attrs)
    }
}
