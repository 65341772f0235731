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
//! - `routed-blocks.json`: the routed network's blocks of this node with
//!   every allocation ([`BlockJournal`]): what the node writes back when
//!   the store lost them. In the run directory on purpose: a reboot ends
//!   the pods, and the record with them.
//! - `public-ip`: the address this node last published, so a node whose
//!   address changed recognises its own old lease.

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
pub const BLOCKS: &str = "routed-blocks.json";
pub const PUBLIC_IP: &str = "public-ip";
/// Bound on the block journal (a node with thousands of pods fits).
const BLOCKS_MAX: u64 = 64 << 20;
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

/// The public IPv4 address this node published last, if it recorded one.
pub fn previous_public_ip(run_dir: &Path) -> Option<std::net::Ipv4Addr> {
    read_limited_string(&run_dir.join(PUBLIC_IP), 64)
        .ok()?
        .trim()
        .parse()
        .ok()
}

pub fn remember_public_ip(run_dir: &Path, ip: std::net::Ipv4Addr) -> anyhow::Result<()> {
    let path = run_dir.join(PUBLIC_IP);
    write_atomic(&path, format!("{ip}\n").as_bytes(), true)
        .with_context(|| format!("write {}", path.display()))
}

/// The routed network's record of this node's blocks, beside the store
/// (see [`plexus_ipam::Journal`]). Written after every change; a write
/// that fails is logged (the store stays the record).
#[derive(Debug)]
pub struct BlockJournal {
    path: PathBuf,
}

impl BlockJournal {
    pub fn new(run_dir: &Path) -> BlockJournal {
        BlockJournal {
            path: run_dir.join(BLOCKS),
        }
    }
}

impl plexus_ipam::Journal for BlockJournal {
    fn load(&self) -> Vec<plexus_ipam::Block> {
        let bytes = match plexus_base::files::read_limited(&self.path, BLOCKS_MAX) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "ignoring the block journal");
                return Vec::new();
            }
        };
        serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(path = %self.path.display(), error = %e, "ignoring a damaged block journal");
            Vec::new()
        })
    }

    fn save(&self, blocks: &[plexus_ipam::Block]) {
        let bytes = serde_json::to_vec(blocks).unwrap_or_default();
        // Not fsynced: the run directory is a tmpfs, and the store is
        // written (and answered) before this.
        if let Err(e) = write_atomic(&self.path, &bytes, false) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot write the block journal");
        }
    }
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
        assert_eq!(previous_public_ip(dir.path()), None);
        remember_public_ip(dir.path(), "10.0.0.7".parse().unwrap()).unwrap();
        assert_eq!(
            previous_public_ip(dir.path()),
            Some("10.0.0.7".parse().unwrap())
        );
    }

    #[test]
    fn block_journal_round_trip() {
        use plexus_ipam::Journal;
        let dir = tempfile::tempdir().unwrap();
        let j = BlockJournal::new(dir.path());
        assert!(j.load().is_empty());
        let b = plexus_ipam::Block {
            cidr: "10.96.0.64/26".parse().unwrap(),
            pool: "p".into(),
            node: "n1".into(),
            allocations: [(3, plexus_ipam::Handle::new("net", "c1", "eth0"))].into(),
        };
        j.save(std::slice::from_ref(&b));
        assert_eq!(j.load(), [b]);
        std::fs::write(dir.path().join(BLOCKS), b"{junk").unwrap();
        assert!(j.load().is_empty());
    }
}
