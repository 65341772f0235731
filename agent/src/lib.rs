//! plexusd, the Plexus node agent, as a library: the binary (`main.rs`)
//! parses flags and wires these parts together; tests use them directly.
//!
//! - [`dataplane`]: the one component that writes to the kernel: producers
//!   hand it entries, it diffs them against what the kernel holds of ours,
//!   applies the difference in batches and repairs drift.
//! - [`overlay`]: start-up and the control loop of the flannel-style
//!   overlay: leases from [`plexus_subnet::registry::LeaseRegistry`] → desired
//!   entries → diff against the kernel → ordered changes.
//! - [`routed`]: the calico-style routed network (block IPAM on the
//!   control socket, blackholes, the BGP speaker and its routes), chosen
//!   when the store holds a routed pool.
//! - [`clusteripam`]: cluster IPAM for any network (plexus-cluster-ipam's
//!   requests on the control socket), whatever else the node runs.
//! - [`policy`]: network policy (NetworkPolicy, MultiNetworkPolicy): the
//!   API's objects and the meta plugin's attachments → one nftables table
//!   per pod interface in the pod's namespace, as data plane entries.
//! - [`underlay`]: choosing the public interface and address.
//! - [`masq`]: flannel's masquerade rules as an nftables batch.
//! - [`netconf`]: the routed network's pools and BGP settings as files
//!   (the ConfigMap), applied to the store at start.
//! - [`nodeclean`]: a deleted Kubernetes Node's routed state leaves the
//!   store (its blocks, its node record, so its BGP sessions end).
//! - [`runfiles`]: subnet.env, the readiness file, remembered VTEP MACs.
//! - [`status`], [`ctlsock`], [`http`]: what the agent reports, on its
//!   control socket and on the optional metrics/health listener.

pub mod answer;
pub mod bfd;
pub mod clusteripam;
pub mod ctlsock;
pub mod dataplane;
pub mod http;
pub mod masq;
pub mod netconf;
pub mod nodeclean;
pub mod overlay;
pub mod policy;
pub mod routed;
pub mod runfiles;
pub mod status;
pub mod underlay;
