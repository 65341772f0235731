//! The control socket's cluster-IPAM commands (`plexus-cluster-ipam`, an
//! IPAM plugin for any network): `cluster_ipam_allocate`, `_release`,
//! `_gc` and `_check`, served from this node's
//! [`plexus_ipam::clusterpool::ClusterAllocator`] under its own key prefix.
//! It needs only the store and the node name: no routed pool, no overlay
//! config, no BGP, so a node that only serves cluster IPAM runs it alone.
//!
//! [`WithClusterIpam`] is the handler to put in the control socket's slot:
//! it answers cluster-IPAM requests itself and hands every other request
//! to the handler the running network model installs in its own slot
//! (code 11 until there is one). [`heartbeat`] keeps the node's
//! last-seen record fresh for `plexusctl ipam check`. [`serve`] runs it
//! all, with, when the Kubernetes API is at hand, the pod reconciler
//! ([`reconcile`]) and the cleanup after deleted Nodes
//! ([`crate::nodeclean`] over the cluster-IPAM pools).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use plexus_agent_api::{
    Cidr, ClusterAllocate, ClusterAllocation, ClusterIp, GcDone, Released, Request,
};
use plexus_ipam::clusterpool::{AllocRequest, Attachment, ClusterAllocator, ClusterLayout, Range};
use plexus_ipam::IpamError;
use plexus_store::Kv;
use serde_json::{json, Value};

use crate::answer::{self, error};
use crate::ctlsock::{Handler, Handlers, CODE_TRY_AGAIN};

pub mod reconcile;
#[cfg(test)]
mod tests;

/// How often [`heartbeat`] says the agent is alive; `ipam check`'s grace
/// period should be several of these.
pub const HEARTBEAT: Duration = Duration::from_secs(60);

fn ipam_error(e: &IpamError) -> Value {
    error(e, answer::cluster_code(e))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Serves the cluster-IPAM requests.
#[derive(Debug)]
pub struct ClusterIpamHandler {
    alloc: Arc<ClusterAllocator>,
    /// The node's last-seen record has been written this run.
    touched: std::sync::atomic::AtomicBool,
}

impl ClusterIpamHandler {
    /// Load `node`'s allocations from the store and say the node is alive.
    pub async fn open(
        kv: Arc<dyn Kv>,
        layout: ClusterLayout,
        node: &str,
    ) -> Result<ClusterIpamHandler, IpamError> {
        let alloc = ClusterAllocator::load(kv, layout, node).await?;
        // A node's last-seen record only matters while it holds addresses
        // (`ipam check` finds the dead ones): none is written before.
        let holds = !alloc.blocks().await.is_empty();
        if holds {
            alloc.touch(now()).await?;
        }
        Ok(ClusterIpamHandler {
            touched: holds.into(),
            alloc: Arc::new(alloc),
        })
    }

    pub fn allocator(&self) -> &Arc<ClusterAllocator> {
        &self.alloc
    }

    async fn allocate(&self, a: ClusterAllocate) -> Value {
        let req = match alloc_request(a) {
            Ok(r) => r,
            Err(e) => return ipam_error(&e),
        };
        match self.alloc.allocate(&req).await {
            Ok(given) => {
                use std::sync::atomic::Ordering;
                if !self.touched.load(Ordering::SeqCst) {
                    match self.alloc.touch(now()).await {
                        Ok(()) => self.touched.store(true, Ordering::SeqCst),
                        Err(e) => {
                            tracing::warn!(error = %e, "cluster IPAM: cannot write this node's last-seen record")
                        }
                    }
                }
                let ips = given
                    .into_iter()
                    .map(|g| ClusterIp {
                        address: Cidr {
                            addr: g.address,
                            prefix_len: g.range.prefix_len(),
                        },
                        gateway: g.gateway,
                        range: cidr(&g.range),
                    })
                    .collect();
                serde_json::to_value(ClusterAllocation { ips }).unwrap_or_else(|e| error(e, None))
            }
            Err(e) => {
                tracing::info!(network = %req.attachment.network, container = %req.attachment.container_id, ifname = %req.attachment.ifname, error = %e, "cluster IPAM allocation refused");
                ipam_error(&e)
            }
        }
    }

    async fn check(&self, container_id: &str, ifname: &str) -> Value {
        let ips = self
            .alloc
            .held(container_id, ifname)
            .await
            .into_iter()
            .map(|(addr, h)| ClusterIp {
                address: Cidr {
                    addr,
                    prefix_len: h.range.prefix_len(),
                },
                gateway: None,
                range: cidr(&h.range),
            })
            .collect();
        serde_json::to_value(ClusterAllocation { ips }).unwrap_or_else(|e| error(e, None))
    }
}

fn cidr(n: &IpNet) -> Cidr {
    Cidr {
        addr: n.network(),
        prefix_len: n.prefix_len(),
    }
}

fn net(c: &Cidr) -> Result<IpNet, IpamError> {
    IpNet::new(c.addr, c.prefix_len)
        .map(|n| n.trunc())
        .map_err(|_| IpamError::Invalid(format!("{c} is not a CIDR")))
}

/// The wire request as the allocator's: every range checked (code 7).
pub fn alloc_request(a: ClusterAllocate) -> Result<AllocRequest, IpamError> {
    if a.ranges.is_empty() {
        return Err(IpamError::Invalid("no range to allocate from".into()));
    }
    let ranges = a
        .ranges
        .iter()
        .map(|r| {
            let exclude = r.exclude.iter().map(net).collect::<Result<Vec<_>, _>>()?;
            Range::new(
                net(&r.range)?,
                r.range_start,
                r.range_end,
                &exclude,
                r.gateway,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(AllocRequest {
        attachment: Attachment {
            network: a.network,
            container_id: a.container_id,
            ifname: a.ifname,
            pod_namespace: a.pod.namespace,
            pod_name: a.pod.name,
            pod_uid: a.pod.uid,
        },
        network_name: a.network_name,
        overlapping: a.overlapping,
        ranges,
        requested: a.requested,
        block_size_v4: a.block_size_v4,
        block_size_v6: a.block_size_v6,
    })
}

#[async_trait::async_trait]
impl Handler for ClusterIpamHandler {
    async fn handle(&self, request: Request) -> Value {
        match request {
            Request::ClusterIpamAllocate(a) => self.allocate(a).await,
            Request::ClusterIpamRelease(r) => {
                match self.alloc.release(&r.container_id, &r.ifname).await {
                    Ok(released) => json!(Released { released }),
                    Err(e) => ipam_error(&e),
                }
            }
            Request::ClusterIpamGc(g) => {
                let valid: HashSet<(String, String)> = g
                    .valid
                    .into_iter()
                    .map(|k| (k.container_id, k.ifname))
                    .collect();
                match self.alloc.gc(&g.network, &valid).await {
                    Ok(released) => json!(GcDone { released }),
                    Err(e) => ipam_error(&e),
                }
            }
            Request::ClusterIpamCheck(c) => self.check(&c.container_id, &c.ifname).await,
            _ => error(
                "this request is not a cluster IPAM command",
                Some(CODE_TRY_AGAIN),
            ),
        }
    }
}

/// The control socket's handler on a node serving cluster IPAM: its
/// requests answered here, the others by whatever the network model puts
/// in `rest` (code 11 while that is empty).
pub struct WithClusterIpam {
    /// Empty until the store could give this node's allocations (code 11).
    pub cluster: std::sync::RwLock<Option<Arc<ClusterIpamHandler>>>,
    pub rest: Handlers,
}

impl WithClusterIpam {
    pub fn new(rest: Handlers) -> WithClusterIpam {
        WithClusterIpam {
            cluster: Default::default(),
            rest,
        }
    }

    pub fn set_cluster(&self, h: Arc<ClusterIpamHandler>) {
        *self.cluster.write().unwrap_or_else(|p| p.into_inner()) = Some(h);
    }
}

#[async_trait::async_trait]
impl Handler for WithClusterIpam {
    async fn handle(&self, request: Request) -> Value {
        if request.is_cluster_ipam() {
            let h = self
                .cluster
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            return match h {
                Some(h) => h.handle(request).await,
                None => error(
                    "the node agent cannot serve cluster IPAM yet (its store is not ready)",
                    Some(CODE_TRY_AGAIN),
                ),
            };
        }
        let rest = self.rest.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match rest {
            Some(h) => h.handle(request).await,
            None => error(
                "the node agent has no routed network ready (yet)",
                Some(CODE_TRY_AGAIN),
            ),
        }
    }
}

/// Refresh the node's last-seen record every `every` until dropped (a
/// failed write is logged; the next round tries again).
pub async fn heartbeat(alloc: Arc<ClusterAllocator>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        if alloc.blocks().await.is_empty() {
            continue;
        }
        if let Err(e) = alloc.touch(now()).await {
            tracing::warn!(error = %e, "cluster IPAM: cannot refresh this node's last-seen record");
        }
    }
}

/// plexusd's cluster-IPAM flags.
#[derive(clap::Args, Debug, Clone)]
pub struct Opts {
    /// Cluster IPAM: release addresses whose pod (by UID) no longer exists.
    /// `auto`: with `--store kubernetes` or `--kubeconfig`; needs get, list
    /// and watch rights on pods.
    #[arg(long, value_enum, default_value_t = Switch::Auto)]
    pub cluster_ipam_reconcile: Switch,
    /// Cluster IPAM: seconds a pod must be seen missing before the
    /// reconciler releases its addresses.
    #[arg(long, default_value_t = 300)]
    pub cluster_ipam_reconcile_grace: u64,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Switch {
    Auto,
    On,
    Off,
}

impl Opts {
    /// What the Kubernetes API does for cluster IPAM, if anything.
    pub fn duties(
        &self,
        store: &str,
        opts: &plexus_store::StoreOptions,
        node_cleanup: bool,
    ) -> Option<KubeDuties> {
        let api = store == "kubernetes" || opts.kubeconfig.is_some();
        let reconcile = match self.cluster_ipam_reconcile {
            Switch::Auto => api,
            Switch::On => true,
            Switch::Off => false,
        };
        (reconcile || node_cleanup).then(|| KubeDuties {
            opts: opts.clone(),
            reconcile: reconcile.then(|| Duration::from_secs(self.cluster_ipam_reconcile_grace)),
            node_cleanup,
        })
    }
}

/// The Kubernetes API's part in serving cluster IPAM.
#[derive(Debug, Clone)]
pub struct KubeDuties {
    /// How to reach the API (`--kubeconfig`, else in-cluster).
    pub opts: plexus_store::StoreOptions,
    /// Release addresses of pods gone (by UID) after this grace period.
    pub reconcile: Option<Duration>,
    /// Free the cluster-IPAM state of deleted Nodes.
    pub node_cleanup: bool,
}

/// Open cluster IPAM (this node's allocations) and put it on the control
/// socket; a store that cannot serve it yet (down, or no PlexusKey CRD in
/// Kubernetes mode) is tried again, never a reason to stop the agent.
/// Then, with `kube`, start the reconciler and the Node cleanup; then keep
/// the last-seen record fresh.
pub async fn serve(
    kv: Arc<dyn Kv>,
    node: String,
    front: Arc<WithClusterIpam>,
    status: crate::status::Shared,
    kube: Option<KubeDuties>,
) {
    use tracing::Instrument;
    let mut logged = false;
    let h = loop {
        match ClusterIpamHandler::open(kv.clone(), ClusterLayout::default(), &node).await {
            Ok(h) => break Arc::new(h),
            Err(e) => {
                if !logged {
                    tracing::warn!(error = %e, "cluster IPAM is not served yet (trying again every 10 s)");
                    logged = true;
                }
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
        }
    };
    front.set_cluster(h.clone());
    status.update(|st| st.cluster_ipam = true);
    tracing::info!("cluster IPAM served");
    let mut tasks = Vec::new();
    if let Some(k) = kube.filter(|k| k.reconcile.is_some() || k.node_cleanup) {
        if let Some(grace) = k.reconcile {
            match plexus_store::KubePods::connect(&k.opts).await {
                Ok(pods) => {
                    let r = reconcile::PodReconciler {
                        alloc: h.allocator().clone(),
                        grace,
                    };
                    tasks.push(tokio::spawn(
                        r.run(pods, status.clone())
                            .instrument(tracing::info_span!("reconciler")),
                    ));
                }
                Err(e) => {
                    tracing::error!(error = %e, "cluster IPAM reconciler: cannot connect to the Kubernetes API; not running")
                }
            }
        }
        if k.node_cleanup {
            match plexus_store::KubeNodes::connect(&k.opts).await {
                Ok(nodes) => {
                    let cleaner = crate::nodeclean::Cleaner {
                        cluster: plexus_ipam::clusterpool::ClusterPools::new(
                            kv.clone(),
                            ClusterLayout::default(),
                        ),
                        me: node.clone(),
                    };
                    tasks.push(tokio::spawn(
                        cleaner
                            .run(nodes, status.clone())
                            .instrument(tracing::info_span!("node-cleanup")),
                    ));
                }
                Err(e) => {
                    tracing::error!(error = %e, "cluster IPAM node cleanup: cannot connect to the Kubernetes API; not running")
                }
            }
        }
    }
    // The tasks stop with this future (the agent's end aborts it).
    struct Abort(Vec<tokio::task::JoinHandle<()>>);
    impl Drop for Abort {
        fn drop(&mut self) {
            self.0.iter().for_each(|t| t.abort());
        }
    }
    let _tasks = Abort(tasks);
    heartbeat(h.allocator().clone(), HEARTBEAT).await;
}
