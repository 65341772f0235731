//! The cluster-IPAM requests (`plexus-cluster-ipam`, an IPAM plugin for any
//! network): addresses unique across the cluster, from ranges the plugin's
//! config names (whereabouts' keys), served from the agent's blocks.
//!
//! The plugin parses and checks the config; the agent gets the ranges as
//! values ([`ClusterRange`]), so it never reads a CNI config itself.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::cidr::Cidr;
use crate::proto::AttachmentKey;

/// One range to allocate from: whereabouts' `range` (its CIDR, host bits
/// cleared), `range_start`, `range_end`, `exclude` and the `gateway`
/// (never handed out). The network and broadcast addresses are never given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRange {
    pub range: Cidr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_start: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_end: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<Cidr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
}

/// The pod an attachment belongs to (`CNI_ARGS` `K8S_POD_*`), as far as
/// the runtime said; recorded beside the address for operators and for a
/// reconciler that goes by UID.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRef {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
}

impl PodRef {
    pub fn is_empty(&self) -> bool {
        self.namespace.is_empty() && self.name.is_empty() && self.uid.is_empty()
    }
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// `cluster_ipam_allocate`: one address per range for one attachment;
/// answered with [`ClusterAllocation`]. Asking again for the same
/// attachment (container ID and interface) gives the same addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterAllocate {
    /// The CNI network name (the config's `name`): CNI GC goes by it.
    pub network: String,
    pub container_id: String,
    pub ifname: String,
    /// whereabouts' `network_name`: the same range on separate L2 domains
    /// is allocated independently under different names ("" = the default).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub network_name: String,
    /// whereabouts' `enable_overlapping_ranges` (default true): ranges that
    /// overlap never give one address twice; false keeps this range apart.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub overlapping: bool,
    pub ranges: Vec<ClusterRange>,
    /// Requested addresses (CNI `ips`): each inside one of the ranges,
    /// given only if free.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requested: Vec<IpAddr>,
    #[serde(default, skip_serializing_if = "PodRef::is_empty")]
    pub pod: PodRef,
    /// The block size (prefix length) a new IPv4 / IPv6 address space is cut
    /// into; `None`: the agent's default for the range. A space keeps the
    /// size it was created with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size_v4: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size_v6: Option<u8>,
}

/// `cluster_ipam_release`: frees every cluster-IPAM address the attachment
/// holds (nothing is not an error); answered with [`crate::Released`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRelease {
    pub network: String,
    pub container_id: String,
    pub ifname: String,
}

/// `cluster_ipam_gc`: frees this node's addresses of `network` whose
/// attachment is not in `valid` (CNI GC), borrowed ones included; answered
/// with [`crate::GcDone`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterGc {
    pub network: String,
    pub valid: Vec<AttachmentKey>,
}

/// `cluster_ipam_check`: what the attachment holds now, allocating nothing
/// (CNI CHECK); answered with [`ClusterAllocation`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterCheck {
    pub network: String,
    pub container_id: String,
    pub ifname: String,
}

/// One address given: with its range's prefix length (`192.168.2.5/24`),
/// the gateway of that range, and the range it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterIp {
    pub address: Cidr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    pub range: Cidr,
}

/// The answer to [`ClusterAllocate`] and [`ClusterCheck`]: the addresses in
/// the order of the request's ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterAllocation {
    pub ips: Vec<ClusterIp>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Answer, Request};
    use serde_json::json;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn allocate() -> ClusterAllocate {
        ClusterAllocate {
            network: "macvlan-net".into(),
            container_id: "c1".into(),
            ifname: "net1".into(),
            network_name: "blue".into(),
            overlapping: false,
            ranges: vec![
                ClusterRange {
                    range: cidr("192.168.2.0/24"),
                    range_start: Some("192.168.2.10".parse().unwrap()),
                    range_end: Some("192.168.2.100".parse().unwrap()),
                    exclude: vec![cidr("192.168.2.16/28")],
                    gateway: Some("192.168.2.1".parse().unwrap()),
                },
                ClusterRange {
                    range: cidr("fd00:2::/64"),
                    range_start: None,
                    range_end: None,
                    exclude: Vec::new(),
                    gateway: None,
                },
            ],
            requested: vec!["192.168.2.50".parse().unwrap()],
            pod: PodRef {
                namespace: "default".into(),
                name: "web-0".into(),
                uid: "8c9e1f4a".into(),
            },
            block_size_v4: Some(29),
            block_size_v6: None,
        }
    }

    #[test]
    fn every_request_survives_the_wire() {
        let reqs = [
            Request::ClusterIpamAllocate(allocate()),
            Request::ClusterIpamRelease(ClusterRelease {
                network: "n".into(),
                container_id: "c".into(),
                ifname: "net1".into(),
            }),
            Request::ClusterIpamGc(ClusterGc {
                network: "n".into(),
                valid: vec![AttachmentKey {
                    container_id: "c".into(),
                    ifname: "net1".into(),
                }],
            }),
            Request::ClusterIpamCheck(ClusterCheck {
                network: "n".into(),
                container_id: "c".into(),
                ifname: "net1".into(),
            }),
        ];
        for r in reqs {
            let back: Request = serde_json::from_slice(&r.to_line()).unwrap();
            assert_eq!(back, r);
        }
    }

    #[test]
    fn defaults_on_the_wire() {
        // The fewest keys: the default network name, overlapping ranges
        // protected, nothing requested, no pod known.
        let r: Request = serde_json::from_value(json!({
            "command": "cluster_ipam_allocate", "network": "n", "container_id": "c",
            "ifname": "net1", "ranges": [{"range": "10.0.0.0/28"}]
        }))
        .unwrap();
        let Request::ClusterIpamAllocate(a) = &r else {
            panic!("{r:?}")
        };
        assert!(a.overlapping);
        assert_eq!(a.network_name, "");
        assert!(a.requested.is_empty() && a.pod.is_empty());
        assert_eq!(a.ranges[0].range.to_string(), "10.0.0.0/28");
        // And nothing but those keys goes out for it.
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"command": "cluster_ipam_allocate", "network": "n", "container_id": "c",
                   "ifname": "net1", "ranges": [{"range": "10.0.0.0/28"}]})
        );
        let mut off = a.clone();
        off.overlapping = false;
        let v = serde_json::to_value(Request::ClusterIpamAllocate(off)).unwrap();
        assert_eq!(v["overlapping"], false);
        // A malformed range is refused whole.
        assert!(serde_json::from_value::<Request>(json!({
            "command": "cluster_ipam_allocate", "network": "n", "container_id": "c",
            "ifname": "net1", "ranges": [{"range": "10.0.0.0"}]
        }))
        .is_err());
    }

    #[test]
    fn the_answer_round_trips() {
        let a = ClusterAllocation {
            ips: vec![ClusterIp {
                address: cidr("192.168.2.10/24"),
                gateway: Some("192.168.2.1".parse().unwrap()),
                range: cidr("192.168.2.0/24"),
            }],
        };
        let line = String::from_utf8(Answer::Ok(a.clone()).to_line()).unwrap();
        assert_eq!(
            Answer::<ClusterAllocation>::from_line(&line).unwrap(),
            Answer::Ok(a)
        );
        let e = Answer::<ClusterAllocation>::from_line(
            r#"{"error":"range 10.0.0.0/28 is exhausted","code":100}"#,
        )
        .unwrap();
        assert!(
            matches!(e, Answer::Err(ref e) if e.code == Some(100)),
            "{e:?}"
        );
    }
}
