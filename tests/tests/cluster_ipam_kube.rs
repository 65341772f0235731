//! Cluster IPAM over the Kubernetes store (`--store kubernetes`: KubeKv's
//! PlexusKey objects) against the API stand-in in a namespace this test
//! creates: nodes allocating at once never share an address, and a /28
//! across more nodes than it has blocks is used up, then exhausted.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Barrier};

use plexus_ipam::clusterpool::{
    AllocRequest, Attachment, ClusterAllocator, ClusterLayout, ClusterPools, Range,
};
use plexus_store::kubekv::{GROUP, PLURAL, VERSION};
use plexus_store::{Kv, StoreOptions};
use plexus_tests::apiserver::FakeApiServer;
use plexus_tests::{require_root, Netns};
use plexusd::answer::cluster_code;

async fn kv(api: &FakeApiServer) -> Arc<dyn Kv> {
    let opts = StoreOptions {
        kubeconfig: Some(api.kubeconfig.clone()),
        ..Default::default()
    };
    plexus_store::open_kv("kubernetes", &opts).await.unwrap()
}

fn req(cid: &str, range: &Range) -> AllocRequest {
    AllocRequest {
        attachment: Attachment {
            network: "macvlan-net".into(),
            container_id: cid.into(),
            ifname: "net1".into(),
            ..Default::default()
        },
        network_name: String::new(),
        overlapping: true,
        ranges: vec![range.clone()],
        requested: Vec::new(),
        block_size_v4: None,
        block_size_v6: None,
    }
}

/// `count` nodes at once, each on its own thread and client in `ns`,
/// allocating `per_node` addresses (or until the range is exhausted).
fn on_nodes(
    ns: &Netns,
    api: &FakeApiServer,
    count: usize,
    per_node: usize,
    range: &Range,
) -> Vec<Vec<IpAddr>> {
    let start = Barrier::new(count);
    ns.run(|| {
        std::thread::scope(|s| {
            let threads: Vec<_> = (0..count)
                .map(|n| {
                    let start = &start;
                    s.spawn(move || {
                        tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .unwrap()
                            .block_on(async move {
                                let a = ClusterAllocator::load(
                                    kv(api).await,
                                    ClusterLayout::default(),
                                    &format!("n{n}"),
                                )
                                .await
                                .unwrap();
                                start.wait();
                                let mut got = Vec::new();
                                for i in 0..per_node {
                                    match a.allocate(&req(&format!("n{n}-c{i}"), range)).await {
                                        Ok(g) => got.push(g[0].address),
                                        Err(e) => {
                                            assert_eq!(cluster_code(&e), Some(100), "{e}");
                                            break;
                                        }
                                    }
                                }
                                got
                            })
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        })
    })
}

async fn stored(api: &FakeApiServer) -> usize {
    let snap = ClusterPools::new(kv(api).await, ClusterLayout::default())
        .snapshot()
        .await
        .unwrap();
    snap.blocks.iter().map(|b| b.block.allocations.len()).sum()
}

#[test]
fn cluster_ipam_over_plexuskey_objects() {
    require_root!();
    let ns = Netns::new("cipamkube");
    let api = FakeApiServer::start_in(&ns);
    api.serve_resource(GROUP, VERSION, PLURAL, "PlexusKey");

    let wide = Range::new("10.160.0.0/24".parse().unwrap(), None, None, &[], None).unwrap();
    let got = on_nodes(&ns, &api, 3, 60, &wide);
    let all: Vec<IpAddr> = got.concat();
    assert_eq!(all.len(), 180);
    assert_eq!(
        all.iter().collect::<HashSet<_>>().len(),
        180,
        "an address given twice"
    );
    assert_eq!(ns.block_on(stored(&api)), 180);

    let small = Range::new("10.161.0.0/28".parse().unwrap(), None, None, &[], None).unwrap();
    let got = on_nodes(&ns, &api, 6, 14, &small);
    let all: Vec<IpAddr> = got.concat();
    assert_eq!(all.len(), 14, "{all:?}");
    assert_eq!(all.iter().collect::<HashSet<_>>().len(), 14);
    assert_eq!(ns.block_on(stored(&api)), 180 + 14);
}
