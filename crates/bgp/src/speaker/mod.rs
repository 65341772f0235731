//! The session runtime on tokio: TCP (listen and connect), one reader and
//! one writer task per connection (`conn`), the timers, and one core task
//! (`core_task`) that owns every peer's [`Fsm`](crate::fsm::Fsm) and the
//! [`Rib`](crate::rib::Rib) and carries out their actions. The agent talks to
//! it through [`Speaker`]; best-route changes come out of the [`RouteFeed`].
//!
//! Sockets are created on the runtime's threads: run the runtime in the
//! network namespace the speaker belongs to.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tracing::Instrument;

use ipnet::IpNet;
use netgauze_bgp_pkt::notification::BgpNotificationMessage;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::attrs::CommunitySet;
use crate::codec::Afi;
use crate::error::BgpError;
use crate::fsm::{ConnId, GracefulRestart, State};
use crate::policy::{BgpFilter, Guard};
use crate::rib::{AdjRibInEntry, LocRibEntry, RouteChange};

mod conn;
mod core_task;
pub mod sockopt;

use self::core_task::Core;
use self::sockopt::Listener;

/// The BGP port.
pub const BGP_PORT: u16 = 179;

/// Speaker-wide settings.
#[derive(Debug, Clone)]
pub struct SpeakerConfig {
    pub router_id: Ipv4Addr,
    pub local_as: u32,
    /// Where to accept connections (port 179 normally), IPv4 and IPv6
    /// addresses; empty: only connect. `[::]` alone takes IPv4 too; next to
    /// an IPv4 address every IPv6 socket is IPv6-only.
    pub listen: Vec<SocketAddr>,
    /// Hold time we offer (0: no keepalives; else at least 3).
    pub hold_time: u16,
    pub connect_retry: u16,
    /// Route reflector CLUSTER_ID; defaults to the router ID.
    pub cluster_id: Option<Ipv4Addr>,
    pub graceful_restart: Option<GracefulRestart>,
    /// Next hops for a family the session's own address is not of (an IPv6
    /// next hop for IPv6 prefixes over an IPv4 session, and the reverse).
    pub next_hop_v4: Option<Ipv4Addr>,
    pub next_hop_v6: Option<Ipv6Addr>,
    /// The import guard to start with ([`Speaker::set_guard`] replaces it).
    pub guard: Guard,
    /// ECMP: most next hops a best route is installed over (paths equal up
    /// to the router-ID / peer-address tie breakers); 1: the best only.
    pub max_paths: usize,
    /// Our own routes are still to be originated: no End-of-RIB goes out
    /// until [`Speaker::local_routes_complete`]. A peer keeping our routes
    /// across our restart drops every one not announced again by our
    /// End-of-RIB, so it must not come before our table is whole.
    pub local_routes_pending: bool,
}

impl SpeakerConfig {
    pub fn new(router_id: Ipv4Addr, local_as: u32) -> SpeakerConfig {
        SpeakerConfig {
            router_id,
            local_as,
            listen: vec![SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), BGP_PORT)],
            hold_time: 90,
            connect_retry: 30,
            cluster_id: None,
            graceful_restart: Some(GracefulRestart::default()),
            next_hop_v4: None,
            next_hop_v6: None,
            guard: Guard::default(),
            max_paths: 1,
            local_routes_pending: false,
        }
    }

    fn validate(&self) -> Result<(), BgpError> {
        if self.local_as == 0 {
            return Err(BgpError::Config("the local AS must not be 0".into()));
        }
        if self.router_id.is_unspecified() {
            return Err(BgpError::Config("the router ID must not be 0.0.0.0".into()));
        }
        if self.hold_time != 0 && self.hold_time < 3 {
            return Err(BgpError::Config(format!(
                "hold time {} is neither 0 nor at least 3 seconds",
                self.hold_time
            )));
        }
        if self.connect_retry == 0 {
            return Err(BgpError::Config(
                "connect retry must be at least 1 second".into(),
            ));
        }
        if self.max_paths == 0 {
            return Err(BgpError::Config("max_paths must be at least 1".into()));
        }
        for (i, a) in self.listen.iter().enumerate() {
            if self.listen[..i].contains(a) {
                return Err(BgpError::Config(format!(
                    "listen address {a} is given twice"
                )));
            }
        }
        Ok(())
    }
}

/// A TCP MD5 key (RFC 2385); never shown in logs or Debug output.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn new(key: impl Into<String>) -> Password {
        Password(key.into())
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

/// A prefix limit: more than `limit` prefixes received from the peer (in
/// its Adj-RIB-In, accepted or not, since all are kept) reset the session
/// with Cease / Maximum Number of Prefixes Reached (RFC 4486), and it stays
/// down for `restart` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPrefixes {
    pub limit: u32,
    pub restart: u16,
}

/// One neighbour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub address: IpAddr,
    pub remote_as: u32,
    /// Our AS towards this peer; defaults to the speaker's.
    pub local_as: Option<u32>,
    /// A route-reflector client of ours (RFC 4456).
    pub rr_client: bool,
    /// Never connect; wait for the peer.
    pub passive: bool,
    /// The peer's port (179).
    pub port: u16,
    /// Local address to connect from.
    pub source: Option<IpAddr>,
    /// TCP MD5 signatures (RFC 2385) with this key, on our listening
    /// sockets for the peer's address and on our connections to it.
    pub password: Option<Password>,
    /// GTSM (RFC 5082): the peer is at most this many hops away (1: on a
    /// connected subnet); we send with TTL 255 and refuse what arrives
    /// below 256 - hops.
    pub ttl_security: Option<u8>,
    pub max_prefixes: Option<MaxPrefixes>,
    /// Graceful restart (Calico's maxRestartTime): the Restart Time we
    /// announce to this peer, and the longest we keep its stale routes.
    /// None: the speaker's restart time, and the peer's.
    pub graceful_restart_time: Option<u16>,
    /// Import and export filters, in order (first matching rule wins).
    pub filters: Vec<BgpFilter>,
    /// Communities added to everything sent to this peer.
    pub export_communities: CommunitySet,
}

impl PeerConfig {
    pub fn new(address: IpAddr, remote_as: u32) -> PeerConfig {
        PeerConfig {
            address,
            remote_as,
            local_as: None,
            rr_client: false,
            passive: false,
            port: BGP_PORT,
            source: None,
            password: None,
            ttl_security: None,
            max_prefixes: None,
            graceful_restart_time: None,
            filters: Vec::new(),
            export_communities: CommunitySet::default(),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), BgpError> {
        let bad = |why: String| Err(BgpError::Config(format!("peer {}: {why}", self.address)));
        if self.remote_as == 0 || self.local_as == Some(0) {
            return bad("AS 0 is reserved".into());
        }
        if let Some(p) = &self.password {
            if p.as_bytes().is_empty() || p.as_bytes().len() > sockopt::MD5_MAX_KEY {
                return bad(format!(
                    "a TCP MD5 password has 1 to {} bytes",
                    sockopt::MD5_MAX_KEY
                ));
            }
        }
        if self.ttl_security == Some(0) {
            return bad("TTL security needs at least 1 hop".into());
        }
        if let Some(m) = self.max_prefixes {
            if m.limit == 0 || m.restart == 0 {
                return bad("a prefix limit and its restart time are at least 1".into());
            }
        }
        for f in &self.filters {
            if let Err(e) = f.validate() {
                return bad(e);
            }
        }
        Ok(())
    }

    /// The same peer with only its policy (filters, export communities,
    /// prefix limit) different: applied without resetting the session.
    fn same_session(&self, other: &PeerConfig) -> bool {
        let policy = |p: &PeerConfig| PeerConfig {
            filters: Vec::new(),
            export_communities: CommunitySet::default(),
            max_prefixes: None,
            ..p.clone()
        };
        policy(self) == policy(other)
    }
}

/// A peer's status for `plexusctl bgp status` (serialisable for the
/// run-dir socket).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PeerStatus {
    pub address: IpAddr,
    pub remote_as: u32,
    pub ibgp: bool,
    pub state: State,
    /// When the state last changed.
    pub since: SystemTime,
    pub last_error: Option<String>,
    pub remote_id: Option<Ipv4Addr>,
    /// In the Adj-RIB-In, before policy.
    pub prefixes_received: usize,
    pub prefixes_accepted: usize,
    /// Rejected by the default import rules (loops and the guard).
    pub prefixes_rejected_by_guard: usize,
    pub prefixes_rejected_by_filter: usize,
    pub prefixes_sent: usize,
    /// The peer has sent its whole table (End-of-RIB for every family).
    pub synced: bool,
}

/// Best-route changes for the routing component, in order.
pub type RouteFeed = mpsc::UnboundedReceiver<RouteChange>;

enum Command {
    AddPeer(PeerConfig, oneshot::Sender<Result<(), BgpError>>),
    UpdatePeer(PeerConfig, oneshot::Sender<Result<(), BgpError>>),
    RemovePeer(IpAddr, oneshot::Sender<Result<(), BgpError>>),
    BfdDown(IpAddr, oneshot::Sender<Result<(), BgpError>>),
    /// Some(communities): originate; None: withdraw.
    Originate(IpNet, Option<CommunitySet>, oneshot::Sender<()>),
    Refresh(IpAddr, Afi, oneshot::Sender<Result<(), BgpError>>),
    Status(oneshot::Sender<Vec<PeerStatus>>),
    LocRib(oneshot::Sender<Vec<LocRibEntry>>),
    AdjRibIn(Option<IpAddr>, oneshot::Sender<Vec<AdjRibInEntry>>),
    SetGuard(Guard, oneshot::Sender<()>),
    SetClusterId(Option<Ipv4Addr>, oneshot::Sender<()>),
    LocalRoutesComplete(oneshot::Sender<()>),
    Shutdown(oneshot::Sender<Vec<JoinHandle<()>>>),
}

enum Internal {
    Cmd(Command),
    Accepted(TcpStream, SocketAddr),
    Connected(IpAddr, TcpStream),
    ConnectFailed(IpAddr, conn::ConnectError),
    Frame(ConnId, Vec<u8>),
    Malformed(ConnId, BgpNotificationMessage),
    Closed(ConnId),
}

/// The agent's handle on the speaker.
#[derive(Debug)]
pub struct Speaker {
    tx: mpsc::UnboundedSender<Internal>,
    listen: Vec<SocketAddr>,
    core: Option<JoinHandle<()>>,
    listeners: Vec<JoinHandle<()>>,
}

impl Drop for Speaker {
    /// Without [`Speaker::shutdown`]: stop at once; connections close
    /// without a NOTIFICATION (peers doing graceful restart keep our routes).
    fn drop(&mut self) {
        for task in self.core.take().into_iter().chain(self.listeners.drain(..)) {
            task.abort();
        }
    }
}

impl std::fmt::Debug for Internal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Internal")
    }
}

impl Speaker {
    /// Start the speaker (and its listeners) on the current tokio runtime.
    pub async fn start(cfg: SpeakerConfig) -> Result<(Speaker, RouteFeed), BgpError> {
        cfg.validate()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (feed_tx, feed_rx) = mpsc::unbounded_channel();
        let any_v4 = cfg.listen.iter().any(SocketAddr::is_ipv4);
        let mut listeners = Vec::new();
        for &addr in &cfg.listen {
            let l =
                Listener::bind(addr, any_v4).map_err(|source| BgpError::Listen { addr, source })?;
            listeners.push(Arc::new(l));
        }
        let tasks = listeners
            .iter()
            .map(|l| {
                let (l, tx) = (l.clone(), tx.clone());
                tokio::spawn(async move {
                    loop {
                        match l.socket.accept().await {
                            Ok((s, from)) => {
                                if tx.send(Internal::Accepted(s, from)).is_err() {
                                    return;
                                }
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, addr = %l.addr, "BGP accept failed");
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                    }
                })
            })
            .collect();
        let listen = listeners.iter().map(|l| l.addr).collect();
        let core = Core::new(cfg, listeners, tx.clone(), feed_tx);
        let core = tokio::spawn(core.run(rx).in_current_span());
        Ok((
            Speaker {
                tx,
                listen,
                core: Some(core),
                listeners: tasks,
            },
            feed_rx,
        ))
    }

    /// The first address a listener is bound to (its port when 0 was asked).
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen.first().copied()
    }

    /// Every address a listener is bound to.
    pub fn listen_addrs(&self) -> &[SocketAddr] {
        &self.listen
    }

    async fn ask<T>(&self, f: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, BgpError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Internal::Cmd(f(tx)))
            .map_err(|_| BgpError::Stopped)?;
        rx.await.map_err(|_| BgpError::Stopped)
    }

    pub async fn add_peer(&self, peer: PeerConfig) -> Result<(), BgpError> {
        self.ask(|tx| Command::AddPeer(peer, tx)).await?
    }

    /// A configured peer's new settings. Filters, export communities and
    /// the prefix limit apply at once, without touching the session (the
    /// stored paths are judged again); anything else re-creates the peer
    /// (its session is reset).
    pub async fn update_peer(&self, peer: PeerConfig) -> Result<(), BgpError> {
        self.ask(|tx| Command::UpdatePeer(peer, tx)).await?
    }

    /// Stop a peer's session (Cease) and withdraw its routes.
    pub async fn remove_peer(&self, address: IpAddr) -> Result<(), BgpError> {
        self.ask(|tx| Command::RemovePeer(address, tx)).await?
    }

    /// BFD saw the path to the peer fail: its session goes down now (no
    /// graceful restart), its routes are withdrawn, and it reconnects as
    /// usual.
    pub async fn bfd_down(&self, address: IpAddr) -> Result<(), BgpError> {
        self.ask(|tx| Command::BfdDown(canonical(address), tx))
            .await?
    }

    /// Announce one of the node's prefixes.
    pub async fn originate(&self, prefix: IpNet) -> Result<(), BgpError> {
        self.originate_with(prefix, CommunitySet::default()).await
    }

    /// Announce one of the node's prefixes with communities (its pool's);
    /// announcing it again with other communities replaces them.
    pub async fn originate_with(
        &self,
        prefix: IpNet,
        communities: CommunitySet,
    ) -> Result<(), BgpError> {
        self.ask(|tx| Command::Originate(prefix.trunc(), Some(communities), tx))
            .await
    }

    pub async fn withdraw(&self, prefix: IpNet) -> Result<(), BgpError> {
        self.ask(|tx| Command::Originate(prefix.trunc(), None, tx))
            .await
    }

    /// Ask a peer to send its routes of one family again (RFC 2918), e.g.
    /// after the routing component lost its table.
    pub async fn refresh(&self, address: IpAddr, afi: Afi) -> Result<(), BgpError> {
        self.ask(|tx| Command::Refresh(canonical(address), afi, tx))
            .await?
    }

    pub async fn status(&self) -> Result<Vec<PeerStatus>, BgpError> {
        self.ask(Command::Status).await
    }

    /// A new route-reflector CLUSTER_ID (None: the router ID) for routes
    /// reflected from now on; sessions are left as they are (re-establish
    /// them to re-send what was reflected with the old one).
    pub async fn set_cluster_id(&self, id: Option<Ipv4Addr>) -> Result<(), BgpError> {
        self.ask(|tx| Command::SetClusterId(id, tx)).await
    }

    /// Every route of ours is originated (with
    /// [`SpeakerConfig::local_routes_pending`]): End-of-RIB may go out.
    pub async fn local_routes_complete(&self) -> Result<(), BgpError> {
        self.ask(Command::LocalRoutesComplete).await
    }

    /// The Loc-RIB: prefix, the peer of its best path (None: ours), attributes.
    pub async fn loc_rib(&self) -> Result<Vec<LocRibEntry>, BgpError> {
        self.ask(Command::LocRib).await
    }

    /// What was received (from one peer, or all) before policy, with each
    /// path's verdict.
    pub async fn adj_rib_in(&self, peer: Option<IpAddr>) -> Result<Vec<AdjRibInEntry>, BgpError> {
        self.ask(|tx| Command::AdjRibIn(peer.map(canonical), tx))
            .await
    }

    /// A new import guard: every received path is judged again and the
    /// best-route changes that follow go out on the feed at once.
    pub async fn set_guard(&self, guard: Guard) -> Result<(), BgpError> {
        self.ask(|tx| Command::SetGuard(guard, tx)).await
    }

    /// Cease every session and stop; waits (at most a second) for the
    /// NOTIFICATIONs to be written.
    pub async fn shutdown(mut self) {
        if let Ok(writers) = self.ask(Command::Shutdown).await {
            let all = futures_join(writers);
            let _ = tokio::time::timeout(Duration::from_secs(1), all).await;
        }
        if let Some(core) = self.core.take() {
            let _ = core.await;
        }
    }
}

async fn futures_join(handles: Vec<JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}

/// An address as the peer table keys it (IPv4-mapped IPv6 as IPv4).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}
