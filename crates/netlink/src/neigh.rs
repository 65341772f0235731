//! Permanent IP neighbour (ARP/NDP) entries.

use std::net::IpAddr;

use rtnetlink::packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::RouteType;
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::error::Result;
use crate::handle::Netlink;
use crate::mac::MacAddr;

/// A neighbour entry (IP -> MAC on a link).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Neighbour {
    pub index: u32,
    pub ip: IpAddr,
    pub mac: Option<MacAddr>,
    pub permanent: bool,
}

pub(crate) fn neigh_addr(ip: IpAddr) -> NeighbourAddress {
    match ip {
        IpAddr::V4(a) => NeighbourAddress::Inet(a),
        IpAddr::V6(a) => NeighbourAddress::Inet6(a),
    }
}

pub(crate) fn from_neigh_addr(a: &NeighbourAddress) -> Option<IpAddr> {
    match a {
        NeighbourAddress::Inet(a) => Some(IpAddr::V4(*a)),
        NeighbourAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        // AF_BRIDGE (FDB) messages carry the remote's address untyped.
        NeighbourAddress::Other(v) => match v.len() {
            4 => <[u8; 4]>::try_from(v.as_slice()).ok().map(IpAddr::from),
            16 => <[u8; 16]>::try_from(v.as_slice()).ok().map(IpAddr::from),
            _ => None,
        },
        _ => None,
    }
}

pub(crate) fn neigh_msg(index: u32, ip: IpAddr, mac: Option<MacAddr>) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    m.header.ifindex = index;
    m.header.state = NeighbourState::Permanent;
    m.header.kind = RouteType::Unspec;
    m.attributes
        .push(NeighbourAttribute::Destination(neigh_addr(ip)));
    if let Some(mac) = mac {
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
    }
    m
}

impl Netlink {
    /// Adds a permanent neighbour; fails with [`crate::Error::is_exists`] if present.
    pub async fn neigh_add(&self, index: u32, ip: IpAddr, mac: MacAddr) -> Result<()> {
        self.ack(
            RouteNetlinkMessage::NewNeighbour(neigh_msg(index, ip, Some(mac))),
            NLM_F_CREATE | NLM_F_EXCL,
            format!("add neighbour {ip} lladdr {mac} on link #{index}"),
        )
        .await
    }

    /// Adds or replaces a permanent neighbour.
    pub async fn neigh_replace(&self, index: u32, ip: IpAddr, mac: MacAddr) -> Result<()> {
        self.ack(
            RouteNetlinkMessage::NewNeighbour(neigh_msg(index, ip, Some(mac))),
            NLM_F_CREATE | NLM_F_REPLACE,
            format!("replace neighbour {ip} lladdr {mac} on link #{index}"),
        )
        .await
    }

    /// Deletes a neighbour; fails with [`crate::Error::is_not_found`] if absent.
    pub async fn neigh_del(&self, index: u32, ip: IpAddr) -> Result<()> {
        self.ack(
            RouteNetlinkMessage::DelNeighbour(neigh_msg(index, ip, None)),
            0,
            format!("delete neighbour {ip} on link #{index}"),
        )
        .await
    }

    /// Lists IPv4/IPv6 neighbours, of one link if `index` is given.
    pub async fn neighbours(&self, index: Option<u32>) -> Result<Vec<Neighbour>> {
        let mut out = Vec::new();
        for fam in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut m = NeighbourMessage::default();
            m.header.family = fam;
            let msgs = self
                .dump(RouteNetlinkMessage::GetNeighbour(m), "list neighbours")
                .await?;
            for msg in &msgs {
                let RouteNetlinkMessage::NewNeighbour(n) = msg else {
                    continue;
                };
                if index.is_some_and(|i| i != n.header.ifindex) {
                    continue;
                }
                let mut ip = None;
                let mut mac = None;
                for a in &n.attributes {
                    match a {
                        NeighbourAttribute::Destination(d) => ip = from_neigh_addr(d),
                        NeighbourAttribute::LinkLayerAddress(l) => mac = MacAddr::from_slice(l),
                        _ => {}
                    }
                }
                if let Some(ip) = ip {
                    out.push(Neighbour {
                        index: n.header.ifindex,
                        ip,
                        mac,
                        permanent: n.header.state == NeighbourState::Permanent,
                    });
                }
            }
        }
        Ok(out)
    }
}
