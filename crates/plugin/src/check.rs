//! CHECK of the pod interface's addresses and routes against prevResult,
//! with the reference's rules (`ip.ValidateExpectedInterfaceIPs` and
//! `ip.ValidateExpectedRoute`): every address of the interface is on it
//! with the route to its prefix, and every route of the result is in the
//! routing table. Failures are code 100 (the kernel state differs).

use std::net::IpAddr;

use ipnet::IpNet;
use plexus_cni::{CniError, CniResult};
use plexus_netlink::{Link, Netlink, RouteFilter};

use crate::errors::netlink_ctx;

/// A route as CHECK compares it: destination and gateway.
pub type RouteKey = (IpNet, Option<IpAddr>);

/// Reads `link`'s addresses and the namespace's routes through `nl` and
/// checks them against interface `iface` of `prev`.
pub async fn addrs_and_routes(
    nl: &Netlink,
    link: &Link,
    prev: &CniResult,
    iface: usize,
) -> Result<(), CniError> {
    let addrs: Vec<IpNet> = nl
        .addrs(Some(link.index))
        .await
        .map_err(netlink_ctx("CHECK: cannot list addresses"))?
        .into_iter()
        .map(|a| a.net)
        .collect();
    let routes: Vec<RouteKey> = nl
        .routes(RouteFilter::default())
        .await
        .map_err(netlink_ctx("CHECK: cannot list routes"))?
        .into_iter()
        .map(|r| (r.dst, r.gateway))
        .collect();
    compare(prev, iface, &link.name, &addrs, &routes)
}

/// The comparison itself, without the kernel.
pub fn compare(
    prev: &CniResult,
    iface: usize,
    ifname: &str,
    addrs: &[IpNet],
    routes: &[RouteKey],
) -> Result<(), CniError> {
    for ip in prev
        .ips
        .iter()
        .filter(|i| i.interface.is_none_or(|x| x == iface))
    {
        if !addrs.contains(&ip.address) {
            return Err(CniError::kernel(format!(
                "Failed to match addr {} on interface {ifname}",
                ip.address
            )));
        }
        let prefix = ip.address.trunc();
        if !routes.iter().any(|(dst, _)| *dst == prefix) {
            return Err(CniError::kernel(format!(
                "Failed to find the route to {prefix} for interface {ifname}"
            )));
        }
    }
    for r in &prev.routes {
        let found = routes
            .iter()
            .any(|(dst, gw)| *dst == r.dst.trunc() && r.gw.is_none_or(|g| *gw == Some(g)));
        if !found {
            return Err(CniError::kernel(format!(
                "Expected Route {}{} not found in routing table",
                r.dst,
                r.gw.map(|g| format!(" via {g}")).unwrap_or_default()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use plexus_cni::{IpConfig, Route};

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn prev() -> CniResult {
        CniResult {
            ips: vec![
                IpConfig {
                    address: net("10.0.0.5/24"),
                    gateway: Some("10.0.0.1".parse().unwrap()),
                    interface: Some(2),
                },
                // Another interface's address is not looked for here.
                IpConfig {
                    address: net("10.7.0.5/24"),
                    gateway: None,
                    interface: Some(0),
                },
            ],
            routes: vec![Route::new(
                net("0.0.0.0/0"),
                Some("10.0.0.1".parse().unwrap()),
            )],
            ..Default::default()
        }
    }

    fn kernel_routes() -> Vec<RouteKey> {
        vec![
            (net("10.0.0.0/24"), None),
            (net("0.0.0.0/0"), Some("10.0.0.1".parse().unwrap())),
        ]
    }

    #[test]
    fn matching_state_passes() {
        compare(&prev(), 2, "eth0", &[net("10.0.0.5/24")], &kernel_routes()).unwrap();
    }

    #[test]
    fn each_missing_piece_is_named() {
        let e = compare(&prev(), 2, "eth0", &[], &kernel_routes()).unwrap_err();
        assert_eq!(e.code, 100);
        assert!(
            e.msg.contains("Failed to match addr 10.0.0.5/24"),
            "{}",
            e.msg
        );
        let e = compare(
            &prev(),
            2,
            "eth0",
            &[net("10.0.0.5/24")],
            &kernel_routes()[1..],
        )
        .unwrap_err();
        assert!(e.msg.contains("route to 10.0.0.0/24"), "{}", e.msg);
        let wrong_gw = vec![
            (net("10.0.0.0/24"), None),
            (net("0.0.0.0/0"), Some("10.0.0.9".parse().unwrap())),
        ];
        let e = compare(&prev(), 2, "eth0", &[net("10.0.0.5/24")], &wrong_gw).unwrap_err();
        assert!(
            e.msg.contains("Expected Route 0.0.0.0/0 via 10.0.0.1"),
            "{}",
            e.msg
        );
    }
}
