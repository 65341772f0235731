//! The control loop against in-memory fakes of the store and the kernel
//! (the data plane over its fake kernel).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use futures::channel::mpsc;
use futures::StreamExt;
use ipnet::Ipv4Net;
use plexus_store::informer::{Listing, RawChange, RawItem, RawStream};
use plexus_store::{
    AcquireRequest, Informer, LeaseRegistry, LeaseSnapshot, Revision, Source, StoreError,
};
use plexus_subnet::{Backend, Lease, NetworkConfig, VxlanConfig};

use super::plan::{lease_id, BackendPlan, LeaseId};
use super::*;
use crate::dataplane::fake::FakeKernel;
use crate::dataplane::{Entry, Hop, Kind, Link, Route};
use crate::underlay::{KernelView, Underlay};
use plexus_netlink::MacAddr;
use plexus_subnet::{LeaseAttrs, VxlanBackendData};

type Watcher = mpsc::UnboundedSender<Result<RawChange<Lease>, StoreError>>;

#[derive(Default)]
struct RegState {
    leases: BTreeMap<LeaseId, Lease>,
    revision: Revision,
    watchers: Vec<Watcher>,
    renewals: usize,
}

fn item(l: &Lease, revision: Revision) -> RawItem<Lease> {
    RawItem {
        key: l.key(),
        version: revision.to_string(),
        raw: l.clone(),
    }
}

/// A store with flannel's semantics that tests can poke: put/delete
/// notify watchers, `compact` breaks them, `forget` deletes silently (as
/// if the event was lost). Followed through the real informer.
struct FakeRegistry {
    config: Option<NetworkConfig>,
    st: Arc<Mutex<RegState>>,
}

/// The fake's leases as an informer's source.
struct FakeSource(Arc<Mutex<RegState>>);

#[async_trait::async_trait]
impl Source for FakeSource {
    type Raw = Lease;
    fn describe(&self) -> String {
        "fake leases".into()
    }
    async fn list(&self) -> Result<Listing<Lease>, StoreError> {
        let st = self.0.lock().unwrap();
        Ok(Listing {
            items: st.leases.values().map(|l| item(l, st.revision)).collect(),
            version: st.revision.to_string(),
        })
    }
    async fn watch(&self, _version: &str) -> Result<RawStream<Lease>, StoreError> {
        let (tx, rx) = mpsc::unbounded();
        self.0.lock().unwrap().watchers.push(tx);
        Ok(rx.boxed())
    }
}

impl FakeRegistry {
    fn new(config: Option<NetworkConfig>) -> FakeRegistry {
        FakeRegistry {
            config,
            st: Arc::default(),
        }
    }

    fn put(&self, l: Lease) {
        let mut st = self.st.lock().unwrap();
        st.revision += 1;
        st.leases.insert(lease_id(&l), l.clone());
        let change = RawChange::Put(item(&l, st.revision));
        st.watchers
            .retain(|w| w.unbounded_send(Ok(change.clone())).is_ok());
    }

    fn delete(&self, id: LeaseId) {
        let mut st = self.st.lock().unwrap();
        st.revision += 1;
        if let Some(l) = st.leases.remove(&id) {
            let change = RawChange::Delete { key: l.key() };
            st.watchers
                .retain(|w| w.unbounded_send(Ok(change.clone())).is_ok());
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

    fn follow(&self) -> Informer<Lease> {
        Informer::new(FakeSource(self.st.clone()), |_, l: &Lease| {
            Ok::<_, std::convert::Infallible>(l.clone())
        })
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

/// Remote node `i`'s VXLAN lease: subnet `10.(100 + i/256).(i%256).0/24`,
/// public IP `192.168.0.10 + i`, VTEP MAC `02:aa:00:00:HI:LO`.
fn remote(i: u32) -> Lease {
    let subnet = format!("10.{}.{}.0/24", 100 + i / 256, i % 256);
    Lease {
        subnet: Some(subnet.parse().unwrap()),
        subnet6: None,
        attrs: LeaseAttrs {
            public_ip: Some(Ipv4Addr::from(
                u32::from(Ipv4Addr::new(192, 168, 0, 10)) + i,
            )),
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

/// What the agent reads of the kernel: a fixed underlay, and the MAC of a
/// VXLAN device the fake kernel holds.
struct View {
    underlay: Underlay,
    k: FakeKernel,
}

#[async_trait::async_trait]
impl KernelView for View {
    async fn underlay(&mut self, sel: &UnderlaySelect) -> anyhow::Result<Underlay> {
        if sel.want_v6 && self.underlay.v6.is_none() {
            anyhow::bail!("no IPv6 address on {}", self.underlay.name);
        }
        Ok(self.underlay.clone())
    }

    async fn device_mac(&mut self, name: &str) -> anyhow::Result<Option<MacAddr>> {
        Ok(match self.k.get(&Key::Link(name.into())) {
            Some(Entry::Link(Link::Vxlan(v))) => Some(v.mac),
            _ => None,
        })
    }
}

struct Env {
    dir: tempfile::TempDir,
    reg: FakeRegistry,
    k: FakeKernel,
    dp: DataPlane,
    /// The kernel's notifications, as the tests make them.
    changes: tokio::sync::mpsc::UnboundedSender<Vec<plexus_netlink::monitor::Change>>,
    view: View,
    st: Shared,
}

fn setup(cfg: Option<NetworkConfig>) -> Env {
    let k = FakeKernel::default();
    let (changes, rx) = tokio::sync::mpsc::unbounded_channel();
    let dp = DataPlane::start(k.clone(), Some(rx), crate::dataplane::Settings::default());
    Env {
        changes,
        dir: tempfile::tempdir().unwrap(),
        reg: FakeRegistry::new(cfg),
        view: View {
            underlay: underlay(),
            k: k.clone(),
        },
        k,
        dp,
        st: Shared::default(),
    }
}

impl Env {
    fn settings(&self) -> Settings {
        Settings {
            select: UnderlaySelect {
                public_ip: Some("192.168.0.1".parse().unwrap()),
                ..Default::default()
            },
            ..Settings::new("node-1", self.dir.path())
        }
    }

    async fn start(&mut self) -> anyhow::Result<Overlay> {
        let s = self.settings();
        start(&s, &self.reg, &self.dp, &mut self.view, &self.st).await
    }

    fn routes(&self) -> Vec<String> {
        self.k
            .of_kind(Kind::Route)
            .into_iter()
            .filter_map(|e| match e {
                Entry::Route(r) => Some(r.dst.to_string()),
                _ => None,
            })
            .collect()
    }
}

/// Lets the control loop run until `cond` holds (single-threaded runtime:
/// everything is in memory, so bounded yields and short sleeps are enough).
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..20_000 {
        if cond() {
            return;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_micros(200)).await;
    }
    panic!("never happened: {what}");
}

/// The entries a remote lease has on `flannel.1` (as a previous run left them).
fn entries_on_flannel(l: &Lease) -> Vec<Entry> {
    let local = Local {
        own: (Some("10.5.1.0/24".parse().unwrap()), None),
        backend: BackendPlan::Vxlan {
            dev_v4: Some("flannel.1".into()),
            dev_v6: None,
            direct_routing: false,
        },
        underlay_v4: Some(("eth0".into(), "192.168.0.0/24".parse().unwrap())),
        underlay_v6: None,
    };
    plan::entries_for(&local, l)
}

#[tokio::test(flavor = "current_thread")]
async fn start_reconciles_stale_entries_and_becomes_ready() {
    let mut e = setup(Some(config()));
    e.reg.put(remote(1));
    e.reg.put(remote(2));
    // What a lease that vanished while the agent was down left behind
    // (flannel #2554), and a route outside the cluster network that is
    // not ours.
    for x in entries_on_flannel(&remote(7)) {
        e.k.put(x);
    }
    let foreign = Entry::Route(Route::via(
        "172.16.0.0/16".parse().unwrap(),
        Hop::via("192.168.0.254".parse().unwrap()).dev("eth0"),
    ));
    e.k.put(foreign.clone());
    let mut ov = e.start().await.unwrap();
    let (reg, dp, st) = (&e.reg, &e.dp, &e.st);
    tokio::select! {
        r = ov.run(reg, dp) => panic!("run ended: {r:?}"),
        _ = until("ready", || st.status().ready) => {}
    }
    assert_eq!(
        e.routes(),
        ["10.100.1.0/24", "10.100.2.0/24", "172.16.0.0/16"]
    );
    assert_eq!(
        e.k.of_kind(Kind::Neigh).len() + e.k.of_kind(Kind::Fdb).len(),
        4
    );
    let s = st.status();
    assert_eq!((s.leases, s.remote_nodes_programmed), (3, 2));
    assert!(e.dir.path().join("ready").exists());
    assert!(e.dir.path().join("subnet.env").exists());
    // The lease publishes the device's MAC; the device is as configured.
    let mine = reg.lease_of("192.168.0.1").unwrap();
    let Some(Entry::Link(Link::Vxlan(dev))) = e.k.get(&Key::Link("flannel.1".into())) else {
        panic!("no flannel.1");
    };
    assert_eq!(mine.attrs.backend_data.unwrap().vtep_mac, dev.mac.0);
    assert_eq!((dev.mtu, dev.port, dev.learning), (1450, 8472, false));
    assert_eq!(dev.underlay, "eth0");
    assert_eq!(
        e.k.of_kind(Kind::Addr),
        [Entry::Addr {
            dev: "flannel.1".into(),
            net: format!("{}/32", mine.subnet.unwrap().network())
                .parse()
                .unwrap(),
        }]
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_thousand_leases_in_one_transaction_are_one_batch() {
    let mut e = setup(Some(config()));
    let mut ov = e.start().await.unwrap();
    let (reg, dp, st, k) = (&e.reg, &e.dp, &e.st, &e.k);
    let (calls, ops) = (k.apply_calls(), k.applied());
    tokio::select! {
        r = ov.run(reg, dp) => panic!("run ended: {r:?}"),
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
    assert_eq!(k.of_kind(Kind::Route).len(), 500);
    // The 1000 puts and the 500 deletes each arrived together: one batch
    // each.
    assert_eq!(k.apply_calls() - calls, 2);
    assert_eq!(k.applied() - ops, 3000 + 1500);
}

#[tokio::test(flavor = "current_thread")]
async fn compaction_relists_and_a_lost_delete_is_not_missed() {
    let mut e = setup(Some(config()));
    for i in 0..3 {
        e.reg.put(remote(i));
    }
    let mut ov = e.start().await.unwrap();
    let (reg, dp, st) = (&e.reg, &e.dp, &e.st);
    tokio::select! {
        r = ov.run(reg, dp) => panic!("run ended: {r:?}"),
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
        e.routes(),
        ["10.100.0.0/24", "10.100.2.0/24", "10.100.5.0/24"]
    );
}

#[tokio::test(flavor = "current_thread")]
async fn changed_vtep_mac_is_replaced_in_order() {
    let mut e = setup(Some(config()));
    e.reg.put(remote(1));
    let mut ov = e.start().await.unwrap();
    let mut moved = remote(1);
    moved.attrs.backend_data.as_mut().unwrap().vtep_mac = [2, 0xbb, 0, 0, 0, 1];
    let (reg, dp, st) = (&e.reg, &e.dp, &e.st);
    tokio::select! {
        r = ov.run(reg, dp) => panic!("run ended: {r:?}"),
        _ = async {
            until("ready", || st.status().remote_nodes_programmed == 1).await;
            let rounds = st.rounds();
            reg.put(moved.clone());
            until("programmed again", || st.rounds() > rounds).await;
        } => {}
    }
    let macs: Vec<_> =
        e.k.of_kind(Kind::Neigh)
            .into_iter()
            .chain(e.k.of_kind(Kind::Fdb))
            .filter_map(|x| match x {
                Entry::Fdb { mac, .. } | Entry::Neigh { mac, .. } => Some(mac.0[1]),
                _ => None,
            })
            .collect();
    assert_eq!(macs, [0xbb, 0xbb]);
}

#[tokio::test(flavor = "current_thread")]
async fn failed_changes_are_retried() {
    let mut e = setup(Some(config()));
    let mut ov = e.start().await.unwrap();
    let (reg, dp, st, k) = (&e.reg, &e.dp, &e.st, &e.k);
    tokio::select! {
        r = ov.run(reg, dp) => panic!("run ended: {r:?}"),
        _ = async {
            until("ready", || st.status().ready).await;
            k.fail(true);
            reg.put(remote(1));
            until("tried", || st.status().leases == 2).await;
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            assert_eq!(st.status().remote_nodes_programmed, 0);
            k.fail(false);
            until("retried and programmed", || st.status().remote_nodes_programmed == 1).await;
        } => {}
    }
    assert_eq!(e.routes(), ["10.100.1.0/24"]);
}

#[tokio::test(flavor = "current_thread")]
async fn restart_keeps_subnet_and_vtep_mac() {
    let mut e = setup(Some(config()));
    let first = e.start().await.unwrap();
    let mac = |k: &FakeKernel| match k.get(&Key::Link("flannel.1".into())) {
        Some(Entry::Link(Link::Vxlan(v))) => v.mac,
        other => panic!("{other:?}"),
    };
    let m = mac(&e.k);
    // Restart with the device still there.
    let again = e.start().await.unwrap();
    assert_eq!(again.lease().subnet, first.lease().subnet);
    assert_eq!(mac(&e.k), m);
    // The device was deleted while the agent was down: same MAC from the
    // run directory, and the lease still says so.
    e.k.delete(&Key::Link("flannel.1".into()));
    e.changes
        .send(vec![plexus_netlink::monitor::Change::Link])
        .unwrap();
    let third = e.start().await.unwrap();
    assert_eq!(third.lease().subnet, first.lease().subnet);
    assert_eq!(mac(&e.k), m);
    assert_eq!(
        third.lease().attrs.backend_data.as_ref().unwrap().vtep_mac,
        m.0
    );
}

#[tokio::test(flavor = "current_thread")]
async fn bad_config_leaves_nothing_behind() {
    let mut e = setup(None);
    let err = e.start().await.unwrap_err();
    assert!(format!("{err:#}").contains("no network config"), "{err:#}");
    assert!(e.k.of_kind(Kind::Link).is_empty() && e.k.of_kind(Kind::Nft).is_empty());
    assert!(!e.dir.path().join("subnet.env").exists());
    assert!(e.reg.st.lock().unwrap().leases.is_empty());
    // IPv6 asked for on an underlay without IPv6: fails before any lease.
    let mut c = config();
    c.enable_ipv6 = true;
    c.ipv6_network = Some("fd00:5::/48".parse().unwrap());
    e.reg = FakeRegistry::new(Some(c));
    assert!(e.start().await.is_err());
    assert!(e.k.of_kind(Kind::Link).is_empty());
    assert!(e.reg.st.lock().unwrap().leases.is_empty());
}

#[tokio::test(flavor = "current_thread")]
async fn ip_masq_rules_follow_the_flag() {
    let mut e = setup(Some(config()));
    let mut s = e.settings();
    s.ip_masq = true;
    let ov = start(&s, &e.reg, &e.dp, &mut e.view, &e.st).await.unwrap();
    let chain = |k: &FakeKernel| match k.get(&Key::NftChain("overlay-masq".into())) {
        Some(Entry::Chain(c)) => Some(c),
        _ => None,
    };
    let want = crate::masq::chain(&crate::masq::MasqRules {
        network: Some("10.0.0.0/8".parse().unwrap()),
        subnet: ov.lease().subnet,
        ipv6_network: None,
        ipv6_subnet: None,
    });
    assert_eq!(chain(&e.k), Some(want));
    s.ip_masq = false;
    start(&s, &e.reg, &e.dp, &mut e.view, &e.st).await.unwrap();
    assert_eq!(chain(&e.k), None);
}

#[tokio::test(flavor = "current_thread")]
async fn own_lease_deleted_is_acquired_again() {
    let mut e = setup(Some(config()));
    let mut ov = e.start().await.unwrap();
    let mine = lease_id(ov.lease());
    let (reg, dp, st) = (&e.reg, &e.dp, &e.st);
    tokio::select! {
        r = ov.run(reg, dp) => panic!("run ended: {r:?}"),
        _ = async {
            until("ready", || st.status().ready).await;
            reg.delete(mine);
            until("re-acquired", || reg.st.lock().unwrap().leases.contains_key(&mine)).await;
        } => {}
    }
}
