//! [`Netlink`]: an rtnetlink connection bound to one network namespace.

use std::fmt;
use std::sync::Arc;

use futures::StreamExt;
use rtnetlink::packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_DUMP,
    NLM_F_REQUEST,
};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::sys::AsyncSocket;

use crate::error::{Error, Result};
use crate::netns::Netns;

/// NLMSGERR_ATTR_MSG: the human readable extended-ack message.
pub(crate) const NLMSGERR_ATTR_MSG: u16 = 1;

/// A netlink (NETLINK_ROUTE) handle whose socket is bound to one network
/// namespace. Cheap to clone; the connection task stops when the last clone
/// is dropped. Open one per namespace, up front.
#[derive(Clone)]
pub struct Netlink {
    handle: rtnetlink::Handle,
    netns: Arc<str>,
    /// Kept for work that must happen in the namespace outside this
    /// socket, e.g. [`Netlink::delete_link_detached`].
    ns: Arc<Netns>,
    _conn: Arc<ConnTask>,
}

struct ConnTask(tokio::task::JoinHandle<()>);

impl Drop for ConnTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl fmt::Debug for Netlink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Netlink")
            .field("netns", &self.netns)
            .finish_non_exhaustive()
    }
}

impl Netlink {
    /// Opens a netlink socket inside `ns`. The socket is created on a
    /// dedicated thread that has entered `ns` (and the current tokio runtime,
    /// so the socket registers with its reactor); the connection task is
    /// spawned on the current runtime. Must be called within a tokio runtime.
    pub async fn open(ns: &Netns) -> Result<Netlink> {
        let label: Arc<str> = ns.path().display().to_string().into();
        let ctx = || format!("open netlink socket in netns {label}");
        let rt = tokio::runtime::Handle::try_current()
            .map_err(|e| Error::protocol(ctx(), format!("no tokio runtime: {e}")))?;
        let rt2 = rt.clone();
        let ns_handle = Arc::new(ns.try_clone()?);
        let (conn, handle) = ns
            .run_async(move || -> std::io::Result<_> {
                let _guard = rt2.enter();
                let (mut conn, handle, _unsolicited) = rtnetlink::new_connection()?;
                conn.set_forward_ack(true);
                conn.set_forward_done(true);
                let sock = conn.socket_mut().socket_mut();
                // Best effort: richer kernel error messages, smaller error replies.
                let _ = sock.set_ext_ack(true);
                let _ = sock.set_cap_ack(true);
                Ok((conn, handle))
            })
            .await?
            .map_err(|e| Error::io(ctx(), e))?;
        let task = rt.spawn(conn);
        tracing::debug!(netns = %label, "opened netlink socket");
        Ok(Netlink {
            handle,
            netns: label,
            ns: ns_handle,
            _conn: Arc::new(ConnTask(task)),
        })
    }

    /// Label (path) of the namespace this handle is bound to.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    pub(crate) fn netns_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.ns.as_raw_fd()
    }

    pub(crate) fn ctx(&self, what: impl fmt::Display) -> String {
        format!("{what} in netns {}", self.netns)
    }

    /// Sends a request that expects an acknowledgement (NLM_F_REQUEST |
    /// NLM_F_ACK are added to `flags`).
    pub(crate) async fn ack(
        &self,
        msg: RouteNetlinkMessage,
        flags: u16,
        what: impl fmt::Display,
    ) -> Result<()> {
        self.exchange(msg, NLM_F_REQUEST | NLM_F_ACK | flags, what)
            .await
            .map(|_| ())
    }

    /// Sends a dump request and returns every answer.
    pub(crate) async fn dump(
        &self,
        msg: RouteNetlinkMessage,
        what: impl fmt::Display,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        self.exchange(msg, NLM_F_REQUEST | NLM_F_DUMP, what).await
    }

    /// Sends a single get request (no dump) and returns the answers.
    pub(crate) async fn get(
        &self,
        msg: RouteNetlinkMessage,
        what: impl fmt::Display,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        self.exchange(msg, NLM_F_REQUEST, what).await
    }

    async fn exchange(
        &self,
        msg: RouteNetlinkMessage,
        flags: u16,
        what: impl fmt::Display,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = flags;
        tracing::trace!(netns = %self.netns, op = %what, "netlink request");
        let mut handle = self.handle.clone();
        let mut stream = handle
            .request(req)
            .map_err(|e| Error::protocol(self.ctx(&what), e.to_string()))?;
        let mut out = Vec::new();
        let mut finished = false;
        while let Some(m) = stream.next().await {
            let hdr_flags = m.header.flags;
            match m.payload {
                NetlinkPayload::InnerMessage(inner) => {
                    out.push(inner);
                    if flags & NLM_F_DUMP == 0 && flags & NLM_F_ACK == 0 {
                        finished = true;
                    }
                }
                NetlinkPayload::Error(e) => match e.code {
                    Some(code) => {
                        return Err(Error::Kernel {
                            context: self.ctx(&what),
                            errno: code.get().abs(),
                            message: ext_ack_message(hdr_flags, &e.header),
                        })
                    }
                    None => finished = true,
                },
                NetlinkPayload::Done(_) => finished = true,
                NetlinkPayload::Overrun(_) => {
                    return Err(Error::protocol(self.ctx(&what), "netlink buffer overrun"))
                }
                _ => {}
            }
        }
        if !finished {
            return Err(Error::protocol(
                self.ctx(&what),
                "netlink connection closed before the kernel answered",
            ));
        }
        Ok(out)
    }
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Extracts NLMSGERR_ATTR_MSG from the payload of an NLMSG_ERROR message
/// (after the error code: the original header, the original payload unless
/// capped, then TLVs). Used for rtnetlink and nftables answers alike.
pub(crate) fn ext_ack_message(flags: u16, payload: &[u8]) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 || payload.len() < 16 {
        return None;
    }
    let orig_len = u32::from_ne_bytes(payload[0..4].try_into().ok()?) as usize;
    let off = if flags & NLM_F_CAPPED != 0 {
        16
    } else {
        align4(orig_len)
    };
    let mut tlvs = payload.get(off..)?;
    while tlvs.len() >= 4 {
        let len = u16::from_ne_bytes([tlvs[0], tlvs[1]]) as usize;
        let kind = u16::from_ne_bytes([tlvs[2], tlvs[3]]) & 0x3fff;
        if len < 4 || len > tlvs.len() {
            break;
        }
        if kind == NLMSGERR_ATTR_MSG {
            let v = &tlvs[4..len];
            let v = v.split(|b| *b == 0).next().unwrap_or(v);
            return Some(String::from_utf8_lossy(v).into_owned());
        }
        tlvs = &tlvs[align4(len).min(tlvs.len())..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tlv(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(value);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    fn orig_header(len: u32) -> Vec<u8> {
        let mut v = len.to_ne_bytes().to_vec();
        v.extend_from_slice(&[0u8; 12]);
        v
    }

    #[test]
    fn ext_ack_capped() {
        let mut p = orig_header(64);
        p.extend(tlv(4, &7u32.to_ne_bytes()));
        p.extend(tlv(NLMSGERR_ATTR_MSG, b"Unknown device type\0"));
        assert_eq!(
            ext_ack_message(NLM_F_ACK_TLVS | NLM_F_CAPPED, &p).as_deref(),
            Some("Unknown device type")
        );
        assert_eq!(ext_ack_message(NLM_F_CAPPED, &p), None);
    }

    #[test]
    fn ext_ack_uncapped_skips_request() {
        let mut p = orig_header(22);
        p.extend_from_slice(&[0xaa; 6]); // original payload (22 - 16 bytes)
        p.extend_from_slice(&[0; 2]); // padding to 24
        p.extend(tlv(NLMSGERR_ATTR_MSG, b"boom\0"));
        assert_eq!(ext_ack_message(NLM_F_ACK_TLVS, &p).as_deref(), Some("boom"));
        // truncated / garbage payloads never panic
        assert_eq!(ext_ack_message(NLM_F_ACK_TLVS, &p[..10]), None);
        assert_eq!(ext_ack_message(NLM_F_ACK_TLVS, &orig_header(4000)), None);
    }
}
