//! Deleting a link without waiting for the kernel to free it.
//!
//! RTM_DELLINK is handled synchronously in the sender's `sendmsg`. The kernel
//! unlists the device (it is gone from every listing, its name is free, its
//! addresses, routes and bridge port are removed) under the RTNL lock within
//! a millisecond or two, then, after dropping the lock, runs
//! `netdev_run_todo`: an `rcu_barrier()` and a wait for the last references
//! before freeing the device. That tail is 15–20 ms on our machines for a
//! veth. Nothing in the network changes during it, yet a plugin that sends
//! the request itself pays it on every DEL (the reference plugins do).
//!
//! [`Netlink::delete_link_detached`] gives the request to a grandchild
//! process (a double fork, so no zombie is left to a long-running caller)
//! and returns as soon as the link is gone from its namespace *and* the
//! kernel has released the RTNL lock the deletion held. It checks the latter
//! with a no-op RTM_SETLINK on `lo`, which has to take the same lock. If the
//! kernel refuses the deletion, the grandchild reports the errno and the call
//! fails with it, as [`Netlink::delete_link`] would. The grandchild then
//! finishes waiting in the kernel and exits on its own.
//!
//! Between `fork` and `_exit` the children only make raw system calls on
//! buffers prepared beforehand: the parent may be multi-threaded.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use rtnetlink::packet_core::{NLMSG_ERROR, NLM_F_ACK, NLM_F_REQUEST};
use rtnetlink::packet_route::RouteNetlinkMessage;

use crate::error::{Error, Result};
use crate::handle::Netlink;
use crate::link::link_msg;

const RTM_DELLINK: u16 = 17;
/// The loopback device has this index in every namespace.
const LOOPBACK_IFINDEX: u32 = 1;
/// How long to wait for the kernel to unlist the link before giving up.
const TIMEOUT: Duration = Duration::from_secs(30);
/// How often to look whether the link is gone.
const POLL: Duration = Duration::from_micros(250);

/// The RTM_DELLINK request: nlmsghdr + ifinfomsg, 32 bytes.
fn dellink_request(index: u32) -> [u8; 32] {
    let mut m = [0u8; 32];
    m[0..4].copy_from_slice(&32u32.to_ne_bytes());
    m[4..6].copy_from_slice(&RTM_DELLINK.to_ne_bytes());
    m[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    m[8..12].copy_from_slice(&1u32.to_ne_bytes());
    // ifinfomsg: family 0, pad, type 0, then the index; flags/change 0.
    m[20..24].copy_from_slice(&index.to_ne_bytes());
    m
}

/// The errno in the kernel's answer to [`dellink_request`]: 0 for success,
/// `EPROTO` for anything that is not an NLMSG_ERROR.
fn ack_errno(reply: &[u8]) -> i32 {
    if reply.len() < 20 || u16::from_ne_bytes([reply[4], reply[5]]) != NLMSG_ERROR {
        return libc::EPROTO;
    }
    -i32::from_ne_bytes([reply[16], reply[17], reply[18], reply[19]])
}

impl Netlink {
    /// Deletes link `index` (both ends, for a veth) and returns once it is
    /// gone from this handle's namespace, leaving the kernel's final free of
    /// the device to a detached process (see the module docs). Fails like
    /// [`Netlink::delete_link`], with [`Error::is_not_found`] if there is no
    /// such link.
    pub async fn delete_link_detached(&self, index: u32) -> Result<()> {
        let what = self.ctx(format!("delete link #{index}"));
        // Without this, a missing link would race the deleter's ENODEV
        // against the "gone" check below and mostly read as success.
        if self.link_by_index(index).await?.is_none() {
            return Err(Error::Kernel {
                context: what,
                errno: libc::ENODEV,
                message: None,
            });
        }
        let report = spawn_deleter(self.netns_fd(), index).map_err(|e| Error::io(&what, e))?;
        let start = Instant::now();
        loop {
            match poll_report(&report, POLL) {
                Ok(Some(0)) => break,
                Ok(Some(errno)) => {
                    return Err(Error::Kernel {
                        context: what,
                        errno,
                        message: None,
                    })
                }
                Ok(None) => {}
                // The deleter died without answering; the lookup below tells
                // whether it got as far as the kernel.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    if self.link_by_index(index).await?.is_some() {
                        return Err(Error::protocol(
                            what,
                            "the deleting process exited without deleting the link",
                        ));
                    }
                    break;
                }
                Err(e) => return Err(Error::io(&what, e)),
            }
            if self.link_by_index(index).await?.is_none() {
                break;
            }
            if start.elapsed() > TIMEOUT {
                return Err(Error::protocol(
                    what,
                    format!("the kernel did not remove the link within {TIMEOUT:?}"),
                ));
            }
        }
        // Queues behind the deletion's hold on the RTNL lock, so everything
        // the kernel unlinks with the device is done when we return.
        self.ack(
            RouteNetlinkMessage::SetLink(link_msg(LOOPBACK_IFINDEX)),
            0,
            "wait for the RTNL lock (no-op set on lo)",
        )
        .await
    }
}

/// Waits up to `timeout` for the deleter's errno. `Ok(None)`: nothing yet.
fn poll_report(report: &OwnedFd, timeout: Duration) -> io::Result<Option<i32>> {
    let mut pfd = libc::pollfd {
        fd: report.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: timeout.subsec_nanos() as _,
    };
    // SAFETY: one valid pollfd, a valid timespec, no signal mask.
    let n = unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(None)
        } else {
            Err(e)
        };
    }
    if n == 0 {
        return Ok(None);
    }
    let mut buf = [0u8; 4];
    // SAFETY: reads at most 4 bytes into a 4-byte buffer.
    let r = unsafe { libc::recv(report.as_raw_fd(), buf.as_mut_ptr().cast(), 4, 0) };
    match r {
        4 => Ok(Some(i32::from_ne_bytes(buf))),
        0 => Err(io::ErrorKind::UnexpectedEof.into()),
        r if r < 0 => Err(io::Error::last_os_error()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "short report from the deleting process",
        )),
    }
}

/// Forks the deleter (child forks grandchild and exits at once; the child is
/// reaped here). Returns our end of the stream on which the grandchild
/// writes the kernel's errno.
fn spawn_deleter(netns: RawFd, index: u32) -> io::Result<OwnedFd> {
    let request = dellink_request(index);
    let mut pair = [0 as RawFd; 2];
    // SAFETY: pair has room for two fds.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            pair.as_mut_ptr(),
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socketpair just returned these two fds; we own them.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(pair[0]), OwnedFd::from_raw_fd(pair[1])) };
    // SAFETY: a NUL-terminated path.
    let devnull = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if devnull < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: open just returned this fd.
    let devnull = unsafe { OwnedFd::from_raw_fd(devnull) };

    // SAFETY: the child only calls async-signal-safe functions (fork,
    // dup2, close_range, setns, socket, send, recv, _exit) on data prepared
    // above, then exits without returning.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: see above; never returns.
        unsafe {
            if libc::fork() == 0 {
                deleter(&request, netns, theirs.as_raw_fd(), devnull.as_raw_fd())
            }
            libc::_exit(0)
        }
    }
    drop(theirs);
    let mut status = 0;
    // SAFETY: waits for the child we just forked.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(ours)
}

/// The grandchild: detach from the caller's stdio and fds, enter the
/// namespace, delete, report the errno, exit.
///
/// # Safety
/// Must only run in a freshly forked process.
unsafe fn deleter(request: &[u8; 32], netns: RawFd, report: RawFd, devnull: RawFd) -> ! {
    // SAFETY (whole body): raw system calls on fds inherited from the
    // parent and on stack buffers.
    unsafe {
        // The runtime waits for EOF on our stdout/stderr: let go of them,
        // and of every other fd (pipes of a concurrent IPAM call included).
        for fd in 0..3 {
            libc::dup2(devnull, fd);
        }
        let mut keep = [netns, report];
        keep.sort_unstable();
        close_range(3, keep[0] - 1);
        close_range(keep[0] + 1, keep[1] - 1);
        close_range(keep[1] + 1, RawFd::MAX);

        let errno = 'work: {
            if libc::setns(netns, libc::CLONE_NEWNET) < 0 {
                break 'work *libc::__errno_location();
            }
            let s = libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            );
            if s < 0 || libc::send(s, request.as_ptr().cast(), request.len(), 0) < 0 {
                break 'work *libc::__errno_location();
            }
            let mut reply = [0u8; 1024];
            let n = libc::recv(s, reply.as_mut_ptr().cast(), reply.len(), 0);
            if n < 0 {
                break 'work *libc::__errno_location();
            }
            ack_errno(&reply[..n as usize])
        };
        let b = errno.to_ne_bytes();
        libc::send(report, b.as_ptr().cast(), 4, libc::MSG_NOSIGNAL);
        libc::_exit(0)
    }
}

/// close_range(2) for `first..=last`; a no-op for an empty range.
///
/// # Safety
/// Closes fds the caller may still reference.
unsafe fn close_range(first: RawFd, last: RawFd) {
    if first > last {
        return;
    }
    // SAFETY: the caller owns the decision to close these fds.
    unsafe {
        if libc::syscall(libc::SYS_close_range, first as u32, last as u32, 0u32) < 0 {
            // Kernels before 5.9: close what an ordinary process can have.
            for fd in first..=last.min(4095) {
                libc::close(fd);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_layout() {
        let m = dellink_request(0x0102_0304);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 32);
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), RTM_DELLINK);
        assert_eq!(u16::from_ne_bytes([m[6], m[7]]), NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(
            u32::from_ne_bytes(m[20..24].try_into().unwrap()),
            0x0102_0304
        );
        assert_eq!(&m[16..20], &[0, 0, 0, 0]);
        assert_eq!(&m[24..32], &[0; 8]);
    }

    #[test]
    fn ack_parsing() {
        let mut r = [0u8; 36];
        r[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        r[16..20].copy_from_slice(&(-libc::ENODEV).to_ne_bytes());
        assert_eq!(ack_errno(&r), libc::ENODEV);
        r[16..20].copy_from_slice(&0i32.to_ne_bytes());
        assert_eq!(ack_errno(&r), 0);
        assert_eq!(ack_errno(&r[..10]), libc::EPROTO);
        r[4..6].copy_from_slice(&16u16.to_ne_bytes());
        assert_eq!(ack_errno(&r), libc::EPROTO);
    }
}
