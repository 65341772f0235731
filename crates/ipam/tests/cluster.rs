//! The cluster configuration operations against the embedded store.

use std::sync::Arc;

use plexus_ipam::{Allocator, BgpConfig, Cluster, Encap, Handle, IpamError, Layout, Peer, Pool};
use plexus_store::{FileKv, Kv};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn pool(name: &str, cidr: &str) -> Pool {
    Pool {
        name: name.into(),
        cidr: cidr.parse().unwrap(),
        block_size: plexus_ipam::default_block_size(&cidr.parse().unwrap()),
        nat_outgoing: true,
        encap: Encap::IpipCrossSubnet,
        disabled: false,
    }
}

fn cluster(dir: &tempfile::TempDir) -> (Arc<dyn Kv>, Cluster) {
    let kv: Arc<dyn Kv> = Arc::new(FileKv::open(&dir.path().join("s.json")).unwrap());
    (kv.clone(), Cluster::new(kv, Layout::new("/t")))
}

#[test]
fn pools_are_validated_listed_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let (kv, c) = cluster(&dir);
        c.add_pool(&pool("a", "10.10.0.0/16")).await.unwrap();
        let mut v6 = pool("v6", "fd00:10::/48");
        v6.encap = Encap::None;
        c.add_pool(&v6).await.unwrap();
        let e = c.add_pool(&pool("b", "10.10.128.0/24")).await.unwrap_err();
        assert!(
            matches!(&e, IpamError::Invalid(m) if m.contains("overlaps pool a (10.10.0.0/16)")),
            "{e}"
        );
        let e = c.add_pool(&pool("a", "10.11.0.0/16")).await.unwrap_err();
        assert!(
            matches!(&e, IpamError::Conflict(m) if m.contains("already exists")),
            "{e}"
        );
        let mut bad = pool("c", "10.12.0.0/16");
        bad.block_size = 19;
        assert!(c
            .add_pool(&bad)
            .await
            .unwrap_err()
            .to_string()
            .contains("outside 20..32"));
        let names: Vec<String> = c
            .pools()
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(names, ["a", "v6"]);
        // Stored as documented.
        let raw = kv.get("/t/pools/a").await.unwrap().unwrap().value;
        let v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(v["blockSize"], 26);
        assert_eq!(v["encap"], "ipip-cross-subnet");
        assert_eq!(v["natOutgoing"], true);

        let off = c.update_pool("a", |p| p.disabled = true).await.unwrap();
        assert!(off.disabled && off.nat_outgoing, "other settings kept");
        assert!(c.pool("a").await.unwrap().unwrap().disabled);
        let e = c
            .update_pool("v6", |p| p.encap = Encap::Ipip)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("IPv4 only"), "{e}");
        let e = c.update_pool("a", |p| p.block_size = 24).await.unwrap_err();
        assert!(e.to_string().contains("cannot change"), "{e}");
        assert!(matches!(
            c.update_pool("zz", |_| ()).await,
            Err(IpamError::NotFound(_))
        ));
        c.update_pool("a", |p| p.disabled = false).await.unwrap();

        let a = Allocator::load(c.clone(), "n1").await.unwrap();
        a.allocate(&Handle::new("net", "c1", "eth0"), "a")
            .await
            .unwrap();
        let e = c.remove_pool("a", false).await.unwrap_err();
        assert!(
            matches!(&e, IpamError::InUse(m) if m.contains("1 address(es) in use in 1 block")),
            "{e}"
        );
        assert!(
            c.pool("a").await.unwrap().is_some(),
            "refused: nothing changed"
        );
        let freed = c.remove_pool("a", true).await.unwrap();
        assert_eq!((freed.blocks, freed.addresses), (1, 1));
        assert!(c.blocks().await.unwrap().is_empty());
        assert!(matches!(
            c.remove_pool("a", false).await,
            Err(IpamError::NotFound(_))
        ));
        // An empty pool goes without --force.
        c.remove_pool("v6", false).await.unwrap();
    });
}

#[test]
fn bgp_settings_peers_and_nodes() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let (_, c) = cluster(&dir);
        assert_eq!(c.bgp_config().await.unwrap(), BgpConfig::default());
        let cfg = BgpConfig {
            asn: 4_200_000_000,
            node_to_node_mesh: false,
            ..Default::default()
        };
        c.set_bgp_config(&cfg).await.unwrap();
        assert_eq!(c.bgp_config().await.unwrap(), cfg);
        let peer = Peer {
            address: "192.0.2.1".parse().unwrap(),
            asn: 65001,
            node: None,
            settings: Default::default(),
        };
        c.add_peer(&peer).await.unwrap();
        let e = c.add_peer(&peer).await.unwrap_err();
        assert!(e.to_string().contains("already exists"), "{e}");
        let p2 = Peer {
            address: "2001:db8::2".parse().unwrap(),
            asn: 65002,
            node: Some("n1".into()),
            settings: Default::default(),
        };
        c.add_peer(&p2).await.unwrap();
        assert_eq!(c.peers().await.unwrap(), vec![peer.clone(), p2]);
        c.remove_peer(&peer.address).await.unwrap();
        assert!(matches!(
            c.remove_peer(&peer.address).await,
            Err(IpamError::NotFound(_))
        ));

        c.update_node("n1", |n| n.asn = Some(65010)).await.unwrap();
        let n = c
            .update_node("n1", |n| {
                n.route_reflector_cluster_id = Some("244.0.0.1".parse().unwrap())
            })
            .await
            .unwrap();
        assert_eq!(n.asn, Some(65010), "an update keeps the other fields");
        assert_eq!(c.nodes().await.unwrap(), vec![n]);
        assert!(c.update_node("a/b", |_| ()).await.is_err());
    });
}
