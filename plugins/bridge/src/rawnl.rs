//! The two netlink operations plexus-netlink does not wrap: setting a link's
//! alias (IFLA_IFALIAS) and finding links by alias. The host veth carries an
//! alias naming its attachment, so DEL can find and remove it even when the
//! pod netns is already gone.

use futures::StreamExt;
use plexus_netlink::rtnetlink::packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use plexus_netlink::rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use plexus_netlink::rtnetlink::packet_route::RouteNetlinkMessage;
use plexus_netlink::Netlink;

/// The alias a host veth gets: which attachment it belongs to.
pub fn veth_alias(container_id: &str, ifname: &str) -> String {
    format!("plexus-bridge:{container_id}:{ifname}")
}

async fn exchange(
    nl: &Netlink,
    msg: RouteNetlinkMessage,
    flags: u16,
) -> Result<Vec<RouteNetlinkMessage>, String> {
    let mut req = NetlinkMessage::from(msg);
    req.header.flags = flags;
    let mut h = nl.rtnetlink().clone();
    let mut stream = h.request(req).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    while let Some(m) = stream.next().await {
        match m.payload {
            NetlinkPayload::InnerMessage(i) => out.push(i),
            NetlinkPayload::Error(e) => {
                if let Some(code) = e.code {
                    return Err(std::io::Error::from_raw_os_error(code.get().abs()).to_string());
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Sets IFLA_IFALIAS on a link.
pub async fn set_alias(nl: &Netlink, index: u32, alias: &str) -> Result<(), String> {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.attributes.push(LinkAttribute::IfAlias(alias.to_string()));
    exchange(
        nl,
        RouteNetlinkMessage::SetLink(m),
        NLM_F_REQUEST | NLM_F_ACK,
    )
    .await
    .map(|_| ())
    .map_err(|e| format!("set alias on link #{index}: {e}"))
}

/// Indexes of the links whose alias is `alias`.
pub async fn links_with_alias(nl: &Netlink, alias: &str) -> Result<Vec<u32>, String> {
    let msgs = exchange(
        nl,
        RouteNetlinkMessage::GetLink(LinkMessage::default()),
        NLM_F_REQUEST | NLM_F_DUMP,
    )
    .await
    .map_err(|e| format!("list links: {e}"))?;
    Ok(msgs
        .iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => l
                .attributes
                .iter()
                .any(|a| matches!(a, LinkAttribute::IfAlias(s) if s == alias))
                .then_some(l.header.index),
            _ => None,
        })
        .collect())
}
