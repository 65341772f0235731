//! The CNI handlers: ADD wires the node side ([`crate::host`]) and
//! configures the pod side (plexus-plugin's `iface`), DEL and CHECK live in
//! their own modules.

use std::time::Duration;

use ipnet::IpNet;
use plexus_cni::error::plexus_codes;
use plexus_cni::plugin::{Plugin, Request};
use plexus_cni::{CniError, CniResult, Interface};
use plexus_netlink::{Link, Netlink, Netns};
use plexus_plugin::iface::{self, Dad};
use plexus_plugin::{block_on, netlink_ctx, netlink_err, open_pod_netns};
use plexus_runtime::delegate;

use crate::chains::{attachment, nft_err};
use crate::config::BridgeConf;
use crate::gateway::calc_gateways;
use crate::host::{self, Wired};
use crate::nft;
use crate::{check, del, ipam};

/// The plexus-bridge plugin.
#[derive(Debug, Default, Clone, Copy)]
pub struct BridgePlugin;

impl Plugin for BridgePlugin {
    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        let conf = BridgeConf::load(req.conf, req.env)?;
        let pod_ns = open_pod_netns(req.netns()?)?;
        block_on(add(req, &conf, &pod_ns))
    }

    fn del(&self, req: &Request) -> Result<(), CniError> {
        let conf = BridgeConf::load_for_del(req.conf, req.env)?;
        block_on(del::del(req, &conf))
    }

    fn check(&self, req: &Request) -> Result<(), CniError> {
        let conf = BridgeConf::load(req.conf, req.env)?;
        let pod_ns = open_pod_netns(req.netns()?)?;
        if let Some(t) = &conf.ipam_type {
            delegate::check(t, req.stdin, req.env)?;
        }
        let prev = req
            .conf
            .prev_result
            .as_ref()
            .ok_or_else(|| CniError::invalid_config("Required prevResult missing"))?;
        block_on(check::check(req, &conf, &pod_ns, prev))
    }

    fn status(&self, req: &Request) -> Result<(), CniError> {
        match plexus_plugin::conf::ipam_type(req.conf)? {
            Some(t) => delegate::status(&t, req.stdin, req.env),
            None => Ok(()),
        }
    }

    fn gc(&self, req: &Request) -> Result<(), CniError> {
        let valid: Vec<(String, String)> = req
            .conf
            .valid_attachments()?
            .into_iter()
            .map(|a| (a.container_id, a.ifname))
            .collect();
        // Like DEL, GC works on any config: a malformed `ipam` allocated nothing.
        let ipam = match plexus_plugin::conf::ipam_type(req.conf).unwrap_or_default() {
            Some(t) => delegate::gc(&t, req.stdin, req.env),
            None => Ok(()),
        };
        nft::gc(&req.conf.name, &valid).map_err(nft_err)?;
        ipam
    }
}

async fn add(req: &Request<'_>, conf: &BridgeConf, pod_ns: &Netns) -> Result<CniResult, CniError> {
    let env = req.env;
    // IPAM that does not care about the interface runs while we wire it.
    let mut ipam_job = conf
        .ipam_type
        .as_deref()
        .filter(|t| ipam::is_local(t))
        .map(|t| ipam::spawn_add(t, req));

    let wired = async {
        let host_ns = Netns::current().map_err(netlink_err)?;
        let (host, pod) = tokio::try_join!(Netlink::open(&host_ns), Netlink::open(pod_ns))
            .map_err(netlink_err)?;
        let w = host::wire(conf, env, &host, &pod, pod_ns).await?;
        Ok::<_, CniError>((host, pod, w))
    }
    .await;
    let (host, pod, wired) = match wired {
        Ok(x) => x,
        Err(e) => {
            if let (Some(job), Some(t)) = (ipam_job.take(), &conf.ipam_type) {
                if job.join().is_ok() {
                    ipam::release(t, req.stdin, env);
                }
            }
            return Err(e);
        }
    };

    let mut ipam_ran = false;
    let r = async {
        let ipam_result = match (&conf.ipam_type, ipam_job.take()) {
            (Some(_), Some(job)) => {
                let r = job.join();
                ipam_ran = r.is_ok();
                Some(r?)
            }
            (Some(t), None) => {
                let r = delegate::add(t, req.stdin, env);
                ipam_ran = r.is_ok();
                Some(r?)
            }
            (None, _) => None,
        };
        configure(req, conf, &host, &pod, pod_ns, &wired, ipam_result).await
    }
    .await;
    match r {
        Ok(res) => Ok(res),
        Err(e) => {
            if let Err(e2) = host.delete_link(wired.host.index).await {
                if !e2.is_not_found() {
                    tracing::warn!("removing the veth after a failed ADD: {e2}");
                }
            }
            let a = attachment(conf, env);
            if let Err(e2) = nft::apply(&nft::teardown(&a, conf.ip_masq, conf.mac_spoof_chk)) {
                tracing::warn!("removing nftables rules after a failed ADD: {e2}");
            }
            if ipam_ran {
                if let Some(t) = &conf.ipam_type {
                    ipam::release(t, req.stdin, env);
                }
            }
            Err(e)
        }
    }
}

fn iface_entry(l: &Link, sandbox: &str) -> Interface {
    Interface {
        name: l.name.clone(),
        mac: l.mac.map(|m| m.to_string()).unwrap_or_default(),
        sandbox: sandbox.to_string(),
        ..Default::default()
    }
}

/// Puts the gateway addresses on the bridge (or its VLAN interface) and
/// turns on forwarding; returns the VLAN interface if one was made.
async fn gateways(
    host: &Netlink,
    conf: &BridgeConf,
    bridge: &Link,
    gws: &crate::gateway::Gateways,
) -> Result<Option<Link>, CniError> {
    let mut vlan_if: Option<Link> = None;
    for (v4, list) in [(true, &gws.v4), (false, &gws.v6)] {
        for gw in list {
            let target = if conf.vlan == 0 {
                bridge.clone()
            } else if let Some(l) = &vlan_if {
                l.clone()
            } else {
                let l = host::ensure_vlan_interface(host, bridge, conf)
                    .await
                    .map_err(|mut e| {
                        e.msg = format!("failed to create vlan interface: {}", e.msg);
                        e
                    })?;
                vlan_if = Some(l.clone());
                l
            };
            host::ensure_addr(host, &target, *gw, conf.force_address).await?;
        }
        if !list.is_empty() {
            host::enable_forwarding(v4).await?;
        }
    }
    Ok(vlan_if)
}

/// The bridge port must come up (the reference polls the same way).
async fn wait_port_up(host: &Netlink, port: &Link) -> Result<Link, CniError> {
    for (i, ms) in [0u64, 50, 500, 1000, 1000].into_iter().enumerate() {
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let l = host
            .link_by_index(port.index)
            .await
            .map_err(netlink_err)?
            .ok_or_else(|| CniError::kernel(format!("{:?} disappeared", port.name)))?;
        if l.oper_up {
            return Ok(l);
        }
        if i == 4 {
            break;
        }
    }
    Err(CniError::kernel(format!(
        "bridge port {:?} did not come up",
        port.name
    )))
}

async fn configure(
    req: &Request<'_>,
    conf: &BridgeConf,
    host: &Netlink,
    pod: &Netlink,
    pod_ns: &Netns,
    w: &Wired,
    ipam: Option<CniResult>,
) -> Result<CniResult, CniError> {
    let env = req.env;
    let mut result = req.conf.prev_result.clone().unwrap_or_default();
    let base = result.interfaces.len();
    let netns_path = req.netns()?.display().to_string();
    let mut extra_ifaces = Vec::new();
    let mut rules = nft::Batch::new();
    let att = attachment(conf, env);

    if let Some(mut ipam) = ipam {
        if ipam.ips.is_empty() {
            return Err(CniError::plugin(
                plexus_codes::DELEGATE_FAILED,
                "IPAM plugin returned missing IP config",
            ));
        }
        let gws = calc_gateways(
            &mut ipam,
            base + 2,
            conf.is_gateway,
            conf.is_default_gateway,
        );
        let dad = if conf.enable_dad {
            Dad::Enable
        } else {
            Dad::Disable
        };
        iface::configure(pod, pod_ns, &w.cont, &ipam, dad).await?;
        if conf.is_gateway {
            if let Some(l) = gateways(host, conf, &w.bridge, &gws).await? {
                extra_ifaces.push(iface_entry(&l, ""));
            }
        }
        if conf.ip_masq {
            let nets: Vec<IpNet> = ipam.ips.iter().map(|i| i.address).collect();
            nft::add_masq(&mut rules, &att, &nets);
        }
        result.ips.extend(ipam.ips);
        result.routes.extend(ipam.routes);
        if !ipam.dns.is_empty() {
            result.dns = ipam.dns;
        }
    } else if !conf.disable_container_interface {
        pod.set_link_up(w.cont.index, true)
            .await
            .map_err(netlink_ctx(format!("failed to set {:?} up", env.ifname)))?;
    }

    if conf.mac_spoof_chk {
        let mac = w
            .cont
            .mac
            .ok_or_else(|| CniError::kernel(format!("{:?} has no MAC address", w.cont.name)))?;
        nft::add_spoof(&mut rules, &att, &w.host.name, mac);
    }
    nft::apply(&rules).map_err(nft_err)?;

    let hv = if conf.disable_container_interface {
        w.host.clone()
    } else {
        wait_port_up(host, &w.host).await?
    };
    let br = host
        .link_by_index(w.bridge.index)
        .await
        .map_err(netlink_err)?
        .unwrap_or_else(|| w.bridge.clone());

    result.interfaces.extend([
        iface_entry(&br, ""),
        iface_entry(&hv, ""),
        iface_entry(&w.cont, &netns_path),
    ]);
    result.interfaces.extend(extra_ifaces);
    if let Some(dns) = &conf.dns {
        result.dns = dns.clone();
    }
    Ok(result)
}
