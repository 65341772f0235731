//! Files in the run directory (`--run-dir`, default /run/plexus):
//!
//! - `subnet.env`: the lease, flannel's keys, for the CNI plugin; written
//!   atomically once the lease is held, read back at start-up to ask for
//!   the same subnet again.
//! - `<device>.mac`: the VTEP MAC of a VXLAN device, so a device deleted
//!   while the agent was down comes back with the MAC the other nodes
//!   already have (flannel #1795).
//! - `ready`: present while the lease is held and the data plane programmed.
//! - `plexusd.sock`: the control socket ([`crate::ctlsock`]).

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use ipnet::{Ipv4Net, Ipv6Net};
use plexus_base::files::{read_limited_string, write_atomic};
use plexus_netlink::MacAddr;
use plexus_subnet::SubnetEnv;

pub const SUBNET_ENV: &str = "subnet.env";
pub const READY: &str = "ready";
pub const SOCKET: &str = "plexusd.sock";
const SMALL_FILE: u64 = 64 * 1024;

pub fn subnet_env_path(run_dir: &Path) -> PathBuf {
    run_dir.join(SUBNET_ENV)
}

pub fn write_subnet_env(run_dir: &Path, env: &SubnetEnv) -> anyhow::Result<()> {
    let path = subnet_env_path(run_dir);
    write_atomic(&path, env.render().as_bytes(), true)
        .with_context(|| format!("write {}", path.display()))
}

/// The subnets of the lease this node held before, from its subnet.env
/// (FLANNEL_SUBNET is the first address; the lease is its network).
/// A missing or unreadable file is no previous lease.
pub fn previous_subnets(run_dir: &Path) -> Option<(Option<Ipv4Net>, Option<Ipv6Net>)> {
    let path = subnet_env_path(run_dir);
    let text = read_limited_string(&path, SMALL_FILE).ok()?;
    match SubnetEnv::parse(&text) {
        Ok(env) => Some((
            env.subnet.map(|n| n.trunc()),
            env.ipv6_subnet.map(|n| n.trunc()),
        )),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring the previous lease file");
            None
        }
    }
}

fn mac_path(run_dir: &Path, device: &str) -> PathBuf {
    run_dir.join(format!("{device}.mac"))
}

/// The VTEP MAC remembered for `device`, if any.
pub fn remembered_mac(run_dir: &Path, device: &str) -> Option<MacAddr> {
    let text = read_limited_string(&mac_path(run_dir, device), 64).ok()?;
    text.trim().parse().ok()
}

pub fn remember_mac(run_dir: &Path, device: &str, mac: MacAddr) -> anyhow::Result<()> {
    let path = mac_path(run_dir, device);
    write_atomic(&path, format!("{mac}\n").as_bytes(), true)
        .with_context(|| format!("write {}", path.display()))
}

/// A random locally administered unicast MAC.
pub fn random_mac() -> anyhow::Result<MacAddr> {
    let mut b = [0u8; 6];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("read /dev/urandom for a VTEP MAC")?;
    b[0] = (b[0] & 0xfe) | 0x02;
    Ok(MacAddr(b))
}

pub fn mark_ready(run_dir: &Path) -> anyhow::Result<()> {
    let path = run_dir.join(READY);
    write_atomic(&path, b"ready\n", false).with_context(|| format!("write {}", path.display()))
}

/// Removes the readiness file (and nothing else: the lease file stays, so
/// pods keep being set up from it while the agent restarts).
pub fn clear_ready(run_dir: &Path) {
    let path = run_dir.join(READY);
    if let Err(e) = std::fs::remove_file(&path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove readiness file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trip_and_random_macs_are_local_unicast() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(remembered_mac(dir.path(), "flannel.1"), None);
        let mac = random_mac().unwrap();
        assert!(mac.is_local_unicast());
        remember_mac(dir.path(), "flannel.1", mac).unwrap();
        assert_eq!(remembered_mac(dir.path(), "flannel.1"), Some(mac));
        mark_ready(dir.path()).unwrap();
        assert!(dir.path().join(READY).exists());
        clear_ready(dir.path());
        clear_ready(dir.path());
        assert!(!dir.path().join(READY).exists());
        assert_eq!(previous_subnets(dir.path()), None);
    }
}
