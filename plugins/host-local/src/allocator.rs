//! Every allocation decision, over a [`Store`] the caller has locked.
//!
//! Order and matching follow the reference (`allocator.go`, `disk/backend.go`)
//! so both plugins agree on which address comes next and on who owns what.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;
use plexus_cni::config::Attachment;

use crate::error::Error;
use crate::range::{Range, RangeIter, RangeSet};
use crate::store::{record, Reservation, Store};

/// One allocated address and the range it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// Address with the subnet's prefix length, host bits kept.
    pub address: IpNet,
    pub gateway: IpAddr,
}

impl Allocation {
    fn new(ip: IpAddr, r: &Range) -> Self {
        Allocation {
            address: IpNet::new(ip, r.subnet.prefix_len()).expect("prefix fits the family"),
            gateway: r.gateway,
        }
    }
}

/// The reference matches records after trimming whitespace, and also accepts
/// records from before ifname was stored (a bare container ID).
fn is_exact(res: &Reservation, id: &str, ifname: &str) -> bool {
    res.record.trim() == record(id, ifname)
}

fn is_legacy(res: &Reservation, id: &str) -> bool {
    res.record.trim() == id.trim()
}

/// Assign each requested address to the range set containing it, rejecting
/// requests the reference would only reject after touching the disk (or not
/// at all): outside every range set, the gateway, network/broadcast, or two
/// requests in one range set. Checked before the store is even opened, so an
/// invalid request leaves the data directory untouched.
pub fn plan_requested(
    ranges: &[RangeSet],
    requested: &[IpAddr],
) -> Result<Vec<Option<IpAddr>>, Error> {
    let mut plan = vec![None; ranges.len()];
    for &ip in requested {
        let Some((idx, r)) = ranges
            .iter()
            .enumerate()
            .find_map(|(i, s)| s.range_for(ip).map(|(_, r)| (i, r)))
        else {
            let all: Vec<String> = ranges.iter().map(RangeSet::to_string).collect();
            return Err(Error::BadRequest(format!(
                "failed to allocate all requested IPs: {ip} is not in any range ({})",
                all.join("; ")
            )));
        };
        if ip == r.gateway {
            return Err(Error::BadRequest(format!(
                "requested ip {ip} is subnet's gateway"
            )));
        }
        if r.is_excluded(ip) {
            return Err(Error::BadRequest(format!(
                "requested ip {ip} is the network or broadcast address of {}",
                r.subnet
            )));
        }
        if let Some(prev) = plan[idx] {
            return Err(Error::BadRequest(format!(
                "failed to allocate all requested IPs: {prev} and {ip} are both in range set \
                 {idx} ({}), which gives one address per ADD",
                ranges[idx]
            )));
        }
        plan[idx] = Some(ip);
    }
    Ok(plan)
}

/// ADD: one address per range set. On any failure, releases exactly the
/// reservations this call made (the reference releases every address of the
/// attachment, including ones an earlier ADD made).
pub fn allocate(
    store: &mut dyn Store,
    ranges: &[RangeSet],
    plan: &[Option<IpAddr>],
    id: &str,
    ifname: &str,
) -> Result<Vec<Allocation>, Error> {
    let existing = store.list()?;
    // Addresses known to be taken are skipped without a syscall; the store's
    // exclusive create still decides, so a stale view only costs a retry.
    let mut taken: HashSet<IpAddr> = existing.iter().map(|r| r.ip).collect();
    let rec = record(id, ifname);
    let mut made: Vec<Reservation> = Vec::new();
    let mut out = Vec::new();
    for (idx, set) in ranges.iter().enumerate() {
        let got = allocate_one(
            store,
            set,
            idx,
            plan.get(idx).copied().flatten(),
            &existing,
            &mut taken,
            &rec,
            id,
            ifname,
        );
        match got {
            Ok((ip, r)) => {
                made.push(Reservation {
                    ip,
                    name: ip.to_string(),
                    record: rec.clone(),
                });
                out.push(Allocation::new(ip, r));
            }
            Err(e) => {
                for m in &made {
                    let _ = store.release(m);
                }
                return Err(match e {
                    Error::Unavailable(m) => {
                        Error::Unavailable(format!("failed to allocate for range {idx}: {m}"))
                    }
                    other => other,
                });
            }
        }
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn allocate_one<'a>(
    store: &mut dyn Store,
    set: &'a RangeSet,
    idx: usize,
    requested: Option<IpAddr>,
    existing: &[Reservation],
    taken: &mut HashSet<IpAddr>,
    rec: &str,
    id: &str,
    ifname: &str,
) -> Result<(IpAddr, &'a Range), Error> {
    if let Some(ip) = requested {
        let (_, r) = set
            .range_for(ip)
            .expect("plan_requested put it in this set");
        if !store.reserve(ip, rec, idx)? {
            return Err(Error::Unavailable(format!(
                "requested IP address {ip} is not available in range set {set}"
            )));
        }
        taken.insert(ip);
        return Ok((ip, r));
    }
    // The spec forbids a second ADD for the same attachment; the reference
    // refuses when the attachment already holds an address in this set.
    if let Some(dup) = existing
        .iter()
        .find(|r| (is_exact(r, id, ifname) || is_legacy(r, id)) && set.contains(r.ip))
    {
        return Err(Error::Unavailable(format!(
            "{} has been allocated to {id}, duplicate allocation is not allowed",
            dup.ip
        )));
    }
    let last = store.last_reserved(idx)?;
    for (ip, r) in RangeIter::new(set, last) {
        if taken.contains(&ip) {
            continue;
        }
        if store.reserve(ip, rec, idx)? {
            taken.insert(ip);
            return Ok((ip, r));
        }
        taken.insert(ip);
    }
    Err(Error::Unavailable(format!(
        "no IP addresses available in range set: {set}"
    )))
}

/// DEL: release the attachment's reservations, exactly as the reference's
/// `ReleaseByID` called once per range set: first records matching
/// `<id>\r\n<ifname>`; records holding only `<id>` (written by old versions)
/// when a pass finds no exact match, which from the second range set on is
/// always. Idempotent. Returns how many were released.
pub fn release(
    store: &mut dyn Store,
    range_sets: usize,
    id: &str,
    ifname: &str,
) -> Result<usize, Error> {
    store.clean_leftovers()?;
    let all = store.list()?;
    let exact: Vec<&Reservation> = all.iter().filter(|r| is_exact(r, id, ifname)).collect();
    let mut gone: Vec<&Reservation> = exact.clone();
    if exact.is_empty() || range_sets >= 2 {
        gone.extend(all.iter().filter(|r| is_legacy(r, id)));
    }
    for r in &gone {
        store.release(r)?;
    }
    Ok(gone.len())
}

/// CHECK: every range set must hold an address for the attachment (the
/// reference only checks that some file anywhere names it).
pub fn check(
    store: &dyn Store,
    ranges: &[RangeSet],
    id: &str,
    ifname: &str,
) -> Result<Vec<IpAddr>, Error> {
    let all = store.list()?;
    let mine: Vec<&Reservation> = all
        .iter()
        .filter(|r| is_exact(r, id, ifname) || is_legacy(r, id))
        .collect();
    let mut found = Vec::new();
    for (idx, set) in ranges.iter().enumerate() {
        match mine.iter().find(|r| set.contains(r.ip)) {
            Some(r) => found.push(r.ip),
            None => {
                return Err(Error::NotAllocated(format!(
                    "host-local: Failed to find address added by container {id} (ifname {ifname}) \
                     in range set {idx} ({set})"
                )))
            }
        }
    }
    Ok(found)
}

/// STATUS: an ADD needs one address from every range set, so the plugin is
/// unavailable as soon as one range set is full.
pub fn status(reservations: &[Reservation], ranges: &[RangeSet]) -> Result<(), Error> {
    let used: HashSet<IpAddr> = reservations.iter().map(|r| r.ip).collect();
    for (idx, set) in ranges.iter().enumerate() {
        let in_use = used
            .iter()
            .filter(|ip| {
                set.range_for(**ip)
                    .is_some_and(|(_, r)| !r.is_excluded(**ip))
            })
            .count() as u128;
        if set.capacity() <= in_use {
            return Err(Error::NoAddressesLeft(format!(
                "no addresses left in range set {idx} ({set}): {in_use} of {} allocated",
                set.capacity()
            )));
        }
    }
    Ok(())
}

/// GC: release every reservation whose owner is not in `valid`, plus any
/// leftover temporary files. A legacy bare-ID record is kept when its
/// container has any valid attachment. Returns the released reservations.
pub fn gc(store: &mut dyn Store, valid: &[Attachment]) -> Result<Vec<Reservation>, Error> {
    store.clean_leftovers()?;
    let exact: HashSet<String> = valid
        .iter()
        .map(|a| record(&a.container_id, &a.ifname))
        .collect();
    let ids: HashSet<&str> = valid.iter().map(|a| a.container_id.trim()).collect();
    let mut gone = Vec::new();
    for r in store.list()? {
        let rec = r.record.trim();
        if exact.contains(rec) || ids.contains(rec) {
            continue;
        }
        store.release(&r)?;
        gone.push(r);
    }
    Ok(gone)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemStore;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn set(specs: &[(&str, Option<&str>, Option<&str>)]) -> RangeSet {
        RangeSet::new(
            specs
                .iter()
                .map(|(s, a, b)| {
                    Range::new(s.parse().unwrap(), a.map(ip), b.map(ip), None).unwrap()
                })
                .collect(),
        )
        .unwrap()
    }

    fn add(
        st: &mut MemStore,
        ranges: &[RangeSet],
        req: &[&str],
        id: &str,
    ) -> Result<Vec<String>, Error> {
        let req: Vec<IpAddr> = req.iter().map(|s| ip(s)).collect();
        let plan = plan_requested(ranges, &req)?;
        Ok(allocate(st, ranges, &plan, id, "eth0")?
            .into_iter()
            .map(|a| a.address.to_string())
            .collect())
    }

    #[test]
    fn sequential_round_robin_and_exhaustion() {
        let ranges = vec![set(&[("10.0.0.0/29", None, None)])];
        let mut st = MemStore::default();
        let got: Vec<String> = (0..5)
            .map(|i| add(&mut st, &ranges, &[], &format!("c{i}")).unwrap()[0].clone())
            .collect();
        assert_eq!(
            got,
            [
                "10.0.0.2/29",
                "10.0.0.3/29",
                "10.0.0.4/29",
                "10.0.0.5/29",
                "10.0.0.6/29"
            ]
        );
        let e = add(&mut st, &ranges, &[], "c5").unwrap_err();
        assert_eq!(e.code(), 102);
        assert!(e.to_string().contains("no IP addresses available"), "{e}");
        assert!(matches!(
            status(&st.list().unwrap(), &ranges),
            Err(Error::NoAddressesLeft(_))
        ));
        // Free .3: the next ADD wraps around from last reserved (.6) to it.
        assert_eq!(release(&mut st, 1, "c1", "eth0").unwrap(), 1);
        status(&st.list().unwrap(), &ranges).unwrap();
        assert_eq!(add(&mut st, &ranges, &[], "c6").unwrap(), ["10.0.0.3/29"]);
        // Releasing again is a no-op.
        assert_eq!(release(&mut st, 1, "c1", "eth0").unwrap(), 0);
    }

    #[test]
    fn round_robin_does_not_reuse_freed_address_first() {
        let ranges = vec![set(&[("10.0.0.0/24", None, None)])];
        let mut st = MemStore::default();
        add(&mut st, &ranges, &[], "a").unwrap();
        release(&mut st, 1, "a", "eth0").unwrap();
        assert_eq!(add(&mut st, &ranges, &[], "b").unwrap(), ["10.0.0.3/24"]);
    }

    #[test]
    fn skips_taken_without_store_calls() {
        let ranges = vec![set(&[("10.0.0.0/24", None, None)])];
        let mut st = MemStore::default();
        for i in 2..50 {
            st.ips
                .insert(ip(&format!("10.0.0.{i}")), "other\r\neth0".into());
        }
        assert_eq!(add(&mut st, &ranges, &[], "x").unwrap(), ["10.0.0.50/24"]);
        assert_eq!(st.reserve_calls, 1);
        assert_eq!(st.last[&0], ip("10.0.0.50"));
    }

    #[test]
    fn requested_ips() {
        let ranges = vec![
            set(&[("10.0.0.0/24", Some("10.0.0.10"), Some("10.0.0.20"))]),
            set(&[("fd00::/120", None, None)]),
        ];
        let mut st = MemStore::default();
        assert_eq!(
            add(&mut st, &ranges, &["10.0.0.15"], "a").unwrap(),
            ["10.0.0.15/24", "fd00::2/120"]
        );
        // Requesting updates the round-robin hint like the reference.
        assert_eq!(st.last[&0], ip("10.0.0.15"));
        // Taken: 102, and the v6 half this call took is given back.
        let before = st.ips.clone();
        let e = add(&mut st, &ranges, &["fd00::2", "10.0.0.16"], "b").unwrap_err();
        assert_eq!(e.code(), 102, "{e}");
        assert_eq!(st.ips, before);
        // Out of range (in the subnet but outside rangeStart..rangeEnd), the
        // gateway, or two in one set: invalid request (7), nothing touched.
        for req in [
            &["10.0.0.30"][..],
            &["10.0.0.1"],
            &["10.0.0.11", "10.0.0.12"],
            &["192.168.1.1"],
        ] {
            let e = add(&mut st, &ranges, req, "c").unwrap_err();
            assert_eq!(e.code(), 7, "{req:?}: {e}");
        }
        assert_eq!(st.ips, before);
        assert_eq!(
            add(&mut st, &ranges, &["fd00::ff"], "d").unwrap(),
            ["10.0.0.17/24", "fd00::ff/120"]
        );
    }

    #[test]
    fn dual_stack_one_per_set_and_release() {
        let ranges = vec![
            set(&[("10.0.0.0/24", None, None)]),
            set(&[("fd00::/64", None, None)]),
        ];
        let mut st = MemStore::default();
        let a = add(&mut st, &ranges, &[], "a").unwrap();
        assert_eq!(a, ["10.0.0.2/24", "fd00::2/64"]);
        assert_eq!(check(&st, &ranges, "a", "eth0").unwrap().len(), 2);
        assert_eq!(check(&st, &ranges, "a", "eth1").unwrap_err().code(), 3);
        // A second ADD of the same attachment is refused.
        let e = add(&mut st, &ranges, &[], "a").unwrap_err();
        assert!(e.to_string().contains("duplicate allocation"), "{e}");
        assert_eq!(release(&mut st, 2, "a", "eth0").unwrap(), 2);
        assert!(st.ips.is_empty());
        assert_eq!(check(&st, &ranges, "a", "eth0").unwrap_err().code(), 3);
    }

    #[test]
    fn legacy_records() {
        let ranges = vec![set(&[("10.0.0.0/24", None, None)])];
        let mut st = MemStore::default();
        st.ips.insert(ip("10.0.0.7"), "old\n".into());
        st.ips.insert(ip("10.0.0.8"), "new\r\neth0".into());
        check(&st, &ranges, "old", "eth0").unwrap();
        // One range set and an exact match: legacy records of the same
        // container stay (reference behaviour).
        st.ips.insert(ip("10.0.0.9"), "new".into());
        assert_eq!(release(&mut st, 1, "new", "eth0").unwrap(), 1);
        assert!(st.ips.contains_key(&ip("10.0.0.9")));
        assert_eq!(release(&mut st, 1, "new", "eth0").unwrap(), 1);
        assert_eq!(release(&mut st, 1, "old", "eth7").unwrap(), 1);
        assert!(st.ips.is_empty());
    }

    #[test]
    fn gc_keeps_only_valid() {
        let mut st = MemStore::default();
        st.ips.insert(ip("10.0.0.2"), "a\r\neth0".into());
        st.ips.insert(ip("10.0.0.3"), "a\r\neth1".into());
        st.ips.insert(ip("10.0.0.4"), "b\r\neth0".into());
        st.ips.insert(ip("10.0.0.5"), "b".into());
        st.ips.insert(ip("10.0.0.6"), "".into());
        let valid = vec![Attachment {
            container_id: "a".into(),
            ifname: "eth0".into(),
        }];
        let gone: Vec<String> = gc(&mut st, &valid)
            .unwrap()
            .iter()
            .map(|r| r.name.clone())
            .collect();
        assert_eq!(gone, ["10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]);
        assert_eq!(st.ips.len(), 1);
        assert_eq!(gc(&mut st, &[]).unwrap().len(), 1);
        assert!(st.ips.is_empty());
    }

    #[test]
    fn status_counts_each_range_set() {
        let ranges = vec![
            set(&[("10.0.0.0/30", None, None)]),
            set(&[("fd00::/64", None, None)]),
        ];
        let mut st = MemStore::default();
        status(&st.list().unwrap(), &ranges).unwrap();
        add(&mut st, &ranges, &[], "a").unwrap();
        // The /30 has one usable address; the huge v6 set does not help.
        let e = status(&st.list().unwrap(), &ranges).unwrap_err();
        assert_eq!(e.code(), 50);
        assert!(e.to_string().contains("range set 0"), "{e}");
    }
}
