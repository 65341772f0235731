//! What the control logic needs of the BGP speaker (peers, our prefixes,
//! session status), as a trait so the
//! unit tests drive it with a fake; [`plexus_bgp::Speaker`] implements it.

use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr};

use plexus_bgp::{BgpError, PeerConfig, PeerStatus, Speaker};

#[async_trait::async_trait]
pub trait Announcer: Send + Sync {
    async fn add_peer(&self, peer: PeerConfig) -> Result<(), BgpError>;
    async fn remove_peer(&self, address: IpAddr) -> Result<(), BgpError>;
    async fn originate(&self, prefix: IpNet) -> Result<(), BgpError>;
    async fn withdraw(&self, prefix: IpNet) -> Result<(), BgpError>;
    async fn peers(&self) -> Result<Vec<PeerStatus>, BgpError>;
    async fn set_cluster_id(&self, id: Option<Ipv4Addr>) -> Result<(), BgpError>;
}

#[async_trait::async_trait]
impl Announcer for Speaker {
    async fn add_peer(&self, peer: PeerConfig) -> Result<(), BgpError> {
        Speaker::add_peer(self, peer).await
    }
    async fn remove_peer(&self, address: IpAddr) -> Result<(), BgpError> {
        Speaker::remove_peer(self, address).await
    }
    async fn originate(&self, prefix: IpNet) -> Result<(), BgpError> {
        Speaker::originate(self, prefix).await
    }
    async fn withdraw(&self, prefix: IpNet) -> Result<(), BgpError> {
        Speaker::withdraw(self, prefix).await
    }
    async fn peers(&self) -> Result<Vec<PeerStatus>, BgpError> {
        Speaker::status(self).await
    }
    async fn set_cluster_id(&self, id: Option<Ipv4Addr>) -> Result<(), BgpError> {
        Speaker::set_cluster_id(self, id).await
    }
}
