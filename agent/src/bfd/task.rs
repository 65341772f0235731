//! The core task: owns [`plexus_bfd::Sessions`], the sockets of each local
//! address and the timers; turns commands, datagrams and expired timers
//! into session events and carries out what the sessions return.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tracing::Instrument;

use plexus_bfd::{Action, Outcome, Params, Rng, Sessions, SplitMix64, State, Timer};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::socket::{self, CONTROL_PORT};
use super::{BfdError, BfdEvent, Command, SessionStatus, Updown};

/// Larger than any Control packet (24 bytes, or up to 52 with an
/// authentication section we refuse anyway).
const RX_BUF: usize = 128;

struct Datagram {
    local: IpAddr,
    src: SocketAddr,
    ttl: Option<u8>,
    bytes: Vec<u8>,
}

struct LocalSockets {
    tx: Arc<UdpSocket>,
    reader: JoinHandle<()>,
}

impl Drop for LocalSockets {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

#[derive(Default)]
struct PeerIo {
    send_errors: u64,
    /// The last send failed (so the next failure is not logged again).
    failing: bool,
}

struct Core {
    sessions: Sessions,
    sockets: HashMap<IpAddr, LocalSockets>,
    timers: BTreeSet<(Instant, IpAddr, Timer)>,
    deadlines: HashMap<(IpAddr, Timer), Instant>,
    io: HashMap<IpAddr, PeerIo>,
    events: mpsc::UnboundedSender<BfdEvent>,
    datagrams: mpsc::Sender<Datagram>,
    /// For choosing the send sockets' source ports.
    rng: SplitMix64,
}

pub(super) async fn run(
    mut cmds: mpsc::Receiver<Command>,
    events: mpsc::UnboundedSender<BfdEvent>,
) {
    let (dg_tx, mut dg_rx) = mpsc::channel(1024);
    let mut core = Core {
        sessions: Sessions::new(Box::new(SplitMix64::from_entropy())),
        sockets: HashMap::new(),
        timers: BTreeSet::new(),
        deadlines: HashMap::new(),
        io: HashMap::new(),
        events,
        datagrams: dg_tx,
        rng: SplitMix64::from_entropy(),
    };
    loop {
        let next = core.timers.first().map(|(at, _, _)| *at);
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            cmd = cmds.recv() => match cmd {
                Some(c) => core.command(c).await,
                None => break,
            },
            Some(d) = dg_rx.recv() => core.datagram(d).await,
            () = sleep => core.fire_due().await,
        }
    }
    core.shutdown().await;
}

impl Core {
    async fn command(&mut self, c: Command) {
        match c {
            Command::Add {
                peer,
                local,
                params,
                reply,
            } => {
                let r = self.add(peer, local, params).await;
                let _ = reply.send(r);
            }
            Command::Remove { peer, reply } => {
                let _ = reply.send(self.remove(peer).await);
            }
            Command::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Command::Counters { reply } => {
                let _ = reply.send(self.sessions.stats().clone());
            }
        }
    }

    async fn add(&mut self, peer: IpAddr, local: IpAddr, params: Params) -> Result<(), BfdError> {
        for a in [peer, local] {
            if let IpAddr::V6(v6) = a {
                if v6.is_unicast_link_local() {
                    return Err(BfdError::LinkLocal(a));
                }
            }
        }
        let now = Instant::now();
        if let Some(e) = self.sessions.get(peer) {
            if e.local == local {
                // Idempotent, so a reconcile loop may call it every time.
                if e.session.params() != params {
                    if let Some(o) = self.sessions.set_params(now, peer, params)? {
                        tracing::info!(%peer, ?params, "BFD parameters changed");
                        self.execute(o).await;
                    }
                }
                return Ok(());
            }
            self.remove(peer).await;
        }
        // Check before opening sockets that would stay unused.
        params
            .validate()
            .map_err(|source| BfdError::Session(plexus_bfd::AddError::Params { peer, source }))?;
        self.ensure_sockets(local)?;
        match self.sessions.add(now, peer, local, params) {
            Ok(o) => {
                tracing::info!(%peer, %local, ?params, "BFD session added");
                self.execute(o).await;
                Ok(())
            }
            Err(e) => {
                self.release_sockets(local).await;
                Err(e.into())
            }
        }
    }

    async fn remove(&mut self, peer: IpAddr) -> bool {
        let Some(o) = self.sessions.remove(Instant::now(), peer) else {
            return false;
        };
        let local = o.local;
        tracing::info!(%peer, %local, "BFD session removed");
        self.execute(o).await;
        for t in [Timer::Tx, Timer::Detect] {
            self.disarm(peer, t);
        }
        self.io.remove(&peer);
        self.release_sockets(local).await;
        true
    }

    fn ensure_sockets(&mut self, local: IpAddr) -> Result<(), BfdError> {
        if self.sockets.contains_key(&local) {
            return Ok(());
        }
        let err = |source| BfdError::Socket { local, source };
        let rx = socket::open_rx(local).map_err(err)?;
        let start = *socket::SOURCE_PORTS.start() + (self.rng.next_u32() % 16384) as u16;
        let tx = socket::open_tx(local, start).map_err(err)?;
        let datagrams = self.datagrams.clone();
        let reader = tokio::spawn(read_loop(local, rx, datagrams).in_current_span());
        self.sockets.insert(
            local,
            LocalSockets {
                tx: Arc::new(tx),
                reader,
            },
        );
        Ok(())
    }

    /// Close the sockets of an address no session uses any more, and wait
    /// until they are closed, so a session added next can bind again.
    async fn release_sockets(&mut self, local: IpAddr) {
        if self.sessions.local_addresses().any(|a| a == local) {
            return;
        }
        if let Some(mut s) = self.sockets.remove(&local) {
            s.reader.abort();
            let _ = (&mut s.reader).await;
        }
    }

    async fn datagram(&mut self, d: Datagram) {
        let now = Instant::now();
        // No TTL reported: treat as failing GTSM.
        let ttl = d.ttl.unwrap_or(0);
        match self
            .sessions
            .receive(now, &d.bytes, d.src.ip(), d.local, ttl)
        {
            Ok(o) => self.execute(o).await,
            Err(why) => {
                tracing::debug!(src = %d.src, local = %d.local, %why, "BFD packet discarded");
            }
        }
    }

    async fn fire_due(&mut self) {
        let now = Instant::now();
        while let Some(&(at, peer, t)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            self.deadlines.remove(&(peer, t));
            if let Some(o) = self.sessions.timer(now, peer, t) {
                self.execute(o).await;
            }
        }
    }

    fn arm(&mut self, peer: IpAddr, t: Timer, at: Instant) {
        self.disarm(peer, t);
        self.deadlines.insert((peer, t), at);
        self.timers.insert((at, peer, t));
    }

    fn disarm(&mut self, peer: IpAddr, t: Timer) {
        if let Some(at) = self.deadlines.remove(&(peer, t)) {
            self.timers.remove(&(at, peer, t));
        }
    }

    async fn execute(&mut self, o: Outcome) {
        let Outcome {
            peer,
            local,
            actions,
        } = o;
        for a in actions {
            match a {
                Action::Send(p) => self.send(peer, local, &p.encode()).await,
                Action::Arm(t, at) => self.arm(peer, t, at),
                Action::Disarm(t) => self.disarm(peer, t),
                Action::StateChanged(c) => {
                    tracing::info!(
                        %peer, %local, from = %c.from, to = %c.to, diag = %c.diag,
                        remote = %c.remote_state, "BFD session state changed"
                    );
                    let state = if c.to == State::Up {
                        Updown::Up
                    } else if c.from == State::Up {
                        Updown::Down
                    } else {
                        continue;
                    };
                    let _ = self.events.send(BfdEvent {
                        peer,
                        local,
                        state,
                        diag: c.diag,
                        remote_state: c.remote_state,
                        at: SystemTime::now(),
                    });
                }
            }
        }
    }

    async fn send(&mut self, peer: IpAddr, local: IpAddr, bytes: &[u8]) {
        let Some(s) = self.sockets.get(&local) else {
            return;
        };
        let r =
            s.tx.send_to(bytes, SocketAddr::new(peer, CONTROL_PORT))
                .await;
        let io = self.io.entry(peer).or_default();
        match r {
            Ok(_) => io.failing = false,
            Err(e) => {
                io.send_errors += 1;
                // A link that is down fails every packet: say it once.
                if !io.failing {
                    tracing::warn!(%peer, %local, error = %e, "BFD packet not sent");
                }
                io.failing = true;
            }
        }
    }

    fn status(&self) -> Vec<SessionStatus> {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let mut v: Vec<SessionStatus> = self
            .sessions
            .entries()
            .map(|e| {
                let session = e.session.status();
                let ago = now.saturating_duration_since(session.last_change);
                SessionStatus {
                    peer: e.peer,
                    local: e.local,
                    last_change: wall.checked_sub(ago).unwrap_or(wall),
                    send_errors: self.io.get(&e.peer).map_or(0, |i| i.send_errors),
                    session,
                }
            })
            .collect();
        v.sort_by_key(|s| s.peer);
        v
    }

    /// Tell every peer AdminDown before the sockets close.
    async fn shutdown(&mut self) {
        let peers: Vec<IpAddr> = self.sessions.entries().map(|e| e.peer).collect();
        for peer in peers {
            self.remove(peer).await;
        }
    }
}

async fn read_loop(local: IpAddr, rx: UdpSocket, out: mpsc::Sender<Datagram>) {
    let mut buf = [0u8; RX_BUF];
    loop {
        match socket::recv_with_ttl(&rx, &mut buf).await {
            Ok((n, src, ttl)) => {
                let d = Datagram {
                    local,
                    src,
                    ttl,
                    bytes: buf[..n.min(RX_BUF)].to_vec(),
                };
                if out.send(d).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                // Transient errors (e.g. an ICMP error queued on the
                // socket) must not end the reader; pause so a persistent one
                // cannot spin.
                tracing::warn!(%local, error = %e, "BFD receive failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}
