//! The changes that turn what the kernel holds of ours into what the
//! producers want: a keyed diff, ordered so that nothing is ever missing
//! underneath what uses it, and the kernel never has to ARP for a remote
//! gateway (stale routes go first; then devices, addresses, neighbours and
//! FDB entries; then routes; then chains; the stale rest last).

use std::collections::BTreeMap;

use super::entry::{Entry, Key, Kind};

/// One change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Create or change `entry`. `replace`: the kernel holds ours at its
    /// key (change it in place); otherwise it is created only if nothing
    /// sits at its place (a route of someone else's stays).
    Put { entry: Entry, replace: bool },
    /// Delete ours.
    Del(Entry),
}

impl Op {
    pub fn key(&self) -> Key {
        match self {
            Op::Put { entry, .. } | Op::Del(entry) => entry.key(),
        }
    }

    fn phase(&self) -> u8 {
        match (self, self.key().kind()) {
            (Op::Del(_), Kind::Route) => 0,
            (Op::Put { .. }, Kind::Link) => 1,
            (Op::Put { .. }, Kind::Addr) => 2,
            (Op::Put { .. }, Kind::Neigh | Kind::Fdb) => 3,
            (Op::Put { .. }, Kind::Route) => 4,
            (Op::Put { .. }, Kind::Nft) => 5,
            (Op::Del(_), Kind::Nft) => 6,
            (Op::Del(_), Kind::Neigh | Kind::Fdb) => 7,
            (Op::Del(_), Kind::Addr) => 8,
            (Op::Del(_), Kind::Link) => 9,
        }
    }
}

/// The changes for `keys` (each looked up in both maps), in the order the
/// kernel needs them.
pub fn plan<'a>(
    desired: &BTreeMap<Key, Entry>,
    actual: &BTreeMap<Key, Entry>,
    keys: impl IntoIterator<Item = &'a Key>,
) -> Vec<Op> {
    let mut ops = Vec::new();
    for k in keys {
        match (desired.get(k), actual.get(k)) {
            (Some(want), Some(have)) if want.satisfied_by(have) => {}
            (Some(want), have) => ops.push(Op::Put {
                entry: want.clone(),
                replace: have.is_some(),
            }),
            (None, Some(have)) => ops.push(Op::Del(have.clone())),
            (None, None) => {}
        }
    }
    // Stable: within a phase, keys stay in key order.
    ops.sort_by_key(Op::phase);
    ops
}

/// [`plan`] over every key of both maps.
pub fn plan_all(desired: &BTreeMap<Key, Entry>, actual: &BTreeMap<Key, Entry>) -> Vec<Op> {
    let keys: std::collections::BTreeSet<&Key> = desired.keys().chain(actual.keys()).collect();
    plan(desired, actual, keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::entry::{Hop, Route};
    use plexus_netlink::MacAddr;

    fn remote(n: u8, mac: u8) -> Vec<Entry> {
        let gw = format!("10.5.{n}.0").parse().unwrap();
        let mac = MacAddr([2, 0, 0, 0, 0, mac]);
        vec![
            Entry::Neigh {
                dev: "flannel.1".into(),
                ip: gw,
                mac,
            },
            Entry::Fdb {
                dev: "flannel.1".into(),
                mac,
                dst: format!("192.168.0.{n}").parse().unwrap(),
            },
            Entry::Route(Route::via(
                format!("10.5.{n}.0/24").parse().unwrap(),
                Hop::via(gw).dev("flannel.1").onlink(),
            )),
        ]
    }

    fn map(e: Vec<Entry>) -> BTreeMap<Key, Entry> {
        e.into_iter().map(|e| (e.key(), e)).collect()
    }

    fn kinds(ops: &[Op]) -> Vec<String> {
        ops.iter()
            .map(|o| {
                let sign = if matches!(o, Op::Put { .. }) {
                    "+"
                } else {
                    "-"
                };
                format!("{sign}{}", o.key().kind().label())
            })
            .collect()
    }

    #[test]
    fn nothing_ever_arps_for_a_missing_gateway() {
        let ops = plan_all(&map(remote(2, 2)), &map(remote(3, 3)));
        assert_eq!(
            kinds(&ops),
            [
                "-route",
                "+neighbour",
                "+fdb",
                "+route",
                "-neighbour",
                "-fdb"
            ]
        );
        assert!(plan_all(&map(remote(2, 2)), &map(remote(2, 2))).is_empty());
    }

    #[test]
    fn a_changed_entry_is_replaced_in_place_and_a_new_one_created() {
        // A new VTEP MAC: the neighbour changes in place (its key is the
        // gateway), the FDB entry is a new key, the old one goes; the route
        // stays as it is.
        let ops = plan_all(&map(remote(2, 9)), &map(remote(2, 2)));
        assert_eq!(ops.len(), 3);
        assert!(
            matches!(&ops[0], Op::Put { entry: Entry::Neigh { mac, .. }, replace: true } if mac.0[5] == 9)
        );
        assert!(
            matches!(&ops[1], Op::Put { entry: Entry::Fdb { mac, .. }, replace: false } if mac.0[5] == 9)
        );
        assert!(matches!(&ops[2], Op::Del(Entry::Fdb { mac, .. }) if mac.0[5] == 2));
    }
}
