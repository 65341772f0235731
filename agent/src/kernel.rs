//! The data plane over netlink, in one network namespace (the agent's own
//! in production; one a test creates otherwise). Listing goes through
//! [`Netlink`] dumps; changes go through one [`BatchSocket`], many per
//! datagram.

use std::collections::BTreeMap;
use std::net::IpAddr;

use anyhow::{bail, Context};
use ipnet::IpNet;
use plexus_netlink::route::TABLE_MAIN;
use plexus_netlink::{
    AddrOptions, AddrScope, BatchSocket, Fdb, MacAddr, Netlink, Netns, Route, RouteFilter, RtBatch,
    Vxlan,
};

use crate::olddp::{
    DataPlane, Entry, MasqRules, Op, Ownership, Underlay, UnderlaySelect, VxlanDevice, VxlanSpec,
};
use crate::underlay::{self, Iface};

#[derive(Debug)]
pub struct KernelDataPlane {
    ns: Netns,
    nl: Netlink,
    batch: BatchSocket,
}

impl KernelDataPlane {
    /// Opens the sockets in `ns`.
    pub async fn open(ns: Netns) -> anyhow::Result<KernelDataPlane> {
        let nl = Netlink::open(&ns).await?;
        let batch = BatchSocket::open(&ns).await?;
        Ok(KernelDataPlane { ns, nl, batch })
    }

    /// The netlink handle, for tests that read the kernel back.
    pub fn netlink(&self) -> &Netlink {
        &self.nl
    }

    async fn default_oif(&self, v4: bool) -> anyhow::Result<Option<u32>> {
        let f = if v4 {
            RouteFilter::v4()
        } else {
            RouteFilter::v6()
        };
        let routes = self.nl.routes(f.table(TABLE_MAIN)).await?;
        Ok(routes
            .iter()
            .filter(|r| r.is_default())
            .min_by_key(|r| r.metric.unwrap_or(0))
            .and_then(|r| r.oif))
    }

    async fn ensure_addr(&self, index: u32, want: IpNet) -> anyhow::Result<()> {
        let mut have = false;
        for a in self.nl.addrs(Some(index)).await? {
            if a.net.addr().is_ipv4() != want.addr().is_ipv4() || a.scope == AddrScope::Link {
                continue;
            }
            if a.net == want {
                have = true;
            } else {
                tracing::info!(addr = %a.net, "removing a stale address from the VXLAN device");
                self.nl.addr_del(index, a.net).await?;
            }
        }
        if !have {
            let opts = AddrOptions {
                nodad: true,
                ..Default::default()
            };
            self.nl.addr_add_with(index, want, opts).await?;
        }
        Ok(())
    }
}

/// Whether an existing VXLAN device can be kept for `spec`.
fn compatible(l: &plexus_netlink::Link, spec: &VxlanSpec) -> bool {
    l.kind.as_deref() == Some("vxlan")
        && l.vxlan.as_ref().is_some_and(|x| {
            x.vni == spec.vni
                && x.local == Some(spec.local)
                && x.port == Some(spec.port)
                && x.learning == spec.learning
        })
}

#[async_trait::async_trait]
impl DataPlane for KernelDataPlane {
    async fn underlay(&mut self, sel: &UnderlaySelect) -> anyhow::Result<Underlay> {
        let mut addrs: BTreeMap<u32, Vec<IpNet>> = BTreeMap::new();
        for a in self.nl.addrs(None).await? {
            addrs.entry(a.index).or_default().push(a.net);
        }
        let ifaces: Vec<Iface> = self
            .nl
            .links()
            .await?
            .into_iter()
            .map(|l| Iface {
                addrs: addrs.remove(&l.index).unwrap_or_default(),
                index: l.index,
                name: l.name,
                mtu: l.mtu,
            })
            .collect();
        let d4 = self.default_oif(true).await?;
        let d6 = if sel.want_v6 {
            self.default_oif(false).await?
        } else {
            None
        };
        underlay::select(sel, &ifaces, d4, d6)
    }

    async fn device_mac(&mut self, name: &str) -> anyhow::Result<Option<MacAddr>> {
        Ok(self
            .nl
            .link_by_name(name)
            .await?
            .filter(|l| l.kind.as_deref() == Some("vxlan"))
            .and_then(|l| l.mac))
    }

    async fn ensure_vxlan(&mut self, spec: &VxlanSpec) -> anyhow::Result<VxlanDevice> {
        let ctx = || format!("set up VXLAN device {}", spec.name);
        let mut mac = spec.mac;
        let existing = self.nl.link_by_name(&spec.name).await.with_context(ctx)?;
        let link = match existing {
            Some(l) if compatible(&l, spec) => l,
            Some(l) => {
                if l.kind.as_deref() != Some("vxlan") {
                    bail!("{} exists and is not a VXLAN device", spec.name);
                }
                // Another VNI, port or local address: recreate it, with
                // the MAC the other nodes know.
                tracing::warn!(device = %spec.name, "existing VXLAN device does not match the config; recreating it");
                mac = l.mac.unwrap_or(mac);
                self.nl.delete_link(l.index).await.with_context(ctx)?;
                self.create(spec, mac).await?
            }
            None => self.create(spec, mac).await?,
        };
        if link.mtu != spec.mtu {
            self.nl
                .set_mtu(link.index, spec.mtu)
                .await
                .with_context(ctx)?;
        }
        self.ensure_addr(link.index, spec.addr)
            .await
            .with_context(ctx)?;
        self.nl
            .set_link_up(link.index, true)
            .await
            .with_context(ctx)?;
        Ok(VxlanDevice {
            index: link.index,
            mac: link.mac.unwrap_or(mac),
        })
    }

    async fn programmed(&mut self, owner: &Ownership) -> anyhow::Result<Vec<Entry>> {
        let mut out = Vec::new();
        if !owner.devices.is_empty() {
            for n in self.nl.neighbours(None).await? {
                if let (true, true, Some(mac)) =
                    (owner.devices.contains(&n.index), n.permanent, n.mac)
                {
                    out.push(Entry::Neigh {
                        dev: n.index,
                        ip: n.ip,
                        mac,
                    });
                }
            }
            for f in self.nl.fdb_list(None).await? {
                if let (true, false, Some(dst)) =
                    (owner.devices.contains(&f.index), f.master, f.dst)
                {
                    out.push(Entry::Fdb {
                        dev: f.index,
                        mac: f.mac,
                        dst,
                    });
                }
            }
        }
        for r in self
            .nl
            .routes(RouteFilter::default().table(TABLE_MAIN))
            .await?
        {
            let Some(gw) = r.gateway else { continue };
            if owner.owns_route(&r.dst, Some(gw), r.oif) {
                out.push(Entry::Route {
                    dst: r.dst,
                    gw,
                    dev: r.oif,
                    onlink: r.onlink,
                });
            }
        }
        Ok(out)
    }

    async fn apply(&mut self, ops: &[Op]) -> anyhow::Result<Vec<(usize, String)>> {
        let mut b = RtBatch::new();
        for op in ops {
            match op {
                Op::Add(Entry::Neigh { dev, ip, mac }) => b.neigh_replace(*dev, *ip, *mac),
                Op::Del(Entry::Neigh { dev, ip, .. }) => b.neigh_del(*dev, *ip),
                Op::Add(Entry::Fdb { dev, mac, dst }) => {
                    b.fdb_replace(&Fdb::new(*dev, *mac).dst(*dst))
                }
                Op::Del(Entry::Fdb { dev, mac, dst }) => b.fdb_del(&Fdb::new(*dev, *mac).dst(*dst)),
                Op::Add(Entry::Route {
                    dst,
                    gw,
                    dev,
                    onlink,
                }) => b.route_replace(&route(*dst, *gw, *dev, *onlink)),
                Op::Del(Entry::Route { dst, gw, dev, .. }) => {
                    b.route_del(&route(*dst, *gw, *dev, false))
                }
            };
        }
        let report = self.batch.apply(&b).await?;
        Ok(report
            .failed
            .into_iter()
            .filter(|(i, e)| !(matches!(ops[*i], Op::Del(_)) && e.is_not_found()))
            .map(|(i, e)| (i, e.to_string()))
            .collect())
    }

    async fn set_masq(&mut self, rules: Option<&MasqRules>) -> anyhow::Result<()> {
        let rules = rules.cloned();
        self.ns
            .run_async(move || crate::masq::apply(rules.as_ref()))
            .await??;
        Ok(())
    }
}

impl KernelDataPlane {
    async fn create(&self, spec: &VxlanSpec, mac: MacAddr) -> anyhow::Result<plexus_netlink::Link> {
        let x = Vxlan::new(&spec.name, spec.vni)
            .local(spec.local)
            .port(spec.port)
            .underlay(spec.underlay)
            .learning(spec.learning)
            .mtu(spec.mtu)
            .mac(mac);
        let l = self
            .nl
            .create_vxlan(&x)
            .await
            .with_context(|| format!("create VXLAN device {}", spec.name))?;
        tracing::info!(device = %spec.name, vni = spec.vni, %mac, "created VXLAN device");
        Ok(l)
    }
}

fn route(dst: IpNet, gw: IpAddr, dev: Option<u32>, onlink: bool) -> Route {
    let mut r = Route::new(dst).via(gw);
    if let Some(d) = dev {
        r = r.dev(d);
    }
    if onlink {
        r = r.onlink();
    }
    r
}
