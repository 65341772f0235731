//! What plexusd writes to the kernel, as values: every entry has a [`Key`]
//! (two entries with one key are the same kernel object, so "put" of a
//! key that exists replaces it in place) and is wanted by one [`Owner`].
//! Devices are named, not numbered: an entry on `flannel.1` stays right
//! when the device is deleted by hand and created again.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use ipnet::IpNet;
use plexus_netlink::nft::{BaseChain, Batch, Expr};
use plexus_netlink::MacAddr;

/// Which producer wants an entry. A key wanted by two owners goes to the
/// first; the second is told so (a producer bug, not a kernel state).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Owner {
    /// The flannel-style overlay: the VXLAN devices and their address,
    /// each remote lease's neighbour, FDB entry and route.
    Overlay,
    /// flannel's `--ip-masq` chain.
    OverlayMasq,
    /// The routed network's blackhole per held block (proto 113).
    Blocks,
    /// Routes learned over BGP (proto 114, [`LEARNED_METRIC`]).
    Learned,
    /// The IP-in-IP device and its address.
    Tunnel,
    /// The pools' nat-outgoing chain.
    NatOutgoing,
    /// Network policy: one table per pod interface, in the pod's netns.
    Policy,
}

/// The chain of plexusd's table each owner writes.
pub const CHAIN_OVERLAY_MASQ: &str = "overlay-masq";
pub const CHAIN_NAT_OUTGOING: &str = "routed-nat-outgoing";

impl Owner {
    /// The node chains this owner's entries are (claimed once it speaks,
    /// so a previous run's chain it no longer wants goes).
    pub fn chains(&self) -> &'static [&'static str] {
        match self {
            Owner::OverlayMasq => &[CHAIN_OVERLAY_MASQ],
            Owner::NatOutgoing => &[CHAIN_NAT_OUTGOING],
            _ => &[],
        }
    }

    /// For logs and metrics.
    pub fn label(&self) -> String {
        match self {
            Owner::Overlay => "overlay".into(),
            Owner::OverlayMasq => "overlay-masq".into(),
            Owner::Blocks => "blocks".into(),
            Owner::Learned => "learned".into(),
            Owner::Tunnel => "tunnel".into(),
            Owner::NatOutgoing => "nat-outgoing".into(),
            Owner::Policy => "policy".into(),
        }
    }
}

/// RTPROT of the blackhole routes of this node's blocks.
pub const PROTO_BLOCK: u8 = 113;
/// RTPROT of the routes learned over BGP.
pub const PROTO_BGP: u8 = 114;
/// The metric of every route learned over BGP: above any a distribution,
/// a DHCP client or an operator gives the node's own routes, so a learned
/// route to a prefix the node already routes (its default route, a
/// connected subnet, a pod) sits behind it and never wins; it carries
/// traffic only where nothing else routes.
pub const LEARNED_METRIC: u32 = 4_000_000_000;
/// The main routing table.
pub const MAIN: u32 = 254;
/// The inet table every chain of plexusd's node namespace lives in.
pub const NFT_TABLE: &str = "plexusd";

/// The kinds of entries, in the order the kernel needs them created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Link,
    Addr,
    Neigh,
    Fdb,
    Route,
    Nft,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Link,
        Kind::Addr,
        Kind::Neigh,
        Kind::Fdb,
        Kind::Route,
        Kind::Nft,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Kind::Link => "link",
            Kind::Addr => "address",
            Kind::Neigh => "neighbour",
            Kind::Fdb => "fdb",
            Kind::Route => "route",
            Kind::Nft => "nft",
        }
    }
}

/// What identifies an entry in the kernel.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    Link(String),
    Addr {
        dev: String,
        net: IpNet,
    },
    Neigh {
        dev: String,
        ip: IpAddr,
    },
    Fdb {
        dev: String,
        mac: MacAddr,
    },
    /// A route is one per destination, table and metric (and TOS, never
    /// used here): the kernel replaces by exactly these.
    Route {
        table: u32,
        dst: IpNet,
        metric: u32,
    },
    /// A chain of [`NFT_TABLE`] in the node's namespace.
    NftChain(String),
    /// A whole inet table in another namespace (a pod's).
    NftTable {
        netns: PathBuf,
        table: String,
    },
}

impl Key {
    pub fn kind(&self) -> Kind {
        match self {
            Key::Link(_) => Kind::Link,
            Key::Addr { .. } => Kind::Addr,
            Key::Neigh { .. } => Kind::Neigh,
            Key::Fdb { .. } => Kind::Fdb,
            Key::Route { .. } => Kind::Route,
            Key::NftChain(_) | Key::NftTable { .. } => Kind::Nft,
        }
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Key::Link(n) => write!(f, "link {n}"),
            Key::Addr { dev, net } => write!(f, "address {net} on {dev}"),
            Key::Neigh { dev, ip } => write!(f, "neighbour {ip} on {dev}"),
            Key::Fdb { dev, mac } => write!(f, "fdb {mac} on {dev}"),
            Key::Route { table, dst, metric } => {
                write!(f, "route {dst} metric {metric}")?;
                if *table != MAIN {
                    write!(f, " table {table}")?;
                }
                Ok(())
            }
            Key::NftChain(c) => write!(f, "nft chain inet {NFT_TABLE} {c}"),
            Key::NftTable { netns, table } => {
                write!(f, "nft table inet {table} in {}", netns.display())
            }
        }
    }
}

/// A device plexusd creates and keeps as it wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    Vxlan(Vxlan),
    /// The IP-in-IP device (`tunl0`, the kernel's fallback device: it is
    /// never deleted, only set down when no pool wants it).
    Ipip {
        name: String,
        mtu: u32,
        up: bool,
    },
}

impl Link {
    pub fn name(&self) -> &str {
        match self {
            Link::Vxlan(v) => &v.name,
            Link::Ipip { name, .. } => name,
        }
    }
}

/// A VXLAN device as the overlay wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vxlan {
    pub name: String,
    pub vni: u32,
    pub port: u16,
    pub local: IpAddr,
    /// The underlay device's name.
    pub underlay: String,
    pub learning: bool,
    pub mtu: u32,
    /// The MAC to create it with (other nodes know it from our lease).
    pub mac: MacAddr,
}

/// One path of a route.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hop {
    pub gateway: Option<IpAddr>,
    pub dev: Option<String>,
    pub onlink: bool,
}

impl Hop {
    pub fn via(gateway: IpAddr) -> Hop {
        Hop {
            gateway: Some(gateway),
            dev: None,
            onlink: false,
        }
    }

    pub fn dev(mut self, dev: &str) -> Hop {
        self.dev = Some(dev.to_string());
        self
    }

    pub fn onlink(mut self) -> Hop {
        self.onlink = true;
        self
    }
}

/// A route in the node's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub table: u32,
    pub dst: IpNet,
    pub metric: u32,
    /// RTPROT; `None`: the kernel's default (boot), as flannel's routes.
    pub proto: Option<u8>,
    pub blackhole: bool,
    /// One hop, or several (ECMP, RTA_MULTIPATH); none for a blackhole.
    pub hops: Vec<Hop>,
}

impl Route {
    pub fn via(dst: IpNet, hop: Hop) -> Route {
        Route {
            table: MAIN,
            dst: dst.trunc(),
            metric: 0,
            proto: None,
            blackhole: false,
            hops: vec![hop],
        }
    }

    pub fn blackhole(dst: IpNet, proto: u8) -> Route {
        Route {
            table: MAIN,
            dst: dst.trunc(),
            metric: 0,
            proto: Some(proto),
            blackhole: true,
            hops: Vec::new(),
        }
    }

    pub fn proto(mut self, proto: u8) -> Route {
        self.proto = Some(proto);
        self
    }

    pub fn metric(mut self, metric: u32) -> Route {
        self.metric = metric;
        self
    }
}

/// A chain of plexusd's table in the node's namespace, holding exactly
/// `rules`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    pub base: Option<BaseChain>,
    pub comment: String,
    pub rules: Vec<Vec<Expr>>,
}

/// A whole table in another namespace, written atomically from a batch
/// that (re)creates it; `fingerprint` tells two versions apart.
#[derive(Debug, Clone)]
pub struct Table {
    pub netns: PathBuf,
    pub name: String,
    pub batch: Arc<Batch>,
    pub fingerprint: u64,
}

impl PartialEq for Table {
    fn eq(&self, o: &Table) -> bool {
        self.netns == o.netns && self.name == o.name && self.fingerprint == o.fingerprint
    }
}

impl Eq for Table {}

/// One kernel object plexusd writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Link(Link),
    /// An address on one of plexusd's devices.
    Addr {
        dev: String,
        net: IpNet,
    },
    /// A permanent neighbour on one of plexusd's devices.
    Neigh {
        dev: String,
        ip: IpAddr,
        mac: MacAddr,
    },
    /// A `self permanent` FDB entry of a VXLAN device.
    Fdb {
        dev: String,
        mac: MacAddr,
        dst: IpAddr,
    },
    Route(Route),
    Chain(Chain),
    Table(Table),
}

impl Entry {
    pub fn key(&self) -> Key {
        match self {
            Entry::Link(l) => Key::Link(l.name().to_string()),
            Entry::Addr { dev, net } => Key::Addr {
                dev: dev.clone(),
                net: *net,
            },
            Entry::Neigh { dev, ip, .. } => Key::Neigh {
                dev: dev.clone(),
                ip: *ip,
            },
            Entry::Fdb { dev, mac, .. } => Key::Fdb {
                dev: dev.clone(),
                mac: *mac,
            },
            Entry::Route(r) => Key::Route {
                table: r.table,
                dst: r.dst,
                metric: r.metric,
            },
            Entry::Chain(c) => Key::NftChain(c.name.clone()),
            Entry::Table(t) => Key::NftTable {
                netns: t.netns.clone(),
                table: t.name.clone(),
            },
        }
    }

    pub fn kind(&self) -> Kind {
        self.key().kind()
    }

    /// Whether the kernel's `actual` (as listed) is what `self` wants.
    /// Listing gives what the kernel chose for what we left unsaid (the
    /// protocol of a route written without one), so those are not
    /// compared.
    pub fn satisfied_by(&self, actual: &Entry) -> bool {
        match (self, actual) {
            (Entry::Route(w), Entry::Route(a)) => {
                w.blackhole == a.blackhole
                    && w.proto.is_none_or(|p| a.proto == Some(p))
                    && same_hops(&w.hops, &a.hops)
            }
            (
                Entry::Link(Link::Ipip { mtu, up, .. }),
                Entry::Link(Link::Ipip {
                    mtu: am, up: au, ..
                }),
            ) => mtu == am && up == au,
            (w, a) => w == a,
        }
    }
}

/// Hops compared as sets (the kernel lists multipath hops in its order).
fn same_hops(want: &[Hop], got: &[Hop]) -> bool {
    let mut w = want.to_vec();
    let mut g = got.to_vec();
    w.sort();
    g.sort();
    w == g
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_the_kernel_object() {
        let r = Route::via(
            "10.5.2.0/24".parse().unwrap(),
            Hop::via("10.5.2.0".parse().unwrap())
                .dev("flannel.1")
                .onlink(),
        );
        assert_eq!(
            Entry::Route(r.clone()).key(),
            Key::Route {
                table: MAIN,
                dst: "10.5.2.0/24".parse().unwrap(),
                metric: 0
            }
        );
        // A learned route at our metric is another kernel object than the
        // node's own route to the same destination.
        let learned = r.clone().proto(PROTO_BGP).metric(LEARNED_METRIC);
        assert_ne!(Entry::Route(learned).key(), Entry::Route(r.clone()).key());
        // The protocol the kernel filled in is not a difference.
        let listed = r.clone().proto(3);
        assert!(Entry::Route(r).satisfied_by(&Entry::Route(listed)));
        let hole = Route::blackhole("10.96.0.0/26".parse().unwrap(), PROTO_BLOCK);
        assert!(
            !Entry::Route(hole.clone()).satisfied_by(&Entry::Route(Route {
                proto: Some(3),
                ..hole
            }))
        );
    }

    #[test]
    fn multipath_hops_compare_as_sets() {
        let a = Hop::via("10.0.0.2".parse().unwrap());
        let b = Hop::via("10.0.0.3".parse().unwrap());
        assert!(same_hops(&[a.clone(), b.clone()], &[b, a]));
    }
}
