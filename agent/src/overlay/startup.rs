//! Start-up, in the order that leaves nothing half-done on failure:
//! config (a bad one stops us before anything is created), underlay and
//! public IP, VTEP MAC, lease, then the devices with every remote lease's
//! entries in one go (a restarted agent's entries stay in place: the data
//! plane changes only what differs), masquerade rules and the lease file.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use plexus_netlink::MacAddr;
use plexus_store::{AcquireRequest, LeaseRegistry, StoreError};
use plexus_subnet::{Backend, Lease, LeaseAttrs, NetworkConfig, SubnetEnv, VxlanBackendData};

use super::plan::{lease_id, BackendPlan, Local};
use super::{Overlay, Settings};
use crate::dataplane::{DataPlane, Entry, Link, OverlayRoutes, Owner, Vxlan};
use crate::masq::MasqRules;
use crate::runfiles;
use crate::status::Shared;
use crate::underlay::{KernelView, UnderlaySelect};

/// VXLAN over IPv4 adds 50 bytes (outer Ethernet 14 + IPv4 20 + UDP 8 +
/// VXLAN 8); over IPv6, 70.
const VXLAN_OVERHEAD_V4: u32 = 50;
const VXLAN_OVERHEAD_V6: u32 = 70;

/// The device names flanneld uses, so a node migrates in place.
pub fn vxlan_names(vni: u32) -> (String, String) {
    (format!("flannel.{vni}"), format!("flannel-v6.{vni}"))
}

/// Asks the store until it answers or `wait` has passed; only
/// "unavailable" is retried (a bad config is final).
async fn with_retry<T, F, Fut>(wait: Duration, what: &str, mut f: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let deadline = Instant::now() + wait;
    let mut pause = Duration::from_millis(100);
    loop {
        match f().await {
            Err(StoreError::Unavailable(why)) if Instant::now() + pause < deadline => {
                tracing::info!(error = %why, "{what}: store unavailable; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            r => return r,
        }
    }
}

/// Brings the node's overlay up: everything but the first reconciliation.
pub async fn start(
    settings: &Settings,
    reg: &dyn LeaseRegistry,
    dp: &DataPlane,
    view: &mut dyn KernelView,
    status: &Shared,
) -> anyhow::Result<Overlay> {
    let cfg = with_retry(settings.store_wait, "read the network config", || {
        reg.network_config()
    })
    .await
    .inspect_err(|_| status.store_error())
    .with_context(|| format!("read the network config at {}/config", settings.network))?;
    let want_v4 = cfg.enable_ipv4 && cfg.network.is_some();
    let want_v6 = cfg.enable_ipv6 && cfg.ipv6_network.is_some();
    if !want_v4 && !want_v6 {
        bail!("the network config enables neither an IPv4 Network nor an IPv6Network");
    }
    tracing::info!(backend = cfg.backend.type_name(), network = ?cfg.network, ipv6_network = ?cfg.ipv6_network, "network config");

    let sel = UnderlaySelect {
        want_v4,
        want_v6,
        ..settings.select.clone()
    };
    let underlay = view
        .underlay(&sel)
        .await
        .context("find the public interface")?;
    let public_ip = underlay.v4.map(|(ip, _)| ip).filter(|_| want_v4);
    let public_ipv6 = underlay.v6.as_ref().map(|u| u.addr).filter(|_| want_v6);
    tracing::info!(iface = %underlay.name, ?public_ip, ?public_ipv6, mtu = underlay.mtu, "underlay");

    // The VTEP MACs come before the lease: the lease publishes them.
    let (name4, name6) = match &cfg.backend {
        Backend::Vxlan(v) => vxlan_names(v.vni),
        Backend::HostGw => Default::default(),
    };
    let mut macs = BTreeMap::new();
    if let Backend::Vxlan(_) = &cfg.backend {
        for (name, on) in [(&name4, want_v4), (&name6, want_v6)] {
            if on {
                macs.insert(name.clone(), vtep_mac(settings, view, name).await?);
            }
        }
    }
    let attrs = lease_attrs(&cfg, public_ip, public_ipv6, &macs, &name4, &name6);
    let previous = runfiles::previous_subnets(&settings.run_dir).map(|(s4, s6)| Lease {
        subnet: s4,
        subnet6: s6,
        attrs: attrs.clone(),
    });
    let req = AcquireRequest {
        node_name: settings.node_name.clone(),
        public_ip,
        public_ipv6,
        previous,
        previous_public_ip: runfiles::previous_public_ip(&settings.run_dir),
        attrs,
    };
    let lease = with_retry(settings.store_wait, "acquire a lease", || reg.acquire(&req))
        .await
        .inspect_err(|_| status.store_error())
        .context("acquire a subnet lease")?;
    tracing::info!(subnet = ?lease.subnet, subnet6 = ?lease.subnet6, "lease acquired");
    if let Some(ip) = lease.attrs.public_ip {
        runfiles::remember_public_ip(&settings.run_dir, ip)?;
    }
    for (name, mac) in &macs {
        runfiles::remember_mac(&settings.run_dir, name, *mac)?;
    }

    // The devices and their one address each: the subnet's network
    // address, /32 or /128 (flannel's VTEP address and gateway).
    let mut devices: Vec<Entry> = Vec::new();
    let (mut dev_v4, mut dev_v6) = (None, None);
    let mut mtu = underlay.mtu;
    if let Backend::Vxlan(v) = &cfg.backend {
        if let (Some(subnet), Some(ip)) = (lease.subnet.filter(|_| want_v4), public_ip) {
            let m = v
                .mtu
                .unwrap_or(underlay.mtu.saturating_sub(VXLAN_OVERHEAD_V4));
            devices.push(vxlan_entry(
                v,
                &name4,
                IpAddr::V4(ip),
                &underlay.name,
                m,
                macs[&name4],
            ));
            devices.push(Entry::Addr {
                dev: name4.clone(),
                net: IpNet::V4(Ipv4Net::new(subnet.network(), 32).expect("/32")),
            });
            dev_v4 = Some(name4.clone());
            mtu = mtu.min(m);
        }
        if let (Some(subnet), Some(u6)) = (lease.subnet6.filter(|_| want_v6), &underlay.v6) {
            let m = v.mtu.unwrap_or(u6.mtu.saturating_sub(VXLAN_OVERHEAD_V6));
            devices.push(vxlan_entry(
                v,
                &name6,
                IpAddr::V6(u6.addr),
                &u6.name,
                m,
                macs[&name6],
            ));
            devices.push(Entry::Addr {
                dev: name6.clone(),
                net: IpNet::V6(Ipv6Net::new(subnet.network(), 128).expect("/128")),
            });
            dev_v6 = Some(name6.clone());
            mtu = mtu.min(m);
        }
    }

    let backend = match &cfg.backend {
        Backend::Vxlan(v) => BackendPlan::Vxlan {
            dev_v4: dev_v4.clone(),
            dev_v6: dev_v6.clone(),
            direct_routing: v.direct_routing,
        },
        Backend::HostGw => BackendPlan::HostGw,
    };
    let local = Local {
        own: lease_id(&lease),
        backend,
        underlay_v4: underlay.v4.map(|(_, n)| (underlay.name.clone(), n)),
        underlay_v6: underlay.v6.as_ref().map(|u| (u.name.clone(), u.net)),
    };
    // Which routes in the kernel are the overlay's (flannel's rule): those
    // into the cluster networks, but our own subnets, via a gateway or on
    // our devices.
    dp.claim_overlay_routes(Some(OverlayRoutes {
        devices: dev_v4.iter().chain(&dev_v6).cloned().collect(),
        networks: cfg
            .network
            .filter(|_| want_v4)
            .map(IpNet::V4)
            .into_iter()
            .chain(cfg.ipv6_network.filter(|_| want_v6).map(IpNet::V6))
            .collect(),
        own_subnets: lease
            .subnet
            .map(|n| IpNet::V4(n.trunc()))
            .into_iter()
            .chain(lease.subnet6.map(|n| IpNet::V6(n.trunc())))
            .collect(),
    }));
    let mut ov = Overlay {
        settings: settings.clone(),
        lease: lease.clone(),
        local,
        leases: [(lease_id(&lease), lease.clone())].into_iter().collect(),
        devices,
        desired: Vec::new(),
        missing: Default::default(),
        status: status.clone(),
        ready: false,
        cfg: cfg.clone(),
        skipped: BTreeMap::new(),
        hold_deletions_until: None,
        conflicts: 0,
        waiting: false,
    };
    // The devices with every remote lease's entries at once, so a
    // restarted agent's entries are kept, not removed and added again.
    match reg.list().await {
        Ok(snap) => ov.replace_leases(snap.leases),
        Err(e) => {
            status.store_error();
            tracing::warn!(error = %e, "cannot list leases at start; the control loop retries");
        }
    }
    let outcome = ov.reconcile(dp).await?.outcome;
    let broken: Vec<String> = outcome
        .failed
        .iter()
        .filter(|(k, _)| {
            matches!(
                k,
                crate::dataplane::Key::Link(_) | crate::dataplane::Key::Addr { .. }
            )
        })
        .map(|(k, why)| format!("{k}: {why}"))
        .collect();
    if !broken.is_empty() {
        bail!("set up the VXLAN device: {}", broken.join("; "));
    }

    let masq = MasqRules {
        network: cfg.network.filter(|_| want_v4),
        subnet: lease.subnet.filter(|_| want_v4),
        ipv6_network: cfg.ipv6_network.filter(|_| want_v6),
        ipv6_subnet: lease.subnet6.filter(|_| want_v6),
    };
    let chain: Vec<Entry> = settings
        .ip_masq
        .then(|| Entry::Chain(crate::masq::chain(&masq)))
        .into_iter()
        .collect();
    let o = dp.set(Owner::OverlayMasq, chain).await;
    if let Some((_, why)) = o.failed.first() {
        bail!("masquerade rules: {why}");
    }

    let env = subnet_env(&cfg, &lease, mtu, settings.ip_masq);
    runfiles::write_subnet_env(&settings.run_dir, &env)?;
    publish_identity(settings, status, &cfg, &lease);
    Ok(ov)
}

/// The device's current MAC, else the remembered one, else a new one.
async fn vtep_mac(
    settings: &Settings,
    view: &mut dyn KernelView,
    name: &str,
) -> anyhow::Result<MacAddr> {
    if let Some(mac) = view.device_mac(name).await? {
        return Ok(mac);
    }
    match runfiles::remembered_mac(&settings.run_dir, name) {
        Some(mac) => Ok(mac),
        None => runfiles::random_mac(),
    }
}

fn vxlan_entry(
    v: &plexus_subnet::VxlanConfig,
    name: &str,
    local: IpAddr,
    underlay: &str,
    mtu: u32,
    mac: MacAddr,
) -> Entry {
    Entry::Link(Link::Vxlan(Vxlan {
        name: name.into(),
        vni: v.vni,
        port: v.port,
        local,
        underlay: underlay.into(),
        learning: v.learning,
        mtu,
        mac,
    }))
}

fn lease_attrs(
    cfg: &NetworkConfig,
    public_ip: Option<std::net::Ipv4Addr>,
    public_ipv6: Option<std::net::Ipv6Addr>,
    macs: &BTreeMap<String, MacAddr>,
    name4: &str,
    name6: &str,
) -> LeaseAttrs {
    let data = |name: &str| match &cfg.backend {
        Backend::Vxlan(v) => macs.get(name).map(|m| VxlanBackendData {
            vni: v.vni,
            vtep_mac: m.0,
        }),
        Backend::HostGw => None,
    };
    LeaseAttrs {
        public_ip,
        public_ipv6,
        backend_type: cfg.backend.type_name().into(),
        backend_data: data(name4),
        backend_v6_data: data(name6),
    }
}

/// What a re-acquisition asks for: the same lease again.
pub(super) fn acquire_request(settings: &Settings, lease: &Lease) -> AcquireRequest {
    AcquireRequest {
        node_name: settings.node_name.clone(),
        public_ip: lease.attrs.public_ip,
        public_ipv6: lease.attrs.public_ipv6,
        previous: Some(lease.clone()),
        previous_public_ip: lease.attrs.public_ip,
        attrs: lease.attrs.clone(),
    }
}

/// subnet.env: FLANNEL_SUBNET is the subnet's first usable address.
pub fn subnet_env(cfg: &NetworkConfig, lease: &Lease, mtu: u32, ipmasq: bool) -> SubnetEnv {
    let first4 =
        |n: Ipv4Net| Ipv4Net::new((u32::from(n.network()) + 1).into(), n.prefix_len()).unwrap_or(n);
    let first6 = |n: Ipv6Net| {
        Ipv6Net::new((u128::from(n.network()) + 1).into(), n.prefix_len()).unwrap_or(n)
    };
    SubnetEnv {
        network: cfg.network.filter(|_| lease.subnet.is_some()),
        subnet: lease.subnet.map(first4),
        ipv6_network: cfg.ipv6_network.filter(|_| lease.subnet6.is_some()),
        ipv6_subnet: lease.subnet6.map(first6),
        mtu,
        ipmasq,
    }
}

fn publish_identity(settings: &Settings, status: &Shared, cfg: &NetworkConfig, lease: &Lease) {
    status.update(|s| {
        s.node_name = settings.node_name.clone();
        s.network = settings.network.clone();
        s.add_backend(cfg.backend.type_name());
        s.public_ip = lease.attrs.public_ip.map(|i| i.to_string());
        s.public_ipv6 = lease.attrs.public_ipv6.map(|i| i.to_string());
        s.subnet = lease.subnet.map(|n| n.trunc().to_string());
        s.subnet6 = lease.subnet6.map(|n| n.trunc().to_string());
    });
}
