//! Where reservations live. The allocator only sees this trait, so its logic is
//! tested against [`MemStore`] without a filesystem; [`crate::disk::DiskStore`]
//! is the reference-compatible directory.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::error::Error;

/// One reservation: the address and the owner record stored with it
/// (`<containerID>\r\n<ifname>`, or a legacy bare `<containerID>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub ip: IpAddr,
    /// The on-disk name, which is what gets removed (it is normally
    /// `ip.to_string()`).
    pub name: String,
    pub record: String,
}

/// The owner record the reference writes.
pub fn record(container_id: &str, ifname: &str) -> String {
    format!("{}\r\n{}", container_id.trim(), ifname)
}

/// A reservation store. Callers hold the store's lock for as long as they
/// have it (the disk store takes the lock when opened).
pub trait Store {
    /// Every reservation, in no particular order.
    fn list(&self) -> Result<Vec<Reservation>, Error>;
    /// Reserve `ip` for `record` unless it is already reserved; on success,
    /// also remember `ip` as range set `range_id`'s last reserved address.
    fn reserve(&mut self, ip: IpAddr, record: &str, range_id: usize) -> Result<bool, Error>;
    /// Remove a reservation returned by [`Store::list`] or just made.
    fn release(&mut self, r: &Reservation) -> Result<(), Error>;
    /// Range set `range_id`'s last reserved address, if recorded and valid.
    fn last_reserved(&self, range_id: usize) -> Result<Option<IpAddr>, Error>;
    /// Remove leftovers of interrupted calls (temporary files). Only safe
    /// while holding the lock.
    fn clean_leftovers(&mut self) -> Result<usize, Error> {
        Ok(0)
    }
}

/// In-memory store for tests.
#[derive(Debug, Default, Clone)]
pub struct MemStore {
    pub ips: BTreeMap<IpAddr, String>,
    pub last: BTreeMap<usize, IpAddr>,
    /// Number of `reserve` calls, to show the allocator skips known-taken
    /// addresses without asking the store.
    pub reserve_calls: usize,
}

impl Store for MemStore {
    fn list(&self) -> Result<Vec<Reservation>, Error> {
        Ok(self
            .ips
            .iter()
            .map(|(ip, r)| Reservation {
                ip: *ip,
                name: ip.to_string(),
                record: r.clone(),
            })
            .collect())
    }

    fn reserve(&mut self, ip: IpAddr, record: &str, range_id: usize) -> Result<bool, Error> {
        self.reserve_calls += 1;
        if self.ips.contains_key(&ip) {
            return Ok(false);
        }
        self.ips.insert(ip, record.to_string());
        self.last.insert(range_id, ip);
        Ok(true)
    }

    fn release(&mut self, r: &Reservation) -> Result<(), Error> {
        self.ips.remove(&r.ip);
        Ok(())
    }

    fn last_reserved(&self, range_id: usize) -> Result<Option<IpAddr>, Error> {
        Ok(self.last.get(&range_id).copied())
    }
}
