//! How the control socket answers a failure: `{"error": ..., "code": ...}`
//! ([`AgentError`]) with the CNI error code the plugin passes on. plexus-ipam
//! returns domain errors; this is the one place they become CNI codes.

use plexus_agent_api::AgentError;
use plexus_cni::error::{plexus_codes, ErrorCode};
use plexus_ipam::clusterpool::RANGE_EXHAUSTED;
use plexus_ipam::IpamError;
use plexus_store::StoreError;
use serde_json::{json, Value};

/// An answer saying `e`, with `code` (`None`: the plugin's generic code).
pub fn error(e: impl std::fmt::Display, code: Option<u32>) -> Value {
    serde_json::to_value(AgentError {
        error: e.to_string(),
        code,
    })
    .unwrap_or_else(|_| json!({"error": "internal"}))
}

/// The code of a routed-network IPAM failure: the pool exhausted (or its
/// addresses in use) is 102, address unavailable; a store that cannot be
/// reached, a store reset or writers that kept colliding is 11, try again
/// later; a pool that does not exist, is disabled or bad input is 7,
/// invalid network config. `None`: a failure of the agent itself (a
/// damaged record, a store that answered an error).
pub fn routed_code(e: &IpamError) -> Option<u32> {
    match e {
        IpamError::Exhausted(_) | IpamError::InUse(_) => Some(plexus_codes::ADDRESS_UNAVAILABLE),
        IpamError::Conflict(_)
        | IpamError::Reset(_)
        | IpamError::Store(StoreError::Unavailable(_)) => Some(ErrorCode::TryAgainLater.code()),
        IpamError::Invalid(_) | IpamError::NotFound(_) => Some(ErrorCode::InvalidConfig.code()),
        IpamError::Corrupt { .. } | IpamError::Store(_) => None,
    }
}

/// The code of a cluster-IPAM failure: as [`routed_code`], except that a
/// range with nothing left is 100 (whereabouts' code).
pub fn cluster_code(e: &IpamError) -> Option<u32> {
    match e {
        IpamError::Exhausted(_) => Some(RANGE_EXHAUSTED),
        other => routed_code(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipam_failures_as_cni_codes() {
        assert_eq!(routed_code(&IpamError::Exhausted("x".into())), Some(102));
        assert_eq!(cluster_code(&IpamError::Exhausted("x".into())), Some(100));
        let away = IpamError::Store(StoreError::Unavailable("x".into()));
        assert_eq!(
            (routed_code(&away), cluster_code(&away)),
            (Some(11), Some(11))
        );
        assert_eq!(routed_code(&IpamError::Reset("x".into())), Some(11));
        assert_eq!(routed_code(&IpamError::NotFound("x".into())), Some(7));
        let corrupt = IpamError::Corrupt {
            key: "k".into(),
            error: "e".into(),
        };
        assert_eq!(cluster_code(&corrupt), None);
    }
}
