//! An in-memory [`DataPlane`]: what the control loop is tested against
//! without root. It keeps entries by key the way the kernel does (an add
//! with an existing key replaces it) and can be told to refuse changes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use plexus_netlink::MacAddr;
use plexus_subnet::{Lease, LeaseAttrs, VxlanBackendData};

use crate::olddp::{
    DataPlane, Entry, Key, MasqRules, Op, Ownership, Underlay, UnderlaySelect, VxlanDevice,
    VxlanSpec,
};

#[derive(Debug, Clone)]
pub struct FakeDataPlane {
    pub underlay: Underlay,
    /// Devices by name.
    pub devices: BTreeMap<String, (VxlanDevice, VxlanSpec)>,
    pub entries: BTreeMap<Key, Entry>,
    pub masq: Option<MasqRules>,
    /// Adds of these keys fail.
    pub refuse: BTreeSet<Key>,
    /// Number of `apply` calls and of ops applied, to check batching.
    pub apply_calls: usize,
    pub ops_applied: usize,
    /// Every op in the order applied.
    pub log: Vec<Op>,
    next_index: u32,
}

impl FakeDataPlane {
    pub fn new(underlay: Underlay) -> FakeDataPlane {
        FakeDataPlane {
            underlay,
            devices: BTreeMap::new(),
            entries: BTreeMap::new(),
            masq: None,
            refuse: BTreeSet::new(),
            apply_calls: 0,
            ops_applied: 0,
            log: Vec::new(),
            next_index: 100,
        }
    }

    pub fn device(&self, name: &str) -> Option<VxlanDevice> {
        self.devices.get(name).map(|(d, _)| *d)
    }
}

#[async_trait::async_trait]
impl DataPlane for FakeDataPlane {
    async fn underlay(&mut self, sel: &UnderlaySelect) -> anyhow::Result<Underlay> {
        let mut u = self.underlay.clone();
        if let Some(ip) = sel.public_ip {
            if let Some((_, net)) = &mut u.v4 {
                u.v4 = Some((ip, *net));
            }
        }
        if sel.want_v6 && u.v6.is_none() {
            anyhow::bail!("no IPv6 address on {}", u.name);
        }
        Ok(u)
    }

    async fn device_mac(&mut self, name: &str) -> anyhow::Result<Option<MacAddr>> {
        Ok(self.device(name).map(|d| d.mac))
    }

    async fn ensure_vxlan(&mut self, spec: &VxlanSpec) -> anyhow::Result<VxlanDevice> {
        if let Some((d, s)) = self.devices.get_mut(&spec.name) {
            let mac = d.mac;
            *s = VxlanSpec {
                mac,
                ..spec.clone()
            };
            return Ok(*d);
        }
        self.next_index += 1;
        let d = VxlanDevice {
            index: self.next_index,
            mac: spec.mac,
        };
        self.devices.insert(spec.name.clone(), (d, spec.clone()));
        Ok(d)
    }

    async fn programmed(&mut self, owner: &Ownership) -> anyhow::Result<Vec<Entry>> {
        Ok(self
            .entries
            .values()
            .filter(|e| match e {
                Entry::Neigh { dev, .. } | Entry::Fdb { dev, .. } => owner.devices.contains(dev),
                Entry::Route { dst, gw, dev, .. } => owner.owns_route(dst, Some(*gw), *dev),
            })
            .cloned()
            .collect())
    }

    async fn apply(&mut self, ops: &[Op]) -> anyhow::Result<Vec<(usize, String)>> {
        self.apply_calls += 1;
        let mut failed = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            match op {
                Op::Add(e) if self.refuse.contains(&e.key()) => {
                    failed.push((i, "refused by the test".to_string()));
                    continue;
                }
                Op::Add(e) => {
                    self.entries.insert(e.key(), e.clone());
                }
                Op::Del(e) => {
                    self.entries.remove(&e.key());
                }
            }
            self.ops_applied += 1;
            self.log.push(op.clone());
        }
        Ok(failed)
    }

    async fn set_masq(&mut self, rules: Option<&MasqRules>) -> anyhow::Result<()> {
        self.masq = rules.cloned();
        Ok(())
    }
}

/// Remote node `i`'s VXLAN lease, for tests: subnet
/// `10.(100 + i/256).(i%256).0/24`, public IP `first_ip + i`, VTEP MAC
/// `02:aa:00:00:HI:LO`.
pub fn remote_lease(i: u32, first_ip: Ipv4Addr) -> Lease {
    let subnet = format!("10.{}.{}.0/24", 100 + i / 256, i % 256);
    Lease {
        subnet: Some(subnet.parse().expect("a /24")),
        subnet6: None,
        attrs: LeaseAttrs {
            public_ip: Some(Ipv4Addr::from(u32::from(first_ip) + i)),
            public_ipv6: None,
            backend_type: "vxlan".into(),
            backend_data: Some(VxlanBackendData {
                vni: 1,
                vtep_mac: [2, 0xaa, 0, 0, (i >> 8) as u8, i as u8],
            }),
            backend_v6_data: None,
        },
    }
}
