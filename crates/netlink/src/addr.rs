//! IP addresses on links.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use rtnetlink::packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::error::Result;
use crate::handle::Netlink;

/// Options for [`Netlink::addr_add_with`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AddrOptions {
    /// IPv6: skip duplicate address detection (address usable at once).
    pub nodad: bool,
    /// Do not create the prefix route for the address.
    pub noprefixroute: bool,
    /// Replace an existing address instead of failing with EEXIST.
    pub replace: bool,
}

/// An address assigned to a link.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Address {
    pub index: u32,
    pub net: IpNet,
    pub scope: AddrScope,
    pub label: Option<String>,
    /// IPv6 DAD not finished yet.
    pub tentative: bool,
    pub nodad: bool,
    pub permanent: bool,
}

/// Address scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrScope {
    Universe,
    Site,
    Link,
    Host,
    Other(u8),
}

fn family(ip: &IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn addr_msg(index: u32, net: &IpNet) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.family = family(&net.addr());
    m.header.prefix_len = net.prefix_len();
    m.header.index = index;
    m.attributes.push(AddressAttribute::Address(net.addr()));
    if let IpNet::V4(n) = net {
        m.attributes.push(AddressAttribute::Local(net.addr()));
        if n.prefix_len() < 31 {
            m.attributes
                .push(AddressAttribute::Broadcast(n.broadcast()));
        }
    }
    m
}

fn parse_addr(m: &AddressMessage) -> Option<Address> {
    let mut addr: Option<IpAddr> = None;
    let mut local: Option<IpAddr> = None;
    let mut label = None;
    let mut flags = AddressFlags::from_bits_retain(u32::from(m.header.flags.bits()));
    for a in &m.attributes {
        match a {
            AddressAttribute::Address(ip) => addr = Some(*ip),
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Label(l) => label = Some(l.clone()),
            AddressAttribute::Flags(f) => flags = *f,
            _ => {}
        }
    }
    // For IPv4 IFA_LOCAL is the interface address (IFA_ADDRESS is the peer on p2p links).
    let ip = local.or(addr)?;
    let net = IpNet::new(ip, m.header.prefix_len).ok()?;
    Some(Address {
        index: m.header.index,
        net,
        scope: match m.header.scope {
            AddressScope::Universe => AddrScope::Universe,
            AddressScope::Site => AddrScope::Site,
            AddressScope::Link => AddrScope::Link,
            AddressScope::Host => AddrScope::Host,
            AddressScope::Nowhere => AddrScope::Other(255),
            AddressScope::Other(v) => AddrScope::Other(v),
            _ => AddrScope::Other(0),
        },
        label,
        tentative: flags.contains(AddressFlags::Tentative),
        nodad: flags.contains(AddressFlags::Nodad),
        permanent: flags.contains(AddressFlags::Permanent),
    })
}

impl Netlink {
    /// Adds `net` (address and prefix length, e.g. `10.0.0.2/24`) to a link.
    pub async fn addr_add(&self, index: u32, net: IpNet) -> Result<()> {
        self.addr_add_with(index, net, AddrOptions::default()).await
    }

    /// Adds an address with options (IPv6 nodad, noprefixroute, replace).
    pub async fn addr_add_with(&self, index: u32, net: IpNet, opts: AddrOptions) -> Result<()> {
        let mut m = addr_msg(index, &net);
        let mut flags = AddressFlags::empty();
        if opts.nodad {
            flags |= AddressFlags::Nodad;
        }
        if opts.noprefixroute {
            flags |= AddressFlags::Noprefixroute;
        }
        if !flags.is_empty() {
            m.header.flags = AddressHeaderFlags::from_bits_truncate(flags.bits() as u8);
            m.attributes.push(AddressAttribute::Flags(flags));
        }
        let nl_flags = if opts.replace {
            NLM_F_CREATE | NLM_F_REPLACE
        } else {
            NLM_F_CREATE | NLM_F_EXCL
        };
        self.ack(
            RouteNetlinkMessage::NewAddress(m),
            nl_flags,
            format!("add address {net} on link #{index}"),
        )
        .await
    }

    /// Removes an address; fails with [`crate::Error::is_not_found`] if absent.
    pub async fn addr_del(&self, index: u32, net: IpNet) -> Result<()> {
        self.ack(
            RouteNetlinkMessage::DelAddress(addr_msg(index, &net)),
            0,
            format!("delete address {net} on link #{index}"),
        )
        .await
    }

    /// Lists addresses, of one link if `index` is given.
    pub async fn addrs(&self, index: Option<u32>) -> Result<Vec<Address>> {
        let msgs = self
            .dump(
                RouteNetlinkMessage::GetAddress(AddressMessage::default()),
                "list addresses",
            )
            .await?;
        Ok(msgs
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) => parse_addr(a),
                _ => None,
            })
            .filter(|a| index.is_none_or(|i| a.index == i))
            .collect())
    }
}

/// The IPv4 broadcast address the kernel would use for `net` (None for /31, /32).
pub fn broadcast_v4(net: &ipnet::Ipv4Net) -> Option<Ipv4Addr> {
    (net.prefix_len() < 31).then(|| net.broadcast())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_roundtrip() {
        let net: IpNet = "10.1.2.3/24".parse().unwrap();
        let m = addr_msg(5, &net);
        assert!(m
            .attributes
            .contains(&AddressAttribute::Broadcast("10.1.2.255".parse().unwrap())));
        let a = parse_addr(&m).unwrap();
        assert_eq!(a.net, net);
        assert_eq!(a.index, 5);
        let net6: IpNet = "fd00::1/64".parse().unwrap();
        let m6 = addr_msg(5, &net6);
        assert_eq!(m6.header.family, AddressFamily::Inet6);
        assert_eq!(parse_addr(&m6).unwrap().net, net6);
        assert_eq!(broadcast_v4(&"10.0.0.0/31".parse().unwrap()), None);
    }
}
