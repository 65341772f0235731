//! flannel's network config (`<prefix>/config`).
//!
//! SKELETON (issue 11, in progress): the types are the interface the agent
//! and the store are written against; parsing is being written.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

/// The parsed, defaulted and validated network config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// `EnableIPv4` (default true when `Network` is set).
    pub enable_ipv4: bool,
    /// `EnableIPv6`.
    pub enable_ipv6: bool,
    /// `Network`.
    pub network: Option<Ipv4Net>,
    /// `SubnetLen`: default 24, or network prefix + 2 when the network is
    /// smaller than a /22, as flannel does.
    pub subnet_len: u8,
    /// `SubnetMin` / `SubnetMax`: default the second and the last subnet.
    pub subnet_min: Option<Ipv4Addr>,
    pub subnet_max: Option<Ipv4Addr>,
    /// `IPv6Network`, `IPv6SubnetLen` (default 64), `IPv6SubnetMin/Max`.
    pub ipv6_network: Option<Ipv6Net>,
    pub ipv6_subnet_len: u8,
    pub ipv6_subnet_min: Option<Ipv6Addr>,
    pub ipv6_subnet_max: Option<Ipv6Addr>,
    /// `Backend`.
    pub backend: Backend,
}

/// `Backend.Type` and its keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    Vxlan(VxlanConfig),
    HostGw,
}

impl Backend {
    /// The `BackendType` string leases carry (`vxlan`, `host-gw`).
    pub fn type_name(&self) -> &'static str {
        match self {
            Backend::Vxlan(_) => "vxlan",
            Backend::HostGw => "host-gw",
        }
    }
}

/// The vxlan backend's keys, defaulted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanConfig {
    /// `VNI`, default 1.
    pub vni: u32,
    /// `Port`, default 8472 (the Linux default, not IANA's 4789, as flannel).
    pub port: u16,
    /// `MTU`; `None` = underlay MTU - 50 (IPv4) / - 70 (IPv6).
    pub mtu: Option<u32>,
    /// `DirectRouting`: a node on the same L2 gets a plain route.
    pub direct_routing: bool,
    /// `Learning`: off by default; entries are static.
    pub learning: bool,
}

impl NetworkConfig {
    /// Parse, default and validate flannel's config JSON.
    pub fn parse(json: &[u8]) -> Result<NetworkConfig, crate::SubnetError> {
        let _ = json;
        Err(crate::SubnetError::Config(
            "placeholder: the config parser is not written yet (issue 11)".into(),
        ))
    }
}
