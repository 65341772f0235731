//! The CNI handlers.

use std::net::IpAddr;
use std::path::Path;
use std::thread::JoinHandle;
use std::time::Duration;

use ipnet::IpNet;
use plexus_cni::error::plexus_codes;
use plexus_cni::plugin::{Plugin, Request};
use plexus_cni::{CniEnv, CniError, CniResult, Interface};
use plexus_netlink::{
    AddrOptions, Bridge, BridgePortSettings, BridgeVlan, Link, MacAddr, Netlink, Netns,
    RouteFilter, Scope, Veth,
};
use plexus_runtime::delegate;

use crate::config::{vlan_ranges, BridgeConf};
use crate::gateway::{calc_gateways, Gateways};
use crate::nft::{self, Attachment};
use crate::rawnl;

/// The plexus-bridge plugin.
#[derive(Debug, Default, Clone, Copy)]
pub struct BridgePlugin;

/// IPAM plugins that only hand out addresses and never look at the
/// interface: their ADD can run while the veth is being set up.
const LOCAL_IPAMS: &[&str] = &["host-local", "plexus-host-local", "static", "whereabouts"];

fn runtime() -> Result<tokio::runtime::Runtime, CniError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| CniError::io(format!("cannot start the async runtime: {e}")))
}

fn nl_err(e: plexus_netlink::Error) -> CniError {
    if e.is_not_supported() {
        CniError::plugin(plexus_codes::KERNEL_FEATURE_MISSING, e.to_string())
    } else {
        CniError::kernel(e.to_string())
    }
}

fn nl_ctx(what: impl std::fmt::Display) -> impl FnOnce(plexus_netlink::Error) -> CniError {
    move |e| {
        let mut c = nl_err(e);
        c.msg = format!("{what}: {}", c.msg);
        c
    }
}

fn nft_err(e: nft::NftError) -> CniError {
    if e.is_not_supported() {
        CniError::plugin(plexus_codes::KERNEL_FEATURE_MISSING, e.to_string())
            .with_details("ipMasq and macspoofchk need nftables (nf_tables) in the kernel")
    } else {
        CniError::kernel(e.to_string())
    }
}

/// Writes a sysctl of the current (node) netns.
fn sysctl_here(path: &str, value: &str) -> std::io::Result<()> {
    std::fs::write(format!("/proc/sys/{path}"), value)
}

fn enable_forwarding(v4: bool) -> Result<(), CniError> {
    let path = if v4 {
        "net/ipv4/ip_forward"
    } else {
        "net/ipv6/conf/all/forwarding"
    };
    if std::fs::read_to_string(format!("/proc/sys/{path}")).is_ok_and(|v| v.trim() == "1") {
        return Ok(());
    }
    sysctl_here(path, "1")
        .map_err(|e| CniError::kernel(format!("failed to enable forwarding ({path}): {e}")))
}

fn random_veth_name() -> String {
    let mut b = [0u8; 4];
    // SAFETY: the buffer is valid for 4 bytes.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != 4 {
        // getrandom cannot really fail for 4 bytes; fall back to time and pid.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
            ^ std::process::id().rotate_left(16);
        b = t.to_ne_bytes();
    }
    format!("veth{:02x}{:02x}{:02x}{:02x}", b[0], b[1], b[2], b[3])
}

type IpamJob = JoinHandle<Result<CniResult, CniError>>;

fn spawn_ipam_add(ipam: &str, req: &Request) -> IpamJob {
    let (t, stdin, env) = (ipam.to_string(), req.stdin.to_vec(), req.env.clone());
    std::thread::spawn(move || delegate::add(&t, &stdin, &env))
}

fn join_ipam(job: IpamJob) -> Result<CniResult, CniError> {
    job.join()
        .unwrap_or_else(|_| Err(CniError::io("the IPAM thread panicked")))
}

/// Best-effort IPAM release after a failed ADD.
fn release_ipam(ipam: &str, stdin: &[u8], env: &CniEnv) {
    if let Err(e) = delegate::del(ipam, stdin, env) {
        tracing::warn!("releasing the IPAM allocation after a failed ADD: {e}");
    }
}

fn attachment<'a>(conf: &'a BridgeConf, env: &'a CniEnv) -> Attachment<'a> {
    Attachment {
        network: &conf.network,
        ifname: &env.ifname,
        container_id: &env.container_id,
    }
}

fn open_pod_netns(path: &Path) -> Result<Netns, CniError> {
    Netns::open(path)
        .map_err(|e| CniError::invalid_env(format!("failed to open netns {}: {e}", path.display())))
}

impl Plugin for BridgePlugin {
    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        let conf = BridgeConf::load(req.conf, req.env)?;
        let pod_ns = open_pod_netns(req.netns()?)?;
        runtime()?.block_on(add(req, &conf, &pod_ns))
    }

    fn del(&self, req: &Request) -> Result<(), CniError> {
        let conf = BridgeConf::load(req.conf, req.env)?;
        runtime()?.block_on(del(req, &conf))
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
        runtime()?.block_on(check(req, &conf, &pod_ns, prev))
    }

    fn status(&self, req: &Request) -> Result<(), CniError> {
        match req.conf.ipam_type() {
            Some(t) => delegate::status(t, req.stdin, req.env),
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
        let ipam = match req.conf.ipam_type() {
            Some(t) => delegate::gc(t, req.stdin, req.env),
            None => Ok(()),
        };
        nft::gc(&req.conf.name, &valid).map_err(nft_err)?;
        ipam
    }
}

/// What ADD created on the host side, for the result and for cleanup.
struct Wired {
    bridge: Link,
    host: Link,
    cont: Link,
}

async fn add(req: &Request<'_>, conf: &BridgeConf, pod_ns: &Netns) -> Result<CniResult, CniError> {
    let env = req.env;
    // IPAM that does not care about the interface runs while we wire it.
    let mut ipam_job = conf
        .ipam_type
        .as_deref()
        .filter(|t| LOCAL_IPAMS.contains(t))
        .map(|t| spawn_ipam_add(t, req));

    let wired = async {
        let host_ns = Netns::current().map_err(nl_err)?;
        let (host, pod) =
            tokio::try_join!(Netlink::open(&host_ns), Netlink::open(pod_ns)).map_err(nl_err)?;
        let w = wire(conf, env, &host, &pod, pod_ns).await?;
        Ok::<_, CniError>((host, pod, w))
    }
    .await;
    let (host, pod, wired) = match wired {
        Ok(x) => x,
        Err(e) => {
            if let (Some(job), Some(t)) = (ipam_job.take(), &conf.ipam_type) {
                if join_ipam(job).is_ok() {
                    release_ipam(t, req.stdin, env);
                }
            }
            return Err(e);
        }
    };

    let mut ipam_ran = false;
    let r = async {
        let ipam_result = match (&conf.ipam_type, ipam_job.take()) {
            (Some(_), Some(job)) => {
                let r = join_ipam(job);
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
                    release_ipam(t, req.stdin, env);
                }
            }
            Err(e)
        }
    }
}

async fn ensure_bridge(host: &Netlink, conf: &BridgeConf) -> Result<Link, CniError> {
    let ctx = || format!("failed to create bridge {:?}", conf.bridge);
    let existing = host
        .link_by_name(&conf.bridge)
        .await
        .map_err(nl_ctx(ctx()))?;
    let br = match existing {
        Some(l) => l,
        None => {
            let mut b = Bridge::new(&conf.bridge);
            if let Some(mtu) = conf.mtu {
                b = b.mtu(mtu);
            }
            if conf.vlan_filtering() {
                b = b.vlan_filtering(true);
            }
            let l = match host.create_bridge(&b).await {
                Ok(l) => l,
                Err(e) if e.is_exists() => host.link(&conf.bridge).await.map_err(nl_ctx(ctx()))?,
                Err(e) => return Err(nl_ctx(ctx())(e)),
            };
            // We own the routes of this interface.
            let _ = sysctl_here(&format!("net/ipv6/conf/{}/accept_ra", conf.bridge), "0");
            l
        }
    };
    if br.kind.as_deref() != Some("bridge") {
        return Err(CniError::kernel(format!(
            "{}: {:?} already exists but is not a bridge",
            ctx(),
            conf.bridge
        )));
    }
    if conf.promisc && !br.promisc {
        host.set_promisc(br.index, true)
            .await
            .map_err(nl_ctx(format!(
                "could not set promiscuous mode on {:?}",
                conf.bridge
            )))?;
    }
    if !br.admin_up {
        host.set_link_up(br.index, true)
            .await
            .map_err(nl_ctx(ctx()))?;
    }
    Ok(br)
}

/// Creates a veth with the peer directly in `peer_ns` (or in the host netns
/// when `peer_ns` is None) under `peer_name`; the host end gets a random
/// `vethXXXXXXXX` name.
async fn create_veth(
    host: &Netlink,
    peer_name: &str,
    peer_ns: Option<&Netns>,
    mtu: Option<u32>,
    mac: Option<MacAddr>,
) -> Result<Link, CniError> {
    for _ in 0..10 {
        let name = random_veth_name();
        let mut v = Veth::new(&name, peer_name);
        if let Some(ns) = peer_ns {
            v = v.peer_netns(ns);
        }
        if let Some(m) = mtu {
            v = v.mtu(m);
        }
        if let Some(m) = mac {
            v = v.peer_mac(m);
        }
        match host.create_veth(&v).await {
            Ok(l) => return Ok(l),
            Err(e) if e.is_exists() => {
                if host.link_by_name(&name).await.ok().flatten().is_some() {
                    continue;
                }
                return Err(CniError::kernel(format!(
                    "container veth name ({peer_name:?}) peer provided ({name:?}) already exists"
                )));
            }
            Err(e) => return Err(nl_ctx("failed to make veth pair")(e)),
        }
    }
    Err(CniError::kernel("failed to find a unique veth name"))
}

/// How a port is attached to the bridge.
struct PortSpec<'a> {
    vlan: u16,
    trunk: &'a [u16],
    hairpin: bool,
    isolated: bool,
    preserve_default_vlan: bool,
}

/// Enslaves a host-side veth and applies hairpin, isolation and VLANs.
async fn attach_port(
    host: &Netlink,
    br: &Link,
    port: &Link,
    spec: &PortSpec<'_>,
) -> Result<(), CniError> {
    let PortSpec {
        vlan,
        trunk,
        hairpin,
        isolated,
        preserve_default_vlan,
    } = *spec;
    let ctx = |what: &str| format!("failed to {what} on {:?}", port.name);
    host.set_master(port.index, br.index)
        .await
        .map_err(nl_ctx(format!(
            "failed to connect {:?} to bridge {:?}",
            port.name, br.name
        )))?;
    if hairpin || isolated {
        let s = BridgePortSettings {
            hairpin: hairpin.then_some(true),
            isolated: isolated.then_some(true),
            learning: None,
        };
        host.set_bridge_port(port.index, &s)
            .await
            .map_err(nl_ctx(ctx("set hairpin/isolation")))?;
    }
    if (vlan != 0 || !trunk.is_empty()) && !preserve_default_vlan {
        let vlans = host
            .bridge_vlans(port.index)
            .await
            .map_err(nl_ctx(ctx("list VLANs")))?;
        for v in vlans {
            host.bridge_vlan_del(port.index, &BridgeVlan::new(v.vid))
                .await
                .map_err(nl_ctx(ctx("remove the default VLAN")))?;
        }
    }
    if vlan != 0 {
        host.bridge_vlan_add(port.index, &BridgeVlan::new(vlan).pvid().untagged())
            .await
            .map_err(nl_ctx(ctx("set up the VLAN tag")))?;
    }
    for (first, last) in vlan_ranges(trunk) {
        let v = if first == last {
            BridgeVlan::new(first)
        } else {
            BridgeVlan::range(first, last)
        };
        host.bridge_vlan_add(port.index, &v)
            .await
            .map_err(nl_ctx(ctx("set up trunk VLANs")))?;
    }
    if vlan == 0 && !trunk.is_empty() {
        host.bridge_vlan_add(port.index, &BridgeVlan::new(1).pvid().untagged())
            .await
            .map_err(nl_ctx(ctx("set up the native VLAN")))?;
    }
    Ok(())
}

/// Bridge, veth pair (peer created in the pod netns), port settings.
async fn wire(
    conf: &BridgeConf,
    env: &CniEnv,
    host: &Netlink,
    pod: &Netlink,
    pod_ns: &Netns,
) -> Result<Wired, CniError> {
    let bridge = ensure_bridge(host, conf).await?;
    let hv = create_veth(host, &env.ifname, Some(pod_ns), conf.mtu, conf.mac).await?;
    let r = async {
        let alias = rawnl::veth_alias(&env.container_id, &env.ifname);
        rawnl::set_alias(host, hv.index, &alias)
            .await
            .map_err(CniError::kernel)?;
        let spec = PortSpec {
            vlan: conf.vlan,
            trunk: &conf.trunk,
            hairpin: conf.hairpin,
            isolated: conf.port_isolation,
            preserve_default_vlan: conf.preserve_default_vlan,
        };
        attach_port(host, &bridge, &hv, &spec).await?;
        host.set_link_up(hv.index, true)
            .await
            .map_err(nl_ctx(format!("failed to set {:?} up", hv.name)))?;
        let _ = sysctl_here(&format!("net/ipv6/conf/{}/accept_ra", hv.name), "0");
        let cont = pod
            .link(&env.ifname)
            .await
            .map_err(nl_ctx("failed to look up the container interface"))?;
        Ok::<_, CniError>(cont)
    }
    .await;
    match r {
        Ok(cont) => Ok(Wired {
            bridge,
            host: hv,
            cont,
        }),
        Err(e) => {
            let _ = host.delete_link(hv.index).await;
            Err(e)
        }
    }
}

/// The container side's sysctls, all in one trip into the pod netns.
fn container_sysctls(
    pod_ns: &Netns,
    ifname: &str,
    enable_dad: bool,
    has_v6: bool,
) -> Result<(), CniError> {
    let ifname = ifname.to_string();
    let r = pod_ns
        .run(move || -> Result<(), String> {
            let w = |p: &str, v: &str| std::fs::write(format!("/proc/sys/{p}"), v);
            if enable_dad {
                let _ = w(&format!("net/ipv6/conf/{ifname}/enhanced_dad"), "1");
                let _ = w(&format!("net/ipv6/conf/{ifname}/accept_dad"), "1");
            } else {
                let _ = w(&format!("net/ipv6/conf/{ifname}/accept_dad"), "0");
            }
            let _ = w(&format!("net/ipv4/conf/{ifname}/arp_notify"), "1");
            if has_v6 {
                for i in ["lo", ifname.as_str()] {
                    let p = format!("net/ipv6/conf/{i}/disable_ipv6");
                    let cur = std::fs::read_to_string(format!("/proc/sys/{p}")).unwrap_or_default();
                    if cur.trim() != "0" {
                        w(&p, "0").map_err(|e| {
                            format!("failed to enable IPv6 for interface {i:?}: {e}")
                        })?;
                    }
                }
                w(&format!("net/ipv6/conf/{ifname}/keep_addr_on_down"), "1").map_err(|e| {
                    format!("failed to enable keep_addr_on_down for interface {ifname:?}: {e}")
                })?;
            }
            Ok(())
        })
        .map_err(nl_err)?;
    r.map_err(CniError::kernel)
}

fn route_scope(s: u8) -> Option<Scope> {
    match s {
        0 => Some(Scope::Universe),
        200 => Some(Scope::Site),
        253 => Some(Scope::Link),
        254 => Some(Scope::Host),
        255 => Some(Scope::Nowhere),
        _ => None,
    }
}

/// Addresses, link up, routes: the reference's ipam.ConfigureIface.
async fn configure_container(
    pod: &Netlink,
    cont: &Link,
    res: &CniResult,
    enable_dad: bool,
) -> Result<(), CniError> {
    let ifname = &cont.name;
    let (mut v4gw, mut v6gw): (Option<IpAddr>, Option<IpAddr>) = (None, None);
    for ipc in &res.ips {
        pod.addr_add_with(cont.index, ipc.address, AddrOptions::default())
            .await
            .map_err(nl_ctx(format!(
                "failed to add IP addr {} to {ifname:?}",
                ipc.address
            )))?;
        if let Some(gw) = ipc.gateway {
            let slot = if gw.is_ipv4() { &mut v4gw } else { &mut v6gw };
            slot.get_or_insert(gw);
        }
    }
    pod.set_link_up(cont.index, true)
        .await
        .map_err(nl_ctx(format!("failed to set {ifname:?} UP")))?;
    if enable_dad && res.ips.iter().any(|i| !i.address.addr().is_ipv4()) {
        settle_addresses(pod, cont.index).await?;
    }
    for r in &res.routes {
        let gw = r.gw.or(if r.dst.addr().is_ipv4() { v4gw } else { v6gw });
        let mut route = plexus_netlink::Route::new(r.dst).dev(cont.index);
        if let Some(gw) = gw {
            route = route.via(gw);
        }
        if let Some(p) = r.priority {
            route = route.metric(p);
        }
        if let Some(t) = r.table {
            route = route.table(t);
        }
        if let Some(s) = r.scope.and_then(route_scope) {
            route = route.scope(s);
        }
        if let Some(m) = r.mtu {
            route = route.mtu(m);
        }
        if let Some(m) = r.advmss {
            route = route.advmss(m);
        }
        match pod.route_add(&route).await {
            Ok(()) => {}
            Err(e) if e.is_exists() => {}
            Err(e) => {
                return Err(nl_ctx(format!(
                    "failed to add route '{} via {:?} dev {ifname}'",
                    r.dst, gw
                ))(e))
            }
        }
    }
    Ok(())
}

/// Waits (up to 5 s) for IPv6 duplicate address detection to finish.
async fn settle_addresses(pod: &Netlink, index: u32) -> Result<(), CniError> {
    for _ in 0..100 {
        let addrs = pod
            .addrs(Some(index))
            .await
            .map_err(nl_ctx("could not list addresses"))?;
        if !addrs.iter().any(|a| a.tentative) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(CniError::kernel(
        "container interface still has tentative addresses after 5s",
    ))
}

/// Puts `gw` on `link` like the reference's ensureAddr.
async fn ensure_addr(host: &Netlink, link: &Link, gw: IpNet, force: bool) -> Result<(), CniError> {
    let v4 = gw.addr().is_ipv4();
    let addrs = host
        .addrs(Some(link.index))
        .await
        .map_err(nl_ctx("could not get list of IP addresses"))?;
    for a in addrs.iter().filter(|a| a.net.addr().is_ipv4() == v4) {
        if a.net == gw {
            return Ok(());
        }
        if v4 || a.net.contains(&gw.addr()) || gw.contains(&a.net.addr()) {
            if force {
                host.addr_del(link.index, a.net)
                    .await
                    .map_err(nl_ctx(format!(
                        "could not remove IP address from {:?}",
                        link.name
                    )))?;
            } else {
                return Err(CniError::kernel(format!(
                    "{:?} already has an IP address different from {gw}",
                    link.name
                )));
            }
        }
    }
    match host.addr_add(link.index, gw).await {
        Ok(()) => {}
        Err(e) if e.is_exists() => {}
        Err(e) => {
            return Err(nl_ctx(format!(
                "could not add IP address {gw} to {:?}",
                link.name
            ))(e))
        }
    }
    // Pin the bridge's MAC; otherwise it follows the lowest port MAC.
    if let Some(mac) = link.mac {
        host.set_mac(link.index, mac)
            .await
            .map_err(nl_ctx("could not set bridge's mac"))?;
    }
    Ok(())
}

/// The `<bridge>.<vlan>` gateway interface: a veth whose random end is a
/// VLAN access port of the bridge.
async fn ensure_vlan_interface(
    host: &Netlink,
    br: &Link,
    conf: &BridgeConf,
) -> Result<Link, CniError> {
    let name = conf.vlan_iface_name();
    if let Some(l) = host
        .link_by_name(&name)
        .await
        .map_err(nl_ctx(format!("failed to find interface {name:?}")))?
    {
        return Ok(l);
    }
    let port = create_veth(host, &name, None, Some(br.mtu), None).await?;
    let r = async {
        let spec = PortSpec {
            vlan: conf.vlan,
            trunk: &[],
            hairpin: false,
            isolated: false,
            preserve_default_vlan: conf.preserve_default_vlan,
        };
        attach_port(host, br, &port, &spec).await?;
        host.set_link_up(port.index, true)
            .await
            .map_err(nl_ctx(format!("failed to set {:?} up", port.name)))?;
        let gw = host
            .link(&name)
            .await
            .map_err(nl_ctx(format!("failed to lookup {name:?}")))?;
        host.set_link_up(gw.index, true)
            .await
            .map_err(nl_ctx(format!("failed to up {name:?}")))?;
        Ok::<_, CniError>(gw)
    }
    .await;
    if r.is_err() {
        let _ = host.delete_link(port.index).await;
    }
    r
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
        let gws: Gateways = calc_gateways(
            &mut ipam,
            base + 2,
            conf.is_gateway,
            conf.is_default_gateway,
        );
        let has_v6 = ipam.ips.iter().any(|i| !i.address.addr().is_ipv4());
        container_sysctls(pod_ns, &env.ifname, conf.enable_dad, has_v6)?;
        configure_container(pod, &w.cont, &ipam, conf.enable_dad).await?;

        if conf.is_gateway {
            let mut vlan_if: Option<Link> = None;
            for (v4, list) in [(true, &gws.v4), (false, &gws.v6)] {
                for gw in list {
                    let target = if conf.vlan != 0 {
                        if vlan_if.is_none() {
                            let l = ensure_vlan_interface(host, &w.bridge, conf).await.map_err(
                                |mut e| {
                                    e.msg = format!("failed to create vlan interface: {}", e.msg);
                                    e
                                },
                            )?;
                            vlan_if = Some(l);
                        }
                        vlan_if.clone().expect("set above")
                    } else {
                        w.bridge.clone()
                    };
                    ensure_addr(host, &target, *gw, conf.force_address).await?;
                }
                if !list.is_empty() {
                    enable_forwarding(v4)?;
                }
            }
            if let Some(l) = vlan_if {
                extra_ifaces.push(Interface {
                    name: l.name.clone(),
                    mac: l.mac.map(|m| m.to_string()).unwrap_or_default(),
                    ..Default::default()
                });
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
            .map_err(nl_ctx(format!("failed to set {:?} up", env.ifname)))?;
    }

    let cont_mac = w.cont.mac.map(|m| m.to_string()).unwrap_or_default();
    if conf.mac_spoof_chk {
        let mac = w
            .cont
            .mac
            .ok_or_else(|| CniError::kernel(format!("{:?} has no MAC address", w.cont.name)))?;
        nft::add_spoof(&mut rules, &att, &w.host.name, mac);
    }
    nft::apply(&rules).map_err(nft_err)?;

    // The bridge port must come up (the reference polls the same way).
    let mut hv = w.host.clone();
    if !conf.disable_container_interface {
        for (i, ms) in [0u64, 50, 500, 1000, 1000].into_iter().enumerate() {
            if ms > 0 {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            hv = host
                .link_by_index(w.host.index)
                .await
                .map_err(nl_err)?
                .ok_or_else(|| CniError::kernel(format!("{:?} disappeared", w.host.name)))?;
            if hv.oper_up {
                break;
            }
            if i == 4 {
                return Err(CniError::kernel(format!(
                    "bridge port {:?} did not come up",
                    w.host.name
                )));
            }
        }
    }
    let br = host
        .link_by_index(w.bridge.index)
        .await
        .map_err(nl_err)?
        .unwrap_or_else(|| w.bridge.clone());

    let mac = |l: &Link| l.mac.map(|m| m.to_string()).unwrap_or_default();
    let mut ifaces = vec![
        Interface {
            name: br.name.clone(),
            mac: mac(&br),
            ..Default::default()
        },
        Interface {
            name: hv.name.clone(),
            mac: mac(&hv),
            ..Default::default()
        },
        Interface {
            name: w.cont.name.clone(),
            mac: cont_mac,
            sandbox: netns_path,
            ..Default::default()
        },
    ];
    ifaces.extend(extra_ifaces);
    result.interfaces.extend(ifaces);
    if let Some(dns) = &conf.dns {
        result.dns = dns.clone();
    }
    Ok(result)
}

/// Removes the veth pair: inside the pod netns when it is there, else (the
/// netns is gone, or the interface is) the host end found by its alias.
async fn remove_links(req: &Request<'_>) -> Result<(), CniError> {
    let env = req.env;
    if let Some(path) = &env.netns {
        match Netns::open(path) {
            Ok(ns) => {
                let pod = Netlink::open(&ns).await.map_err(nl_err)?;
                if let Some(l) = pod.link_by_name(&env.ifname).await.map_err(nl_err)? {
                    match pod.delete_link_detached(l.index).await {
                        Ok(()) => return Ok(()),
                        Err(e) if e.is_not_found() => {}
                        Err(e) => {
                            return Err(nl_ctx(format!("failed to delete {:?}", env.ifname))(e))
                        }
                    }
                }
            }
            // Gone, or no longer a namespace (unmounted): nothing to do there.
            Err(e)
                if e.is_not_found()
                    || matches!(e, plexus_netlink::Error::InvalidArgument { .. }) => {}
            Err(e) => {
                return Err(CniError::kernel(format!(
                    "failed to open netns {}: {e}",
                    path.display()
                )))
            }
        }
    }
    let host_ns = Netns::current().map_err(nl_err)?;
    let host = Netlink::open(&host_ns).await.map_err(nl_err)?;
    let alias = rawnl::veth_alias(&env.container_id, &env.ifname);
    for idx in rawnl::links_with_alias(&host, &alias)
        .await
        .map_err(CniError::kernel)?
    {
        match host.delete_link_detached(idx).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(nl_ctx("failed to delete the host veth")(e)),
        }
    }
    Ok(())
}

async fn del(req: &Request<'_>, conf: &BridgeConf) -> Result<(), CniError> {
    let env = req.env;
    let ipam_job = conf.ipam_type.clone().map(|t| {
        let (stdin, env) = (req.stdin.to_vec(), env.clone());
        std::thread::spawn(move || delegate::del(&t, &stdin, &env))
    });
    // The nftables teardown runs beside the veth removal. It costs about
    // 13 ms, nearly all at the close of the netfilter socket: on
    // NETLINK_URELEASE nf_tables flushes its pending destroy work (an RCU
    // grace period) under the netns's commit mutex, which a netdevice
    // unregister in the same netns also takes, so the two mostly serialise.
    // A new thread starts in this thread's netns, the node's, where the
    // chains live.
    let teardown = nft::teardown(
        &attachment(conf, env),
        conf.ip_masq && conf.is_layer3(),
        conf.mac_spoof_chk,
    );
    let nft_job = (!teardown.is_empty()).then(|| std::thread::spawn(move || nft::apply(&teardown)));
    let links = remove_links(req).await;
    let nft_r = match nft_job.map(JoinHandle::join) {
        None => Ok(()),
        Some(Err(_)) => Err(CniError::io("the nftables thread panicked")),
        Some(Ok(Err(e))) if e.is_not_supported() => {
            tracing::warn!("{e}: no nftables rules to remove");
            Ok(())
        }
        Some(Ok(r)) => r.map_err(nft_err),
    };
    let ipam = match ipam_job {
        Some(j) => j
            .join()
            .unwrap_or_else(|_| Err(CniError::io("the IPAM thread panicked"))),
        None => Ok(()),
    };
    ipam?;
    links?;
    nft_r
}

fn check_failed(msg: impl Into<String>) -> CniError {
    CniError::kernel(msg)
}

async fn check(
    req: &Request<'_>,
    conf: &BridgeConf,
    pod_ns: &Netns,
    prev: &CniResult,
) -> Result<(), CniError> {
    let env = req.env;
    let netns_path = req.netns()?.display().to_string();
    let host_ns = Netns::current().map_err(nl_err)?;
    let (host, pod) =
        tokio::try_join!(Netlink::open(&host_ns), Netlink::open(pod_ns)).map_err(nl_err)?;

    let br_if = prev
        .interfaces
        .iter()
        .find(|i| i.name == conf.bridge)
        .ok_or_else(|| {
            check_failed(format!(
                "CNI created bridge {} in host namespace was not found",
                conf.bridge
            ))
        })?;
    if !br_if.sandbox.is_empty() {
        return Err(check_failed(format!(
            "Interface {} should not be in sandbox",
            br_if.name
        )));
    }
    let br = host
        .link_by_name(&br_if.name)
        .await
        .map_err(nl_err)?
        .ok_or_else(|| check_failed(format!("Interface name {} not found", br_if.name)))?;
    if br.kind.as_deref() != Some("bridge") {
        return Err(check_failed(format!(
            "Interface {} does not have link type of bridge",
            br.name
        )));
    }
    let mac_of = |l: &Link| l.mac.map(|m| m.to_string()).unwrap_or_default();
    if !br_if.mac.is_empty() && !br_if.mac.eq_ignore_ascii_case(&mac_of(&br)) {
        return Err(check_failed(format!(
            "Bridge interface {} Mac doesn't match: {}",
            br.name, br_if.mac
        )));
    }
    if br.promisc != conf.promisc {
        return Err(check_failed(format!(
            "Bridge interface {} configured Promisc Mode {} doesn't match current state: {}",
            br.name, conf.promisc, br.promisc
        )));
    }

    let cont_pos = prev
        .interfaces
        .iter()
        .position(|i| i.name == env.ifname && i.sandbox == netns_path)
        .ok_or_else(|| {
            check_failed(format!(
                "Sandbox in prevResult doesn't match configured netns: {netns_path}"
            ))
        })?;
    let cont_if = &prev.interfaces[cont_pos];
    let cont = pod
        .link_by_name(&env.ifname)
        .await
        .map_err(nl_err)?
        .ok_or_else(|| {
            check_failed(format!(
                "CNI created interface in container {} not found",
                env.ifname
            ))
        })?;
    if cont.kind.as_deref() != Some("veth") {
        return Err(check_failed(format!(
            "Error: Container interface {} not of type veth",
            cont.name
        )));
    }
    if !cont_if.mac.is_empty() && !cont_if.mac.eq_ignore_ascii_case(&mac_of(&cont)) {
        return Err(check_failed(format!(
            "Interface {} Mac {} doesn't match container Mac: {}",
            cont.name,
            cont_if.mac,
            mac_of(&cont)
        )));
    }

    // The host veth: peer of the container interface, port of the bridge.
    let mut veth_found = false;
    for intf in &prev.interfaces {
        if intf.name == br_if.name || intf.name == cont_if.name || !intf.sandbox.is_empty() {
            continue;
        }
        let Some(l) = host.link_by_name(&intf.name).await.map_err(nl_err)? else {
            return Err(check_failed(format!(
                "Interface name {} not found",
                intf.name
            )));
        };
        if l.kind.as_deref() != Some("veth") {
            continue;
        }
        if Some(l.index) != cont.link || l.link != Some(cont.index) || l.master != Some(br.index) {
            continue;
        }
        if !intf.mac.is_empty() && !intf.mac.eq_ignore_ascii_case(&mac_of(&l)) {
            return Err(check_failed(format!(
                "Interface {} Mac doesn't match: {} not found",
                intf.name, intf.mac
            )));
        }
        veth_found = true;
        break;
    }
    if !veth_found {
        return Err(check_failed(format!(
            "CNI veth created for bridge {} was not found",
            conf.bridge
        )));
    }

    // Addresses and routes from prevResult.
    let addrs = pod.addrs(Some(cont.index)).await.map_err(nl_err)?;
    let routes = pod.routes(RouteFilter::default()).await.map_err(nl_err)?;
    for ipc in prev
        .ips
        .iter()
        .filter(|i| i.interface.is_none_or(|x| x == cont_pos))
    {
        if !addrs.iter().any(|a| a.net == ipc.address) {
            return Err(check_failed(format!(
                "Failed to match addr {} on interface {}",
                ipc.address, env.ifname
            )));
        }
        let prefix = ipc.address.trunc();
        if !routes.iter().any(|r| r.dst == prefix) {
            return Err(check_failed(format!(
                "Failed to find the route to {prefix} for interface {}",
                env.ifname
            )));
        }
    }
    for r in &prev.routes {
        if !routes
            .iter()
            .any(|k| k.dst == r.dst.trunc() && r.gw.is_none_or(|gw| k.gateway == Some(gw)))
        {
            return Err(check_failed(format!(
                "Expected Route {} via {:?} not found in routing table",
                r.dst, r.gw
            )));
        }
    }
    Ok(())
}
