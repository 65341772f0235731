//! Routes: add, replace, delete, list; single-path and multipath (ECMP,
//! RTA_MULTIPATH).

use std::net::IpAddr;

use ipnet::IpNet;
use rtnetlink::packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteMetric, RouteNextHop,
    RouteNextHopFlags, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::error::{Error, Result};
use crate::handle::Netlink;

/// The main routing table.
pub const TABLE_MAIN: u32 = 254;
/// The local routing table.
pub const TABLE_LOCAL: u32 = 255;

/// Route scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Universe,
    Site,
    Link,
    Host,
    Nowhere,
}

/// Route type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RouteKind {
    #[default]
    Unicast,
    Local,
    Broadcast,
    Blackhole,
    Unreachable,
    Prohibit,
    Other(u8),
}

/// One path of a multipath route.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NextHop {
    pub gateway: Option<IpAddr>,
    /// Output link index.
    pub oif: Option<u32>,
    /// Relative weight, 1 to 256 (the kernel's rtnh_hops + 1).
    pub weight: u16,
    pub onlink: bool,
}

impl NextHop {
    /// A path via `gateway`, weight 1.
    pub fn via(gateway: IpAddr) -> NextHop {
        NextHop {
            gateway: Some(gateway),
            oif: None,
            weight: 1,
            onlink: false,
        }
    }
    pub fn dev(mut self, index: u32) -> Self {
        self.oif = Some(index);
        self
    }
    /// Clamped to 1..=256.
    pub fn weight(mut self, weight: u16) -> Self {
        self.weight = weight.clamp(1, 256);
        self
    }
    pub fn onlink(mut self) -> Self {
        self.onlink = true;
        self
    }
}

/// A route: what to add/replace/delete, and what listing returns.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Route {
    /// Destination; `0.0.0.0/0` or `::/0` for a default route.
    pub dst: IpNet,
    pub gateway: Option<IpAddr>,
    /// Output link index.
    pub oif: Option<u32>,
    pub table: u32,
    /// None: universe with a gateway, link for an IPv4 device route (like iproute2).
    pub scope: Option<Scope>,
    /// Metric / priority.
    pub metric: Option<u32>,
    pub mtu: Option<u32>,
    pub advmss: Option<u32>,
    pub onlink: bool,
    /// Preferred source address.
    pub src: Option<IpAddr>,
    pub kind: RouteKind,
    /// Protocol (RTPROT_*); None = "boot" when adding.
    pub protocol: Option<u8>,
    /// Several paths (ECMP); empty for a single-path route, which uses
    /// `gateway` / `oif`. A multipath route has no top-level gateway.
    pub multipath: Vec<NextHop>,
}

impl Route {
    /// A unicast route to `dst` in the main table.
    pub fn new(dst: IpNet) -> Route {
        Route {
            dst: dst.trunc(),
            gateway: None,
            oif: None,
            table: TABLE_MAIN,
            scope: None,
            metric: None,
            mtu: None,
            advmss: None,
            onlink: false,
            src: None,
            kind: RouteKind::Unicast,
            protocol: None,
            multipath: Vec::new(),
        }
    }
    /// `0.0.0.0/0` (v4) or `::/0` (v6) via `gateway`.
    pub fn default_via(gateway: IpAddr) -> Route {
        let dst = match gateway {
            IpAddr::V4(_) => IpNet::V4(Default::default()),
            IpAddr::V6(_) => IpNet::V6(Default::default()),
        };
        Route::new(dst).via(gateway)
    }
    pub fn via(mut self, gw: IpAddr) -> Self {
        self.gateway = Some(gw);
        self
    }
    pub fn dev(mut self, index: u32) -> Self {
        self.oif = Some(index);
        self
    }
    pub fn table(mut self, table: u32) -> Self {
        self.table = table;
        self
    }
    pub fn scope(mut self, scope: Scope) -> Self {
        self.scope = Some(scope);
        self
    }
    pub fn metric(mut self, metric: u32) -> Self {
        self.metric = Some(metric);
        self
    }
    pub fn mtu(mut self, mtu: u32) -> Self {
        self.mtu = Some(mtu);
        self
    }
    pub fn advmss(mut self, advmss: u32) -> Self {
        self.advmss = Some(advmss);
        self
    }
    pub fn onlink(mut self) -> Self {
        self.onlink = true;
        self
    }
    pub fn src(mut self, src: IpAddr) -> Self {
        self.src = Some(src);
        self
    }
    pub fn kind(mut self, kind: RouteKind) -> Self {
        self.kind = kind;
        self
    }
    pub fn protocol(mut self, proto: u8) -> Self {
        self.protocol = Some(proto);
        self
    }
    /// A multipath route over `hops` (one hop is the same as `via`).
    pub fn multipath(mut self, hops: Vec<NextHop>) -> Self {
        self.multipath = hops;
        self
    }
    pub fn is_default(&self) -> bool {
        self.dst.prefix_len() == 0
    }

    fn validate(&self) -> Result<()> {
        let v4 = self.dst.addr().is_ipv4();
        if !self.multipath.is_empty() && self.gateway.is_some() {
            return Err(Error::invalid(
                "route",
                format!("{self:?}"),
                "a route has either a gateway or several next hops",
            ));
        }
        let hop_gws = self.multipath.iter().filter_map(|h| h.gateway.as_ref());
        for ip in self.gateway.iter().chain(self.src.iter()).chain(hop_gws) {
            if ip.is_ipv4() != v4 {
                return Err(Error::invalid(
                    "route",
                    format!("{self:?}"),
                    "gateway/src family differs from destination",
                ));
            }
        }
        Ok(())
    }

    fn describe(&self) -> String {
        let mut s = format!("{}", self.dst);
        if let Some(gw) = self.gateway {
            s += &format!(" via {gw}");
        }
        for h in &self.multipath {
            s += " nexthop";
            if let Some(gw) = h.gateway {
                s += &format!(" via {gw}");
            }
            if let Some(i) = h.oif {
                s += &format!(" dev #{i}");
            }
            if h.weight != 1 {
                s += &format!(" weight {}", h.weight);
            }
        }
        if let Some(i) = self.oif {
            s += &format!(" dev #{i}");
        }
        if self.table != TABLE_MAIN {
            s += &format!(" table {}", self.table);
        }
        if let Some(m) = self.metric {
            s += &format!(" metric {m}");
        }
        s
    }
}

fn route_addr(ip: IpAddr) -> RouteAddress {
    match ip {
        IpAddr::V4(a) => RouteAddress::Inet(a),
        IpAddr::V6(a) => RouteAddress::Inet6(a),
    }
}

fn from_route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

impl Scope {
    /// The kernel's number for this scope (RT_SCOPE_*), as CNI results
    /// carry it.
    pub fn as_u8(self) -> u8 {
        u8::from(scope_to(self))
    }

    /// The scope for a kernel number; `None` for a number without a name
    /// (user-defined scopes from /etc/iproute2/rt_scopes).
    pub fn from_u8(v: u8) -> Option<Scope> {
        match RouteScope::from(v) {
            RouteScope::Universe => Some(Scope::Universe),
            RouteScope::Site => Some(Scope::Site),
            RouteScope::Link => Some(Scope::Link),
            RouteScope::Host => Some(Scope::Host),
            RouteScope::NoWhere => Some(Scope::Nowhere),
            _ => None,
        }
    }
}

fn scope_to(s: Scope) -> RouteScope {
    match s {
        Scope::Universe => RouteScope::Universe,
        Scope::Site => RouteScope::Site,
        Scope::Link => RouteScope::Link,
        Scope::Host => RouteScope::Host,
        Scope::Nowhere => RouteScope::NoWhere,
    }
}

fn kind_to(k: RouteKind) -> RouteType {
    match k {
        RouteKind::Unicast => RouteType::Unicast,
        RouteKind::Local => RouteType::Local,
        RouteKind::Broadcast => RouteType::Broadcast,
        RouteKind::Blackhole => RouteType::BlackHole,
        RouteKind::Unreachable => RouteType::Unreachable,
        RouteKind::Prohibit => RouteType::Prohibit,
        RouteKind::Other(v) => RouteType::Other(v),
    }
}

/// Builds the kernel message; `for_delete` uses wildcards for what the
/// caller did not specify (scope, type, protocol), like iproute2.
pub(crate) fn route_msg(r: &Route, for_delete: bool) -> RouteMessage {
    let mut m = RouteMessage::default();
    let h = &mut m.header;
    h.address_family = if r.dst.addr().is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    h.destination_prefix_length = r.dst.prefix_len();
    h.table = if r.table < 256 {
        r.table as u8
    } else {
        RouteHeader::RT_TABLE_UNSPEC
    };
    if for_delete {
        h.scope = r.scope.map(scope_to).unwrap_or(RouteScope::NoWhere);
        h.kind = if r.kind == RouteKind::Unicast {
            RouteType::Unspec
        } else {
            kind_to(r.kind)
        };
        h.protocol = r
            .protocol
            .map(RouteProtocol::from)
            .unwrap_or(RouteProtocol::Unspec);
    } else {
        h.scope = match r.scope {
            Some(s) => scope_to(s),
            None if r.kind == RouteKind::Local => RouteScope::Host,
            None if r.gateway.is_none()
                && r.multipath.is_empty()
                && r.dst.addr().is_ipv4()
                && r.kind == RouteKind::Unicast =>
            {
                RouteScope::Link
            }
            None => RouteScope::Universe,
        };
        h.kind = kind_to(r.kind);
        h.protocol = r
            .protocol
            .map(RouteProtocol::from)
            .unwrap_or(RouteProtocol::Boot);
    }
    if r.onlink {
        h.flags |= RouteFlags::Onlink;
    }
    let a = &mut m.attributes;
    a.push(RouteAttribute::Table(r.table));
    if r.dst.prefix_len() > 0 {
        a.push(RouteAttribute::Destination(route_addr(r.dst.addr())));
    }
    if let Some(gw) = r.gateway {
        a.push(RouteAttribute::Gateway(route_addr(gw)));
    }
    if let Some(i) = r.oif {
        a.push(RouteAttribute::Oif(i));
    }
    if !r.multipath.is_empty() {
        let hops = r
            .multipath
            .iter()
            .map(|h| {
                let mut n = RouteNextHop::default();
                if h.onlink {
                    n.flags |= RouteNextHopFlags::Onlink;
                }
                n.hops = u8::try_from(h.weight.clamp(1, 256) - 1).unwrap_or(u8::MAX);
                n.interface_index = h.oif.unwrap_or(0);
                if let Some(gw) = h.gateway {
                    n.attributes.push(RouteAttribute::Gateway(route_addr(gw)));
                }
                n
            })
            .collect();
        a.push(RouteAttribute::MultiPath(hops));
    }
    if let Some(p) = r.metric {
        a.push(RouteAttribute::Priority(p));
    }
    if let Some(s) = r.src {
        a.push(RouteAttribute::PrefSource(route_addr(s)));
    }
    if !for_delete {
        let mut metrics = Vec::new();
        if let Some(v) = r.mtu {
            metrics.push(RouteMetric::Mtu(v));
        }
        if let Some(v) = r.advmss {
            metrics.push(RouteMetric::Advmss(v));
        }
        if !metrics.is_empty() {
            a.push(RouteAttribute::Metrics(metrics));
        }
    }
    m
}

pub(crate) fn parse_route(m: &RouteMessage) -> Option<Route> {
    let h = &m.header;
    let v4 = match h.address_family {
        AddressFamily::Inet => true,
        AddressFamily::Inet6 => false,
        _ => return None,
    };
    let mut dst: Option<IpAddr> = None;
    let mut r = Route::new(if v4 {
        IpNet::V4(Default::default())
    } else {
        IpNet::V6(Default::default())
    });
    r.table = u32::from(h.table);
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(d) => dst = from_route_addr(d),
            RouteAttribute::Gateway(g) => r.gateway = from_route_addr(g),
            RouteAttribute::Oif(i) => r.oif = Some(*i),
            RouteAttribute::Table(t) => r.table = *t,
            RouteAttribute::Priority(p) => r.metric = Some(*p),
            RouteAttribute::PrefSource(s) => r.src = from_route_addr(s),
            RouteAttribute::MultiPath(hops) => {
                r.multipath = hops
                    .iter()
                    .map(|n| NextHop {
                        gateway: n.attributes.iter().find_map(|a| match a {
                            RouteAttribute::Gateway(g) => from_route_addr(g),
                            _ => None,
                        }),
                        oif: (n.interface_index != 0).then_some(n.interface_index),
                        weight: u16::from(n.hops) + 1,
                        onlink: n.flags.contains(RouteNextHopFlags::Onlink),
                    })
                    .collect()
            }
            RouteAttribute::Metrics(ms) => {
                for metric in ms {
                    match metric {
                        RouteMetric::Mtu(v) => r.mtu = Some(*v),
                        RouteMetric::Advmss(v) => r.advmss = Some(*v),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    if let Some(d) = dst {
        r.dst = IpNet::new(d, h.destination_prefix_length).ok()?;
    }
    r.scope = Some(Scope::from_u8(u8::from(h.scope)).unwrap_or(Scope::Nowhere));
    r.kind = match h.kind {
        RouteType::Unicast => RouteKind::Unicast,
        RouteType::Local => RouteKind::Local,
        RouteType::Broadcast => RouteKind::Broadcast,
        RouteType::BlackHole => RouteKind::Blackhole,
        RouteType::Unreachable => RouteKind::Unreachable,
        RouteType::Prohibit => RouteKind::Prohibit,
        other => RouteKind::Other(u8::from(other)),
    };
    r.protocol = Some(u8::from(h.protocol));
    r.onlink = h.flags.contains(RouteFlags::Onlink);
    Some(r)
}

/// Which routes [`Netlink::routes`] returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouteFilter {
    /// Only IPv4 (`Some(false)` for IPv6 only).
    pub ipv4: Option<bool>,
    pub table: Option<u32>,
    pub oif: Option<u32>,
}

impl RouteFilter {
    pub fn v4() -> Self {
        RouteFilter {
            ipv4: Some(true),
            ..Default::default()
        }
    }
    pub fn v6() -> Self {
        RouteFilter {
            ipv4: Some(false),
            ..Default::default()
        }
    }
    pub fn table(mut self, t: u32) -> Self {
        self.table = Some(t);
        self
    }
    pub fn oif(mut self, i: u32) -> Self {
        self.oif = Some(i);
        self
    }
    fn matches(&self, r: &Route) -> bool {
        self.ipv4.is_none_or(|v4| r.dst.addr().is_ipv4() == v4)
            && self.table.is_none_or(|t| r.table == t)
            && self.oif.is_none_or(|i| r.oif == Some(i))
    }
}

impl Netlink {
    /// Adds a route; fails with [`Error::is_exists`] if it exists.
    pub async fn route_add(&self, r: &Route) -> Result<()> {
        r.validate()?;
        self.ack(
            RouteNetlinkMessage::NewRoute(route_msg(r, false)),
            NLM_F_CREATE | NLM_F_EXCL,
            format!("add route {}", r.describe()),
        )
        .await
    }

    /// Adds or replaces a route (`ip route replace`).
    pub async fn route_replace(&self, r: &Route) -> Result<()> {
        r.validate()?;
        self.ack(
            RouteNetlinkMessage::NewRoute(route_msg(r, false)),
            NLM_F_CREATE | NLM_F_REPLACE,
            format!("replace route {}", r.describe()),
        )
        .await
    }

    /// Deletes the first route matching `r` (unset fields are wildcards);
    /// fails with [`Error::is_not_found`] (ESRCH) if none matches.
    pub async fn route_del(&self, r: &Route) -> Result<()> {
        self.ack(
            RouteNetlinkMessage::DelRoute(route_msg(r, true)),
            0,
            format!("delete route {}", r.describe()),
        )
        .await
    }

    /// Lists routes (all tables) that match `filter`.
    pub async fn routes(&self, filter: RouteFilter) -> Result<Vec<Route>> {
        let mut out = Vec::new();
        let families: &[AddressFamily] = match filter.ipv4 {
            Some(true) => &[AddressFamily::Inet],
            Some(false) => &[AddressFamily::Inet6],
            None => &[AddressFamily::Inet, AddressFamily::Inet6],
        };
        for fam in families {
            let mut m = RouteMessage::default();
            m.header.address_family = *fam;
            let msgs = self
                .dump(RouteNetlinkMessage::GetRoute(m), "list routes")
                .await?;
            out.extend(
                msgs.iter()
                    .filter_map(|m| match m {
                        RouteNetlinkMessage::NewRoute(r) => parse_route(r),
                        _ => None,
                    })
                    .filter(|r| filter.matches(r)),
            );
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_numbers_round_trip() {
        for (s, n) in [
            (Scope::Universe, 0),
            (Scope::Site, 200),
            (Scope::Link, 253),
            (Scope::Host, 254),
            (Scope::Nowhere, 255),
        ] {
            assert_eq!(s.as_u8(), n);
            assert_eq!(Scope::from_u8(n), Some(s));
        }
        assert_eq!(Scope::from_u8(100), None);
    }

    #[test]
    fn add_message_defaults() {
        let r = Route::new("10.1.0.0/16".parse().unwrap()).dev(3);
        let m = route_msg(&r, false);
        assert_eq!(m.header.scope, RouteScope::Link);
        assert_eq!(m.header.table, 254);
        let back = parse_route(&m).unwrap();
        assert_eq!(back.dst, r.dst);
        assert_eq!(back.oif, Some(3));

        let r = Route::default_via("10.0.0.1".parse().unwrap())
            .table(1000)
            .metric(50)
            .mtu(1400)
            .advmss(1360)
            .onlink();
        let m = route_msg(&r, false);
        assert_eq!(m.header.scope, RouteScope::Universe);
        assert_eq!(m.header.table, 0);
        assert!(m.header.flags.contains(RouteFlags::Onlink));
        let back = parse_route(&m).unwrap();
        assert!(back.is_default());
        assert_eq!(
            (back.table, back.metric, back.mtu, back.advmss, back.onlink),
            (1000, Some(50), Some(1400), Some(1360), true)
        );
    }

    #[test]
    fn multipath_round_trips_and_is_validated() {
        let r = Route::new("10.50.0.0/24".parse().unwrap()).multipath(vec![
            NextHop::via("10.20.0.2".parse().unwrap()),
            NextHop::via("10.20.0.3".parse().unwrap())
                .dev(4)
                .weight(3)
                .onlink(),
        ]);
        r.validate().unwrap();
        // Gateways are not on-link routes: universe scope, as with `via`.
        assert_eq!(route_msg(&r, false).header.scope, RouteScope::Universe);
        let back = parse_route(&route_msg(&r, false)).unwrap();
        assert_eq!(back.multipath, r.multipath);
        assert_eq!(back.gateway, None);
        assert!(r
            .describe()
            .contains("nexthop via 10.20.0.3 dev #4 weight 3"));
        let both = r.clone().via("10.20.0.9".parse().unwrap());
        assert!(both.validate().is_err());
        let mixed = Route::new("10.50.0.0/24".parse().unwrap())
            .multipath(vec![NextHop::via("fd00::1".parse().unwrap())]);
        assert!(mixed.validate().is_err());
    }

    #[test]
    fn delete_uses_wildcards() {
        let r = Route::new("fd00::/64".parse().unwrap());
        let m = route_msg(&r, true);
        assert_eq!(m.header.scope, RouteScope::NoWhere);
        assert_eq!(m.header.kind, RouteType::Unspec);
        assert_eq!(m.header.protocol, RouteProtocol::Unspec);
    }

    #[test]
    fn dst_is_truncated_and_validated() {
        let r = Route::new("10.1.2.3/16".parse().unwrap());
        assert_eq!(r.dst.to_string(), "10.1.0.0/16");
        let bad = Route::new("10.1.0.0/16".parse().unwrap()).via("fe80::1".parse().unwrap());
        assert!(bad.validate().is_err());
    }
}
