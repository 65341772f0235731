//! The store → speaker peers loop ([`Follower`]) against a file store and
//! a fake speaker.

use std::sync::Arc;

use plexus_ipam::{BgpConfig, Cluster, Layout, Peer};

use super::bgp::Announcer;
use super::fakes::FakeBgp;
use super::{gauges, Follower, PeerTable};

async fn follower(dir: &std::path::Path) -> (Follower, Arc<FakeBgp>) {
    let kv = plexus_store::FileKv::open(&dir.join("store")).unwrap();
    let cluster = Cluster::new(Arc::new(kv), Layout::default());
    for (n, ip) in [("n1", "10.0.0.1"), ("n2", "10.0.0.2")] {
        cluster
            .update_node(n, |s| s.address = Some(ip.parse().unwrap()))
            .await
            .unwrap();
    }
    let bgp = Arc::new(FakeBgp::default());
    let f = Follower {
        cluster,
        node: "n1".into(),
        address: "10.0.0.1".parse().unwrap(),
        speaker: bgp.clone(),
        table: PeerTable::default(),
        asn: Arc::new(64512.into()),
        cluster_id: None,
        keep_missing_until: None,
        secrets: None,
    };
    (f, bgp)
}

fn peer(ip: &str, asn: u32, rr: bool) -> (String, u32, bool) {
    (ip.to_string(), asn, rr)
}

#[tokio::test]
async fn peers_follow_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let (mut f, bgp) = follower(dir.path()).await;
    f.peers().await.unwrap();
    assert_eq!(bgp.peer_list(), [peer("10.0.0.2", 64512, false)]);
    // A node joins, a global peer is added: both appear; nothing twice.
    f.cluster
        .update_node("n3", |s| s.address = Some("10.0.0.3".parse().unwrap()))
        .await
        .unwrap();
    f.cluster
        .add_peer(&Peer {
            address: "10.0.0.100".parse().unwrap(),
            asn: 65000,
            node: None,
            settings: Default::default(),
        })
        .await
        .unwrap();
    f.peers().await.unwrap();
    f.peers().await.unwrap();
    assert_eq!(
        bgp.peer_list(),
        [
            peer("10.0.0.2", 64512, false),
            peer("10.0.0.3", 64512, false),
            peer("10.0.0.100", 65000, false)
        ]
    );
    // node remove n2; n3 gets its own AS (the peer is re-created).
    f.cluster.remove_node("n2").await.unwrap();
    f.cluster
        .update_node("n3", |s| s.asn = Some(65003))
        .await
        .unwrap();
    f.peers().await.unwrap();
    assert_eq!(
        bgp.peer_list(),
        [
            peer("10.0.0.3", 65003, false),
            peer("10.0.0.100", 65000, false)
        ]
    );
    // The mesh off and n1 a reflector: n3 becomes its client.
    f.cluster
        .set_bgp_config(&BgpConfig {
            asn: 64512,
            node_to_node_mesh: false,
            ..Default::default()
        })
        .await
        .unwrap();
    f.cluster
        .update_node("n1", |s| {
            s.route_reflector_cluster_id = Some("1.0.0.1".parse().unwrap())
        })
        .await
        .unwrap();
    f.peers().await.unwrap();
    assert_eq!(
        bgp.peer_list(),
        [
            peer("10.0.0.3", 65003, true),
            peer("10.0.0.100", 65000, false)
        ]
    );
    let kinds: Vec<&str> = f
        .table
        .lock()
        .unwrap()
        .values()
        .map(|d| d.kind.label())
        .collect();
    assert_eq!(kinds, ["route reflector client", "global"]);
}

#[tokio::test]
async fn a_new_own_as_or_cluster_id_re_establishes_the_sessions() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let (mut f, bgp) = follower(dir.path()).await;
    f.peers().await.unwrap();
    assert_eq!(bgp.local_as(), [Some(64512)]);
    let added = bgp.added.load(Ordering::SeqCst);
    // Nothing changed: nothing re-created.
    f.peers().await.unwrap();
    assert_eq!(bgp.added.load(Ordering::SeqCst), added);
    // Our own AS changes in the store: the session is re-created with it.
    f.cluster
        .update_node("n1", |s| s.asn = Some(65011))
        .await
        .unwrap();
    f.peers().await.unwrap();
    assert_eq!(bgp.local_as(), [Some(65011)]);
    assert_eq!(bgp.added.load(Ordering::SeqCst), added + 1);
    assert_eq!(f.asn.load(Ordering::SeqCst), 65011);
    // Our cluster ID changes (the mesh stays on, so the peers' configs do
    // not): the speaker gets it and the sessions are re-created.
    f.cluster
        .update_node("n1", |s| {
            s.route_reflector_cluster_id = Some("1.0.0.7".parse().unwrap())
        })
        .await
        .unwrap();
    f.peers().await.unwrap();
    assert_eq!(bgp.cluster_id(), Some("1.0.0.7".parse().unwrap()));
    assert_eq!(bgp.added.load(Ordering::SeqCst), added + 2);
    f.peers().await.unwrap();
    assert_eq!(bgp.added.load(Ordering::SeqCst), added + 2);
}

#[tokio::test]
async fn gauges_count_sessions_and_prefixes() {
    let bgp = FakeBgp::default();
    let mut peers = bgp.peers().await.unwrap();
    peers[0].prefixes_received = 3;
    peers[0].prefixes_sent = 2;
    let g = gauges(&peers);
    assert_eq!(g.sessions["Established"], 1);
    assert_eq!(g.sessions["Idle"], 0);
    assert_eq!((g.prefixes_received, g.prefixes_advertised), (3, 2));
}

#[tokio::test]
async fn the_tunnel_follows_the_ipip_pools() {
    use super::encap::{Policy, TUNNEL_NETWORK};
    use super::fakes::{data_plane, tunnel, FakeView};
    use super::tunnel::Tunnel;
    use plexus_ipam::{Allocator, Encap, Pool};

    let dir = tempfile::tempdir().unwrap();
    let (f, _) = follower(dir.path()).await;
    let mut pool = Pool {
        name: "p".into(),
        cidr: "10.96.0.0/16".parse().unwrap(),
        block_size: 26,
        nat_outgoing: false,
        encap: Encap::Ipip,
        disabled: false,
    };
    f.cluster.add_pool(&pool).await.unwrap();
    let alloc = Arc::new(Allocator::load(f.cluster.clone(), "n1").await.unwrap());
    let (dp, k) = data_plane();
    let t = Tunnel::new(
        dp.clone(),
        &FakeView,
        alloc.clone(),
        "10.0.0.1".parse().unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(t.own_subnet(), Some("10.0.0.1/24".parse().unwrap()));
    let nodes = f.cluster.nodes().await.unwrap();

    // An ipip pool: the device is up with an address of our block, held
    // in IPAM under the tunnel's own handle; the policy tunnels.
    let pools = [pool.clone()];
    let want = Policy::new(&pools, &nodes, t.own_subnet());
    let (p, r) = t.sync(want.clone(), &pools).await;
    r.unwrap();
    assert_eq!(p, want);
    let addr = tunnel(&k).expect("tunnel up");
    let held = alloc.allocations().await;
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].0, std::net::IpAddr::V4(addr));
    assert_eq!(held[0].1.network, TUNNEL_NETWORK);
    assert!(alloc.blocks().await[0].contains(&std::net::IpAddr::V4(addr)));
    // Again: nothing changes.
    let calls = k.applied();
    t.sync(want, &pools).await.1.unwrap();
    assert_eq!(k.applied(), calls);

    // The kernel refuses the device: routes stay direct, the error shows.
    let (dp2, k2) = data_plane();
    let t2 = Tunnel::new(dp2, &FakeView, alloc.clone(), "10.0.0.1".parse().unwrap())
        .await
        .unwrap();
    k2.fail(true);
    let want = Policy::new(&pools, &nodes, t2.own_subnet());
    let (p, r) = t2.sync(want, &pools).await;
    assert!(r.is_err());
    assert!(!p.needs_tunnel());

    // No ipip pool any more: the device goes down, the address is freed.
    pool.encap = Encap::None;
    let pools = [pool];
    t.sync(Policy::new(&pools, &nodes, None), &pools)
        .await
        .1
        .unwrap();
    assert_eq!(tunnel(&k), None);
    assert!(alloc.allocations().await.is_empty());
}
