//! BFD for the BGP sessions that ask for it: one BFD session per such
//! peer (from the node's address of the peer's family), kept equal to the
//! peer table; a BFD Down that means a path failure tears the BGP session
//! down at once ([`Announcer::bfd_down`]), so its routes leave the kernel
//! within the detection time instead of the hold time. A BFD Up changes
//! nothing: BGP reconnects on its own.
//!
//! The runtime ([`crate::bfd`]) starts with the first peer that has BFD
//! on: a node without it never opens port 3784.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plexus_ipam::BfdSettings;
use tracing::Instrument;

use super::bgp::Announcer;
use super::PeerTable;
use crate::bfd::{self, Bfd, Intervals, SessionStatus};

/// One BFD session as configured: the local address and the settings.
type Want = BTreeMap<IpAddr, (IpAddr, BfdSettings)>;

pub struct BfdLink {
    speaker: Arc<dyn Announcer>,
    v4: Ipv4Addr,
    v6: Option<Ipv6Addr>,
    runtime: tokio::sync::Mutex<Option<(Bfd, super::AbortOnDrop)>>,
    have: Mutex<Want>,
}

impl BfdLink {
    pub fn new(speaker: Arc<dyn Announcer>, v4: Ipv4Addr, v6: Option<Ipv6Addr>) -> BfdLink {
        BfdLink {
            speaker,
            v4,
            v6,
            runtime: tokio::sync::Mutex::new(None),
            have: Mutex::new(BTreeMap::new()),
        }
    }

    /// What the peer table asks for.
    fn wanted(&self, table: &PeerTable) -> Want {
        let t = table.lock().unwrap_or_else(|p| p.into_inner());
        t.iter()
            .filter_map(|(peer, d)| {
                let b = d.bfd?;
                let local = match peer {
                    IpAddr::V4(_) => IpAddr::V4(self.v4),
                    IpAddr::V6(_) => match self.v6 {
                        Some(v6) => IpAddr::V6(v6),
                        None => {
                            tracing::warn!(%peer, "BFD for an IPv6 peer needs --public-ipv6: no BFD session");
                            return None;
                        }
                    },
                };
                Some((*peer, (local, b)))
            })
            .collect()
    }

    /// Bring the BFD sessions in line with the peer table.
    pub async fn sync(&self, table: &PeerTable) {
        let want = self.wanted(table);
        let have = self.have.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if want == have {
            return;
        }
        let mut rt = self.runtime.lock().await;
        if rt.is_none() {
            if want.is_empty() {
                return;
            }
            match bfd::start() {
                Ok((handle, events)) => {
                    let task =
                        tokio::spawn(follow_events(self.speaker.clone(), events).in_current_span());
                    *rt = Some((handle, super::AbortOnDrop(task)));
                    tracing::info!("BFD runtime started");
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot start BFD: sessions run without it");
                    return;
                }
            }
        }
        let Some((handle, _)) = rt.as_ref() else {
            return;
        };
        for peer in have.keys().filter(|p| !want.contains_key(p)) {
            if let Err(e) = handle.remove_session(*peer).await {
                tracing::warn!(%peer, error = %e, "removing a BFD session");
            }
            tracing::info!(%peer, "BFD session removed");
        }
        let mut done = BTreeMap::new();
        for (peer, (local, b)) in &want {
            if have.get(peer) == Some(&(*local, *b)) {
                done.insert(*peer, (*local, *b));
                continue;
            }
            let iv = Intervals {
                desired_min_tx: Duration::from_millis(b.min_tx_ms.into()),
                required_min_rx: Duration::from_millis(b.min_rx_ms.into()),
            };
            match handle.add_session(*peer, *local, iv, b.multiplier).await {
                Ok(()) => {
                    tracing::info!(%peer, %local, tx_ms = b.min_tx_ms, rx_ms = b.min_rx_ms, multiplier = b.multiplier, "BFD session configured");
                    done.insert(*peer, (*local, *b));
                }
                Err(e) => tracing::warn!(%peer, error = %e, "cannot start a BFD session"),
            }
        }
        *self.have.lock().unwrap_or_else(|p| p.into_inner()) = done;
    }

    /// Every BFD session's status, by peer.
    pub async fn status(&self) -> BTreeMap<IpAddr, SessionStatus> {
        let rt = self.runtime.lock().await;
        let Some((handle, _)) = rt.as_ref() else {
            return BTreeMap::new();
        };
        match handle.status().await {
            Ok(v) => v.into_iter().map(|s| (s.peer, s)).collect(),
            Err(_) => BTreeMap::new(),
        }
    }
}

/// A path failure takes the BGP session down now.
async fn follow_events(speaker: Arc<dyn Announcer>, mut events: bfd::BfdEvents) {
    while let Some(ev) = events.recv().await {
        if ev.is_failure() {
            tracing::warn!(peer = %ev.peer, diag = ?ev.diag, "BFD down: tearing the BGP session down");
            if let Err(e) = speaker.bfd_down(ev.peer).await {
                tracing::warn!(peer = %ev.peer, error = %e, "BFD down: BGP session");
            }
        } else {
            tracing::info!(peer = %ev.peer, state = ?ev.state, remote = ?ev.remote_state, "BFD state");
        }
    }
}
