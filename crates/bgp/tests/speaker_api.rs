//! The agent-facing API without any socket: no listener, passive peers
//! only, so nothing touches the network.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use plexus_bgp::fsm::State;
use plexus_bgp::{BgpError, PeerConfig, Speaker, SpeakerConfig};

fn cfg() -> SpeakerConfig {
    let mut c = SpeakerConfig::new(Ipv4Addr::new(10, 0, 0, 1), 64512);
    c.listen = Vec::new();
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

#[tokio::test]
async fn per_peer_settings_are_checked_and_a_password_never_shows() {
    use plexus_bgp::policy::{BgpFilter, FilterAction, FilterRule, MatchOperator};
    use plexus_bgp::speaker::{MaxPrefixes, Password};
    let (s, _feed) = Speaker::start(cfg()).await.unwrap();
    let mut p = passive("10.0.0.2", 65001);
    p.password = Some(Password::new("x".repeat(81)));
    let e = s.add_peer(p.clone()).await.unwrap_err();
    assert!(e.to_string().contains("1 to 80 bytes"), "{e}");
    p.password = Some(Password::new("s3cret"));
    assert!(!format!("{p:?}").contains("s3cret"));
    p.ttl_security = Some(0);
    assert!(s.add_peer(p.clone()).await.is_err());
    p.ttl_security = Some(1);
    p.max_prefixes = Some(MaxPrefixes {
        limit: 0,
        restart: 10,
    });
    assert!(s.add_peer(p.clone()).await.is_err());
    p.max_prefixes = Some(MaxPrefixes {
        limit: 100,
        restart: 10,
    });
    p.filters = vec![BgpFilter {
        name: "bad".into(),
        import_v4: vec![FilterRule::new(FilterAction::Reject)
            .cidr(MatchOperator::In, "fd00::/8".parse().unwrap())],
        ..BgpFilter::default()
    }];
    let e = s.add_peer(p.clone()).await.unwrap_err();
    assert!(e.to_string().contains("filter \"bad\""), "{e}");
    p.filters.clear();
    // No listener: a password is only used on outgoing connections.
    s.add_peer(p.clone()).await.unwrap();
    let st = &s.status().await.unwrap()[0];
    assert!(
        st.last_error.as_deref().unwrap_or("").contains("TCP MD5"),
        "{st:?}"
    );
    // Updates are checked the same way, and need the peer to exist.
    let mut q = p.clone();
    q.max_prefixes = Some(MaxPrefixes {
        limit: 1,
        restart: 0,
    });
    assert!(s.update_peer(q).await.is_err());
    let mut other = p.clone();
    other.address = "10.0.0.9".parse().unwrap();
    assert!(matches!(
        s.update_peer(other).await,
        Err(BgpError::NoSuchPeer(_))
    ));
    s.shutdown().await;
}
