//! Real BGP routers for interoperability tests: BIRD 2, GoBGP and FRR's
//! bgpd, each run in the foreground inside a namespace the test created
//! (`ip netns exec` execs, so the child's pid is the daemon's), and killed
//! by that pid on drop. Plus `veth_link` to wire two namespaces together.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Netns;

/// A daemon started by a test; killed by pid (SIGKILL) and reaped on drop.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    what: String,
}

impl Daemon {
    pub fn spawn(what: &str, cmd: &mut Command) -> Daemon {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {what}: {e}"));
        Daemon {
            child,
            what: what.to_string(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Panics if the daemon has exited (a config error, usually).
    pub fn assert_running(&mut self) {
        if let Ok(Some(st)) = self.child.try_wait() {
            panic!("{} exited early: {st}", self.what);
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Connect `a` and `b` with a veth pair: `a_ifname` in `a` with the
/// addresses `a_addrs`, `b_ifname` in `b` with `b_addrs` (CIDR strings;
/// IPv6 ones are added without DAD so they are usable at once).
pub fn veth_link(
    a: &Netns,
    a_ifname: &str,
    a_addrs: &[&str],
    b: &Netns,
    b_ifname: &str,
    b_addrs: &[&str],
) {
    a.ip(&[
        "link", "add", a_ifname, "type", "veth", "peer", "name", b_ifname, "netns", &b.name,
    ]);
    for (ns, ifname, addrs) in [(a, a_ifname, a_addrs), (b, b_ifname, b_addrs)] {
        for addr in addrs {
            if addr.contains(':') {
                ns.ip(&["addr", "add", addr, "dev", ifname, "nodad"]);
            } else {
                ns.ip(&["addr", "add", addr, "dev", ifname]);
            }
        }
        ns.ip(&["link", "set", ifname, "up"]);
    }
}

/// Poll `f` until it returns Some, or panic after `limit` saying what was
/// awaited (a failure deadline, not a measurement).
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn tool_available(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// BIRD 2 with a config the test wrote.
#[derive(Debug)]
pub struct Bird {
    pub daemon: Daemon,
    ns: String,
    socket: PathBuf,
}

impl Bird {
    /// Start `bird -f` in `ns` with `config`; files go in `dir`.
    pub fn start(ns: &Netns, dir: &Path, config: &str) -> Bird {
        let conf = dir.join("bird.conf");
        std::fs::write(&conf, config).expect("write bird.conf");
        let socket = dir.join("bird.ctl");
        let pid = dir.join("bird.pid");
        let mut cmd = ns.cmd("bird");
        cmd.arg("-f")
            .arg("-c")
            .arg(&conf)
            .arg("-s")
            .arg(&socket)
            .arg("-P")
            .arg(&pid);
        let mut bird = Bird {
            daemon: Daemon::spawn("bird", &mut cmd),
            ns: ns.name.clone(),
            socket,
        };
        wait_for("bird's control socket", Duration::from_secs(20), || {
            bird.daemon.assert_running();
            bird.socket.exists().then_some(())
        });
        bird
    }

    /// `birdc -s SOCKET ARGS` output.
    pub fn birdc(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "birdc", "-s"])
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("spawn birdc");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Whether protocol `name` shows Established.
    pub fn established(&self, name: &str) -> bool {
        self.birdc(&["show", "protocols", name])
            .contains("Established")
    }

    /// `show route for PREFIX all` output if BIRD has a route for exactly
    /// that prefix, else None.
    pub fn route(&self, prefix: &str) -> Option<String> {
        let out = self.birdc(&["show", "route", prefix, "all"]);
        out.contains(prefix).then_some(out)
    }
}

/// GoBGP with a TOML config the test wrote; its gRPC API on 127.0.0.1 of
/// its own namespace.
#[derive(Debug)]
pub struct GoBgp {
    pub daemon: Daemon,
    ns: String,
}

impl GoBgp {
    pub fn start(ns: &Netns, dir: &Path, config: &str) -> GoBgp {
        let conf = dir.join("gobgpd.toml");
        std::fs::write(&conf, config).expect("write gobgpd.toml");
        let mut cmd = ns.cmd("gobgpd");
        cmd.arg("-f")
            .arg(&conf)
            .args(["--api-hosts", "127.0.0.1:50051", "-p", "-l", "warn"])
            .stdout(Stdio::null());
        let mut g = GoBgp {
            daemon: Daemon::spawn("gobgpd", &mut cmd),
            ns: ns.name.clone(),
        };
        wait_for("gobgpd's API", Duration::from_secs(20), || {
            g.daemon.assert_running();
            g.try_cli(&["global"]).map(|_| ())
        });
        g
    }

    fn try_cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns,
                "gobgp",
                "-u",
                "127.0.0.1",
                "-p",
                "50051",
            ])
            .args(args)
            .output()
            .expect("spawn gobgp");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `gobgp ARGS`; panics on failure.
    pub fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args)
            .unwrap_or_else(|| panic!("gobgp {args:?} failed"))
    }

    /// The neighbour's session state as `gobgp neighbor ADDR` shows it
    /// ("BGP state = ESTABLISHED, up for ...").
    pub fn established(&self, neighbor: &str) -> bool {
        self.try_cli(&["neighbor", neighbor])
            .is_some_and(|s| s.contains("BGP state = ESTABLISHED"))
    }
}

/// Where Debian's frr package puts its daemons.
pub const FRR_BGPD: &str = "/usr/lib/frr/bgpd";

/// FRR's bgpd alone (no zebra: `-Z`, so it installs nothing and treats
/// next hops as reachable), with a config the test wrote; queried through
/// vtysh on a vty socket in the test's directory.
#[derive(Debug)]
pub struct Frr {
    pub daemon: Daemon,
    ns: String,
    dir: PathBuf,
}

impl Frr {
    pub fn start(ns: &Netns, dir: &Path, config: &str) -> Frr {
        let conf = dir.join("bgpd.conf");
        std::fs::write(&conf, config).expect("write bgpd.conf");
        let mut cmd = ns.cmd(FRR_BGPD);
        // -S: stay root (no frr user / frrvty group needed); -z: a zebra
        // socket path of our own, never the system's.
        cmd.arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(dir.join("bgpd.pid"))
            .arg("--vty_socket")
            .arg(dir)
            .arg("-z")
            .arg(dir.join("zserv.api"))
            .args(["-Z", "-S", "-A", "127.0.0.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut f = Frr {
            daemon: Daemon::spawn("bgpd", &mut cmd),
            ns: ns.name.clone(),
            dir: dir.to_path_buf(),
        };
        wait_for("bgpd's vty socket", Duration::from_secs(20), || {
            f.daemon.assert_running();
            f.dir.join("bgpd.vty").exists().then_some(())
        });
        f
    }

    /// `vtysh -c COMMAND` output.
    pub fn vtysh(&self, command: &str) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "vtysh", "--vty_socket"])
            .arg(&self.dir)
            .args(["-d", "bgpd", "-c", command])
            .output()
            .expect("spawn vtysh");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Whether the session with `neighbor` is Established.
    pub fn established(&self, neighbor: &str) -> bool {
        self.vtysh(&format!("show bgp neighbors {neighbor} json"))
            .contains("\"bgpState\":\"Established\"")
    }
}

/// Raw BGP messages, for tests that play a broken or hostile peer over a
/// plain TCP socket (the speaker must answer with a NOTIFICATION and keep
/// serving everyone else).
pub mod wire {
    use std::io::Read;
    use std::net::TcpStream;

    /// A header with the all-ones marker.
    pub fn header(len: usize, kind: u8) -> Vec<u8> {
        let mut v = vec![0xff; 16];
        v.extend((len as u16).to_be_bytes());
        v.push(kind);
        v
    }

    /// A whole message of `kind` with `body`.
    pub fn message(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut m = header(19 + body.len(), kind);
        m.extend(body);
        m
    }

    /// An OPEN without optional parameters.
    pub fn open(version: u8, asn: u16, hold: u16, id: [u8; 4]) -> Vec<u8> {
        let mut b = vec![version];
        b.extend(asn.to_be_bytes());
        b.extend(hold.to_be_bytes());
        b.extend(id);
        b.push(0);
        message(1, &b)
    }

    /// Read one message: (type, body); `None` at EOF or on a short read.
    pub fn read_msg(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
        let mut h = [0u8; 19];
        s.read_exact(&mut h).ok()?;
        let len = u16::from_be_bytes([h[16], h[17]]) as usize;
        let mut body = vec![0u8; len.checked_sub(19)?];
        s.read_exact(&mut body).ok()?;
        Some((h[18], body))
    }
}
