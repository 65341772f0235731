//! What each node's agent says over `<run-dir>/plexusd.sock`: who the
//! node is (name, public IP, backend, readiness) and its live BGP sessions.
//! An agent that does not answer is a warning, not an error.

use std::path::PathBuf;

use plexus_agent_api::{call, BgpStatus, Request, Status, DEFAULT_TIMEOUT, SOCKET_NAME};
use serde_json::Value;

/// One `--run-dir [NODE=]DIR`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunDir {
    pub node: Option<String>,
    pub dir: PathBuf,
}

/// One agent's answers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentView {
    /// The node: the name the operator gave, else the agent's own.
    pub node: String,
    pub run_dir: String,
    pub public_ip: Option<String>,
    pub overlay_subnet: Option<String>,
    pub backend: String,
    pub ready: bool,
    /// `None`: the agent runs no routed network (or did not answer).
    pub bgp: Option<BgpStatus>,
}

/// Ask one agent; `Err` is the warning to show.
pub fn ask(rd: &RunDir) -> Result<AgentView, String> {
    let sock = rd.dir.join(SOCKET_NAME);
    let st: Status = call(&sock, &Request::Status, DEFAULT_TIMEOUT)
        .map_err(|e| format!("agent at {}: {e}", rd.dir.display()))?;
    let text = |k: &str| st.rest.get(k).and_then(Value::as_str).map(str::to_string);
    let node = rd
        .node
        .clone()
        .or_else(|| text("node_name"))
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            format!(
                "agent at {} did not say its node name; give it as --run-dir NODE={}",
                rd.dir.display(),
                rd.dir.display()
            )
        })?;
    // An overlay agent answers BgpStatus with an error: no sessions, no warning.
    let bgp = call::<BgpStatus>(&sock, &Request::BgpStatus, DEFAULT_TIMEOUT).ok();
    Ok(AgentView {
        node,
        run_dir: rd.dir.display().to_string(),
        public_ip: text("public_ip"),
        overlay_subnet: text("subnet"),
        backend: text("backend").unwrap_or_default(),
        ready: st.ready,
        bgp,
    })
}
