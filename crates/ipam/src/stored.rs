//! Typed reads and writes of JSON records in the [`Kv`] store.

use plexus_store::{Kv, Revision};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::IpamError;

/// A record with the revision it was read at (for compare-and-swap).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    pub value: T,
    pub mod_revision: Revision,
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, IpamError> {
    serde_json::from_slice(bytes).map_err(|e| IpamError::Corrupt {
        key: key.to_string(),
        error: e.to_string(),
    })
}

pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Our records have string keys and plain fields: serialising cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

pub async fn get<T: DeserializeOwned>(
    kv: &dyn Kv,
    key: &str,
) -> Result<Option<Versioned<T>>, IpamError> {
    let Some(kv) = kv.get(key).await? else {
        return Ok(None);
    };
    Ok(Some(Versioned {
        value: decode(key, &kv.value)?,
        mod_revision: kv.mod_revision,
    }))
}

/// Every record under `prefix`. A record that does not parse is an error
/// naming its key: an operator must see a damaged store, not a partial view.
pub async fn list<T: DeserializeOwned>(
    kv: &dyn Kv,
    prefix: &str,
) -> Result<Vec<Versioned<T>>, IpamError> {
    kv.range(prefix)
        .await?
        .kvs
        .iter()
        .map(|kv| {
            Ok(Versioned {
                value: decode(&kv.key, &kv.value)?,
                mod_revision: kv.mod_revision,
            })
        })
        .collect()
}
