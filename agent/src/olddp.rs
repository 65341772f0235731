//! The data plane as the control loop sees it: a small trait over the
//! kernel ([`crate::kernel::KernelDataPlane`]) with an in-memory twin
//! ([`crate::fake::FakeDataPlane`]) for tests without root.
//!
//! Entries are plain values with a [`Key`]: two entries with the same key
//! are the same kernel object (a neighbour is identified by device and IP,
//! an FDB entry by device and MAC, a route by its destination), so an
//! "add" of an entry whose key exists replaces it in place.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use plexus_netlink::MacAddr;

/// One kernel object the overlay programs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Entry {
    /// A permanent neighbour: `ip` is at `mac` on device `dev`.
    Neigh { dev: u32, ip: IpAddr, mac: MacAddr },
    /// An FDB entry on a VXLAN device: frames for `mac` go to VTEP `dst`
    /// (`self permanent`).
    Fdb { dev: u32, mac: MacAddr, dst: IpAddr },
    /// A route in the main table: `dst via gw [dev DEV] [onlink]`.
    Route {
        dst: IpNet,
        gw: IpAddr,
        dev: Option<u32>,
        onlink: bool,
    },
}

/// What identifies an entry in the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    Neigh(u32, IpAddr),
    Fdb(u32, MacAddr),
    Route(IpNet),
}

impl Entry {
    pub fn key(&self) -> Key {
        match self {
            Entry::Neigh { dev, ip, .. } => Key::Neigh(*dev, *ip),
            Entry::Fdb { dev, mac, .. } => Key::Fdb(*dev, *mac),
            Entry::Route { dst, .. } => Key::Route(*dst),
        }
    }
}

/// One change; `Add` replaces an entry with the same key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Add(Entry),
    Del(Entry),
}

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
    pub mtu: u32,
    pub addr: Ipv6Addr,
    pub net: Ipv6Net,
}

/// A VXLAN device as the overlay wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanSpec {
    pub name: String,
    pub vni: u32,
    pub port: u16,
    pub local: IpAddr,
    pub underlay: u32,
    pub learning: bool,
    pub mtu: u32,
    /// The MAC to create it with (an existing compatible device keeps its own).
    pub mac: MacAddr,
    /// The only address on it: the node subnet's network address, /32 or /128.
    pub addr: IpNet,
}

/// A VXLAN device as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanDevice {
    pub index: u32,
    pub mac: MacAddr,
}

/// Which kernel entries belong to the overlay (what listing returns and
/// what reconciliation may delete): neighbours and FDB entries on the
/// overlay's devices, and routes in the main table towards the cluster
/// networks (other than this node's own subnets) that go via a gateway or
/// out of an overlay device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ownership {
    pub devices: Vec<u32>,
    pub networks: Vec<IpNet>,
    pub own_subnets: Vec<IpNet>,
}

impl Ownership {
    /// Whether a listed route is the overlay's.
    pub fn owns_route(&self, dst: &IpNet, gw: Option<IpAddr>, dev: Option<u32>) -> bool {
        let on_device = dev.is_some_and(|d| self.devices.contains(&d));
        self.networks.iter().any(|n| n.contains(dst))
            && !self.own_subnets.contains(dst)
            && (gw.is_some() || on_device)
    }
}

/// flannel's masquerade rules for one network: traffic from the pod network
/// leaving the cluster network is masqueraded, traffic inside it is not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasqRules {
    pub network: Option<Ipv4Net>,
    pub subnet: Option<Ipv4Net>,
    pub ipv6_network: Option<Ipv6Net>,
    pub ipv6_subnet: Option<Ipv6Net>,
}

/// The kernel (or a stand-in) as the overlay uses it.
#[async_trait::async_trait]
pub trait DataPlane: Send {
    /// The underlay interface and the public addresses on it.
    async fn underlay(&mut self, sel: &UnderlaySelect) -> anyhow::Result<Underlay>;
    /// The MAC of device `name`, if it exists.
    async fn device_mac(&mut self, name: &str) -> anyhow::Result<Option<MacAddr>>;
    /// Creates the VXLAN device, or reuses an existing compatible one
    /// (keeping its MAC, flannel #1795); sets MTU and address; brings it up.
    async fn ensure_vxlan(&mut self, spec: &VxlanSpec) -> anyhow::Result<VxlanDevice>;
    /// The overlay's entries now in the kernel.
    async fn programmed(&mut self, owner: &Ownership) -> anyhow::Result<Vec<Entry>>;
    /// Applies `ops` in order; returns the ones that failed (index, why).
    /// Deleting an entry that is already gone is not a failure.
    async fn apply(&mut self, ops: &[Op]) -> anyhow::Result<Vec<(usize, String)>>;
    /// Installs (`Some`) or removes (`None`) the masquerade rules.
    async fn set_masq(&mut self, rules: Option<&MasqRules>) -> anyhow::Result<()>;
}
