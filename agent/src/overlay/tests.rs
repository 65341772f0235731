//! The control loop against in-memory fakes of the store and the kernel.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use futures::channel::mpsc;
use futures::stream::BoxStream;
use futures::StreamExt;
use ipnet::Ipv4Net;
use plexus_store::{
    AcquireRequest, LeaseEvent, LeaseRegistry, LeaseSnapshot, Revision, StoreError,
};
use plexus_subnet::{Backend, Lease, NetworkConfig, VxlanConfig};

use super::plan::{lease_id, LeaseId};
use super::*;
use crate::fake::FakeDataPlane;
use crate::olddp::{Entry, Underlay};

type Watcher = mpsc::UnboundedSender<Result<LeaseEvent, StoreError>>;

#[derive(Default)]
struct RegState {
    leases: BTreeMap<LeaseId, Lease>,
    revision: Revision,
    watchers: Vec<Watcher>,
    renewals: usize,
}

/// A store with flannel's semantics that tests can poke: put/delete
/// notify watchers, `compact` breaks them, `forget` deletes silently (as
/// if the event was lost).
struct FakeRegistry {
    config: Option<NetworkConfig>,
    st: Mutex<RegState>,
}

impl FakeRegistry {
    fn new(config: Option<NetworkConfig>) -> FakeRegistry {
        FakeRegistry {
            config,
            st: Mutex::new(RegState::default()),
        }
    }

    fn put(&self, l: Lease) {
        let mut st = self.st.lock().unwrap();
        st.revision += 1;
        st.leases.insert(lease_id(&l), l.clone());
        st.watchers
            .retain(|w| w.unbounded_send(Ok(LeaseEvent::Added(l.clone()))).is_ok());
    }

    fn delete(&self, id: LeaseId) {
        let mut st = self.st.lock().unwrap();
        st.revision += 1;
        if let Some(l) = st.leases.remove(&id) {
            st.watchers
                .retain(|w| w.unbounded_send(Ok(LeaseEvent::Removed(l.clone()))).is_ok());
        }
    }

    fn forget(&self, id: LeaseId) {
        self.st.lock().unwrap().leases.remove(&id);
    }

    fn compact(&self) {
        let mut st = self.st.lock().unwrap();
        let rev = st.revision;
        for w in st.watchers.drain(..) {
            let _ = w.unbounded_send(Err(StoreError::Compacted(rev)));
        }
    }

    fn lease_of(&self, ip: &str) -> Option<Lease> {
        let ip: Ipv4Addr = ip.parse().unwrap();
        let st = self.st.lock().unwrap();
        st.leases
            .values()
            .find(|l| l.attrs.public_ip == Some(ip))
            .cloned()
    }
}

#[async_trait::async_trait]
impl LeaseRegistry for FakeRegistry {
    async fn network_config(&self) -> Result<NetworkConfig, StoreError> {
        self.config
            .clone()
            .ok_or_else(|| StoreError::NoConfig("/coreos.com/network/config".into()))
    }

    async fn acquire(&self, req: &AcquireRequest) -> Result<Lease, StoreError> {
        let mut st = self.st.lock().unwrap();
        let mine = st
            .leases
            .values()
            .find(|l| l.attrs.public_ip == req.public_ip)
            .map(lease_id);
        let prev = req
            .previous
            .as_ref()
            .map(lease_id)
            .filter(|id| !st.leases.contains_key(id));
        let id = mine.or(prev).unwrap_or_else(|| {
            (1..=255u8)
                .map(|i| {
                    let net: Ipv4Net = format!("10.5.{i}.0/24").parse().unwrap();
                    (Some(net), None)
                })
                .find(|id| !st.leases.contains_key(id))
                .expect("free subnet")
        });
        let l = Lease {
            subnet: id.0,
            subnet6: id.1,
            attrs: req.attrs.clone(),
        };
        st.revision += 1;
        st.leases.insert(id, l.clone());
        Ok(l)
    }

    async fn renew(&self, lease: &Lease) -> Result<(), StoreError> {
        let mut st = self.st.lock().unwrap();
        st.renewals += 1;
        if st.leases.contains_key(&lease_id(lease)) {
            Ok(())
        } else {
            Err(StoreError::Other("lease not found".into()))
        }
    }

    async fn reassert(&self, lease: &Lease) -> Result<(), StoreError> {
        let mut st = self.st.lock().unwrap();
        st.revision += 1;
        st.leases.insert(lease_id(lease), lease.clone());
        Ok(())
    }

    async fn list(&self) -> Result<LeaseSnapshot, StoreError> {
        let st = self.st.lock().unwrap();
        Ok(LeaseSnapshot {
            leases: st.leases.values().cloned().collect(),
            revision: st.revision,
        })
    }

    async fn watch(
        &self,
        _after: Revision,
    ) -> Result<BoxStream<'static, Result<LeaseEvent, StoreError>>, StoreError> {
        let (tx, rx) = mpsc::unbounded();
        self.st.lock().unwrap().watchers.push(tx);
        Ok(rx.boxed())
    }
}

fn config() -> NetworkConfig {
    NetworkConfig {
        enable_ipv4: true,
        enable_ipv6: false,
        network: Some("10.0.0.0/8".parse().unwrap()),
        subnet_len: 24,
        subnet_min: Some("10.0.1.0".parse().unwrap()),
        subnet_max: Some("10.255.255.0".parse().unwrap()),
        ipv6_network: None,
        ipv6_subnet_len: 64,
        ipv6_subnet_min: None,
        ipv6_subnet_max: None,
        backend: Backend::Vxlan(VxlanConfig {
            vni: 1,
            port: 8472,
            mtu: None,
            direct_routing: false,
            learning: false,
        }),
    }
}

fn underlay() -> Underlay {
    Underlay {
        index: 2,
        name: "eth0".into(),
        mtu: 1500,
        v4: Some((
            "192.168.0.1".parse().unwrap(),
            "192.168.0.0/24".parse().unwrap(),
        )),
        v6: None,
    }
}

fn remote(i: u32) -> Lease {
    crate::fake::remote_lease(i, Ipv4Addr::new(192, 168, 0, 10))
}

fn setup(cfg: Option<NetworkConfig>) -> (tempfile::TempDir, FakeRegistry, FakeDataPlane, Shared) {
    (
        tempfile::tempdir().unwrap(),
        FakeRegistry::new(cfg),
        FakeDataPlane::new(underlay()),
        Shared::default(),
    )
}

fn settings(dir: &std::path::Path) -> Settings {
    Settings {
        select: UnderlaySelect {
            public_ip: Some("192.168.0.1".parse().unwrap()),
            ..Default::default()
        },
        ..Settings::new("node-1", dir)
    }
}

/// Lets the control loop run until `cond` holds (single-threaded runtime:
/// everything is in memory, so a bounded number of yields is enough).
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..100_000 {
        if cond() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("never happened: {what}");
}

fn routes(dp: &FakeDataPlane) -> Vec<String> {
    dp.entries
        .values()
        .filter_map(|e| match e {
            Entry::Route { dst, .. } => Some(dst.to_string()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "current_thread")]
async fn start_reconciles_stale_entries_and_becomes_ready() {
    let (dir, reg, mut dp, st) = setup(Some(config()));
    reg.put(remote(1));
    reg.put(remote(2));
    let mut ov = start(&settings(dir.path()), &reg, &mut dp, &st)
        .await
        .unwrap();
    let dev = dp.device("flannel.1").unwrap();
    // What a lease that vanished while the agent was down left behind
    // (flannel #2554), and a route outside the cluster network that is not ours.
    let gone = remote(7);
    let local = ov.local.clone();
    for e in plan::entries_for(&local, &gone) {
        dp.entries.insert(e.key(), e);
    }
    let foreign = Entry::Route {
        dst: "172.16.0.0/16".parse().unwrap(),
        gw: "192.168.0.254".parse().unwrap(),
        dev: Some(2),
        onlink: false,
    };
    dp.entries.insert(foreign.key(), foreign.clone());
    assert_eq!(dp.entries.len(), 4);

    tokio::select! {
        r = ov.run(&reg, &mut dp) => panic!("run ended: {r:?}"),
        _ = until("ready", || st.status().ready) => {}
    }
    assert_eq!(
        routes(&dp),
        ["10.100.1.0/24", "10.100.2.0/24", "172.16.0.0/16"]
    );
    assert_eq!(dp.entries.len(), 3 * 2 + 1);
    let s = st.status();
    assert_eq!((s.leases, s.remote_nodes_programmed), (3, 2));
    assert!(dir.path().join("ready").exists());
    assert!(dir.path().join("subnet.env").exists());
    // The lease publishes the device's MAC.
    let mine = reg.lease_of("192.168.0.1").unwrap();
    assert_eq!(mine.attrs.backend_data.unwrap().vtep_mac, dev.mac.0);
    assert_eq!(dp.device("flannel.1").unwrap().index, dev.index);
    let (_, spec) = &dp.devices["flannel.1"];
    assert_eq!((spec.mtu, spec.port, spec.learning), (1450, 8472, false));
    assert_eq!(
        spec.addr.to_string(),
        format!("{}/32", mine.subnet.unwrap().network())
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_thousand_leases_in_one_transaction_are_one_batch() {
    let (dir, reg, mut dp, st) = setup(Some(config()));
    let mut ov = start(&settings(dir.path()), &reg, &mut dp, &st)
        .await
        .unwrap();
    tokio::select! {
        r = ov.run(&reg, &mut dp) => panic!("run ended: {r:?}"),
        _ = async {
            until("ready", || st.status().ready).await;
            for i in 0..1000 {
                reg.put(remote(i));
            }
            until("1000 programmed", || st.status().remote_nodes_programmed == 1000).await;
            for i in 0..500 {
                reg.delete(lease_id(&remote(i)));
            }
            until("500 left", || st.status().remote_nodes_programmed == 500).await;
        } => {}
    }
    assert_eq!(dp.entries.len(), 1500);
    // Start-up has nothing to apply; the 1000 puts and the 500 deletes
    // arrived together, so each is one call.
    assert_eq!(dp.apply_calls, 2);
    assert_eq!(dp.ops_applied, 3000 + 1500);
}

#[tokio::test(flavor = "current_thread")]
async fn compaction_relists_and_a_lost_delete_is_not_missed() {
    let (dir, reg, mut dp, st) = setup(Some(config()));
    for i in 0..3 {
        reg.put(remote(i));
    }
    let mut ov = start(&settings(dir.path()), &reg, &mut dp, &st)
        .await
        .unwrap();
    tokio::select! {
        r = ov.run(&reg, &mut dp) => panic!("run ended: {r:?}"),
        _ = async {
            until("ready", || st.status().remote_nodes_programmed == 3).await;
            // The delete event is lost; then history is compacted.
            reg.forget(lease_id(&remote(1)));
            reg.compact();
            until("relisted", || st.status().remote_nodes_programmed == 2).await;
            // The new watch works.
            reg.put(remote(5));
            until("watch resumed", || st.status().remote_nodes_programmed == 3).await;
        } => {}
    }
    assert_eq!(
        routes(&dp),
        ["10.100.0.0/24", "10.100.2.0/24", "10.100.5.0/24"]
    );
}

#[tokio::test(flavor = "current_thread")]
async fn changed_vtep_mac_is_replaced_in_order() {
    let (dir, reg, mut dp, st) = setup(Some(config()));
    reg.put(remote(1));
    let mut ov = start(&settings(dir.path()), &reg, &mut dp, &st)
        .await
        .unwrap();
    let mut moved = remote(1);
    moved.attrs.backend_data.as_mut().unwrap().vtep_mac = [2, 0xbb, 0, 0, 0, 1];
    tokio::select! {
        r = ov.run(&reg, &mut dp) => panic!("run ended: {r:?}"),
        _ = async {
            until("ready", || st.status().remote_nodes_programmed == 1).await;
            let rounds = st.rounds();
            reg.put(moved.clone());
            until("programmed again", || st.rounds() > rounds).await;
        } => {}
    }
    let macs: Vec<_> = dp
        .entries
        .values()
        .filter_map(|e| match e {
            Entry::Fdb { mac, .. } | Entry::Neigh { mac, .. } => Some(mac.0[1]),
            _ => None,
        })
        .collect();
    assert_eq!(macs, [0xbb, 0xbb]);
}

#[tokio::test(flavor = "current_thread")]
async fn failed_changes_are_retried_at_resync() {
    let (dir, reg, mut dp, st) = setup(Some(config()));
    reg.put(remote(1));
    let mut s = settings(dir.path());
    s.resync_every = std::time::Duration::from_millis(5);
    let mut ov = start(&s, &reg, &mut dp, &st).await.unwrap();
    let route_key = plan::entries_for(&ov.local, &remote(1))[2].key();
    dp.refuse.insert(route_key);
    tokio::select! {
        r = ov.run(&reg, &mut dp) => panic!("run ended: {r:?}"),
        _ = until("ready", || st.status().ready) => {}
    }
    assert_eq!(st.status().remote_nodes_programmed, 0);
    assert_eq!(dp.entries.len(), 2);
    dp.refuse.clear();
    tokio::select! {
        r = ov.run(&reg, &mut dp) => panic!("run ended: {r:?}"),
        _ = async {
            // Run again: a fresh listing repairs it; so does a resync tick.
            while st.status().remote_nodes_programmed == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        } => {}
    }
    assert_eq!(dp.entries.len(), 3);
}

#[tokio::test(flavor = "current_thread")]
async fn restart_keeps_subnet_and_vtep_mac() {
    let (dir, reg, mut dp, st) = setup(Some(config()));
    let first = start(&settings(dir.path()), &reg, &mut dp, &st)
        .await
        .unwrap();
    let mac = dp.device("flannel.1").unwrap().mac;
    // Restart with the device still there.
    let again = start(&settings(dir.path()), &reg, &mut dp, &st)
        .await
        .unwrap();
    assert_eq!(again.lease().subnet, first.lease().subnet);
    assert_eq!(dp.device("flannel.1").unwrap().mac, mac);
    // The device was deleted while the agent was down: same MAC from the
    // run directory, and the lease still says so.
    dp.devices.clear();
    let third = start(&settings(dir.path()), &reg, &mut dp, &st)
        .await
        .unwrap();
    assert_eq!(third.lease().subnet, first.lease().subnet);
    assert_eq!(dp.device("flannel.1").unwrap().mac, mac);
    assert_eq!(
        third.lease().attrs.backend_data.as_ref().unwrap().vtep_mac,
        mac.0
    );
}

#[tokio::test(flavor = "current_thread")]
async fn bad_config_leaves_nothing_behind() {
    let (dir, reg, mut dp, st) = setup(None);
    let e = start(&settings(dir.path()), &reg, &mut dp, &st)
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("no network config"), "{e:#}");
    assert!(dp.devices.is_empty() && dp.masq.is_none());
    assert!(!dir.path().join("subnet.env").exists());
    assert!(reg.st.lock().unwrap().leases.is_empty());
    // IPv6 asked for on an underlay without IPv6: fails before any lease.
    let mut c = config();
    c.enable_ipv6 = true;
    c.ipv6_network = Some("fd00:5::/48".parse().unwrap());
    let reg = FakeRegistry::new(Some(c));
    assert!(start(&settings(dir.path()), &reg, &mut dp, &st)
        .await
        .is_err());
    assert!(dp.devices.is_empty());
    assert!(reg.st.lock().unwrap().leases.is_empty());
}

#[tokio::test(flavor = "current_thread")]
async fn ip_masq_rules_follow_the_flag() {
    let (dir, reg, mut dp, st) = setup(Some(config()));
    let mut s = settings(dir.path());
    s.ip_masq = true;
    let ov = start(&s, &reg, &mut dp, &st).await.unwrap();
    let m = dp.masq.clone().unwrap();
    assert_eq!(m.network, Some("10.0.0.0/8".parse().unwrap()));
    assert_eq!(m.subnet, ov.lease().subnet);
    s.ip_masq = false;
    start(&s, &reg, &mut dp, &st).await.unwrap();
    assert!(dp.masq.is_none());
}

#[tokio::test(flavor = "current_thread")]
async fn own_lease_deleted_is_acquired_again() {
    let (dir, reg, mut dp, st) = setup(Some(config()));
    let mut ov = start(&settings(dir.path()), &reg, &mut dp, &st)
        .await
        .unwrap();
    let mine = lease_id(ov.lease());
    tokio::select! {
        r = ov.run(&reg, &mut dp) => panic!("run ended: {r:?}"),
        _ = async {
            until("ready", || st.status().ready).await;
            reg.delete(mine);
            until("re-acquired", || reg.st.lock().unwrap().leases.contains_key(&mine)).await;
        } => {}
    }
}
