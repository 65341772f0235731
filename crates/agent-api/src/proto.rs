//! The messages. A request names its command in `"command"`; the agent's
//! existing `{"command":"status"}` is [`Request::Status`], so every client
//! and the agent share this one enum.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::cidr::Cidr;
use crate::clusteripam::{ClusterAllocate, ClusterCheck, ClusterGc, ClusterRelease};
use crate::policy::{PolicyAttach, PolicyDetach, PolicyShow};

/// The route protocol number (RTPROT) of the node's routes to its pods
/// (`ip route ... proto 112`): the agent tells the routes of local pods
/// from its BGP routes, and from everyone else's, by it. 112 is not in
/// iproute2's `rt_protos` list nor used by BIRD (12), FRR (186-192) or
/// Calico (80).
pub const ROUTE_PROTOCOL_POD: u8 = 112;

/// Longest line either side reads: a bound, not an expected size.
pub const MAX_LINE: u64 = 1 << 20;

/// One attachment, as CNI names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AttachmentKey {
    pub container_id: String,
    pub ifname: String,
}

/// What a client asks. The answer to each is named on the variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    /// The agent's status document; answered with [`Status`].
    Status,
    /// Addresses for one attachment from the node's blocks (one per family
    /// the pool has); answered with [`Allocation`]. Asking again for the
    /// same attachment returns the addresses it already holds.
    Allocate {
        /// The CNI network name (the config's `name`).
        network: String,
        container_id: String,
        ifname: String,
        /// The pool's name or CIDR; `None`: the agent's default pool(s).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pool: Option<String>,
        /// Requested addresses (CNI `ips`), at most one per family: given
        /// instead of the next free ones; empty: the next free ones.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        addresses: Vec<std::net::IpAddr>,
    },
    /// Frees whatever the attachment holds (nothing is not an error);
    /// answered with [`Released`].
    Release {
        network: String,
        container_id: String,
        ifname: String,
    },
    /// Frees the addresses of every attachment of `network` not in
    /// `valid` (CNI GC); answered with [`GcDone`].
    Gc {
        network: String,
        valid: Vec<AttachmentKey>,
    },
    /// The node's BGP sessions (`plexusctl bgp status`); answered with
    /// [`BgpStatus`].
    BgpStatus,
    /// The paths the node's BGP speaker received, with their verdicts
    /// (`plexusctl bgp routes`); answered with [`crate::BgpRoutes`].
    BgpRoutes(crate::BgpRoutesQuery),
    /// Cluster IPAM (`plexus-cluster-ipam`): addresses for one attachment
    /// from whereabouts-style ranges; see [`crate::clusteripam`].
    ClusterIpamAllocate(ClusterAllocate),
    ClusterIpamRelease(ClusterRelease),
    ClusterIpamGc(ClusterGc),
    ClusterIpamCheck(ClusterCheck),
    /// Network policy (the meta plugin, `plexusctl policy show`); see
    /// [`crate::policy`].
    PolicyAttach(PolicyAttach),
    PolicyDetach(PolicyDetach),
    PolicyShow(PolicyShow),
}

impl Request {
    /// Whether the request is one of the cluster-IPAM commands (served by
    /// the cluster-IPAM handler whatever network model the node runs).
    pub fn is_cluster_ipam(&self) -> bool {
        matches!(
            self,
            Request::ClusterIpamAllocate(_)
                | Request::ClusterIpamRelease(_)
                | Request::ClusterIpamGc(_)
                | Request::ClusterIpamCheck(_)
        )
    }
}

impl Request {
    /// Whether the request is one of the network-policy commands.
    pub fn is_policy(&self) -> bool {
        matches!(
            self,
            Request::PolicyAttach(_) | Request::PolicyDetach(_) | Request::PolicyShow(_)
        )
    }

    /// The container IDs the request carries (each one is stored in the
    /// records it changes): the agent refuses one beyond
    /// [`crate::MAX_CONTAINER_ID`] with code 4.
    pub fn container_ids(&self) -> Vec<&str> {
        match self {
            Request::Allocate { container_id, .. } | Request::Release { container_id, .. } => {
                vec![container_id]
            }
            Request::ClusterIpamAllocate(a) => vec![&a.container_id],
            Request::ClusterIpamRelease(r) => vec![&r.container_id],
            Request::ClusterIpamCheck(c) => vec![&c.container_id],
            Request::PolicyAttach(a) => vec![&a.container_id],
            Request::PolicyDetach(d) => vec![&d.container_id],
            Request::Gc { valid, .. } | Request::ClusterIpamGc(crate::ClusterGc { valid, .. }) => {
                valid.iter().map(|k| k.container_id.as_str()).collect()
            }
            Request::Status
            | Request::BgpStatus
            | Request::BgpRoutes(_)
            | Request::PolicyShow(_) => Vec::new(),
        }
    }

    /// The command's name on the wire (`allocate`, `cluster_ipam_gc`), for
    /// logs.
    pub fn command(&self) -> &'static str {
        match self {
            Request::Status => "status",
            Request::Allocate { .. } => "allocate",
            Request::Release { .. } => "release",
            Request::Gc { .. } => "gc",
            Request::BgpStatus => "bgp_status",
            Request::BgpRoutes(_) => "bgp_routes",
            Request::ClusterIpamAllocate(_) => "cluster_ipam_allocate",
            Request::ClusterIpamRelease(_) => "cluster_ipam_release",
            Request::ClusterIpamGc(_) => "cluster_ipam_gc",
            Request::ClusterIpamCheck(_) => "cluster_ipam_check",
            Request::PolicyAttach(_) => "policy_attach",
            Request::PolicyDetach(_) => "policy_detach",
            Request::PolicyShow(_) => "policy_show",
        }
    }

    /// The request as it goes on the wire: JSON and a newline.
    pub fn to_line(&self) -> Vec<u8> {
        to_line(self)
    }
}

/// The answer to [`Request::Allocate`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    /// The pod's addresses with the prefix length it gets (`/32`, `/128`).
    pub addresses: Vec<Cidr>,
    /// The CIDRs of the routed pools: a pod attached as a secondary
    /// network gets routes to these instead of a default route.
    #[serde(default)]
    pub pools: Vec<Cidr>,
    /// The MTU the pod's interface should have when its config names
    /// none: the tunnel's, when the pool's traffic may go through IP-in-IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

/// The answer to [`Request::Release`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Released {
    /// How many addresses were freed (0 when the attachment held none).
    pub released: usize,
}

/// The answer to [`Request::Gc`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcDone {
    pub released: usize,
}

/// The answer to [`Request::BgpStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpStatus {
    /// This node's router ID and AS.
    pub router_id: String,
    pub asn: u32,
    pub peers: Vec<BgpPeer>,
}

/// One BGP neighbour as `calicoctl node status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpPeer {
    pub address: String,
    pub asn: u32,
    /// "node-to-node mesh", "global", "node specific", "route reflector
    /// client" or "route reflector".
    #[serde(rename = "type")]
    pub kind: String,
    /// The RFC 4271 state (`Established`, `Active`, ...).
    pub state: String,
    /// Seconds since the Unix epoch of the last state change.
    pub since: u64,
    /// The last error, or prefix counts when established.
    pub info: String,
    pub prefixes_received: usize,
    pub prefixes_sent: usize,
    /// Of those received: taking part in route selection, and refused by
    /// the import guard (martian, the node's own subnets or addresses,
    /// pools from outside) or by a filter.
    #[serde(default)]
    pub prefixes_accepted: usize,
    #[serde(default)]
    pub prefixes_rejected: usize,
    /// The rejected ones by stage: the node's guard, the peer's filters.
    #[serde(default)]
    pub prefixes_rejected_by_guard: usize,
    #[serde(default)]
    pub prefixes_rejected_by_filter: usize,
    /// The BFD session's state (`Up`, `Down`, `Init`, `AdminDown`), when
    /// BFD is on for the peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd: Option<String>,
    /// The last error (a wrong or missing TCP MD5 password says so here),
    /// and anything of the peer's settings that could not be applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The answer to [`Request::Status`]: the agent's whole status document;
/// a client that only needs readiness reads `ready`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub ready: bool,
    #[serde(flatten)]
    pub rest: serde_json::Map<String, serde_json::Value>,
}

/// A refused or failed request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentError {
    pub error: String,
    /// The CNI error code the client should report (11 while the agent is
    /// not ready, 102 when the pool is exhausted); `None`: a failure of the
    /// agent, which plugins report as a delegate failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u32>,
}

impl std::fmt::Display for AgentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.error)
    }
}

impl std::error::Error for AgentError {}

/// An answer line: the command's object, or an error (an object with
/// `"error"`, tried first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Answer<T> {
    Err(AgentError),
    Ok(T),
}

impl<T: Serialize> Answer<T> {
    pub fn to_line(&self) -> Vec<u8> {
        to_line(self)
    }
}

impl<T: DeserializeOwned> Answer<T> {
    pub fn from_line(line: &str) -> Result<Answer<T>, serde_json::Error> {
        serde_json::from_str(line)
    }
}

fn to_line<T: Serialize + ?Sized>(v: &T) -> Vec<u8> {
    // Serialising these types cannot fail: string keys, no maps of other keys.
    let mut out = serde_json::to_vec(v).unwrap_or_default();
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_is_the_agents_existing_request() {
        let r: Request = serde_json::from_str(r#"{"command":"status"}"#).unwrap();
        assert_eq!(r, Request::Status);
        assert_eq!(r.to_line(), b"{\"command\":\"status\"}\n");
    }

    #[test]
    fn requests_on_the_wire() {
        let a = Request::Allocate {
            network: "routed".into(),
            container_id: "c1".into(),
            ifname: "eth0".into(),
            pool: None,
            addresses: Vec::new(),
        };
        assert_eq!(
            serde_json::to_value(&a).unwrap(),
            json!({"command":"allocate","network":"routed","container_id":"c1","ifname":"eth0"})
        );
        let gc = Request::Gc {
            network: "routed".into(),
            valid: vec![AttachmentKey {
                container_id: "c1".into(),
                ifname: "eth0".into(),
            }],
        };
        let back: Request = serde_json::from_slice(&gc.to_line()).unwrap();
        assert_eq!(back, gc);
        assert!(serde_json::from_str::<Request>(r#"{"command":"reboot"}"#).is_err());
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"command":"bgp_status"}"#).unwrap(),
            Request::BgpStatus
        );
    }

    #[test]
    fn answers_tell_errors_apart() {
        let ok: Answer<Allocation> = Answer::from_line(
            r#"{"addresses":["10.244.1.5/32","fd00::5/128"],"pools":["10.244.0.0/16"]}"#,
        )
        .unwrap();
        let Answer::Ok(a) = ok else { panic!("{ok:?}") };
        assert_eq!(a.addresses[1].to_string(), "fd00::5/128");
        let err: Answer<Allocation> =
            Answer::from_line(r#"{"error":"not ready","code":11}"#).unwrap();
        assert_eq!(
            err,
            Answer::Err(AgentError {
                error: "not ready".into(),
                code: Some(11)
            })
        );
        // An error is an error even for an answer whose fields all default.
        let err: Answer<Released> = Answer::from_line(r#"{"error":"x"}"#).unwrap();
        assert!(matches!(err, Answer::Err(_)));
        // The agent's status document, whatever else it holds.
        let st: Answer<Status> =
            Answer::from_line(r#"{"node_name":"n1","ready":true,"leases":3}"#).unwrap();
        let Answer::Ok(st) = st else { panic!() };
        assert!(st.ready);
        assert_eq!(st.rest["node_name"], "n1");
    }
}
