//! What the routed network reads of the kernel (never writes: that is the
//! data plane's): the underlay link of the node's address, and every
//! address of the node for the BGP import guard. [`NodeView`] is what the
//! control logic needs; [`KernelView`] reads it over netlink, the unit
//! tests use a fake.

use std::net::{IpAddr, Ipv4Addr};

use anyhow::Context;
use ipnet::{IpNet, Ipv4Net};
use plexus_netlink::{Netlink, Netns};

pub use crate::dataplane::entry::{LEARNED_METRIC, PROTO_BGP, PROTO_BLOCK};

#[async_trait::async_trait]
pub trait NodeView: Send + Sync {
    /// The underlay: the subnet (our address with its prefix) and the MTU
    /// of the link holding `ip`; None if no link holds it.
    async fn underlay(&self, ip: Ipv4Addr) -> anyhow::Result<Option<(Ipv4Net, u32)>>;
    /// Every address of the node with its prefix length and the name of
    /// its link (for the BGP import guard).
    async fn addresses(&self) -> anyhow::Result<Vec<(IpNet, String)>>;
}

/// [`NodeView`] over netlink in the agent's namespace.
pub struct KernelView {
    nl: Netlink,
}

impl KernelView {
    pub async fn open(ns: &Netns) -> anyhow::Result<KernelView> {
        Ok(KernelView {
            nl: Netlink::open(ns).await.context("open netlink")?,
        })
    }
}

#[async_trait::async_trait]
impl NodeView for KernelView {
    async fn underlay(&self, ip: Ipv4Addr) -> anyhow::Result<Option<(Ipv4Net, u32)>> {
        let addrs = self.nl.addrs(None).await.context("list addresses")?;
        let Some(a) = addrs.iter().find(|a| a.net.addr() == IpAddr::V4(ip)) else {
            return Ok(None);
        };
        let IpNet::V4(subnet) = a.net else {
            return Ok(None);
        };
        let link = self
            .nl
            .link_by_index(a.index)
            .await
            .with_context(|| format!("the link holding {ip}"))?
            .with_context(|| format!("the link holding {ip} went away"))?;
        Ok(Some((subnet, link.mtu)))
    }

    async fn addresses(&self) -> anyhow::Result<Vec<(IpNet, String)>> {
        let names: std::collections::HashMap<u32, String> = self
            .nl
            .links()
            .await
            .context("list links")?
            .into_iter()
            .map(|l| (l.index, l.name))
            .collect();
        Ok(self
            .nl
            .addrs(None)
            .await
            .context("list addresses")?
            .into_iter()
            .map(|a| {
                let name = names.get(&a.index).cloned().unwrap_or_default();
                (a.net, name)
            })
            .collect())
    }
}
