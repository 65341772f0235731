use std::net::IpAddr;

#[derive(Debug, thiserror::Error)]
pub enum BgpError {
    #[error("invalid BGP configuration: {0}")]
    Config(String),
    #[error("cannot listen for BGP on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("peer {peer}: cannot set {what} on a socket: {source}")]
    SocketOption {
        peer: IpAddr,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("peer {0} is already configured")]
    PeerExists(IpAddr),
    #[error("no peer {0} is configured")]
    NoSuchPeer(IpAddr),
    #[error("the session with {0} is not established")]
    NotEstablished(IpAddr),
    #[error("peer {0}: {1}")]
    Unsupported(IpAddr, String),
    #[error("the BGP speaker has stopped")]
    Stopped,
}
