//! Pure logic: remote leases → the kernel entries they need → the ordered
//! changes that turn what is programmed into that.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use plexus_netlink::MacAddr;
use plexus_subnet::Lease;

use crate::olddp::{Entry, Key, Op};

/// A lease's identity: its subnets (the store key is derived from them).
pub type LeaseId = (Option<Ipv4Net>, Option<Ipv6Net>);

pub fn lease_id(l: &Lease) -> LeaseId {
    (l.subnet, l.subnet6)
}

/// What this node knows that turns a remote lease into entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Local {
    /// This node's own lease (never programmed as a remote).
    pub own: LeaseId,
    pub backend: BackendPlan,
    /// The underlay interface and on-link network, per family, for
    /// DirectRouting and host-gw routes.
    pub underlay_v4: Option<(u32, Ipv4Net)>,
    pub underlay_v6: Option<(u32, Ipv6Net)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendPlan {
    Vxlan {
        /// `flannel.<VNI>` and `flannel-v6.<VNI>`, when those families are on.
        dev_v4: Option<u32>,
        dev_v6: Option<u32>,
        direct_routing: bool,
    },
    HostGw,
}

impl BackendPlan {
    fn type_name(&self) -> &'static str {
        match self {
            BackendPlan::Vxlan { .. } => "vxlan",
            BackendPlan::HostGw => "host-gw",
        }
    }
}

/// The entries one remote lease needs, per family: with VXLAN a neighbour
/// (subnet .0 → VTEP MAC), an FDB entry (VTEP MAC → public IP) and an
/// onlink route via .0; a plain route via the public IP instead when the
/// remote is on our underlay network (DirectRouting) or with host-gw.
/// Leases of another backend, or missing what we need, give nothing.
pub fn entries_for(local: &Local, lease: &Lease) -> Vec<Entry> {
    let mut out = Vec::new();
    if lease_id(lease) == local.own || lease.attrs.backend_type != local.backend.type_name() {
        return out;
    }
    let a = &lease.attrs;
    let v4 = lease.subnet.zip(a.public_ip).map(|(net, pip)| {
        (
            IpNet::V4(net.trunc()),
            IpAddr::V4(pip),
            a.backend_data.as_ref().map(|d| d.vtep_mac),
        )
    });
    let v6 = lease.subnet6.zip(a.public_ipv6).map(|(net, pip)| {
        (
            IpNet::V6(net.trunc()),
            IpAddr::V6(pip),
            a.backend_v6_data.as_ref().map(|d| d.vtep_mac),
        )
    });
    let fams = [
        (v4, local.underlay_v4.map(|(i, n)| (i, IpNet::V4(n))), 4),
        (v6, local.underlay_v6.map(|(i, n)| (i, IpNet::V6(n))), 6),
    ];
    for (remote, underlay, fam) in fams {
        let Some((subnet, public, mac)) = remote else {
            continue;
        };
        let direct = underlay.filter(|(_, n)| n.contains(&public));
        match &local.backend {
            BackendPlan::HostGw => {
                if let Some((dev, _)) = underlay {
                    out.push(Entry::Route {
                        dst: subnet,
                        gw: public,
                        dev: Some(dev),
                        onlink: false,
                    });
                }
            }
            BackendPlan::Vxlan {
                dev_v4,
                dev_v6,
                direct_routing,
            } => {
                let dev = if fam == 4 { *dev_v4 } else { *dev_v6 };
                let Some(dev) = dev else { continue };
                if let (true, Some((udev, _))) = (*direct_routing, direct) {
                    out.push(Entry::Route {
                        dst: subnet,
                        gw: public,
                        dev: Some(udev),
                        onlink: false,
                    });
                    continue;
                }
                let Some(mac) = mac else { continue };
                let mac = MacAddr(mac);
                let gw = subnet.network();
                out.push(Entry::Neigh { dev, ip: gw, mac });
                out.push(Entry::Fdb {
                    dev,
                    mac,
                    dst: public,
                });
                out.push(Entry::Route {
                    dst: subnet,
                    gw,
                    dev: Some(dev),
                    onlink: true,
                });
            }
        }
    }
    out
}

/// Every entry the given remote leases need, by key.
pub fn desired<'a>(
    local: &Local,
    leases: impl IntoIterator<Item = &'a Lease>,
) -> BTreeMap<Key, Entry> {
    let mut out = BTreeMap::new();
    for l in leases {
        for e in entries_for(local, l) {
            out.insert(e.key(), e);
        }
    }
    out
}

/// The changes from `programmed` to `desired`, ordered so that the kernel
/// never has to ARP for a remote gateway and no packet meets a route
/// without its neighbour: stale routes go first, then neighbours and FDB
/// entries are added (or replaced), then routes, and last the stale
/// neighbours and FDB entries.
pub fn plan(desired: &BTreeMap<Key, Entry>, programmed: &BTreeMap<Key, Entry>) -> Vec<Op> {
    let is_route = |k: &Key| matches!(k, Key::Route(_));
    let stale = |want_route: bool| {
        programmed
            .iter()
            .filter(move |(k, _)| is_route(k) == want_route && !desired.contains_key(k))
            .map(|(_, e)| Op::Del(e.clone()))
    };
    let missing = |want_route: bool| {
        desired
            .iter()
            .filter(move |(k, e)| is_route(k) == want_route && programmed.get(k) != Some(e))
            .map(|(_, e)| Op::Add(e.clone()))
    };
    let mut ops: Vec<Op> = stale(true).collect();
    ops.extend(missing(false));
    ops.extend(missing(true));
    ops.extend(stale(false));
    ops
}

#[cfg(test)]
mod tests {
    use super::*;
    use plexus_subnet::{LeaseAttrs, VxlanBackendData};

    pub(crate) fn lease(subnet: &str, public: &str, mac: u8) -> Lease {
        Lease {
            subnet: Some(subnet.parse().unwrap()),
            subnet6: None,
            attrs: LeaseAttrs {
                public_ip: Some(public.parse().unwrap()),
                public_ipv6: None,
                backend_type: "vxlan".into(),
                backend_data: Some(VxlanBackendData {
                    vni: 1,
                    vtep_mac: [2, 0, 0, 0, 0, mac],
                }),
                backend_v6_data: None,
            },
        }
    }

    fn local(direct_routing: bool) -> Local {
        Local {
            own: (Some("10.5.1.0/24".parse().unwrap()), None),
            backend: BackendPlan::Vxlan {
                dev_v4: Some(7),
                dev_v6: None,
                direct_routing,
            },
            underlay_v4: Some((2, "192.168.0.0/24".parse().unwrap())),
            underlay_v6: None,
        }
    }

    #[test]
    fn vxlan_lease_gives_neigh_fdb_onlink_route() {
        let e = entries_for(&local(false), &lease("10.5.2.0/24", "192.168.0.2", 2));
        let mac = MacAddr([2, 0, 0, 0, 0, 2]);
        assert_eq!(
            e,
            vec![
                Entry::Neigh {
                    dev: 7,
                    ip: "10.5.2.0".parse().unwrap(),
                    mac
                },
                Entry::Fdb {
                    dev: 7,
                    mac,
                    dst: "192.168.0.2".parse().unwrap()
                },
                Entry::Route {
                    dst: "10.5.2.0/24".parse().unwrap(),
                    gw: "10.5.2.0".parse().unwrap(),
                    dev: Some(7),
                    onlink: true
                },
            ]
        );
        // Our own lease and other backends give nothing.
        assert!(entries_for(&local(false), &lease("10.5.1.0/24", "192.168.0.1", 1)).is_empty());
        let mut hg = lease("10.5.3.0/24", "192.168.0.3", 3);
        hg.attrs.backend_type = "host-gw".into();
        assert!(entries_for(&local(false), &hg).is_empty());
    }

    #[test]
    fn direct_routing_only_on_the_same_l2() {
        let near = entries_for(&local(true), &lease("10.5.2.0/24", "192.168.0.2", 2));
        assert_eq!(
            near,
            vec![Entry::Route {
                dst: "10.5.2.0/24".parse().unwrap(),
                gw: "192.168.0.2".parse().unwrap(),
                dev: Some(2),
                onlink: false
            }]
        );
        let far = entries_for(&local(true), &lease("10.5.2.0/24", "172.16.0.2", 2));
        assert_eq!(far.len(), 3);
    }

    #[test]
    fn host_gw_routes_via_public_ip() {
        let mut l = local(false);
        l.backend = BackendPlan::HostGw;
        let mut x = lease("10.5.4.0/24", "192.168.0.4", 4);
        x.attrs.backend_type = "host-gw".into();
        x.attrs.backend_data = None;
        assert_eq!(
            entries_for(&l, &x),
            vec![Entry::Route {
                dst: "10.5.4.0/24".parse().unwrap(),
                gw: "192.168.0.4".parse().unwrap(),
                dev: Some(2),
                onlink: false
            }]
        );
    }

    #[test]
    fn ipv6_uses_the_v6_device_and_data() {
        let mut l = local(false);
        l.backend = BackendPlan::Vxlan {
            dev_v4: Some(7),
            dev_v6: Some(8),
            direct_routing: false,
        };
        let mut x = lease("10.5.2.0/24", "192.168.0.2", 2);
        x.subnet6 = Some("fd00:5:2::/64".parse().unwrap());
        x.attrs.public_ipv6 = Some("fd00::2".parse().unwrap());
        x.attrs.backend_v6_data = Some(VxlanBackendData {
            vni: 1,
            vtep_mac: [2, 0, 0, 0, 6, 2],
        });
        let e = entries_for(&l, &x);
        assert_eq!(e.len(), 6);
        assert!(e.contains(&Entry::Route {
            dst: "fd00:5:2::/64".parse().unwrap(),
            gw: "fd00:5:2::".parse().unwrap(),
            dev: Some(8),
            onlink: true
        }));
        assert!(e.contains(&Entry::Fdb {
            dev: 8,
            mac: MacAddr([2, 0, 0, 0, 6, 2]),
            dst: "fd00::2".parse().unwrap()
        }));
    }

    #[test]
    fn plan_orders_changes_so_nothing_arps() {
        let l = local(false);
        let a = lease("10.5.2.0/24", "192.168.0.2", 2);
        let b = lease("10.5.3.0/24", "192.168.0.3", 3);
        let want = desired(&l, [&a]);
        let have = desired(&l, [&b]);
        let ops = plan(&want, &have);
        let kinds: Vec<String> = ops
            .iter()
            .map(|o| match o {
                Op::Add(e) | Op::Del(e) => format!(
                    "{}{}",
                    if matches!(o, Op::Add(_)) { "+" } else { "-" },
                    match e {
                        Entry::Neigh { .. } => "neigh",
                        Entry::Fdb { .. } => "fdb",
                        Entry::Route { .. } => "route",
                    }
                ),
            })
            .collect();
        assert_eq!(
            kinds,
            ["-route", "+neigh", "+fdb", "+route", "-neigh", "-fdb"]
        );
        // Nothing to do when the kernel already matches.
        assert!(plan(&want, &want).is_empty());
    }

    #[test]
    fn changed_mac_replaces_without_deleting_the_key() {
        let l = local(false);
        let old = desired(&l, [&lease("10.5.2.0/24", "192.168.0.2", 2)]);
        let new = desired(&l, [&lease("10.5.2.0/24", "192.168.0.2", 9)]);
        let ops = plan(&new, &old);
        // neighbour replaced in place, new FDB entry, old FDB entry removed,
        // the route untouched.
        assert_eq!(ops.len(), 3);
        assert!(matches!(&ops[0], Op::Add(Entry::Neigh { mac, .. }) if mac.0[5] == 9));
        assert!(matches!(&ops[1], Op::Add(Entry::Fdb { mac, .. }) if mac.0[5] == 9));
        assert!(matches!(&ops[2], Op::Del(Entry::Fdb { mac, .. }) if mac.0[5] == 2));
    }
}
