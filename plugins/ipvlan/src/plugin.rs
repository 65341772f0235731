//! ADD, DEL, CHECK, STATUS and GC.

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use plexus_cni::error::plexus_codes;
use plexus_cni::plugin::{Plugin, Request};
use plexus_cni::{CniError, CniResult, ErrorCode, Interface};
use plexus_netlink::{AddrOptions, Ipvlan, Link, Netlink, Netns, RouteFilter, Scope};

use crate::config::{default_route_oif, mode_name, select_master, IpvlanConf, MasterChoice};

#[derive(Debug)]
pub struct IpvlanPlugin;

fn block_on<T>(f: impl std::future::Future<Output = Result<T, CniError>>) -> Result<T, CniError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CniError::io(format!("cannot start the async runtime: {e}")))?
        .block_on(f)
}

impl Plugin for IpvlanPlugin {
    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        block_on(add(req))
    }
    fn del(&self, req: &Request) -> Result<(), CniError> {
        block_on(del(req))
    }
    fn check(&self, req: &Request) -> Result<(), CniError> {
        block_on(check(req))
    }
    fn status(&self, req: &Request) -> Result<(), CniError> {
        let conf = IpvlanConf::from_netconf_lenient(req.conf)?;
        match conf.ipam_type {
            Some(t) => plexus_runtime::delegate::status(&t, req.stdin, req.env),
            None => Ok(()),
        }
    }
    fn gc(&self, req: &Request) -> Result<(), CniError> {
        let conf = IpvlanConf::from_netconf_lenient(req.conf)?;
        match conf.ipam_type {
            Some(t) => plexus_runtime::delegate::gc(&t, req.stdin, req.env),
            None => Ok(()),
        }
    }
}

fn nl_err(e: plexus_netlink::Error) -> CniError {
    CniError::kernel(e.to_string())
}

/// The error for a kernel built without IPVLAN.
pub fn kernel_missing_ipvlan(e: &plexus_netlink::Error) -> CniError {
    CniError::plugin(
        plexus_codes::KERNEL_FEATURE_MISSING,
        "the kernel has no IPVLAN support (CONFIG_IPVLAN, the ipvlan module): cannot create an ipvlan link",
    )
    .with_details(format!(
        "load the ipvlan module or use a kernel built with CONFIG_IPVLAN; kernel said: {e}"
    ))
}

fn open_pod_netns(path: &Path) -> Result<Netns, CniError> {
    Netns::open(path).map_err(|e| {
        CniError::io(format!(
            "failed to open the pod network namespace {}: {e}",
            path.display()
        ))
    })
}

/// A name for the link until it is renamed in the pod (the reference does the
/// same: creating it under its final name could clash with a node link).
fn temp_name() -> String {
    let mut b = [0u8; 4];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut b);
    }
    let n = u32::from_ne_bytes(b) ^ std::process::id().rotate_left(16);
    format!("ipvl{n:08x}")
}

/// Both namespaces' netlink sockets.
struct Handles {
    node: Netlink,
    pod: Netlink,
    pod_ns: Netns,
}

impl Handles {
    async fn open(pod_path: &Path) -> Result<Handles, CniError> {
        let pod_ns = open_pod_netns(pod_path)?;
        let node_ns = Netns::current().map_err(nl_err)?;
        Ok(Handles {
            node: Netlink::open(&node_ns).await.map_err(nl_err)?,
            pod: Netlink::open(&pod_ns).await.map_err(nl_err)?,
            pod_ns,
        })
    }

    /// The handle of the namespace the master lives in.
    fn master_nl(&self, conf: &IpvlanConf) -> &Netlink {
        if conf.link_in_container {
            &self.pod
        } else {
            &self.node
        }
    }

    fn other_nl(&self, conf: &IpvlanConf) -> (&Netlink, &'static str) {
        if conf.link_in_container {
            (&self.node, "node")
        } else {
            (&self.pod, "pod")
        }
    }

    /// Resolve the master by the reference rules; clear errors when it is
    /// missing or lives in the other namespace.
    async fn master(
        &self,
        conf: &IpvlanConf,
        choice: MasterChoice,
        ifname: &str,
    ) -> Result<Link, CniError> {
        let nl = self.master_nl(conf);
        let where_ = conf.master_ns_name();
        let name = match choice {
            MasterChoice::Named(n) => n,
            MasterChoice::DefaultRoute => {
                let routes = nl.routes(RouteFilter::default()).await.map_err(nl_err)?;
                let oif = default_route_oif(&routes).ok_or_else(|| {
                    CniError::invalid_config(format!(
                        "no \"master\" configured and the {where_} network namespace has no default route to pick one"
                    ))
                    .with_details("set \"master\" to the interface ipvlan links should use")
                })?;
                let link = nl.link_by_index(oif).await.map_err(nl_err)?;
                let link = link.ok_or_else(|| {
                    CniError::kernel(format!("default route interface #{oif} vanished"))
                })?;
                tracing::debug!(master = %link.name, "master from the default route");
                return Ok(link);
            }
        };
        if conf.link_in_container && name == ifname {
            return Err(CniError::invalid_config(format!(
                "master {name:?} has the name the pod interface should get (CNI_IFNAME)"
            )));
        }
        if plexus_netlink::link::validate_ifname(&name).is_err() {
            return Err(CniError::invalid_config(format!(
                "master {name:?} is not a valid interface name"
            )));
        }
        if let Some(l) = nl.link_by_name(&name).await.map_err(nl_err)? {
            return Ok(l);
        }
        let (other, other_name) = self.other_nl(conf);
        let in_other = other.link_by_name(&name).await.ok().flatten().is_some();
        if in_other {
            let hint = if conf.link_in_container {
                "remove \"linkInContainer\" to use a master of the node"
            } else {
                "set \"linkInContainer\": true to use a master inside the pod"
            };
            return Err(CniError::invalid_config(format!(
                "master {name:?} is in the {other_name} network namespace, not in the {where_} network namespace"
            ))
            .with_details(hint));
        }
        Err(CniError::invalid_config(format!(
            "master {name:?} not found in the {where_} network namespace"
        )))
    }
}

async fn add(req: &Request<'_>) -> Result<CniResult, CniError> {
    let conf = IpvlanConf::from_netconf(req.conf)?;
    let ifname = req.env.ifname.as_str();
    let pod_path = req.netns()?;
    let h = Handles::open(pod_path).await?;
    let choice = select_master(&conf, req.conf.prev_result.as_ref())?;
    let master = h.master(&conf, choice, ifname).await?;
    addr_source(req, &conf)?;
    if h.pod.link_by_name(ifname).await.map_err(nl_err)?.is_some() {
        return Err(CniError::invalid_config(format!(
            "the pod network namespace already has an interface {ifname:?}"
        )));
    }

    // Create the link directly in the pod namespace under a temporary name.
    let tmp = temp_name();
    let mut spec = Ipvlan::new(&tmp, master.index, conf.mode);
    if let Some(m) = conf.mtu {
        spec = spec.mtu(m);
    }
    let created = if conf.link_in_container {
        h.pod.create_ipvlan(&spec).await
    } else {
        h.node.create_ipvlan(&spec.netns(&h.pod_ns)).await
    };
    if let Err(e) = created {
        return Err(if e.is_not_supported() {
            kernel_missing_ipvlan(&e)
        } else {
            CniError::kernel(format!(
                "failed to create an ipvlan link on master {:?}: {e}",
                master.name
            ))
        });
    }
    tracing::debug!(tmp, master = %master.name, "created ipvlan link");

    let mut ipam_ran = None;
    let out = add_after_link(req, &conf, &h, &tmp, &mut ipam_ran).await;
    if out.is_err() {
        // Leave nothing behind: the link (under either name), the allocation.
        for name in [tmp.as_str(), ifname] {
            if let Err(e) = h.pod.delete_link_if_exists(name).await {
                tracing::warn!("cleanup: cannot delete {name}: {e}");
            }
        }
        if let Some(t) = ipam_ran {
            if let Err(e) = plexus_runtime::delegate::del(&t, req.stdin, req.env) {
                tracing::warn!("cleanup: IPAM DEL failed: {e}");
            }
        }
    }
    out
}

/// Where ADD takes the addresses from.
enum AddrSource<'a> {
    Ipam(&'a str),
    Prev(&'a CniResult),
}

/// The reference rule: IPAM when configured; without it, a chain's
/// prevResult if it has IPs; otherwise a config error (found before anything
/// is created).
fn addr_source<'a>(req: &'a Request<'_>, conf: &'a IpvlanConf) -> Result<AddrSource<'a>, CniError> {
    if let Some(t) = &conf.ipam_type {
        return Ok(AddrSource::Ipam(t));
    }
    match req.conf.prev_result.as_ref().filter(|r| !r.ips.is_empty()) {
        Some(prev) => Ok(AddrSource::Prev(prev)),
        None => Err(CniError::invalid_config(
            "no \"ipam\" configured and no prevResult with IPs to take the addresses from",
        )),
    }
}

async fn add_after_link(
    req: &Request<'_>,
    conf: &IpvlanConf,
    h: &Handles,
    tmp: &str,
    ipam_ran: &mut Option<String>,
) -> Result<CniResult, CniError> {
    let ifname = req.env.ifname.as_str();
    let link = h.pod.link(tmp).await.map_err(nl_err)?;
    h.pod.rename_link(link.index, ifname).await.map_err(|e| {
        CniError::kernel(format!(
            "failed to rename the ipvlan link to {ifname:?}: {e}"
        ))
    })?;
    let link = h.pod.link(ifname).await.map_err(nl_err)?;

    // Addresses: from IPAM, or in a chain without IPAM from prevResult.
    let mut result = match addr_source(req, conf)? {
        AddrSource::Prev(prev) => prev.clone(),
        AddrSource::Ipam(t) => {
            let r = plexus_runtime::delegate::add(t, req.stdin, req.env)?;
            *ipam_ran = Some(t.to_owned());
            if r.ips.is_empty() {
                return Err(CniError::plugin(
                    plexus_codes::DELEGATE_FAILED,
                    format!("IPAM plugin {t} returned no IP configuration"),
                ));
            }
            r
        }
    };
    for ip in &mut result.ips {
        ip.interface = Some(0);
    }
    result.interfaces = vec![Interface {
        name: ifname.to_owned(),
        mac: link.mac.map(|m| m.to_string()).unwrap_or_default(),
        mtu: Some(link.mtu),
        sandbox: req.netns()?.display().to_string(),
        ..Default::default()
    }];
    if let Some(dns) = &conf.dns {
        result.dns = dns.clone();
    }

    // Best effort, like the reference.
    for (fam, key) in [("ipv4", "arp_notify"), ("ipv6", "ndisc_notify")] {
        let name = format!("net/{fam}/conf/{ifname}/{key}");
        if let Err(e) = plexus_netlink::sysctl::set_async(&h.pod_ns, &name, "1").await {
            tracing::debug!("sysctl {name}: {e}");
        }
    }
    configure_iface(&h.pod, &h.pod_ns, link.index, ifname, &result).await?;
    Ok(result)
}

/// What the reference's ipam.ConfigureIface does: addresses, link up, wait
/// for IPv6 DAD, routes (a route without gateway uses the first gateway of
/// its family).
async fn configure_iface(
    nl: &Netlink,
    ns: &Netns,
    index: u32,
    ifname: &str,
    result: &CniResult,
) -> Result<(), CniError> {
    let mut v4gw: Option<IpAddr> = None;
    let mut v6gw: Option<IpAddr> = None;
    let mut has_v6 = false;
    for ip in &result.ips {
        if ip.address.addr().is_ipv6() && !has_v6 {
            has_v6 = true;
            let name = format!("net/ipv6/conf/{ifname}/disable_ipv6");
            if let Err(e) = plexus_netlink::sysctl::set_async(ns, &name, "0").await {
                tracing::debug!("sysctl {name}: {e}");
            }
        }
        nl.addr_add_with(index, ip.address, AddrOptions::default())
            .await
            .map_err(|e| {
                CniError::kernel(format!("failed to add {} to {ifname:?}: {e}", ip.address))
            })?;
        match ip.gateway {
            Some(g @ IpAddr::V4(_)) if v4gw.is_none() => v4gw = Some(g),
            Some(g @ IpAddr::V6(_)) if v6gw.is_none() => v6gw = Some(g),
            _ => {}
        }
    }
    nl.set_link_up(index, true)
        .await
        .map_err(|e| CniError::kernel(format!("failed to set {ifname:?} up: {e}")))?;
    if has_v6 {
        settle_v6(nl, index).await;
    }
    for r in &result.routes {
        let gw = r.gw.or(if r.dst.addr().is_ipv4() { v4gw } else { v6gw });
        let mut route = plexus_netlink::Route::new(r.dst).dev(index);
        if let Some(g) = gw {
            route = route.via(g);
        }
        if let Some(p) = r.priority {
            route = route.metric(p);
        }
        if let Some(t) = r.table {
            route = route.table(t);
        }
        if let Some(m) = r.mtu {
            route = route.mtu(m);
        }
        if let Some(a) = r.advmss {
            route = route.advmss(a);
        }
        if let Some(s) = r.scope {
            route = route.scope(scope_from(s));
        }
        match nl.route_add(&route).await {
            Ok(()) => {}
            Err(e) if e.is_exists() => {}
            Err(e) => {
                return Err(CniError::kernel(format!(
                    "failed to add route {} on {ifname:?}: {e}",
                    r.dst
                )))
            }
        }
    }
    Ok(())
}

fn scope_from(s: u8) -> Scope {
    match s {
        0 => Scope::Universe,
        200 => Scope::Site,
        253 => Scope::Link,
        254 => Scope::Host,
        _ => Scope::Nowhere,
    }
}

/// Wait (up to 10 s, like the reference) until no IPv6 address on the link is
/// tentative.
async fn settle_v6(nl: &Netlink, index: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match nl.addrs(Some(index)).await {
            Ok(a) if a.iter().any(|a| a.tentative) => {}
            _ => return,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn del(req: &Request<'_>) -> Result<(), CniError> {
    let conf = IpvlanConf::from_netconf_lenient(req.conf)?;
    // Release the addresses first and whatever happens to the netns/master.
    let ipam = match &conf.ipam_type {
        Some(t) => plexus_runtime::delegate::del(t, req.stdin, req.env),
        None => Ok(()),
    };
    let link = del_link(req).await;
    ipam.and(link)
}

async fn del_link(req: &Request<'_>) -> Result<(), CniError> {
    let Some(path) = req.env.netns.as_deref() else {
        return Ok(());
    };
    let ns = match Netns::open(path) {
        Ok(ns) => ns,
        Err(e) => {
            // The pod netns is gone (or no longer a netns): nothing to delete.
            tracing::debug!("DEL: pod netns {}: {e}", path.display());
            return Ok(());
        }
    };
    let nl = Netlink::open(&ns).await.map_err(nl_err)?;
    let fail = |e: plexus_netlink::Error| {
        CniError::kernel(format!(
            "failed to delete {:?} in {}: {e}",
            req.env.ifname,
            path.display()
        ))
    };
    // The link also vanishes on its own when its master is deleted.
    let Some(link) = nl.link_by_name(&req.env.ifname).await.map_err(fail)? else {
        return Ok(());
    };
    // Returns once the link is gone, without waiting for the kernel to free it.
    match nl.delete_link_detached(link.index).await {
        Err(e) if !e.is_not_found() => Err(fail(e)),
        _ => Ok(()),
    }
}

fn check_err(msg: impl Into<String>) -> CniError {
    CniError::plugin(plexus_codes::KERNEL, msg)
}

async fn check(req: &Request<'_>) -> Result<(), CniError> {
    let conf = IpvlanConf::from_netconf(req.conf)?;
    let ifname = req.env.ifname.as_str();
    let pod_path = req.netns()?;
    let h = Handles::open(pod_path).await?;
    if let Some(t) = &conf.ipam_type {
        plexus_runtime::delegate::check(t, req.stdin, req.env)?;
    }
    let prev = req.conf.prev_result.as_ref().ok_or_else(|| {
        CniError::invalid_config("CHECK needs the prevResult of the ADD (it is missing)")
    })?;
    let sandbox = pod_path.display().to_string();
    let idx = prev
        .interface_index(ifname, Some(&sandbox))
        .ok_or_else(|| {
            CniError::new(
                ErrorCode::InvalidConfig,
                format!("prevResult has no interface {ifname:?} in sandbox {sandbox}"),
            )
        })?;
    let want = &prev.interfaces[idx];

    // The master, by the same rules as ADD (a chain's master is not known
    // any more at CHECK time: without "master" the default route's is used).
    let choice = if conf.master.is_empty() {
        MasterChoice::DefaultRoute
    } else {
        MasterChoice::Named(conf.master.clone())
    };
    let master = h.master(&conf, choice, ifname).await;

    let link = h
        .pod
        .link_by_name(ifname)
        .await
        .map_err(nl_err)?
        .ok_or_else(|| check_err(format!("interface {ifname:?} not found in {sandbox}")))?;
    if link.kind.as_deref() != Some("ipvlan") {
        return Err(check_err(format!(
            "interface {ifname:?} is not an ipvlan link (kind {})",
            link.kind.as_deref().unwrap_or("none")
        )));
    }
    if link.ipvlan_mode != Some(conf.mode) {
        return Err(check_err(format!(
            "interface {ifname:?} has ipvlan mode {}, the config says {}",
            link.ipvlan_mode.map(mode_name).unwrap_or("unknown"),
            mode_name(conf.mode)
        )));
    }
    match master {
        Ok(m) => {
            let same_ns = link.link_netnsid.is_none();
            if link.link != Some(m.index) || same_ns != conf.link_in_container {
                return Err(check_err(format!(
                    "interface {ifname:?} is not on master {:?} in the {} network namespace",
                    m.name,
                    conf.master_ns_name()
                )));
            }
        }
        Err(e) if conf.master.is_empty() => {
            tracing::debug!("CHECK: cannot resolve the default-route master: {e}");
        }
        Err(e) => return Err(e),
    }
    if !want.mac.is_empty() {
        let have = link.mac.map(|m| m.to_string()).unwrap_or_default();
        if !have.eq_ignore_ascii_case(&want.mac) {
            return Err(check_err(format!(
                "interface {ifname:?} has MAC {have}, prevResult says {}",
                want.mac
            )));
        }
    }
    let addrs = h.pod.addrs(Some(link.index)).await.map_err(nl_err)?;
    for ip in prev.ips.iter().filter(|i| i.interface == Some(idx)) {
        if !addrs.iter().any(|a| a.net == ip.address) {
            return Err(check_err(format!(
                "address {} from prevResult is not on {ifname:?}",
                ip.address
            )));
        }
    }
    let routes = h.pod.routes(RouteFilter::default()).await.map_err(nl_err)?;
    for r in &prev.routes {
        let found = routes
            .iter()
            .any(|k| k.dst == r.dst.trunc() && r.gw.is_none_or(|g| k.gateway == Some(g)));
        if !found {
            return Err(check_err(format!(
                "route {}{} from prevResult is missing in {sandbox}",
                r.dst,
                r.gw.map(|g| format!(" via {g}")).unwrap_or_default()
            )));
        }
    }
    Ok(())
}
