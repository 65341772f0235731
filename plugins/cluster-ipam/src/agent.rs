//! Calls to the node agent, and its failures as CNI errors: not there or
//! not answering is code 11 (try again later; nothing was allocated), the
//! agent's own refusal carries its code (100 exhausted, 102 requested
//! address taken, 7 bad range).

use std::path::Path;

use plexus_agent_api::{call, ClientError, Request, DEFAULT_TIMEOUT};
use plexus_cni::error::plexus_codes;
use plexus_cni::{CniError, ErrorCode};
use serde::de::DeserializeOwned;

/// One request to the agent at `socket`; `what` says what for in errors.
pub fn ask<T: DeserializeOwned + Send + 'static>(
    socket: &Path,
    req: &Request,
    what: &str,
) -> Result<T, CniError> {
    call(socket, req, DEFAULT_TIMEOUT).map_err(|e| agent_err(socket, e, what))
}

pub fn agent_err(socket: &Path, e: ClientError, what: &str) -> CniError {
    match e {
        e if e.is_unavailable() => {
            CniError::new(ErrorCode::TryAgainLater, format!("cannot {what}: {e}")).with_details(
                format!(
            "plexusd serves cluster IPAM on {}; start it (or set \"ipam.runDir\" to where it runs)",
            socket.display()
        ),
            )
        }
        // The agent's code as it is: spec codes (7, 11) as well as ours.
        ClientError::Agent(a) => CniError::new(
            ErrorCode::Plugin(a.code.unwrap_or(plexus_codes::DELEGATE_FAILED)),
            format!("cannot {what}: {}", a.error),
        ),
        e => CniError::plugin(plexus_codes::DELEGATE_FAILED, format!("cannot {what}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plexus_agent_api::AgentError;

    #[test]
    fn codes() {
        let s = Path::new("/run/plexus/plexusd.sock");
        let gone = ClientError::Unavailable {
            socket: s.into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        let e = agent_err(s, gone, "allocate");
        assert_eq!(e.code, 11);
        assert!(e.to_string().contains("/run/plexus/plexusd.sock"), "{e}");
        let full = ClientError::Agent(AgentError {
            error: "range 10.0.0.0/28 is exhausted".into(),
            code: Some(100),
        });
        let e = agent_err(s, full, "allocate");
        assert_eq!(e.code, 100);
        assert!(e.msg.contains("10.0.0.0/28 is exhausted"), "{e}");
        let broken = ClientError::Agent(AgentError {
            error: "damaged".into(),
            code: None,
        });
        assert_eq!(
            agent_err(s, broken, "x").code,
            plexus_codes::DELEGATE_FAILED
        );
    }
}
