//! Which interface and address the overlay runs over, by flanneld's rules:
//! `--public-ip`, else the address of `--iface`, else the address of the
//! interface holding the default route. [`select`] decides, pure;
//! [`KernelView`] is what the agent reads of the kernel to decide it (and
//! the MAC of an existing device), read-only: everything plexusd writes
//! goes through the data plane.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{anyhow, bail};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use plexus_netlink::route::{RouteFilter, TABLE_MAIN};
use plexus_netlink::{MacAddr, Netlink, Netns};

/// How to find the underlay (flanneld's rules): `--public-ip`, else the
/// address of `--iface`, else of the interface holding the default route.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnderlaySelect {
    pub public_ip: Option<Ipv4Addr>,
    pub iface: Option<String>,
    pub public_ipv6: Option<Ipv6Addr>,
    pub iface_v6: Option<String>,
    /// Which families the network needs.
    pub want_v4: bool,
    pub want_v6: bool,
}

/// The interface the overlay runs over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Underlay {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    /// The public IPv4 address and the on-link network it belongs to.
    pub v4: Option<(Ipv4Addr, Ipv4Net)>,
    /// The IPv6 interface (may differ from the IPv4 one).
    pub v6: Option<Underlay6>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Underlay6 {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    pub addr: Ipv6Addr,
    pub net: Ipv6Net,
}

/// What the agent reads of the kernel (never writes).
#[async_trait::async_trait]
pub trait KernelView: Send {
    /// The underlay interface and the public addresses on it.
    async fn underlay(&mut self, sel: &UnderlaySelect) -> anyhow::Result<Underlay>;
    /// The MAC of VXLAN device `name`, if it exists.
    async fn device_mac(&mut self, name: &str) -> anyhow::Result<Option<MacAddr>>;
}

/// [`KernelView`] over netlink in one namespace.
#[derive(Debug)]
pub struct NetlinkView {
    nl: Netlink,
}

impl NetlinkView {
    pub async fn open(ns: &Netns) -> anyhow::Result<NetlinkView> {
        Ok(NetlinkView {
            nl: Netlink::open(ns).await?,
        })
    }

    async fn default_oif(&self, v4: bool) -> anyhow::Result<Option<u32>> {
        let f = if v4 {
            RouteFilter::v4()
        } else {
            RouteFilter::v6()
        };
        let routes = self.nl.routes(f.table(TABLE_MAIN)).await?;
        Ok(routes
            .iter()
            .filter(|r| r.is_default())
            .min_by_key(|r| r.metric.unwrap_or(0))
            .and_then(|r| r.oif))
    }
}

#[async_trait::async_trait]
impl KernelView for NetlinkView {
    async fn underlay(&mut self, sel: &UnderlaySelect) -> anyhow::Result<Underlay> {
        let mut addrs: BTreeMap<u32, Vec<IpNet>> = BTreeMap::new();
        for a in self.nl.addrs(None).await? {
            addrs.entry(a.index).or_default().push(a.net);
        }
        let ifaces: Vec<Iface> = self
            .nl
            .links()
            .await?
            .into_iter()
            .map(|l| Iface {
                addrs: addrs.remove(&l.index).unwrap_or_default(),
                index: l.index,
                name: l.name,
                mtu: l.mtu,
            })
            .collect();
        let d4 = self.default_oif(true).await?;
        let d6 = if sel.want_v6 {
            self.default_oif(false).await?
        } else {
            None
        };
        select(sel, &ifaces, d4, d6)
    }

    async fn device_mac(&mut self, name: &str) -> anyhow::Result<Option<MacAddr>> {
        Ok(self
            .nl
            .link_by_name(name)
            .await?
            .filter(|l| l.kind.as_deref() == Some("vxlan"))
            .and_then(|l| l.mac))
    }
}

/// An interface as far as the choice is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iface {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    /// Its addresses with their prefix (`192.168.0.2/24`).
    pub addrs: Vec<IpNet>,
}

impl Iface {
    fn v4(&self) -> impl Iterator<Item = Ipv4Net> + '_ {
        self.addrs.iter().filter_map(|a| match a {
            IpNet::V4(n) if !n.addr().is_loopback() => Some(*n),
            _ => None,
        })
    }

    fn v6(&self) -> impl Iterator<Item = Ipv6Net> + '_ {
        self.addrs.iter().filter_map(|a| match a {
            // Link-local and loopback addresses cannot carry the overlay.
            IpNet::V6(n)
                if !n.addr().is_loopback() && (n.addr().segments()[0] & 0xffc0) != 0xfe80 =>
            {
                Some(*n)
            }
            _ => None,
        })
    }
}

fn by_name<'a>(ifaces: &'a [Iface], name: &str) -> anyhow::Result<&'a Iface> {
    ifaces
        .iter()
        .find(|i| i.name == name)
        .ok_or_else(|| anyhow!("interface {name:?} does not exist"))
}

fn by_index(ifaces: &[Iface], index: u32) -> Option<&Iface> {
    ifaces.iter().find(|i| i.index == index)
}

fn holding(ifaces: &[Iface], ip: IpAddr) -> Option<&Iface> {
    ifaces
        .iter()
        .find(|i| i.addrs.iter().any(|a| a.addr() == ip))
}

/// Picks the interface for one family: the named one, else the one
/// holding the given public address, else the default route's.
fn pick<'a>(
    ifaces: &'a [Iface],
    name: Option<&str>,
    public: Option<IpAddr>,
    default_oif: Option<u32>,
    family: &str,
) -> anyhow::Result<&'a Iface> {
    if let Some(n) = name {
        return by_name(ifaces, n);
    }
    if let Some(i) = public.and_then(|ip| holding(ifaces, ip)) {
        return Ok(i);
    }
    default_oif
        .and_then(|i| by_index(ifaces, i))
        .ok_or_else(|| anyhow!("no {family} default route: give --iface or --public-ip"))
}

/// Chooses the underlay. `default_v4`/`default_v6` are the output
/// interfaces of the default routes, if any.
pub fn select(
    sel: &UnderlaySelect,
    ifaces: &[Iface],
    default_v4: Option<u32>,
    default_v6: Option<u32>,
) -> anyhow::Result<Underlay> {
    let mut v4 = None;
    let mut main = None;
    if sel.want_v4 {
        let i = pick(
            ifaces,
            sel.iface.as_deref(),
            sel.public_ip.map(IpAddr::V4),
            default_v4,
            "IPv4",
        )?;
        // The on-link network: the one holding the public IP, else the
        // interface's first (a public IP that is NATed to us).
        let net = match sel.public_ip {
            Some(ip) => i.v4().find(|n| n.contains(&ip)).or_else(|| i.v4().next()),
            None => i.v4().next(),
        };
        let Some(net) = net else {
            bail!("interface {:?} has no IPv4 address", i.name);
        };
        let ip: Ipv4Addr = sel.public_ip.unwrap_or(net.addr());
        v4 = Some((ip, net.trunc()));
        main = Some(i);
    }
    let mut v6 = None;
    if sel.want_v6 {
        let name = sel.iface_v6.as_deref().or(sel.iface.as_deref());
        // Without an IPv6 default route, the IPv4 interface (as flanneld,
        // which uses one external interface for both).
        let i = pick(
            ifaces,
            name,
            sel.public_ipv6.map(IpAddr::V6),
            default_v6.or(main.map(|m: &Iface| m.index)),
            "IPv6",
        )?;
        let net = match sel.public_ipv6 {
            Some(ip) => i.v6().find(|n| n.contains(&ip)).or_else(|| i.v6().next()),
            None => i.v6().next(),
        };
        let Some(net) = net else {
            bail!("interface {:?} has no global IPv6 address", i.name);
        };
        let addr: Ipv6Addr = sel.public_ipv6.unwrap_or(net.addr());
        v6 = Some(Underlay6 {
            index: i.index,
            name: i.name.clone(),
            mtu: i.mtu,
            addr,
            net: net.trunc(),
        });
        main.get_or_insert(i);
    }
    let Some(main) = main else {
        bail!("the network enables neither IPv4 nor IPv6");
    };
    Ok(Underlay {
        index: main.index,
        name: main.name.clone(),
        mtu: main.mtu,
        v4,
        v6,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ifaces() -> Vec<Iface> {
        vec![
            Iface {
                index: 1,
                name: "lo".into(),
                mtu: 65536,
                addrs: vec!["127.0.0.1/8".parse().unwrap(), "::1/128".parse().unwrap()],
            },
            Iface {
                index: 2,
                name: "eth0".into(),
                mtu: 1500,
                addrs: vec![
                    "192.168.0.2/24".parse().unwrap(),
                    "fe80::1/64".parse().unwrap(),
                    "fd00::2/64".parse().unwrap(),
                ],
            },
            Iface {
                index: 3,
                name: "eth1".into(),
                mtu: 9000,
                addrs: vec!["10.9.0.2/16".parse().unwrap()],
            },
        ]
    }

    fn want4() -> UnderlaySelect {
        UnderlaySelect {
            want_v4: true,
            ..Default::default()
        }
    }

    #[test]
    fn default_route_interface() {
        let u = select(&want4(), &ifaces(), Some(3), None).unwrap();
        assert_eq!((u.index, u.mtu), (3, 9000));
        assert_eq!(
            u.v4,
            Some(("10.9.0.2".parse().unwrap(), "10.9.0.0/16".parse().unwrap()))
        );
        let e = select(&want4(), &ifaces(), None, None).unwrap_err();
        assert!(e.to_string().contains("no IPv4 default route"), "{e}");
    }

    #[test]
    fn iface_and_public_ip_flags() {
        let s = UnderlaySelect {
            iface: Some("eth0".into()),
            ..want4()
        };
        let u = select(&s, &ifaces(), Some(3), None).unwrap();
        assert_eq!(u.name, "eth0");
        let s = UnderlaySelect {
            public_ip: Some("192.168.0.2".parse().unwrap()),
            ..want4()
        };
        let u = select(&s, &ifaces(), Some(3), None).unwrap();
        assert_eq!(u.name, "eth0");
        // A public IP on no interface (NAT): the default route's interface.
        let s = UnderlaySelect {
            public_ip: Some("203.0.113.9".parse().unwrap()),
            ..want4()
        };
        let u = select(&s, &ifaces(), Some(2), None).unwrap();
        assert_eq!(u.v4.unwrap().0, "203.0.113.9".parse::<Ipv4Addr>().unwrap());
        let s = UnderlaySelect {
            iface: Some("eth9".into()),
            ..want4()
        };
        assert!(select(&s, &ifaces(), Some(2), None)
            .unwrap_err()
            .to_string()
            .contains("\"eth9\" does not exist"));
    }

    #[test]
    fn ipv6_skips_link_local() {
        let s = UnderlaySelect {
            want_v4: true,
            want_v6: true,
            ..Default::default()
        };
        let u = select(&s, &ifaces(), Some(2), Some(2)).unwrap();
        let v6 = u.v6.unwrap();
        assert_eq!(v6.addr, "fd00::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(v6.net, "fd00::/64".parse::<Ipv6Net>().unwrap());
        let s = UnderlaySelect {
            want_v6: true,
            iface: Some("eth1".into()),
            ..Default::default()
        };
        assert!(select(&s, &ifaces(), None, None).is_err());
    }
}
