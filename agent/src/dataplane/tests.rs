//! The data plane against the fake kernel: producers' entries in and out,
//! never touching what is not ours, drift repaired when the kernel says
//! something changed, a previous run's entries kept until their producer
//! takes them over, and failures retried.

use std::time::Duration;

use ipnet::IpNet;
use plexus_netlink::monitor::Change;
use plexus_netlink::MacAddr;
use tokio::sync::mpsc;

use super::entry::{LEARNED_METRIC, PROTO_BGP, PROTO_BLOCK};
use super::fake::FakeKernel;
use super::*;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn learned(dst: &str, via: &str) -> Entry {
    Entry::Route(
        Route::via(net(dst), Hop::via(via.parse().unwrap()))
            .proto(PROTO_BGP)
            .metric(LEARNED_METRIC),
    )
}

fn hole(dst: &str) -> Entry {
    Entry::Route(Route::blackhole(net(dst), PROTO_BLOCK))
}

fn start(k: &FakeKernel) -> (DataPlane, mpsc::UnboundedSender<Vec<Change>>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let dp = DataPlane::start(
        k.clone(),
        Some(rx),
        Settings {
            resync_every: Duration::from_secs(3600),
            settle: Duration::from_millis(1),
        },
    );
    (dp, tx)
}

/// Lets the reconciler run until `cond` holds (single-threaded runtime:
/// a bounded number of yields and short sleeps).
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("never happened: {what}");
}

#[tokio::test(flavor = "current_thread")]
async fn entries_go_in_and_out_with_their_producer() {
    let k = FakeKernel::default();
    let (dp, _tx) = start(&k);
    let a = learned("198.51.100.0/24", "10.0.0.2");
    let b = learned("203.0.113.0/24", "10.0.0.3");
    assert!(dp
        .set(Owner::Learned, vec![a.clone(), b.clone()])
        .await
        .is_ok());
    assert_eq!(k.get(&a.key()), Some(a.clone()));
    assert_eq!(k.get(&b.key()), Some(b.clone()));
    let o = dp.update(Owner::Learned, vec![], vec![a.key()]).await;
    assert!(o.is_ok());
    assert_eq!(k.get(&a.key()), None);
    let calls = k.applied();
    // The same again changes nothing.
    dp.set(Owner::Learned, vec![b.clone()]).await;
    assert_eq!(k.applied(), calls);
    let s = dp.stats();
    assert_eq!(s.desired["learned"], 1);
    assert_eq!(s.programmed, 1);
}

#[tokio::test(flavor = "current_thread")]
async fn what_is_not_ours_is_never_touched() {
    let k = FakeKernel::default();
    // The node's default route and connected subnet, a pod route.
    let default = Entry::Route(
        Route::via(net("0.0.0.0/0"), Hop::via("10.0.0.254".parse().unwrap())).proto(4),
    );
    let pod = Entry::Route(
        Route::via(
            net("10.96.0.5/32"),
            Hop {
                gateway: None,
                dev: Some("plx1".into()),
                onlink: false,
            },
        )
        .proto(112),
    );
    k.put(default.clone());
    k.put(pod.clone());
    let (dp, _tx) = start(&k);
    // A learned default route at our metric coexists with the node's own.
    let ours = learned("0.0.0.0/0", "10.0.0.9");
    assert!(dp.set(Owner::Learned, vec![ours.clone()]).await.is_ok());
    assert_eq!(k.get(&default.key()), Some(default.clone()));
    assert_eq!(k.get(&ours.key()), Some(ours.clone()));
    // A route at exactly a place that is someone else's is not written.
    let squat = Entry::Route(
        Route::via(net("10.96.0.5/32"), Hop::via("10.0.0.9".parse().unwrap())).proto(PROTO_BLOCK),
    );
    let o = dp.set(Owner::Blocks, vec![squat.clone()]).await;
    assert_eq!(o.not_ours, [squat.key()]);
    assert_eq!(k.get(&pod.key()), Some(pod.clone()));
    assert_eq!(dp.stats().not_ours, 1);
    // Withdrawing ours leaves the node's alone.
    dp.set(Owner::Learned, vec![]).await;
    assert_eq!(k.get(&ours.key()), None);
    assert_eq!(k.get(&default.key()), Some(default));
}

#[tokio::test(flavor = "current_thread")]
async fn drift_is_repaired_when_the_kernel_says_so() {
    let k = FakeKernel::default();
    let (dp, tx) = start(&k);
    let a = hole("10.96.0.0/26");
    dp.set(Owner::Blocks, vec![a.clone()]).await;
    // Deleted by hand: back after the notification.
    k.delete(&a.key());
    tx.send(vec![Change::Route]).unwrap();
    until("the blackhole is back", || k.get(&a.key()).is_some()).await;
    // Changed by hand (a gateway instead of a blackhole): corrected.
    let wrong = Entry::Route(
        Route::via(net("10.96.0.0/26"), Hop::via("10.0.0.9".parse().unwrap())).proto(PROTO_BLOCK),
    );
    k.put(wrong);
    tx.send(vec![Change::Route]).unwrap();
    until("the blackhole is corrected", || {
        k.get(&a.key()) == Some(a.clone())
    })
    .await;
    until("repairs are counted", || dp.stats().repaired >= 2).await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_previous_runs_entries_stay_until_their_producer_takes_them() {
    let k = FakeKernel::default();
    let old = learned("198.51.100.0/24", "10.0.0.2");
    let stale = learned("203.0.113.0/24", "10.0.0.2");
    let block = hole("10.96.0.0/26");
    k.put(old.clone());
    k.put(stale.clone());
    k.put(block.clone());
    let (dp, _tx) = start(&k);
    // Another producer speaking does not make them ours.
    dp.set(Owner::Overlay, vec![]).await;
    assert!(k.get(&old.key()).is_some() && k.get(&block.key()).is_some());
    // The learned routes' producer takes them over, then replaces one and
    // drops the other (the graceful restart's purge).
    let adopted = dp.adopt(Owner::Learned).await;
    assert_eq!(adopted.len(), 2);
    let newer = learned("198.51.100.0/24", "10.0.0.3");
    dp.update(Owner::Learned, vec![newer.clone()], vec![stale.key()])
        .await;
    assert_eq!(k.get(&old.key()), Some(newer));
    assert_eq!(k.get(&stale.key()), None);
    // The blackhole is still there: its producer has not spoken.
    assert!(k.get(&block.key()).is_some());
    dp.set(Owner::Blocks, vec![]).await;
    assert_eq!(k.get(&block.key()), None);
}

#[tokio::test(flavor = "current_thread")]
async fn devices_come_first_and_what_is_on_them_is_ours() {
    let k = FakeKernel::default();
    let dev = Entry::Link(Link::Ipip {
        name: "tunl0".into(),
        mtu: 1480,
        up: true,
    });
    // A stale address a previous run left on the device.
    k.put(Entry::Addr {
        dev: "tunl0".into(),
        net: net("10.96.9.9/32"),
    });
    let (dp, _tx) = start(&k);
    let addr = Entry::Addr {
        dev: "tunl0".into(),
        net: net("10.96.0.1/32"),
    };
    dp.set(Owner::Tunnel, vec![addr.clone(), dev.clone()]).await;
    let h = k.history();
    let first = h.iter().position(|o| {
        matches!(
            o,
            diff::Op::Put {
                entry: Entry::Link(_),
                ..
            }
        )
    });
    let second = h.iter().position(|o| {
        matches!(
            o,
            diff::Op::Put {
                entry: Entry::Addr { .. },
                ..
            }
        )
    });
    assert!(first < second, "{h:?}");
    assert_eq!(k.of_kind(Kind::Addr), [addr], "the stale address went");
}

#[tokio::test(flavor = "current_thread")]
async fn a_key_two_producers_want_stays_the_first_ones() {
    let k = FakeKernel::default();
    let (dp, _tx) = start(&k);
    let n = Entry::Neigh {
        dev: "flannel.1".into(),
        ip: "10.5.2.0".parse().unwrap(),
        mac: MacAddr([2, 0, 0, 0, 0, 1]),
    };
    dp.set(Owner::Overlay, vec![n.clone()]).await;
    let mut other = n.clone();
    if let Entry::Neigh { mac, .. } = &mut other {
        *mac = MacAddr([2, 0, 0, 0, 0, 9]);
    }
    let o = dp.set(Owner::Tunnel, vec![other]).await;
    assert_eq!(o.contested, [n.key()]);
}

#[tokio::test(flavor = "current_thread")]
async fn failures_are_reported_and_retried() {
    let k = FakeKernel::default();
    let (dp, _tx) = start(&k);
    k.fail(true);
    let a = hole("10.96.0.0/26");
    let o = dp.set(Owner::Blocks, vec![a.clone()]).await;
    assert_eq!(o.failed.len(), 1);
    k.fail(false);
    // Retried on its own after a second.
    until("the retry programs it", || k.get(&a.key()).is_some()).await;
}
