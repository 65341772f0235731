//! Gateway and default-route computation, as the reference's calcGateways.

use std::net::IpAddr;

use ipnet::IpNet;
use plexus_cni::{CniResult, Route};

/// Gateways to put on the bridge, per family (address with the pod's prefix).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Gateways {
    pub v4: Vec<IpNet>,
    pub v6: Vec<IpNet>,
}

/// The first address of `net`'s subnet plus one (10.1.2.5/24 -> 10.1.2.1).
pub fn gateway_of(net: &IpNet) -> IpAddr {
    match net.trunc() {
        IpNet::V4(n) => IpAddr::V4((u32::from(n.network()).wrapping_add(1)).into()),
        IpNet::V6(n) => IpAddr::V6((u128::from(n.network()).wrapping_add(1)).into()),
    }
}

fn default_dst(v4: bool) -> IpNet {
    if v4 {
        IpNet::V4(Default::default())
    } else {
        IpNet::V6(Default::default())
    }
}

/// Points every IP at `iface_index`, fills in missing gateways when
/// `is_gateway`, adds a default route per family when `is_default_gateway`
/// (unless the IPAM result already has one with a gateway), and returns the
/// gateway addresses for the bridge.
pub fn calc_gateways(
    result: &mut CniResult,
    iface_index: usize,
    is_gateway: bool,
    is_default_gateway: bool,
) -> Gateways {
    let mut gws = Gateways::default();
    let mut default_found = [false, false];
    for i in 0..result.ips.len() {
        let v4 = result.ips[i].address.addr().is_ipv4();
        let fam = usize::from(!v4);
        result.ips[i].interface = Some(iface_index);
        if result.ips[i].gateway.is_none() && is_gateway {
            result.ips[i].gateway = Some(gateway_of(&result.ips[i].address));
        }
        let ipc = result.ips[i].clone();
        if is_default_gateway && !default_found[fam] {
            let dst = default_dst(v4);
            default_found[fam] = result.routes.iter().any(|r| r.gw.is_some() && r.dst == dst);
            if !default_found[fam] {
                result.routes.push(Route::new(dst, ipc.gateway));
                default_found[fam] = true;
            }
        }
        if is_gateway {
            if let Some(gw) = ipc.gateway {
                if let Ok(n) = IpNet::new(gw, ipc.address.prefix_len()) {
                    if v4 {
                        gws.v4.push(n);
                    } else {
                        gws.v6.push(n);
                    }
                }
            }
        }
    }
    gws
}

#[cfg(test)]
mod tests {
    use super::*;
    use plexus_cni::IpConfig;

    fn ip(a: &str, gw: Option<&str>) -> IpConfig {
        IpConfig {
            address: a.parse().unwrap(),
            gateway: gw.map(|g| g.parse().unwrap()),
            interface: None,
        }
    }

    #[test]
    fn computes_gateway_and_default_route() {
        let mut r = CniResult {
            ips: vec![ip("10.1.2.5/24", None), ip("fd00::5/64", Some("fd00::1"))],
            ..Default::default()
        };
        let g = calc_gateways(&mut r, 2, true, true);
        assert_eq!(r.ips[0].gateway.unwrap().to_string(), "10.1.2.1");
        assert_eq!(r.ips[0].interface, Some(2));
        assert_eq!(g.v4, vec!["10.1.2.1/24".parse::<IpNet>().unwrap()]);
        assert_eq!(g.v6, vec!["fd00::1/64".parse::<IpNet>().unwrap()]);
        assert_eq!(r.routes.len(), 2);
        assert_eq!(r.routes[0].dst.to_string(), "0.0.0.0/0");
        assert_eq!(r.routes[0].gw.unwrap().to_string(), "10.1.2.1");
        assert_eq!(r.routes[1].dst.to_string(), "::/0");
    }

    #[test]
    fn existing_default_route_with_gateway_is_kept() {
        let mut r = CniResult {
            ips: vec![ip("10.1.2.5/24", Some("10.1.2.254"))],
            routes: vec![Route::new(
                "0.0.0.0/0".parse().unwrap(),
                Some("10.1.2.254".parse().unwrap()),
            )],
            ..Default::default()
        };
        calc_gateways(&mut r, 2, true, true);
        assert_eq!(r.routes.len(), 1);
        // A default route without a gateway does not count.
        let mut r = CniResult {
            ips: vec![ip("10.1.2.5/24", None)],
            routes: vec![Route::new("0.0.0.0/0".parse().unwrap(), None)],
            ..Default::default()
        };
        calc_gateways(&mut r, 2, true, true);
        assert_eq!(r.routes.len(), 2);
    }

    #[test]
    fn no_gateway_when_not_asked() {
        let mut r = CniResult {
            ips: vec![ip("10.1.2.5/24", None)],
            ..Default::default()
        };
        let g = calc_gateways(&mut r, 5, false, false);
        assert_eq!(g, Gateways::default());
        assert_eq!(r.ips[0].gateway, None);
        assert_eq!(r.ips[0].interface, Some(5));
        assert!(r.routes.is_empty());
    }
}
