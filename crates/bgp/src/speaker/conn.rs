//! One TCP connection's tasks: a reader that frames messages and a writer
//! that sends what the core queues; outgoing connects; refusals.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use netgauze_bgp_pkt::notification::CeaseError;
use netgauze_bgp_pkt::BgpMessage;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{sockopt, Internal, Password};
use crate::codec;
use crate::fsm::ConnId;

pub(super) struct ConnHandle {
    pub(super) peer: IpAddr,
    pub(super) writer: mpsc::UnboundedSender<Vec<u8>>,
    pub(super) writer_task: Option<JoinHandle<()>>,
    pub(super) reader_task: JoinHandle<()>,
    pub(super) local: SocketAddr,
    /// Both sides announced 4-octet AS numbers (set by the OPENs).
    pub(super) asn4_sent: bool,
    pub(super) asn4_received: bool,
}

impl Drop for ConnHandle {
    /// The reader goes with the connection; the writer ends by itself once
    /// it has flushed what was queued (its channel is closed).
    fn drop(&mut self) {
        self.reader_task.abort();
    }
}

/// Start the reader and writer tasks of a new connection. The reader
/// frames messages (checking each header) and hands them to the core; the
/// writer sends what the core queues and closes once the queue is dropped.
pub(super) fn open(
    id: ConnId,
    peer: IpAddr,
    stream: TcpStream,
    tx: mpsc::UnboundedSender<Internal>,
) -> Option<ConnHandle> {
    let local = stream.local_addr().ok()?;
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let (wtx, mut wrx) = mpsc::unbounded_channel::<Vec<u8>>();
    let writer_task = tokio::spawn(async move {
        while let Some(buf) = wrx.recv().await {
            if wr.write_all(&buf).await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    });
    let reader_task = tokio::spawn(async move {
        loop {
            let mut header = [0u8; codec::HEADER_LEN];
            if rd.read_exact(&mut header).await.is_err() {
                let _ = tx.send(Internal::Closed(id));
                return;
            }
            let len = match codec::check_header(&header) {
                Ok(len) => len,
                Err(n) => {
                    let _ = tx.send(Internal::Malformed(id, n));
                    return;
                }
            };
            let mut frame = header.to_vec();
            frame.resize(len, 0);
            if rd
                .read_exact(&mut frame[codec::HEADER_LEN..])
                .await
                .is_err()
            {
                let _ = tx.send(Internal::Closed(id));
                return;
            }
            if tx.send(Internal::Frame(id, frame)).is_err() {
                return;
            }
        }
    });
    Some(ConnHandle {
        peer,
        writer: wtx,
        writer_task: Some(writer_task),
        reader_task,
        local,
        asn4_sent: false,
        asn4_received: false,
    })
}

/// How to open an outgoing connection.
pub(super) struct ConnectOptions {
    pub(super) to: SocketAddr,
    pub(super) source: Option<IpAddr>,
    pub(super) password: Option<Password>,
    pub(super) ttl_security: Option<u8>,
    /// Give up after this long.
    pub(super) limit: Duration,
}

/// Why a connect failed.
#[derive(Debug)]
pub(super) enum ConnectError {
    /// No answer in time (SYNs dropped: no route, a firewall, or a TCP MD5
    /// key the peer does not share).
    TimedOut,
    Io(std::io::Error),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::TimedOut => f.write_str("timed out"),
            ConnectError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Open an outgoing connection in the background; the outcome comes back
/// to the core as an [`Internal`] event.
pub(super) fn connect(peer: IpAddr, opts: ConnectOptions, tx: mpsc::UnboundedSender<Internal>) {
    tokio::spawn(async move {
        let to = opts.to;
        let attempt = async {
            let sock = if to.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            // Both before the SYN: it is signed, and leaves with TTL 255.
            if let Some(p) = &opts.password {
                sockopt::set_md5(sock.as_raw_fd(), to.is_ipv6(), to.ip(), Some(p.as_bytes()))?;
            }
            if let Some(hops) = opts.ttl_security {
                sockopt::set_ttl_security(sock.as_raw_fd(), to.ip(), hops)?;
            }
            if let Some(src) = opts.source {
                sock.bind(SocketAddr::new(src, 0))?;
            }
            sock.connect(to).await
        };
        let ev = match tokio::time::timeout(opts.limit, attempt).await {
            Ok(Ok(s)) => Internal::Connected(peer, s),
            Ok(Err(e)) => Internal::ConnectFailed(peer, ConnectError::Io(e)),
            Err(_) => Internal::ConnectFailed(peer, ConnectError::TimedOut),
        };
        let _ = tx.send(ev);
    });
}

/// Refuse a connection with Cease / Connection Rejected (RFC 4486).
pub(super) fn reject(mut stream: TcpStream) {
    let n = codec::cease(CeaseError::ConnectionRejected {
        value: Box::new([]),
    });
    let bytes = codec::encode(&BgpMessage::Notification(n));
    tokio::spawn(async move {
        let write = async {
            stream.write_all(&bytes).await?;
            stream.shutdown().await
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), write).await;
    });
}
