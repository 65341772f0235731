//! Cleaning up after deleted Kubernetes Nodes (`--node-cleanup`), as
//! Calico's node controller does: when a Node object goes, its routed
//! blocks (with every address in them) and its node record leave the
//! store. Every agent's store watch then drops the BGP session to it (the
//! mesh is the store's node records) and its routes go with the session.
//! The overlay needs nothing here: in Kubernetes mode its leases are the
//! Node objects themselves, so a deleted Node's routes, FDB and neighbour
//! entries go on every node through the Node watch.
//!
//! Every agent runs this; that is safe: removal is idempotent and each
//! block is deleted with compare-and-swap, so two agents removing the same
//! node free it once and report nothing the second time.
//!
//! Races guarded against:
//! - a node that joins while we reconcile: an agent registers in the store
//!   only after its Node exists, and every node the store holds but the
//!   list lacks is asked about again (`exists`) before it is removed;
//! - a Node deleted and created again under the same name: a deletion is
//!   acted on only if the Node does not exist now;
//! - a wrong or empty list (another cluster's credentials): nothing is
//!   removed unless the list holds our own Node;
//! - records that are not an agent's (`plexusctl node set` for a route
//!   reflector outside Kubernetes): the start-up comparison removes only
//!   nodes an agent registered (a `routerId`, which only plexusd writes) or
//!   that hold blocks (only agents claim them). A deletion event removes
//!   whatever the store holds under that Node's name.

use std::collections::BTreeSet;
use std::time::Duration;

use plexus_ipam::clusterpool::ClusterPools;
use plexus_ipam::{Cluster, Freed, IpamError};
use plexus_store::{Event, Informer, KubeNodes, StoreError};

use crate::status::Shared;

/// How soon a cleanup the store refused is tried again.
const RETRY: Duration = Duration::from_secs(5);

/// The cluster's members as the cleanup needs them (Kubernetes Nodes;
/// a fake in the unit tests).
#[async_trait::async_trait]
pub trait Members: Send + Sync {
    /// Every member by name, then each one added or deleted: an
    /// informer, each (re)list ending in `Synced`.
    fn follow(&self) -> Informer<()>;
    /// Whether `name` is a member now.
    async fn exists(&self, name: &str) -> Result<bool, StoreError>;
}

#[async_trait::async_trait]
impl Members for KubeNodes {
    fn follow(&self) -> Informer<()> {
        KubeNodes::follow(self)
    }
    async fn exists(&self, name: &str) -> Result<bool, StoreError> {
        KubeNodes::exists(self, name).await
    }
}

/// What a deleted node leaves in a store: the routed network's blocks and
/// node record ([`Cluster`]), or the cluster-IPAM pools' blocks, borrowed
/// addresses and last-seen record ([`ClusterPools`]).
#[async_trait::async_trait]
pub trait NodeState: Send + Sync {
    /// The agents' nodes the store knows (only names an agent wrote).
    async fn stored_nodes(&self) -> Result<BTreeSet<String>, IpamError>;
    /// Free everything `name` holds; idempotent.
    async fn remove_node(&self, name: &str) -> Result<Freed, IpamError>;
    /// For logs.
    fn what(&self) -> &'static str;
    /// The Node informer's name in the status.
    fn informer(&self) -> &'static str {
        "nodes"
    }
}

#[async_trait::async_trait]
impl NodeState for Cluster {
    /// Records an agent registered, and block holders.
    async fn stored_nodes(&self) -> Result<BTreeSet<String>, IpamError> {
        let mut names: BTreeSet<String> = self
            .nodes()
            .await?
            .into_iter()
            .filter(|n| n.router_id.is_some())
            .map(|n| n.name)
            .collect();
        names.extend(self.blocks().await?.into_iter().map(|b| b.value.node));
        Ok(names)
    }
    async fn remove_node(&self, name: &str) -> Result<Freed, IpamError> {
        Cluster::remove_node(self, name).await
    }
    fn what(&self) -> &'static str {
        "routed network"
    }
}

#[async_trait::async_trait]
impl NodeState for ClusterPools {
    /// Block owners, nodes holding an address (borrowed ones too), and
    /// last-seen records: all written only by agents.
    async fn stored_nodes(&self) -> Result<BTreeSet<String>, IpamError> {
        let s = self.snapshot().await?;
        let mut names: BTreeSet<String> = s.nodes.into_iter().map(|n| n.name).collect();
        for b in s.blocks {
            names.insert(b.block.node.clone());
            names.extend(b.block.allocations.into_values().map(|h| h.node));
        }
        names.remove("");
        Ok(names)
    }
    async fn remove_node(&self, name: &str) -> Result<Freed, IpamError> {
        ClusterPools::remove_node(self, name).await
    }
    fn what(&self) -> &'static str {
        "cluster IPAM"
    }
    fn informer(&self) -> &'static str {
        "nodes (cluster IPAM)"
    }
}

/// Removes deleted nodes' state from a store: the routed network's
/// ([`Cluster`]) or the cluster-IPAM pools' ([`ClusterPools`]).
pub struct Cleaner<S = Cluster> {
    pub cluster: S,
    /// This node: never removed by itself.
    pub me: String,
}

impl<S: NodeState> Cleaner<S> {
    async fn stored_nodes(&self) -> Result<BTreeSet<String>, IpamError> {
        self.cluster.stored_nodes().await
    }

    /// Remove what the store holds for every node that is not one of
    /// `members` (deleted while no agent watched); with `now`, each only
    /// if it is not a member now either (a node that joined between the
    /// list and the store read is not removed).
    pub async fn reconcile(
        &self,
        members: &BTreeSet<String>,
        now: Option<&dyn Members>,
    ) -> anyhow::Result<()> {
        let stored = self.stored_nodes().await?;
        if !members.contains(&self.me) {
            tracing::warn!(
                node = %self.me,
                members = members.len(),
                "our own Node is not in the Node list: removing nothing"
            );
            return Ok(());
        }
        for gone in stored.difference(members) {
            match now {
                Some(m) => self.deleted(m, gone).await?,
                None if *gone != self.me => {
                    self.forget(gone).await?;
                }
                None => {}
            }
        }
        Ok(())
    }

    /// A member was deleted: forget it unless it is back (or is us).
    pub async fn deleted(&self, members: &dyn Members, name: &str) -> anyhow::Result<()> {
        if name == self.me || members.exists(name).await? {
            return Ok(());
        }
        self.forget(name).await?;
        Ok(())
    }

    async fn forget(&self, name: &str) -> Result<Freed, IpamError> {
        let freed = self.cluster.remove_node(name).await?;
        tracing::info!(
            node = name,
            store = self.cluster.what(),
            blocks = freed.blocks,
            addresses = freed.addresses,
            "node deleted: its blocks and node record are gone from the store"
        );
        Ok(freed)
    }

    /// Follow the members: after each (re)list, reconcile; on each
    /// deletion, forget the node. What the store refuses is tried again
    /// (a deletion is never dropped).
    pub async fn run(self, members: impl Members, status: Shared) {
        let mut events = members.follow();
        status.add_informer(self.cluster.informer(), events.stats());
        let mut names = BTreeSet::new();
        // Work the store refused: a reconcile, deletions.
        let mut reconcile_due = false;
        let mut deleted: BTreeSet<String> = BTreeSet::new();
        let mut retry = tokio::time::interval(RETRY);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ev = events.next() => match ev {
                    Event::Added(name, _) => {
                        names.insert(name);
                    }
                    Event::Updated(..) => {}
                    Event::Deleted(name, _) => {
                        names.remove(&name);
                        deleted.insert(name);
                    }
                    Event::Synced => reconcile_due = true,
                },
                _ = retry.tick(), if reconcile_due || !deleted.is_empty() => {}
            }
            if reconcile_due {
                match self.reconcile(&names, Some(&members)).await {
                    Ok(()) => reconcile_due = false,
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "node cleanup: reconcile failed; trying again")
                    }
                }
            }
            for name in std::mem::take(&mut deleted) {
                if let Err(e) = self.deleted(&members, &name).await {
                    tracing::warn!(node = %name, error = %format!("{e:#}"), "node cleanup failed; trying again");
                    deleted.insert(name);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plexus_ipam::{Allocator, Encap, Handle, Layout, Pool};
    use std::sync::{Arc, Mutex};

    #[derive(Default)]
    struct FakeNodes {
        names: Mutex<BTreeSet<String>>,
    }

    #[async_trait::async_trait]
    impl Members for Arc<FakeNodes> {
        fn follow(&self) -> Informer<()> {
            Informer::new(Nothing, |_, _| Ok::<(), std::convert::Infallible>(()))
        }
        async fn exists(&self, name: &str) -> Result<bool, StoreError> {
            Ok(self.names.lock().unwrap().contains(name))
        }
    }

    /// A source with no members that never changes.
    struct Nothing;

    #[async_trait::async_trait]
    impl plexus_store::Source for Nothing {
        type Raw = ();
        fn describe(&self) -> String {
            "nothing".into()
        }
        async fn list(&self) -> Result<plexus_store::informer::Listing<()>, StoreError> {
            Ok(plexus_store::informer::Listing {
                items: Vec::new(),
                version: "1".into(),
            })
        }
        async fn watch(
            &self,
            _version: &str,
        ) -> Result<plexus_store::informer::RawStream<()>, StoreError> {
            Ok(Box::pin(futures::stream::pending()))
        }
    }

    fn names(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// A file store with a pool and an address on each of n1, n2, n3.
    async fn cluster(dir: &std::path::Path) -> Cluster {
        let kv = Arc::new(plexus_store::FileKv::open(&dir.join("store")).unwrap());
        let c = Cluster::new(kv, Layout::default());
        c.add_pool(&Pool {
            name: "p".into(),
            cidr: "10.9.0.0/24".parse().unwrap(),
            block_size: 28,
            nat_outgoing: false,
            encap: Encap::None,
            disabled: false,
        })
        .await
        .unwrap();
        for n in ["n1", "n2", "n3"] {
            c.update_node(n, |s| {
                s.address = Some("192.0.2.1".parse().unwrap());
                s.router_id = Some("192.0.2.1".parse().unwrap());
            })
            .await
            .unwrap();
            let a = Allocator::load(c.clone(), n).await.unwrap();
            a.allocate(&Handle::new("net", &format!("{n}-c"), "eth0"), "p")
                .await
                .unwrap();
        }
        c
    }

    fn nodes(names: &[&str]) -> Arc<FakeNodes> {
        Arc::new(FakeNodes {
            names: Mutex::new(names.iter().map(|s| s.to_string()).collect()),
        })
    }

    async fn stored(c: &Cluster) -> (Vec<String>, Vec<String>) {
        let recs = c
            .nodes()
            .await
            .unwrap()
            .into_iter()
            .map(|n| n.name)
            .collect();
        let holders = c
            .blocks()
            .await
            .unwrap()
            .into_iter()
            .map(|b| b.value.node)
            .collect();
        (recs, holders)
    }

    #[test]
    fn nodes_missing_from_the_list_are_removed_and_never_ourselves() {
        let dir = tempfile::tempdir().unwrap();
        rt().block_on(async {
            let c = cluster(dir.path()).await;
            let me = Cleaner {
                cluster: c.clone(),
                me: "n1".into(),
            };
            // An operator's record of a router outside Kubernetes stays.
            c.update_node("rr", |s| s.address = Some("192.0.2.9".parse().unwrap()))
                .await
                .unwrap();
            // n3 was deleted while no agent watched.
            me.reconcile(&names(&["n1", "n2"]), None).await.unwrap();
            assert!(c.node("rr").await.unwrap().is_some());
            c.remove_node("rr").await.unwrap();
            assert_eq!(
                stored(&c).await,
                (
                    vec!["n1".into(), "n2".into()],
                    vec!["n1".into(), "n2".into()]
                )
            );
            // A list without ourselves is not trusted: nothing goes.
            me.reconcile(&names(&["n9"]), None).await.unwrap();
            assert_eq!(stored(&c).await.0.len(), 2);
            // Our own deletion is left to the other agents.
            let members = nodes(&["n2"]);
            me.deleted(&members, "n1").await.unwrap();
            assert_eq!(stored(&c).await.0.len(), 2);
        });
    }

    #[test]
    fn a_deletion_is_acted_on_once_and_not_when_the_node_is_back() {
        let dir = tempfile::tempdir().unwrap();
        rt().block_on(async {
            let c = cluster(dir.path()).await;
            let (a, b) = (
                Cleaner {
                    cluster: c.clone(),
                    me: "n1".into(),
                },
                Cleaner {
                    cluster: c.clone(),
                    me: "n2".into(),
                },
            );
            // n3 is back under the same name before we got to it.
            let members = nodes(&["n1", "n2", "n3"]);
            a.deleted(&members, "n3").await.unwrap();
            assert_eq!(stored(&c).await.0.len(), 3);
            // Gone for good: both agents act, the first frees it, the
            // second finds nothing.
            members.names.lock().unwrap().remove("n3");
            assert_eq!(
                a.forget("n3").await.unwrap(),
                Freed {
                    blocks: 1,
                    addresses: 1
                }
            );
            b.deleted(&members, "n3").await.unwrap();
            assert_eq!(b.forget("n3").await.unwrap(), Freed::default());
            assert_eq!(stored(&c).await.0, vec!["n1".to_string(), "n2".to_string()]);
        });
    }

    #[test]
    fn a_deleted_node_loses_its_cluster_ipam_blocks_and_borrowed_addresses() {
        use plexus_ipam::clusterpool::{
            AllocRequest, Attachment, ClusterAllocator, ClusterLayout, Range,
        };
        let dir = tempfile::tempdir().unwrap();
        rt().block_on(async {
            let kv: Arc<dyn plexus_store::Kv> =
                Arc::new(plexus_store::FileKv::open(&dir.path().join("store")).unwrap());
            // A /29 cut into /30s: two blocks, so n3 has to borrow.
            let req = |cid: &str| AllocRequest {
                attachment: Attachment {
                    network: "net".into(),
                    container_id: cid.into(),
                    ifname: "net1".into(),
                    pod_namespace: String::new(),
                    pod_name: String::new(),
                    pod_uid: String::new(),
                },
                network_name: String::new(),
                overlapping: true,
                ranges: vec![
                    Range::new("10.7.0.0/29".parse().unwrap(), None, None, &[], None).unwrap(),
                ],
                requested: Vec::new(),
                block_size_v4: Some(30),
                block_size_v6: None,
            };
            for n in ["n1", "n2", "n3"] {
                let a = ClusterAllocator::load(kv.clone(), ClusterLayout::default(), n)
                    .await
                    .unwrap();
                a.allocate(&req(&format!("{n}-c"))).await.unwrap();
                a.touch(1).await.unwrap();
            }
            let pools = ClusterPools::new(kv.clone(), ClusterLayout::default());
            assert_eq!(
                pools.stored_nodes().await.unwrap(),
                names(&["n1", "n2", "n3"])
            );
            let me = Cleaner {
                cluster: pools.clone(),
                me: "n1".into(),
            };
            // n3 (a borrower only) and n2 (a block owner) were deleted.
            // n2 joined again after the list: asked now, it stays.
            me.reconcile(&names(&["n1"]), Some(&nodes(&["n1", "n2"])))
                .await
                .unwrap();
            assert!(pools.stored_nodes().await.unwrap().contains("n2"));
            me.reconcile(&names(&["n1"]), None).await.unwrap();
            assert_eq!(pools.stored_nodes().await.unwrap(), names(&["n1"]));
            let s = pools.snapshot().await.unwrap();
            let held: usize = s.blocks.iter().map(|b| b.block.allocations.len()).sum();
            assert_eq!(held, 1, "only n1's address is left: {s:?}");
        });
    }
}
