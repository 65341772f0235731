//! plexus-bgp against real routers: BIRD 2, GoBGP and FRR, each in its own
//! namespace joined to ours by a veth pair, plus a second plexus speaker
//! (graceful restart) and a raw-socket peer sending malformed messages.
//!
//! Our speaker runs on a tokio runtime whose worker threads entered the
//! test's "us" namespace, so its sockets live there.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use plexus_bgp::attrs::{Community, CommunitySet, LargeCommunity};
use plexus_bgp::codec::Afi;
use plexus_bgp::fsm::{GracefulRestart, State};
use plexus_bgp::policy::{
    BgpFilter, FilterAction, FilterRule, Guard, MatchOperator, PeerKind, Reason, Verdict,
};
use plexus_bgp::rib::{BestRoute, RouteChange};
use plexus_bgp::speaker::{
    MaxPrefixes, Password, PeerConfig, PeerStatus, RouteFeed, Speaker, SpeakerConfig,
};
use plexus_bgp::BgpError;
use plexus_tests::routers::wire::{header, message, open, read_msg};
use plexus_tests::routers::{tool_available, veth_link, wait_for, Bird, Frr, GoBgp, FRR_BGPD};
use plexus_tests::{skip, Netns};
use tokio::runtime::Runtime;

const LIMIT: Duration = Duration::from_secs(60);
const OUR_AS: u32 = 64512;

/// A runtime whose threads all entered `ns`.
fn runtime_in(ns: &Netns) -> Runtime {
    let f = Arc::new(File::open(ns.path()).expect("open netns"));
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .on_thread_start(move || {
            // SAFETY: affects only this runtime thread; the fd stays open
            // as long as the runtime holds the closure.
            let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        })
        .build()
        .expect("tokio runtime")
}

/// Start a speaker on `rt` (on a worker thread, so the listener is bound in
/// the runtime's namespace).
fn start_speaker(rt: &Runtime, cfg: SpeakerConfig) -> (Speaker, Feed) {
    let (s, rx) = rt
        .block_on(rt.spawn(Speaker::start(cfg)))
        .expect("speaker task")
        .expect("speaker starts");
    (
        s,
        Feed {
            rx,
            table: HashMap::new(),
            log: Vec::new(),
        },
    )
}

fn speaker_cfg(id: [u8; 4]) -> SpeakerConfig {
    let mut cfg = SpeakerConfig::new(Ipv4Addr::from(id), OUR_AS);
    cfg.connect_retry = 2;
    cfg
}

/// The change feed with the routing table it implies.
struct Feed {
    rx: RouteFeed,
    table: HashMap<IpNet, BestRoute>,
    log: Vec<RouteChange>,
}

impl Feed {
    fn drain(&mut self) {
        while let Ok(c) = self.rx.try_recv() {
            match &c.route {
                Some(r) => self.table.insert(c.prefix, r.clone()),
                None => self.table.remove(&c.prefix),
            };
            self.log.push(c);
        }
    }

    /// Wait until the table's route for `prefix` has next hop `nh` (None:
    /// no route).
    fn wait(&mut self, prefix: &str, nh: Option<&str>) {
        let p: IpNet = prefix.parse().unwrap();
        let want: Option<IpAddr> = nh.map(|n| n.parse().unwrap());
        wait_for(
            &format!("{prefix} via {nh:?} in the change feed"),
            LIMIT,
            || {
                self.drain();
                (self.table.get(&p).map(|r| r.next_hop) == want).then_some(())
            },
        );
    }

    /// Every change seen so far for `prefix`.
    fn history(&mut self, prefix: &str) -> Vec<Option<IpAddr>> {
        self.drain();
        let p: IpNet = prefix.parse().unwrap();
        self.log
            .iter()
            .filter(|c| c.prefix == p)
            .map(|c| c.route.as_ref().map(|r| r.next_hop))
            .collect()
    }
}

fn status_of(rt: &Runtime, s: &Speaker, peer: &str) -> PeerStatus {
    let addr: IpAddr = peer.parse().unwrap();
    rt.block_on(s.status())
        .expect("status")
        .into_iter()
        .find(|p| p.address == addr)
        .expect("peer in status")
}

fn wait_established(rt: &Runtime, s: &Speaker, peer: &str) -> PeerStatus {
    wait_for(&format!("session with {peer} Established"), LIMIT, || {
        let st = status_of(rt, s, peer);
        (st.state == State::Established).then_some(st)
    })
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// Root and the given programs, or a SKIP (a failure under
/// PLEXUS_REQUIRE_ALL=1).
fn can_run(tools: &[&str]) -> bool {
    if !plexus_tests::is_root() {
        skip("this test needs root to create network namespaces");
        return false;
    }
    for t in tools {
        if !tool_available(t) {
            skip(&format!(
                "{t} is not installed (scripts/install-deps.sh installs it)"
            ));
            return false;
        }
    }
    true
}

/// A namespace wired to `us`: `us_if` holds 10.10.N.1/24 (and fd10:N::1/64
/// with `v6`), the new namespace's "to-us" holds .2 / ::2.
fn neighbour(us: &Netns, tag: &str, us_if: &str, n: u8, v6: bool) -> Netns {
    let ns = Netns::new(tag);
    let (a4, b4) = (format!("10.10.{n}.1/24"), format!("10.10.{n}.2/24"));
    let (a6, b6) = (format!("fd10:{n}::1/64"), format!("fd10:{n}::2/64"));
    let (mut ours, mut theirs) = (vec![a4.as_str()], vec![b4.as_str()]);
    if v6 {
        ours.push(&a6);
        theirs.push(&b6);
    }
    veth_link(us, us_if, &ours, &ns, "to-us", &theirs);
    ns
}

fn bird_config(static4: &str, static6: &str) -> String {
    format!(
        r#"router id 10.10.1.2;
protocol device {{ }}
protocol static announce4 {{ ipv4; route {static4} blackhole; }}
protocol static announce6 {{ ipv6; route {static6} blackhole; }}
protocol bgp plexus {{
  local 10.10.1.2 as 65010;
  neighbor 10.10.1.1 as {OUR_AS};
  hold time 9;
  connect delay time 1;
  connect retry time 2;
  error wait time 1, 5;
  graceful restart on;
  ipv4 {{ import all; export where source = RTS_STATIC; }};
  ipv6 {{ import all; export where source = RTS_STATIC; next hop address fd10:1::2; }};
}}
"#
    )
}

/// Our namespace and BIRD's, wired, BIRD running, our speaker started with
/// BIRD as a peer.
struct BirdSetup {
    us: Netns,
    _bird_ns: Netns,
    _dir: tempfile::TempDir,
    bird: Bird,
    rt: Runtime,
    speaker: Speaker,
    feed: Feed,
}

fn bird_setup() -> BirdSetup {
    let us = Netns::new("bgpus");
    let bird_ns = neighbour(&us, "bgpbird", "to-bird", 1, true);
    let dir = tempfile::tempdir().unwrap();
    let bird = Bird::start(
        &bird_ns,
        dir.path(),
        &bird_config("10.50.0.0/24", "fd50::/64"),
    );
    let rt = runtime_in(&us);
    let mut cfg = speaker_cfg([10, 10, 1, 1]);
    cfg.next_hop_v6 = Some("fd10:1::1".parse().unwrap());
    let (speaker, feed) = start_speaker(&rt, cfg);
    rt.block_on(speaker.add_peer(PeerConfig::new("10.10.1.2".parse().unwrap(), 65010)))
        .unwrap();
    BirdSetup {
        us,
        _bird_ns: bird_ns,
        _dir: dir,
        bird,
        rt,
        speaker,
        feed,
    }
}

/// The first column of a `birdc show protocols all` statistics line
/// ("Import updates:" = received, "Export updates:" = offered to the peer),
/// summed over channels.
fn bird_counter(show: &str, line: &str) -> u64 {
    show.lines()
        .filter(|l| l.trim_start().starts_with(line))
        .filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok())
        .sum()
}

#[test]
fn bird_session_and_routes_both_ways() {
    if !can_run(&["bird", "birdc"]) {
        return;
    }
    let mut t = bird_setup();
    let rt = &t.rt;
    rt.block_on(t.speaker.originate(net("10.244.1.0/26")))
        .unwrap();
    rt.block_on(t.speaker.originate(net("fd00:244:1::/64")))
        .unwrap();
    wait_for("BIRD's session Established", LIMIT, || {
        t.bird.established("plexus").then_some(())
    });
    let st = wait_established(rt, &t.speaker, "10.10.1.2");
    assert_eq!(st.remote_id, Some(Ipv4Addr::new(10, 10, 1, 2)));

    // Our blocks in BIRD's table, from AS 64512 via our address.
    let r4 = wait_for("10.244.1.0/26 in BIRD", LIMIT, || {
        t.bird.route("10.244.1.0/26")
    });
    assert!(r4.contains("via 10.10.1.1"), "{r4}");
    assert!(r4.contains(&format!("BGP.as_path: {OUR_AS}")), "{r4}");
    let r6 = wait_for("fd00:244:1::/64 in BIRD", LIMIT, || {
        t.bird.route("fd00:244:1::/64")
    });
    assert!(r6.contains("fd10:1::1"), "{r6}");

    // BIRD's statics in our feed.
    t.feed.wait("10.50.0.0/24", Some("10.10.1.2"));
    t.feed.wait("fd50::/64", Some("fd10:1::2"));
    let route = t.feed.table[&net("10.50.0.0/24")].clone();
    assert_eq!(route.attrs.as_path[0].asns, vec![65010]);

    // Route refresh (RFC 2918): `reload in` makes BIRD ask; we answer
    // with the table again, which BIRD counts as received updates.
    let counter = |b: &Bird, line: &str| {
        bird_counter(&b.birdc(&["show", "protocols", "all", "plexus"]), line)
    };
    let before = counter(&t.bird, "Import updates:");
    t.bird.birdc(&["reload", "in", "plexus"]);
    wait_for(
        "BIRD to receive our answer to its ROUTE-REFRESH",
        LIMIT,
        || (counter(&t.bird, "Import updates:") > before).then_some(()),
    );
    // ...and the other way: we ask, BIRD sends its table again.
    let before = counter(&t.bird, "Export updates:");
    let bird_addr: IpAddr = "10.10.1.2".parse().unwrap();
    rt.block_on(t.speaker.refresh(bird_addr, Afi::Ipv4))
        .unwrap();
    wait_for("BIRD to answer our ROUTE-REFRESH", LIMIT, || {
        (counter(&t.bird, "Export updates:") > before).then_some(())
    });
    let unknown: IpAddr = "10.10.1.99".parse().unwrap();
    assert!(matches!(
        rt.block_on(t.speaker.refresh(unknown, Afi::Ipv4)),
        Err(BgpError::NoSuchPeer(_))
    ));

    // Withdrawals, both ways.
    t.bird.birdc(&["disable", "announce4"]);
    t.feed.wait("10.50.0.0/24", None);
    rt.block_on(t.speaker.withdraw(net("10.244.1.0/26")))
        .unwrap();
    wait_for("10.244.1.0/26 gone from BIRD", LIMIT, || {
        t.bird.route("10.244.1.0/26").is_none().then_some(())
    });
    let st = status_of(rt, &t.speaker, "10.10.1.2");
    assert_eq!((st.prefixes_received, st.prefixes_sent), (1, 1));

    // A clean shutdown tells BIRD why.
    let BirdSetup {
        speaker,
        rt,
        bird,
        us,
        ..
    } = t;
    rt.block_on(speaker.shutdown());
    // shutdown() returns once the NOTIFICATION is written: the runtime and
    // its sockets may go at once.
    drop(rt);
    wait_for("BIRD to see the Cease", LIMIT, || {
        let s = bird.birdc(&["show", "protocols", "all", "plexus"]);
        s.contains("Administrative shutdown").then_some(())
    });
    drop(us);
}

#[test]
fn gobgp_session_and_routes_both_ways() {
    if !can_run(&["gobgpd", "gobgp"]) {
        return;
    }
    let us = Netns::new("bgpus");
    let gns = neighbour(&us, "bgpgo", "to-gobgp", 2, false);
    let dir = tempfile::tempdir().unwrap();
    let conf = format!(
        r#"[global.config]
  as = 65020
  router-id = "10.10.2.2"
  local-address-list = ["10.10.2.2"]
[[neighbors]]
  [neighbors.config]
    neighbor-address = "10.10.2.1"
    peer-as = {OUR_AS}
  [neighbors.timers.config]
    connect-retry = 2
    hold-time = 9
    keepalive-interval = 3
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
"#
    );
    let gobgp = GoBgp::start(&gns, dir.path(), &conf);
    let rt = runtime_in(&us);
    let (speaker, mut feed) = start_speaker(&rt, speaker_cfg([10, 10, 2, 1]));
    rt.block_on(speaker.originate(net("10.244.7.0/26")))
        .unwrap();
    rt.block_on(speaker.add_peer(PeerConfig::new("10.10.2.2".parse().unwrap(), 65020)))
        .unwrap();
    wait_for("GoBGP's session established", LIMIT, || {
        gobgp.established("10.10.2.1").then_some(())
    });
    wait_established(&rt, &speaker, "10.10.2.2");

    let rib = wait_for("10.244.7.0/26 in GoBGP's RIB", LIMIT, || {
        let out = gobgp.cli(&["global", "rib", "-a", "ipv4"]);
        out.contains("10.244.7.0/26").then_some(out)
    });
    assert!(rib.contains("10.10.2.1"), "{rib}");
    assert!(rib.contains(&OUR_AS.to_string()), "{rib}");

    gobgp.cli(&["global", "rib", "add", "10.60.0.0/24", "-a", "ipv4"]);
    feed.wait("10.60.0.0/24", Some("10.10.2.2"));
    gobgp.cli(&["global", "rib", "del", "10.60.0.0/24", "-a", "ipv4"]);
    feed.wait("10.60.0.0/24", None);

    rt.block_on(speaker.withdraw(net("10.244.7.0/26"))).unwrap();
    wait_for("10.244.7.0/26 gone from GoBGP", LIMIT, || {
        let out = gobgp.cli(&["global", "rib", "-a", "ipv4"]);
        (!out.contains("10.244.7.0/26")).then_some(())
    });
    rt.block_on(speaker.shutdown());
}

// ---- malformed messages from a raw socket ----

/// A TCP connection from `source` (an address of the current namespace).
fn socket_from(source: &str, to: SocketAddr) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let s = rt.block_on(async {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(SocketAddr::new(source.parse().unwrap(), 0))
            .unwrap();
        sock.connect(to).await.expect("connect")
    });
    let s = s.into_std().unwrap();
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

/// Connect as the raw peer, optionally establish, send `bad`, and return
/// the NOTIFICATION's (code, subcode); also checks the speaker closes.
fn provoke(evil: &Netns, establish: bool, bad: &[u8]) -> (u8, u8) {
    evil.run(|| {
        let to = SocketAddr::from(([10, 10, 3, 1], 179));
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(10)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let (kind, _) = read_msg(&mut s).expect("our OPEN");
        assert_eq!(kind, 1);
        if establish {
            s.write_all(&open(4, 65099, 90, [10, 10, 3, 2])).unwrap();
            s.write_all(&message(4, &[])).unwrap();
            let (kind, _) = read_msg(&mut s).expect("our KEEPALIVE");
            assert_eq!(kind, 4);
        }
        s.write_all(bad).unwrap();
        loop {
            let (kind, body) = read_msg(&mut s).expect("a NOTIFICATION before the close");
            if kind == 3 {
                assert!(
                    read_msg(&mut s).is_none(),
                    "the speaker closes after a NOTIFICATION"
                );
                return (body[0], body[1]);
            }
        }
    })
}

#[test]
fn malformed_messages_get_notifications_and_other_sessions_survive() {
    if !can_run(&["bird", "birdc"]) {
        return;
    }
    let mut t = bird_setup();
    let evil = neighbour(&t.us, "bgpraw", "to-raw", 3, false);
    let mut raw_peer = PeerConfig::new("10.10.3.2".parse().unwrap(), 65099);
    raw_peer.passive = true;
    t.rt.block_on(t.speaker.add_peer(raw_peer)).unwrap();
    t.rt.block_on(t.speaker.originate(net("10.244.1.0/26")))
        .unwrap();
    let before = wait_established(&t.rt, &t.speaker, "10.10.1.2");

    let mut bad_marker = message(4, &[]);
    bad_marker[0] = 0;
    // An UPDATE whose attribute list claims more bytes than it has.
    let bad_attrs = message(2, &[0, 0, 0, 40, 0x40, 1, 1, 0]);
    type Case = (&'static str, bool, Vec<u8>, (u8, u8));
    let cases: Vec<Case> = vec![
        ("bad marker", false, bad_marker, (1, 1)),
        ("length below 19", false, header(18, 4), (1, 2)),
        ("length above 4096", false, header(5000, 2), (1, 2)),
        ("unknown type", false, message(9, &[]), (1, 3)),
        (
            "BGP version 3",
            false,
            open(3, 65099, 90, [10, 10, 3, 2]),
            (2, 1),
        ),
        (
            "wrong peer AS",
            false,
            open(4, 65098, 90, [10, 10, 3, 2]),
            (2, 2),
        ),
        (
            "hold time 1",
            false,
            open(4, 65099, 1, [10, 10, 3, 2]),
            (2, 6),
        ),
        (
            "UPDATE in OpenSent",
            false,
            message(2, &[0, 0, 0, 0]),
            (5, 1),
        ),
        ("malformed attribute list", true, bad_attrs, (3, 1)),
        (
            "NLRI without attributes",
            true,
            message(2, &[0, 0, 0, 0, 24, 10, 1, 0]),
            (3, 3),
        ),
    ];
    for (what, establish, bytes, want) in cases {
        assert_eq!(provoke(&evil, establish, &bytes), want, "{what}");
        let st = status_of(&t.rt, &t.speaker, "10.10.3.2");
        assert!(st.last_error.is_some(), "{what}: no last error in {st:?}");
    }

    // An address that is not a configured peer gets Cease / Connection
    // Rejected.
    evil.ip(&["addr", "add", "10.10.3.3/24", "dev", "to-us", "nodad"]);
    let rejected = evil.run(|| {
        let mut s = socket_from("10.10.3.3", SocketAddr::from(([10, 10, 3, 1], 179)));
        let (kind, body) = read_msg(&mut s).expect("a NOTIFICATION");
        (kind, body[0], body[1])
    });
    assert_eq!(rejected, (3, 6, 5));

    // BIRD's session never dropped, and still carries updates.
    let after = status_of(&t.rt, &t.speaker, "10.10.1.2");
    assert_eq!(after.state, State::Established);
    assert_eq!(after.since, before.since, "the BIRD session flapped");
    t.rt.block_on(t.speaker.originate(net("10.244.9.0/26")))
        .unwrap();
    wait_for("10.244.9.0/26 in BIRD", LIMIT, || {
        t.bird.route("10.244.9.0/26")
    });
    t.feed.wait("10.50.0.0/24", Some("10.10.1.2"));
}

// ---- two plexus speakers: iBGP, collision, graceful restart ----

#[test]
fn two_speakers_graceful_restart_keeps_routes_until_end_of_rib() {
    if !can_run(&[]) {
        return;
    }
    let a_ns = Netns::new("bgpa");
    let b_ns = neighbour(&a_ns, "bgpb", "to-b", 4, false);
    let gr = GracefulRestart {
        restart_time: 120,
        ..GracefulRestart::default()
    };
    let a_rt = runtime_in(&a_ns);
    let mut a_cfg = speaker_cfg([10, 10, 4, 1]);
    a_cfg.graceful_restart = Some(gr);
    let (a, mut a_feed) = start_speaker(&a_rt, a_cfg);
    a_rt.block_on(a.add_peer(PeerConfig::new("10.10.4.2".parse().unwrap(), OUR_AS)))
        .unwrap();
    a_rt.block_on(a.originate(net("10.244.1.0/26"))).unwrap();

    let start_b = |restarting: bool, blocks: &[&str]| {
        let rt = runtime_in(&b_ns);
        let mut cfg = speaker_cfg([10, 10, 4, 2]);
        // Like plexusd, whose kernel routes outlive it: forwarding is
        // always preserved; R only after a restart. And like plexusd, its
        // blocks are originated after the sessions may be up.
        cfg.graceful_restart = Some(GracefulRestart {
            restarting,
            forwarding_preserved: true,
            ..gr
        });
        cfg.local_routes_pending = true;
        let (b, feed) = start_speaker(&rt, cfg);
        rt.block_on(b.add_peer(PeerConfig::new("10.10.4.1".parse().unwrap(), OUR_AS)))
            .unwrap();
        if restarting {
            // The restart's deferral is over (A's End-of-RIB is in) before
            // B's own routes are: B's End-of-RIB must still wait for them.
            wait_for("B synced with A", LIMIT, || {
                status_of(&rt, &b, "10.10.4.1").synced.then_some(())
            });
        }
        for p in blocks {
            rt.block_on(b.originate(net(p))).unwrap();
        }
        rt.block_on(b.local_routes_complete()).unwrap();
        (rt, b, feed)
    };
    let (b_rt, b, mut b_feed) = start_b(false, &["10.244.2.0/26", "10.244.3.0/26"]);
    // Both sides connect actively: collision resolution leaves one session.
    wait_established(&a_rt, &a, "10.10.4.2");
    wait_established(&b_rt, &b, "10.10.4.1");
    a_feed.wait("10.244.2.0/26", Some("10.10.4.2"));
    a_feed.wait("10.244.3.0/26", Some("10.10.4.2"));
    b_feed.wait("10.244.1.0/26", Some("10.10.4.1"));

    // B dies without a NOTIFICATION (its runtime and sockets vanish).
    drop(b);
    drop(b_rt);
    wait_for("A to notice B is gone", LIMIT, || {
        (status_of(&a_rt, &a, "10.10.4.2").state != State::Established).then_some(())
    });
    // A keeps B's routes (stale) meanwhile.
    let rib = a_rt.block_on(a.loc_rib()).unwrap();
    assert!(rib.iter().any(|e| e.prefix == net("10.244.3.0/26")));

    // B restarts (R and F bits) and now holds only one of its two blocks:
    // after its End-of-RIB, A drops the other.
    let (b_rt, b, _b_feed) = start_b(true, &["10.244.2.0/26"]);
    wait_established(&a_rt, &a, "10.10.4.2");
    a_feed.wait("10.244.3.0/26", None);
    // Both ends have each other's whole table.
    wait_for("A synced with B", LIMIT, || {
        status_of(&a_rt, &a, "10.10.4.2").synced.then_some(())
    });
    wait_for("B synced with A", LIMIT, || {
        status_of(&b_rt, &b, "10.10.4.1").synced.then_some(())
    });
    assert_eq!(
        a_feed.history("10.244.2.0/26"),
        vec![Some("10.10.4.2".parse().unwrap())],
        "the preserved route was never withdrawn"
    );
    b_rt.block_on(b.shutdown());
    a_rt.block_on(a.shutdown());
}

// ---- route reflection between BIRD and GoBGP ----

#[test]
fn route_reflector_between_bird_and_gobgp_clients() {
    if !can_run(&["bird", "birdc", "gobgpd", "gobgp"]) {
        return;
    }
    let us = Netns::new("bgprr");
    let bird_ns = neighbour(&us, "bgprrbird", "to-bird", 1, false);
    let go_ns = neighbour(&us, "bgprrgo", "to-gobgp", 2, false);
    let dir = tempfile::tempdir().unwrap();
    let bird_dir = dir.path().join("bird");
    let go_dir = dir.path().join("gobgp");
    std::fs::create_dir_all(&bird_dir).unwrap();
    std::fs::create_dir_all(&go_dir).unwrap();
    // iBGP resolves next hops recursively: BIRD learns the way to GoBGP's
    // subnet from a static route.
    let bird = Bird::start(
        &bird_ns,
        &bird_dir,
        &format!(
            r#"router id 10.10.1.2;
protocol device {{ }}
protocol direct {{ ipv4; interface "to-us"; }}
protocol static announce4 {{ ipv4; route 10.50.0.0/24 blackhole; }}
protocol static reach {{ ipv4; route 10.10.2.0/24 via 10.10.1.1; }}
protocol bgp plexus {{
  local 10.10.1.2 as {OUR_AS};
  neighbor 10.10.1.1 as {OUR_AS};
  connect delay time 1;
  connect retry time 2;
  ipv4 {{ import all; export where net = 10.50.0.0/24; }};
}}
"#
        ),
    );
    let gobgp = GoBgp::start(
        &go_ns,
        &go_dir,
        &format!(
            r#"[global.config]
  as = {OUR_AS}
  router-id = "10.10.2.2"
  local-address-list = ["10.10.2.2"]
[[neighbors]]
  [neighbors.config]
    neighbor-address = "10.10.2.1"
    peer-as = {OUR_AS}
  [neighbors.timers.config]
    connect-retry = 2
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
"#
        ),
    );
    let rt = runtime_in(&us);
    let (speaker, mut feed) = start_speaker(&rt, speaker_cfg([10, 10, 1, 1]));
    for (addr, _) in [("10.10.1.2", "bird"), ("10.10.2.2", "gobgp")] {
        let mut p = PeerConfig::new(addr.parse().unwrap(), OUR_AS);
        p.rr_client = true;
        rt.block_on(speaker.add_peer(p)).unwrap();
    }
    rt.block_on(speaker.originate(net("10.244.5.0/26")))
        .unwrap();
    wait_established(&rt, &speaker, "10.10.1.2");
    wait_established(&rt, &speaker, "10.10.2.2");
    gobgp.cli(&[
        "global",
        "rib",
        "add",
        "10.60.0.0/24",
        "large-community",
        "65000:1:2",
        "-a",
        "ipv4",
    ]);

    // Each client's route reaches us...
    feed.wait("10.50.0.0/24", Some("10.10.1.2"));
    feed.wait("10.60.0.0/24", Some("10.10.2.2"));
    // ...and is reflected to the other with its next hop unchanged,
    // ORIGINATOR_ID = the client's router ID, CLUSTER_LIST = our cluster.
    let at_go = wait_for("10.50.0.0/24 reflected to GoBGP", LIMIT, || {
        let out = gobgp.cli(&["global", "rib", "-a", "ipv4", "10.50.0.0/24"]);
        out.contains("10.50.0.0/24").then_some(out)
    });
    assert!(at_go.contains("10.10.1.2"), "{at_go}");
    let attrs = gobgp.cli(&["global", "rib", "-a", "ipv4", "10.50.0.0/24", "-j"]);
    assert!(
        attrs.contains("10.10.1.2") && attrs.contains("10.10.1.1"),
        "{attrs}"
    );
    let at_bird = wait_for("10.60.0.0/24 reflected to BIRD", LIMIT, || {
        bird.route("10.60.0.0/24")
    });
    assert!(
        at_bird.contains("BGP.originator_id: 10.10.2.2"),
        "{at_bird}"
    );
    assert!(at_bird.contains("BGP.cluster_list: 10.10.1.1"), "{at_bird}");
    assert!(at_bird.contains("BGP.next_hop: 10.10.2.2"), "{at_bird}");
    // An attribute we do not act on is passed on.
    assert!(
        at_bird.contains("BGP.large_community: (65000, 1, 2)"),
        "{at_bird}"
    );
    // Our own block goes to both with our next hop.
    let own = wait_for("10.244.5.0/26 in BIRD", LIMIT, || {
        bird.route("10.244.5.0/26")
    });
    assert!(own.contains("BGP.next_hop: 10.10.1.1"), "{own}");
    assert!(!own.contains("originator_id"), "{own}");
    rt.block_on(speaker.shutdown());
}

// ---- a full table's worth of prefixes ----

#[test]
fn ten_thousand_prefixes_from_bird_reach_the_feed_and_leave_it() {
    if !can_run(&["bird", "birdc"]) {
        return;
    }
    let us = Netns::new("bgpbig");
    let bird_ns = neighbour(&us, "bgpbigbird", "to-bird", 1, false);
    let dir = tempfile::tempdir().unwrap();
    let routes: String = (0..10_000u32)
        .map(|i| format!("  route 172.{}.{}.0/24 blackhole;\n", 16 + i / 256, i % 256))
        .collect();
    let bird = Bird::start(
        &bird_ns,
        dir.path(),
        &format!(
            r#"router id 10.10.1.2;
protocol device {{ }}
protocol static many {{ ipv4;
{routes}}}
protocol bgp plexus {{
  local 10.10.1.2 as 65010;
  neighbor 10.10.1.1 as {OUR_AS};
  connect delay time 1;
  connect retry time 2;
  ipv4 {{ import none; export where source = RTS_STATIC; }};
}}
"#
        ),
    );
    let rt = runtime_in(&us);
    let (speaker, mut feed) = start_speaker(&rt, speaker_cfg([10, 10, 1, 1]));
    rt.block_on(speaker.add_peer(PeerConfig::new("10.10.1.2".parse().unwrap(), 65010)))
        .unwrap();
    let started = std::time::Instant::now();
    wait_for("10,000 routes in the feed", LIMIT, || {
        feed.drain();
        (feed.table.len() == 10_000).then_some(())
    });
    eprintln!(
        "10,000 routes from session start to feed: {:?}",
        started.elapsed()
    );
    assert!(feed
        .table
        .values()
        .all(|r| r.next_hop == "10.10.1.2".parse::<IpAddr>().unwrap()));
    assert_eq!(
        status_of(&rt, &speaker, "10.10.1.2").prefixes_received,
        10_000
    );
    bird.birdc(&["disable", "many"]);
    wait_for("all 10,000 withdrawn", LIMIT, || {
        feed.drain();
        feed.table.is_empty().then_some(())
    });
    assert_eq!(feed.log.len(), 20_000);
    rt.block_on(speaker.shutdown());
}

// ---- a session over IPv6 ----

#[test]
fn bird_session_over_ipv6_carries_both_families() {
    if !can_run(&["bird", "birdc"]) {
        return;
    }
    let us = Netns::new("bgpv6");
    let bird_ns = neighbour(&us, "bgpv6bird", "to-bird", 1, true);
    let dir = tempfile::tempdir().unwrap();
    let bird = Bird::start(
        &bird_ns,
        dir.path(),
        &format!(
            r#"router id 10.10.1.2;
protocol device {{ }}
protocol static announce4 {{ ipv4; route 10.50.0.0/24 blackhole; }}
protocol static announce6 {{ ipv6; route fd50::/64 blackhole; }}
protocol bgp plexus {{
  local fd10:1::2 as 65010;
  neighbor fd10:1::1 as {OUR_AS};
  connect delay time 1;
  connect retry time 2;
  ipv4 {{ import all; export where source = RTS_STATIC; next hop address 10.10.1.2; }};
  ipv6 {{ import all; export where source = RTS_STATIC; }};
}}
"#
        ),
    );
    let rt = runtime_in(&us);
    let mut cfg = speaker_cfg([10, 10, 1, 1]);
    // IPv4 prefixes over an IPv6 session need an IPv4 next hop.
    cfg.next_hop_v4 = Some(Ipv4Addr::new(10, 10, 1, 1));
    let (speaker, mut feed) = start_speaker(&rt, cfg);
    rt.block_on(speaker.originate(net("10.244.6.0/26")))
        .unwrap();
    rt.block_on(speaker.originate(net("fd00:244:6::/64")))
        .unwrap();
    rt.block_on(speaker.add_peer(PeerConfig::new("fd10:1::2".parse().unwrap(), 65010)))
        .unwrap();
    wait_established(&rt, &speaker, "fd10:1::2");
    feed.wait("fd50::/64", Some("fd10:1::2"));
    feed.wait("10.50.0.0/24", Some("10.10.1.2"));
    let r6 = wait_for("fd00:244:6::/64 in BIRD", LIMIT, || {
        bird.route("fd00:244:6::/64")
    });
    assert!(r6.contains("BGP.next_hop: fd10:1::1"), "{r6}");
    let r4 = wait_for("10.244.6.0/26 in BIRD", LIMIT, || {
        bird.route("10.244.6.0/26")
    });
    assert!(r4.contains("BGP.next_hop: 10.10.1.1"), "{r4}");
    rt.block_on(speaker.shutdown());
}

// ---- the import guard against a router announcing what it must not ----

/// What our node knows in the guard test: it is 10.10.1.1 on 10.10.1.0/24;
/// node 10.20.0.7 sits across a router; the pool is 10.244.0.0/16; BIRD is
/// an external router.
fn guard_for_bird() -> Guard {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    Guard {
        own_addresses: [ip("10.10.1.1")].into(),
        connected: [net("10.10.1.0/24")].into(),
        node_addresses: [ip("10.10.1.1"), ip("10.20.0.7")].into(),
        pools: [net("10.244.0.0/16")].into(),
        peers: [(ip("10.10.1.2"), PeerKind::External)].into(),
    }
}

#[test]
fn guard_rejects_what_bird_must_not_announce_and_the_session_stays_up() {
    if !can_run(&["bird", "birdc"]) {
        return;
    }
    let us = Netns::new("bgpguard");
    let bird_ns = neighbour(&us, "bgpguardbird", "to-bird", 1, false);
    let dir = tempfile::tempdir().unwrap();
    let bird = Bird::start(
        &bird_ns,
        dir.path(),
        &format!(
            r#"router id 10.10.1.2;
protocol device {{ }}
protocol static hostile {{ ipv4;
  route 0.0.0.0/0 blackhole;
  route 192.0.2.0/24 blackhole;
  route 198.51.100.0/24 blackhole;
  route 10.10.1.0/24 blackhole;
  route 10.20.0.7/32 blackhole;
  route 10.240.0.0/12 blackhole;
}}
protocol bgp plexus {{
  local 10.10.1.2 as 65010;
  neighbor 10.10.1.1 as {OUR_AS};
  connect delay time 1;
  connect retry time 2;
  ipv4 {{ import all; export filter {{
    if net = 198.51.100.0/24 then bgp_next_hop = 127.0.0.1;
    accept;
  }}; }};
}}
"#
        ),
    );
    let rt = runtime_in(&us);
    let mut cfg = speaker_cfg([10, 10, 1, 1]);
    cfg.guard = guard_for_bird();
    let (speaker, mut feed) = start_speaker(&rt, cfg);
    rt.block_on(speaker.add_peer(PeerConfig::new("10.10.1.2".parse().unwrap(), 65010)))
        .unwrap();
    let up = wait_established(&rt, &speaker, "10.10.1.2");
    let st = wait_for("all six paths received", LIMIT, || {
        let st = status_of(&rt, &speaker, "10.10.1.2");
        (st.prefixes_received == 6).then_some(st)
    });
    assert_eq!(
        (
            st.prefixes_accepted,
            st.prefixes_rejected_by_guard,
            st.prefixes_rejected_by_filter
        ),
        (2, 4, 0),
        "{st:?}"
    );
    // Only the ordinary route and the ToR-style default reach the feed.
    feed.wait("192.0.2.0/24", Some("10.10.1.2"));
    feed.wait("0.0.0.0/0", Some("10.10.1.2"));
    feed.drain();
    let mut installed: Vec<String> = feed.table.keys().map(ToString::to_string).collect();
    installed.sort();
    assert_eq!(installed, vec!["0.0.0.0/0", "192.0.2.0/24"]);

    // Each rejection with its reason, as `plexusctl bgp routes` will show.
    let verdicts: HashMap<String, Verdict> = rt
        .block_on(speaker.adj_rib_in(Some("10.10.1.2".parse().unwrap())))
        .unwrap()
        .into_iter()
        .map(|e| (e.prefix.to_string(), e.verdict))
        .collect();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let want = [
        (
            "198.51.100.0/24",
            Reason::MartianNextHop {
                next_hop: ip("127.0.0.1"),
            },
        ),
        (
            "10.10.1.0/24",
            Reason::ConnectedPrefix {
                subnet: net("10.10.1.0/24"),
            },
        ),
        (
            "10.20.0.7/32",
            Reason::NodeAddress {
                address: ip("10.20.0.7"),
            },
        ),
        (
            "10.240.0.0/12",
            Reason::PoolPrefix {
                pool: net("10.244.0.0/16"),
            },
        ),
    ];
    for (prefix, reason) in want {
        assert_eq!(verdicts[prefix], Verdict::Rejected(reason), "{prefix}");
    }
    assert_eq!(verdicts["0.0.0.0/0"], Verdict::Accepted);

    // A new guard re-judges what is stored, without BIRD sending anything
    // again: with no pools, the covering /12 is accepted at once.
    let exported = |b: &Bird| {
        bird_counter(
            &b.birdc(&["show", "protocols", "all", "plexus"]),
            "Export updates:",
        )
    };
    let sent_before = exported(&bird);
    let mut no_pools = guard_for_bird();
    no_pools.pools.clear();
    rt.block_on(speaker.set_guard(no_pools)).unwrap();
    feed.wait("10.240.0.0/12", Some("10.10.1.2"));
    rt.block_on(speaker.set_guard(guard_for_bird())).unwrap();
    feed.wait("10.240.0.0/12", None);
    assert_eq!(exported(&bird), sent_before, "BIRD was asked to resend");

    // The session never dropped.
    let after = status_of(&rt, &speaker, "10.10.1.2");
    assert_eq!(after.state, State::Established);
    assert_eq!(after.since, up.since, "the session flapped");
    assert!(bird.established("plexus"));
    rt.block_on(speaker.shutdown());
}

// ---- per-peer policy: communities, filters, prefix limits ----

fn community(s: &str) -> Community {
    s.parse().unwrap()
}

fn large(s: &str) -> LargeCommunity {
    s.parse().unwrap()
}

/// BIRD (AS 65010) at 10.10.1.2 exporting its statics, with `extra`
/// inside the export filter before `accept`.
fn bird_exporting(statics: &str, extra: &str, session: &str) -> String {
    format!(
        r#"router id 10.10.1.2;
protocol device {{ }}
protocol static announce4 {{ ipv4; {statics} }}
protocol bgp plexus {{
  local 10.10.1.2 as 65010;
  neighbor 10.10.1.1 as {OUR_AS};
  connect delay time 1;
  connect retry time 2;
  error wait time 1, 2;
  {session}
  ipv4 {{ import all; export filter {{
    if source != RTS_STATIC then reject;
    {extra}
    accept;
  }}; }};
}}
"#
    )
}

#[test]
fn communities_reach_bird_and_filters_apply_both_ways() {
    if !can_run(&["bird", "birdc"]) {
        return;
    }
    let us = Netns::new("bgpcomm");
    let bird_ns = neighbour(&us, "bgpcommbird", "to-bird", 1, false);
    let dir = tempfile::tempdir().unwrap();
    let bird = Bird::start(
        &bird_ns,
        dir.path(),
        &bird_exporting(
            "route 192.0.2.0/24 blackhole; route 198.51.100.0/24 blackhole;",
            "if net = 192.0.2.0/24 then bgp_community.add((65010, 666));",
            "",
        ),
    );
    let rt = runtime_in(&us);
    let (speaker, mut feed) = start_speaker(&rt, speaker_cfg([10, 10, 1, 1]));
    // The pool's communities on our block; the peer's on everything it
    // is sent; no routes tagged 65010:666 in; 10.244.2.0/26 never out.
    let pool = CommunitySet {
        standard: vec![community("64512:1")],
        large: vec![large("64512:0:1")],
    };
    rt.block_on(speaker.originate_with(net("10.244.1.0/26"), pool))
        .unwrap();
    rt.block_on(speaker.originate(net("10.244.2.0/26")))
        .unwrap();
    let mut p = PeerConfig::new("10.10.1.2".parse().unwrap(), 65010);
    p.export_communities = CommunitySet {
        standard: vec![community("65010:42")],
        large: vec![large("65010:7:7")],
    };
    p.filters = vec![BgpFilter {
        name: "lab".into(),
        import_v4: vec![FilterRule::new(FilterAction::Reject).community(community("65010:666"))],
        export_v4: vec![
            FilterRule::new(FilterAction::Reject).cidr(MatchOperator::Equal, net("10.244.2.0/26"))
        ],
        ..BgpFilter::default()
    }];
    p.graceful_restart_time = Some(45);
    rt.block_on(speaker.add_peer(p.clone())).unwrap();
    let up = wait_established(&rt, &speaker, "10.10.1.2");
    // The per-peer restart time is what BIRD was told.
    let caps = bird.birdc(&["show", "protocols", "all", "plexus"]);
    assert!(caps.contains("Restart time: 45"), "{caps}");

    let r = wait_for("10.244.1.0/26 in BIRD", LIMIT, || {
        bird.route("10.244.1.0/26")
    });
    assert!(r.contains("(64512,1)") && r.contains("(65010,42)"), "{r}");
    assert!(
        r.contains("(64512, 0, 1)") && r.contains("(65010, 7, 7)"),
        "{r}"
    );
    feed.wait("198.51.100.0/24", Some("10.10.1.2"));
    let st = wait_for("both BIRD routes received", LIMIT, || {
        let st = status_of(&rt, &speaker, "10.10.1.2");
        (st.prefixes_received == 2).then_some(st)
    });
    assert_eq!(
        (
            st.prefixes_accepted,
            st.prefixes_rejected_by_filter,
            st.prefixes_sent
        ),
        (1, 1, 1)
    );
    assert!(bird.route("10.244.2.0/26").is_none());
    assert!(!feed.table.contains_key(&net("192.0.2.0/24")));
    let why = rt
        .block_on(speaker.adj_rib_in(None))
        .unwrap()
        .into_iter()
        .find(|e| e.prefix == net("192.0.2.0/24"))
        .unwrap();
    assert_eq!(
        why.verdict,
        Verdict::Rejected(Reason::Filter {
            filter: "lab".into(),
            rule: 0
        })
    );
    assert_eq!(why.attrs.communities, vec![community("65010:666").0]);

    // Filters off: both ways at once, on the same session.
    p.filters.clear();
    rt.block_on(speaker.update_peer(p)).unwrap();
    feed.wait("192.0.2.0/24", Some("10.10.1.2"));
    wait_for("10.244.2.0/26 in BIRD", LIMIT, || {
        bird.route("10.244.2.0/26")
    });
    assert_eq!(status_of(&rt, &speaker, "10.10.1.2").since, up.since);
    rt.block_on(speaker.shutdown());
}

#[test]
fn too_many_prefixes_reset_the_session_which_stays_down_then_comes_back() {
    if !can_run(&["bird", "birdc"]) {
        return;
    }
    let us = Netns::new("bgpmax");
    let bird_ns = neighbour(&us, "bgpmaxbird", "to-bird", 1, false);
    let dir = tempfile::tempdir().unwrap();
    let statics: String = (0..5)
        .map(|i| format!("route 192.0.{i}.0/24 blackhole; "))
        .collect();
    let bird = Bird::start(&bird_ns, dir.path(), &bird_exporting(&statics, "", ""));
    let rt = runtime_in(&us);
    let (speaker, mut feed) = start_speaker(&rt, speaker_cfg([10, 10, 1, 1]));
    let mut p = PeerConfig::new("10.10.1.2".parse().unwrap(), 65010);
    p.max_prefixes = Some(MaxPrefixes {
        limit: 3,
        restart: 3,
    });
    rt.block_on(speaker.add_peer(p.clone())).unwrap();
    let st = wait_for("the prefix limit to reset the session", LIMIT, || {
        let st = status_of(&rt, &speaker, "10.10.1.2");
        st.last_error
            .as_deref()
            .is_some_and(|e| e.contains("maximum number of prefixes"))
            .then_some(st)
    });
    assert_ne!(st.state, State::Established, "{st:?}");
    assert!(
        st.last_error.as_deref().unwrap().contains("more than 3"),
        "{st:?}"
    );
    wait_for(
        "BIRD to see Cease / maximum number of prefixes",
        LIMIT,
        || {
            let s = bird.birdc(&["show", "protocols", "all", "plexus"]);
            s.to_lowercase()
                .contains("maximum number of prefixes reached")
                .then_some(())
        },
    );
    // Nothing of BIRD's is left in the table.
    feed.drain();
    assert!(feed.table.is_empty(), "{:?}", feed.table.keys());
    // A higher limit, while the peer is held down: after its restart time
    // the session comes back and stays.
    p.max_prefixes = Some(MaxPrefixes {
        limit: 10,
        restart: 3,
    });
    rt.block_on(speaker.update_peer(p)).unwrap();
    for i in 0..5 {
        feed.wait(&format!("192.0.{i}.0/24"), Some("10.10.1.2"));
    }
    let st = wait_established(&rt, &speaker, "10.10.1.2");
    assert_eq!((st.prefixes_received, st.last_error), (5, None));
    rt.block_on(speaker.shutdown());
}

// ---- TCP MD5 (RFC 2385) with each router ----

/// Poll for `secs` seconds: the session with `peer` must never be
/// Established; returns the last status.
fn never_established(rt: &Runtime, s: &Speaker, peer: &str, secs: u64) -> PeerStatus {
    let end = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let st = status_of(rt, s, peer);
        assert_ne!(st.state, State::Established, "{st:?}");
        if std::time::Instant::now() >= end {
            return st;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Our side of an MD5 test: a wrong key, then none, never establish and
/// say MD5 is the likely cause; the right key establishes.
fn md5_cases(rt: &Runtime, speaker: &Speaker, mut p: PeerConfig, router_up: impl Fn() -> bool) {
    let peer = p.address.to_string();
    p.password = Some(Password::new("wrong"));
    rt.block_on(speaker.add_peer(p.clone())).unwrap();
    let st = never_established(rt, speaker, &peer, 8);
    let why = st.last_error.unwrap_or_default();
    assert!(why.contains("TCP MD5"), "{why}");
    assert!(!router_up());
    p.password = None;
    rt.block_on(speaker.update_peer(p.clone())).unwrap();
    never_established(rt, speaker, &peer, 6);
    p.password = Some(Password::new("s3cret"));
    rt.block_on(speaker.update_peer(p)).unwrap();
    let st = wait_established(rt, speaker, &peer);
    assert_eq!(st.last_error, None);
    wait_for("the router's session Established", LIMIT, || {
        router_up().then_some(())
    });
}

#[test]
fn md5_with_bird_connecting_to_our_listener() {
    if !can_run(&["bird", "birdc"]) {
        return;
    }
    let us = Netns::new("bgpmd5");
    let bird_ns = neighbour(&us, "bgpmd5bird", "to-bird", 1, false);
    let dir = tempfile::tempdir().unwrap();
    let bird = Bird::start(
        &bird_ns,
        dir.path(),
        &bird_exporting("route 192.0.2.0/24 blackhole;", "", r#"password "s3cret";"#),
    );
    let rt = runtime_in(&us);
    let (speaker, mut feed) = start_speaker(&rt, speaker_cfg([10, 10, 1, 1]));
    // Passive: only BIRD connects, so the key on our listener is what is
    // tested.
    let mut p = PeerConfig::new("10.10.1.2".parse().unwrap(), 65010);
    p.passive = true;
    md5_cases(&rt, &speaker, p, || bird.established("plexus"));
    feed.wait("192.0.2.0/24", Some("10.10.1.2"));
    rt.block_on(speaker.shutdown());
}

#[test]
fn md5_with_gobgp_waiting_for_our_connection() {
    if !can_run(&["gobgpd", "gobgp"]) {
        return;
    }
    let us = Netns::new("bgpmd5");
    let gns = neighbour(&us, "bgpmd5go", "to-gobgp", 2, false);
    let dir = tempfile::tempdir().unwrap();
    let gobgp = GoBgp::start(
        &gns,
        dir.path(),
        &format!(
            r#"[global.config]
  as = 65020
  router-id = "10.10.2.2"
  local-address-list = ["10.10.2.2"]
[[neighbors]]
  [neighbors.config]
    neighbor-address = "10.10.2.1"
    peer-as = {OUR_AS}
    auth-password = "s3cret"
  [neighbors.transport.config]
    passive-mode = true
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
"#
        ),
    );
    let rt = runtime_in(&us);
    let (speaker, _feed) = start_speaker(&rt, speaker_cfg([10, 10, 2, 1]));
    // GoBGP is passive: our signed SYNs are what is tested.
    let p = PeerConfig::new("10.10.2.2".parse().unwrap(), 65020);
    md5_cases(&rt, &speaker, p, || gobgp.established("10.10.2.1"));
    rt.block_on(speaker.shutdown());
}

#[test]
fn md5_with_frr() {
    if !can_run(&[FRR_BGPD, "vtysh"]) {
        return;
    }
    let us = Netns::new("bgpmd5");
    let fns = neighbour(&us, "bgpmd5frr", "to-frr", 5, false);
    let dir = tempfile::tempdir().unwrap();
    let frr = Frr::start(
        &fns,
        dir.path(),
        &format!(
            r#"frr defaults traditional
router bgp 65030
 bgp router-id 10.10.5.2
 no bgp ebgp-requires-policy
 no bgp network import-check
 neighbor 10.10.5.1 remote-as {OUR_AS}
 neighbor 10.10.5.1 password s3cret
 neighbor 10.10.5.1 timers connect 2
 address-family ipv4 unicast
  network 10.70.0.0/24
 exit-address-family
"#
        ),
    );
    let rt = runtime_in(&us);
    let (speaker, mut feed) = start_speaker(&rt, speaker_cfg([10, 10, 5, 1]));
    let p = PeerConfig::new("10.10.5.2".parse().unwrap(), 65030);
    md5_cases(&rt, &speaker, p, || frr.established("10.10.5.1"));
    feed.wait("10.70.0.0/24", Some("10.10.5.2"));
    rt.block_on(speaker.shutdown());
}

// ---- TTL security (RFC 5082) ----

#[test]
fn ttl_security_with_bird_and_frr() {
    if !can_run(&["bird", "birdc", FRR_BGPD, "vtysh"]) {
        return;
    }
    let us = Netns::new("bgpttl");
    let bird_ns = neighbour(&us, "bgpttlbird", "to-bird", 1, false);
    let fns = neighbour(&us, "bgpttlfrr", "to-frr", 5, false);
    let dir = tempfile::tempdir().unwrap();
    let (bird_dir, frr_dir) = (dir.path().join("bird"), dir.path().join("frr"));
    std::fs::create_dir_all(&bird_dir).unwrap();
    std::fs::create_dir_all(&frr_dir).unwrap();
    let rt = runtime_in(&us);
    let (speaker, _feed) = start_speaker(&rt, speaker_cfg([10, 10, 1, 1]));
    let mut p = PeerConfig::new("10.10.1.2".parse().unwrap(), 65010);
    p.ttl_security = Some(1);
    rt.block_on(speaker.add_peer(p)).unwrap();

    // BIRD without TTL security sends eBGP with TTL 1: never accepted.
    let plain = Bird::start(
        &bird_ns,
        &bird_dir,
        &bird_exporting("route 192.0.2.0/24 blackhole;", "", ""),
    );
    let st = never_established(&rt, &speaker, "10.10.1.2", 8);
    assert!(
        st.last_error.as_deref().is_some_and(|e| e.contains("TTL")),
        "{st:?}"
    );
    drop(plain);
    // With it, the session comes up.
    let bird = Bird::start(
        &bird_ns,
        &bird_dir,
        &bird_exporting("route 192.0.2.0/24 blackhole;", "", "ttl security on;"),
    );
    wait_established(&rt, &speaker, "10.10.1.2");
    assert!(bird.established("plexus"));

    // FRR with GTSM, one hop.
    let frr = Frr::start(
        &fns,
        &frr_dir,
        &format!(
            r#"frr defaults traditional
router bgp 65030
 bgp router-id 10.10.5.2
 no bgp ebgp-requires-policy
 neighbor 10.10.5.1 remote-as {OUR_AS}
 neighbor 10.10.5.1 ttl-security hops 1
 neighbor 10.10.5.1 timers connect 2
"#
        ),
    );
    let mut p = PeerConfig::new("10.10.5.2".parse().unwrap(), 65030);
    p.ttl_security = Some(1);
    rt.block_on(speaker.add_peer(p)).unwrap();
    wait_established(&rt, &speaker, "10.10.5.2");
    wait_for("FRR's session Established", LIMIT, || {
        frr.established("10.10.5.1").then_some(())
    });
    rt.block_on(speaker.shutdown());
}

// ---- listening on given addresses only (MD5 and GTSM on them) ----

#[test]
fn the_speaker_listens_on_the_given_addresses_only() {
    if !can_run(&["bird", "birdc"]) {
        return;
    }
    let us = Netns::new("bgplisten");
    let bird_ns = neighbour(&us, "bgplistenbird", "to-bird", 1, true);
    // Another address of ours, on the same link, nothing listens on.
    us.ip(&["addr", "add", "10.10.1.3/24", "dev", "to-bird"]);
    let dir = tempfile::tempdir().unwrap();
    let bird = Bird::start(
        &bird_ns,
        dir.path(),
        &format!(
            r#"router id 10.10.1.2;
protocol device {{ }}
protocol bgp v4 {{
  local 10.10.1.2 as 65010;
  neighbor 10.10.1.1 as {OUR_AS};
  connect delay time 1;
  connect retry time 2;
  password "v4-key";
  ipv4 {{ import all; export none; }};
}}
protocol bgp v6 {{
  local fd10:1::2 as 65010;
  neighbor fd10:1::1 as {OUR_AS};
  connect delay time 1;
  connect retry time 2;
  password "v6-key";
  ttl security on;
  ipv6 {{ import all; export none; }};
}}
"#
        ),
    );
    let rt = runtime_in(&us);
    let mut cfg = speaker_cfg([10, 10, 1, 1]);
    cfg.listen = vec![
        "10.10.1.1:179".parse().unwrap(),
        "[fd10:1::1]:179".parse().unwrap(),
    ];
    let (speaker, _feed) = start_speaker(&rt, cfg);
    assert_eq!(speaker.listen_addrs().len(), 2);
    // Passive: BIRD's connections to our two addresses carry both, with
    // MD5 keys on an IPv4 and an IPv6 socket, and GTSM over IPv6.
    for (addr, key) in [("10.10.1.2", "v4-key"), ("fd10:1::2", "v6-key")] {
        let mut p = PeerConfig::new(addr.parse().unwrap(), 65010);
        p.passive = true;
        p.password = Some(Password::new(key));
        p.ttl_security = addr.contains(':').then_some(1);
        rt.block_on(speaker.add_peer(p)).unwrap();
    }
    wait_established(&rt, &speaker, "10.10.1.2");
    wait_established(&rt, &speaker, "fd10:1::2");
    assert!(bird.established("v4") && bird.established("v6"));
    // Port 179 on our other address is closed.
    let refused = bird_ns.run(|| {
        TcpStream::connect_timeout(
            &SocketAddr::from(([10, 10, 1, 3], 179)),
            Duration::from_secs(10),
        )
        .map(|_| ())
        .unwrap_err()
        .kind()
    });
    assert_eq!(refused, std::io::ErrorKind::ConnectionRefused);
    rt.block_on(speaker.shutdown());
}

// ---- ECMP: one prefix from two routers ----

#[test]
fn ecmp_one_prefix_from_bird_and_frr_gives_both_next_hops() {
    if !can_run(&["bird", "birdc", FRR_BGPD, "vtysh"]) {
        return;
    }
    let us = Netns::new("bgpecmp");
    let bird_ns = neighbour(&us, "bgpecmpbird", "to-bird", 1, false);
    let fns = neighbour(&us, "bgpecmpfrr", "to-frr", 5, false);
    let dir = tempfile::tempdir().unwrap();
    let (bird_dir, frr_dir) = (dir.path().join("bird"), dir.path().join("frr"));
    std::fs::create_dir_all(&bird_dir).unwrap();
    std::fs::create_dir_all(&frr_dir).unwrap();
    let bird = Bird::start(
        &bird_ns,
        &bird_dir,
        &bird_exporting(
            "route 10.80.0.0/24 blackhole;",
            "bgp_origin = ORIGIN_IGP;",
            "",
        ),
    );
    let _frr = Frr::start(
        &fns,
        &frr_dir,
        &format!(
            r#"frr defaults traditional
router bgp 65030
 bgp router-id 10.10.5.2
 no bgp ebgp-requires-policy
 no bgp network import-check
 neighbor 10.10.5.1 remote-as {OUR_AS}
 neighbor 10.10.5.1 timers connect 2
 address-family ipv4 unicast
  network 10.80.0.0/24
 exit-address-family
"#
        ),
    );
    let rt = runtime_in(&us);
    let mut cfg = speaker_cfg([10, 10, 1, 1]);
    cfg.max_paths = 4;
    let (speaker, mut feed) = start_speaker(&rt, cfg);
    for (addr, asn) in [("10.10.1.2", 65010), ("10.10.5.2", 65030)] {
        rt.block_on(speaker.add_peer(PeerConfig::new(addr.parse().unwrap(), asn)))
            .unwrap();
    }
    let hops = |feed: &mut Feed| {
        feed.drain();
        feed.table.get(&net("10.80.0.0/24")).map(|r| {
            r.next_hops
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        })
    };
    let both = vec!["10.10.1.2".to_string(), "10.10.5.2".to_string()];
    wait_for("10.80.0.0/24 via BIRD and FRR", LIMIT, || {
        (hops(&mut feed).as_ref() == Some(&both)).then_some(())
    });
    // Which path is "best" is only the tie breaker: BIRD's lower router ID.
    assert_eq!(
        feed.table[&net("10.80.0.0/24")].next_hop,
        "10.10.1.2".parse::<IpAddr>().unwrap()
    );
    // BIRD withdraws: FRR's path alone.
    bird.birdc(&["disable", "announce4"]);
    wait_for("10.80.0.0/24 via FRR only", LIMIT, || {
        (hops(&mut feed) == Some(vec!["10.10.5.2".to_string()])).then_some(())
    });
    rt.block_on(speaker.shutdown());
}
