//! Socket options the sessions need, set through libc: TCP MD5 signatures
//! (RFC 2385, `TCP_MD5SIG`), GTSM (RFC 5082: send with TTL 255, refuse
//! segments below 255 - hops + 1 with `IP_MINTTL` / `IPV6_MINHOPCOUNT`),
//! and the listening sockets themselves.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};

use tokio::net::{TcpListener, TcpSocket};

/// Longest TCP MD5 key the kernel takes.
pub const MD5_MAX_KEY: usize = 80;

/// `struct tcp_md5sig` from linux/tcp.h (not in the libc crate).
#[repr(C)]
struct TcpMd5Sig {
    addr: libc::sockaddr_storage,
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: libc::c_int,
    key: [u8; MD5_MAX_KEY],
}

fn setsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    let len = libc::socklen_t::try_from(std::mem::size_of::<T>())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `value` points to a live T of `len` bytes for the call; the
    // kernel copies it and keeps no pointer.
    let rc = unsafe { libc::setsockopt(fd, level, name, (value as *const T).cast(), len) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn int(fd: RawFd, level: libc::c_int, name: libc::c_int, v: libc::c_int) -> io::Result<()> {
    setsockopt(fd, level, name, &v)
}

/// `peer` as the kernel wants it in `tcpm_addr` for a socket of family
/// `v6_socket`: an IPv4 peer on an IPv6 socket as IPv4-mapped.
fn sockaddr(peer: IpAddr, v6_socket: bool) -> libc::sockaddr_storage {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match (peer, v6_socket) {
        (IpAddr::V4(a), false) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from(a).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in and
            // suitably aligned for it.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin) };
        }
        (ip, _) => {
            let v6 = match ip {
                IpAddr::V4(a) => a.to_ipv6_mapped(),
                IpAddr::V6(a) => a,
            };
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: 0,
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin6) };
        }
    }
    ss
}

/// Sign (or, with `key` None, stop signing) every segment to and from
/// `peer` on socket `fd` (a listener: its accepted connections inherit the
/// key; or a socket about to connect).
pub fn set_md5(fd: RawFd, v6_socket: bool, peer: IpAddr, key: Option<&[u8]>) -> io::Result<()> {
    let key = key.unwrap_or_default();
    if key.len() > MD5_MAX_KEY {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a TCP MD5 key holds at most {MD5_MAX_KEY} bytes"),
        ));
    }
    let mut sig = TcpMd5Sig {
        addr: sockaddr(peer, v6_socket),
        flags: 0,
        prefixlen: 0,
        keylen: key.len() as u16,
        ifindex: 0,
        key: [0; MD5_MAX_KEY],
    };
    sig.key[..key.len()].copy_from_slice(key);
    match setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_MD5SIG, &sig) {
        // Removing a key that was never set.
        Err(e) if key.is_empty() && e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        r => r,
    }
}

/// GTSM on a connection (or a socket about to connect) to `peer`, at most
/// `hops` away: our segments leave with TTL 255, the peer's must arrive
/// with at least 256 - hops.
pub fn set_ttl_security(fd: RawFd, peer: IpAddr, hops: u8) -> io::Result<()> {
    let min = 256 - libc::c_int::from(hops.max(1));
    match peer {
        IpAddr::V4(_) => {
            int(fd, libc::IPPROTO_IP, libc::IP_TTL, 255)?;
            int(fd, libc::IPPROTO_IP, libc::IP_MINTTL, min)
        }
        IpAddr::V6(_) => {
            int(fd, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, 255)?;
            int(fd, libc::IPPROTO_IPV6, libc::IPV6_MINHOPCOUNT, min)
        }
    }
}

/// Ready a listening socket for GTSM peers: its SYN-ACKs leave with TTL
/// 255 (a GTSM peer that connects to us accepts them), and it keeps each
/// SYN's headers ([`syn_ttl`]). The listener is shared with peers without
/// GTSM, so it cannot refuse low TTLs itself (IP_MINTTL on it would refuse
/// every such peer).
pub fn prepare_listener_for_gtsm(l: &Listener) -> io::Result<()> {
    let fd = l.socket.as_raw_fd();
    int(fd, libc::IPPROTO_IP, libc::IP_TTL, 255)?;
    if l.addr.is_ipv6() {
        int(fd, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, 255)?;
    }
    int(fd, libc::IPPROTO_TCP, libc::TCP_SAVE_SYN, 1)
}

/// The TTL (IPv4) or hop limit (IPv6) an accepted connection's SYN came
/// with, from the headers its listener saved; None when none were saved.
/// Checked before anything is read from the connection, this refuses a
/// far-away peer whose segments arrived before IP_MINTTL was set on the
/// accepted socket.
pub fn syn_ttl(fd: RawFd) -> io::Result<Option<u8>> {
    let mut buf = [0u8; 512];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: buf has `len` writable bytes; the kernel writes at most that
    // many and stores the length written in `len`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_SAVED_SYN,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let header = &buf[..(len as usize).min(buf.len())];
    Ok(match header.first().map(|b| b >> 4) {
        Some(4) => header.get(8).copied(),
        Some(6) => header.get(7).copied(),
        _ => None,
    })
}

/// One listening socket.
pub struct Listener {
    pub socket: TcpListener,
    /// Where it is bound (the port the kernel chose when 0 was asked).
    pub addr: SocketAddr,
    /// An IPv6 socket that takes no IPv4 connections.
    pub v6_only: bool,
}

impl Listener {
    /// Listen on `addr`. An IPv6 socket is IPv6-only when `v6_only` (so it
    /// can share the port with IPv4 listeners), else it takes IPv4
    /// connections too (as IPv4-mapped addresses).
    pub fn bind(addr: SocketAddr, v6_only: bool) -> io::Result<Listener> {
        let sock = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        sock.set_reuseaddr(true)?;
        let v6_only = addr.is_ipv6() && v6_only;
        if addr.is_ipv6() {
            int(
                sock.as_raw_fd(),
                libc::IPPROTO_IPV6,
                libc::IPV6_V6ONLY,
                libc::c_int::from(v6_only),
            )?;
        }
        sock.bind(addr)?;
        let socket = sock.listen(1024)?;
        let addr = socket.local_addr()?;
        Ok(Listener {
            socket,
            addr,
            v6_only,
        })
    }

    /// Whether connections from `peer` can arrive on this socket.
    pub fn serves(&self, peer: IpAddr) -> bool {
        match (self.addr, peer) {
            (SocketAddr::V4(_), IpAddr::V4(_)) | (SocketAddr::V6(_), IpAddr::V6(_)) => true,
            (SocketAddr::V6(a), IpAddr::V4(_)) => !self.v6_only && a.ip().is_unspecified(),
            (SocketAddr::V4(_), IpAddr::V6(_)) => false,
        }
    }

    pub fn set_md5(&self, peer: IpAddr, key: Option<&[u8]>) -> io::Result<()> {
        set_md5(self.socket.as_raw_fd(), self.addr.is_ipv6(), peer, key)
    }
}
