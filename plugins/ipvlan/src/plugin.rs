//! ADD, DEL, CHECK, STATUS and GC.

use std::path::Path;

use plexus_cni::error::plexus_codes;
use plexus_cni::plugin::{Plugin, Request};
use plexus_cni::{CniError, CniResult, ErrorCode, Interface};
use plexus_netlink::{Ipvlan, Link, Netlink, Netns, RouteFilter};
use plexus_plugin::del::delete_pod_iface;
use plexus_plugin::iface::{self, Dad};
use plexus_plugin::names::random_ifname;
use plexus_plugin::{
    block_on, netlink_ctx, netlink_err as nl_err, open_pod_netns, owner, Collected,
};

use crate::config::{default_route_oif, select_master, IpvlanConf, MasterChoice};

/// The name the plugin marks its links with (see plexus-plugin's `owner`).
const PLUGIN: &str = "plexus-ipvlan";

#[derive(Debug)]
pub struct IpvlanPlugin;

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
        plexus_plugin::conf::ifname("master", &name)?;
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

    // Create the link directly in the pod namespace under a temporary name
    // (the reference does the same: creating it under its final name could
    // clash with a node link).
    let tmp = random_ifname("ipvl");
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
    h.pod
        .set_alias(link.index, &link_alias(req))
        .await
        .map_err(netlink_ctx(format!("failed to label {ifname:?}")))?;

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

    iface::configure(&h.pod, &h.pod_ns, &link, &result, Dad::Keep).await?;
    Ok(result)
}

/// The alias that marks the pod's link as this attachment's.
fn link_alias(req: &Request<'_>) -> String {
    owner::alias(PLUGIN, &req.env.container_id, &req.env.ifname)
}

async fn del(req: &Request<'_>) -> Result<(), CniError> {
    let conf = IpvlanConf::from_netconf_lenient(req.conf)?;
    // Release the addresses whatever happens to the netns or the master,
    // and remove the link whatever the IPAM says.
    let mut errors = Collected::new();
    if let Some(t) = &conf.ipam_type {
        errors.take(
            "IPAM DEL",
            plexus_runtime::delegate::del(t, req.stdin, req.env),
        );
    }
    // The link also vanishes on its own when its master is deleted.
    let alias = link_alias(req);
    let ours = async |l: &Link| Ok(l.alias.as_deref() == Some(alias.as_str()));
    errors.take(
        "removing the ipvlan link",
        delete_pod_iface(req.env.netns.as_deref(), &req.env.ifname, ours).await,
    );
    errors.finish()
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
            link.ipvlan_mode.map(|m| m.as_str()).unwrap_or("unknown"),
            conf.mode
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
    plexus_plugin::check::addrs_and_routes(&h.pod, &link, prev, idx).await
}
