//! `default-route`: moving the pod's default route to the interface that
//! asked for it, as Multus does: the other interfaces' default routes of
//! that address family are deleted in the pod netns and dropped from their
//! results, and a default route via the requested gateway is set on the
//! requesting interface. Unlike Multus, only the families a gateway was
//! requested for are touched (asking for an IPv4 gateway keeps the cluster
//! network's IPv6 default route).

use std::net::IpAddr;
use std::path::Path;

use plexus_cni::{CniResult, Route};
use plexus_netlink::{Netlink, Netns, RouteFilter};

use crate::error::MetaError;
use crate::plan::Plan;

/// What to change on one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteChange {
    pub ifname: String,
    pub drop_v4: bool,
    pub drop_v6: bool,
    pub gateways: Vec<IpAddr>,
}

/// The changes `plan` asks for; empty when no attachment wants the default
/// route.
pub fn changes(plan: &Plan) -> Vec<RouteChange> {
    let wanted: Vec<IpAddr> = plan
        .attachments
        .iter()
        .flat_map(|a| a.default_route().iter().copied())
        .collect();
    if wanted.is_empty() {
        return Vec::new();
    }
    let v4 = wanted.iter().any(IpAddr::is_ipv4);
    let v6 = wanted.iter().any(IpAddr::is_ipv6);
    plan.attachments
        .iter()
        .map(|a| {
            let gws = a.default_route();
            RouteChange {
                ifname: a.ifname.clone(),
                drop_v4: v4 && !gws.iter().any(IpAddr::is_ipv4),
                drop_v6: v6 && !gws.iter().any(IpAddr::is_ipv6),
                gateways: gws.to_vec(),
            }
        })
        .collect()
}

/// The result as the pod now sees it.
pub fn adjust_result(r: &mut CniResult, c: &RouteChange) {
    r.routes.retain(|rt| {
        !(rt.dst.prefix_len() == 0
            && ((rt.dst.addr().is_ipv4() && c.drop_v4) || (rt.dst.addr().is_ipv6() && c.drop_v6)))
    });
    for gw in &c.gateways {
        let dst = match gw {
            IpAddr::V4(_) => "0.0.0.0/0".parse().expect("valid"),
            IpAddr::V6(_) => "::/0".parse().expect("valid"),
        };
        r.routes.retain(|rt| rt.dst != dst);
        r.routes.push(Route::new(dst, Some(*gw)));
    }
}

/// Applies route changes inside a pod netns.
pub trait RouteOps: Send + Sync {
    fn apply(&self, netns: &Path, changes: &[RouteChange]) -> Result<(), MetaError>;
}

/// Through plexus-netlink.
#[derive(Debug, Default, Clone)]
pub struct NetlinkRoutes;

impl RouteOps for NetlinkRoutes {
    fn apply(&self, netns: &Path, changes: &[RouteChange]) -> Result<(), MetaError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| MetaError::Route(format!("cannot start a runtime: {e}")))?;
        let err = |e: plexus_netlink::Error| MetaError::Route(e.to_string());
        rt.block_on(async {
            let ns = Netns::open(netns).map_err(err)?;
            let nl = Netlink::open(&ns).await.map_err(err)?;
            // Delete first, so the new route never meets an old one.
            for c in changes {
                let link = nl.link(&c.ifname).await.map_err(err)?;
                for (v4, drop) in [(true, c.drop_v4), (false, c.drop_v6)] {
                    if !drop {
                        continue;
                    }
                    let filter = RouteFilter {
                        ipv4: Some(v4),
                        ..Default::default()
                    }
                    .oif(link.index);
                    for r in nl.routes(filter).await.map_err(err)? {
                        if r.is_default() && r.table == 254 {
                            tracing::debug!(ifname = %c.ifname, "deleting default route");
                            nl.route_del(&r).await.map_err(err)?;
                        }
                    }
                }
            }
            for c in changes {
                if c.gateways.is_empty() {
                    continue;
                }
                let link = nl.link(&c.ifname).await.map_err(err)?;
                for gw in &c.gateways {
                    let r = plexus_netlink::Route::default_via(*gw).dev(link.index);
                    nl.route_replace(&r).await.map_err(err)?;
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::annotation::NetworkSelection;
    use crate::plan::{PlannedAttachment, PLAN_KIND};

    fn att(ifname: &str, gws: &[&str]) -> PlannedAttachment {
        PlannedAttachment {
            name: ifname.into(),
            ifname: ifname.into(),
            master: ifname == "eth0",
            config: serde_json::json!({}),
            cni_args: vec![],
            capability_args: Default::default(),
            request: Some(NetworkSelection {
                default_route: gws.iter().map(|g| g.parse().unwrap()).collect(),
                ..Default::default()
            }),
            add_failed: false,
        }
    }

    #[test]
    fn moves_only_requested_family() {
        let plan = Plan {
            kind: PLAN_KIND.into(),
            container_id: "c".into(),
            ifname: "eth0".into(),
            netns: String::new(),
            pod_namespace: String::new(),
            pod_name: String::new(),
            pod_uid: String::new(),
            attachments: vec![att("eth0", &[]), att("net1", &["10.1.0.1"])],
        };
        let c = changes(&plan);
        assert!(c[0].drop_v4 && !c[0].drop_v6 && c[0].gateways.is_empty());
        assert!(!c[1].drop_v4 && c[1].gateways.len() == 1);
        let mut r = CniResult::from_value(&serde_json::json!({
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}, {"dst": "::/0", "gw": "fd00::1"},
                       {"dst": "10.9.0.0/16", "gw": "10.0.0.1"}]
        }))
        .unwrap();
        adjust_result(&mut r, &c[0]);
        assert_eq!(r.routes.len(), 2);
        let mut r1 = CniResult::default();
        adjust_result(&mut r1, &c[1]);
        assert_eq!(r1.routes[0].gw, Some("10.1.0.1".parse().unwrap()));

        let none = Plan {
            attachments: vec![att("eth0", &[])],
            ..plan
        };
        assert!(changes(&none).is_empty());
    }
}
