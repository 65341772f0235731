//! Input validation exactly as libcni does it (pkg/utils), so a name that one
//! runtime accepts is accepted by every Plexus component and vice versa.

use plexus_netlink::ifname::{ifname_problem, IfnameProblem};

use crate::error::{CniError, ErrorCode};

/// Linux IFNAMSIZ minus the trailing NUL (the kernel's rule is
/// plexus-netlink's, the one copy every check shares).
pub use plexus_netlink::ifname::MAX_IFNAME_LEN;

fn is_valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The longest container ID Plexus accepts, in bytes. Runtimes use far
/// less: containerd, CRI-O, Docker and podman pass a 64-character hex ID,
/// cnitool and plexusctl a short name or a hash. libcni sets no limit (an
/// environment string may hold 128 KiB), but an ID travels into every
/// lease record host-local writes, every file name the result cache and
/// the meta plugin derive from it, and every allocation plexusd stores in
/// a block record (and sends in each watch event of that block), so an
/// unbounded one is a way to bloat all of them. 1 KiB is sixteen times
/// what any runtime sends and small next to those records. A longer ID is
/// refused with code 4 (invalid environment) before anything happens;
/// plexusd refuses one on its socket with the same limit
/// (`plexus_agent_api::MAX_CONTAINER_ID`).
pub const MAX_CONTAINER_ID_LEN: usize = 1024;

pub fn container_id(id: &str) -> Result<(), CniError> {
    if id.len() > MAX_CONTAINER_ID_LEN {
        return Err(CniError::invalid_env(format!(
            "containerID is {} bytes long; Plexus accepts at most {MAX_CONTAINER_ID_LEN}",
            id.len()
        )));
    }
    if id.is_empty() {
        return Err(CniError::new(
            ErrorCode::UnknownContainer,
            "missing containerID",
        ));
    }
    if !is_valid_name(id) {
        return Err(CniError::invalid_env("invalid characters in containerID").with_details(id));
    }
    Ok(())
}

pub fn network_name(name: &str) -> Result<(), CniError> {
    if name.is_empty() {
        return Err(CniError::invalid_config("missing network name"));
    }
    if !is_valid_name(name) {
        return Err(
            CniError::invalid_config("invalid characters found in network name").with_details(name),
        );
    }
    Ok(())
}

/// CNI_IFNAME: code 4 when the kernel would refuse it.
pub fn interface_name(name: &str) -> Result<(), CniError> {
    let Some(p) = ifname_problem(name) else {
        return Ok(());
    };
    let e = CniError::invalid_env(p.reason());
    Err(match p {
        IfnameProblem::Empty => e,
        IfnameProblem::TooLong => e.with_details(format!(
            "interface name \"{name}\" should be at most {MAX_IFNAME_LEN} characters"
        )),
        IfnameProblem::Dots | IfnameProblem::BadChar => e.with_details(name),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids() {
        assert!(container_id("abc-123_x.y").is_ok());
        assert_eq!(container_id("").unwrap_err().code, 3);
        for bad in ["-abc", "_a", ".a", "a b", "a/b", "a;b", "ä"] {
            assert_eq!(container_id(bad).unwrap_err().code, 4, "{bad}");
        }
        assert!(container_id(&"a".repeat(64)).is_ok());
        assert!(container_id(&"a".repeat(MAX_CONTAINER_ID_LEN)).is_ok());
        for len in [MAX_CONTAINER_ID_LEN + 1, 900 << 10] {
            let e = container_id(&"a".repeat(len)).unwrap_err();
            assert_eq!(e.code, 4);
            assert!(e.msg.contains("at most 1024"), "{}", e.msg);
        }
    }

    #[test]
    fn network_names() {
        assert!(network_name("my-net.1").is_ok());
        assert_eq!(network_name("").unwrap_err().code, 7);
        assert_eq!(network_name("../etc").unwrap_err().code, 7);
        assert_eq!(network_name("a/b").unwrap_err().code, 7);
    }

    #[test]
    fn interface_names() {
        assert!(interface_name("eth0").is_ok());
        assert!(interface_name("a23456789012345").is_ok());
        for bad in [
            "",
            "a234567890123456",
            ".",
            "..",
            "et/h0",
            "eth:0",
            "eth 0",
            "eth\t0",
            "eth\0x",
        ] {
            assert_eq!(interface_name(bad).unwrap_err().code, 4, "{bad:?}");
        }
    }
}
