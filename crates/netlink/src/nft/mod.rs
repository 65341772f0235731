//! A thin, synchronous nftables client over NETLINK_NETFILTER.
//!
//! Why not the `nft` CLI: each call costs a fork+exec (~2.5 ms) and the
//! `nft` process peaks near 5 MB RSS, more than a whole CNI plugin may use.
//! Why not libnftnl: no C dependency. What `nft -f` does for a script of
//! `add`/`flush`/`delete` commands is small: it sends one batch of
//! nf_tables messages, which the kernel applies atomically. This module
//! builds exactly those messages (same attributes, same order, same
//! libnftnl "udata" comments), so `nft list ruleset` shows the same text.
//!
//! * [`Socket`]: a blocking NETLINK_NETFILTER socket. Like every socket of
//!   this crate it is bound to the network namespace of the thread that
//!   opens it: open it on a thread that is already in the target netns
//!   (e.g. inside [`crate::Netns::run`], or on the main thread of a plugin
//!   acting on the node netns).
//! * [`Batch`]: tables, chains (with hooks and comments), flushes, deletes
//!   and rules built from [`Expr`]s; [`Batch::commit`] sends it in one
//!   `sendmsg` and reports the first failing message.
//! * [`list_chains`]: the chains of one table with their comments.

mod expr;
pub(crate) mod wire;

use std::cell::Cell;
use std::fmt;
use std::time::Duration;

use rtnetlink::sys::{protocols::NETLINK_NETFILTER, Socket as NlSocket};

pub use expr::{CmpOp, Expr, MetaKey, PayloadBase, Verdict};
pub use wire::{decode_comment, encode_comment, COMMENT_MAX};

use crate::error::{Error, Result};
use crate::handle::ext_ack_message;
use rtnetlink::packet_core::{
    NLMSG_DONE, NLMSG_ERROR, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_DUMP, NLM_F_DUMP_INTR,
    NLM_F_REQUEST,
};
use wire::{attrs, get_str, put, put_be32, put_msg, put_str};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;

// enum nf_tables_msg_types
const NFT_MSG_NEWTABLE: u8 = 0;
const NFT_MSG_NEWCHAIN: u8 = 3;
const NFT_MSG_GETCHAIN: u8 = 4;
const NFT_MSG_DELCHAIN: u8 = 5;
const NFT_MSG_NEWRULE: u8 = 6;
const NFT_MSG_DELRULE: u8 = 8;

// NFTA_TABLE_*, NFTA_CHAIN_*, NFTA_HOOK_*, NFTA_RULE_*
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_TABLE_FLAGS: u16 = 2;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_CHAIN_USERDATA: u16 = 12;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;

/// How long to wait for the kernel. Batches are processed synchronously
/// inside `sendmsg`, so their answers are already queued; this only bounds
/// a misbehaving kernel or a stalled dump.
const RECV_TIMEOUT: Duration = Duration::from_secs(10);
/// Larger than the biggest datagram the kernel sends (a dump skb is capped
/// at 32 KiB), so nothing is ever truncated.
const RECV_BUF: usize = 64 * 1024;

/// nftables address families (NFPROTO_*).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Inet = 1,
    Ip = 2,
    Bridge = 7,
    Ip6 = 10,
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Inet => "inet",
            Family::Ip => "ip",
            Family::Bridge => "bridge",
            Family::Ip6 => "ip6",
        })
    }
}

/// Base-chain hooks. The numbers are the same for the inet families
/// (NF_INET_*) and bridge (NF_BR_*).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Prerouting = 0,
    Input = 1,
    Forward = 2,
    Output = 3,
    Postrouting = 4,
}

/// A base chain's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainType {
    Filter,
    Nat,
}

impl ChainType {
    fn name(self) -> &'static str {
        match self {
            ChainType::Filter => "filter",
            ChainType::Nat => "nat",
        }
    }
}

/// What a base chain does with packets no rule decided on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Accept,
    Drop,
}

/// Well-known priorities (`nft`'s names).
pub mod priority {
    /// `srcnat` in the ip/ip6/inet families.
    pub const SRCNAT: i32 = 100;
    /// `dstnat` in the bridge family (the earliest bridge hook users get).
    pub const BRIDGE_DSTNAT: i32 = -300;
}

/// What makes a chain a base chain: `{ type T hook H priority P; policy X; }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseChain {
    pub chain_type: ChainType,
    pub hook: Hook,
    pub priority: i32,
    pub policy: Policy,
}

/// One message of a batch, kept encoded (just the attributes) so a batch
/// can be built on one thread and committed on another.
#[derive(Debug, Clone)]
struct Msg {
    ty: u8,
    flags: u16,
    family: Family,
    body: Vec<u8>,
    /// For errors: `add chain inet plexus_bridge masq-…`.
    what: String,
}

/// A list of nf_tables changes applied atomically by [`Batch::commit`].
///
/// Objects are named, like in an `nft` script; a rule may refer to a chain
/// added earlier in the same batch. Invalid input (a comment `nft` would
/// refuse) is reported by `commit`, so building never fails.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    msgs: Vec<Msg>,
    invalid: Option<(String, &'static str)>,
}

impl Batch {
    pub fn new() -> Batch {
        Batch::default()
    }

    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty() && self.invalid.is_none()
    }

    /// Number of messages (without the batch begin/end markers).
    pub fn len(&self) -> usize {
        self.msgs.len()
    }

    fn push(&mut self, ty: u8, flags: u16, family: Family, body: Vec<u8>, what: String) {
        self.msgs.push(Msg {
            ty,
            flags,
            family,
            body,
            what,
        });
    }

    fn comment(&mut self, comment: Option<&str>) -> Option<Vec<u8>> {
        let c = comment?;
        match encode_comment(c) {
            Ok(u) => Some(u),
            Err(reason) => {
                self.invalid.get_or_insert((c.to_string(), reason));
                None
            }
        }
    }

    /// `add table FAMILY NAME`: creates it unless it exists.
    pub fn add_table(&mut self, family: Family, name: &str) -> &mut Self {
        let mut b = Vec::new();
        put_str(&mut b, NFTA_TABLE_NAME, name);
        put_be32(&mut b, NFTA_TABLE_FLAGS, 0);
        self.push(
            NFT_MSG_NEWTABLE,
            NLM_F_CREATE,
            family,
            b,
            format!("add table {family} {name}"),
        );
        self
    }

    /// `add chain FAMILY TABLE NAME [{ type .. hook .. priority ..; policy ..; comment ".."; }]`:
    /// creates it unless it exists (an existing chain is left as it is).
    /// The comment goes into NFTA_CHAIN_USERDATA in libnftnl's format.
    pub fn add_chain(
        &mut self,
        family: Family,
        table: &str,
        name: &str,
        base: Option<&BaseChain>,
        comment: Option<&str>,
    ) -> &mut Self {
        let udata = self.comment(comment);
        let mut b = Vec::new();
        put_str(&mut b, NFTA_CHAIN_TABLE, table);
        put_str(&mut b, NFTA_CHAIN_NAME, name);
        if let Some(base) = base {
            put_str(&mut b, NFTA_CHAIN_TYPE, base.chain_type.name());
            let policy = match base.policy {
                Policy::Accept => 1, // NF_ACCEPT
                Policy::Drop => 0,   // NF_DROP
            };
            put_be32(&mut b, NFTA_CHAIN_POLICY, policy);
            wire::nest(&mut b, NFTA_CHAIN_HOOK, |b| {
                put_be32(b, NFTA_HOOK_HOOKNUM, base.hook as u32);
                put_be32(b, NFTA_HOOK_PRIORITY, base.priority as u32);
            });
        }
        if let Some(u) = udata {
            put(&mut b, NFTA_CHAIN_USERDATA, &u);
        }
        self.push(
            NFT_MSG_NEWCHAIN,
            NLM_F_CREATE,
            family,
            b,
            format!("add chain {family} {table} {name}"),
        );
        self
    }

    /// `flush chain`: deletes every rule of the chain (NFT_MSG_DELRULE
    /// naming the chain and no rule handle).
    pub fn flush_chain(&mut self, family: Family, table: &str, chain: &str) -> &mut Self {
        let mut b = Vec::new();
        put_str(&mut b, NFTA_RULE_TABLE, table);
        put_str(&mut b, NFTA_RULE_CHAIN, chain);
        self.push(
            NFT_MSG_DELRULE,
            0,
            family,
            b,
            format!("flush chain {family} {table} {chain}"),
        );
        self
    }

    /// `delete chain`: fails with ENOENT if it does not exist (pair it with
    /// `add_chain` in the same batch for an idempotent delete).
    pub fn delete_chain(&mut self, family: Family, table: &str, chain: &str) -> &mut Self {
        let mut b = Vec::new();
        put_str(&mut b, NFTA_CHAIN_TABLE, table);
        put_str(&mut b, NFTA_CHAIN_NAME, chain);
        self.push(
            NFT_MSG_DELCHAIN,
            0,
            family,
            b,
            format!("delete chain {family} {table} {chain}"),
        );
        self
    }

    /// `add rule`: appends a rule made of `exprs` at the end of the chain;
    /// the comment goes into NFTA_RULE_USERDATA in libnftnl's format.
    pub fn add_rule(
        &mut self,
        family: Family,
        table: &str,
        chain: &str,
        exprs: &[Expr],
        comment: Option<&str>,
    ) -> &mut Self {
        let udata = self.comment(comment);
        let mut b = Vec::new();
        put_str(&mut b, NFTA_RULE_TABLE, table);
        put_str(&mut b, NFTA_RULE_CHAIN, chain);
        wire::nest(&mut b, NFTA_RULE_EXPRESSIONS, |b| {
            for e in exprs {
                e.encode(b);
            }
        });
        if let Some(u) = udata {
            put(&mut b, NFTA_RULE_USERDATA, &u);
        }
        self.push(
            NFT_MSG_NEWRULE,
            NLM_F_CREATE | NLM_F_APPEND,
            family,
            b,
            format!("add rule {family} {table} {chain}"),
        );
        self
    }

    /// The datagram: BATCH_BEGIN (seq `first_seq`), the messages (each with
    /// NLM_F_ACK, so every one is answered), BATCH_END.
    ///
    /// The begin/end markers carry no NLM_F_ACK: only recent kernels answer
    /// an ACK request on them, so leaving it off keeps the number of
    /// answers the same on every kernel.
    pub fn encode(&self, first_seq: u32) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(40 + self.msgs.iter().map(|m| 20 + m.body.len()).sum::<usize>());
        let subsys = NFNL_SUBSYS_NFTABLES;
        put_msg(
            &mut out,
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            first_seq,
            0,
            subsys,
            &[],
        );
        for (i, m) in self.msgs.iter().enumerate() {
            put_msg(
                &mut out,
                (subsys << 8) | m.ty as u16,
                NLM_F_REQUEST | NLM_F_ACK | m.flags,
                first_seq.wrapping_add(1 + i as u32),
                m.family as u8,
                0,
                &m.body,
            );
        }
        let end = first_seq.wrapping_add(1 + self.msgs.len() as u32);
        put_msg(
            &mut out,
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            end,
            0,
            subsys,
            &[],
        );
        out
    }

    /// Sends the batch and waits for the kernel's verdict. Either every
    /// change is applied or none is; on failure the error names the first
    /// message the kernel refused (e.g. `nftables: delete chain inet t c
    /// (message 4 of 4): No such file or directory`). An empty batch
    /// succeeds without a syscall.
    pub fn commit(&self, sock: &Socket) -> Result<()> {
        if let Some((value, reason)) = &self.invalid {
            return Err(Error::invalid("nftables comment", value, *reason));
        }
        if self.msgs.is_empty() {
            return Ok(());
        }
        let n = self.msgs.len();
        let first = sock.take_seqs(n as u32 + 2);
        let data = self.encode(first);
        tracing::debug!(messages = n, bytes = data.len(), "nftables batch");
        sock.send(&data, "send nftables batch")?;

        // One answer per message; the kernel processes the whole batch
        // even after an error, so they all come. An error on the BEGIN seq
        // means the batch as a whole was refused (no nf_tables, EPERM, ...).
        let mut pending = n;
        let mut answered = vec![false; n];
        let mut first_err: Option<(usize, i32, Option<String>)> = None;
        let mut buf = Vec::with_capacity(RECV_BUF);
        while pending > 0 {
            sock.recv(&mut buf, "read nftables batch answers")?;
            for m in wire::messages(&buf) {
                if m.ty != NLMSG_ERROR {
                    continue;
                }
                let (errno, message) = parse_error(&m);
                let idx = m.seq.wrapping_sub(first) as usize;
                if idx == 0 || idx == n + 1 {
                    if errno != 0 {
                        return Err(Error::Kernel {
                            context: "nftables batch".into(),
                            errno,
                            message,
                        });
                    }
                    continue;
                }
                let Some(i) = idx.checked_sub(1).filter(|&i| i < n) else {
                    continue; // an answer to an earlier request on this socket
                };
                if !std::mem::replace(&mut answered[i], true) {
                    pending -= 1;
                }
                if errno != 0 && first_err.as_ref().is_none_or(|(j, ..)| i < *j) {
                    first_err = Some((i, errno, message));
                }
            }
        }
        match first_err {
            None => Ok(()),
            Some((i, errno, message)) => Err(Error::Kernel {
                context: format!("nftables: {} (message {} of {n})", self.msgs[i].what, i + 1),
                errno,
                message,
            }),
        }
    }
}

/// (positive errno, extended-ack message) of an NLMSG_ERROR; errno 0 is an ack.
pub(crate) fn parse_error(m: &wire::RawMsg) -> (i32, Option<String>) {
    let Some(code) = m.payload.get(..4) else {
        return (libc::EPROTO, None);
    };
    let errno = -i32::from_ne_bytes(code.try_into().expect("4 bytes"));
    (errno, ext_ack_message(m.flags, &m.payload[4..]))
}

/// A NETLINK_NETFILTER socket bound to the network namespace of the thread
/// that opened it. Blocking; not for use from several threads at once.
pub struct Socket {
    sock: NlSocket,
    seq: Cell<u32>,
}

impl fmt::Debug for Socket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("nft::Socket").finish_non_exhaustive()
    }
}

impl Socket {
    /// Opens a socket in the calling thread's current network namespace.
    /// A kernel without nfnetlink fails here with EPROTONOSUPPORT
    /// ([`Error::is_not_supported`]); one without nf_tables fails at the
    /// first commit with EOPNOTSUPP.
    pub fn open() -> Result<Socket> {
        let ctx = "open netfilter netlink socket";
        let mut sock = NlSocket::new(NETLINK_NETFILTER).map_err(|e| Error::io(ctx, e))?;
        sock.bind_auto().map_err(|e| Error::io(ctx, e))?;
        // Best effort: kernel error strings, and errors without the whole
        // request echoed back.
        let _ = sock.set_ext_ack(true);
        let _ = sock.set_cap_ack(true);
        let tv = nix::sys::time::TimeVal::new(RECV_TIMEOUT.as_secs() as _, 0);
        nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::ReceiveTimeout, &tv)
            .map_err(|e| Error::errno(ctx, e))?;
        Ok(Socket {
            sock,
            // Distinct from other sockets' numbers, which helps reading
            // `nft monitor` / strace output; uniqueness per socket is all
            // that matters.
            seq: Cell::new(std::process::id().wrapping_shl(12)),
        })
    }

    fn take_seqs(&self, n: u32) -> u32 {
        let s = self.seq.get();
        self.seq.set(s.wrapping_add(n));
        s
    }

    fn send(&self, data: &[u8], ctx: &str) -> Result<()> {
        loop {
            match self.sock.send(data, 0) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(ctx, e)),
            }
        }
    }

    fn recv(&self, buf: &mut Vec<u8>, ctx: &str) -> Result<()> {
        loop {
            buf.clear();
            match self.sock.recv(buf, 0) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    return Err(Error::protocol(ctx, "no answer from the kernel"))
                }
                Err(e) => return Err(Error::io(ctx, e)),
            }
        }
    }
}

/// A chain as listed by [`list_chains`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainInfo {
    pub name: String,
    /// The `comment` (NFTA_CHAIN_USERDATA in libnftnl's format), if any.
    pub comment: Option<String>,
}

/// The chains of `table` in `family`. A missing table is an empty list
/// (the dump covers the family, so there is no ENOENT to tell apart).
pub fn list_chains(sock: &Socket, family: Family, table: &str) -> Result<Vec<ChainInfo>> {
    // A dump interrupted by a concurrent change (NLM_F_DUMP_INTR) may have
    // skipped or repeated chains: start over, like nft does.
    for _ in 0..5 {
        if let Some(chains) = dump_chains(sock, family, table)? {
            return Ok(chains);
        }
    }
    Err(Error::protocol(
        format!("list chains of {family} {table}"),
        "the ruleset kept changing during the dump",
    ))
}

fn dump_chains(sock: &Socket, family: Family, table: &str) -> Result<Option<Vec<ChainInfo>>> {
    let ctx = || format!("list chains of {family} {table}");
    let seq = sock.take_seqs(1);
    let mut req = Vec::new();
    put_msg(
        &mut req,
        (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETCHAIN as u16,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        family as u8,
        0,
        &[],
    );
    sock.send(&req, &ctx())?;
    let mut out = Vec::new();
    let mut intr = false;
    let mut buf = Vec::with_capacity(RECV_BUF);
    loop {
        sock.recv(&mut buf, &ctx())?;
        for m in wire::messages(&buf) {
            if m.seq != seq {
                continue;
            }
            intr |= m.flags & NLM_F_DUMP_INTR != 0;
            match m.ty {
                NLMSG_DONE => return Ok((!intr).then_some(out)),
                NLMSG_ERROR => {
                    let (errno, message) = parse_error(&m);
                    if errno == 0 {
                        continue;
                    }
                    if errno == libc::ENOENT {
                        return Ok(Some(Vec::new()));
                    }
                    return Err(Error::Kernel {
                        context: ctx(),
                        errno,
                        message,
                    });
                }
                _ => {
                    if let Some(c) = parse_chain(m.payload, table) {
                        out.push(c);
                    }
                }
            }
        }
    }
}

/// A NEWCHAIN dump entry (nfgenmsg + attributes), if it is in `table`.
fn parse_chain(payload: &[u8], table: &str) -> Option<ChainInfo> {
    let mut t = None;
    let mut name = None;
    let mut comment = None;
    for (ty, p) in attrs(payload.get(wire::NFGENMSG_LEN..)?) {
        match ty {
            NFTA_CHAIN_TABLE => t = Some(get_str(p)),
            NFTA_CHAIN_NAME => name = Some(get_str(p)),
            NFTA_CHAIN_USERDATA => comment = decode_comment(p),
            _ => {}
        }
    }
    (t.as_deref() == Some(table)).then_some(())?;
    Some(ChainInfo {
        name: name?,
        comment,
    })
}

#[cfg(test)]
mod tests;
