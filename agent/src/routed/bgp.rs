//! What the control logic needs of the BGP speaker, as a trait so the
//! unit tests drive it with a fake; [`plexus_bgp::Speaker`] implements it.

use ipnet::IpNet;
use plexus_bgp::{BgpError, PeerStatus, Speaker};

#[async_trait::async_trait]
pub trait Announcer: Send + Sync {
    async fn originate(&self, prefix: IpNet) -> Result<(), BgpError>;
    async fn withdraw(&self, prefix: IpNet) -> Result<(), BgpError>;
    async fn peers(&self) -> Result<Vec<PeerStatus>, BgpError>;
}

#[async_trait::async_trait]
impl Announcer for Speaker {
    async fn originate(&self, prefix: IpNet) -> Result<(), BgpError> {
        Speaker::originate(self, prefix).await
    }
    async fn withdraw(&self, prefix: IpNet) -> Result<(), BgpError> {
        Speaker::withdraw(self, prefix).await
    }
    async fn peers(&self) -> Result<Vec<PeerStatus>, BgpError> {
        Speaker::status(self).await
    }
}
