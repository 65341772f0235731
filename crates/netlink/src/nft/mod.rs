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
//! * [`Batch`]: tables, chains (with hooks and comments), sets (named or
//!   anonymous, interval, concatenated keys) and their elements, named
//!   counters, flushes, deletes and rules built from [`Expr`]s (by hand or
//!   with the [`Rule`] builder); [`Batch::commit`] sends it in one
//!   `sendmsg` and reports the first failing message.
//! * [`list_tables`], [`list_chains`] (with their comments) and
//!   [`list_counters`] (packets and bytes of named counters).

mod expr;
mod rule;
mod set;
pub(crate) mod wire;

use std::cell::Cell;
use std::fmt;
use std::time::Duration;

use rtnetlink::sys::{protocols::NETLINK_NETFILTER, Socket as NlSocket};

pub use expr::{ct_state, reg32, CmpOp, CtKey, Expr, MetaKey, PayloadBase, Verdict, NFT_REG_1};
pub use rule::{AddrField, IpVersion, Rule};
pub use set::{Elem, Key, KeyType, Range, SetSpec};
pub use wire::{decode_comment, encode_comment, COMMENT_MAX};

use crate::error::{Error, Result};
use crate::handle::ext_ack_message;
use rtnetlink::packet_core::{
    NLMSG_DONE, NLMSG_ERROR, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_DUMP, NLM_F_DUMP_INTR,
    NLM_F_REQUEST,
};
use wire::{attrs, get_be32, get_be64, get_str, put, put_be32, put_be64, put_msg, put_str};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;

// enum nf_tables_msg_types
const NFT_MSG_NEWTABLE: u8 = 0;
const NFT_MSG_GETTABLE: u8 = 1;
const NFT_MSG_DELTABLE: u8 = 2;
const NFT_MSG_NEWCHAIN: u8 = 3;
const NFT_MSG_GETCHAIN: u8 = 4;
const NFT_MSG_DELCHAIN: u8 = 5;
const NFT_MSG_NEWRULE: u8 = 6;
const NFT_MSG_GETRULE: u8 = 7;
const NFT_MSG_DELRULE: u8 = 8;
const NFT_MSG_NEWSET: u8 = 9;
const NFT_MSG_DELSET: u8 = 11;
const NFT_MSG_NEWSETELEM: u8 = 12;
const NFT_MSG_DELSETELEM: u8 = 14;
const NFT_MSG_NEWOBJ: u8 = 18;
const NFT_MSG_GETOBJ: u8 = 19;

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
const NFTA_RULE_HANDLE: u16 = 3;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_OBJ_TABLE: u16 = 1;
const NFTA_OBJ_NAME: u16 = 2;
const NFTA_OBJ_TYPE: u16 = 3;
const NFTA_OBJ_DATA: u16 = 4;
const NFTA_COUNTER_BYTES: u16 = 1;
const NFTA_COUNTER_PACKETS: u16 = 2;

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
    /// `filter` in the ip/ip6/inet families.
    pub const FILTER: i32 = 0;
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

impl BaseChain {
    /// `type nat hook postrouting priority srcnat; policy accept;`: where
    /// every masquerade rule of Plexus lives.
    pub const SRCNAT: BaseChain = BaseChain {
        chain_type: ChainType::Nat,
        hook: Hook::Postrouting,
        priority: priority::SRCNAT,
        policy: Policy::Accept,
    };

    /// `type filter hook HOOK priority filter; policy accept;`
    pub const fn filter(hook: Hook) -> BaseChain {
        BaseChain {
            chain_type: ChainType::Filter,
            hook,
            priority: priority::FILTER,
            policy: Policy::Accept,
        }
    }
}

/// A set added to a batch by [`Batch::add_anonymous_set`]: rules look it
/// up by its batch ID, in the same batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnonymousSet {
    id: u32,
}

impl AnonymousSet {
    /// `lookup reg SREG set __setN`.
    pub fn lookup(&self, sreg: u32, invert: bool) -> Expr {
        Expr::Lookup {
            set: set::ANONYMOUS_NAME.into(),
            set_id: Some(self.id),
            sreg,
            invert,
        }
    }
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
    /// The first invalid input: (what, value, reason).
    invalid: Option<(&'static str, String, String)>,
    /// The last NFTA_SET_ID handed out (sets of one batch refer to each
    /// other by these).
    set_ids: u32,
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
                self.invalid
                    .get_or_insert(("nftables comment", c.to_string(), reason.into()));
                None
            }
        }
    }

    fn next_set_id(&mut self) -> u32 {
        self.set_ids += 1;
        self.set_ids
    }

    /// `delete table FAMILY NAME`, with everything in it: fails with
    /// ENOENT if it does not exist (after `add_table` in the same batch it
    /// cannot).
    pub fn delete_table(&mut self, family: Family, name: &str) -> &mut Self {
        let mut b = Vec::new();
        put_str(&mut b, NFTA_TABLE_NAME, name);
        self.push(
            NFT_MSG_DELTABLE,
            0,
            family,
            b,
            format!("delete table {family} {name}"),
        );
        self
    }

    /// `add set FAMILY TABLE NAME { type ..; [flags interval;] }`: creates
    /// it unless it exists (an existing set of the same type is left as it
    /// is, elements included; one of another type is an error).
    pub fn add_set(&mut self, family: Family, table: &str, set: &SetSpec) -> &mut Self {
        let id = self.next_set_id();
        let body = set.encode(table, id, false);
        self.push(
            NFT_MSG_NEWSET,
            NLM_F_CREATE,
            family,
            body,
            format!("add set {family} {table} {}", set.name),
        );
        self
    }

    /// `flush set`: removes every element.
    pub fn flush_set(&mut self, family: Family, table: &str, set: &str) -> &mut Self {
        self.push(
            NFT_MSG_DELSETELEM,
            0,
            family,
            set::encode_set_ref(table, set),
            format!("flush set {family} {table} {set}"),
        );
        self
    }

    /// `delete set`: fails with ENOENT if it does not exist, EBUSY while a
    /// rule refers to it.
    pub fn delete_set(&mut self, family: Family, table: &str, set: &str) -> &mut Self {
        self.push(
            NFT_MSG_DELSET,
            0,
            family,
            set::encode_set_name(table, set),
            format!("delete set {family} {table} {set}"),
        );
        self
    }

    /// `add element FAMILY TABLE SET { .. }`, in as many messages as the
    /// elements need. Elements that do not fit `set`'s key are reported
    /// by `commit`; interval elements must be disjoint and not adjacent.
    pub fn add_elements(
        &mut self,
        family: Family,
        table: &str,
        set: &SetSpec,
        elems: &[Elem],
    ) -> &mut Self {
        self.push_elements(family, table, set, &set.name, None, elems);
        self
    }

    fn push_elements(
        &mut self,
        family: Family,
        table: &str,
        set: &SetSpec,
        name: &str,
        id: Option<u32>,
        elems: &[Elem],
    ) {
        if let Some(reason) = elems.iter().find_map(|e| set.check(e).err()) {
            self.invalid
                .get_or_insert(("nftables set element", set.name.clone(), reason));
            return;
        }
        for body in set.encode_elem_msgs(table, name, id, elems) {
            self.push(
                NFT_MSG_NEWSETELEM,
                NLM_F_CREATE,
                family,
                body,
                format!("add element {family} {table} {}", set.name),
            );
        }
    }

    /// An anonymous constant set holding `elems` (`{ a, b, c }` in a rule):
    /// it belongs to the rule that looks it up through the returned
    /// handle, in this batch, and goes away with that rule.
    pub fn add_anonymous_set(
        &mut self,
        family: Family,
        table: &str,
        key: &[KeyType],
        interval: bool,
        elems: &[Elem],
    ) -> AnonymousSet {
        let id = self.next_set_id();
        let spec = SetSpec {
            name: format!("anonymous set {id}"),
            key: key.to_vec(),
            interval,
        };
        self.push(
            NFT_MSG_NEWSET,
            NLM_F_CREATE,
            family,
            spec.encode(table, id, true),
            format!("add anonymous set {family} {table}"),
        );
        self.push_elements(family, table, &spec, set::ANONYMOUS_NAME, Some(id), elems);
        AnonymousSet { id }
    }

    /// `add counter FAMILY TABLE NAME`: a named counter starting at zero,
    /// unless it exists (then it keeps counting from where it is).
    pub fn add_counter(&mut self, family: Family, table: &str, name: &str) -> &mut Self {
        let mut b = Vec::new();
        put_str(&mut b, NFTA_OBJ_TABLE, table);
        put_str(&mut b, NFTA_OBJ_NAME, name);
        put_be32(&mut b, NFTA_OBJ_TYPE, expr::OBJECT_COUNTER);
        wire::nest(&mut b, NFTA_OBJ_DATA, |b| {
            put_be64(b, NFTA_COUNTER_BYTES, 0);
            put_be64(b, NFTA_COUNTER_PACKETS, 0);
        });
        self.push(
            NFT_MSG_NEWOBJ,
            NLM_F_CREATE,
            family,
            b,
            format!("add counter {family} {table} {name}"),
        );
        self
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
        if let Some((what, value, reason)) = &self.invalid {
            return Err(Error::invalid(what, value, reason.clone()));
        }
        if self.msgs.is_empty() {
            return Ok(());
        }
        let n = self.msgs.len();
        let first = sock.take_seqs(n as u32 + 2);
        let data = self.encode(first);
        tracing::debug!(messages = n, bytes = data.len(), "nftables batch");
        sock.fit_buffers(data.len(), n)?;
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
    /// The send and receive buffer sizes we set, once a batch needed more
    /// than the defaults (0 until then).
    bufs: Cell<(usize, usize)>,
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
            bufs: Cell::new((0, 0)),
        })
    }

    /// Grows the socket's buffers for a batch of `bytes` bytes and `msgs`
    /// answers. The kernel refuses a datagram larger than the send buffer
    /// (EMSGSIZE), and it queues every answer of a batch before `sendmsg`
    /// returns: answers past the receive buffer would be lost and the
    /// commit would wait for them in vain. Like `nft`, it forces the sizes
    /// (root may exceed `net.core.[rw]mem_max`).
    fn fit_buffers(&self, bytes: usize, msgs: usize) -> Result<()> {
        use nix::sys::socket::{setsockopt, sockopt};
        const DEFAULT: usize = 208 * 1024;
        // An answer with a capped error costs about one page of receive
        // buffer (skb overhead included).
        let want = (bytes + 4096, (msgs + 2) * 4096);
        let (snd, rcv) = self.bufs.get();
        let ctx = "size netfilter netlink socket buffers";
        if want.0 > DEFAULT && want.0 > snd {
            setsockopt(&self.sock, sockopt::SndBufForce, &want.0)
                .map_err(|e| Error::errno(ctx, e))?;
        }
        if want.1 > DEFAULT && want.1 > rcv {
            setsockopt(&self.sock, sockopt::RcvBufForce, &want.1)
                .map_err(|e| Error::errno(ctx, e))?;
        }
        self.bufs.set((snd.max(want.0), rcv.max(want.1)));
        Ok(())
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
    dump(
        sock,
        NFT_MSG_GETCHAIN,
        family,
        &[],
        &format!("list chains of {family} {table}"),
        |p| parse_chain(p, table),
    )
}

/// The handles of the rules of `chain` in `table`, in order: a rule
/// deleted, added or replaced by hand changes them (handles are never
/// reused). A missing table or chain is an empty list.
pub fn list_rules(sock: &Socket, family: Family, table: &str, chain: &str) -> Result<Vec<u64>> {
    let mut filter = Vec::new();
    put_str(&mut filter, NFTA_RULE_TABLE, table);
    put_str(&mut filter, NFTA_RULE_CHAIN, chain);
    dump(
        sock,
        NFT_MSG_GETRULE,
        family,
        &filter,
        &format!("list rules of {family} {table} {chain}"),
        |p| {
            let mut t = None;
            let mut c = None;
            let mut handle = None;
            for (ty, v) in attrs(p.get(wire::NFGENMSG_LEN..)?) {
                match ty {
                    NFTA_RULE_TABLE => t = Some(get_str(v)),
                    NFTA_RULE_CHAIN => c = Some(get_str(v)),
                    NFTA_RULE_HANDLE => handle = get_be64(v),
                    _ => {}
                }
            }
            (t.as_deref() == Some(table) && c.as_deref() == Some(chain)).then_some(())?;
            handle
        },
    )
}

/// The names of the tables of `family`.
pub fn list_tables(sock: &Socket, family: Family) -> Result<Vec<String>> {
    dump(
        sock,
        NFT_MSG_GETTABLE,
        family,
        &[],
        &format!("list {family} tables"),
        |p| {
            attrs(p.get(wire::NFGENMSG_LEN..)?)
                .find(|(ty, _)| *ty == NFTA_TABLE_NAME)
                .map(|(_, v)| get_str(v))
        },
    )
}

/// A named counter as listed by [`list_counters`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterInfo {
    pub name: String,
    pub packets: u64,
    pub bytes: u64,
}

/// The named counters of `table` in `family` (empty if there is no such
/// table).
pub fn list_counters(sock: &Socket, family: Family, table: &str) -> Result<Vec<CounterInfo>> {
    let mut filter = Vec::new();
    put_str(&mut filter, NFTA_OBJ_TABLE, table);
    put_be32(&mut filter, NFTA_OBJ_TYPE, expr::OBJECT_COUNTER);
    dump(
        sock,
        NFT_MSG_GETOBJ,
        family,
        &filter,
        &format!("list counters of {family} {table}"),
        |p| parse_counter(p, table),
    )
}

/// A dump request of `ty` answered by one message per object, each parsed
/// by `parse` (`None` skips it). A dump interrupted by a concurrent change
/// (NLM_F_DUMP_INTR) may have skipped or repeated objects: start over, like
/// nft does. ENOENT (a filter naming a missing table) is an empty list.
fn dump<T>(
    sock: &Socket,
    ty: u8,
    family: Family,
    body: &[u8],
    ctx: &str,
    parse: impl Fn(&[u8]) -> Option<T>,
) -> Result<Vec<T>> {
    for _ in 0..5 {
        if let Some(v) = dump_once(sock, ty, family, body, ctx, &parse)? {
            return Ok(v);
        }
    }
    Err(Error::protocol(
        ctx,
        "the ruleset kept changing during the dump",
    ))
}

fn dump_once<T>(
    sock: &Socket,
    ty: u8,
    family: Family,
    body: &[u8],
    ctx: &str,
    parse: &impl Fn(&[u8]) -> Option<T>,
) -> Result<Option<Vec<T>>> {
    let seq = sock.take_seqs(1);
    let mut req = Vec::new();
    put_msg(
        &mut req,
        (NFNL_SUBSYS_NFTABLES << 8) | ty as u16,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        family as u8,
        0,
        body,
    );
    sock.send(&req, ctx)?;
    let mut out = Vec::new();
    let mut intr = false;
    let mut buf = Vec::with_capacity(RECV_BUF);
    loop {
        sock.recv(&mut buf, ctx)?;
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
                        context: ctx.to_string(),
                        errno,
                        message,
                    });
                }
                _ => out.extend(parse(m.payload)),
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

/// A NEWOBJ dump entry, if it is a counter of `table`.
fn parse_counter(payload: &[u8], table: &str) -> Option<CounterInfo> {
    let (mut t, mut name, mut ty, mut data) = (None, None, None, None);
    for (a, p) in attrs(payload.get(wire::NFGENMSG_LEN..)?) {
        match a {
            NFTA_OBJ_TABLE => t = Some(get_str(p)),
            NFTA_OBJ_NAME => name = Some(get_str(p)),
            NFTA_OBJ_TYPE => ty = get_be32(p),
            NFTA_OBJ_DATA => data = Some(p),
            _ => {}
        }
    }
    (t.as_deref() == Some(table) && ty == Some(expr::OBJECT_COUNTER)).then_some(())?;
    let (mut packets, mut bytes) = (0, 0);
    for (a, p) in attrs(data?) {
        match a {
            NFTA_COUNTER_BYTES => bytes = get_be64(p)?,
            NFTA_COUNTER_PACKETS => packets = get_be64(p)?,
            _ => {}
        }
    }
    Some(CounterInfo {
        name: name?,
        packets,
        bytes,
    })
}

#[cfg(test)]
mod tests;
