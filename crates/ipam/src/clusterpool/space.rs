//! Address spaces: which ranges share addresses. Ranges with the same
//! `network_name` and `enable_overlapping_ranges` on share one space, so an
//! address is never given twice however the ranges overlap; with it off a
//! range is a space of its own (configurations naming the same range and
//! network name still share it); different network names never share.

use ipnet::IpNet;

use crate::layout::block_key;
use crate::IpamError;

/// One space, by its id (a store key segment, see [`super::layout`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Space {
    pub id: String,
    pub network_name: String,
    pub overlapping: bool,
}

impl Space {
    /// The space `range` allocates from. A network name must be a valid
    /// name (letters, digits, `.`, `_`, `-`): it becomes part of a key.
    pub fn of(network_name: &str, overlapping: bool, range: &IpNet) -> Result<Space, IpamError> {
        let net = if network_name.is_empty() {
            "-".to_string()
        } else {
            crate::validate::name("network_name", network_name)?;
            network_name.to_string()
        };
        let part = if overlapping {
            "shared".to_string()
        } else {
            block_key(&range.trunc())
        };
        Ok(Space {
            id: format!("{net}/{part}"),
            network_name: network_name.to_string(),
            overlapping,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        let r: IpNet = "10.0.0.5/24".parse().unwrap();
        assert_eq!(Space::of("", true, &r).unwrap().id, "-/shared");
        assert_eq!(Space::of("blue", true, &r).unwrap().id, "blue/shared");
        assert_eq!(Space::of("", false, &r).unwrap().id, "-/10.0.0.0-24");
        assert_ne!(
            Space::of("", false, &r).unwrap(),
            Space::of("", false, &"10.0.0.0/25".parse().unwrap()).unwrap()
        );
        assert!(Space::of("a/b", true, &r).is_err());
        assert!(Space::of("-x", true, &r).is_err());
    }
}
