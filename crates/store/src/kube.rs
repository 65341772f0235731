//! placeholder while being written
use futures::stream::BoxStream;
use plexus_subnet::{Lease, NetworkConfig};

use crate::{
    AcquireRequest, LeaseEvent, LeaseRegistry, LeaseSnapshot, Revision, StoreError, StoreOptions,
};
#[derive(Debug)]
pub struct KubeLeaseRegistry;
impl KubeLeaseRegistry {
    pub async fn connect(_opts: &StoreOptions) -> Result<Self, StoreError> {
        Err(StoreError::Other(
            "placeholder: kubernetes store not written yet".into(),
        ))
    }
}
#[async_trait::async_trait]
impl LeaseRegistry for KubeLeaseRegistry {
    async fn network_config(&self) -> Result<NetworkConfig, StoreError> {
        unreachable!()
    }
    async fn acquire(&self, _req: &AcquireRequest) -> Result<Lease, StoreError> {
        unreachable!()
    }
    async fn renew(&self, _lease: &Lease) -> Result<(), StoreError> {
        unreachable!()
    }
    async fn list(&self) -> Result<LeaseSnapshot, StoreError> {
        unreachable!()
    }
    async fn watch(
        &self,
        _after: Revision,
    ) -> Result<BoxStream<'static, Result<LeaseEvent, StoreError>>, StoreError> {
        unreachable!()
    }
}
