//! A TCP proxy inside a test namespace that can cut or silence the
//! connections passing through it: a watch stream that breaks, or goes
//! quiet while its connection stays open, without the server behind it
//! knowing (what a dead peer, a stuck load balancer or a wedged watcher
//! looks like to a client). Threads only; everything stops on drop.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::Netns;

/// How much of what a client sent is kept to match a pattern against.
const SEEN: usize = 64 << 10;

struct Conn {
    client: TcpStream,
    upstream: TcpStream,
    stalled: AtomicBool,
    /// The proxy drops the server's answers (requests still pass).
    deaf: Arc<AtomicBool>,
    /// What the client sent so far (capped): which requests it carried.
    seen: Mutex<Vec<u8>>,
}

impl Conn {
    fn carried(&self, pattern: &str) -> bool {
        let seen = self.seen.lock().unwrap();
        pattern.is_empty() || seen.windows(pattern.len()).any(|w| w == pattern.as_bytes())
    }

    fn close(&self) {
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.upstream.shutdown(Shutdown::Both);
    }
}

#[derive(Debug)]
pub struct FaultProxy {
    pub addr: SocketAddr,
    conns: Arc<Mutex<Vec<Arc<Conn>>>>,
    stop: Arc<AtomicBool>,
    deaf: Arc<AtomicBool>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Conn")
    }
}

/// Copy `from` to `to` until either side closes; nothing passes once the
/// connection is stalled (what arrives is read and dropped).
fn pump(conn: Arc<Conn>, from: &TcpStream, to: &TcpStream, record: bool) {
    let (mut from, mut to) = (from, to);
    let mut buf = [0u8; 16 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if record {
            let mut seen = conn.seen.lock().unwrap();
            if seen.len() < SEEN {
                seen.extend_from_slice(&buf[..n]);
            }
        }
        if conn.stalled.load(Ordering::SeqCst) || (!record && conn.deaf.load(Ordering::SeqCst)) {
            continue;
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    conn.close();
}

impl FaultProxy {
    /// Listen on `ip` (port chosen) in `ns`, forwarding to `upstream`
    /// (reached from `ns` too).
    pub fn start(ns: &Netns, ip: &str, upstream: SocketAddr) -> FaultProxy {
        let conns: Arc<Mutex<Vec<Arc<Conn>>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let deaf = Arc::new(AtomicBool::new(false));
        let (c, s, d) = (conns.clone(), stop.clone(), deaf.clone());
        // Threads started from a thread inside the namespace stay in it,
        // so the upstream connections are made there too.
        let addr = ns.run(move || {
            let listener = TcpListener::bind((ip, 0)).expect("bind the proxy");
            let addr = listener.local_addr().unwrap();
            // Polled, so that a drop ends the loop without connecting to it.
            listener.set_nonblocking(true).unwrap();
            std::thread::spawn(move || {
                while !s.load(Ordering::SeqCst) {
                    let client = match listener.accept() {
                        Ok((c, _)) => c,
                        Err(_) => {
                            std::thread::sleep(std::time::Duration::from_millis(20));
                            continue;
                        }
                    };
                    if client.set_nonblocking(false).is_err() {
                        continue;
                    }
                    let Ok(upstream) = TcpStream::connect(upstream) else {
                        continue;
                    };
                    let conn = Arc::new(Conn {
                        client: client.try_clone().unwrap(),
                        upstream: upstream.try_clone().unwrap(),
                        stalled: AtomicBool::new(false),
                        deaf: d.clone(),
                        seen: Mutex::new(Vec::new()),
                    });
                    c.lock().unwrap().push(conn.clone());
                    let c2 = conn.clone();
                    let (cl, up) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                    std::thread::spawn(move || pump(c2, &cl, &up, true));
                    std::thread::spawn(move || pump(conn, &upstream, &client, false));
                }
            });
            addr
        });
        FaultProxy {
            addr,
            conns,
            stop,
            deaf,
        }
    }

    /// While on, every connection (open or new) passes what clients send
    /// and drops what the server answers: requests are carried out, their
    /// answers lost (a store that stalls after applying a write).
    pub fn lose_answers(&self, on: bool) {
        self.deaf.store(on, Ordering::SeqCst);
    }

    fn matching(&self, pattern: &str) -> Vec<Arc<Conn>> {
        self.conns
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.carried(pattern))
            .cloned()
            .collect()
    }

    /// Close the open connections that carried `pattern` (`""`: all);
    /// how many.
    pub fn cut(&self, pattern: &str) -> usize {
        let hit = self.matching(pattern);
        for c in &hit {
            c.close();
        }
        self.conns
            .lock()
            .unwrap()
            .retain(|c| !hit.iter().any(|h| Arc::ptr_eq(c, h)));
        hit.len()
    }

    /// Silence the open connections that carried `pattern` (`""`: all):
    /// they stay open and pass nothing more, either way; new connections
    /// are not affected. How many.
    pub fn stall(&self, pattern: &str) -> usize {
        let hit = self.matching(pattern);
        for c in &hit {
            c.stalled.store(true, Ordering::SeqCst);
        }
        hit.len()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            c.close();
        }
    }
}
