//! What the control logic needs of the BGP speaker (peers, our prefixes,
//! session status), as a trait so the
//! unit tests drive it with a fake; [`plexus_bgp::Speaker`] implements it.

use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr};

use plexus_bgp::{AdjRibInEntry, BgpError, CommunitySet, PeerConfig, PeerStatus, Speaker};

#[async_trait::async_trait]
pub trait Announcer: Send + Sync {
    async fn add_peer(&self, peer: PeerConfig) -> Result<(), BgpError>;
    /// New settings for a configured peer: the speaker keeps the session
    /// when only policy changed. The default re-creates the peer.
    async fn update_peer(&self, peer: PeerConfig) -> Result<(), BgpError> {
        self.remove_peer(peer.address).await?;
        self.add_peer(peer).await
    }
    async fn remove_peer(&self, address: IpAddr) -> Result<(), BgpError>;
    /// BFD saw the path to the peer fail: down now, routes withdrawn.
    async fn bfd_down(&self, address: IpAddr) -> Result<(), BgpError> {
        let _ = address;
        Ok(())
    }
    async fn originate(&self, prefix: IpNet) -> Result<(), BgpError>;
    /// Originate with communities (announcing again replaces them).
    async fn originate_with(&self, prefix: IpNet, c: CommunitySet) -> Result<(), BgpError> {
        let _ = c;
        self.originate(prefix).await
    }
    async fn withdraw(&self, prefix: IpNet) -> Result<(), BgpError>;
    async fn peers(&self) -> Result<Vec<PeerStatus>, BgpError>;
    /// What was received (one peer's, or all), with each path's verdict.
    async fn adj_rib_in(&self, peer: Option<IpAddr>) -> Result<Vec<AdjRibInEntry>, BgpError> {
        let _ = peer;
        Ok(Vec::new())
    }
    async fn set_cluster_id(&self, id: Option<Ipv4Addr>) -> Result<(), BgpError>;
}

#[async_trait::async_trait]
impl Announcer for Speaker {
    async fn add_peer(&self, peer: PeerConfig) -> Result<(), BgpError> {
        Speaker::add_peer(self, peer).await
    }
    async fn update_peer(&self, peer: PeerConfig) -> Result<(), BgpError> {
        Speaker::update_peer(self, peer).await
    }
    async fn remove_peer(&self, address: IpAddr) -> Result<(), BgpError> {
        Speaker::remove_peer(self, address).await
    }
    async fn originate_with(&self, prefix: IpNet, c: CommunitySet) -> Result<(), BgpError> {
        Speaker::originate_with(self, prefix, c).await
    }
    async fn bfd_down(&self, address: IpAddr) -> Result<(), BgpError> {
        Speaker::bfd_down(self, address).await
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
    async fn adj_rib_in(&self, peer: Option<IpAddr>) -> Result<Vec<AdjRibInEntry>, BgpError> {
        Speaker::adj_rib_in(self, peer).await
    }
    async fn set_cluster_id(&self, id: Option<Ipv4Addr>) -> Result<(), BgpError> {
        Speaker::set_cluster_id(self, id).await
    }
}
