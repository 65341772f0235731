//! [`KubeLeaseRegistry`]: the overlay's leases in Kubernetes, as flannel's
//! kube subnet manager keeps them, so flannel and Plexus nodes mix:
//!
//! - a node's subnet is `spec.podCIDRs` (or `spec.podCIDR`), allocated by
//!   the controller manager; nothing to claim, nothing expires;
//! - its public IP and backend data are annotations on its Node
//!   (`flannel.alpha.coreos.com/public-ip`, `backend-type`, `backend-data`,
//!   `kube-subnet-manager`, and the `-v6` / `ipv6` ones), patched by us;
//! - other nodes come from a Node watch;
//! - the network config is a file (flannel's net-conf.json, `--net-config`).

use std::path::PathBuf;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ApiResource, ListParams, Patch, PatchParams};
use plexus_subnet::{Lease, LeaseAttrs, NetworkConfig, VxlanBackendData};
use serde_json::{json, Map, Value};

use crate::informer::{typed, Informer, KubeSource};
use crate::kubewatch::WATCH_SECONDS;
use crate::{AcquireRequest, LeaseRegistry, LeaseSnapshot, Revision, StoreError, StoreOptions};

/// flannel's annotation prefix.
pub const ANNOTATION_PREFIX: &str = "flannel.alpha.coreos.com/";
pub const SUBNET_KUBE_MANAGED: &str = "flannel.alpha.coreos.com/kube-subnet-manager";
pub const BACKEND_TYPE: &str = "flannel.alpha.coreos.com/backend-type";
pub const BACKEND_DATA: &str = "flannel.alpha.coreos.com/backend-data";
pub const BACKEND_V6_DATA: &str = "flannel.alpha.coreos.com/backend-v6-data";
pub const PUBLIC_IP: &str = "flannel.alpha.coreos.com/public-ip";
pub const PUBLIC_IPV6: &str = "flannel.alpha.coreos.com/public-ipv6";
pub const PUBLIC_IP_OVERWRITE: &str = "flannel.alpha.coreos.com/public-ip-overwrite";
pub const PUBLIC_IPV6_OVERWRITE: &str = "flannel.alpha.coreos.com/public-ipv6-overwrite";

/// Connecting and each call (a watch's reads get longer).
const API_TIMEOUT: Duration = Duration::from_secs(10);

/// Leases from Node objects.
pub struct KubeLeaseRegistry {
    nodes: Api<Node>,
    node_name: String,
    net_config: PathBuf,
}

impl std::fmt::Debug for KubeLeaseRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeLeaseRegistry")
            .field("node_name", &self.node_name)
            .finish()
    }
}

fn api_error(op: &str, e: kube::Error) -> StoreError {
    match e {
        kube::Error::Api(s) if s.code == 410 => StoreError::Compacted(0),
        kube::Error::Api(s) => {
            StoreError::Other(format!("Kubernetes API: {op}: {} ({})", s.message, s.code))
        }
        e => StoreError::Unavailable(format!("Kubernetes API: {op}: {e}")),
    }
}

fn parse_rv(rv: Option<&String>) -> Revision {
    rv.and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// The annotation values flannel's kube subnet manager writes for `attrs`.
fn annotations(
    attrs: &LeaseAttrs,
    v4: bool,
    v6: bool,
    current: &Map<String, Value>,
) -> Map<String, Value> {
    let mut a = Map::new();
    a.insert(SUBNET_KUBE_MANAGED.into(), json!("true"));
    a.insert(BACKEND_TYPE.into(), json!(attrs.backend_type));
    let data =
        |d: &Option<VxlanBackendData>| d.as_ref().map_or("null".to_string(), |d| d.to_json());
    // A public-ip-overwrite annotation wins over the detected address.
    let overwrite = |key: &str| {
        current
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(String::from)
    };
    if v4 {
        a.insert(BACKEND_DATA.into(), json!(data(&attrs.backend_data)));
        let ip = overwrite(PUBLIC_IP_OVERWRITE)
            .or(attrs.public_ip.map(|i| i.to_string()))
            .unwrap_or_else(|| "0.0.0.0".into());
        a.insert(PUBLIC_IP.into(), json!(ip));
    }
    if v6 {
        a.insert(BACKEND_V6_DATA.into(), json!(data(&attrs.backend_v6_data)));
        if let Some(ip) =
            overwrite(PUBLIC_IPV6_OVERWRITE).or(attrs.public_ipv6.map(|i| i.to_string()))
        {
            a.insert(PUBLIC_IPV6.into(), json!(ip));
        }
    }
    a
}

/// The node's pod CIDRs, IPv4 and IPv6.
fn pod_cidrs(node: &Node) -> Result<(Option<Ipv4Net>, Option<Ipv6Net>), String> {
    let spec = node.spec.as_ref();
    let mut cidrs: Vec<String> = spec.and_then(|s| s.pod_cidrs.clone()).unwrap_or_default();
    if cidrs.is_empty() {
        cidrs.extend(spec.and_then(|s| s.pod_cidr.clone()));
    }
    let (mut v4, mut v6) = (None, None);
    for c in &cidrs {
        match c.parse::<IpNet>() {
            Ok(IpNet::V4(n)) => v4 = v4.or(Some(n.trunc())),
            Ok(IpNet::V6(n)) => v6 = v6.or(Some(n.trunc())),
            Err(_) => return Err(format!("podCIDR {c:?} is not a CIDR")),
        }
    }
    Ok((v4, v6))
}

/// A lease from a Node flannel-style managed (`kube-subnet-manager: "true"`
/// and a podCIDR); `None` for any other node.
pub fn node_lease(node: &Node) -> Option<Lease> {
    let ann = node.metadata.annotations.as_ref()?;
    if ann.get(SUBNET_KUBE_MANAGED).map(String::as_str) != Some("true") {
        return None;
    }
    let (subnet, subnet6) = pod_cidrs(node).ok()?;
    if subnet.is_none() && subnet6.is_none() {
        return None;
    }
    let data = |key: &str| {
        ann.get(key)
            .and_then(|s| serde_json::from_str::<Value>(s).ok())
            .filter(|v| !v.is_null())
            .and_then(|v| VxlanBackendData::from_value(&v).ok().flatten())
    };
    Some(Lease {
        subnet,
        subnet6,
        attrs: LeaseAttrs {
            public_ip: ann
                .get(PUBLIC_IP)
                .and_then(|s| s.parse().ok())
                .filter(|i: &std::net::Ipv4Addr| !i.is_unspecified()),
            public_ipv6: ann.get(PUBLIC_IPV6).and_then(|s| s.parse().ok()),
            backend_type: ann.get(BACKEND_TYPE).cloned().unwrap_or_default(),
            backend_data: data(BACKEND_DATA),
            backend_v6_data: data(BACKEND_V6_DATA),
        },
    })
}

impl KubeLeaseRegistry {
    /// Connect (kubeconfig or in-cluster) and check that our Node exists.
    pub async fn connect(opts: &StoreOptions) -> Result<KubeLeaseRegistry, StoreError> {
        if opts.node_name.is_empty() {
            return Err(StoreError::Other(
                "the kubernetes store needs the node name (--node-name)".into(),
            ));
        }
        let net_config = opts.net_config.clone().ok_or_else(|| {
            StoreError::Other(
                "the kubernetes store needs the network config file (--net-config, flannel's /etc/kube-flannel/net-conf.json)".into(),
            )
        })?;
        // Reads get room for a watch's idle stretches.
        let read_timeout = Some(Duration::from_secs(WATCH_SECONDS as u64 + 30));
        let k8s = plexus_k8s::K8s::connect(opts.kubeconfig.as_deref(), API_TIMEOUT, read_timeout)
            .await
            .map_err(|e| StoreError::Other(e.to_string()))?;
        let reg = KubeLeaseRegistry {
            nodes: Api::all(k8s.client()),
            node_name: opts.node_name.clone(),
            net_config,
        };
        // One bounded call, so a dead API server or a wrong name fails here.
        tokio::time::timeout(API_TIMEOUT, reg.own_node())
            .await
            .map_err(|_| {
                StoreError::Unavailable(format!("Kubernetes API: no answer within {API_TIMEOUT:?}"))
            })??;
        Ok(reg)
    }

    async fn own_node(&self) -> Result<Node, StoreError> {
        let op = format!("get node {}", self.node_name);
        // rbac(plexus-kube-store): get nodes
        self.nodes
            .get_opt(&self.node_name)
            .await
            .map_err(|e| api_error(&op, e))?
            .ok_or_else(|| {
                StoreError::Other(format!(
                    "Kubernetes API: node {:?} not found",
                    self.node_name
                ))
            })
    }

    /// Our lease from our Node, with `attrs` published in its annotations.
    async fn publish(&self, attrs: &LeaseAttrs) -> Result<Lease, StoreError> {
        let cfg = self.network_config().await?;
        let node = self.own_node().await?;
        let (subnet, subnet6) = pod_cidrs(&node)
            .map_err(|e| StoreError::Other(format!("node {}: {e}", self.node_name)))?;
        let subnet = subnet.filter(|_| cfg.enable_ipv4);
        let subnet6 = subnet6.filter(|_| cfg.enable_ipv6);
        if subnet.is_none() && subnet6.is_none() {
            // The controller manager has not allocated one yet: retry later.
            return Err(StoreError::Unavailable(format!(
                "node {} has no spec.podCIDR yet (is the controller manager allocating node CIDRs?)",
                self.node_name
            )));
        }
        if let (Some(sn), Some(net)) = (subnet, cfg.network) {
            if !net.contains(&sn) {
                return Err(StoreError::Other(format!(
                    "Network {net} in {} does not contain node {}'s podCIDR {sn}",
                    self.net_config.display(),
                    self.node_name
                )));
            }
        }
        if let (Some(sn), Some(net)) = (subnet6, cfg.ipv6_network) {
            if !net.contains(&sn) {
                return Err(StoreError::Other(format!(
                    "IPv6Network {net} in {} does not contain node {}'s IPv6 podCIDR {sn}",
                    self.net_config.display(),
                    self.node_name
                )));
            }
        }
        let current: Map<String, Value> = node
            .metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        let want = annotations(attrs, subnet.is_some(), subnet6.is_some(), &current);
        if want.iter().any(|(k, v)| current.get(k) != Some(v)) {
            let patch = json!({"metadata": {"annotations": want}});
            let op = format!("patch node {} annotations", self.node_name);
            // rbac(plexus-kube-store): patch nodes
            self.nodes
                .patch(
                    &self.node_name,
                    &PatchParams::default(),
                    &Patch::Strategic(&patch),
                )
                .await
                .map_err(|e| api_error(&op, e))?;
        }
        let mut attrs = attrs.clone();
        if let Some(ip) = want
            .get(PUBLIC_IP)
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
        {
            attrs.public_ip = Some(ip).filter(|i: &std::net::Ipv4Addr| !i.is_unspecified());
        }
        Ok(Lease {
            subnet,
            subnet6,
            attrs,
        })
    }
}

#[async_trait::async_trait]
impl LeaseRegistry for KubeLeaseRegistry {
    async fn network_config(&self) -> Result<NetworkConfig, StoreError> {
        let bytes = plexus_base::files::read_limited(&self.net_config, 1 << 20)
            .map_err(|e| StoreError::NoConfig(format!("{}: {e}", self.net_config.display())))?;
        Ok(NetworkConfig::parse(&bytes)?)
    }

    /// The subnet is the node's podCIDR: nothing to choose, `previous` is
    /// not needed.
    async fn acquire(&self, req: &AcquireRequest) -> Result<Lease, StoreError> {
        self.publish(&req.attrs).await
    }

    /// Nothing expires in Kubernetes; put the annotations back if someone
    /// changed them.
    async fn reassert(&self, lease: &Lease) -> Result<(), StoreError> {
        // The Node's annotations are ours to write: renewal puts them back.
        self.renew(lease).await
    }

    async fn renew(&self, lease: &Lease) -> Result<(), StoreError> {
        self.publish(&lease.attrs).await.map(|_| ())
    }

    async fn list(&self) -> Result<LeaseSnapshot, StoreError> {
        // rbac(plexus-kube-store): list nodes
        let list = self
            .nodes
            .list(&ListParams::default())
            .await
            .map_err(|e| api_error("list nodes", e))?;
        Ok(LeaseSnapshot {
            leases: list.items.iter().filter_map(node_lease).collect(),
            revision: parse_rv(list.metadata.resource_version.as_ref()),
        })
    }

    fn follow(&self) -> Informer<Lease> {
        let nodes = KubeSource::new(
            self.nodes.clone().into_client(),
            &ApiResource::erase::<Node>(&()),
        );
        // A Node without the overlay's annotations or a podCIDR is not a
        // lease (yet, or any more): absent, not refused.
        Informer::filtered(nodes, |_, o| typed::<Node>(o).map(|n| node_lease(&n)))
    }
}

/// Which Nodes exist, for cleaning up after the ones deleted (their
/// routed blocks and node records; `plexusd --node-cleanup`).
#[derive(Clone)]
pub struct KubeNodes {
    nodes: Api<Node>,
}

impl std::fmt::Debug for KubeNodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KubeNodes")
    }
}

impl KubeNodes {
    /// Connect with `--kubeconfig` (or the in-cluster config).
    pub async fn connect(opts: &StoreOptions) -> Result<KubeNodes, StoreError> {
        let read_timeout = Some(Duration::from_secs(WATCH_SECONDS as u64 + 30));
        let k8s = plexus_k8s::K8s::connect(opts.kubeconfig.as_deref(), API_TIMEOUT, read_timeout)
            .await
            .map_err(|e| StoreError::Other(e.to_string()))?;
        Ok(KubeNodes {
            nodes: Api::all(k8s.client()),
        })
    }

    /// Every Node by name, then each one added or deleted (the store's
    /// informer: relisted by itself after 410 Gone or a broken watch).
    pub fn follow(&self) -> Informer<()> {
        let nodes = KubeSource::new(
            self.nodes.clone().into_client(),
            &ApiResource::erase::<Node>(&()),
        );
        Informer::new(nodes, |_, _| Ok::<(), std::convert::Infallible>(()))
    }

    /// Whether the Node exists now.
    pub async fn exists(&self, name: &str) -> Result<bool, StoreError> {
        let op = format!("get node {name}");
        // rbac(plexus-kube-store): get nodes
        let n = tokio::time::timeout(API_TIMEOUT, self.nodes.get_opt(name))
            .await
            .map_err(|_| StoreError::Unavailable(format!("Kubernetes API: {op}: no answer")))?
            .map_err(|e| api_error(&op, e))?;
        Ok(n.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(cidrs: &[&str], ann: Value) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": "n", "annotations": ann},
            "spec": {"podCIDR": cidrs.first(), "podCIDRs": cidrs},
        }))
        .unwrap()
    }

    fn attrs() -> LeaseAttrs {
        LeaseAttrs {
            public_ip: Some("192.168.0.1".parse().unwrap()),
            backend_type: "vxlan".into(),
            backend_data: Some(VxlanBackendData {
                vni: 1,
                vtep_mac: [0x0a, 0x58, 0, 0, 0, 1],
            }),
            ..Default::default()
        }
    }

    #[test]
    fn annotations_are_flannels() {
        let a = annotations(&attrs(), true, false, &Map::new());
        assert_eq!(
            Value::Object(a.clone()),
            json!({
                SUBNET_KUBE_MANAGED: "true",
                BACKEND_TYPE: "vxlan",
                BACKEND_DATA: r#"{"VNI":1,"VtepMAC":"0a:58:00:00:00:01"}"#,
                PUBLIC_IP: "192.168.0.1",
            })
        );
        // host-gw has no backend data: flannel writes "null".
        let hg = LeaseAttrs {
            backend_type: "host-gw".into(),
            backend_data: None,
            ..attrs()
        };
        assert_eq!(
            annotations(&hg, true, false, &Map::new())[BACKEND_DATA],
            json!("null")
        );
        // An operator's public-ip-overwrite wins.
        let cur: Map<String, Value> = [(PUBLIC_IP_OVERWRITE.to_string(), json!("10.0.0.9"))]
            .into_iter()
            .collect();
        assert_eq!(
            annotations(&attrs(), true, false, &cur)[PUBLIC_IP],
            json!("10.0.0.9")
        );
        // Our own annotations read back as the same lease.
        let n = node(&["10.5.1.0/24"], Value::Object(a));
        let l = node_lease(&n).unwrap();
        assert_eq!(l.attrs, attrs());
        assert_eq!(l.key(), "10.5.1.0-24");
    }

    #[test]
    fn only_managed_nodes_with_a_pod_cidr_are_leases() {
        let managed =
            json!({SUBNET_KUBE_MANAGED: "true", BACKEND_TYPE: "host-gw", PUBLIC_IP: "192.168.0.2"});
        assert!(node_lease(&node(&[], managed.clone())).is_none());
        assert!(node_lease(&node(&["10.5.1.0/24"], json!({}))).is_none());
        let dual = node_lease(&node(&["10.5.1.0/24", "fc00:0:0:1::/64"], managed)).unwrap();
        assert_eq!(dual.key(), "10.5.1.0-24&fc00:0:0:1::-64");
        let bad = node(&["nonsense"], json!({}));
        assert!(pod_cidrs(&bad).unwrap_err().contains("nonsense"));
    }
}
