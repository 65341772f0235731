//! In-memory stand-ins for the kernel (the data plane over its fake
//! kernel, and a fake view of the node) and the BGP speaker, for the
//! routed control logic's unit tests (no root, no sockets).

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
use super::kernel::NodeView;
use crate::dataplane::fake::FakeKernel;
use crate::dataplane::{DataPlane, Entry, Kind};

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

/// A data plane over the fake kernel, for the routed network's unit tests.
pub fn data_plane() -> (DataPlane, FakeKernel) {
    let k = FakeKernel::default();
    let dp = DataPlane::start(k.clone(), None, crate::dataplane::Settings::default());
    (dp, k)
}

/// The fake kernel's routes of `proto` as (prefix, next hop), the next
/// hop followed by " tunl0" for a route through the tunnel (several, for
/// ECMP, joined by ",").
pub fn table(k: &FakeKernel, proto: u8) -> Vec<(String, Option<String>)> {
    k.of_kind(Kind::Route)
        .into_iter()
        .filter_map(|e| match e {
            Entry::Route(r) if r.proto == Some(proto) => Some(r),
            _ => None,
        })
        .map(|r| {
            let hops: Vec<String> = r
                .hops
                .iter()
                .map(|h| {
                    let gw = h.gateway.map(|g| g.to_string()).unwrap_or_default();
                    match h.dev.as_deref() {
                        Some(d) if h.onlink => format!("{gw} {d}"),
                        _ => gw,
                    }
                })
                .collect();
            (r.dst.to_string(), (!r.blackhole).then(|| hops.join(",")))
        })
        .collect()
}

pub fn prefixes(k: &FakeKernel, proto: u8) -> Vec<String> {
    table(k, proto).into_iter().map(|(d, _)| d).collect()
}

/// The tunnel device's address in the fake kernel, if it is up.
pub fn tunnel(k: &FakeKernel) -> Option<Ipv4Addr> {
    let up = k.of_kind(Kind::Link).iter().any(|l| {
        matches!(l, Entry::Link(crate::dataplane::Link::Ipip { name, up: true, .. }) if name == "tunl0")
    });
    if !up {
        return None;
    }
    k.of_kind(Kind::Addr).iter().find_map(|a| match a {
        Entry::Addr {
            dev,
            net: IpNet::V4(n),
        } if dev == "tunl0" => Some(n.addr()),
        _ => None,
    })
}

/// A node whose address is on a /24 of a 1500-byte link.
#[derive(Default)]
pub struct FakeView;

#[async_trait::async_trait]
impl NodeView for FakeView {
    async fn underlay(&self, ip: Ipv4Addr) -> anyhow::Result<Option<(ipnet::Ipv4Net, u32)>> {
        Ok(Some((ipnet::Ipv4Net::new(ip, 24)?, 1500)))
    }
    async fn addresses(&self) -> anyhow::Result<Vec<(IpNet, String)>> {
        Ok(Vec::new())
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
