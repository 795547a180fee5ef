//! A small nf_tables client: netlink messages for tables, chains and rules, sent as one
//! batched transaction over a `NETLINK_NETFILTER` socket, and a rule dump to read back.
//!
//! Why our own encoder: the kernel is built with nf_tables and the image carries no `nft`
//! or `iptables` binary, so the rules are programmed over netlink. The crates that do
//! this were checked: `rustables` is GPL-3.0-or-later, which an Apache-2.0 project cannot
//! link; `nftnl`/`nftnl-sys` wrap the C libraries libnftnl and libmnl, which we would have
//! to build and link statically into PID 1. What Gantry needs is a handful of messages
//! and ten expressions, all fixed by the kernel's uapi (`linux/netfilter/nf_tables.h`,
//! `nfnetlink.h`, `nf_nat.h`), so a few hundred lines of our own, tested byte for byte
//! and against the kernel, cost less than either.
//!
//! The wire format, as libnftnl writes it:
//!
//! - every message is `nlmsghdr` + `nfgenmsg` (family, version 0, resource id) + netlink
//!   attributes; the message type is `NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_*`;
//! - integers in attributes are big-endian; strings end in NUL; nested attributes carry
//!   `NLA_F_NESTED`;
//! - a transaction is `NFNL_MSG_BATCH_BEGIN`, the messages, `NFNL_MSG_BATCH_END`, in one
//!   `send`. The kernel applies all of it or none. Every message asks for an ACK, so each
//!   one gets an answer: an ACK, or the errno that aborted the batch, which lets an error
//!   name the operation that failed (with the kernel's extended-ACK text, when it gives
//!   one).
//! - a rule's user data is libnftnl's TLV list; we store a comment (type 0), so that
//!   `nft list ruleset` shows whose rule it is, and so that we find our rules again.

use std::fmt;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

mod expr;
pub use expr::*;

// linux/netlink.h
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_MULTI: u16 = 0x2;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLM_F_CAPPED: u16 = 0x100;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLA_F_NESTED: u16 = 0x8000;
const NLMSGERR_ATTR_MSG: u16 = 1;

// linux/netfilter/nfnetlink.h
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
/// `NFPROTO_IPV4`, the family of `table ip …`.
pub const NFPROTO_IPV4: u8 = 2;

// linux/netfilter/nf_tables.h: message types
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_DELRULE: u16 = 8;

// attributes
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_HANDLE: u16 = 3;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
/// libnftnl's `NFTNL_UDATA_RULE_COMMENT`.
const UDATA_RULE_COMMENT: u8 = 0;

/// `NF_ACCEPT`, a base chain's policy.
const NF_ACCEPT: u32 = 1;

/// A base chain's type and hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseChain {
    /// `nat` or `filter`.
    pub kind: &'static str,
    pub hook: Hook,
    pub priority: i32,
}

/// A chain; without `base` it is a regular chain, reached by jumps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: &'static str,
    pub base: Option<BaseChain>,
}

/// A rule to add at the end of a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub chain: String,
    pub exprs: Vec<Expr>,
    /// Stored as the rule's user data; how we find our rules again.
    pub comment: Option<String>,
}

/// A rule as the kernel lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedRule {
    pub chain: String,
    pub handle: u64,
    pub comment: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("open a netfilter netlink socket: {0}")]
    Socket(std::io::Error),
    #[error("send the nf_tables transaction: {0}")]
    Send(std::io::Error),
    #[error("read the kernel's answer: {0}")]
    Receive(std::io::Error),
    #[error("no answer from the kernel within 5 s")]
    Timeout,
    #[error("{op}: {reason}")]
    Rejected { op: String, reason: String },
    #[error("malformed answer from the kernel: {0}")]
    Malformed(String),
}

/// Netlink attributes being written.
#[derive(Debug, Default)]
pub(crate) struct Attrs(Vec<u8>);

impl Attrs {
    fn header(&mut self, kind: u16, len: usize) {
        self.0.extend_from_slice(&((4 + len) as u16).to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
    }

    fn pad(&mut self) {
        while !self.0.len().is_multiple_of(4) {
            self.0.push(0);
        }
    }

    fn bytes(&mut self, kind: u16, value: &[u8]) {
        self.header(kind, value.len());
        self.0.extend_from_slice(value);
        self.pad();
    }

    fn u32(&mut self, kind: u16, value: u32) {
        self.bytes(kind, &value.to_be_bytes());
    }

    fn u64(&mut self, kind: u16, value: u64) {
        self.bytes(kind, &value.to_be_bytes());
    }

    fn str(&mut self, kind: u16, value: &str) {
        let mut v = value.as_bytes().to_vec();
        v.push(0);
        self.bytes(kind, &v);
    }

    fn nested(&mut self, kind: u16, fill: impl FnOnce(&mut Attrs)) {
        let mut inner = Attrs::default();
        fill(&mut inner);
        self.header(kind | NLA_F_NESTED, inner.0.len());
        self.0.extend_from_slice(&inner.0);
    }
}

/// One netlink message: header, `nfgenmsg`, attributes.
fn message(kind: u16, flags: u16, seq: u32, family: u8, res_id: u16, attrs: &[u8]) -> Vec<u8> {
    let len = 16 + 4 + attrs.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    m.push(family);
    m.push(0); // NFNETLINK_V0
    m.extend_from_slice(&res_id.to_be_bytes());
    m.extend_from_slice(attrs);
    m
}

fn nft_type(msg: u16) -> u16 {
    NFNL_SUBSYS_NFTABLES << 8 | msg
}

/// The attributes of a rule (`NFT_MSG_NEWRULE`).
pub(crate) fn rule_attrs(table: &str, rule: &Rule) -> Vec<u8> {
    let mut a = Attrs::default();
    a.str(NFTA_RULE_TABLE, table);
    a.str(NFTA_RULE_CHAIN, &rule.chain);
    a.nested(NFTA_RULE_EXPRESSIONS, |list| {
        for e in &rule.exprs {
            list.nested(NFTA_LIST_ELEM, |x| {
                x.str(NFTA_EXPR_NAME, e.name());
                x.nested(NFTA_EXPR_DATA, |d| e.encode_data(d));
            });
        }
    });
    if let Some(c) = &rule.comment {
        a.bytes(NFTA_RULE_USERDATA, &comment_udata(c));
    }
    a.0
}

/// libnftnl's user-data TLV for a comment: type, length (with the NUL), text, NUL.
fn comment_udata(comment: &str) -> Vec<u8> {
    let text = &comment.as_bytes()[..comment.len().min(127)];
    let mut v = vec![UDATA_RULE_COMMENT, (text.len() + 1) as u8];
    v.extend_from_slice(text);
    v.push(0);
    v
}

fn comment_of_udata(mut udata: &[u8]) -> Option<String> {
    while udata.len() >= 2 {
        let (kind, len) = (udata[0], usize::from(udata[1]));
        let value = udata.get(2..2 + len)?;
        if kind == UDATA_RULE_COMMENT {
            let text = value.strip_suffix(&[0]).unwrap_or(value);
            return Some(String::from_utf8_lossy(text).into_owned());
        }
        udata = &udata[2 + len..];
    }
    None
}

/// A transaction being built. Nothing reaches the kernel until [`Batch::commit`].
#[derive(Debug)]
pub struct Batch {
    table: String,
    messages: Vec<(String, u16, u16, Vec<u8>)>,
}

impl Batch {
    /// A transaction on the `ip` table `table`.
    pub fn new(table: &str) -> Self {
        Batch {
            table: table.to_owned(),
            messages: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Makes the table unless it exists.
    pub fn add_table(&mut self) {
        let mut a = Attrs::default();
        a.str(NFTA_TABLE_NAME, &self.table);
        self.messages.push((
            format!("add table ip {}", self.table),
            NFT_MSG_NEWTABLE,
            NLM_F_CREATE,
            a.0,
        ));
    }

    /// Makes the chain unless it exists (a base chain must then have the same hook).
    pub fn add_chain(&mut self, chain: &Chain) {
        let mut a = Attrs::default();
        a.str(NFTA_CHAIN_TABLE, &self.table);
        a.str(NFTA_CHAIN_NAME, chain.name);
        if let Some(base) = &chain.base {
            a.nested(NFTA_CHAIN_HOOK, |h| {
                h.u32(NFTA_HOOK_HOOKNUM, base.hook as u32);
                h.u32(NFTA_HOOK_PRIORITY, base.priority as u32);
            });
            a.u32(NFTA_CHAIN_POLICY, NF_ACCEPT);
            a.str(NFTA_CHAIN_TYPE, base.kind);
        }
        self.messages.push((
            format!("add chain ip {} {}", self.table, chain.name),
            NFT_MSG_NEWCHAIN,
            NLM_F_CREATE,
            a.0,
        ));
    }

    /// Appends `rule` to its chain.
    pub fn add_rule(&mut self, rule: &Rule) {
        let op = format!(
            "add rule ip {} {}{}",
            self.table,
            rule.chain,
            rule.comment
                .as_deref()
                .map(|c| format!(" ({c})"))
                .unwrap_or_default()
        );
        let attrs = rule_attrs(&self.table, rule);
        self.messages
            .push((op, NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, attrs));
    }

    /// Deletes the rule with `handle` in `chain`.
    pub fn delete_rule(&mut self, rule: &ListedRule) {
        let mut a = Attrs::default();
        a.str(NFTA_RULE_TABLE, &self.table);
        a.str(NFTA_RULE_CHAIN, &rule.chain);
        a.u64(NFTA_RULE_HANDLE, rule.handle);
        self.messages.push((
            format!(
                "delete rule ip {} {} handle {}",
                self.table, rule.chain, rule.handle
            ),
            NFT_MSG_DELRULE,
            0,
            a.0,
        ));
    }

    /// The bytes sent to the kernel, with sequence numbers from `seq` on.
    pub(crate) fn encode(&self, seq: u32) -> Vec<u8> {
        let subsys = NFNL_SUBSYS_NFTABLES;
        let mut out = message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq, 0, subsys, &[]);
        for (i, (_, kind, flags, attrs)) in self.messages.iter().enumerate() {
            out.extend(message(
                nft_type(*kind),
                NLM_F_REQUEST | NLM_F_ACK | flags,
                seq + 1 + i as u32,
                NFPROTO_IPV4,
                0,
                attrs,
            ));
        }
        let end = seq + 1 + self.messages.len() as u32;
        out.extend(message(
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            end,
            0,
            subsys,
            &[],
        ));
        out
    }

    /// Sends the transaction and waits for every message's answer. The kernel applies
    /// all of it or none; the first rejected message is reported by its operation.
    pub fn commit(&self, sock: &NftSocket) -> Result<(), NftError> {
        if self.messages.is_empty() {
            return Ok(());
        }
        let seq = sock.next_seq(self.messages.len() as u32 + 2);
        sock.send(&self.encode(seq))?;
        let mut pending: std::collections::BTreeSet<u32> =
            (seq + 1..=seq + self.messages.len() as u32).collect();
        let mut first_error: Option<NftError> = None;
        while !pending.is_empty() {
            for msg in sock.receive()? {
                if msg.kind != NLMSG_ERROR {
                    continue;
                }
                let (errno, text) = parse_error(&msg)?;
                if !pending.remove(&msg.seq) {
                    if errno != 0 && msg.seq == seq {
                        // The batch itself was refused.
                        return Err(NftError::Rejected {
                            op: "begin the nf_tables transaction".into(),
                            reason: describe(errno, text),
                        });
                    }
                    continue;
                }
                if errno != 0 && first_error.is_none() {
                    let index = (msg.seq - seq - 1) as usize;
                    let op = self
                        .messages
                        .get(index)
                        .map(|m| m.0.clone())
                        .unwrap_or_else(|| format!("message {}", msg.seq));
                    first_error = Some(NftError::Rejected {
                        op,
                        reason: describe(errno, text),
                    });
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

fn describe(errno: i32, text: Option<String>) -> String {
    let base = std::io::Error::from_raw_os_error(errno).to_string();
    match text {
        Some(t) if !t.is_empty() => format!("{base} ({t})"),
        _ => base,
    }
}

/// A parsed netlink message of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// `nlmsg_type`.
    pub kind: u16,
    /// `nlmsg_flags`.
    pub flags: u16,
    /// `nlmsg_seq`.
    pub seq: u32,
    /// After the 16-byte header.
    pub payload: Vec<u8>,
}

/// Splits one datagram the kernel sent into its messages; a message whose length does
/// not fit in what is left is an error (trailing bytes shorter than a header are ignored).
pub fn split_datagram(buf: &[u8]) -> Result<Vec<Reply>, NftError> {
    let mut out = Vec::new();
    let mut rest = buf;
    while rest.len() >= 16 {
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len < 16 || len > rest.len() {
            return Err(NftError::Malformed(format!(
                "message length {len} in a datagram of {}",
                rest.len()
            )));
        }
        out.push(Reply {
            kind: u16::from_ne_bytes([rest[4], rest[5]]),
            flags: u16::from_ne_bytes([rest[6], rest[7]]),
            seq: u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]),
            payload: rest[16..len].to_vec(),
        });
        rest = &rest[align4(len).min(rest.len())..];
    }
    Ok(out)
}

/// An `NLMSG_ERROR`: the positive errno (0 for an ACK) and the kernel's message text.
pub fn parse_error(msg: &Reply) -> Result<(i32, Option<String>), NftError> {
    let code = msg
        .payload
        .get(..4)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| NftError::Malformed("short NLMSG_ERROR".into()))?;
    let mut text = None;
    if msg.flags & NLM_F_ACK_TLVS != 0 {
        // With NETLINK_CAP_ACK the echoed request is only its 16-byte header.
        let orig_len = msg
            .payload
            .get(4..8)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .unwrap_or(16);
        let skip = if msg.flags & NLM_F_CAPPED != 0 {
            16
        } else {
            orig_len
        };
        if let Some(tlvs) = msg.payload.get(4 + align4(skip)..) {
            for (kind, value) in attrs(tlvs) {
                if kind == NLMSGERR_ATTR_MSG {
                    let v = value.strip_suffix(&[0]).unwrap_or(value);
                    text = Some(String::from_utf8_lossy(v).into_owned());
                }
            }
        }
    }
    // A negative errno; i32::MIN has no positive one (and overflowed the negation).
    let errno = code
        .checked_neg()
        .ok_or_else(|| NftError::Malformed(format!("NLMSG_ERROR code {code}")))?;
    Ok((errno, text))
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Splits an attribute area into (type without flags, value).
fn attrs(mut buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([buf[0], buf[1]]));
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & 0x3fff;
        if len < 4 || len > buf.len() {
            break;
        }
        out.push((kind, &buf[4..len]));
        buf = &buf[align4(len).min(buf.len())..];
    }
    out
}

/// A `NETLINK_NETFILTER` socket in the namespace of the thread that opened it.
#[derive(Debug)]
pub struct NftSocket {
    sock: Socket,
    seq: std::cell::Cell<u32>,
}

impl NftSocket {
    pub fn open() -> Result<Self, NftError> {
        let mut sock = Socket::new(NETLINK_NETFILTER).map_err(NftError::Socket)?;
        sock.bind_auto().map_err(NftError::Socket)?;
        // Extended ACKs carry the kernel's reason; capped ACKs do not echo the request.
        sock.set_ext_ack(true).map_err(NftError::Socket)?;
        sock.set_cap_ack(true).map_err(NftError::Socket)?;
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        Ok(NftSocket {
            sock,
            seq: std::cell::Cell::new(start),
        })
    }

    fn next_seq(&self, count: u32) -> u32 {
        let s = self.seq.get();
        self.seq.set(s.wrapping_add(count));
        s
    }

    fn send(&self, buf: &[u8]) -> Result<(), NftError> {
        let n = self
            .sock
            .send_to(buf, &SocketAddr::new(0, 0), 0)
            .map_err(NftError::Send)?;
        if n != buf.len() {
            return Err(NftError::Send(std::io::Error::other(format!(
                "sent {n} of {} bytes",
                buf.len()
            ))));
        }
        Ok(())
    }

    /// The messages of one datagram, waiting at most 5 s for it.
    fn receive(&self) -> Result<Vec<Reply>, NftError> {
        let mut fds = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(&self.sock),
            nix::poll::PollFlags::POLLIN,
        )];
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(5000u16)) {
            Ok(0) => return Err(NftError::Timeout),
            Ok(_) => {}
            Err(errno) => return Err(NftError::Receive(errno.into())),
        }
        let (buf, _) = self.sock.recv_from_full().map_err(NftError::Receive)?;
        split_datagram(&buf)
    }

    /// Every rule of the `ip` table `table` (none if there is no such table).
    pub fn list_rules(&self, table: &str) -> Result<Vec<ListedRule>, NftError> {
        let seq = self.next_seq(1);
        let mut a = Attrs::default();
        a.str(NFTA_RULE_TABLE, table);
        let req = message(
            nft_type(NFT_MSG_GETRULE),
            NLM_F_REQUEST | NLM_F_DUMP,
            seq,
            NFPROTO_IPV4,
            0,
            &a.0,
        );
        self.send(&req)?;
        let mut rules = Vec::new();
        loop {
            for msg in self.receive()? {
                if msg.seq != seq {
                    continue;
                }
                match msg.kind {
                    NLMSG_DONE => return Ok(rules),
                    NLMSG_ERROR => {
                        let (errno, text) = parse_error(&msg)?;
                        if errno == libc::ENOENT {
                            return Ok(Vec::new());
                        }
                        if errno != 0 {
                            return Err(NftError::Rejected {
                                op: format!("list the rules of table ip {table}"),
                                reason: describe(errno, text),
                            });
                        }
                    }
                    k if k == nft_type(NFT_MSG_NEWRULE) && msg.flags & NLM_F_MULTI != 0 => {
                        rules.push(parse_rule(&msg.payload)?);
                    }
                    _ => {}
                }
            }
        }
    }
}

/// The rule an `NFT_MSG_NEWRULE` message of a rule dump describes (its payload, from the
/// `nfgenmsg` on): chain, handle and our comment.
pub fn parse_rule(payload: &[u8]) -> Result<ListedRule, NftError> {
    let body = payload
        .get(4..)
        .ok_or_else(|| NftError::Malformed("short rule message".into()))?;
    let (mut chain, mut handle, mut comment) = (None, None, None);
    for (kind, value) in attrs(body) {
        match kind {
            NFTA_RULE_CHAIN => {
                let v = value.strip_suffix(&[0]).unwrap_or(value);
                chain = Some(String::from_utf8_lossy(v).into_owned());
            }
            NFTA_RULE_HANDLE => {
                let b: [u8; 8] = value
                    .try_into()
                    .map_err(|_| NftError::Malformed("rule handle is not 8 bytes".into()))?;
                handle = Some(u64::from_be_bytes(b));
            }
            NFTA_RULE_USERDATA => comment = comment_of_udata(value),
            _ => {}
        }
    }
    match (chain, handle) {
        (Some(chain), Some(handle)) => Ok(ListedRule {
            chain,
            handle,
            comment,
        }),
        _ => Err(NftError::Malformed(
            "a listed rule without chain or handle".into(),
        )),
    }
}

impl fmt::Display for ListedRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} handle {}", self.chain, self.handle)
    }
}

#[cfg(test)]
mod tests;
