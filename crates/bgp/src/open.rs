//! OPEN messages: ours (capabilities: 4-octet AS, MP-BGP IPv4/IPv6 unicast,
//! route refresh, graceful restart) and the checks and negotiation on the
//! peer's (RFC 4271 §6.2, RFC 5492, RFC 6793, RFC 4724).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use netgauze_bgp_pkt::capabilities::{
    BgpCapability, FourOctetAsCapability, GracefulRestartAddressFamily, GracefulRestartCapability,
    MultiProtocolExtensionsCapability,
};
use netgauze_bgp_pkt::iana::AS_TRANS;
use netgauze_bgp_pkt::notification::{BgpNotificationMessage, OpenMessageError};
use netgauze_bgp_pkt::open::{BgpOpenMessage, BgpOpenMessageParameter};

use crate::codec::{self, Afi};

/// Graceful restart (RFC 4724) settings of our side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GracefulRestart {
    /// Restart Time we announce: how long peers keep our routes.
    pub restart_time: u16,
    /// We are restarting (the R bit).
    pub restarting: bool,
    /// Our forwarding state (kernel routes) survived the restart (F bit).
    pub forwarding_preserved: bool,
    /// How long we keep a re-established peer's stale routes waiting for its
    /// End-of-RIB.
    pub stale_time: u16,
}

impl Default for GracefulRestart {
    fn default() -> Self {
        GracefulRestart {
            restart_time: 120,
            restarting: false,
            forwarding_preserved: false,
            stale_time: 360,
        }
    }
}

/// The peer's graceful-restart capability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerGracefulRestart {
    pub restart_time: u16,
    pub restarting: bool,
    /// Families whose forwarding state the peer preserved.
    pub preserved: BTreeSet<Afi>,
    pub families: BTreeSet<Afi>,
}

/// What both sides agreed on in their OPENs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub remote_id: Ipv4Addr,
    pub remote_as: u32,
    /// 0 = no keepalives and no hold timer.
    pub hold_time: u16,
    pub keepalive: u16,
    pub asn4: bool,
    pub families: BTreeSet<Afi>,
    pub route_refresh: bool,
    pub peer_gr: Option<PeerGracefulRestart>,
}

/// Our OPEN: 4-octet AS (AS_TRANS in the 2-octet field when needed),
/// MP-BGP IPv4 and IPv6 unicast, route refresh, graceful restart.
pub fn our_open(
    local_as: u32,
    hold_time: u16,
    router_id: Ipv4Addr,
    gr: Option<GracefulRestart>,
) -> BgpOpenMessage {
    let my_as = u16::try_from(local_as).unwrap_or(AS_TRANS);
    let mut caps = vec![
        BgpCapability::MultiProtocolExtensions(MultiProtocolExtensionsCapability::new(
            Afi::Ipv4.address_type(),
        )),
        BgpCapability::MultiProtocolExtensions(MultiProtocolExtensionsCapability::new(
            Afi::Ipv6.address_type(),
        )),
        BgpCapability::RouteRefresh,
        BgpCapability::FourOctetAs(FourOctetAsCapability::new(local_as)),
    ];
    if let Some(gr) = gr {
        let fams: Vec<GracefulRestartAddressFamily> = [Afi::Ipv4, Afi::Ipv6]
            .iter()
            .map(|a| GracefulRestartAddressFamily::new(gr.forwarding_preserved, a.address_type()))
            .collect();
        caps.push(BgpCapability::GracefulRestartCapability(
            GracefulRestartCapability::new(gr.restarting, false, gr.restart_time, fams),
        ));
    }
    BgpOpenMessage::new(
        my_as,
        hold_time,
        router_id,
        vec![BgpOpenMessageParameter::new_capabilities(caps)],
    )
}

/// Check the peer's OPEN (RFC 4271 §6.2) and agree on the session's
/// parameters.
pub fn negotiate(
    open: &BgpOpenMessage,
    expected_as: u32,
    router_id: Ipv4Addr,
    hold_time: u16,
) -> Result<Negotiated, BgpNotificationMessage> {
    let remote_as = open.my_asn4();
    if remote_as != expected_as {
        return Err(codec::open_error(OpenMessageError::BadPeerAs {
            value: open.my_as().to_be_bytes().into(),
        }));
    }
    let id = open.bgp_id();
    if id.is_unspecified() || id.is_multicast() || id.is_broadcast() || id == router_id {
        return Err(codec::open_error(OpenMessageError::BadBgpIdentifier {
            value: id.octets().into(),
        }));
    }
    if open.hold_time() == 1 || open.hold_time() == 2 {
        return Err(codec::open_error(OpenMessageError::UnacceptableHoldTime {
            value: open.hold_time().to_be_bytes().into(),
        }));
    }
    let hold_time = open.hold_time().min(hold_time);
    let mut neg = Negotiated {
        remote_id: id,
        remote_as,
        hold_time,
        keepalive: (hold_time / 3).max(1),
        asn4: false,
        families: BTreeSet::new(),
        route_refresh: false,
        peer_gr: None,
    };
    let mut mp_seen = false;
    for cap in open.capabilities() {
        match cap {
            BgpCapability::FourOctetAs(_) => neg.asn4 = true,
            BgpCapability::MultiProtocolExtensions(mp) => {
                mp_seen = true;
                neg.families
                    .extend(Afi::from_address_type(mp.address_type()));
            }
            BgpCapability::RouteRefresh | BgpCapability::EnhancedRouteRefresh => {
                neg.route_refresh = true
            }
            BgpCapability::GracefulRestartCapability(gr) => {
                let mut g = PeerGracefulRestart {
                    restart_time: gr.time(),
                    restarting: gr.restart(),
                    preserved: BTreeSet::new(),
                    families: BTreeSet::new(),
                };
                for f in gr.address_families() {
                    if let Some(afi) = Afi::from_address_type(f.address_type()) {
                        g.families.insert(afi);
                        if f.forwarding_state() {
                            g.preserved.insert(afi);
                        }
                    }
                }
                neg.peer_gr = Some(g);
            }
            _ => {}
        }
    }
    // RFC 4760 §8: no MP capability means IPv4 unicast only.
    if !mp_seen {
        neg.families.insert(Afi::Ipv4);
    }
    Ok(neg)
}
