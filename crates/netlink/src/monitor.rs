//! Kernel change notifications: a netlink socket subscribed to the
//! multicast groups of links, addresses, neighbours and routes (rtnetlink)
//! and of nf_tables, reporting what kind of object changed. A reconciler
//! relists that kind and repairs what is no longer as it wants it (holo
//! and Calico's Felix watch the kernel the same way). The messages are not
//! decoded beyond their type: the listing that follows is the truth.

use std::io;

use rtnetlink::sys::{protocols, AsyncSocket, AsyncSocketExt, TokioSocket};

use crate::error::{Error, Result};
use crate::netns::Netns;

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Change {
    Link,
    Addr,
    Neigh,
    Route,
    Nft,
    /// Notifications were lost (the socket overflowed): anything may have
    /// changed.
    Lost,
}

// rtnetlink multicast groups (RTNLGRP_*).
const RTNLGRP_LINK: u32 = 1;
const RTNLGRP_NEIGH: u32 = 3;
const RTNLGRP_IPV4_IFADDR: u32 = 5;
const RTNLGRP_IPV4_ROUTE: u32 = 7;
const RTNLGRP_IPV6_IFADDR: u32 = 9;
const RTNLGRP_IPV6_ROUTE: u32 = 11;
/// NFNLGRP_NFTABLES.
const NFNLGRP_NFTABLES: u32 = 7;

/// Which notifications a [`Monitor`] receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Rtnetlink,
    Nftables,
}

/// A subscribed socket in one namespace.
pub struct Monitor {
    sock: TokioSocket,
    source: Source,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Receive buffer asked for: room for a burst (a batch of 10,000 routes
/// announces each one); past it the kernel drops and says so.
const RCVBUF: usize = 8 << 20;

impl Monitor {
    /// Opens the socket inside `ns` (on a thread that entered it, with the
    /// current tokio runtime's reactor). Must be called within a runtime.
    pub async fn open(ns: &Netns, source: Source) -> Result<Monitor> {
        let ctx = format!(
            "subscribe to {source:?} notifications in netns {}",
            ns.path().display()
        );
        let rt = tokio::runtime::Handle::try_current()
            .map_err(|e| Error::protocol(&ctx, format!("no tokio runtime: {e}")))?;
        let sock = ns
            .run_async(move || -> io::Result<TokioSocket> {
                let _guard = rt.enter();
                let proto = match source {
                    Source::Rtnetlink => protocols::NETLINK_ROUTE,
                    Source::Nftables => protocols::NETLINK_NETFILTER,
                };
                let mut sock = TokioSocket::new(proto)?;
                let s = sock.socket_mut();
                s.bind_auto()?;
                let force = nix::sys::socket::sockopt::RcvBufForce;
                if nix::sys::socket::setsockopt(&*s, force, &RCVBUF).is_err() {
                    let _ = s.set_rx_buf_sz(RCVBUF);
                }
                let groups: &[u32] = match source {
                    Source::Rtnetlink => &[
                        RTNLGRP_LINK,
                        RTNLGRP_NEIGH,
                        RTNLGRP_IPV4_IFADDR,
                        RTNLGRP_IPV4_ROUTE,
                        RTNLGRP_IPV6_IFADDR,
                        RTNLGRP_IPV6_ROUTE,
                    ],
                    Source::Nftables => &[NFNLGRP_NFTABLES],
                };
                for g in groups {
                    s.add_membership(*g)?;
                }
                Ok(sock)
            })
            .await?
            .map_err(|e| Error::io(&ctx, e))?;
        Ok(Monitor {
            sock,
            source,
            buf: Vec::with_capacity(64 * 1024),
        })
    }

    /// The next datagram's changes (at least one).
    pub async fn next(&mut self) -> Result<Vec<Change>> {
        loop {
            self.buf.clear();
            match self.sock.recv(&mut self.buf).await {
                Ok(()) => {}
                // ENOBUFS: the kernel dropped notifications.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => return Ok(vec![Change::Lost]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io("read kernel notifications", e)),
            }
            let changes = classify(self.source, &self.buf);
            if !changes.is_empty() {
                return Ok(changes);
            }
        }
    }
}

/// The kinds of the messages in one datagram (deduplicated, in order).
pub fn classify(source: Source, mut buf: &[u8]) -> Vec<Change> {
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let ty = u16::from_ne_bytes([buf[4], buf[5]]);
        let change = match source {
            // RTM_NEWLINK..RTM_DELNEIGH, by their numbers (linux/rtnetlink.h).
            Source::Rtnetlink => match ty {
                16 | 17 => Some(Change::Link),
                20 | 21 => Some(Change::Addr),
                24 | 25 => Some(Change::Route),
                28 | 29 => Some(Change::Neigh),
                _ => None,
            },
            // NFNL_SUBSYS_NFTABLES (10) in the high byte.
            Source::Nftables => (ty >> 8 == 10).then_some(Change::Nft),
        };
        if let Some(c) = change {
            if !out.contains(&c) {
                out.push(c);
            }
        }
        let step = (len + 3) & !3;
        if len < 16 || step > buf.len() {
            break;
        }
        buf = &buf[step..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(ty: u16, payload: usize) -> Vec<u8> {
        let len = 16 + payload;
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend(std::iter::repeat_n(0u8, payload));
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    #[test]
    fn messages_are_classified_by_type() {
        let mut d = msg(24, 5);
        d.extend(msg(28, 8));
        d.extend(msg(25, 0));
        d.extend(msg(99, 0));
        assert_eq!(
            classify(Source::Rtnetlink, &d),
            [Change::Route, Change::Neigh]
        );
        assert_eq!(
            classify(Source::Nftables, &msg(10 << 8 | 3, 4)),
            [Change::Nft]
        );
        // A truncated datagram is read as far as it goes.
        assert!(classify(Source::Rtnetlink, &d[..10]).is_empty());
    }
}
