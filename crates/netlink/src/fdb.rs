//! Bridge forwarding database (FDB) entries, e.g. VXLAN remotes.

use std::net::IpAddr;

use rtnetlink::packet_core::{NLM_F_APPEND, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use rtnetlink::packet_route::neighbour::{
    NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::RouteType;
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::error::Result;
use crate::handle::Netlink;
use crate::mac::MacAddr;
use crate::neigh::{from_neigh_addr, neigh_addr};

/// An FDB entry on a device (`bridge fdb ... dev DEV [dst IP]`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Fdb {
    pub index: u32,
    pub mac: MacAddr,
    /// Remote VTEP (VXLAN).
    pub dst: Option<IpAddr>,
    pub vlan: Option<u16>,
    /// Entry belongs to the master bridge (NTF_MASTER) rather than the
    /// device itself (NTF_SELF, the default, as for VXLAN devices).
    pub master: bool,
    pub permanent: bool,
}

impl Fdb {
    /// A permanent NTF_SELF entry `mac` on device `index`.
    pub fn new(index: u32, mac: MacAddr) -> Fdb {
        Fdb {
            index,
            mac,
            dst: None,
            vlan: None,
            master: false,
            permanent: true,
        }
    }
    pub fn dst(mut self, ip: IpAddr) -> Self {
        self.dst = Some(ip);
        self
    }
    pub fn vlan(mut self, vid: u16) -> Self {
        self.vlan = Some(vid);
        self
    }
    /// Target the master bridge's FDB (NTF_MASTER).
    pub fn master(mut self) -> Self {
        self.master = true;
        self
    }

    fn describe(&self) -> String {
        let mut s = format!("{} on link #{}", self.mac, self.index);
        if let Some(d) = self.dst {
            s += &format!(" dst {d}");
        }
        if let Some(v) = self.vlan {
            s += &format!(" vlan {v}");
        }
        s
    }
}

pub(crate) fn fdb_msg(f: &Fdb) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    m.header.ifindex = f.index;
    m.header.state = if f.permanent {
        NeighbourState::Permanent
    } else {
        NeighbourState::Noarp
    };
    m.header.flags = if f.master {
        NeighbourFlags::Controller
    } else {
        NeighbourFlags::Own
    };
    m.header.kind = RouteType::Unspec;
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(f.mac.0.to_vec()));
    if let Some(ip) = f.dst {
        m.attributes
            .push(NeighbourAttribute::Destination(neigh_addr(ip)));
    }
    if let Some(v) = f.vlan {
        m.attributes.push(NeighbourAttribute::Vlan(v));
    }
    m
}

impl Netlink {
    /// Adds an FDB entry; fails with [`crate::Error::is_exists`] if present.
    pub async fn fdb_add(&self, f: &Fdb) -> Result<()> {
        self.ack(
            RouteNetlinkMessage::NewNeighbour(fdb_msg(f)),
            NLM_F_CREATE | NLM_F_EXCL,
            format!("add fdb {}", f.describe()),
        )
        .await
    }

    /// Adds or replaces an FDB entry (`bridge fdb replace`).
    pub async fn fdb_replace(&self, f: &Fdb) -> Result<()> {
        self.ack(
            RouteNetlinkMessage::NewNeighbour(fdb_msg(f)),
            NLM_F_CREATE | NLM_F_REPLACE,
            format!("replace fdb {}", f.describe()),
        )
        .await
    }

    /// Appends a remote to an FDB entry (`bridge fdb append`, NLM_F_APPEND),
    /// e.g. several all-zero MAC flood entries on a VXLAN device.
    pub async fn fdb_append(&self, f: &Fdb) -> Result<()> {
        self.ack(
            RouteNetlinkMessage::NewNeighbour(fdb_msg(f)),
            NLM_F_CREATE | NLM_F_APPEND,
            format!("append fdb {}", f.describe()),
        )
        .await
    }

    /// Deletes an FDB entry (with `dst`, only that remote); fails with
    /// [`crate::Error::is_not_found`] if absent.
    pub async fn fdb_del(&self, f: &Fdb) -> Result<()> {
        self.ack(
            RouteNetlinkMessage::DelNeighbour(fdb_msg(f)),
            0,
            format!("delete fdb {}", f.describe()),
        )
        .await
    }

    /// Lists FDB entries, of one device if `index` is given.
    pub async fn fdb_list(&self, index: Option<u32>) -> Result<Vec<Fdb>> {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Bridge;
        let msgs = self
            .dump(RouteNetlinkMessage::GetNeighbour(m), "list fdb")
            .await?;
        let mut out = Vec::new();
        for msg in &msgs {
            let RouteNetlinkMessage::NewNeighbour(n) = msg else {
                continue;
            };
            if n.header.family != AddressFamily::Bridge
                || index.is_some_and(|i| i != n.header.ifindex)
            {
                continue;
            }
            let mut mac = None;
            let mut dst = None;
            let mut vlan = None;
            for a in &n.attributes {
                match a {
                    NeighbourAttribute::LinkLayerAddress(l) => mac = MacAddr::from_slice(l),
                    NeighbourAttribute::Destination(d) => dst = from_neigh_addr(d),
                    NeighbourAttribute::Vlan(v) => vlan = Some(*v),
                    _ => {}
                }
            }
            let Some(mac) = mac else { continue };
            out.push(Fdb {
                index: n.header.ifindex,
                mac,
                dst,
                vlan,
                master: n.header.flags.contains(NeighbourFlags::Controller),
                permanent: n.header.state == NeighbourState::Permanent,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flood_entry_message() {
        let f = Fdb::new(4, MacAddr::ZERO).dst("192.0.2.7".parse().unwrap());
        let m = fdb_msg(&f);
        assert_eq!(m.header.family, AddressFamily::Bridge);
        assert_eq!(m.header.flags, NeighbourFlags::Own);
        assert_eq!(m.header.state, NeighbourState::Permanent);
        assert!(m
            .attributes
            .contains(&NeighbourAttribute::LinkLayerAddress(vec![0; 6])));
        assert_eq!(m.attributes.len(), 2);
    }
}
