//! The node end of a pod's veth is named after its attachment, so DEL, CHECK
//! and an operator find it from the container ID and interface name alone
//! (Calico does the same with `cali` + 11 hex digits of a hash):
//! `plx` + the first 12 hex digits of SHA-256(`CONTAINERID` `/` `IFNAME`),
//! 15 bytes, the kernel's limit. `/` cannot occur in an interface name, so
//! two attachments never hash the same input.

use sha2::{Digest, Sha256};

/// The prefix of every node-side veth this plugin creates.
pub const HOST_PREFIX: &str = "plx";
const HEX_DIGITS: usize = 12;

/// The node-side veth name for attachment (`container_id`, `ifname`).
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    let mut h = Sha256::new();
    h.update(container_id.as_bytes());
    h.update(b"/");
    h.update(ifname.as_bytes());
    let hex: String = h
        .finalize()
        .iter()
        .take(HEX_DIGITS / 2)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{HOST_PREFIX}{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_valid_and_distinct() {
        let a = host_veth_name("c1", "eth0");
        assert_eq!(a, host_veth_name("c1", "eth0"));
        assert_eq!(a.len(), 15);
        assert!(a.starts_with("plx"));
        assert!(a[3..].bytes().all(|b| b.is_ascii_hexdigit()));
        plexus_netlink::link::validate_ifname(&a).unwrap();
        // Same container, other interface; the split point matters.
        assert_ne!(a, host_veth_name("c1", "net1"));
        assert_ne!(host_veth_name("c1e", "th0"), a);
        // A known value (`printf c1/eth0 | sha256sum`), so a change of
        // scheme is a visible decision: nodes would lose track of their veths.
        assert_eq!(a, "plxd72e032fedd9");
    }
}
