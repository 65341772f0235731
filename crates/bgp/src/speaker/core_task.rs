//! The core task: owns every peer's FSM and the RIB, turns connection
//! events into FSM events, and carries out the FSMs' and the RIB's actions.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use netgauze_bgp_pkt::capabilities::BgpCapability;
use netgauze_bgp_pkt::iana::RouteRefreshSubcode;
use netgauze_bgp_pkt::route_refresh::BgpRouteRefreshMessage;
use netgauze_bgp_pkt::BgpMessage;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::conn::{self, ConnHandle, ConnectOptions};
use super::sockopt::{self, Listener};
use super::{canonical, Command, Internal, PeerConfig, PeerStatus, SpeakerConfig};
use crate::attrs::PathAttrs;
use crate::codec::{self, Afi, EncodeOptions};
use crate::error::BgpError;
use crate::fsm::{Action, ConnId, Direction, Event, Fsm, FsmConfig, Negotiated, State, Timer};
use crate::rib::{OutUpdate, PeerInfo, PeerPolicy, Rib, RibConfig, RibOutput, RouteChange};

struct PeerSlot {
    cfg: PeerConfig,
    fsm: Fsm,
    since: SystemTime,
    last_state: State,
    /// Families of the current session whose End-of-RIB the peer sent.
    eor_received: BTreeSet<Afi>,
    /// We sent our End-of-RIB on the current session.
    eor_sent: bool,
    /// The latest error (the FSM's, or a failed connect), for status.
    error: Option<String>,
    /// The FSM's error as last seen, to notice when it changes.
    fsm_error: Option<String>,
}

impl PeerSlot {
    fn policy(&self) -> PeerPolicy {
        PeerPolicy {
            filters: self.cfg.filters.clone(),
            export_communities: self.cfg.export_communities.clone(),
        }
    }

    /// What status says went wrong: the latest error; for a peer with a
    /// TCP MD5 key that never got a connection, the likely cause.
    fn last_error(&self) -> Option<String> {
        if self.error.is_some() || self.fsm.established().is_some() {
            return self.error.clone();
        }
        self.cfg.password.as_ref().map(|_| {
            "no TCP connection with the peer yet; TCP MD5 is configured, and segments \
             without the same key are dropped unseen (a wrong or missing password on \
             the peer is the likely cause)"
                .to_string()
        })
    }

    /// The peer's initial table is complete (End-of-RIB for every family).
    fn synced(&self) -> bool {
        self.fsm
            .established()
            .is_some_and(|(_, n)| n.families.is_subset(&self.eor_received))
    }

    /// While we restart: this peer no longer holds up our End-of-RIB. A
    /// peer restarting too (R bit) is deferring as well, so waiting for it
    /// would only run into the deadline.
    fn restart_done(&self) -> bool {
        self.synced()
            || self
                .fsm
                .established()
                .is_some_and(|(_, n)| n.peer_gr.as_ref().is_some_and(|g| g.restarting))
    }
}

pub(super) struct Core {
    cfg: SpeakerConfig,
    listeners: Vec<Arc<Listener>>,
    /// The listeners send with TTL 255 (a GTSM peer was configured).
    listeners_ttl_255: bool,
    rib: Rib,
    peers: HashMap<IpAddr, PeerSlot>,
    conns: HashMap<ConnId, ConnHandle>,
    timers: HashMap<(IpAddr, Timer), Instant>,
    tx: mpsc::UnboundedSender<Internal>,
    feed: mpsc::UnboundedSender<RouteChange>,
    next_conn: ConnId,
    /// Restarting speaker (RFC 4724 §4.1): our End-of-RIB waits until every
    /// peer has sent its own, or until this deadline, so helpers do not
    /// drop routes we have not relearnt yet.
    deferral: Option<Instant>,
    /// Our own routes are not all originated yet: no End-of-RIB.
    local_pending: bool,
    /// Writers of closed connections still flushing (a NOTIFICATION).
    closing: Vec<JoinHandle<()>>,
}

impl Core {
    pub(super) fn new(
        cfg: SpeakerConfig,
        listeners: Vec<Arc<Listener>>,
        tx: mpsc::UnboundedSender<Internal>,
        feed: mpsc::UnboundedSender<RouteChange>,
    ) -> Core {
        let deferral = cfg
            .graceful_restart
            .filter(|g| g.restarting)
            .map(|g| Instant::now() + Duration::from_secs(u64::from(g.restart_time)));
        let local_pending = cfg.local_routes_pending;
        let mut rib = Rib::new(RibConfig {
            router_id: cfg.router_id,
            cluster_id: cfg.cluster_id,
            max_paths: cfg.max_paths,
        });
        // Nothing is stored yet: nothing to re-judge.
        let _ = rib.set_guard(cfg.guard.clone());
        Core {
            rib,
            cfg,
            listeners,
            listeners_ttl_255: false,
            peers: HashMap::new(),
            conns: HashMap::new(),
            timers: HashMap::new(),
            tx,
            feed,
            next_conn: 1,
            deferral,
            local_pending,
            closing: Vec::new(),
        }
    }

    pub(super) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Internal>) {
        loop {
            let next = self.timers.values().chain(&self.deferral).min().copied();
            let ev = tokio::select! {
                ev = rx.recv() => ev,
                _ = sleep_until(next) => {
                    if self.deferral.is_some_and(|d| d <= Instant::now()) {
                        self.end_deferral();
                    }
                    self.fire_timers();
                    continue;
                }
            };
            let Some(ev) = ev else { return };
            if let Internal::Cmd(Command::Shutdown(reply)) = ev {
                let _ = reply.send(self.shutdown());
                return;
            }
            self.internal(ev);
        }
    }

    fn shutdown(&mut self) -> Vec<JoinHandle<()>> {
        let addrs: Vec<IpAddr> = self.peers.keys().copied().collect();
        for a in addrs {
            self.event(a, Event::Stop);
        }
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        for c in conns {
            self.close(c);
        }
        std::mem::take(&mut self.closing)
    }

    /// Forget a connection; its writer flushes what is queued, then closes.
    fn close(&mut self, conn: ConnId) {
        if let Some(mut c) = self.conns.remove(&conn) {
            self.closing.retain(|t| !t.is_finished());
            self.closing.extend(c.writer_task.take());
        }
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        let due: Vec<(IpAddr, Timer)> = self
            .timers
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            self.timers.remove(&key);
            self.event(key.0, Event::Timer(key.1));
        }
    }

    fn internal(&mut self, ev: Internal) {
        match ev {
            Internal::Cmd(cmd) => self.command(cmd),
            Internal::Accepted(stream, from) => {
                let peer = canonical(from.ip());
                let Some(slot) = self.peers.get_mut(&peer) else {
                    tracing::info!(%from, "BGP connection from an unconfigured address refused");
                    conn::reject(stream);
                    return;
                };
                if let Some(hops) = slot.cfg.ttl_security {
                    if let Err(why) = gtsm_accept(&stream, peer, hops) {
                        tracing::warn!(%peer, %why, "BGP connection refused (TTL security)");
                        slot.error = Some(why);
                        return;
                    }
                }
                let conn = self.register(peer, stream);
                if let Some(conn) = conn {
                    self.event(
                        peer,
                        Event::Connected {
                            conn,
                            dir: Direction::Incoming,
                        },
                    );
                }
            }
            Internal::Connected(peer, stream) => {
                if !self.peers.contains_key(&peer) {
                    return;
                }
                if let Some(conn) = self.register(peer, stream) {
                    self.event(
                        peer,
                        Event::Connected {
                            conn,
                            dir: Direction::Outgoing,
                        },
                    );
                }
            }
            Internal::ConnectFailed(peer, why) => {
                tracing::debug!(%peer, error = %why, "BGP connect failed");
                if let Some(slot) = self.peers.get_mut(&peer) {
                    if slot.fsm.established().is_none() {
                        slot.error = Some(connect_error(&slot.cfg, peer, &why));
                    }
                }
                self.event(peer, Event::ConnectFailed);
            }
            Internal::Frame(conn, bytes) => {
                let Some(c) = self.conns.get_mut(&conn) else {
                    return;
                };
                let peer = c.peer;
                let ev = match codec::decode(&bytes, c.asn4_sent && c.asn4_received) {
                    Ok(msg) => {
                        if let BgpMessage::Open(open) = &msg {
                            c.asn4_received = open
                                .capabilities()
                                .iter()
                                .any(|cap| matches!(cap, BgpCapability::FourOctetAs(_)));
                        }
                        Event::Message(conn, msg)
                    }
                    Err(n) => {
                        tracing::warn!(%peer, error = %codec::describe_notification(&n), "malformed BGP message");
                        Event::Malformed(conn, n)
                    }
                };
                self.event(peer, ev);
            }
            Internal::Malformed(conn, n) => {
                if let Some(peer) = self.conns.get(&conn).map(|c| c.peer) {
                    tracing::warn!(%peer, error = %codec::describe_notification(&n), "malformed BGP header");
                    self.event(peer, Event::Malformed(conn, n));
                }
            }
            Internal::Closed(conn) => {
                if let Some(peer) = self.conns.get(&conn).map(|c| c.peer) {
                    self.event(peer, Event::Closed(conn));
                }
            }
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::AddPeer(pc, reply) => {
                let _ = reply.send(self.add_peer(pc));
            }
            Command::UpdatePeer(pc, reply) => {
                let _ = reply.send(self.update_peer(pc));
            }
            Command::RemovePeer(addr, reply) => {
                let addr = canonical(addr);
                let _ = reply.send(self.remove_peer(addr));
            }
            Command::BfdDown(addr, reply) => {
                if !self.peers.contains_key(&addr) {
                    let _ = reply.send(Err(BgpError::NoSuchPeer(addr)));
                    return;
                }
                tracing::warn!(peer = %addr, "BFD down: BGP session torn down");
                self.event(addr, Event::BfdDown);
                let _ = reply.send(Ok(()));
            }
            Command::Originate(prefix, communities, reply) => {
                let out = match communities {
                    Some(c) => self.rib.originate_with(prefix, &c),
                    None => self.rib.withdraw_local(prefix),
                };
                self.apply_rib(out);
                let _ = reply.send(());
            }
            Command::LocalRoutesComplete(reply) => {
                self.local_routes_complete();
                let _ = reply.send(());
            }
            Command::Refresh(addr, afi, reply) => {
                let _ = reply.send(self.refresh(addr, afi));
            }
            Command::Status(reply) => {
                let mut v: Vec<PeerStatus> = self
                    .peers
                    .values()
                    .map(|p| {
                        let c = self.rib.prefix_counts(&p.cfg.address);
                        let local_as = p.cfg.local_as.unwrap_or(self.cfg.local_as);
                        PeerStatus {
                            address: p.cfg.address,
                            remote_as: p.cfg.remote_as,
                            ibgp: local_as == p.cfg.remote_as,
                            state: p.fsm.state(),
                            since: p.since,
                            last_error: p.last_error(),
                            remote_id: p.fsm.established().map(|(_, n)| n.remote_id),
                            prefixes_received: c.received,
                            prefixes_accepted: c.accepted,
                            prefixes_rejected_by_guard: c.rejected_by_guard,
                            prefixes_rejected_by_filter: c.rejected_by_filter,
                            prefixes_sent: c.sent,
                            synced: p.synced(),
                        }
                    })
                    .collect();
                v.sort_by_key(|s| s.address);
                let _ = reply.send(v);
            }
            Command::LocRib(reply) => {
                let _ = reply.send(self.rib.loc_rib());
            }
            Command::AdjRibIn(peer, reply) => {
                let _ = reply.send(self.rib.adj_rib_in(peer.as_ref()));
            }
            Command::SetGuard(guard, reply) => {
                let out = self.rib.set_guard(guard);
                let rejected: usize = self
                    .peers
                    .keys()
                    .map(|a| self.rib.prefix_counts(a).rejected_by_guard)
                    .sum();
                tracing::info!(
                    changes = out.changes.len(),
                    rejected,
                    "BGP import guard updated"
                );
                self.apply_rib(out);
                let _ = reply.send(());
            }
            Command::SetClusterId(id, reply) => {
                self.cfg.cluster_id = id;
                self.rib.set_cluster_id(id);
                let _ = reply.send(());
            }
            Command::Shutdown(_) => {}
        }
    }

    fn add_peer(&mut self, pc: PeerConfig) -> Result<(), BgpError> {
        let mut pc = pc;
        pc.address = canonical(pc.address);
        if self.peers.contains_key(&pc.address) {
            return Err(BgpError::PeerExists(pc.address));
        }
        pc.validate()?;
        let addr = pc.address;
        self.set_listener_md5(addr, pc.password.as_ref().map(|p| p.as_bytes()))?;
        if pc.ttl_security.is_some() && !self.listeners_ttl_255 {
            for l in &self.listeners {
                sockopt::prepare_listener_for_gtsm(l).map_err(|source| BgpError::SocketOption {
                    peer: addr,
                    what: "TTL 255 and TCP_SAVE_SYN on the listening socket",
                    source,
                })?;
            }
            self.listeners_ttl_255 = true;
        }
        let graceful_restart = self.cfg.graceful_restart.map(|mut g| {
            if let Some(t) = pc.graceful_restart_time {
                g.restart_time = t;
            }
            g
        });
        let fsm = Fsm::new(FsmConfig {
            local_as: pc.local_as.unwrap_or(self.cfg.local_as),
            remote_as: pc.remote_as,
            router_id: self.cfg.router_id,
            hold_time: self.cfg.hold_time,
            connect_retry: self.cfg.connect_retry,
            passive: pc.passive,
            graceful_restart,
            max_stale_time: pc.graceful_restart_time,
        });
        let slot = PeerSlot {
            cfg: pc,
            fsm,
            since: SystemTime::now(),
            last_state: State::Idle,
            eor_received: BTreeSet::new(),
            eor_sent: false,
            error: None,
            fsm_error: None,
        };
        // Nothing is stored for a new peer: nothing to re-judge.
        let _ = self.rib.set_policy(addr, slot.policy());
        self.peers.insert(addr, slot);
        self.event(addr, Event::Start);
        Ok(())
    }

    /// Install (or remove) a peer's MD5 key on every listening socket its
    /// connections can arrive on.
    fn set_listener_md5(&self, peer: IpAddr, key: Option<&[u8]>) -> Result<(), BgpError> {
        for l in self.listeners.iter().filter(|l| l.serves(peer)) {
            l.set_md5(peer, key)
                .map_err(|source| BgpError::SocketOption {
                    peer,
                    what: "the TCP MD5 key",
                    source,
                })?;
        }
        Ok(())
    }

    fn remove_peer(&mut self, addr: IpAddr) -> Result<(), BgpError> {
        if !self.peers.contains_key(&addr) {
            return Err(BgpError::NoSuchPeer(addr));
        }
        self.event(addr, Event::Stop);
        let slot = self.peers.remove(&addr);
        self.timers.retain(|(a, _), _| *a != addr);
        if slot.is_some_and(|s| s.cfg.password.is_some()) {
            if let Err(e) = self.set_listener_md5(addr, None) {
                tracing::warn!(peer = %addr, error = %e, "cannot remove the TCP MD5 key");
            }
        }
        let out = self.rib.remove_peer(addr);
        self.apply_rib(out);
        // Its paths are gone: nothing left to re-judge.
        let _ = self.rib.set_policy(addr, PeerPolicy::default());
        Ok(())
    }

    fn update_peer(&mut self, pc: PeerConfig) -> Result<(), BgpError> {
        let mut pc = pc;
        pc.address = canonical(pc.address);
        let addr = pc.address;
        let slot = self.peers.get(&addr).ok_or(BgpError::NoSuchPeer(addr))?;
        pc.validate()?;
        if slot.cfg == pc {
            return Ok(());
        }
        if !slot.cfg.same_session(&pc) {
            tracing::info!(peer = %addr, "BGP peer reconfigured: session reset");
            self.remove_peer(addr)?;
            return self.add_peer(pc);
        }
        let Some(slot) = self.peers.get_mut(&addr) else {
            return Ok(());
        };
        slot.cfg = pc;
        let policy = slot.policy();
        let out = self.rib.set_policy(addr, policy);
        tracing::info!(peer = %addr, changes = out.changes.len(), "BGP peer policy updated");
        self.apply_rib(out);
        self.check_prefix_limit(addr, None);
        Ok(())
    }

    /// Reset the session if the peer holds more prefixes than allowed.
    fn check_prefix_limit(&mut self, peer: IpAddr, afi: Option<Afi>) {
        let Some(slot) = self.peers.get(&peer) else {
            return;
        };
        let Some(m) = slot.cfg.max_prefixes else {
            return;
        };
        let received = self.rib.prefix_counts(&peer).received;
        if received <= m.limit as usize || slot.fsm.established().is_none() {
            return;
        }
        tracing::warn!(%peer, received, limit = m.limit, restart = m.restart, "BGP prefix limit exceeded: session reset");
        self.event(
            peer,
            Event::PrefixLimit {
                afi: afi.unwrap_or(Afi::Ipv4),
                limit: m.limit,
                restart: m.restart,
            },
        );
    }

    fn refresh(&mut self, addr: IpAddr, afi: Afi) -> Result<(), BgpError> {
        let slot = self.peers.get(&addr).ok_or(BgpError::NoSuchPeer(addr))?;
        let Some((conn, neg)) = slot.fsm.established() else {
            return Err(BgpError::NotEstablished(addr));
        };
        if !neg.route_refresh || !neg.families.contains(&afi) {
            return Err(BgpError::Unsupported(
                addr,
                format!("route refresh of {afi:?} was not negotiated"),
            ));
        }
        let msg = BgpMessage::RouteRefresh(BgpRouteRefreshMessage::new(
            afi.address_type(),
            RouteRefreshSubcode::NormalRequest,
        ));
        self.send(conn, &msg);
        Ok(())
    }

    fn register(&mut self, peer: IpAddr, stream: TcpStream) -> Option<ConnId> {
        let id = self.next_conn;
        self.next_conn += 1;
        let handle = conn::open(id, peer, stream, self.tx.clone())?;
        self.conns.insert(id, handle);
        Some(id)
    }

    /// Feed one event to a peer's FSM and carry out what it says.
    fn event(&mut self, peer: IpAddr, ev: Event) {
        // What the FSM's actions log is about this peer (the core task
        // serves them all).
        let _span = tracing::info_span!("bgp_peer", %peer).entered();
        let Some(slot) = self.peers.get_mut(&peer) else {
            return;
        };
        let actions = slot.fsm.handle(ev);
        if slot.fsm.last_error() != slot.fsm_error.as_deref() {
            slot.fsm_error = slot.fsm.last_error().map(str::to_owned);
            slot.error = slot.fsm_error.clone();
        }
        let state = slot.fsm.state();
        if state != slot.last_state {
            tracing::info!(%peer, from = %slot.last_state, to = %state, "BGP state change");
            slot.last_state = state;
            slot.since = SystemTime::now();
        }
        for a in actions {
            self.action(peer, a);
        }
    }

    fn action(&mut self, peer: IpAddr, action: Action) {
        match action {
            Action::Connect => self.connect(peer),
            Action::Send(conn, msg) => self.send(conn, &msg),
            Action::Close(conn) => self.close(conn),
            Action::StartTimer(t, secs) => {
                let at = Instant::now() + Duration::from_secs(u64::from(secs));
                self.timers.insert((peer, t), at);
            }
            Action::StopTimer(t) => {
                self.timers.remove(&(peer, t));
            }
            Action::Up(conn, neg) => self.session_up(peer, conn, &neg),
            Action::Down { graceful, reason } => {
                tracing::info!(%peer, graceful, %reason, "BGP session down");
                let out = self.rib.peer_down(peer, graceful);
                self.apply_rib(out);
            }
            Action::Update(u) => {
                let out = self.rib.update(peer, &u);
                self.apply_rib(out);
                if !u.announced.is_empty() {
                    let afi = u.announced.first().map(Afi::of);
                    self.check_prefix_limit(peer, afi);
                }
                if let Some(afi) = u.end_of_rib {
                    if let Some(slot) = self.peers.get_mut(&peer) {
                        slot.eor_received.insert(afi);
                    }
                    if self.deferral.is_some() && self.peers.values().all(PeerSlot::restart_done) {
                        self.end_deferral();
                    }
                }
            }
            Action::RouteRefresh(afi) => {
                let u = self.rib.adj_out(&peer, afi);
                self.send_update(peer, &u);
                self.send_to_peer(peer, &codec::end_of_rib(afi));
            }
            Action::PurgeStale(afi) => {
                let out = self.rib.purge_stale(peer, afi);
                self.apply_rib(out);
            }
        }
    }

    fn connect(&mut self, peer: IpAddr) {
        let Some(slot) = self.peers.get(&peer) else {
            return;
        };
        let opts = ConnectOptions {
            to: SocketAddr::new(peer, slot.cfg.port),
            source: slot.cfg.source,
            password: slot.cfg.password.clone(),
            ttl_security: slot.cfg.ttl_security,
            limit: Duration::from_secs(u64::from(self.cfg.connect_retry)),
        };
        conn::connect(peer, opts, self.tx.clone());
    }

    fn send(&mut self, conn: ConnId, msg: &BgpMessage) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if let BgpMessage::Open(open) = msg {
            c.asn4_sent = open
                .capabilities()
                .iter()
                .any(|cap| matches!(cap, BgpCapability::FourOctetAs(_)));
        }
        let _ = c.writer.send(codec::encode(msg));
    }

    fn session_up(&mut self, peer: IpAddr, conn: ConnId, neg: &Negotiated) {
        let (Some(slot), Some(c)) = (self.peers.get(&peer), self.conns.get(&conn)) else {
            return;
        };
        let local_ip = canonical(c.local.ip());
        let info = PeerInfo {
            addr: peer,
            remote_as: slot.cfg.remote_as,
            local_as: slot.cfg.local_as.unwrap_or(self.cfg.local_as),
            router_id: neg.remote_id,
            rr_client: slot.cfg.rr_client,
            next_hop_v4: match local_ip {
                IpAddr::V4(a) => Some(a),
                IpAddr::V6(_) => self.cfg.next_hop_v4,
            },
            next_hop_v6: match local_ip {
                IpAddr::V6(a) => Some(a),
                IpAddr::V4(_) => self.cfg.next_hop_v6,
            },
            families: neg.families.clone(),
        };
        tracing::info!(%peer, remote_id = %neg.remote_id, hold = neg.hold_time, "BGP session established");
        if let Some(slot) = self.peers.get_mut(&peer) {
            slot.eor_received.clear();
            slot.eor_sent = false;
            slot.error = None;
        }
        let out = self.rib.peer_up(info);
        self.apply_rib(out);
        if self.deferral.is_none() && !self.local_pending {
            self.send_end_of_rib(peer);
        }
    }

    /// RFC 4724: End-of-RIB after the initial table, per family.
    fn send_end_of_rib(&mut self, peer: IpAddr) {
        let Some(slot) = self.peers.get_mut(&peer) else {
            return;
        };
        let Some((_, neg)) = slot.fsm.established() else {
            return;
        };
        let families: Vec<Afi> = neg.families.iter().copied().collect();
        slot.eor_sent = true;
        for afi in families {
            self.send_to_peer(peer, &codec::end_of_rib(afi));
        }
    }

    /// The restart is over: every established peer gets our End-of-RIB
    /// (once our own routes are all in).
    fn end_deferral(&mut self) {
        self.deferral = None;
        if self.local_pending {
            tracing::info!(
                "BGP restart: selection deferral over; End-of-RIB once our own routes are in"
            );
            return;
        }
        tracing::info!("BGP restart: selection deferral over, sending End-of-RIB");
        self.send_pending_end_of_rib();
    }

    /// Our own routes are all originated: End-of-RIB, unless the restart's
    /// deferral still holds it.
    fn local_routes_complete(&mut self) {
        if !std::mem::take(&mut self.local_pending) || self.deferral.is_some() {
            return;
        }
        tracing::info!("BGP: our own routes are in, sending End-of-RIB");
        self.send_pending_end_of_rib();
    }

    fn send_pending_end_of_rib(&mut self) {
        let waiting: Vec<IpAddr> = self
            .peers
            .iter()
            .filter(|(_, s)| !s.eor_sent && s.fsm.established().is_some())
            .map(|(a, _)| *a)
            .collect();
        for peer in waiting {
            self.send_end_of_rib(peer);
        }
    }

    fn established_conn(&self, peer: IpAddr) -> Option<(ConnId, EncodeOptions)> {
        let slot = self.peers.get(&peer)?;
        let (conn, neg) = slot.fsm.established()?;
        let local_as = slot.cfg.local_as.unwrap_or(self.cfg.local_as);
        Some((
            conn,
            EncodeOptions {
                asn4: neg.asn4,
                ibgp: local_as == slot.cfg.remote_as,
            },
        ))
    }

    fn send_to_peer(&mut self, peer: IpAddr, msg: &BgpMessage) {
        if let Some((conn, _)) = self.established_conn(peer) {
            self.send(conn, msg);
        }
    }

    fn send_update(&mut self, peer: IpAddr, u: &OutUpdate) {
        let Some((conn, opts)) = self.established_conn(peer) else {
            return;
        };
        let mut msgs = codec::withdraw(&u.withdraw);
        // One UPDATE per set of attributes.
        let mut groups: HashMap<&Arc<PathAttrs>, Vec<IpNet>> = HashMap::new();
        for (p, a) in &u.announce {
            groups.entry(a).or_default().push(*p);
        }
        for (attrs, prefixes) in groups {
            msgs.extend(codec::announce(&prefixes, attrs, opts));
        }
        for m in msgs {
            self.send(conn, &m);
        }
    }

    fn apply_rib(&mut self, out: RibOutput) {
        for change in out.changes {
            let _ = self.feed.send(change);
        }
        for (peer, u) in out.out {
            self.send_update(peer, &u);
        }
    }
}

/// What status says about a failed connect, with the likely cause when a
/// TCP MD5 key or TTL security is configured (both make the kernels drop
/// segments silently, so all we see is no answer).
fn connect_error(cfg: &PeerConfig, peer: IpAddr, why: &conn::ConnectError) -> String {
    let conn::ConnectError::TimedOut = why else {
        return format!("TCP connect to {peer}: {why}");
    };
    let mut s = format!("TCP connect to {peer} got no answer");
    if cfg.password.is_some() {
        s += "; TCP MD5 is configured, and the peer's kernel drops every segment without \
              the same key (a wrong or missing password on the peer is the likely cause)";
    }
    if cfg.ttl_security.is_some() {
        s += "; TTL security is on, and what the peer sends with a TTL below 255 is dropped";
    }
    s
}

/// GTSM on an accepted connection, before anything is read from it: its
/// SYN must have come from at most `hops` away; from here on the kernel
/// drops what comes from farther.
fn gtsm_accept(stream: &TcpStream, peer: IpAddr, hops: u8) -> Result<(), String> {
    let fd = stream.as_raw_fd();
    let min = 256 - u16::from(hops.max(1));
    match sockopt::syn_ttl(fd) {
        Ok(Some(ttl)) if u16::from(ttl) < min => {
            return Err(format!(
                "refused a connection whose SYN came with TTL {ttl}: TTL security wants at least \
                 {min} (the peer is more than {hops} hop(s) away, or does not send with TTL 255)"
            ));
        }
        // No SYN saved: the listener was readied after this SYN arrived.
        Ok(_) => {}
        Err(e) => return Err(format!("cannot read the SYN's TTL: {e}")),
    }
    sockopt::set_ttl_security(fd, peer, hops).map_err(|e| format!("cannot set TTL security: {e}"))
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
