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
