//! CHECK: the bridge, the veth pair and the pod interface named in
//! prevResult are still there and still wired as ADD left them; addresses
//! and routes through the shared check.

use plexus_cni::plugin::Request;
use plexus_cni::{CniError, CniResult, Interface};
use plexus_netlink::{Link, MacAddr, Netlink, Netns};
use plexus_plugin::netlink_err;

use crate::config::BridgeConf;

fn failed(msg: impl Into<String>) -> CniError {
    CniError::kernel(msg)
}

/// True when prevResult's MAC (if it recorded one) is the link's.
pub fn mac_matches(recorded: &str, have: Option<MacAddr>) -> bool {
    recorded.is_empty() || have.is_some_and(|m| recorded.eq_ignore_ascii_case(&m.to_string()))
}

fn mac_string(l: &Link) -> String {
    l.mac.map(|m| m.to_string()).unwrap_or_default()
}

/// Where prevResult lists the bridge and the pod interface.
#[derive(Debug, PartialEq, Eq)]
pub struct Located {
    pub bridge: usize,
    pub cont: usize,
}

/// Finds the bridge (on the node) and the pod interface (in `sandbox`) in
/// prevResult, with the reference's messages.
pub fn locate(
    prev: &CniResult,
    bridge: &str,
    ifname: &str,
    sandbox: &str,
) -> Result<Located, CniError> {
    let br = prev
        .interfaces
        .iter()
        .position(|i| i.name == bridge)
        .ok_or_else(|| {
            failed(format!(
                "CNI created bridge {bridge} in host namespace was not found"
            ))
        })?;
    if !prev.interfaces[br].sandbox.is_empty() {
        return Err(failed(format!(
            "Interface {bridge} should not be in sandbox"
        )));
    }
    let cont = prev
        .interfaces
        .iter()
        .position(|i| i.name == ifname && i.sandbox == sandbox)
        .ok_or_else(|| {
            failed(format!(
                "Sandbox in prevResult doesn't match configured netns: {sandbox}"
            ))
        })?;
    Ok(Located { bridge: br, cont })
}

/// The node-side interfaces of prevResult other than the bridge: the host
/// veth is one of them.
pub fn host_candidates<'a>(prev: &'a CniResult, at: &Located) -> Vec<&'a Interface> {
    prev.interfaces
        .iter()
        .enumerate()
        .filter(|(i, intf)| *i != at.bridge && *i != at.cont && intf.sandbox.is_empty())
        .map(|(_, intf)| intf)
        .collect()
}

pub async fn check(
    req: &Request<'_>,
    conf: &BridgeConf,
    pod_ns: &Netns,
    prev: &CniResult,
) -> Result<(), CniError> {
    let env = req.env;
    let sandbox = req.netns()?.display().to_string();
    let host_ns = Netns::current().map_err(netlink_err)?;
    let (host, pod) =
        tokio::try_join!(Netlink::open(&host_ns), Netlink::open(pod_ns)).map_err(netlink_err)?;
    let at = locate(prev, &conf.bridge, &env.ifname, &sandbox)?;

    let br_if = &prev.interfaces[at.bridge];
    let br = host
        .link_by_name(&br_if.name)
        .await
        .map_err(netlink_err)?
        .ok_or_else(|| failed(format!("Interface name {} not found", br_if.name)))?;
    if br.kind.as_deref() != Some("bridge") {
        return Err(failed(format!(
            "Interface {} does not have link type of bridge",
            br.name
        )));
    }
    if !mac_matches(&br_if.mac, br.mac) {
        return Err(failed(format!(
            "Bridge interface {} Mac doesn't match: {}",
            br.name, br_if.mac
        )));
    }
    if br.promisc != conf.promisc {
        return Err(failed(format!(
            "Bridge interface {} configured Promisc Mode {} doesn't match current state: {}",
            br.name, conf.promisc, br.promisc
        )));
    }

    let cont_if = &prev.interfaces[at.cont];
    let cont = pod
        .link_by_name(&env.ifname)
        .await
        .map_err(netlink_err)?
        .ok_or_else(|| {
            failed(format!(
                "CNI created interface in container {} not found",
                env.ifname
            ))
        })?;
    if cont.kind.as_deref() != Some("veth") {
        return Err(failed(format!(
            "Error: Container interface {} not of type veth",
            cont.name
        )));
    }
    if !mac_matches(&cont_if.mac, cont.mac) {
        return Err(failed(format!(
            "Interface {} Mac {} doesn't match container Mac: {}",
            cont.name,
            cont_if.mac,
            mac_string(&cont)
        )));
    }

    // The host veth: peer of the container interface, port of the bridge.
    let mut veth_found = false;
    for intf in host_candidates(prev, &at) {
        let Some(l) = host.link_by_name(&intf.name).await.map_err(netlink_err)? else {
            return Err(failed(format!("Interface name {} not found", intf.name)));
        };
        if l.kind.as_deref() != Some("veth")
            || Some(l.index) != cont.link
            || l.link != Some(cont.index)
            || l.master != Some(br.index)
        {
            continue;
        }
        if !mac_matches(&intf.mac, l.mac) {
            return Err(failed(format!(
                "Interface {} Mac doesn't match: {} not found",
                intf.name, intf.mac
            )));
        }
        veth_found = true;
        break;
    }
    if !veth_found {
        return Err(failed(format!(
            "CNI veth created for bridge {} was not found",
            conf.bridge
        )));
    }
    plexus_plugin::check::addrs_and_routes(&pod, &cont, prev, at.cont).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str, sandbox: &str) -> Interface {
        Interface {
            name: name.into(),
            sandbox: sandbox.into(),
            ..Default::default()
        }
    }

    fn prev() -> CniResult {
        CniResult {
            interfaces: vec![
                iface("cni0", ""),
                iface("veth1234abcd", ""),
                iface("eth0", "/var/run/netns/p"),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn locates_bridge_and_pod_interface() {
        let at = locate(&prev(), "cni0", "eth0", "/var/run/netns/p").unwrap();
        assert_eq!(at, Located { bridge: 0, cont: 2 });
        let p = prev();
        let names: Vec<_> = host_candidates(&p, &at)
            .iter()
            .map(|i| i.name.as_str())
            .collect();
        assert_eq!(names, ["veth1234abcd"]);
    }

    #[test]
    fn missing_or_misplaced_entries_are_named() {
        let e = locate(&prev(), "br9", "eth0", "/var/run/netns/p").unwrap_err();
        assert!(e.msg.contains("bridge br9"), "{}", e.msg);
        let e = locate(&prev(), "cni0", "eth0", "/var/run/netns/other").unwrap_err();
        assert!(
            e.msg.contains("doesn't match configured netns"),
            "{}",
            e.msg
        );
        let mut p = prev();
        p.interfaces[0].sandbox = "/var/run/netns/p".into();
        let e = locate(&p, "cni0", "eth0", "/var/run/netns/p").unwrap_err();
        assert!(e.msg.contains("should not be in sandbox"), "{}", e.msg);
        assert_eq!(e.code, 100);
    }

    #[test]
    fn macs_compare_case_insensitively_when_recorded() {
        let m = MacAddr([2, 0xab, 0, 0, 0, 1]);
        assert!(mac_matches("", None));
        assert!(mac_matches("02:AB:00:00:00:01", Some(m)));
        assert!(!mac_matches("02:ab:00:00:00:02", Some(m)));
        assert!(!mac_matches("02:ab:00:00:00:01", None));
    }
}
