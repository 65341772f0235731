//! Links (network interfaces): query, create, configure, delete; bridge
//! port settings and bridge VLANs.

use std::net::IpAddr;
use std::os::fd::AsRawFd;

use rtnetlink::packet_core::{DefaultNla, NLM_F_CREATE, NLM_F_EXCL};
use rtnetlink::packet_route::link::{
    AfSpecBridge, BridgeFlag, BridgeVlanInfo, BridgeVlanInfoFlags, InfoBridge, InfoBridgePort,
    InfoData, InfoIpVlan, InfoKind, InfoMacVlan, InfoPortData, InfoVeth, InfoVxlan, IpVlanMode,
    LinkAttribute, LinkExtentMask, LinkFlags, LinkInfo, LinkMessage, LinkProtoInfoBridge,
    MacVlanMode,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::error::{Error, Result};
use crate::handle::Netlink;
use crate::mac::MacAddr;
use crate::netns::Netns;

/// Maximum interface name length in bytes (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = crate::ifname::MAX_IFNAME_LEN;

// IFLA_BRPORT_* attribute numbers (linux/if_link.h).
const IFLA_BRPORT_MODE: u16 = 4; // hairpin
const IFLA_BRPORT_LEARNING: u16 = 8;
const IFLA_BRPORT_ISOLATED: u16 = 33;

/// Checks an interface name like the kernel's `dev_valid_name`: 1..=15
/// bytes, not `.`/`..`, no `/`, `:` or whitespace ([`crate::ifname`], the
/// one copy libcni's checks and ours share).
pub fn validate_ifname(name: &str) -> Result<()> {
    match crate::ifname::ifname_problem(name) {
        None => Ok(()),
        Some(p) => Err(Error::invalid("interface name", name, p.reason())),
    }
}

/// What the kernel reports about a link.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// IFLA_INFO_KIND: "veth", "bridge", "vxlan", "ipvlan", ... (None for
    /// loopback and physical devices).
    pub kind: Option<String>,
    pub mac: Option<MacAddr>,
    pub mtu: u32,
    /// IFF_UP: administratively up.
    pub admin_up: bool,
    /// IFF_RUNNING: operationally up (carrier and operstate up/unknown).
    pub oper_up: bool,
    pub promisc: bool,
    /// Index of the master (bridge) device, if enslaved.
    pub master: Option<u32>,
    /// IFLA_LINK: veth peer index or lower device index (in `link_netnsid`'s
    /// namespace if that is set).
    pub link: Option<u32>,
    /// IFLA_LINK_NETNSID: the peer/lower device lives in another namespace.
    pub link_netnsid: Option<i32>,
    pub bridge: Option<BridgeInfo>,
    pub bridge_port: Option<BridgePortInfo>,
    pub vxlan: Option<VxlanInfo>,
    pub ipvlan_mode: Option<IpvlanMode>,
    pub macvlan_mode: Option<MacvlanMode>,
    /// IFLA_IFALIAS (`ip link set X alias A`): plugins record there which
    /// attachment a link belongs to.
    pub alias: Option<String>,
}

/// Longest alias the kernel keeps (IFALIASZ - 1).
pub const ALIAS_MAX: usize = 255;

/// Attributes of a bridge device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BridgeInfo {
    pub vlan_filtering: bool,
}

/// Attributes of a bridge port (a device enslaved to a bridge).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BridgePortInfo {
    pub hairpin: bool,
    pub isolated: bool,
    pub learning: bool,
}

/// Attributes of a VXLAN device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VxlanInfo {
    pub vni: u32,
    pub local: Option<IpAddr>,
    pub group: Option<IpAddr>,
    pub port: Option<u16>,
    pub underlay: Option<u32>,
    pub learning: bool,
}

/// IPVLAN mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IpvlanMode {
    #[default]
    L2,
    L3,
    L3s,
}

/// MACVLAN mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MacvlanMode {
    Private,
    Vepa,
    #[default]
    Bridge,
    Passthru,
    Source,
}

impl IpvlanMode {
    /// The name the reference plugin and `ip link` use.
    pub fn as_str(self) -> &'static str {
        match self {
            IpvlanMode::L2 => "l2",
            IpvlanMode::L3 => "l3",
            IpvlanMode::L3s => "l3s",
        }
    }
}

impl std::fmt::Display for IpvlanMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Exactly the reference ipvlan plugin's names ("" is its default, l2).
impl std::str::FromStr for IpvlanMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "l2" | "" => Ok(IpvlanMode::L2),
            "l3" => Ok(IpvlanMode::L3),
            "l3s" => Ok(IpvlanMode::L3s),
            _ => Err(Error::invalid("ipvlan mode", s, "expected l2, l3 or l3s")),
        }
    }
}

impl std::str::FromStr for MacvlanMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "bridge" | "" => Ok(MacvlanMode::Bridge),
            "private" => Ok(MacvlanMode::Private),
            "vepa" => Ok(MacvlanMode::Vepa),
            "passthru" => Ok(MacvlanMode::Passthru),
            "source" => Ok(MacvlanMode::Source),
            _ => Err(Error::invalid(
                "macvlan mode",
                s,
                "expected bridge, private, vepa, passthru or source",
            )),
        }
    }
}

impl From<IpvlanMode> for IpVlanMode {
    fn from(m: IpvlanMode) -> Self {
        match m {
            IpvlanMode::L2 => IpVlanMode::L2,
            IpvlanMode::L3 => IpVlanMode::L3,
            IpvlanMode::L3s => IpVlanMode::L3S,
        }
    }
}

impl From<MacvlanMode> for MacVlanMode {
    fn from(m: MacvlanMode) -> Self {
        match m {
            MacvlanMode::Private => MacVlanMode::Private,
            MacvlanMode::Vepa => MacVlanMode::Vepa,
            MacvlanMode::Bridge => MacVlanMode::Bridge,
            MacvlanMode::Passthru => MacVlanMode::Passthrough,
            MacvlanMode::Source => MacVlanMode::Source,
        }
    }
}

/// A veth pair to create. The peer can be created directly in another
/// namespace under its final name.
#[derive(Debug, Clone)]
pub struct Veth<'a> {
    pub name: String,
    pub peer_name: String,
    pub peer_netns: Option<&'a Netns>,
    pub mtu: Option<u32>,
    pub mac: Option<MacAddr>,
    pub peer_mac: Option<MacAddr>,
}

impl<'a> Veth<'a> {
    pub fn new(name: impl Into<String>, peer_name: impl Into<String>) -> Self {
        Veth {
            name: name.into(),
            peer_name: peer_name.into(),
            peer_netns: None,
            mtu: None,
            mac: None,
            peer_mac: None,
        }
    }
    pub fn peer_netns(mut self, ns: &'a Netns) -> Self {
        self.peer_netns = Some(ns);
        self
    }
    pub fn mtu(mut self, mtu: u32) -> Self {
        self.mtu = Some(mtu);
        self
    }
    pub fn mac(mut self, mac: MacAddr) -> Self {
        self.mac = Some(mac);
        self
    }
    pub fn peer_mac(mut self, mac: MacAddr) -> Self {
        self.peer_mac = Some(mac);
        self
    }
}

/// A bridge to create.
#[derive(Debug, Clone, Default)]
pub struct Bridge {
    pub name: String,
    pub mtu: Option<u32>,
    pub mac: Option<MacAddr>,
    pub vlan_filtering: Option<bool>,
}

impl Bridge {
    pub fn new(name: impl Into<String>) -> Self {
        Bridge {
            name: name.into(),
            ..Default::default()
        }
    }
    pub fn mtu(mut self, mtu: u32) -> Self {
        self.mtu = Some(mtu);
        self
    }
    pub fn mac(mut self, mac: MacAddr) -> Self {
        self.mac = Some(mac);
        self
    }
    pub fn vlan_filtering(mut self, on: bool) -> Self {
        self.vlan_filtering = Some(on);
        self
    }
}

/// A VXLAN device to create.
#[derive(Debug, Clone)]
pub struct Vxlan {
    pub name: String,
    pub vni: u32,
    pub local: Option<IpAddr>,
    /// Default remote (unicast) or multicast group.
    pub group: Option<IpAddr>,
    /// UDP destination port (kernel default 8472 if unset; IANA is 4789).
    pub port: Option<u16>,
    /// Underlay device index.
    pub underlay: Option<u32>,
    pub learning: bool,
    pub mtu: Option<u32>,
    pub mac: Option<MacAddr>,
}

impl Vxlan {
    pub fn new(name: impl Into<String>, vni: u32) -> Self {
        Vxlan {
            name: name.into(),
            vni,
            local: None,
            group: None,
            port: None,
            underlay: None,
            learning: true,
            mtu: None,
            mac: None,
        }
    }
    pub fn local(mut self, ip: IpAddr) -> Self {
        self.local = Some(ip);
        self
    }
    pub fn group(mut self, ip: IpAddr) -> Self {
        self.group = Some(ip);
        self
    }
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }
    pub fn underlay(mut self, index: u32) -> Self {
        self.underlay = Some(index);
        self
    }
    pub fn learning(mut self, on: bool) -> Self {
        self.learning = on;
        self
    }
    pub fn mtu(mut self, mtu: u32) -> Self {
        self.mtu = Some(mtu);
        self
    }
    pub fn mac(mut self, mac: MacAddr) -> Self {
        self.mac = Some(mac);
        self
    }
}

/// An IP-in-IP tunnel device (`ip tunnel add NAME mode ipip`) with no
/// fixed endpoints: each route through it names the remote end as its
/// (onlink) gateway, as Calico's `tunl0` works.
#[derive(Debug, Clone)]
pub struct Ipip {
    pub name: String,
    pub mtu: Option<u32>,
}

impl Ipip {
    pub fn new(name: impl Into<String>) -> Self {
        Ipip {
            name: name.into(),
            mtu: None,
        }
    }
    pub fn mtu(mut self, mtu: u32) -> Self {
        self.mtu = Some(mtu);
        self
    }
}

/// An IPVLAN (or MACVLAN) device on top of `master` (an index in the
/// handle's namespace), optionally created directly in another namespace.
#[derive(Debug, Clone)]
pub struct Ipvlan<'a> {
    pub name: String,
    pub master: u32,
    pub mode: IpvlanMode,
    pub mtu: Option<u32>,
    pub netns: Option<&'a Netns>,
}

impl<'a> Ipvlan<'a> {
    pub fn new(name: impl Into<String>, master: u32, mode: IpvlanMode) -> Self {
        Ipvlan {
            name: name.into(),
            master,
            mode,
            mtu: None,
            netns: None,
        }
    }
    pub fn mtu(mut self, mtu: u32) -> Self {
        self.mtu = Some(mtu);
        self
    }
    pub fn netns(mut self, ns: &'a Netns) -> Self {
        self.netns = Some(ns);
        self
    }
}

/// A MACVLAN device on top of `master`, optionally created directly in
/// another namespace.
#[derive(Debug, Clone)]
pub struct Macvlan<'a> {
    pub name: String,
    pub master: u32,
    pub mode: MacvlanMode,
    pub mtu: Option<u32>,
    pub mac: Option<MacAddr>,
    pub netns: Option<&'a Netns>,
}

impl<'a> Macvlan<'a> {
    pub fn new(name: impl Into<String>, master: u32, mode: MacvlanMode) -> Self {
        Macvlan {
            name: name.into(),
            master,
            mode,
            mtu: None,
            mac: None,
            netns: None,
        }
    }
    pub fn mtu(mut self, mtu: u32) -> Self {
        self.mtu = Some(mtu);
        self
    }
    pub fn mac(mut self, mac: MacAddr) -> Self {
        self.mac = Some(mac);
        self
    }
    pub fn netns(mut self, ns: &'a Netns) -> Self {
        self.netns = Some(ns);
        self
    }
}

/// Bridge port settings to change (None = leave as is).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BridgePortSettings {
    pub hairpin: Option<bool>,
    pub isolated: Option<bool>,
    pub learning: Option<bool>,
}

/// A bridge VLAN (or range `vid..=vid_end`) on a port, like
/// `bridge vlan add dev PORT vid VID [pvid] [untagged] [self]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BridgeVlan {
    pub vid: u16,
    pub vid_end: Option<u16>,
    pub pvid: bool,
    pub untagged: bool,
    /// Apply to the bridge device itself (`self`) rather than a port.
    pub bridge_self: bool,
}

impl BridgeVlan {
    pub fn new(vid: u16) -> Self {
        BridgeVlan {
            vid,
            vid_end: None,
            pvid: false,
            untagged: false,
            bridge_self: false,
        }
    }
    /// A trunk range `first..=last`.
    pub fn range(first: u16, last: u16) -> Self {
        BridgeVlan {
            vid_end: Some(last),
            ..BridgeVlan::new(first)
        }
    }
    pub fn pvid(mut self) -> Self {
        self.pvid = true;
        self
    }
    pub fn untagged(mut self) -> Self {
        self.untagged = true;
        self
    }
    pub fn bridge_self(mut self) -> Self {
        self.bridge_self = true;
        self
    }

    fn validate(&self) -> Result<()> {
        let ok = |v: u16| (1..=4094).contains(&v);
        if !ok(self.vid) || self.vid_end.is_some_and(|e| !ok(e) || e < self.vid) {
            return Err(Error::invalid(
                "bridge vlan",
                format!("{}..={}", self.vid, self.vid_end.unwrap_or(self.vid)),
                "vids must be 1..=4094 and the range ascending",
            ));
        }
        if self.pvid && self.vid_end.is_some_and(|e| e != self.vid) {
            return Err(Error::invalid(
                "bridge vlan",
                self.vid,
                "pvid cannot be set on a range",
            ));
        }
        Ok(())
    }

    fn af_spec(&self) -> Vec<AfSpecBridge> {
        let mut flags = BridgeVlanInfoFlags::empty();
        if self.pvid {
            flags |= BridgeVlanInfoFlags::Pvid;
        }
        if self.untagged {
            flags |= BridgeVlanInfoFlags::Untagged;
        }
        let mut spec = Vec::new();
        if self.bridge_self {
            spec.push(AfSpecBridge::Flags(BridgeFlag::LowerDev));
        }
        match self.vid_end {
            Some(end) if end != self.vid => {
                spec.push(AfSpecBridge::VlanInfo(BridgeVlanInfo {
                    flags: flags | BridgeVlanInfoFlags::RangeBegin,
                    vid: self.vid,
                }));
                spec.push(AfSpecBridge::VlanInfo(BridgeVlanInfo {
                    flags: flags | BridgeVlanInfoFlags::RangeEnd,
                    vid: end,
                }));
            }
            _ => spec.push(AfSpecBridge::VlanInfo(BridgeVlanInfo {
                flags,
                vid: self.vid,
            })),
        }
        spec
    }
}

/// One VLAN configured on a bridge port, as listed by the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BridgeVlanEntry {
    pub vid: u16,
    pub pvid: bool,
    pub untagged: bool,
}

pub(crate) fn link_msg(index: u32) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m
}

/// What ipvlan and macvlan links share: a name, a master and where to
/// create them.
struct OnMaster<'a> {
    name: &'a str,
    mtu: Option<u32>,
    mac: Option<MacAddr>,
    master: u32,
    netns: Option<&'a Netns>,
}

/// `l` if it is an IP-in-IP device, else an "exists" error naming its kind.
fn ipip_or_taken(l: Link, name: &str) -> Result<Link> {
    if l.kind.as_deref() == Some("ipip") {
        return Ok(l);
    }
    Err(Error::io(
        format!(
            "link {name:?} is not an ipip tunnel (kind {})",
            l.kind.as_deref().unwrap_or("none")
        ),
        std::io::Error::from(std::io::ErrorKind::AlreadyExists),
    ))
}

fn info_attr(kind: InfoKind, data: Option<InfoData>) -> LinkAttribute {
    let mut infos = vec![LinkInfo::Kind(kind)];
    if let Some(d) = data {
        infos.push(LinkInfo::Data(d));
    }
    LinkAttribute::LinkInfo(infos)
}

fn common_attrs(m: &mut LinkMessage, name: &str, mtu: Option<u32>, mac: Option<MacAddr>) {
    m.attributes.push(LinkAttribute::IfName(name.to_owned()));
    if let Some(mtu) = mtu {
        m.attributes.push(LinkAttribute::Mtu(mtu));
    }
    if let Some(mac) = mac {
        m.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
    }
}

fn ip_of4(
    ip: IpAddr,
    v4: fn(std::net::Ipv4Addr) -> InfoVxlan,
    v6: fn(std::net::Ipv6Addr) -> InfoVxlan,
) -> InfoVxlan {
    match ip {
        IpAddr::V4(a) => v4(a),
        IpAddr::V6(a) => v6(a),
    }
}

/// Converts a kernel link message into a [`Link`].
pub(crate) fn parse_link(m: &LinkMessage) -> Link {
    let flags = m.header.flags;
    let mut l = Link {
        index: m.header.index,
        admin_up: flags.contains(LinkFlags::Up),
        oper_up: flags.contains(LinkFlags::Running),
        promisc: flags.contains(LinkFlags::Promisc),
        ..Default::default()
    };
    for attr in &m.attributes {
        match attr {
            LinkAttribute::IfName(n) => l.name = n.clone(),
            LinkAttribute::Mtu(v) => l.mtu = *v,
            LinkAttribute::Address(a) => l.mac = MacAddr::from_slice(a),
            LinkAttribute::Controller(i) if *i != 0 => l.master = Some(*i),
            LinkAttribute::Link(i) if *i != 0 => l.link = Some(*i),
            LinkAttribute::LinkNetNsId(i) => l.link_netnsid = Some(*i),
            LinkAttribute::IfAlias(a) => l.alias = Some(a.clone()),
            LinkAttribute::LinkInfo(infos) => parse_link_info(infos, &mut l),
            _ => {}
        }
    }
    l
}

fn parse_link_info(infos: &[LinkInfo], l: &mut Link) {
    for info in infos {
        match info {
            LinkInfo::Kind(k) => l.kind = Some(k.to_string()),
            LinkInfo::Data(InfoData::Bridge(v)) => {
                let mut b = BridgeInfo::default();
                for i in v {
                    if let InfoBridge::VlanFiltering(on) = i {
                        b.vlan_filtering = *on;
                    }
                }
                l.bridge = Some(b);
            }
            LinkInfo::Data(InfoData::Vxlan(v)) => {
                let mut x = VxlanInfo::default();
                for i in v {
                    match i {
                        InfoVxlan::Id(id) => x.vni = *id,
                        InfoVxlan::Local(a) => x.local = Some(IpAddr::V4(*a)),
                        InfoVxlan::Local6(a) => x.local = Some(IpAddr::V6(*a)),
                        InfoVxlan::Group(a) if !a.is_unspecified() => {
                            x.group = Some(IpAddr::V4(*a))
                        }
                        InfoVxlan::Group6(a) if !a.is_unspecified() => {
                            x.group = Some(IpAddr::V6(*a))
                        }
                        InfoVxlan::Port(p) => x.port = Some(*p),
                        InfoVxlan::Link(i) if *i != 0 => x.underlay = Some(*i),
                        InfoVxlan::Learning(on) => x.learning = *on,
                        _ => {}
                    }
                }
                l.vxlan = Some(x);
            }
            LinkInfo::Data(InfoData::IpVlan(v)) => {
                for i in v {
                    if let InfoIpVlan::Mode(m) = i {
                        l.ipvlan_mode = match m {
                            IpVlanMode::L2 => Some(IpvlanMode::L2),
                            IpVlanMode::L3 => Some(IpvlanMode::L3),
                            IpVlanMode::L3S => Some(IpvlanMode::L3s),
                            _ => None,
                        };
                    }
                }
            }
            LinkInfo::Data(InfoData::MacVlan(v)) => {
                for i in v {
                    if let InfoMacVlan::Mode(m) = i {
                        l.macvlan_mode = match m {
                            MacVlanMode::Private => Some(MacvlanMode::Private),
                            MacVlanMode::Vepa => Some(MacvlanMode::Vepa),
                            MacVlanMode::Bridge => Some(MacvlanMode::Bridge),
                            MacVlanMode::Passthrough => Some(MacvlanMode::Passthru),
                            MacVlanMode::Source => Some(MacvlanMode::Source),
                            _ => None,
                        };
                    }
                }
            }
            LinkInfo::PortData(InfoPortData::BridgePort(v)) => {
                let mut p = BridgePortInfo::default();
                for i in v {
                    match i {
                        InfoBridgePort::HairpinMode(on) => p.hairpin = *on,
                        InfoBridgePort::Isolated(on) => p.isolated = *on,
                        InfoBridgePort::Learning(on) => p.learning = *on,
                        _ => {}
                    }
                }
                l.bridge_port = Some(p);
            }
            _ => {}
        }
    }
}

impl Netlink {
    /// Looks a link up by name; `Ok(None)` if there is none.
    pub async fn link_by_name(&self, name: &str) -> Result<Option<Link>> {
        validate_ifname(name)?;
        let mut m = link_msg(0);
        m.attributes.push(LinkAttribute::IfName(name.to_owned()));
        self.get_one_link(m, format!("get link {name:?}")).await
    }

    /// Looks a link up by index; `Ok(None)` if there is none.
    pub async fn link_by_index(&self, index: u32) -> Result<Option<Link>> {
        self.get_one_link(link_msg(index), format!("get link #{index}"))
            .await
    }

    /// Looks a link up by name and fails with [`Error::is_not_found`] if missing.
    pub async fn link(&self, name: &str) -> Result<Link> {
        self.link_by_name(name)
            .await?
            .ok_or_else(|| Error::not_found(self.ctx(format!("link {name:?}"))))
    }

    /// Index of the named link; fails with [`Error::is_not_found`] if missing.
    pub async fn link_index(&self, name: &str) -> Result<u32> {
        Ok(self.link(name).await?.index)
    }

    async fn get_one_link(&self, m: LinkMessage, what: String) -> Result<Option<Link>> {
        match self.get(RouteNetlinkMessage::GetLink(m), what).await {
            Ok(msgs) => Ok(msgs.iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(parse_link(l)),
                _ => None,
            })),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// All links in the namespace.
    pub async fn links(&self) -> Result<Vec<Link>> {
        let msgs = self
            .dump(RouteNetlinkMessage::GetLink(link_msg(0)), "list links")
            .await?;
        Ok(msgs
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(parse_link(l)),
                _ => None,
            })
            .collect())
    }

    async fn new_link(&self, m: LinkMessage, what: String) -> Result<()> {
        self.ack(
            RouteNetlinkMessage::NewLink(m),
            NLM_F_CREATE | NLM_F_EXCL,
            what,
        )
        .await
    }

    async fn set_link(&self, m: LinkMessage, what: String) -> Result<()> {
        self.ack(RouteNetlinkMessage::SetLink(m), 0, what).await
    }

    /// Creates a veth pair; the peer is created directly in `peer_netns`
    /// (if given) under its final name. Returns the local end.
    pub async fn create_veth(&self, v: &Veth<'_>) -> Result<Link> {
        validate_ifname(&v.name)?;
        validate_ifname(&v.peer_name)?;
        let mut peer = LinkMessage::default();
        common_attrs(&mut peer, &v.peer_name, v.mtu, v.peer_mac);
        if let Some(ns) = v.peer_netns {
            peer.attributes.push(LinkAttribute::NetNsFd(ns.as_raw_fd()));
        }
        let mut m = LinkMessage::default();
        common_attrs(&mut m, &v.name, v.mtu, v.mac);
        m.attributes.push(info_attr(
            InfoKind::Veth,
            Some(InfoData::Veth(InfoVeth::Peer(peer))),
        ));
        let peer_where = v
            .peer_netns
            .map(|ns| format!(" in netns {}", ns.path().display()))
            .unwrap_or_default();
        self.new_link(
            m,
            format!(
                "create veth {:?} (peer {:?}{peer_where})",
                v.name, v.peer_name
            ),
        )
        .await?;
        tracing::debug!(netns = self.netns(), name = %v.name, peer = %v.peer_name, "created veth");
        self.link(&v.name).await
    }

    /// Creates a bridge (left down).
    pub async fn create_bridge(&self, b: &Bridge) -> Result<Link> {
        validate_ifname(&b.name)?;
        let mut m = LinkMessage::default();
        common_attrs(&mut m, &b.name, b.mtu, b.mac);
        let data = b
            .vlan_filtering
            .map(|on| InfoData::Bridge(vec![InfoBridge::VlanFiltering(on)]));
        m.attributes.push(info_attr(InfoKind::Bridge, data));
        self.new_link(m, format!("create bridge {:?}", b.name))
            .await?;
        tracing::debug!(netns = self.netns(), name = %b.name, "created bridge");
        self.link(&b.name).await
    }

    /// Creates a VXLAN device (left down).
    pub async fn create_vxlan(&self, x: &Vxlan) -> Result<Link> {
        validate_ifname(&x.name)?;
        if x.vni >= 1 << 24 {
            return Err(Error::invalid("vxlan vni", x.vni, "must be below 2^24"));
        }
        let mut m = LinkMessage::default();
        common_attrs(&mut m, &x.name, x.mtu, x.mac);
        let mut d = vec![InfoVxlan::Id(x.vni)];
        if let Some(ip) = x.local {
            d.push(ip_of4(ip, InfoVxlan::Local, InfoVxlan::Local6));
        }
        if let Some(ip) = x.group {
            d.push(ip_of4(ip, InfoVxlan::Group, InfoVxlan::Group6));
        }
        if let Some(p) = x.port {
            d.push(InfoVxlan::Port(p));
        }
        if let Some(i) = x.underlay {
            d.push(InfoVxlan::Link(i));
        }
        d.push(InfoVxlan::Learning(x.learning));
        m.attributes
            .push(info_attr(InfoKind::Vxlan, Some(InfoData::Vxlan(d))));
        self.new_link(m, format!("create vxlan {:?} (vni {})", x.name, x.vni))
            .await?;
        tracing::debug!(netns = self.netns(), name = %x.name, vni = x.vni, "created vxlan");
        self.link(&x.name).await
    }

    /// Returns the IP-in-IP device `x.name`, created (left down) if it is
    /// not there. Loading the kernel's ipip module makes a fallback `tunl0`
    /// with no endpoints in every namespace; asking for that name finds it
    /// (the kernel answers EEXIST to a second endpoint-less tunnel). On
    /// kernels without ipip this fails with [`Error::is_not_supported`];
    /// a link of that name of another kind is [`Error::is_exists`].
    pub async fn ensure_ipip(&self, x: &Ipip) -> Result<Link> {
        validate_ifname(&x.name)?;
        if let Some(l) = self.link_by_name(&x.name).await? {
            return ipip_or_taken(l, &x.name);
        }
        let mut m = LinkMessage::default();
        common_attrs(&mut m, &x.name, x.mtu, None);
        m.attributes.push(info_attr(InfoKind::IpIp, None));
        match self.new_link(m, format!("create ipip {:?}", x.name)).await {
            Ok(()) => tracing::debug!(netns = self.netns(), name = %x.name, "created ipip"),
            // Created meanwhile (module autoload made the fallback device).
            Err(e) if e.is_exists() => {}
            Err(e) => return Err(e),
        }
        ipip_or_taken(self.link(&x.name).await?, &x.name)
    }

    /// Creates an IPVLAN device on `master` (an index in this handle's
    /// namespace). Returns the link if it was created in this namespace,
    /// `None` if it was created directly in `spec.netns`.
    /// On kernels without ipvlan this fails with [`Error::is_not_supported`].
    pub async fn create_ipvlan(&self, x: &Ipvlan<'_>) -> Result<Option<Link>> {
        let info = InfoData::IpVlan(vec![InfoIpVlan::Mode(x.mode.into())]);
        let what = format!("ipvlan {:?} (master #{}, {:?})", x.name, x.master, x.mode);
        let on = OnMaster {
            name: &x.name,
            mtu: x.mtu,
            mac: None,
            master: x.master,
            netns: x.netns,
        };
        self.create_on_master(on, InfoKind::IpVlan, info, what)
            .await
    }

    /// Creates a MACVLAN device on `master`; see [`Netlink::create_ipvlan`].
    pub async fn create_macvlan(&self, x: &Macvlan<'_>) -> Result<Option<Link>> {
        let info = InfoData::MacVlan(vec![InfoMacVlan::Mode(x.mode.into())]);
        let what = format!("macvlan {:?} (master #{}, {:?})", x.name, x.master, x.mode);
        let on = OnMaster {
            name: &x.name,
            mtu: x.mtu,
            mac: x.mac,
            master: x.master,
            netns: x.netns,
        };
        self.create_on_master(on, InfoKind::MacVlan, info, what)
            .await
    }

    /// A link stacked on `master` (ipvlan, macvlan), created in this
    /// namespace or directly in `netns`; the link is returned only when it
    /// is here to look up.
    async fn create_on_master(
        &self,
        on: OnMaster<'_>,
        kind: InfoKind,
        info: InfoData,
        what: String,
    ) -> Result<Option<Link>> {
        let OnMaster {
            name,
            mtu,
            mac,
            master,
            netns,
        } = on;
        validate_ifname(name)?;
        let mut m = LinkMessage::default();
        common_attrs(&mut m, name, mtu, mac);
        m.attributes.push(LinkAttribute::Link(master));
        if let Some(ns) = netns {
            m.attributes.push(LinkAttribute::NetNsFd(ns.as_raw_fd()));
        }
        m.attributes.push(info_attr(kind, Some(info)));
        self.new_link(m, format!("create {what}")).await?;
        tracing::debug!(netns = self.netns(), name = %name, "created {what}");
        match netns {
            Some(_) => Ok(None),
            None => self.link(name).await.map(Some),
        }
    }

    /// Sets a link administratively up (`up = true`) or down.
    pub async fn set_link_up(&self, index: u32, up: bool) -> Result<()> {
        let mut m = link_msg(index);
        if up {
            m.header.flags = LinkFlags::Up;
        }
        m.header.change_mask = LinkFlags::Up;
        let what = if up { "set up" } else { "set down" };
        self.set_link(m, format!("{what} link #{index}")).await
    }

    /// Sets IFF_PROMISC (e.g. a bridge's promiscuous mode).
    pub async fn set_promisc(&self, index: u32, on: bool) -> Result<()> {
        let mut m = link_msg(index);
        if on {
            m.header.flags = LinkFlags::Promisc;
        }
        m.header.change_mask = LinkFlags::Promisc;
        self.set_link(m, format!("set promisc {on} on link #{index}"))
            .await
    }

    /// Sets the MTU.
    pub async fn set_mtu(&self, index: u32, mtu: u32) -> Result<()> {
        let mut m = link_msg(index);
        m.attributes.push(LinkAttribute::Mtu(mtu));
        self.set_link(m, format!("set mtu {mtu} on link #{index}"))
            .await
    }

    /// Sets the MAC address.
    pub async fn set_mac(&self, index: u32, mac: MacAddr) -> Result<()> {
        let mut m = link_msg(index);
        m.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
        self.set_link(m, format!("set mac {mac} on link #{index}"))
            .await
    }

    /// Sets the link's alias (IFLA_IFALIAS); at most [`ALIAS_MAX`] bytes.
    pub async fn set_alias(&self, index: u32, alias: &str) -> Result<()> {
        if alias.len() > ALIAS_MAX || alias.contains('\0') {
            return Err(Error::invalid(
                "link alias",
                alias.chars().take(64).collect::<String>(),
                format!("must be at most {ALIAS_MAX} bytes without NUL"),
            ));
        }
        let mut m = link_msg(index);
        m.attributes.push(LinkAttribute::IfAlias(alias.to_owned()));
        self.set_link(m, format!("set alias on link #{index}"))
            .await
    }

    /// Enslaves a link to `master` (e.g. a bridge).
    pub async fn set_master(&self, index: u32, master: u32) -> Result<()> {
        let mut m = link_msg(index);
        m.attributes.push(LinkAttribute::Controller(master));
        self.set_link(m, format!("set master #{master} on link #{index}"))
            .await
    }

    /// Releases a link from its master.
    pub async fn set_nomaster(&self, index: u32) -> Result<()> {
        let mut m = link_msg(index);
        m.attributes.push(LinkAttribute::Controller(0));
        self.set_link(m, format!("set nomaster on link #{index}"))
            .await
    }

    /// Renames a link (it must be down).
    pub async fn rename_link(&self, index: u32, new_name: &str) -> Result<()> {
        validate_ifname(new_name)?;
        let mut m = link_msg(index);
        m.attributes
            .push(LinkAttribute::IfName(new_name.to_owned()));
        self.set_link(m, format!("rename link #{index} to {new_name:?}"))
            .await
    }

    /// Moves a link into another namespace, optionally renaming it there in
    /// the same request.
    pub async fn move_link(&self, index: u32, ns: &Netns, new_name: Option<&str>) -> Result<()> {
        let mut m = link_msg(index);
        m.attributes.push(LinkAttribute::NetNsFd(ns.as_raw_fd()));
        if let Some(n) = new_name {
            validate_ifname(n)?;
            m.attributes.push(LinkAttribute::IfName(n.to_owned()));
        }
        let rename = new_name.map(|n| format!(" as {n:?}")).unwrap_or_default();
        self.set_link(
            m,
            format!(
                "move link #{index} to netns {}{rename}",
                ns.path().display()
            ),
        )
        .await
    }

    /// Deletes a link (a veth deletes its peer too).
    pub async fn delete_link(&self, index: u32) -> Result<()> {
        self.ack(
            RouteNetlinkMessage::DelLink(link_msg(index)),
            0,
            format!("delete link #{index}"),
        )
        .await
    }

    /// Deletes the named link; returns `false` if it did not exist.
    pub async fn delete_link_if_exists(&self, name: &str) -> Result<bool> {
        let Some(l) = self.link_by_name(name).await? else {
            return Ok(false);
        };
        match self.delete_link(l.index).await {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Changes bridge port settings (hairpin, isolated, learning) through
    /// AF_BRIDGE RTM_SETLINK with IFLA_PROTINFO. `port` must be enslaved.
    pub async fn set_bridge_port(&self, port: u32, s: &BridgePortSettings) -> Result<()> {
        let mut nlas = Vec::new();
        for (kind, v) in [
            (IFLA_BRPORT_MODE, s.hairpin),
            (IFLA_BRPORT_ISOLATED, s.isolated),
            (IFLA_BRPORT_LEARNING, s.learning),
        ] {
            if let Some(on) = v {
                nlas.push(LinkProtoInfoBridge::Other(DefaultNla::new(
                    kind,
                    vec![u8::from(on)],
                )));
            }
        }
        if nlas.is_empty() {
            return Ok(());
        }
        let mut m = link_msg(port);
        m.header.interface_family = AddressFamily::Bridge;
        m.attributes.push(LinkAttribute::ProtoInfoBridge(nlas));
        self.set_link(m, format!("set bridge port {s:?} on link #{port}"))
            .await
    }

    /// Adds a VLAN or VLAN range to a bridge port (or the bridge itself with
    /// `bridge_self`).
    pub async fn bridge_vlan_add(&self, port: u32, v: &BridgeVlan) -> Result<()> {
        v.validate()?;
        let mut m = link_msg(port);
        m.header.interface_family = AddressFamily::Bridge;
        m.attributes.push(LinkAttribute::AfSpecBridge(v.af_spec()));
        self.set_link(m, format!("add bridge vlan {v:?} on link #{port}"))
            .await
    }

    /// Removes a VLAN or VLAN range from a bridge port.
    pub async fn bridge_vlan_del(&self, port: u32, v: &BridgeVlan) -> Result<()> {
        v.validate()?;
        let mut m = link_msg(port);
        m.header.interface_family = AddressFamily::Bridge;
        m.attributes.push(LinkAttribute::AfSpecBridge(v.af_spec()));
        self.ack(
            RouteNetlinkMessage::DelLink(m),
            0,
            format!("delete bridge vlan {v:?} on link #{port}"),
        )
        .await
    }

    /// VLANs configured on a bridge port (or bridge), one entry per vid.
    pub async fn bridge_vlans(&self, port: u32) -> Result<Vec<BridgeVlanEntry>> {
        let mut m = link_msg(0);
        m.header.interface_family = AddressFamily::Bridge;
        m.attributes
            .push(LinkAttribute::ExtMask(vec![LinkExtentMask::Brvlan]));
        let msgs = self
            .dump(
                RouteNetlinkMessage::GetLink(m),
                format!("list bridge vlans of link #{port}"),
            )
            .await?;
        let mut out = Vec::new();
        for msg in &msgs {
            let RouteNetlinkMessage::NewLink(l) = msg else {
                continue;
            };
            if l.header.index != port {
                continue;
            }
            for a in &l.attributes {
                if let LinkAttribute::AfSpecBridge(spec) = a {
                    for s in spec {
                        if let AfSpecBridge::VlanInfo(vi) = s {
                            out.push(BridgeVlanEntry {
                                vid: vi.vid,
                                pvid: vi.flags.contains(BridgeVlanInfoFlags::Pvid),
                                untagged: vi.flags.contains(BridgeVlanInfoFlags::Untagged),
                            });
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifnames() {
        assert!(validate_ifname("eth0").is_ok());
        assert!(validate_ifname("veth1234567890a").is_ok()); // 15 bytes
        assert!(validate_ifname("veth1234567890ab").is_err()); // 16 bytes
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "a\tb"] {
            assert!(validate_ifname(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn vlan_specs() {
        assert!(BridgeVlan::new(0).validate().is_err());
        assert!(BridgeVlan::new(4095).validate().is_err());
        assert!(BridgeVlan::range(20, 10).validate().is_err());
        assert!(BridgeVlan::range(10, 20).pvid().validate().is_err());
        assert!(BridgeVlan::new(10).pvid().untagged().validate().is_ok());
        let s = BridgeVlan::range(100, 200).af_spec();
        assert_eq!(s.len(), 2);
        let s = BridgeVlan::new(10)
            .pvid()
            .untagged()
            .bridge_self()
            .af_spec();
        assert_eq!(s.len(), 2);
        assert!(matches!(s[0], AfSpecBridge::Flags(BridgeFlag::LowerDev)));
        match &s[1] {
            AfSpecBridge::VlanInfo(vi) => {
                assert_eq!(vi.vid, 10);
                assert!(vi
                    .flags
                    .contains(BridgeVlanInfoFlags::Pvid | BridgeVlanInfoFlags::Untagged));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn modes_parse() {
        // Exactly the reference plugin's names, case included.
        assert_eq!("l3s".parse::<IpvlanMode>().unwrap(), IpvlanMode::L3s);
        assert_eq!("".parse::<IpvlanMode>().unwrap(), IpvlanMode::L2);
        for bad in ["L3S", "l4", " l2"] {
            assert!(bad.parse::<IpvlanMode>().is_err(), "{bad}");
        }
        for m in [IpvlanMode::L2, IpvlanMode::L3, IpvlanMode::L3s] {
            assert_eq!(m.to_string().parse::<IpvlanMode>().unwrap(), m);
        }
        assert_eq!("vepa".parse::<MacvlanMode>().unwrap(), MacvlanMode::Vepa);
    }

    #[test]
    fn parse_link_message() {
        let mut m = link_msg(7);
        m.header.flags = LinkFlags::Up | LinkFlags::Running;
        m.attributes = vec![
            LinkAttribute::IfName("vx0".into()),
            LinkAttribute::Mtu(1450),
            LinkAttribute::Address(vec![2, 0, 0, 0, 0, 1]),
            LinkAttribute::Controller(3),
            info_attr(
                InfoKind::Vxlan,
                Some(InfoData::Vxlan(vec![
                    InfoVxlan::Id(42),
                    InfoVxlan::Port(4789),
                    InfoVxlan::Learning(false),
                ])),
            ),
        ];
        let l = parse_link(&m);
        assert_eq!(l.index, 7);
        assert_eq!(l.name, "vx0");
        assert_eq!(l.kind.as_deref(), Some("vxlan"));
        assert!(l.admin_up && l.oper_up && !l.promisc);
        assert_eq!(l.master, Some(3));
        assert_eq!(l.mac.unwrap().to_string(), "02:00:00:00:00:01");
        let x = l.vxlan.unwrap();
        assert_eq!((x.vni, x.port, x.learning), (42, Some(4789), false));
    }
}
