//! The node agent's socket protocol: what plexusd serves on
//! `<run-dir>/plexusd.sock`, written once for the agent and its clients
//! (`plexus-bgp-routes`' block IPAM, `plexusctl node status`).
//!
//! Framing: one connection per call; the client writes one JSON
//! [`Request`] line, the agent answers one JSON line and closes. The
//! request is tagged by `"command"` (`{"command":"status"}` is the
//! agent's status query); the answer is the command's own object
//! ([`Allocation`], [`Released`], [`Status`]) or an [`AgentError`]
//! (`{"error": ...}`), told apart by [`Answer`].
//!
//! * [`cidr`]: an address with its prefix length, as the messages carry it;
//! * [`proto`]: the messages, and the route protocol number of pod routes;
//! * [`clusteripam`]: the payloads of the cluster-IPAM commands;
//! * [`policy`]: network policy's attach, detach and show, the marker file;
//! * [`client`]: a blocking client with a bounded timeout.
//!
//! Only serde, serde_json, std and plexus-cni (for the container-ID limit;
//! every CNI plugin links it already): a CNI plugin links this crate.

pub mod bgproutes;
pub mod cidr;
pub mod client;
pub mod clusteripam;
pub mod policy;
pub mod proto;

pub use bgproutes::{BgpRoute, BgpRoutes, BgpRoutesQuery};
pub use cidr::Cidr;
pub use client::{call, ClientError, DEFAULT_TIMEOUT, SOCKET_NAME};
pub use clusteripam::{
    ClusterAllocate, ClusterAllocation, ClusterCheck, ClusterGc, ClusterIp, ClusterRange,
    ClusterRelease, PodRef,
};
/// The longest container ID a request may carry (bytes): the limit
/// plexus-cni applies to CNI_CONTAINERID (code 4 beyond it), one rule for
/// the plugins and the agent's socket.
pub use plexus_cni::validate::MAX_CONTAINER_ID_LEN as MAX_CONTAINER_ID;
pub use proto::{
    AgentError, Allocation, Answer, AttachmentKey, BgpPeer, BgpStatus, GcDone, Released, Request,
    Status, MAX_LINE, ROUTE_PROTOCOL_POD,
};
