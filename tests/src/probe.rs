//! Reachability probes between test namespaces without `nc`: a server
//! (TCP accept-and-answer, UDP echo) on threads inside a namespace, and
//! clients that say whether a TCP connection or a UDP exchange got through.
//!
//! The server threads are stopped and joined when the [`Server`] drops.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::Netns;

/// How long a probe waits for an answer. A dropped packet is only seen as
/// silence, so this bounds every "blocked" verdict; an allowed exchange
/// between namespaces answers in well under a millisecond.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(700);

/// How often the server threads look at their stop flag.
const POLL: Duration = Duration::from_millis(20);

/// Listeners on TCP and UDP ports of one address, in one namespace.
pub struct Server {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// Runs `f` on a new thread that first enters `ns` (setns is per thread).
fn spawn_in(ns: &Netns, f: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(ns.path()).expect("open netns");
    std::thread::spawn(move || {
        // SAFETY: affects only this new thread; the fd is valid.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
}

impl Server {
    /// Listens on `addr` for every port in `tcp` and `udp`; returns once
    /// all sockets are bound. A TCP peer gets `b"ok"` and the connection
    /// closes; a UDP datagram is sent back.
    pub fn start(ns: &Netns, addr: IpAddr, tcp: &[u16], udp: &[u16]) -> Server {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        for &port in tcp {
            let (stop, ready) = (stop.clone(), ready_tx.clone());
            threads.push(spawn_in(ns, move || {
                let l = TcpListener::bind(SocketAddr::new(addr, port)).expect("bind tcp");
                l.set_nonblocking(true).unwrap();
                ready.send(()).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    match l.accept() {
                        Ok((mut s, _)) => {
                            let _ = s.set_nonblocking(false);
                            let _ = s.write_all(b"ok");
                        }
                        Err(_) => std::thread::sleep(POLL),
                    }
                }
            }));
        }
        for &port in udp {
            let (stop, ready) = (stop.clone(), ready_tx.clone());
            threads.push(spawn_in(ns, move || {
                let s = UdpSocket::bind(SocketAddr::new(addr, port)).expect("bind udp");
                s.set_read_timeout(Some(POLL)).unwrap();
                ready.send(()).unwrap();
                let mut buf = [0u8; 64];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, from)) = s.recv_from(&mut buf) {
                        let _ = s.send_to(&buf[..n], from);
                    }
                }
            }));
        }
        for _ in 0..tcp.len() + udp.len() {
            ready_rx
                .recv_timeout(Duration::from_secs(10))
                .expect("listener bound");
        }
        Server { stop, threads }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Whether a TCP connection from `ns` (from source address `from`, if
/// given) to `to:port` is answered by the server.
pub fn tcp(ns: &Netns, from: Option<IpAddr>, to: IpAddr, port: u16) -> bool {
    ns.run(|| {
        let dst = SocketAddr::new(to, port);
        let stream = match from {
            Some(src) => connect_from(src, dst),
            None => TcpStream::connect_timeout(&dst, PROBE_TIMEOUT).ok(),
        };
        let Some(mut s) = stream else {
            return false;
        };
        s.set_read_timeout(Some(PROBE_TIMEOUT)).unwrap();
        let mut buf = [0u8; 2];
        s.read_exact(&mut buf).is_ok() && &buf == b"ok"
    })
}

/// A TCP connection bound to `src` first (std cannot bind before
/// connecting, so this goes through libc), with the probe timeout.
fn connect_from(src: IpAddr, dst: SocketAddr) -> Option<TcpStream> {
    use std::os::fd::FromRawFd;
    let domain = if src.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket calls on a descriptor this function owns; the
    // sockaddr buffers outlive the calls that read them.
    unsafe {
        let fd = libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return None;
        }
        let stream = TcpStream::from_raw_fd(fd);
        let (sa, len) = sockaddr(SocketAddr::new(src, 0));
        if libc::bind(fd, &sa as *const _ as *const libc::sockaddr, len) != 0 {
            return None;
        }
        stream.set_nonblocking(true).ok()?;
        let (da, dlen) = sockaddr(dst);
        let rc = libc::connect(fd, &da as *const _ as *const libc::sockaddr, dlen);
        if rc != 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINPROGRESS) {
            return None;
        }
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLOUT,
            revents: 0,
        };
        if libc::poll(&mut pfd, 1, PROBE_TIMEOUT.as_millis() as i32) != 1 {
            return None;
        }
        if stream.take_error().ok().flatten().is_some() {
            return None;
        }
        stream.set_nonblocking(false).ok()?;
        Some(stream)
    }
}

fn sockaddr(a: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is valid; the casts below write
    // a sockaddr_in / sockaddr_in6, both smaller than the storage.
    unsafe {
        let mut ss: libc::sockaddr_storage = std::mem::zeroed();
        match a {
            SocketAddr::V4(v4) => {
                let sin = &mut ss as *mut _ as *mut libc::sockaddr_in;
                (*sin).sin_family = libc::AF_INET as libc::sa_family_t;
                (*sin).sin_port = v4.port().to_be();
                (*sin).sin_addr.s_addr = u32::from(*v4.ip()).to_be();
                (
                    ss,
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
            SocketAddr::V6(v6) => {
                let sin6 = &mut ss as *mut _ as *mut libc::sockaddr_in6;
                (*sin6).sin6_family = libc::AF_INET6 as libc::sa_family_t;
                (*sin6).sin6_port = v6.port().to_be();
                (*sin6).sin6_addr.s6_addr = v6.ip().octets();
                (
                    ss,
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
    }
}

/// Whether a UDP datagram from `ns` (from `from`, if given) to `to:port`
/// comes back from the echo server.
pub fn udp(ns: &Netns, from: Option<IpAddr>, to: IpAddr, port: u16) -> bool {
    ns.run(|| {
        let any: IpAddr = if to.is_ipv4() {
            [0, 0, 0, 0].into()
        } else {
            std::net::Ipv6Addr::UNSPECIFIED.into()
        };
        let s = UdpSocket::bind(SocketAddr::new(from.unwrap_or(any), 0)).expect("bind udp");
        s.set_read_timeout(Some(PROBE_TIMEOUT)).unwrap();
        if s.send_to(b"probe", SocketAddr::new(to, port)).is_err() {
            return false;
        }
        let mut buf = [0u8; 16];
        matches!(s.recv_from(&mut buf), Ok((5, _))) && &buf[..5] == b"probe"
    })
}
