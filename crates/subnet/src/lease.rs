//! A node's subnet lease: key `<ip>-<len>[&<ip6>-<len6>]` under
//! `<prefix>/subnets/`, value flannel's `LeaseAttrs` JSON.
//!
//! SKELETON (issue 11, in progress): the types are the interface; the key and
//! JSON codecs are being written.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

/// One node's lease as the overlay sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The IPv4 subnet (absent in an IPv6-only network).
    pub subnet: Option<Ipv4Net>,
    /// The IPv6 subnet, when the network has one.
    pub subnet6: Option<Ipv6Net>,
    pub attrs: LeaseAttrs,
}

/// flannel's `LeaseAttrs`: `{"PublicIP":"…","PublicIPv6":null,
/// "BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"…"},
/// "BackendV6Data":…}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseAttrs {
    pub public_ip: Option<Ipv4Addr>,
    pub public_ipv6: Option<Ipv6Addr>,
    pub backend_type: String,
    pub backend_data: Option<VxlanBackendData>,
    pub backend_v6_data: Option<VxlanBackendData>,
}

/// The vxlan backend's part of a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanBackendData {
    pub vni: u32,
    /// The VTEP's MAC, `aa:bb:cc:dd:ee:ff`.
    pub vtep_mac: [u8; 6],
}

impl Lease {
    /// The key under `<prefix>/subnets/`: `10.5.52.0-24`, `10.5.52.0-24&fc00::-64`.
    pub fn key(&self) -> String {
        unimplemented!("placeholder: lease keys are not written yet (issue 11)")
    }

    /// A lease from its key (the part after `<prefix>/subnets/`) and value.
    pub fn from_kv(key: &str, value: &[u8]) -> Result<Lease, crate::SubnetError> {
        let _ = value;
        Err(crate::SubnetError::Lease {
            key: key.into(),
            reason: "placeholder: the lease codec is not written yet (issue 11)".into(),
        })
    }
}

impl LeaseAttrs {
    /// The value JSON, exactly as flanneld writes it.
    pub fn to_json(&self) -> String {
        unimplemented!("placeholder: the lease codec is not written yet (issue 11)")
    }
}
