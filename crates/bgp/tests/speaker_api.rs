//! The agent-facing API without any socket: no listener, passive peers
//! only, so nothing touches the network.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use plexus_bgp::fsm::State;
use plexus_bgp::{BgpError, PeerConfig, Speaker, SpeakerConfig};

fn cfg() -> SpeakerConfig {
    let mut c = SpeakerConfig::new(Ipv4Addr::new(10, 0, 0, 1), 64512);
    c.listen = None;
    c
}

fn passive(addr: &str, asn: u32) -> PeerConfig {
    let mut p = PeerConfig::new(addr.parse().unwrap(), asn);
    p.passive = true;
    p
}

#[tokio::test]
async fn bad_configuration_is_refused_with_a_reason() {
    let mut c = cfg();
    c.local_as = 0;
    let e = Speaker::start(c).await.unwrap_err();
    assert!(e.to_string().contains("local AS must not be 0"), "{e}");
    let mut c = cfg();
    c.hold_time = 2;
    let e = Speaker::start(c).await.unwrap_err();
    assert!(e.to_string().contains("hold time 2"), "{e}");
    let mut c = cfg();
    c.router_id = Ipv4Addr::UNSPECIFIED;
    assert!(matches!(Speaker::start(c).await, Err(BgpError::Config(_))));
}

#[tokio::test]
async fn peers_are_added_listed_and_removed() {
    let (s, _feed) = Speaker::start(cfg()).await.unwrap();
    s.add_peer(passive("10.0.0.2", 64512)).await.unwrap();
    s.add_peer(passive("fd00::2", 65001)).await.unwrap();
    assert!(matches!(
        s.add_peer(passive("10.0.0.2", 64512)).await,
        Err(BgpError::PeerExists(_))
    ));
    // An IPv4-mapped address is the same peer.
    assert!(matches!(
        s.add_peer(passive("::ffff:10.0.0.2", 64512)).await,
        Err(BgpError::PeerExists(_))
    ));
    let e = s.add_peer(passive("10.0.0.3", 0)).await.unwrap_err();
    assert!(e.to_string().contains("AS 0"), "{e}");

    let st = s.status().await.unwrap();
    assert_eq!(st.len(), 2);
    assert_eq!(st[0].address, "10.0.0.2".parse::<IpAddr>().unwrap());
    assert!(st[0].ibgp && !st[1].ibgp);
    // Passive peers wait in Active.
    assert!(st.iter().all(|p| p.state == State::Active && !p.synced));
    // What plexusctl bgp status gets over the run-dir socket.
    let json = serde_json::to_value(&st[1]).unwrap();
    assert_eq!(json["address"], "fd00::2");
    assert_eq!(json["state"], "Active");
    assert_eq!(json["remote_as"], 65001);
    assert!(matches!(
        s.refresh("10.0.0.2".parse().unwrap(), plexus_bgp::codec::Afi::Ipv4)
            .await,
        Err(BgpError::NotEstablished(_))
    ));

    s.remove_peer("10.0.0.2".parse().unwrap()).await.unwrap();
    assert!(matches!(
        s.remove_peer("10.0.0.2".parse().unwrap()).await,
        Err(BgpError::NoSuchPeer(_))
    ));
    assert_eq!(s.status().await.unwrap().len(), 1);
    s.shutdown().await;
}

#[tokio::test]
async fn originated_prefixes_are_in_the_loc_rib_and_not_in_the_feed() {
    let (s, mut feed) = Speaker::start(cfg()).await.unwrap();
    // Host bits are cleared.
    s.originate("10.244.1.5/26".parse().unwrap()).await.unwrap();
    s.originate("fd00:244::/64".parse().unwrap()).await.unwrap();
    let rib = s.loc_rib().await.unwrap();
    let prefixes: Vec<IpNet> = rib.iter().map(|e| e.prefix).collect();
    assert_eq!(
        prefixes,
        vec![
            "10.244.1.0/26".parse::<IpNet>().unwrap(),
            "fd00:244::/64".parse().unwrap()
        ]
    );
    assert!(rib.iter().all(|e| e.peer.is_none()));
    s.withdraw("10.244.1.0/26".parse().unwrap()).await.unwrap();
    assert_eq!(s.loc_rib().await.unwrap().len(), 1);
    assert!(feed.try_recv().is_err());
    s.shutdown().await;
}
