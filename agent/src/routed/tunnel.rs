//! The IP-in-IP tunnel device of this node: up, with an address from this
//! node's block of the first IP-in-IP pool, while some pool asks for
//! IP-in-IP; its address released and the device down when none does.
//! The address is an IPAM allocation of its own (handle
//! [`TUNNEL_NETWORK`]/node/tunl0), so it survives restarts and no pod
//! gets it. The device and its address are the data plane's entries of
//! [`Owner::Tunnel`].

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use anyhow::Context;
use ipnet::Ipv4Net;
use plexus_ipam::{Allocator, Handle, Pool};
use tokio::sync::Mutex;

use super::encap::{tunnel_pool, Policy, IPIP_OVERHEAD, TUNNEL_DEV, TUNNEL_NETWORK};
use super::kernel::NodeView;
use crate::dataplane::{DataPlane, Entry, Link, Owner};

/// MTU assumed when the underlay link cannot be found.
const DEFAULT_MTU: u32 = 1500;

pub struct Tunnel {
    dp: DataPlane,
    alloc: Arc<Allocator>,
    handle: Handle,
    /// Our underlay subnet and its link's MTU.
    underlay: Option<(Ipv4Net, u32)>,
    /// The address the device has now (None: not up).
    up: Mutex<Option<Ipv4Addr>>,
}

impl Tunnel {
    pub async fn new(
        dp: DataPlane,
        view: &dyn NodeView,
        alloc: Arc<Allocator>,
        public_ip: Ipv4Addr,
    ) -> anyhow::Result<Tunnel> {
        let underlay = view
            .underlay(public_ip)
            .await
            .context("find the underlay link")?;
        if underlay.is_none() {
            tracing::warn!(%public_ip, "no link holds the public address: underlay subnet unknown");
        }
        Ok(Tunnel {
            dp,
            handle: Handle::new(TUNNEL_NETWORK, alloc.node(), TUNNEL_DEV),
            alloc,
            underlay,
            up: Mutex::new(None),
        })
    }

    /// The MTU of a pod whose traffic may go through the tunnel.
    pub fn pod_mtu(&self) -> u32 {
        self.underlay.map_or(DEFAULT_MTU, |(_, m)| m) - IPIP_OVERHEAD
    }

    /// Our underlay subnet (for ipip-cross-subnet), if known.
    pub fn own_subnet(&self) -> Option<Ipv4Net> {
        self.underlay.map(|(s, _)| s)
    }

    /// Brings the device in line with `policy`; the policy the routes may
    /// use: `policy` itself, or, while the device cannot be up, one
    /// without IP-in-IP (routes stay direct, the failure is returned).
    pub async fn sync(&self, policy: Policy, pools: &[Pool]) -> (Policy, anyhow::Result<()>) {
        let mut up = self.up.lock().await;
        if !policy.needs_tunnel() {
            if up.is_some() {
                let r = self.down().await;
                if r.is_ok() {
                    *up = None;
                }
                return (policy, r);
            }
            return (policy, Ok(()));
        }
        match self.bring_up(pools, *up).await {
            Ok(addr) => {
                *up = addr.or(*up);
                (policy, Ok(()))
            }
            Err(e) => {
                let direct = Policy::new(&[], &[], None);
                (if up.is_some() { policy } else { direct }, Err(e))
            }
        }
    }

    /// The device up with our address; `Some(address)` if it changed.
    async fn bring_up(
        &self,
        pools: &[Pool],
        now: Option<Ipv4Addr>,
    ) -> anyhow::Result<Option<Ipv4Addr>> {
        // Only disabled IP-in-IP pools left: keep what we have.
        let Some(pool) = tunnel_pool(pools) else {
            return Ok(None);
        };
        let IpAddr::V4(addr) = self
            .alloc
            .allocate(&self.handle, &pool.name)
            .await
            .with_context(|| format!("an address for {TUNNEL_DEV} from pool {}", pool.name))?
        else {
            anyhow::bail!("pool {} gave {TUNNEL_DEV} a non-IPv4 address", pool.name);
        };
        if now == Some(addr) {
            return Ok(None);
        }
        let mtu = self.underlay.map_or(DEFAULT_MTU, |(_, m)| m) - IPIP_OVERHEAD;
        let o = self
            .dp
            .set(
                Owner::Tunnel,
                vec![
                    Entry::Link(Link::Ipip {
                        name: TUNNEL_DEV.into(),
                        mtu,
                        up: true,
                    }),
                    Entry::Addr {
                        dev: TUNNEL_DEV.into(),
                        net: ipnet::IpNet::V4(Ipv4Net::from(addr)),
                    },
                ],
            )
            .await;
        if let Some((k, why)) = o.failed.first() {
            anyhow::bail!("the IP-in-IP tunnel device (kernel module ipip): {k}: {why}");
        }
        tracing::info!(dev = TUNNEL_DEV, %addr, mtu, "IP-in-IP tunnel up");
        Ok(Some(addr))
    }

    async fn down(&self) -> anyhow::Result<()> {
        // The device stays wanted, down and without our address (it is
        // the kernel's fallback device: never deleted).
        let mtu = self.underlay.map_or(DEFAULT_MTU, |(_, m)| m) - IPIP_OVERHEAD;
        let o = self
            .dp
            .set(
                Owner::Tunnel,
                vec![Entry::Link(Link::Ipip {
                    name: TUNNEL_DEV.into(),
                    mtu,
                    up: false,
                })],
            )
            .await;
        if let Some((k, why)) = o.failed.first() {
            anyhow::bail!("set {TUNNEL_DEV} down: {k}: {why}");
        }
        self.alloc
            .release(&self.handle)
            .await
            .context("release the tunnel's address")?;
        tracing::info!(dev = TUNNEL_DEV, "no pool asks for IP-in-IP: tunnel down");
        Ok(())
    }
}
