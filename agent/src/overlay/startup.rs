//! Start-up, in the order that leaves nothing half-done on failure:
//! config (a bad one stops us before anything is created), underlay and
//! public IP, VTEP MAC, lease, then devices, masquerade rules and the lease
//! file. The first listing and reconciliation happen in [`Overlay::run`].

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
use crate::olddp::{DataPlane, MasqRules, Ownership, UnderlaySelect, VxlanSpec};
use crate::runfiles;
use crate::status::Shared;

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
pub async fn start<D: DataPlane>(
    settings: &Settings,
    reg: &dyn LeaseRegistry,
    dp: &mut D,
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
    let underlay = dp
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
                macs.insert(name.clone(), vtep_mac(settings, dp, name).await?);
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

    let (mut dev_v4, mut dev_v6) = (None, None);
    let mut mtu = underlay.mtu;
    if let Backend::Vxlan(v) = &cfg.backend {
        if let (Some(subnet), Some(ip)) = (lease.subnet.filter(|_| want_v4), public_ip) {
            let m = v
                .mtu
                .unwrap_or(underlay.mtu.saturating_sub(VXLAN_OVERHEAD_V4));
            let spec = vxlan_spec(v, &name4, IpAddr::V4(ip), underlay.index, m, macs[&name4]);
            let addr = IpNet::V4(Ipv4Net::new(subnet.network(), 32).expect("/32"));
            let d = dp.ensure_vxlan(&VxlanSpec { addr, ..spec }).await?;
            dev_v4 = Some(d.index);
            mtu = mtu.min(m);
        }
        if let (Some(subnet), Some(u6)) = (lease.subnet6.filter(|_| want_v6), &underlay.v6) {
            let m = v.mtu.unwrap_or(u6.mtu.saturating_sub(VXLAN_OVERHEAD_V6));
            let spec = vxlan_spec(v, &name6, IpAddr::V6(u6.addr), u6.index, m, macs[&name6]);
            let addr = IpNet::V6(Ipv6Net::new(subnet.network(), 128).expect("/128"));
            let d = dp.ensure_vxlan(&VxlanSpec { addr, ..spec }).await?;
            dev_v6 = Some(d.index);
            mtu = mtu.min(m);
        }
    }

    let masq = MasqRules {
        network: cfg.network.filter(|_| want_v4),
        subnet: lease.subnet.filter(|_| want_v4),
        ipv6_network: cfg.ipv6_network.filter(|_| want_v6),
        ipv6_subnet: lease.subnet6.filter(|_| want_v6),
    };
    dp.set_masq(settings.ip_masq.then_some(&masq))
        .await
        .context("masquerade rules")?;

    let env = subnet_env(&cfg, &lease, mtu, settings.ip_masq);
    runfiles::write_subnet_env(&settings.run_dir, &env)?;

    let backend = match &cfg.backend {
        Backend::Vxlan(v) => BackendPlan::Vxlan {
            dev_v4,
            dev_v6,
            direct_routing: v.direct_routing,
        },
        Backend::HostGw => BackendPlan::HostGw,
    };
    let local = Local {
        own: lease_id(&lease),
        backend,
        underlay_v4: underlay.v4.map(|(_, n)| (underlay.index, n)),
        underlay_v6: underlay.v6.as_ref().map(|u| (u.index, u.net)),
    };
    let owner = Ownership {
        devices: dev_v4.into_iter().chain(dev_v6).collect(),
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
    };
    publish_identity(settings, status, &cfg, &lease);
    Ok(Overlay {
        settings: settings.clone(),
        lease: lease.clone(),
        local,
        owner,
        leases: [(lease_id(&lease), lease)].into_iter().collect(),
        programmed: BTreeMap::new(),
        status: status.clone(),
        ready: false,
        cfg,
        skipped: BTreeMap::new(),
        hold_deletions_until: None,
        conflicts: 0,
        waiting: false,
    })
}

/// The device's current MAC, else the remembered one, else a new one.
async fn vtep_mac<D: DataPlane>(
    settings: &Settings,
    dp: &mut D,
    name: &str,
) -> anyhow::Result<MacAddr> {
    if let Some(mac) = dp.device_mac(name).await? {
        return Ok(mac);
    }
    match runfiles::remembered_mac(&settings.run_dir, name) {
        Some(mac) => Ok(mac),
        None => runfiles::random_mac(),
    }
}

fn vxlan_spec(
    v: &plexus_subnet::VxlanConfig,
    name: &str,
    local: IpAddr,
    underlay: u32,
    mtu: u32,
    mac: MacAddr,
) -> VxlanSpec {
    VxlanSpec {
        name: name.into(),
        vni: v.vni,
        port: v.port,
        local,
        underlay,
        learning: v.learning,
        mtu,
        mac,
        addr: IpNet::V4(Ipv4Net::default()),
    }
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
