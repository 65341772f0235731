//! Byte-level encoding: netlink attributes, nfnetlink message headers, and
//! libnftnl's "udata" TLVs (where `nft` keeps comments).
//!
//! nf_tables integers are big-endian on the wire (NLA_BE32), unlike most
//! netlink families; strings are NUL-terminated.

/// NLA_F_NESTED: libmnl sets it on every nest, so we do too (the kernel
/// accepts both, and it keeps our bytes identical to `nft`'s).
const NLA_F_NESTED: u16 = 0x8000;
/// Attribute type bits (without NLA_F_NESTED / NLA_F_NET_BYTEORDER).
const NLA_TYPE_MASK: u16 = 0x3fff;

pub(crate) const NLMSG_HDRLEN: usize = 16;
/// struct nfgenmsg: family, version, res_id.
pub(crate) const NFGENMSG_LEN: usize = 4;

pub(crate) const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Appends one attribute (header + payload + padding).
pub(crate) fn put(buf: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(buf.len() + align4(len) - len, 0);
}

pub(crate) fn put_str(buf: &mut Vec<u8>, ty: u16, s: &str) {
    let mut v = Vec::with_capacity(s.len() + 1);
    v.extend_from_slice(s.as_bytes());
    v.push(0);
    put(buf, ty, &v);
}

pub(crate) fn put_be32(buf: &mut Vec<u8>, ty: u16, v: u32) {
    put(buf, ty, &v.to_be_bytes());
}

pub(crate) fn put_be64(buf: &mut Vec<u8>, ty: u16, v: u64) {
    put(buf, ty, &v.to_be_bytes());
}

/// A big-endian integer attribute payload (NLA_BE32 / NLA_BE64); `None`
/// if it has the wrong length.
pub(crate) fn get_be32(payload: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(payload.try_into().ok()?))
}

pub(crate) fn get_be64(payload: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(payload.try_into().ok()?))
}

/// Appends a nested attribute whose payload `f` writes.
pub(crate) fn nest(buf: &mut Vec<u8>, ty: u16, f: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]);
    f(buf);
    let len = (buf.len() - start) as u16;
    buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    buf[start + 2..start + 4].copy_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
}

/// Iterates over the attributes in `buf` as (type, payload); stops at the
/// first malformed one.
pub(crate) fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let ty = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > buf.len() {
            return None;
        }
        let payload = &buf[4..len];
        buf = &buf[align4(len).min(buf.len())..];
        Some((ty, payload))
    })
}

/// A NUL-terminated string attribute payload.
pub(crate) fn get_str(payload: &[u8]) -> String {
    let end = payload
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(payload.len());
    String::from_utf8_lossy(&payload[..end]).into_owned()
}

/// Appends one netlink message carrying a `struct nfgenmsg` and `body`.
pub(crate) fn put_msg(
    out: &mut Vec<u8>,
    ty: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
    body: &[u8],
) {
    let len = NLMSG_HDRLEN + NFGENMSG_LEN + body.len();
    out.extend_from_slice(&(len as u32).to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes()); // port ID: the kernel
    out.push(family);
    out.push(0); // NFNETLINK_V0
    out.extend_from_slice(&res_id.to_be_bytes());
    out.extend_from_slice(body);
    out.resize(out.len() + align4(len) - len, 0);
}

/// One received netlink message.
#[derive(Debug)]
pub(crate) struct RawMsg<'a> {
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
    /// Everything after the 16-byte header.
    pub payload: &'a [u8],
}

/// Splits a datagram into netlink messages; stops at the first malformed one.
pub(crate) fn messages(mut buf: &[u8]) -> impl Iterator<Item = RawMsg<'_>> {
    std::iter::from_fn(move || {
        if buf.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = u32::from_ne_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return None;
        }
        let m = RawMsg {
            ty: u16::from_ne_bytes([buf[4], buf[5]]),
            flags: u16::from_ne_bytes([buf[6], buf[7]]),
            seq: u32::from_ne_bytes(buf[8..12].try_into().expect("4 bytes")),
            payload: &buf[NLMSG_HDRLEN..len],
        };
        buf = &buf[align4(len).min(buf.len())..];
        Some(m)
    })
}

/// The comment's type in both NFTNL_UDATA_CHAIN_* and NFTNL_UDATA_RULE_*.
const UDATA_COMMENT: u8 = 0;
/// `nft` refuses longer comments (NFTNL_UDATA_COMMENT_MAXLEN).
pub const COMMENT_MAX: usize = 128;

/// Encodes `comment` the way libnftnl does for NFTA_CHAIN_USERDATA and
/// NFTA_RULE_USERDATA: a TLV with a one-byte type (COMMENT = 0), a one-byte
/// length and the NUL-terminated string. This is what makes `nft list`
/// print `comment "..."`; `nft` only shows it if the NUL is there.
pub fn encode_comment(comment: &str) -> Result<Vec<u8>, &'static str> {
    if comment.len() > COMMENT_MAX {
        return Err("longer than 128 bytes");
    }
    if comment.contains('\0') {
        return Err("contains a NUL byte");
    }
    let mut v = Vec::with_capacity(comment.len() + 3);
    v.push(UDATA_COMMENT);
    v.push((comment.len() + 1) as u8);
    v.extend_from_slice(comment.as_bytes());
    v.push(0);
    Ok(v)
}

/// The comment in a chain's or rule's userdata, if it has a well-formed one
/// (other TLVs, e.g. nft's rule "ebtables compat" flags, are skipped).
pub fn decode_comment(mut udata: &[u8]) -> Option<String> {
    while udata.len() >= 2 {
        let (ty, len) = (udata[0], udata[1] as usize);
        let value = udata.get(2..2 + len)?;
        if ty == UDATA_COMMENT && value.last() == Some(&0) {
            return Some(String::from_utf8_lossy(&value[..len - 1]).into_owned());
        }
        udata = &udata[2 + len..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_padding_and_nesting() {
        let mut b = Vec::new();
        put_str(&mut b, 1, "nat");
        assert_eq!(b, [8, 0, 1, 0, b'n', b'a', b't', 0]);
        let mut b = Vec::new();
        put(&mut b, 1, &[2]);
        assert_eq!(b, [5, 0, 1, 0, 2, 0, 0, 0]);
        let mut b = Vec::new();
        nest(&mut b, 4, |b| put_be32(b, 1, 4));
        assert_eq!(b, [12, 0, 4, 0x80, 8, 0, 1, 0, 0, 0, 0, 4]);
        let parsed: Vec<_> = attrs(&b).collect();
        assert_eq!(parsed, [(4u16, &[8u8, 0, 1, 0, 0, 0, 0, 4][..])]);
        // A truncated attribute ends the iteration instead of panicking.
        assert_eq!(attrs(&b[..6]).count(), 0);
    }

    #[test]
    fn comment_udata_round_trip() {
        let c = "plexus-bridge net: mynet, if: eth0, id: abc123";
        let u = encode_comment(c).unwrap();
        // What `nft --debug=netlink` prints as `userdata = { \x00/plexus-...\x00 }`.
        assert_eq!(u[0], 0);
        assert_eq!(u[1] as usize, c.len() + 1);
        assert_eq!(u[1], b'/');
        assert_eq!(*u.last().unwrap(), 0);
        assert_eq!(decode_comment(&u).as_deref(), Some(c));
        // Skips other TLVs; needs the NUL.
        let mut other = vec![1, 4, 0, 0, 0, 1];
        other.extend_from_slice(&u);
        assert_eq!(decode_comment(&other).as_deref(), Some(c));
        assert_eq!(decode_comment(&[0, 2, b'a', b'b']), None);
        assert_eq!(decode_comment(&[0, 9, b'a']), None);
        assert!(encode_comment(&"x".repeat(128)).is_ok());
        assert!(encode_comment(&"x".repeat(129)).is_err());
        assert!(encode_comment("a\0b").is_err());
    }

    #[test]
    fn message_framing() {
        let mut out = Vec::new();
        put_msg(&mut out, 0x10, 1, 7, 0, 10, &[]);
        // BATCH_BEGIN with res_id NFNL_SUBSYS_NFTABLES in network byte order.
        assert_eq!(
            out,
            [20, 0, 0, 0, 0x10, 0, 1, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10]
        );
        put_msg(&mut out, 0x11, 1, 8, 0, 10, &[1, 2, 3]);
        let m: Vec<_> = messages(&out).collect();
        assert_eq!(m.len(), 2);
        assert_eq!((m[1].ty, m[1].seq), (0x11, 8));
        assert_eq!(m[1].payload, [0, 0, 0, 10, 1, 2, 3]);
    }
}
