//! Which routes the pod gets, decided without the kernel. Per family of
//! its addresses: `routes` from the config when given; otherwise, as the
//! pod's primary network, `default via GATEWAY`; as a secondary network
//! (the pod already has a default route of that family on another
//! interface), a route to each routed pool via GATEWAY instead.
//!
//! The kernel gets them `onlink` (see `plugin`): no subnet is on the link,
//! and a `169.254.1.1/32 dev net1` route would make the gateway reachable
//! through one interface only when a pod has two routed networks.

use ipnet::IpNet;
use plexus_cni::{CniError, Route};

use crate::config::{gateway_for, GATEWAY_V4, GATEWAY_V6};

/// The pod's place in its network namespace, per family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Secondary {
    pub v4: bool,
    pub v6: bool,
}

impl Secondary {
    fn for_family(self, v4: bool) -> bool {
        if v4 {
            self.v4
        } else {
            self.v6
        }
    }
}

/// The routes for a pod with addresses `ips`.
pub fn pod_routes(
    ips: &[IpNet],
    configured: Option<&[Route]>,
    pools: &[IpNet],
    secondary: Secondary,
) -> Result<Vec<Route>, CniError> {
    let mut out = Vec::new();
    for v4 in [true, false] {
        if !ips.iter().any(|i| i.addr().is_ipv4() == v4) {
            continue;
        }
        let gw = if v4 { GATEWAY_V4 } else { GATEWAY_V6 };
        let same = |n: &IpNet| n.addr().is_ipv4() == v4;
        if let Some(routes) = configured {
            out.extend(routes.iter().filter(|r| same(&r.dst)).map(|r| Route {
                gw: Some(gateway_for(r.dst.addr())),
                ..r.clone()
            }));
        } else if secondary.for_family(v4) {
            let fam: Vec<&IpNet> = pools.iter().filter(|p| same(p)).collect();
            if fam.is_empty() {
                return Err(CniError::invalid_config(format!(
                    "the pod already has an IPv{} default route on another interface, so this network is attached as a secondary one, but no pool CIDR is known to route to",
                    if v4 { 4 } else { 6 }
                ))
                .with_details(
                    "set \"routes\", give \"pool\" as a CIDR, or use an \"ipam\" with subnets",
                ));
            }
            out.extend(fam.into_iter().map(|p| Route::new(*p, Some(gw))));
        } else {
            let any = if v4 {
                IpNet::V4(Default::default())
            } else {
                IpNet::V6(Default::default())
            };
            out.push(Route::new(any, Some(gw)));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn show(r: &[Route]) -> Vec<String> {
        r.iter()
            .map(|r| match r.gw {
                Some(g) => format!("{} via {g}", r.dst),
                None => r.dst.to_string(),
            })
            .collect()
    }

    #[test]
    fn primary_gets_a_default_route_per_family() {
        let r = pod_routes(
            &nets(&["10.1.0.5/32", "fd00::5/128"]),
            None,
            &[],
            Secondary::default(),
        )
        .unwrap();
        assert_eq!(show(&r), ["0.0.0.0/0 via 169.254.1.1", "::/0 via fe80::1"]);
        let r = pod_routes(&nets(&["10.1.0.5/32"]), None, &[], Secondary::default()).unwrap();
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn secondary_routes_to_the_pools_of_its_family() {
        let pools = nets(&["10.1.0.0/16", "10.2.0.0/16", "fd00::/48"]);
        let sec = Secondary {
            v4: true,
            v6: false,
        };
        let r = pod_routes(&nets(&["10.1.0.5/32", "fd00::5/128"]), None, &pools, sec).unwrap();
        assert_eq!(
            show(&r),
            [
                "10.1.0.0/16 via 169.254.1.1",
                "10.2.0.0/16 via 169.254.1.1",
                "::/0 via fe80::1"
            ]
        );
        let e = pod_routes(&nets(&["10.1.0.5/32"]), None, &nets(&["fd00::/48"]), sec).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("secondary"), "{e}");
    }

    #[test]
    fn configured_routes_replace_both() {
        let routes = vec![
            Route::new("10.96.0.0/12".parse().unwrap(), None),
            Route::new("fd01::/64".parse().unwrap(), None),
        ];
        for sec in [Secondary::default(), Secondary { v4: true, v6: true }] {
            let r = pod_routes(&nets(&["10.1.0.5/32"]), Some(&routes), &[], sec).unwrap();
            assert_eq!(show(&r), ["10.96.0.0/12 via 169.254.1.1"]);
        }
    }
}
