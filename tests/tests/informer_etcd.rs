//! The informer over a real etcd (Debian's etcd-server) in a namespace
//! this test creates, reached through a proxy that can cut or silence the
//! watch's connection. Changes are made through a second, direct client.

use std::sync::Arc;
use std::time::Duration;

use plexus_store::informer::{Event, Informer, KvSource};
use plexus_store::{EtcdKv, KeyValue, Kv};
use plexus_tests::etcd::Etcd;
use plexus_tests::informer::{next, next_sorted, sorted, AfterList, Hook};
use plexus_tests::proxy::FaultProxy;
use plexus_tests::{require_etcd, require_root, Netns};
use serde::Deserialize;

/// A record as the tests store it: `{"v": N}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rec {
    v: u32,
}

fn decode(_key: &str, kv: &KeyValue) -> Result<Rec, serde_json::Error> {
    serde_json::from_slice(&kv.value)
}

fn rec(v: u32) -> Arc<Rec> {
    Arc::new(Rec { v })
}

fn added(k: &str, v: u32) -> Event<Rec> {
    Event::Added(k.into(), rec(v))
}

struct Setup {
    ns: Netns,
    _etcd: Etcd,
    proxy: FaultProxy,
}

/// etcd with progress notifications every 200 ms (10 min by default), so
/// a quiet watch shows it is alive well within the tests' idle timeouts.
fn setup() -> Setup {
    let ns = Netns::new("inf-etcd");
    let etcd = Etcd::start_with(
        &ns,
        "127.0.0.1",
        &["--experimental-watch-progress-notify-interval", "200ms"],
    );
    let proxy = FaultProxy::start(&ns, "127.0.0.1", "127.0.0.1:2379".parse().unwrap());
    Setup {
        ns,
        _etcd: etcd,
        proxy,
    }
}

impl Setup {
    /// (through the proxy: the informer's; direct: the test's writer).
    async fn clients(&self) -> (Arc<dyn Kv>, Arc<dyn Kv>) {
        let via = EtcdKv::connect(vec![format!("http://{}", self.proxy.addr)], None)
            .await
            .unwrap();
        let direct = EtcdKv::connect(vec!["http://127.0.0.1:2379".into()], None)
            .await
            .unwrap();
        (Arc::new(via), Arc::new(direct))
    }
}

async fn put(kv: &dyn Kv, k: &str, v: u32) {
    kv.put(k, format!("{{\"v\":{v}}}").as_bytes(), None, None)
        .await
        .unwrap();
}

#[test]
fn lists_follows_and_relists_after_compaction_with_exact_differences() {
    require_root!();
    require_etcd!();
    let s = setup();
    s.ns.block_on(async {
        let (via, direct) = s.clients().await;
        for (k, v) in [("/t/a", 1), ("/t/b", 2), ("/t/c", 3)] {
            put(&*direct, k, v).await;
        }
        put(&*direct, "/u/elsewhere", 9).await;
        // Between the first list and its watch: a delete, an update, an
        // addition, then etcd compacts its history past them.
        let d = direct.clone();
        let hook: Hook = Box::new(move || {
            Box::pin(async move {
                d.delete("/t/a", None).await.unwrap();
                put(&*d, "/t/b", 20).await;
                put(&*d, "/t/d", 4).await;
                let rev = d.range("/").await.unwrap().revision;
                d.compact(rev).await.unwrap();
            })
        });
        let mut i = Informer::new(AfterList::new(KvSource::new(via, "/t/"), hook), decode);
        for want in [
            added("/t/a", 1),
            added("/t/b", 2),
            added("/t/c", 3),
            Event::Synced,
        ] {
            assert_eq!(next(&mut i).await, want);
        }
        // The relist: the delete first, then the rest; /t/c not again.
        assert_eq!(next(&mut i).await, Event::Deleted("/t/a".into(), rec(1)));
        assert_eq!(
            next(&mut i).await,
            Event::Updated("/t/b".into(), rec(2), rec(20))
        );
        assert_eq!(next(&mut i).await, added("/t/d", 4));
        assert_eq!(next(&mut i).await, Event::Synced);
        let c = i.stats().counts();
        assert_eq!((c.lists, c.compacted), (2, 1));
        // Then it follows: an update, the same value again (no event), a
        // delete.
        put(&*direct, "/t/c", 30).await;
        put(&*direct, "/t/c", 30).await;
        direct.delete("/t/d", None).await.unwrap();
        assert_eq!(
            next(&mut i).await,
            Event::Updated("/t/c".into(), rec(3), rec(30))
        );
        assert_eq!(next(&mut i).await, Event::Deleted("/t/d".into(), rec(4)));
        let keys: Vec<String> = i.cache().snapshot().into_keys().collect();
        assert_eq!(keys, ["/t/b", "/t/c"]);
    });
}

#[test]
fn a_change_made_during_the_list_comes_through_the_watch() {
    require_root!();
    require_etcd!();
    let s = setup();
    s.ns.block_on(async {
        let (via, direct) = s.clients().await;
        put(&*direct, "/t/a", 1).await;
        let d = direct.clone();
        let hook: Hook = Box::new(move || {
            Box::pin(async move {
                put(&*d, "/t/a", 10).await;
                put(&*d, "/t/z", 26).await;
            })
        });
        let mut i = Informer::new(AfterList::new(KvSource::new(via, "/t/"), hook), decode);
        assert_eq!(next(&mut i).await, added("/t/a", 1));
        assert_eq!(next(&mut i).await, Event::Synced);
        assert_eq!(
            next(&mut i).await,
            Event::Updated("/t/a".into(), rec(1), rec(10))
        );
        assert_eq!(next(&mut i).await, added("/t/z", 26));
        assert_eq!(i.stats().counts().lists, 1, "no relist was needed");
    });
}

#[test]
fn a_cut_stream_is_listed_again_and_nothing_is_handed_out_twice() {
    require_root!();
    require_etcd!();
    let s = setup();
    s.ns.block_on(async {
        let (via, direct) = s.clients().await;
        put(&*direct, "/t/a", 1).await;
        put(&*direct, "/t/b", 2).await;
        let mut i = Informer::new(KvSource::new(via, "/t/"), decode);
        for _ in 0..3 {
            next(&mut i).await;
        }
        assert_eq!(s.proxy.cut("/v3/watch"), 1, "one watch connection");
        put(&*direct, "/t/c", 3).await;
        direct.delete("/t/b", None).await.unwrap();
        assert_eq!(
            next_sorted(&mut i, 3).await,
            sorted(&[
                added("/t/c", 3),
                Event::Deleted("/t/b".into(), rec(2)),
                Event::Synced
            ])
        );
        direct.delete("/t/a", None).await.unwrap();
        assert_eq!(next(&mut i).await, Event::Deleted("/t/a".into(), rec(1)));
        let c = i.stats().counts();
        assert_eq!((c.lists, c.broken, c.silent), (2, 1, 0));
    });
}

#[test]
fn progress_keeps_a_quiet_stream_and_a_silent_one_is_replaced() {
    require_root!();
    require_etcd!();
    let s = setup();
    s.ns.block_on(async {
        let (via, direct) = s.clients().await;
        put(&*direct, "/t/a", 1).await;
        let mut i =
            Informer::new(KvSource::new(via, "/t/"), decode).idle_timeout(Duration::from_secs(2));
        for _ in 0..2 {
            next(&mut i).await;
        }
        // Quiet for three idle timeouts: etcd's progress notifications
        // (every 200 ms) keep the watch; a change after it comes through
        // the same watch.
        let quiet = tokio::time::timeout(Duration::from_secs(6), i.next()).await;
        assert!(
            quiet.is_err(),
            "nothing happened, nothing handed out: {quiet:?}"
        );
        put(&*direct, "/t/b", 2).await;
        assert_eq!(next(&mut i).await, added("/t/b", 2));
        let c = i.stats().counts();
        assert_eq!((c.lists, c.silent), (1, 0));
        // Silenced: the open watch will never deliver this, only a new
        // list after the idle timeout can.
        assert_eq!(s.proxy.stall("/v3/watch"), 1);
        put(&*direct, "/t/c", 3).await;
        assert_eq!(
            next_sorted(&mut i, 2).await,
            sorted(&[added("/t/c", 3), Event::Synced])
        );
        let c = i.stats().counts();
        assert_eq!((c.lists, c.silent), (2, 1));
        put(&*direct, "/t/d", 4).await;
        assert_eq!(next(&mut i).await, added("/t/d", 4));
    });
}

#[test]
fn a_bad_record_is_skipped_and_counted_once() {
    require_root!();
    require_etcd!();
    let s = setup();
    s.ns.block_on(async {
        let (via, direct) = s.clients().await;
        put(&*direct, "/t/a", 1).await;
        direct
            .put("/t/bad", b"{\"v\":\"not a number\"}", None, None)
            .await
            .unwrap();
        let mut i = Informer::new(KvSource::new(via, "/t/"), decode);
        assert_eq!(next(&mut i).await, added("/t/a", 1));
        assert_eq!(next(&mut i).await, Event::Synced);
        let c = i.stats().counts();
        assert_eq!((c.refused_total, c.refused), (1, 1));
        // Listed again, the same bad record is not counted again.
        s.proxy.cut("/v3/watch");
        assert_eq!(next(&mut i).await, Event::Synced);
        assert_eq!(i.stats().counts().refused_total, 1);
        // A bad write of a good key: it goes, counted; fixed, it is back.
        direct.put("/t/a", b"[]", None, None).await.unwrap();
        assert_eq!(next(&mut i).await, Event::Deleted("/t/a".into(), rec(1)));
        put(&*direct, "/t/a", 5).await;
        assert_eq!(next(&mut i).await, added("/t/a", 5));
        let c = i.stats().counts();
        assert_eq!((c.refused_total, c.refused), (2, 1));
    });
}
