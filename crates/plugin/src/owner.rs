//! Which attachment a link belongs to, recorded in the link's alias
//! (IFLA_IFALIAS) at ADD: DEL finds a host veth by it when the pod netns is
//! gone, and refuses to delete a pod interface that is not this
//! attachment's (a DEL with the wrong CNI_NETNS).

use plexus_netlink::link::ALIAS_MAX;
use sha2::{Digest, Sha256};

/// `PLUGIN:CONTAINERID:IFNAME`, readable for an operator. When that does not
/// fit in an alias (container IDs have no length limit in libcni), the
/// container ID is replaced by `#` and a hash of it; `#` never appears in a
/// container ID, so the two forms cannot collide.
pub fn alias(plugin: &str, container_id: &str, ifname: &str) -> String {
    let plain = format!("{plugin}:{container_id}:{ifname}");
    if plain.len() <= ALIAS_MAX {
        return plain;
    }
    let digest = Sha256::digest(container_id.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{plugin}:#{hex}:{ifname}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_fit_and_stay_distinct() {
        assert_eq!(
            alias("plexus-bridge", "c1", "eth0"),
            "plexus-bridge:c1:eth0"
        );
        let long_a = "a".repeat(65_000);
        let long_b = format!("{}b", "a".repeat(64_999));
        let (a, b) = (
            alias("plexus-bridge", &long_a, "eth0"),
            alias("plexus-bridge", &long_b, "eth0"),
        );
        assert!(a.len() <= ALIAS_MAX && b.len() <= ALIAS_MAX);
        assert_ne!(a, b);
        assert_eq!(a, alias("plexus-bridge", &long_a, "eth0"));
        // A 300-character ID (accepted by libcni) still gets an alias.
        assert!(alias("plexus-bridge", &"c".repeat(300), "eth0").len() <= ALIAS_MAX);
    }
}
