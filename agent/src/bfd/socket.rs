//! The UDP sockets of single-hop BFD (RFC 5881) for one local address: a
//! receive socket on port 3784 that reports each datagram's TTL / Hop
//! Limit (GTSM is checked by `plexus_bfd::Sessions`), and a send socket on
//! a source port in 49152–65535 that sends with TTL 255. Both are created
//! on the calling thread, so they belong to its network namespace.

use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};

use tokio::io::Interest;
use tokio::net::UdpSocket;

/// RFC 5881 §4: Control packets go to this port.
pub const CONTROL_PORT: u16 = 3784;
/// RFC 5881 §4: the source port range.
pub const SOURCE_PORTS: std::ops::RangeInclusive<u16> = 49152..=65535;
/// DSCP CS6 (network control), as FRR marks BFD.
const TOS_CS6: libc::c_int = 0xc0;

fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` outlives the call and its size is passed with it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn into_tokio(s: std::net::UdpSocket) -> io::Result<UdpSocket> {
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s)
}

/// Bound to `local:3784`, reporting received TTLs.
pub fn open_rx(local: IpAddr) -> io::Result<UdpSocket> {
    let s = std::net::UdpSocket::bind(SocketAddr::new(local, CONTROL_PORT))?;
    let fd = s.as_raw_fd();
    match local {
        IpAddr::V4(_) => setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_RECVTTL, 1)?,
        IpAddr::V6(_) => setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT, 1)?,
    }
    into_tokio(s)
}

/// Bound to `local` and a source port in 49152–65535 (the first free one
/// from `start`), sending with TTL / Hop Limit 255.
pub fn open_tx(local: IpAddr, start: u16) -> io::Result<UdpSocket> {
    let span = u32::from(SOURCE_PORTS.end() - SOURCE_PORTS.start()) + 1;
    let first = u32::from(start.max(*SOURCE_PORTS.start()) - SOURCE_PORTS.start());
    let mut last_err = None;
    for i in 0..span {
        let port = *SOURCE_PORTS.start() + ((first + i) % span) as u16;
        match std::net::UdpSocket::bind(SocketAddr::new(local, port)) {
            Ok(s) => {
                let fd = s.as_raw_fd();
                match local {
                    IpAddr::V4(_) => {
                        s.set_ttl(u32::from(plexus_bfd::sessions::TTL))?;
                        setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_TOS, TOS_CS6)?;
                    }
                    IpAddr::V6(_) => {
                        let hops = libc::c_int::from(plexus_bfd::sessions::TTL);
                        setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, hops)?;
                        setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_TCLASS, TOS_CS6)?;
                    }
                }
                return into_tokio(s);
            }
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => last_err = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::from(io::ErrorKind::AddrInUse)))
}

/// One received datagram's length, source and TTL / Hop Limit (None if
/// the kernel gave none, which the caller treats as not 255).
pub async fn recv_with_ttl(
    s: &UdpSocket,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<u8>)> {
    let fd = s.as_raw_fd();
    s.async_io(Interest::READABLE, || recvmsg_ttl(fd, buf))
        .await
}

fn recvmsg_ttl(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<u8>)> {
    // SAFETY: all-zero is a valid sockaddr_storage and msghdr.
    let mut addr: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // u64s keep the control buffer aligned for cmsghdr.
    let mut control = [0u64; 16];
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_name = (&mut addr as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = mem::size_of_val(&control);
    // SAFETY: msg points at live buffers of the sizes given.
    let n = unsafe { libc::recvmsg(fd, &mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut ttl = None;
    // SAFETY: the CMSG macros walk the control buffer the kernel filled,
    // within msg_controllen; the data is read unaligned.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let h = &*c;
            let is_ttl = (h.cmsg_level == libc::IPPROTO_IP && h.cmsg_type == libc::IP_TTL)
                || (h.cmsg_level == libc::IPPROTO_IPV6 && h.cmsg_type == libc::IPV6_HOPLIMIT);
            if is_ttl {
                let v = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                ttl = u8::try_from(v).ok();
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    let src = sockaddr_to_std(&addr)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "datagram from no address"))?;
    Ok((n as usize, src, ttl))
}

fn sockaddr_to_std(a: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(a.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says it is a sockaddr_in, which fits.
            let sin = unsafe { &*(a as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 =
                unsafe { &*(a as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}
