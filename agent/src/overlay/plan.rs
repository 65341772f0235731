//! Pure logic: remote leases → the kernel entries they need (the data
//! plane diffs them against the kernel and orders the changes).

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use plexus_netlink::MacAddr;
use plexus_subnet::Lease;

use crate::dataplane::{Entry, Hop, Route};

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
    pub underlay_v4: Option<(String, Ipv4Net)>,
    pub underlay_v6: Option<(String, Ipv6Net)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendPlan {
    Vxlan {
        /// `flannel.<VNI>` and `flannel-v6.<VNI>`, when those families are on.
        dev_v4: Option<String>,
        dev_v6: Option<String>,
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
        (
            v4,
            local.underlay_v4.as_ref().map(|(i, n)| (i, IpNet::V4(*n))),
            4,
        ),
        (
            v6,
            local.underlay_v6.as_ref().map(|(i, n)| (i, IpNet::V6(*n))),
            6,
        ),
    ];
    for (remote, underlay, fam) in fams {
        let Some((subnet, public, mac)) = remote else {
            continue;
        };
        let direct = underlay.filter(|(_, n)| n.contains(&public));
        match &local.backend {
            BackendPlan::HostGw => {
                if let Some((dev, _)) = underlay {
                    out.push(Entry::Route(Route::via(subnet, Hop::via(public).dev(dev))));
                }
            }
            BackendPlan::Vxlan {
                dev_v4,
                dev_v6,
                direct_routing,
            } => {
                let dev = if fam == 4 { dev_v4 } else { dev_v6 };
                let Some(dev) = dev else { continue };
                if let (true, Some((udev, _))) = (*direct_routing, direct) {
                    out.push(Entry::Route(Route::via(subnet, Hop::via(public).dev(udev))));
                    continue;
                }
                let Some(mac) = mac else { continue };
                let mac = MacAddr(mac);
                let gw = subnet.network();
                out.push(Entry::Neigh {
                    dev: dev.clone(),
                    ip: gw,
                    mac,
                });
                out.push(Entry::Fdb {
                    dev: dev.clone(),
                    mac,
                    dst: public,
                });
                out.push(Entry::Route(Route::via(
                    subnet,
                    Hop::via(gw).dev(dev).onlink(),
                )));
            }
        }
    }
    out
}

/// Every entry the given remote leases need.
pub fn desired<'a>(local: &Local, leases: impl IntoIterator<Item = &'a Lease>) -> Vec<Entry> {
    leases
        .into_iter()
        .flat_map(|l| entries_for(local, l))
        .collect()
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
                dev_v4: Some("flannel.1".into()),
                dev_v6: None,
                direct_routing,
            },
            underlay_v4: Some(("eth0".into(), "192.168.0.0/24".parse().unwrap())),
            underlay_v6: None,
        }
    }

    fn route(dst: &str, gw: &str, dev: &str, onlink: bool) -> Entry {
        let hop = Hop::via(gw.parse().unwrap()).dev(dev);
        Entry::Route(Route::via(
            dst.parse().unwrap(),
            if onlink { hop.onlink() } else { hop },
        ))
    }

    #[test]
    fn vxlan_lease_gives_neigh_fdb_onlink_route() {
        let e = entries_for(&local(false), &lease("10.5.2.0/24", "192.168.0.2", 2));
        let mac = MacAddr([2, 0, 0, 0, 0, 2]);
        assert_eq!(
            e,
            vec![
                Entry::Neigh {
                    dev: "flannel.1".into(),
                    ip: "10.5.2.0".parse().unwrap(),
                    mac
                },
                Entry::Fdb {
                    dev: "flannel.1".into(),
                    mac,
                    dst: "192.168.0.2".parse().unwrap()
                },
                route("10.5.2.0/24", "10.5.2.0", "flannel.1", true),
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
            vec![route("10.5.2.0/24", "192.168.0.2", "eth0", false)]
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
            vec![route("10.5.4.0/24", "192.168.0.4", "eth0", false)]
        );
    }

    #[test]
    fn ipv6_uses_the_v6_device_and_data() {
        let mut l = local(false);
        l.backend = BackendPlan::Vxlan {
            dev_v4: Some("flannel.1".into()),
            dev_v6: Some("flannel-v6.1".into()),
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
        assert!(e.contains(&route("fd00:5:2::/64", "fd00:5:2::", "flannel-v6.1", true)));
        assert!(e.contains(&Entry::Fdb {
            dev: "flannel-v6.1".into(),
            mac: MacAddr([2, 0, 0, 0, 6, 2]),
            dst: "fd00::2".parse().unwrap()
        }));
    }
}
