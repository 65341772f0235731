//! The node side of an attachment: the bridge, the veth pair and its
//! bridge port (hairpin, isolation, VLANs), gateway addresses, the VLAN
//! gateway interface, forwarding.

use ipnet::IpNet;
use plexus_cni::{CniEnv, CniError};
use plexus_netlink::sysctl::{self, Write};
use plexus_netlink::{Bridge, BridgePortSettings, BridgeVlan, Link, MacAddr, Netlink, Netns, Veth};
use plexus_plugin::names::random_ifname;
use plexus_plugin::{netlink_ctx, netlink_err, owner};

use crate::config::{vlan_ranges, BridgeConf};

/// The alias the host veth carries: which attachment it belongs to.
pub fn veth_alias(env: &CniEnv) -> String {
    owner::alias(crate::PLUGIN, &env.container_id, &env.ifname)
}

/// What ADD created, for the result and for cleanup.
pub struct Wired {
    pub bridge: Link,
    pub host: Link,
    pub cont: Link,
}

/// Writes sysctls of the node's netns; `required` ones fail the call.
async fn node_sysctls(writes: &[Write], required: bool) -> Result<(), CniError> {
    let ns = Netns::current().map_err(netlink_err)?;
    for r in sysctl::set_many(&ns, writes).await.map_err(netlink_err)? {
        match r {
            Err(e) if required => return Err(netlink_ctx("failed to set a sysctl")(e)),
            Err(e) => tracing::debug!("best-effort sysctl: {e}"),
            Ok(()) => {}
        }
    }
    Ok(())
}

/// We own the routes of our interfaces: no router advertisements.
async fn no_accept_ra(ifname: &str) {
    let w = [Write::new(format!("net/ipv6/conf/{ifname}/accept_ra"), "0")];
    let _ = node_sysctls(&w, false).await;
}

/// Turns on forwarding for the family (a no-op when it is on).
pub async fn enable_forwarding(v4: bool) -> Result<(), CniError> {
    let name = if v4 {
        "net/ipv4/ip_forward"
    } else {
        "net/ipv6/conf/all/forwarding"
    };
    node_sysctls(&[Write::new(name, "1")], true)
        .await
        .map_err(|mut e| {
            e.msg = format!("failed to enable forwarding: {}", e.msg);
            e
        })
}

pub async fn ensure_bridge(host: &Netlink, conf: &BridgeConf) -> Result<Link, CniError> {
    let ctx = || format!("failed to create bridge {:?}", conf.bridge);
    let existing = host
        .link_by_name(&conf.bridge)
        .await
        .map_err(netlink_ctx(ctx()))?;
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
                Err(e) if e.is_exists() => {
                    host.link(&conf.bridge).await.map_err(netlink_ctx(ctx()))?
                }
                Err(e) => return Err(netlink_ctx(ctx())(e)),
            };
            no_accept_ra(&conf.bridge).await;
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
            .map_err(netlink_ctx(format!(
                "could not set promiscuous mode on {:?}",
                conf.bridge
            )))?;
    }
    if !br.admin_up {
        host.set_link_up(br.index, true)
            .await
            .map_err(netlink_ctx(ctx()))?;
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
        let name = random_ifname("veth");
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
            Err(e) => return Err(netlink_ctx("failed to make veth pair")(e)),
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
        .map_err(netlink_ctx(format!(
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
            .map_err(netlink_ctx(ctx("set hairpin/isolation")))?;
    }
    if (vlan != 0 || !trunk.is_empty()) && !preserve_default_vlan {
        let vlans = host
            .bridge_vlans(port.index)
            .await
            .map_err(netlink_ctx(ctx("list VLANs")))?;
        for v in vlans {
            host.bridge_vlan_del(port.index, &BridgeVlan::new(v.vid))
                .await
                .map_err(netlink_ctx(ctx("remove the default VLAN")))?;
        }
    }
    if vlan != 0 {
        host.bridge_vlan_add(port.index, &BridgeVlan::new(vlan).pvid().untagged())
            .await
            .map_err(netlink_ctx(ctx("set up the VLAN tag")))?;
    }
    for (first, last) in vlan_ranges(trunk) {
        let v = if first == last {
            BridgeVlan::new(first)
        } else {
            BridgeVlan::range(first, last)
        };
        host.bridge_vlan_add(port.index, &v)
            .await
            .map_err(netlink_ctx(ctx("set up trunk VLANs")))?;
    }
    if vlan == 0 && !trunk.is_empty() {
        host.bridge_vlan_add(port.index, &BridgeVlan::new(1).pvid().untagged())
            .await
            .map_err(netlink_ctx(ctx("set up the native VLAN")))?;
    }
    Ok(())
}

/// Bridge, veth pair (peer created in the pod netns), port settings.
pub async fn wire(
    conf: &BridgeConf,
    env: &CniEnv,
    host: &Netlink,
    pod: &Netlink,
    pod_ns: &Netns,
) -> Result<Wired, CniError> {
    let bridge = ensure_bridge(host, conf).await?;
    let hv = create_veth(host, &env.ifname, Some(pod_ns), conf.mtu, conf.mac).await?;
    let r = async {
        host.set_alias(hv.index, &veth_alias(env))
            .await
            .map_err(netlink_ctx(format!("failed to label {:?}", hv.name)))?;
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
            .map_err(netlink_ctx(format!("failed to set {:?} up", hv.name)))?;
        no_accept_ra(&hv.name).await;
        let cont = pod
            .link(&env.ifname)
            .await
            .map_err(netlink_ctx("failed to look up the container interface"))?;
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

/// Puts `gw` on `link` like the reference's ensureAddr.
pub async fn ensure_addr(
    host: &Netlink,
    link: &Link,
    gw: IpNet,
    force: bool,
) -> Result<(), CniError> {
    let v4 = gw.addr().is_ipv4();
    let addrs = host
        .addrs(Some(link.index))
        .await
        .map_err(netlink_ctx("could not get list of IP addresses"))?;
    for a in addrs.iter().filter(|a| a.net.addr().is_ipv4() == v4) {
        if a.net == gw {
            return Ok(());
        }
        if v4 || a.net.contains(&gw.addr()) || gw.contains(&a.net.addr()) {
            if force {
                host.addr_del(link.index, a.net)
                    .await
                    .map_err(netlink_ctx(format!(
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
            return Err(netlink_ctx(format!(
                "could not add IP address {gw} to {:?}",
                link.name
            ))(e))
        }
    }
    // Pin the bridge's MAC; otherwise it follows the lowest port MAC.
    if let Some(mac) = link.mac {
        host.set_mac(link.index, mac)
            .await
            .map_err(netlink_ctx("could not set bridge's mac"))?;
    }
    Ok(())
}

/// The `<bridge>.<vlan>` gateway interface: a veth whose random end is a
/// VLAN access port of the bridge.
pub async fn ensure_vlan_interface(
    host: &Netlink,
    br: &Link,
    conf: &BridgeConf,
) -> Result<Link, CniError> {
    let name = conf.vlan_iface_name();
    if let Some(l) = host
        .link_by_name(&name)
        .await
        .map_err(netlink_ctx(format!("failed to find interface {name:?}")))?
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
            .map_err(netlink_ctx(format!("failed to set {:?} up", port.name)))?;
        let gw = host
            .link(&name)
            .await
            .map_err(netlink_ctx(format!("failed to lookup {name:?}")))?;
        host.set_link_up(gw.index, true)
            .await
            .map_err(netlink_ctx(format!("failed to up {name:?}")))?;
        Ok::<_, CniError>(gw)
    }
    .await;
    if r.is_err() {
        let _ = host.delete_link(port.index).await;
    }
    r
}
