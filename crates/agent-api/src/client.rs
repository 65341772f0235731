//! A blocking client: one request, one answer, within a deadline that
//! covers connecting too (the call runs on its own thread, so a full
//! listen backlog or a stuck agent cannot hold the caller past it).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use crate::proto::{AgentError, Answer, Request, MAX_LINE};

/// The socket's file name in the agent's run directory.
pub const SOCKET_NAME: &str = "plexusd.sock";

/// A CNI call must not hang on the agent: well under the runtime's own
/// timeouts, well over a block claim's store round trip.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a call got no usable answer.
#[derive(Debug)]
pub enum ClientError {
    /// No agent listens (no socket file, connection refused).
    Unavailable {
        socket: PathBuf,
        source: std::io::Error,
    },
    /// No answer within the deadline.
    Timeout { socket: PathBuf, after: Duration },
    /// The agent closed the connection without answering (it was killed
    /// or restarted mid-request): whatever it did is undone or finished by
    /// the runtime's retry, as for an absent agent.
    Dropped { socket: PathBuf },
    /// The connection broke, or the answer is not one of ours.
    Protocol { socket: PathBuf, detail: String },
    /// The agent answered with an error.
    Agent(AgentError),
}

impl ClientError {
    /// The agent is not there or not answering: try again later.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            ClientError::Unavailable { .. }
                | ClientError::Timeout { .. }
                | ClientError::Dropped { .. }
        )
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Unavailable { socket, source } => write!(
                f,
                "the node agent (plexusd) is not reachable at {}: {source}",
                socket.display()
            ),
            ClientError::Timeout { socket, after } => write!(
                f,
                "the node agent (plexusd) at {} did not answer within {after:?}",
                socket.display()
            ),
            ClientError::Dropped { socket } => write!(
                f,
                "the node agent (plexusd) at {} closed the connection without answering (restarting?)",
                socket.display()
            ),
            ClientError::Protocol { socket, detail } => write!(
                f,
                "bad answer from the node agent at {}: {detail}",
                socket.display()
            ),
            ClientError::Agent(e) => write!(f, "the node agent refused: {}", e.error),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Unavailable { source, .. } => Some(source),
            ClientError::Agent(e) => Some(e),
            _ => None,
        }
    }
}

/// Sends `req` to the agent at `socket` and decodes its answer as `T`.
pub fn call<T: DeserializeOwned + Send + 'static>(
    socket: &Path,
    req: &Request,
    timeout: Duration,
) -> Result<T, ClientError> {
    let (tx, rx) = mpsc::channel();
    let (path, line) = (socket.to_path_buf(), req.to_line());
    let deadline = Instant::now() + timeout;
    std::thread::spawn(move || {
        // The receiver may be gone (timed out): nothing to tell then.
        let _ = tx.send(exchange::<T>(&path, &line, deadline));
    });
    match rx.recv_timeout(timeout) {
        Ok(r) => r,
        Err(_) => Err(ClientError::Timeout {
            socket: socket.to_path_buf(),
            after: timeout,
        }),
    }
}

fn exchange<T: DeserializeOwned>(
    socket: &Path,
    line: &[u8],
    deadline: Instant,
) -> Result<T, ClientError> {
    let proto = |detail: String| ClientError::Protocol {
        socket: socket.to_path_buf(),
        detail,
    };
    let mut s = UnixStream::connect(socket).map_err(|source| ClientError::Unavailable {
        socket: socket.to_path_buf(),
        source,
    })?;
    // A zero timeout means "none" to the socket: keep at least 1 ms.
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    let timed_out = |e: &std::io::Error| {
        matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        )
    };
    let io = |e: std::io::Error| {
        use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
        if timed_out(&e) {
            ClientError::Timeout {
                socket: socket.to_path_buf(),
                after: left,
            }
        } else if matches!(
            e.kind(),
            BrokenPipe | ConnectionReset | ConnectionAborted | UnexpectedEof
        ) {
            ClientError::Dropped {
                socket: socket.to_path_buf(),
            }
        } else {
            proto(e.to_string())
        }
    };
    s.set_read_timeout(Some(left)).map_err(io)?;
    s.set_write_timeout(Some(left)).map_err(io)?;
    s.write_all(line).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(s)
        .take(MAX_LINE)
        .read_line(&mut answer)
        .map_err(io)?;
    if answer.trim().is_empty() {
        return Err(ClientError::Dropped {
            socket: socket.to_path_buf(),
        });
    }
    match Answer::<T>::from_line(&answer) {
        Ok(Answer::Ok(v)) => Ok(v),
        Ok(Answer::Err(e)) => Err(ClientError::Agent(e)),
        Err(e) => Err(proto(format!("{e}: {}", answer.trim()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Released;
    use std::os::unix::net::UnixListener;

    fn release() -> Request {
        Request::Release {
            network: "n".into(),
            container_id: "c".into(),
            ifname: "eth0".into(),
        }
    }

    /// An agent stand-in answering one connection with `answer` (or with
    /// nothing, holding the connection open, when `None`).
    fn serve_once(answer: Option<&'static str>) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SOCKET_NAME);
        let l = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            let req: Request = serde_json::from_str(&line).unwrap();
            assert_eq!(req, release());
            match answer {
                Some(a) => (&s).write_all(a.as_bytes()).unwrap(),
                None => std::thread::sleep(Duration::from_secs(5)),
            }
        });
        (dir, path)
    }

    #[test]
    fn answers_and_errors() {
        let (_d, p) = serve_once(Some("{\"released\":1}\n"));
        let r: Released = call(&p, &release(), DEFAULT_TIMEOUT).unwrap();
        assert_eq!(r.released, 1);
        let (_d, p) = serve_once(Some("{\"error\":\"store down\",\"code\":11}\n"));
        match call::<Released>(&p, &release(), DEFAULT_TIMEOUT).unwrap_err() {
            ClientError::Agent(e) => {
                assert_eq!((e.error.as_str(), e.code), ("store down", Some(11)))
            }
            e => panic!("{e}"),
        }
        let (_d, p) = serve_once(Some("nonsense\n"));
        let e = call::<Released>(&p, &release(), DEFAULT_TIMEOUT).unwrap_err();
        assert!(matches!(e, ClientError::Protocol { .. }), "{e}");
        // The agent killed mid-request: try again later, as for no agent.
        let (_d, p) = serve_once(Some(""));
        let e = call::<Released>(&p, &release(), DEFAULT_TIMEOUT).unwrap_err();
        assert!(matches!(e, ClientError::Dropped { .. }), "{e}");
        assert!(e.is_unavailable(), "{e}");
        assert!(e.to_string().contains("without answering"), "{e}");
    }

    #[test]
    fn absent_agent_and_silent_agent() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(SOCKET_NAME);
        let e = call::<Released>(&p, &release(), DEFAULT_TIMEOUT).unwrap_err();
        assert!(e.is_unavailable(), "{e}");
        assert!(e.to_string().contains(&p.display().to_string()), "{e}");
        // A socket file nobody listens on: refused.
        drop(UnixListener::bind(&p).unwrap());
        let e = call::<Released>(&p, &release(), DEFAULT_TIMEOUT).unwrap_err();
        assert!(e.is_unavailable(), "{e}");
        let (_d, p) = serve_once(None);
        let e = call::<Released>(&p, &release(), Duration::from_millis(200)).unwrap_err();
        assert!(matches!(e, ClientError::Timeout { .. }), "{e}");
    }
}
