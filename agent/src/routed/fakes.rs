//! In-memory stand-ins for the kernel's route table and the BGP speaker,
//! for the routed control logic's unit tests (no root, no sockets).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use ipnet::IpNet;
use plexus_bgp::attrs::PathAttrs;
use plexus_bgp::fsm::State;
use plexus_bgp::{BestRoute, BgpError, PeerConfig, PeerStatus, RouteChange};

use super::bgp::Announcer;
use super::encap::Hop;
use super::kernel::{RouteTable, PROTO_BLOCK};

pub fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// A best-route change: `via` None is a removal.
pub fn best(prefix: &str, via: Option<&str>) -> RouteChange {
    RouteChange {
        prefix: net(prefix),
        route: via.map(|v| {
            let ip: IpAddr = v.parse().unwrap();
            BestRoute {
                next_hop: ip,
                next_hops: vec![ip],
                peer: ip,
                attrs: Arc::new(PathAttrs {
                    next_hop: Some(ip),
                    ..PathAttrs::local()
                }),
            }
        }),
    }
}

/// (protocol, prefix) → next hop; the tunnel device's address, if up.
#[derive(Default)]
pub struct FakeRoutes {
    table: Mutex<BTreeMap<(u8, IpNet), Option<Hop>>>,
    tunnel: Mutex<Option<Ipv4Addr>>,
    fail: AtomicBool,
    calls: AtomicUsize,
}

impl FakeRoutes {
    pub fn put(&self, proto: u8, prefix: &str, via: Option<&str>) {
        self.table.lock().unwrap().insert(
            (proto, net(prefix)),
            via.map(|v| Hop::direct(v.parse().unwrap())),
        );
    }
    /// (prefix, next hop), the next hop followed by " tunl0" for a route
    /// through the tunnel.
    pub fn table(&self, proto: u8) -> Vec<(String, Option<String>)> {
        self.table
            .lock()
            .unwrap()
            .iter()
            .filter(|((p, _), _)| *p == proto)
            .map(|((_, d), v)| {
                let via = v.map(|h| match h.tunnel {
                    true => format!("{} tunl0", h.next_hop),
                    false => h.next_hop.to_string(),
                });
                (d.to_string(), via)
            })
            .collect()
    }
    /// The tunnel device's address (None: down or absent).
    pub fn tunnel(&self) -> Option<Ipv4Addr> {
        *self.tunnel.lock().unwrap()
    }
    pub fn prefixes(&self, proto: u8) -> Vec<String> {
        self.table(proto).into_iter().map(|(d, _)| d).collect()
    }
    /// Make every change fail (a kernel refusing).
    pub fn fail(&self, on: bool) {
        self.fail.store(on, Ordering::SeqCst);
    }
    /// How many changes were asked for.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
    fn change(&self) -> anyhow::Result<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.fail.load(Ordering::SeqCst) {
            anyhow::bail!("the fake kernel refuses");
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl RouteTable for FakeRoutes {
    async fn ours(&self, proto: u8) -> anyhow::Result<BTreeSet<IpNet>> {
        Ok(self.prefixes(proto).iter().map(|p| net(p)).collect())
    }
    async fn add_blackhole(&self, block: IpNet) -> anyhow::Result<()> {
        self.change()?;
        self.table
            .lock()
            .unwrap()
            .insert((PROTO_BLOCK, block), None);
        Ok(())
    }
    async fn install(&self, prefix: IpNet, hop: Hop) -> anyhow::Result<()> {
        self.change()?;
        // As the kernel: no route through a device that is not there.
        if hop.tunnel && self.tunnel().is_none() {
            anyhow::bail!("no tunnel device");
        }
        self.table
            .lock()
            .unwrap()
            .insert((super::kernel::PROTO_BGP, prefix), Some(hop));
        Ok(())
    }
    async fn remove(&self, prefix: IpNet, proto: u8) -> anyhow::Result<()> {
        self.change()?;
        self.table.lock().unwrap().remove(&(proto, prefix));
        Ok(())
    }
    async fn underlay(&self, ip: Ipv4Addr) -> anyhow::Result<Option<(ipnet::Ipv4Net, u32)>> {
        Ok(Some((ipnet::Ipv4Net::new(ip, 24)?, 1500)))
    }
    async fn tunnel_up(&self, address: Ipv4Addr, _underlay_mtu: u32) -> anyhow::Result<()> {
        self.change()?;
        *self.tunnel.lock().unwrap() = Some(address);
        Ok(())
    }
    async fn tunnel_down(&self) -> anyhow::Result<()> {
        self.change()?;
        *self.tunnel.lock().unwrap() = None;
        Ok(())
    }
}

/// What was originated; one peer whose End-of-RIB state the test sets.
#[derive(Default)]
pub struct FakeBgp {
    originated: Mutex<BTreeSet<IpNet>>,
    cluster_id: Mutex<Option<Ipv4Addr>>,
    /// Peers added so far (a re-established session counts again).
    pub added: AtomicUsize,
    peers: Mutex<BTreeMap<IpAddr, PeerConfig>>,
    synced: AtomicBool,
}

impl FakeBgp {
    pub fn originated(&self) -> Vec<String> {
        self.originated
            .lock()
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect()
    }
    pub fn cluster_id(&self) -> Option<Ipv4Addr> {
        *self.cluster_id.lock().unwrap()
    }
    /// The local AS each peer is configured with.
    pub fn local_as(&self) -> Vec<Option<u32>> {
        self.peers
            .lock()
            .unwrap()
            .values()
            .map(|p| p.local_as)
            .collect()
    }
    /// The configured peers: (address, remote AS, rr client).
    pub fn peer_list(&self) -> Vec<(String, u32, bool)> {
        self.peers
            .lock()
            .unwrap()
            .values()
            .map(|p| (p.address.to_string(), p.remote_as, p.rr_client))
            .collect()
    }
    pub fn set_synced(&self, on: bool) {
        self.synced.store(on, Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl Announcer for FakeBgp {
    async fn add_peer(&self, peer: PeerConfig) -> Result<(), BgpError> {
        let mut peers = self.peers.lock().unwrap();
        if peers.contains_key(&peer.address) {
            return Err(BgpError::Config(format!(
                "{} is a peer already",
                peer.address
            )));
        }
        peers.insert(peer.address, peer);
        self.added.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    async fn remove_peer(&self, address: IpAddr) -> Result<(), BgpError> {
        self.peers.lock().unwrap().remove(&address);
        Ok(())
    }
    async fn originate(&self, prefix: IpNet) -> Result<(), BgpError> {
        self.originated.lock().unwrap().insert(prefix);
        Ok(())
    }
    async fn withdraw(&self, prefix: IpNet) -> Result<(), BgpError> {
        self.originated.lock().unwrap().remove(&prefix);
        Ok(())
    }
    async fn set_cluster_id(&self, id: Option<Ipv4Addr>) -> Result<(), BgpError> {
        *self.cluster_id.lock().unwrap() = id;
        Ok(())
    }
    async fn peers(&self) -> Result<Vec<PeerStatus>, BgpError> {
        Ok(vec![PeerStatus {
            address: "10.0.0.2".parse().unwrap(),
            remote_as: 64512,
            ibgp: true,
            state: State::Established,
            since: SystemTime::now(),
            last_error: None,
            remote_id: None,
            prefixes_received: 0,
            prefixes_accepted: 0,
            prefixes_rejected_by_guard: 0,
            prefixes_rejected_by_filter: 0,
            prefixes_sent: 0,
            synced: self.synced.load(Ordering::SeqCst),
        }])
    }
}
