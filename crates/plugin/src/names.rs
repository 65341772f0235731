//! Random interface names: a link is created under one, then renamed or
//! moved, so creating it can never clash with an existing link's name.

use plexus_netlink::link::IFNAME_MAX;

/// `prefix` followed by 8 random hex digits (at most 15 bytes in all, so
/// `prefix` is at most 7 bytes).
pub fn random_ifname(prefix: &str) -> String {
    debug_assert!(prefix.len() + 8 <= IFNAME_MAX, "prefix {prefix:?} too long");
    let mut b = [0u8; 4];
    // SAFETY: the buffer is valid for 4 bytes.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != 4 {
        // getrandom cannot really fail for 4 bytes; fall back to time and pid.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
            ^ std::process::id().rotate_left(16);
        b = t.to_ne_bytes();
    }
    format!("{prefix}{:08x}", u32::from_ne_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_and_differ() {
        let a = random_ifname("veth");
        assert_eq!(a.len(), 12);
        assert!(a.starts_with("veth"));
        assert!(plexus_netlink::link::validate_ifname(&random_ifname("ipvl")).is_ok());
        assert_ne!(random_ifname("x"), random_ifname("x"));
    }
}
