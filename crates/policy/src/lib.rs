//! Network policy for every network of a pod, as pure logic: Kubernetes
//! NetworkPolicy on the cluster network, MultiNetworkPolicy on the others,
//! one engine and one set of semantics. No sockets, no netlink, no clock:
//! plexusd's informer feeds it objects, its data plane applies what it
//! renders.
//!
//! # Structure (dependencies point down)
//!
//! ```text
//! render    compiled rules → one nftables batch per pod interface; drop counters
//!   │
//! engine    (pods, namespaces, policies) → the rules of every interface on a node
//!   ├── rules     the compiled rule set per interface and direction, and the
//!   │             packet evaluator (what the rendered rules answer)
//!   ├── policy    a policy object checked rule by rule (fail closed), the API's defaults
//!   ├── cluster   pods and namespaces digested: interfaces, addresses, named ports
//!   ├── selector  label selectors
//!   └── addr      address interval sets (ipBlock with except, many peers)
//! api       serde types mirroring the API's JSON, read leniently
//! ```
//!
//! # How plexusd uses it
//!
//! 1. On every informer event, digest the object once: [`PodInfo::new`],
//!    [`NamespaceInfo::new`], [`Policy::new`] (with its [`Problem`]s to log
//!    and count, each naming the policy).
//! 2. [`compute`]`(node, pods, namespaces, policies)` gives [`Desired`]: an
//!    [`InterfaceRules`] for every interface of every pod of the node that
//!    policy can apply to (host-network pods have none), isolated or not,
//!    with the policies selecting it. Each is `PartialEq`: only changed
//!    ones need programming.
//! 3. For each interface, [`render::render`]`(&rules, &node_addresses)` is
//!    one atomic `plexus_netlink::nft::Batch`: commit it on a socket opened
//!    inside the pod's network namespace. It is idempotent (re-send it to
//!    repair drift) and removes the table when nothing isolates the
//!    interface; [`render::remove`] removes it on the pod's DEL. If a
//!    commit fails because a table of another layout is in the way,
//!    [`render::render_replacing`] starts it over.
//! 4. Drops for `plexusctl policy show` and metrics:
//!    `nft::list_counters(&sock, Family::Inet, &render::table_name(ifname))`
//!    in the pod's namespace, read with [`render::drops`].
//!
//! [`InterfaceRules::allows`] is the evaluator: for a new connection
//! through an interface, what the rendered rules do.
//!
//! # Where the rules live: in the pod's network namespace
//!
//! Every pod interface gets its own table inside the pod's network
//! namespace: an `input` chain for ingress (`iifname IF`) and an `output`
//! chain for egress (`oifname IF`). Not on the host side, for these
//! reasons:
//! * macvlan, ipvlan, host-device and SR-IOV interfaces have no host-side
//!   device at all, so on the host there is nothing to hang a rule on; in
//!   the pod the interface is always there, whatever plugin wired it
//!   (Plexus's own, the reference plugins, a third-party flannel or
//!   Calico). One placement for all of them is one set of semantics, as
//!   multi-networkpolicy-iptables does it;
//! * on the host, same-node pods behind a bridge (the overlay's cni0, the
//!   bridge plugin) talk bridged, which the inet hooks see only with
//!   br_netfilter loaded; inside the pod every packet is routed locally;
//! * a table per pod namespace dies with the namespace: a pod whose DEL
//!   never came leaves nothing behind, a node holds no rules of pods it
//!   no longer runs, and a mistake in one pod's table touches no other;
//! * no host interface names or netns ids are needed, only the pod's
//!   namespace path, which plexusd gets from the meta plugin's ADD.
//!
//! Consequences, each accepted with its reason:
//! * **Egress to a Service ClusterIP** is judged before kube-proxy's DNAT,
//!   which happens later on the node: inside the pod the destination is
//!   the ClusterIP, not the backend pod. An egress rule naming the backend
//!   pods by selector therefore does not let their Service's ClusterIP
//!   through; the policy must also allow the service range (an `ipBlock`).
//!   The usual case is DNS to kube-dns from an egress-isolated pod. The
//!   fix that keeps this placement, and is what the engine will take next:
//!   Services and EndpointSlices as one more input, a ClusterIP:port
//!   allowed when every ready backend is. Secondary networks have no
//!   Services, so MultiNetworkPolicy is unaffected. (The e2e suite probes
//!   through ClusterIPs; the model here probes pod addresses.)
//! * **Traffic from the node's own addresses passes** in both directions
//!   (kubelet probes, as the API documents). Inside the pod, traffic the
//!   node SNATed to its own address (a NodePort with
//!   `externalTrafficPolicy: Cluster`, hairpin through a Service) looks
//!   the same and passes too.
//! * **Established connections survive** a policy that would now refuse
//!   them (conntrack accepts their packets first), as with every
//!   conntrack-based implementation; new connections are refused.
//! * The pod's own root can delete the table (it has CAP_NET_ADMIN in its
//!   namespace only if given it); plexusd's drift repair re-sends it.
//! * Traffic a pod sends to itself never leaves through the interface
//!   (it goes through `lo`): a pod cannot block itself, as the API says.
//! * Rules without `ports` allow every protocol (ICMP included); rules
//!   with ports allow only TCP, UDP and SCTP to those ports. ICMPv6
//!   neighbour discovery and MLD always pass, or IPv6 would stop for the
//!   allowed traffic too.
//!
//! # What of the API is not covered
//!
//! Named ports by container port name and protocol (a name whose
//! protocol differs matches nothing); `endPort` with a named port is
//! invalid as in the API. Host-network pods are neither subject nor
//! peers (their addresses are the node's, which always pass anyway).
//! Loopback is not enforced (see above), and so neither is the e2e suite's
//! Service path. AdminNetworkPolicy and Calico/Cilium extensions are out
//! of scope.

pub mod addr;
pub mod api;
pub mod cluster;
pub mod engine;
pub mod policy;
pub mod render;
pub mod rules;
pub mod selector;

pub use addr::AddrSet;
pub use cluster::{Interface, NamedPort, NamespaceInfo, Network, PodInfo, PodRef};
pub use engine::{check_all, compute, Desired};
pub use policy::{Kind, Policy, PolicyId, Problem, Proto};
pub use rules::{Direction, DirectionRules, InterfaceRules, PortRule};
pub use selector::Selector;
