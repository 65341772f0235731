//! Configuring the pod interface from a result, as the reference's
//! `ipam.ConfigureIface` does, with one behaviour for every plugin:
//!
//! 1. the sysctls, all in one trip into the pod netns: DAD as the plugin
//!    asks, `arp_notify`/`ndisc_notify` (best effort), and with IPv6
//!    addresses `disable_ipv6=0` on `lo` and the interface plus
//!    `keep_addr_on_down=1` (these must succeed);
//! 2. the addresses of the result (all of them: the caller passes the
//!    result for this interface only);
//! 3. link up;
//! 4. with IPv6 addresses, wait up to [`DAD_TIMEOUT`] until none is
//!    tentative, then fail (the reference bridge's rule);
//! 5. the routes, with the first gateway of the family for a route without
//!    one, and their metric, table, scope, MTU and advmss.

use std::net::IpAddr;
use std::time::Duration;

use plexus_cni::{CniError, CniResult};
use plexus_netlink::sysctl::{self, Write};
use plexus_netlink::{AddrOptions, Link, Netlink, Netns, Route, Scope};

use crate::errors::{netlink_ctx, netlink_err};

/// How long IPv6 duplicate address detection may take.
pub const DAD_TIMEOUT: Duration = Duration::from_secs(5);
const DAD_POLL: Duration = Duration::from_millis(50);

/// What to do with IPv6 duplicate address detection on the interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dad {
    /// Keep the kernel's setting.
    #[default]
    Keep,
    /// `accept_dad=1`, `enhanced_dad=1`.
    Enable,
    /// `accept_dad=0`: addresses are usable at once.
    Disable,
}

/// Configures `link` (in `ns`, reached through `nl`) from `result`.
pub async fn configure(
    nl: &Netlink,
    ns: &Netns,
    link: &Link,
    result: &CniResult,
    dad: Dad,
) -> Result<(), CniError> {
    let has_v6 = result.ips.iter().any(|i| i.address.addr().is_ipv6());
    sysctls(ns, &link.name, dad, has_v6).await?;
    let ifname = &link.name;
    for ip in &result.ips {
        nl.addr_add_with(link.index, ip.address, AddrOptions::default())
            .await
            .map_err(netlink_ctx(format!(
                "failed to add IP address {} to {ifname:?}",
                ip.address
            )))?;
    }
    nl.set_link_up(link.index, true)
        .await
        .map_err(netlink_ctx(format!("failed to set {ifname:?} up")))?;
    if has_v6 {
        settle_addresses(nl, link).await?;
    }
    add_routes(nl, &routes(result, link.index)?, ifname).await
}

/// Adds `routes` (on interface `ifname`, for messages) in order; a route
/// that exists already is fine.
pub async fn add_routes(nl: &Netlink, routes: &[Route], ifname: &str) -> Result<(), CniError> {
    for route in routes {
        match nl.route_add(route).await {
            Ok(()) => {}
            Err(e) if e.is_exists() => {}
            Err(e) => {
                return Err(netlink_ctx(format!(
                    "failed to add route {}{} dev {ifname}",
                    route.dst,
                    route
                        .gateway
                        .map(|g| format!(" via {g}"))
                        .unwrap_or_default()
                ))(e))
            }
        }
    }
    Ok(())
}

/// The sysctl writes for `ifname`, and which of them must succeed.
pub fn sysctl_writes(ifname: &str, dad: Dad, has_v6: bool) -> Vec<(Write, bool)> {
    let v6 = |key: &str, v: &str| Write::new(format!("net/ipv6/conf/{ifname}/{key}"), v);
    let mut w = Vec::new();
    match dad {
        Dad::Keep => {}
        Dad::Enable => {
            w.push((v6("enhanced_dad", "1"), false));
            w.push((v6("accept_dad", "1"), false));
        }
        Dad::Disable => w.push((v6("accept_dad", "0"), false)),
    }
    w.push((
        Write::new(format!("net/ipv4/conf/{ifname}/arp_notify"), "1"),
        false,
    ));
    w.push((v6("ndisc_notify", "1"), false));
    if has_v6 {
        w.push((Write::new("net/ipv6/conf/lo/disable_ipv6", "0"), true));
        w.push((v6("disable_ipv6", "0"), true));
        w.push((v6("keep_addr_on_down", "1"), true));
    }
    w
}

async fn sysctls(ns: &Netns, ifname: &str, dad: Dad, has_v6: bool) -> Result<(), CniError> {
    set_sysctls(ns, &sysctl_writes(ifname, dad, has_v6)).await
}

/// Writes `plan`'s sysctls in `ns` in one trip; a failing write marked
/// `true` (must succeed) fails the call, the others are only logged.
pub async fn set_sysctls(ns: &Netns, plan: &[(Write, bool)]) -> Result<(), CniError> {
    let writes: Vec<Write> = plan.iter().map(|(w, _)| w.clone()).collect();
    let results = sysctl::set_many(ns, &writes).await.map_err(netlink_err)?;
    for ((w, required), r) in plan.iter().zip(results) {
        match r {
            Ok(()) => {}
            Err(e) if *required => {
                return Err(netlink_ctx(format!("failed to set {}={}", w.name, w.value))(e))
            }
            Err(e) => tracing::debug!("best-effort sysctl: {e}"),
        }
    }
    Ok(())
}

/// The kernel routes for the result's routes on interface `index`.
pub fn routes(result: &CniResult, index: u32) -> Result<Vec<Route>, CniError> {
    let first_gw = |v4: bool| {
        result
            .ips
            .iter()
            .filter_map(|i| i.gateway)
            .find(|g: &IpAddr| g.is_ipv4() == v4)
    };
    let (v4gw, v6gw) = (first_gw(true), first_gw(false));
    let mut out = Vec::with_capacity(result.routes.len());
    for r in &result.routes {
        let mut route = Route::new(r.dst).dev(index);
        if let Some(g) = r.gw.or(if r.dst.addr().is_ipv4() { v4gw } else { v6gw }) {
            route = route.via(g);
        }
        if let Some(p) = r.priority {
            route = route.metric(p);
        }
        if let Some(t) = r.table {
            route = route.table(t);
        }
        if let Some(s) = r.scope {
            let scope = Scope::from_u8(s).ok_or_else(|| {
                CniError::invalid_config(format!(
                    "route {}: scope {s} is not one of 0, 200, 253, 254, 255",
                    r.dst
                ))
            })?;
            route = route.scope(scope);
        }
        if let Some(m) = r.mtu {
            route = route.mtu(m);
        }
        if let Some(a) = r.advmss {
            route = route.advmss(a);
        }
        out.push(route);
    }
    Ok(out)
}

/// Waits until no address of `link` is tentative; fails after
/// [`DAD_TIMEOUT`] (a duplicate, or DAD that never finishes).
async fn settle_addresses(nl: &Netlink, link: &Link) -> Result<(), CniError> {
    let tries = DAD_TIMEOUT.as_millis() / DAD_POLL.as_millis();
    for _ in 0..tries {
        let addrs = nl
            .addrs(Some(link.index))
            .await
            .map_err(netlink_ctx("could not list addresses"))?;
        if !addrs.iter().any(|a| a.tentative) {
            return Ok(());
        }
        tokio::time::sleep(DAD_POLL).await;
    }
    Err(CniError::kernel(format!(
        "{:?} still has tentative IPv6 addresses after {}s",
        link.name,
        DAD_TIMEOUT.as_secs()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use plexus_cni::{IpConfig, Route as CniRoute};

    fn result() -> CniResult {
        let ip = |a: &str, g: Option<&str>| IpConfig {
            address: a.parse().unwrap(),
            gateway: g.map(|g| g.parse().unwrap()),
            interface: Some(0),
        };
        CniResult {
            ips: vec![
                ip("10.0.0.5/24", Some("10.0.0.1")),
                ip("fd00::5/64", Some("fd00::1")),
            ],
            routes: vec![
                CniRoute::new("0.0.0.0/0".parse().unwrap(), None),
                CniRoute {
                    priority: Some(10),
                    table: Some(100),
                    scope: Some(0),
                    mtu: Some(1400),
                    advmss: Some(1300),
                    ..CniRoute::new("::/0".parse().unwrap(), None)
                },
                CniRoute {
                    scope: Some(253),
                    ..CniRoute::new(
                        "10.9.0.0/16".parse().unwrap(),
                        Some("10.0.0.254".parse().unwrap()),
                    )
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn routes_take_the_family_gateway_and_all_attributes() {
        let r = routes(&result(), 7).unwrap();
        assert_eq!(r[0].gateway, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(r[0].oif, Some(7));
        assert_eq!(r[1].gateway, Some("fd00::1".parse().unwrap()));
        assert_eq!(
            (r[1].metric, r[1].table, r[1].scope, r[1].mtu, r[1].advmss),
            (Some(10), 100, Some(Scope::Universe), Some(1400), Some(1300))
        );
        assert_eq!(r[2].gateway, Some("10.0.0.254".parse().unwrap()));
        assert_eq!(r[2].scope, Some(Scope::Link));
        let mut bad = result();
        bad.routes[0].scope = Some(42);
        assert_eq!(routes(&bad, 7).unwrap_err().code, 7);
    }

    #[test]
    fn sysctls_by_family_and_dad() {
        let names = |w: Vec<(Write, bool)>| -> Vec<String> {
            w.into_iter()
                .map(|(w, req)| format!("{}={}{}", w.name, w.value, if req { "!" } else { "" }))
                .collect()
        };
        assert_eq!(
            names(sysctl_writes("eth0", Dad::Keep, false)),
            [
                "net/ipv4/conf/eth0/arp_notify=1",
                "net/ipv6/conf/eth0/ndisc_notify=1"
            ]
        );
        let all = names(sysctl_writes("eth0", Dad::Disable, true));
        assert_eq!(all[0], "net/ipv6/conf/eth0/accept_dad=0");
        assert!(all.contains(&"net/ipv6/conf/lo/disable_ipv6=0!".to_string()));
        assert!(all.contains(&"net/ipv6/conf/eth0/keep_addr_on_down=1!".to_string()));
        assert_eq!(names(sysctl_writes("eth0", Dad::Enable, false)).len(), 4);
    }
}
