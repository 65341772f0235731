//! Many rtnetlink changes in few system calls: [`RtBatch`] and [`BatchSocket`].
//!
//! Why: an overlay agent that learns about 1000 remote nodes at once has
//! 3000 kernel entries to write (neighbour, FDB entry, route each). One
//! request and one round trip per entry (what [`crate::Netlink`] does, and
//! what `ip -batch` does) costs a syscall pair and a task wake-up each.
//! Here the messages are packed into datagrams of up to [`DATAGRAM_MAX`]
//! bytes; the kernel processes every message of a datagram in order, even
//! after one fails, and answers only failures plus the one acknowledgement
//! requested on the last message. So 3000 entries take about a dozen
//! `sendmsg`/`recvmsg` pairs.
//!
//! The socket is bound to the network namespace it is opened in, like every
//! socket of this crate.

use std::fmt;
use std::net::IpAddr;

use rtnetlink::packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLMSG_ERROR, NLM_F_ACK, NLM_F_CREATE,
    NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::sys::{protocols::NETLINK_ROUTE, AsyncSocket, AsyncSocketExt, TokioSocket};

use crate::error::{Error, Result};
use crate::fdb::{fdb_msg, Fdb};
use crate::mac::MacAddr;
use crate::neigh::neigh_msg;
use crate::netns::Netns;
use crate::nft::wire;
use crate::route::{route_msg, Route};

/// Largest datagram we send. The kernel takes up to the socket's send
/// buffer (≥ 208 KiB by default); 64 KiB keeps each `sendmsg` copy small.
pub const DATAGRAM_MAX: usize = 64 * 1024;
/// Receive buffer asked for (SO_RCVBUFFORCE as root, else SO_RCVBUF): room
/// for the error answers of a whole datagram whose every message fails.
const RCVBUF: usize = 4 * 1024 * 1024;

/// One queued change.
#[derive(Debug, Clone)]
struct Op {
    msg: RouteNetlinkMessage,
    flags: u16,
    what: What,
}

/// What an op does, kept small; rendered only for errors.
#[derive(Debug, Clone)]
enum What {
    NeighReplace(u32, IpAddr, MacAddr),
    NeighDel(u32, IpAddr),
    FdbReplace(Fdb),
    FdbDel(Fdb),
    RouteReplace(IpAddr, u8),
    RouteAdd(IpAddr, u8),
    RouteDel(IpAddr, u8),
}

impl fmt::Display for What {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            What::NeighReplace(i, ip, mac) => {
                write!(f, "replace neighbour {ip} lladdr {mac} on link #{i}")
            }
            What::NeighDel(i, ip) => write!(f, "delete neighbour {ip} on link #{i}"),
            What::FdbReplace(x) => write!(
                f,
                "replace fdb {} on link #{} dst {:?}",
                x.mac, x.index, x.dst
            ),
            What::FdbDel(x) => write!(
                f,
                "delete fdb {} on link #{} dst {:?}",
                x.mac, x.index, x.dst
            ),
            What::RouteReplace(d, l) => write!(f, "replace route {d}/{l}"),
            What::RouteAdd(d, l) => write!(f, "add route {d}/{l}"),
            What::RouteDel(d, l) => write!(f, "delete route {d}/{l}"),
        }
    }
}

/// An ordered list of neighbour, FDB and route changes for
/// [`BatchSocket::apply`]. Additions use replace semantics, so applying a
/// batch twice is harmless.
#[derive(Debug, Clone, Default)]
pub struct RtBatch {
    ops: Vec<Op>,
}

impl RtBatch {
    pub fn new() -> RtBatch {
        RtBatch::default()
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    fn push(&mut self, msg: RouteNetlinkMessage, flags: u16, what: What) -> &mut Self {
        self.ops.push(Op { msg, flags, what });
        self
    }

    /// `ip neigh replace IP lladdr MAC dev #INDEX nud permanent`.
    pub fn neigh_replace(&mut self, index: u32, ip: IpAddr, mac: MacAddr) -> &mut Self {
        self.push(
            RouteNetlinkMessage::NewNeighbour(neigh_msg(index, ip, Some(mac))),
            NLM_F_CREATE | NLM_F_REPLACE,
            What::NeighReplace(index, ip, mac),
        )
    }

    /// `ip neigh del IP dev #INDEX`.
    pub fn neigh_del(&mut self, index: u32, ip: IpAddr) -> &mut Self {
        self.push(
            RouteNetlinkMessage::DelNeighbour(neigh_msg(index, ip, None)),
            0,
            What::NeighDel(index, ip),
        )
    }

    /// `bridge fdb replace MAC dev #INDEX dst IP self permanent`.
    pub fn fdb_replace(&mut self, f: &Fdb) -> &mut Self {
        self.push(
            RouteNetlinkMessage::NewNeighbour(fdb_msg(f)),
            NLM_F_CREATE | NLM_F_REPLACE,
            What::FdbReplace(f.clone()),
        )
    }

    /// `bridge fdb del MAC dev #INDEX [dst IP] self`.
    pub fn fdb_del(&mut self, f: &Fdb) -> &mut Self {
        self.push(
            RouteNetlinkMessage::DelNeighbour(fdb_msg(f)),
            0,
            What::FdbDel(f.clone()),
        )
    }

    /// `ip route replace ...`.
    pub fn route_replace(&mut self, r: &Route) -> &mut Self {
        self.push(
            RouteNetlinkMessage::NewRoute(route_msg(r, false)),
            NLM_F_CREATE | NLM_F_REPLACE,
            What::RouteReplace(r.dst.addr(), r.dst.prefix_len()),
        )
    }

    /// `ip route add ...`: created only if no route with the same
    /// destination, TOS and metric exists (whoever's it is); EEXIST
    /// otherwise.
    pub fn route_add(&mut self, r: &Route) -> &mut Self {
        self.push(
            RouteNetlinkMessage::NewRoute(route_msg(r, false)),
            NLM_F_CREATE | NLM_F_EXCL,
            What::RouteAdd(r.dst.addr(), r.dst.prefix_len()),
        )
    }

    /// `ip route del ...` (unset fields are wildcards).
    pub fn route_del(&mut self, r: &Route) -> &mut Self {
        self.push(
            RouteNetlinkMessage::DelRoute(route_msg(r, true)),
            0,
            What::RouteDel(r.dst.addr(), r.dst.prefix_len()),
        )
    }
}

/// What the kernel refused in a batch: (position in the batch, error).
/// Every other change was applied.
#[derive(Debug, Default)]
pub struct BatchReport {
    pub failed: Vec<(usize, Error)>,
}

impl BatchReport {
    pub fn is_ok(&self) -> bool {
        self.failed.is_empty()
    }
}

/// A NETLINK_ROUTE socket for [`RtBatch`]es, bound to one namespace.
pub struct BatchSocket {
    sock: TokioSocket,
    seq: u32,
    netns: String,
    buf: Vec<u8>,
}

impl fmt::Debug for BatchSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchSocket")
            .field("netns", &self.netns)
            .finish_non_exhaustive()
    }
}

impl BatchSocket {
    /// Opens the socket inside `ns` (on a thread that entered it, with the
    /// current tokio runtime's reactor). Must be called within a runtime.
    pub async fn open(ns: &Netns) -> Result<BatchSocket> {
        let netns = ns.path().display().to_string();
        let ctx = format!("open netlink batch socket in netns {netns}");
        let rt = tokio::runtime::Handle::try_current()
            .map_err(|e| Error::protocol(&ctx, format!("no tokio runtime: {e}")))?;
        let sock = ns
            .run_async(move || -> std::io::Result<TokioSocket> {
                let _guard = rt.enter();
                let mut sock = TokioSocket::new(NETLINK_ROUTE)?;
                let s = sock.socket_mut();
                s.bind_auto()?;
                let _ = s.set_ext_ack(true);
                let _ = s.set_cap_ack(true);
                let force = nix::sys::socket::sockopt::RcvBufForce;
                if nix::sys::socket::setsockopt(&*s, force, &RCVBUF).is_err() {
                    let _ = s.set_rx_buf_sz(RCVBUF);
                }
                Ok(sock)
            })
            .await?
            .map_err(|e| Error::io(&ctx, e))?;
        Ok(BatchSocket {
            sock,
            seq: std::process::id().wrapping_shl(16),
            netns,
            buf: Vec::with_capacity(DATAGRAM_MAX),
        })
    }

    /// Applies `batch` in order. Failed changes are reported one by one;
    /// the error is `Err` only when the socket itself failed (then some
    /// changes may or may not have been applied: list and compare).
    pub async fn apply(&mut self, batch: &RtBatch) -> Result<BatchReport> {
        let mut report = BatchReport::default();
        let mut start = 0;
        while start < batch.ops.len() {
            let first_seq = self.seq;
            let end = encode(batch, start, first_seq, &mut self.buf);
            self.seq = first_seq.wrapping_add((end - start) as u32);
            let ctx = || format!("netlink batch in netns {}", self.netns);
            self.sock
                .send(&self.buf)
                .await
                .map_err(|e| Error::io(ctx(), e))?;
            let last_seq = first_seq.wrapping_add((end - start - 1) as u32);
            self.collect(batch, start, first_seq, last_seq, &mut report)
                .await?;
            start = end;
        }
        Ok(report)
    }

    async fn collect(
        &mut self,
        batch: &RtBatch,
        start: usize,
        first_seq: u32,
        last_seq: u32,
        report: &mut BatchReport,
    ) -> Result<()> {
        let mut rbuf = Vec::with_capacity(DATAGRAM_MAX);
        loop {
            rbuf.clear();
            self.sock.recv(&mut rbuf).await.map_err(|e| {
                Error::io(format!("netlink batch answers in netns {}", self.netns), e)
            })?;
            let mut done = false;
            for m in wire::messages(&rbuf) {
                if m.ty != NLMSG_ERROR {
                    continue;
                }
                let off = m.seq.wrapping_sub(first_seq) as usize;
                if off > last_seq.wrapping_sub(first_seq) as usize {
                    continue; // an answer to an earlier batch
                }
                let (errno, message) = crate::nft::parse_error(&m);
                if errno != 0 {
                    let op = &batch.ops[start + off];
                    report.failed.push((
                        start + off,
                        Error::Kernel {
                            context: format!("{} in netns {}", op.what, self.netns),
                            errno,
                            message,
                        },
                    ));
                }
                if m.seq == last_seq {
                    done = true;
                }
            }
            if done {
                return Ok(());
            }
        }
    }
}

/// Encodes ops from `start` into `buf` (cleared first), numbered from
/// `first_seq`, until the datagram is full; returns the end. Only the last
/// message asks for an ACK: its answer means every earlier one of the
/// datagram has been processed (the kernel answers failures regardless).
fn encode(batch: &RtBatch, start: usize, first_seq: u32, buf: &mut Vec<u8>) -> usize {
    buf.clear();
    let mut end = start;
    let mut last_at = None;
    while end < batch.ops.len() {
        let op = &batch.ops[end];
        let mut m = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::InnerMessage(op.msg.clone()),
        );
        m.header.flags = NLM_F_REQUEST | op.flags;
        m.header.sequence_number = first_seq.wrapping_add((end - start) as u32);
        m.finalize();
        let len = m.buffer_len();
        if end > start && buf.len() + len > DATAGRAM_MAX {
            break;
        }
        let at = buf.len();
        buf.resize(at + len, 0);
        m.serialize(&mut buf[at..]);
        last_at = Some(at);
        end += 1;
    }
    if let Some(at) = last_at {
        let flags_at = at + 6;
        let flags = u16::from_ne_bytes([buf[flags_at], buf[flags_at + 1]]) | NLM_F_ACK;
        buf[flags_at..flags_at + 2].copy_from_slice(&flags.to_ne_bytes());
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_in_order() {
        let mut b = RtBatch::new();
        let mac = MacAddr([2, 0, 0, 0, 0, 1]);
        b.neigh_replace(3, "10.5.1.0".parse().unwrap(), mac)
            .fdb_replace(&Fdb::new(3, mac).dst("192.0.2.1".parse().unwrap()))
            .route_replace(
                &Route::new("10.5.1.0/24".parse().unwrap())
                    .via("10.5.1.0".parse().unwrap())
                    .dev(3)
                    .onlink(),
            );
        assert_eq!(b.len(), 3);
        assert!(matches!(b.ops[0].msg, RouteNetlinkMessage::NewNeighbour(_)));
        assert!(matches!(b.ops[2].msg, RouteNetlinkMessage::NewRoute(_)));
        assert_eq!(
            b.ops[2].what.to_string(),
            "replace route 10.5.1.0/24".to_string()
        );
    }

    #[test]
    fn datagrams_are_full_and_only_their_last_message_asks_for_an_ack() {
        let mut b = RtBatch::new();
        for i in 0..3000u32 {
            let ip = IpAddr::from([10, (i >> 8) as u8, i as u8, 0]);
            b.neigh_replace(3, ip, MacAddr([2, 0, 0, 0, (i >> 8) as u8, i as u8]));
        }
        let mut buf = Vec::new();
        let (mut start, mut datagrams) = (0, 0);
        while start < b.len() {
            let end = encode(&b, start, 100 + start as u32, &mut buf);
            assert!(end > start && buf.len() <= DATAGRAM_MAX);
            let msgs: Vec<_> = wire::messages(&buf).collect();
            assert_eq!(msgs.len(), end - start);
            for (k, m) in msgs.iter().enumerate() {
                assert_eq!(m.seq, 100 + (start + k) as u32);
                let acked = m.flags & NLM_F_ACK != 0;
                assert_eq!(acked, k == msgs.len() - 1, "message {k}");
                assert_eq!(m.flags & NLM_F_REQUEST, NLM_F_REQUEST);
            }
            start = end;
            datagrams += 1;
        }
        // 3000 neighbours fit in a handful of datagrams, not 3000.
        assert!((2..=10).contains(&datagrams), "{datagrams}");
    }
}
