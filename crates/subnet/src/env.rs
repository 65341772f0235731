//! `subnet.env`: the lease file plexusd writes and plexus-vxlan reads, with
//! flannel's keys (`FLANNEL_NETWORK`, `FLANNEL_SUBNET` = first usable
//! address/len, `FLANNEL_MTU`, `FLANNEL_IPMASQ`, `FLANNEL_IPV6_NETWORK`,
//! `FLANNEL_IPV6_SUBNET`).
//!
//! SKELETON (issue 11, in progress): the type is the interface; rendering and
//! parsing are being written.

use ipnet::{Ipv4Net, Ipv6Net};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetEnv {
    pub network: Option<Ipv4Net>,
    /// The node's subnet with its first usable address (10.5.52.1/24).
    pub subnet: Option<Ipv4Net>,
    pub ipv6_network: Option<Ipv6Net>,
    pub ipv6_subnet: Option<Ipv6Net>,
    pub mtu: u32,
    pub ipmasq: bool,
}

impl SubnetEnv {
    /// The file's text (`KEY=value` lines).
    pub fn render(&self) -> String {
        unimplemented!("placeholder: subnet.env rendering is not written yet (issue 11)")
    }

    /// Parse the file's text.
    pub fn parse(text: &str) -> Result<SubnetEnv, crate::SubnetError> {
        let _ = text;
        Err(crate::SubnetError::Env(
            "placeholder: the subnet.env parser is not written yet (issue 11)".into(),
        ))
    }
}
