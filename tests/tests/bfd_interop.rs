//! plexusd's BFD runtime (`plexusd::bfd`) against real implementations:
//! BIRD 2's `protocol bfd` and FRR's bfdd, each in its own namespace joined
//! to a node namespace by a veth pair; our runtime runs in the node
//! namespace (started from a thread that entered it). One IPv4 and one
//! IPv6 session with each router. Each comes Up; the router's veth set
//! down takes both Down by detection timeout (the time is measured and
//! printed); set up again, they recover; removed, the router hears
//! AdminDown. At 100 ms × 3 and at each side's defaults.
//!
//! Plus two of our runtimes against each other, and what goes on the wire
//! (TTL 255, source port 49152–65535; TTL 254 refused, RFC 5881 §4–§5).
//!
//! FRR's bfdd runs standalone here: `/usr/lib/frr/bfdd -f CONF -i PIDFILE
//! --vty_socket DIR -u frr -g frr`, DIR owned by frr (as root, bfdd refuses
//! to start: root is not in the frrvty group); no zebra is needed for
//! single-hop peers given with `local-address`; `vtysh --vty_socket DIR -d
//! bfdd -c 'show bfd peers json'` reads it.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use plexus_bfd::{Diag, State};
use plexus_tests::routers::{tool_available, veth_link, wait_for, Bird, Daemon};
use plexus_tests::{skip, Netns};
use plexusd::bfd::{self, Bfd, BfdEvent, BfdEvents, Intervals, SessionStatus, Updown};
use tokio::runtime::Runtime;

const LIMIT: Duration = Duration::from_secs(60);
const NODE4: &str = "10.99.0.1";
const ROUTER4: &str = "10.99.0.2";
const NODE6: &str = "fd00:99::1";
const ROUTER6: &str = "fd00:99::2";
const BFDD: &str = "/usr/lib/frr/bfdd";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn can_run(tools: &[&str]) -> bool {
    if !plexus_tests::is_root() {
        skip("this test needs root to create network namespaces");
        return false;
    }
    for t in tools {
        let there = if t.starts_with('/') {
            Path::new(t).exists()
        } else {
            tool_available(t)
        };
        if !there {
            skip(&format!(
                "{t} is not installed (scripts/install-deps.sh installs it)"
            ));
            return false;
        }
    }
    true
}

/// A node namespace running our BFD runtime, and a router namespace on the
/// other end of its veth (`r0` ⇄ `eth0`).
struct Topo {
    node: Netns,
    router: Netns,
    rt: Runtime,
    bfd: Bfd,
    events: BfdEvents,
    seen: Vec<BfdEvent>,
}

impl Topo {
    fn new() -> Topo {
        let node = Netns::new("bfdnode");
        let router = Netns::new("bfdrtr");
        veth_link(
            &node,
            "r0",
            &[&format!("{NODE4}/24"), &format!("{NODE6}/64")],
            &router,
            "eth0",
            &[&format!("{ROUTER4}/24"), &format!("{ROUTER6}/64")],
        );
        // Keep the router's IPv6 address across its link going down.
        let out = router.sh("sysctl -qw net.ipv6.conf.eth0.keep_addr_on_down=1");
        assert!(out.status.success(), "sysctl: {out:?}");
        // The runtime's thread inherits the namespace of the thread that
        // starts it.
        let (bfd, events) = node.run(bfd::start).expect("BFD runtime starts");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Topo {
            node,
            router,
            rt,
            bfd,
            events,
            seen: Vec::new(),
        }
    }

    fn add(&self, peer: &str, local: &str, iv: Intervals, mult: u8) {
        self.rt
            .block_on(self.bfd.add_session(ip(peer), ip(local), iv, mult))
            .unwrap_or_else(|e| panic!("add_session {peer}: {e}"));
    }

    fn status(&self, peer: &str) -> SessionStatus {
        self.rt
            .block_on(self.bfd.status())
            .expect("status")
            .into_iter()
            .find(|s| s.peer == ip(peer))
            .unwrap_or_else(|| panic!("no session with {peer}"))
    }

    /// Wait for `state` events from every one of `peers` (after those
    /// already seen), returning them in order.
    fn wait_events(&mut self, peers: &[&str], state: Updown) -> Vec<BfdEvent> {
        let from = self.seen.len();
        let end = Instant::now() + LIMIT;
        loop {
            let got: Vec<BfdEvent> = peers
                .iter()
                .filter_map(|p| {
                    self.seen[from..]
                        .iter()
                        .find(|e| e.peer == ip(p) && e.state == state)
                        .copied()
                })
                .collect();
            if got.len() == peers.len() {
                return got;
            }
            let left = end.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no {state:?} from {peers:?} within {LIMIT:?}: {:?}",
                &self.seen[from..]
            );
            let events = &mut self.events;
            let e = self
                .rt
                .block_on(async { tokio::time::timeout(left, events.recv()).await })
                .unwrap_or_else(|_| panic!("no {state:?} from {peers:?} within {LIMIT:?}"))
                .expect("the event stream ended");
            eprintln!("event: {} {:?} ({})", e.peer, e.state, e.diag);
            self.seen.push(e);
        }
    }

    /// Wait until our session with `peer` is Up with the expected
    /// negotiated values (the poll sequences are over).
    fn wait_negotiated(&self, peer: &str, tx: Duration, detect: Duration) -> SessionStatus {
        wait_for(
            &format!("{peer}: TX {tx:?}, detection {detect:?}"),
            LIMIT,
            || {
                let s = self.status(peer);
                let st = &s.session;
                (st.state == State::Up
                    && !st.polling
                    && st.tx_interval == tx
                    && st.detection_time == Some(detect))
                .then_some(s)
            },
        )
    }
}

trait Router {
    fn name(&self) -> &'static str;
    /// Whether the router shows its session with `peer` Up.
    fn up(&self, peer: &str) -> bool;
    /// Whether it shows it down with the peer (us) in AdminDown.
    fn heard_admin_down(&self, peer: &str) -> bool;
}

struct BirdRouter(Bird);

impl BirdRouter {
    fn line(&self, peer: &str) -> Option<String> {
        self.0
            .birdc(&["show", "bfd", "sessions"])
            .lines()
            .find(|l| l.split_whitespace().next() == Some(peer))
            .map(str::to_string)
    }
}

impl Router for BirdRouter {
    fn name(&self) -> &'static str {
        "BIRD"
    }
    fn up(&self, peer: &str) -> bool {
        self.line(peer)
            .is_some_and(|l| l.split_whitespace().nth(2) == Some("Up"))
    }
    fn heard_admin_down(&self, peer: &str) -> bool {
        // BIRD's table has no diagnostics: a Down right after our
        // AdminDown (rather than after a 1.5 s detection time) is it.
        self.line(peer)
            .is_some_and(|l| l.split_whitespace().nth(2) == Some("Down"))
    }
}

/// FRR's bfdd, standalone, killed by pid on drop.
struct Frr {
    _daemon: Daemon,
    ns: String,
    dir: PathBuf,
}

impl Frr {
    fn start(ns: &Netns, dir: &Path, config: &str) -> Frr {
        let conf = dir.join("bfdd.conf");
        std::fs::write(&conf, config).expect("write bfdd.conf");
        // bfdd drops to the frr user and then writes its pid file and vty
        // socket here.
        plexus_tests::run_ok(Command::new("chown").args(["-R", "frr:frr"]).arg(dir));
        let mut cmd = ns.cmd(BFDD);
        cmd.arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(dir.join("bfdd.pid"))
            .arg("--vty_socket")
            .arg(dir)
            .args(["-u", "frr", "-g", "frr"])
            .stdout(std::process::Stdio::null());
        let mut daemon = Daemon::spawn("bfdd", &mut cmd);
        let vty = dir.join("bfdd.vty");
        wait_for("bfdd's vty socket", Duration::from_secs(20), || {
            daemon.assert_running();
            vty.exists().then_some(())
        });
        Frr {
            _daemon: daemon,
            ns: ns.name.clone(),
            dir: dir.to_path_buf(),
        }
    }

    fn peer(&self, peer: &str) -> Option<serde_json::Value> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "vtysh", "--vty_socket"])
            .arg(&self.dir)
            .args(["-d", "bfdd", "-c", &format!("show bfd peer {peer} json")])
            .output()
            .expect("spawn vtysh");
        serde_json::from_slice(&out.stdout).ok()
    }
}

impl Router for Frr {
    fn name(&self) -> &'static str {
        "FRR"
    }
    fn up(&self, peer: &str) -> bool {
        self.peer(peer).is_some_and(|v| v["status"] == "up")
    }
    fn heard_admin_down(&self, peer: &str) -> bool {
        self.peer(peer).is_some_and(|v| {
            v["status"] == "down" && v["remote-diagnostic"] == "administratively down"
        })
    }
}

/// Up, cut, recover, remove, with `r` on the other end; `tx` and `detect`
/// are the negotiated values we expect for our sessions.
fn exercise(t: &mut Topo, r: &dyn Router, iv: Intervals, mult: u8, tx: Duration, detect: Duration) {
    let peers = [ROUTER4, ROUTER6];
    t.add(ROUTER4, NODE4, iv, mult);
    t.add(ROUTER6, NODE6, iv, mult);
    let started = Instant::now();
    t.wait_events(&peers, Updown::Up);
    eprintln!(
        "{}: both sessions Up after {:?}",
        r.name(),
        started.elapsed()
    );
    for p in peers {
        wait_for(&format!("{} shows {p}'s peer Up", r.name()), LIMIT, || {
            r.up(if p == ROUTER4 { NODE4 } else { NODE6 }).then_some(())
        });
        let s = t.wait_negotiated(p, tx, detect);
        let st = &s.session;
        eprintln!(
            "{} {p}: TX {:?}, detection {:?}; the router asks RX {:?}, sends every {:?}, mult {}",
            r.name(),
            st.tx_interval,
            st.detection_time.unwrap(),
            st.remote_min_rx,
            st.remote_desired_min_tx,
            st.remote_detect_mult
        );
    }

    for round in 0..2 {
        let cut = Instant::now();
        t.router.ip(&["link", "set", "eth0", "down"]);
        let downs = t.wait_events(&peers, Updown::Down);
        for e in &downs {
            assert_eq!(e.diag, Diag::ControlDetectionTimeExpired, "{e:?}");
            assert!(e.is_failure());
        }
        let took = cut.elapsed();
        eprintln!(
            "{} round {round}: link down → both sessions Down in {:?} (detection time {detect:?})",
            r.name(),
            took
        );
        // A generous bound: this only catches a detection that never
        // happened by the timer (the hold-time-like 60 s wait would).
        assert!(took < detect + Duration::from_secs(10), "{took:?}");
        let s = t.status(ROUTER4);
        assert_eq!(
            s.session.last_down_diag,
            Some(Diag::ControlDetectionTimeExpired)
        );

        let back = Instant::now();
        t.router.ip(&["link", "set", "eth0", "up"]);
        t.wait_events(&peers, Updown::Up);
        eprintln!(
            "{} round {round}: link up → both sessions Up in {:?}",
            r.name(),
            back.elapsed()
        );
        for p in peers {
            t.wait_negotiated(p, tx, detect);
        }
    }

    // Removing a session tells the router at once.
    let removed = t.rt.block_on(t.bfd.remove_session(ip(ROUTER4))).unwrap();
    assert!(removed);
    wait_for(&format!("{} hears AdminDown", r.name()), LIMIT, || {
        r.heard_admin_down(NODE4).then_some(())
    });
    assert!(r.up(NODE6), "the other session is not affected");
    let c = t.rt.block_on(t.bfd.counters()).unwrap();
    eprintln!("{}: rx counters {c:?}", r.name());
    assert_eq!(c.discarded("ttl"), 0);
}

fn bird_config(timers: &str) -> String {
    format!(
        "router id {ROUTER4};\n\
         protocol device {{}}\n\
         protocol bfd {{\n\
           {timers}\n\
           neighbor {NODE4} local {ROUTER4};\n\
           neighbor {NODE6} local {ROUTER6};\n\
         }}\n"
    )
}

fn frr_config(timers: &str) -> String {
    let mut c = String::from("bfd\n");
    for (peer, local) in [(NODE4, ROUTER4), (NODE6, ROUTER6)] {
        c += &format!(" peer {peer} local-address {local}\n{timers} !\n");
    }
    c + "!\n"
}

fn fast() -> Intervals {
    Intervals::symmetric(Duration::from_millis(100))
}

#[test]
fn bird_100ms_x3() {
    if !can_run(&["bird", "birdc"]) {
        return;
    }
    let mut t = Topo::new();
    let dir = tempfile::tempdir().unwrap();
    let bird = Bird::start(
        &t.router,
        dir.path(),
        &bird_config(
            "interface \"*\" { min rx interval 100 ms; min tx interval 100 ms; multiplier 3; };",
        ),
    );
    let r = BirdRouter(bird);
    let ms = Duration::from_millis;
    exercise(&mut t, &r, fast(), 3, ms(100), ms(300));
}

#[test]
fn bird_defaults() {
    if !can_run(&["bird", "birdc"]) {
        return;
    }
    let mut t = Topo::new();
    let dir = tempfile::tempdir().unwrap();
    let bird = Bird::start(&t.router, dir.path(), &bird_config(""));
    let r = BirdRouter(bird);
    // BIRD's defaults: RX 10 ms, TX 100 ms, multiplier 5. Ours: 300 ms × 3.
    // We send every max(300, 10) ms; BIRD every max(100, 300); we detect
    // after 5 × max(300, 100) ms.
    let ms = Duration::from_millis;
    exercise(
        &mut t,
        &r,
        Intervals::default(),
        bfd::DEFAULT_MULTIPLIER,
        ms(300),
        ms(1500),
    );
}

#[test]
fn frr_100ms_x3() {
    if !can_run(&[BFDD, "vtysh"]) {
        return;
    }
    let mut t = Topo::new();
    let dir = tempfile::tempdir().unwrap();
    let frr = Frr::start(
        &t.router,
        dir.path(),
        &frr_config("  detect-multiplier 3\n  receive-interval 100\n  transmit-interval 100\n"),
    );
    let ms = Duration::from_millis;
    exercise(&mut t, &frr, fast(), 3, ms(100), ms(300));
}

#[test]
fn frr_defaults() {
    if !can_run(&[BFDD, "vtysh"]) {
        return;
    }
    let mut t = Topo::new();
    let dir = tempfile::tempdir().unwrap();
    let frr = Frr::start(&t.router, dir.path(), &frr_config(""));
    // FRR's defaults are 300 ms × 3, as ours.
    let ms = Duration::from_millis;
    exercise(
        &mut t,
        &frr,
        Intervals::default(),
        bfd::DEFAULT_MULTIPLIER,
        ms(300),
        ms(900),
    );
}

#[test]
fn plexus_to_plexus_and_what_goes_on_the_wire() {
    if !can_run(&[]) {
        return;
    }
    let mut t = Topo::new();
    // A second runtime in the router namespace.
    let (other, mut other_events) = t.router.run(bfd::start).expect("second runtime");
    t.rt.block_on(other.add_session(ip(NODE4), ip(ROUTER4), fast(), 3))
        .unwrap();
    t.add(ROUTER4, NODE4, fast(), 3);
    t.wait_events(&[ROUTER4], Updown::Up);
    t.wait_negotiated(
        ROUTER4,
        Duration::from_millis(100),
        Duration::from_millis(300),
    );
    let cut = Instant::now();
    t.router.ip(&["link", "set", "eth0", "down"]);
    let d = t.wait_events(&[ROUTER4], Updown::Down)[0];
    assert_eq!(d.diag, Diag::ControlDetectionTimeExpired);
    eprintln!("plexus: link down → Down in {:?}", cut.elapsed());
    t.router.ip(&["link", "set", "eth0", "up"]);
    t.wait_events(&[ROUTER4], Updown::Up);
    // The other side hears our AdminDown on removal.
    t.rt.block_on(t.bfd.remove_session(ip(ROUTER4))).unwrap();
    let e = wait_for("the other runtime's Down", LIMIT, || {
        std::iter::from_fn(|| other_events.try_recv().ok())
            .find(|e| e.state == Updown::Down && e.remote_state == State::AdminDown)
    });
    assert_eq!(e.diag, Diag::NeighborSignaledDown);
    assert!(!e.is_failure());
    drop(other);

    // On the wire: listen on the router's 3784 ourselves and look at what
    // the node sends (TTL 255, a source port in the RFC 5881 range).
    t.add(ROUTER4, NODE4, fast(), 3);
    let (len, src, ttl) = t.router.block_on(async {
        // The other runtime's thread closes its socket as it stops.
        let s = wait_for("3784 free in the router namespace", LIMIT, || {
            bfd::socket::open_rx(ip(ROUTER4)).ok()
        });
        let mut buf = [0u8; 64];
        let (n, src, ttl) = tokio::time::timeout(LIMIT, bfd::socket::recv_with_ttl(&s, &mut buf))
            .await
            .expect("a packet within a minute")
            .expect("recv");
        (n, src, ttl)
    });
    assert_eq!(len, 24);
    assert_eq!(src.ip(), ip(NODE4));
    assert!(src.port() >= 49152, "source port {}", src.port());
    assert_eq!(ttl, Some(255));

    // GTSM: a packet sent with TTL 254 is dropped and counted.
    let before = t.rt.block_on(t.bfd.counters()).unwrap();
    t.router.run(|| {
        let s = std::net::UdpSocket::bind((ip(ROUTER4), 0)).unwrap();
        s.set_ttl(254).unwrap();
        let p = plexus_bfd::ControlPacket {
            diag: Diag::None,
            state: State::Down,
            poll: false,
            final_: false,
            cpi: false,
            demand: false,
            detect_mult: 3,
            my_discr: 42,
            your_discr: 0,
            desired_min_tx: 1_000_000,
            required_min_rx: 100_000,
            required_min_echo_rx: 0,
        };
        s.send_to(&p.encode(), (ip(NODE4), 3784)).unwrap();
    });
    let c = wait_for("the TTL-254 packet counted", LIMIT, || {
        let c = t.rt.block_on(t.bfd.counters()).unwrap();
        (c.discarded("ttl") > before.discarded("ttl")).then_some(c)
    });
    assert_eq!(c.accepted, before.accepted, "nothing else arrived");
    assert_eq!(
        t.status(ROUTER4).session.state,
        State::Down,
        "it did not move the session"
    );
    let _ = &t.node;
}
