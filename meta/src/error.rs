//! The meta plugin's errors and how each maps to a CNI error code.

use plexus_cni::error::plexus_codes;
use plexus_cni::{CniError, ErrorCode};
use plexus_runtime::RuntimeError;

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// The plexus entry itself is wrong (code 7).
    #[error("invalid plexus configuration: {0}")]
    Config(String),
    /// The pod's network selection annotation is wrong (code 7).
    #[error("invalid pod annotation {key}: {msg}")]
    Annotation { key: &'static str, msg: String },
    /// A selected network cannot be resolved or is not allowed (code 7).
    #[error("{0}")]
    Selection(String),
    /// The readiness indicator file is missing (code 11).
    #[error("the default network is not ready: readiness indicator file {0} does not exist")]
    NotReady(String),
    /// Where pods or NADs come from failed (code 11: try again later).
    #[error("{0}")]
    Source(String),
    /// ADD for a container and interface that are already attached
    /// (code 7: the runtime must DEL first).
    #[error("{0}")]
    AlreadyAttached(String),
    /// Another call on the same attachment is still running (code 11).
    #[error("{0}")]
    Busy(String),
    /// A delegate failed; its own CNI error is passed through.
    #[error("network \"{network}\" on {ifname}: {source}")]
    Delegate {
        network: String,
        ifname: String,
        #[source]
        source: Box<RuntimeError>,
    },
    /// Several independent failures (DEL keeps going).
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Multiple(Vec<MetaError>),
    /// The plan/status cache cannot be written (code 5).
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// cacheDir or a state directory under it is a symlink or not ours
    /// (code 5).
    #[error(transparent)]
    StateDir(#[from] plexus_base::files::StateDirError),
    /// The Kubernetes API failed or refused: code 11 when `transient`
    /// (unreachable, timeout, 429, 5xx), else code 7.
    #[error("{msg}")]
    Kube { msg: String, transient: bool },
    /// Network policy is on and plexusd did not confirm the pod's rules
    /// (code 11: the pod must not run open).
    #[error("{0}")]
    Policy(String),
    /// Moving the default route failed (code 100).
    #[error("default route: {0}")]
    Route(String),
}

impl MetaError {
    pub fn to_cni(&self) -> CniError {
        match self {
            MetaError::Config(_)
            | MetaError::Annotation { .. }
            | MetaError::Selection(_)
            | MetaError::AlreadyAttached(_) => CniError::invalid_config(self.to_string()),
            MetaError::Kube {
                transient: true, ..
            } => CniError::new(ErrorCode::TryAgainLater, self.to_string()),
            MetaError::Kube { .. } => CniError::invalid_config(self.to_string()),
            MetaError::NotReady(_)
            | MetaError::Source(_)
            | MetaError::Busy(_)
            | MetaError::Policy(_) => CniError::new(ErrorCode::TryAgainLater, self.to_string()),
            MetaError::Delegate { source, .. } => {
                // Keep the delegate's code, but say which network failed.
                let inner = source.to_cni();
                CniError {
                    msg: self.to_string(),
                    ..inner
                }
            }
            MetaError::Multiple(v) => match v.as_slice() {
                [one] => one.to_cni(),
                _ => CniError::plugin(plexus_codes::DELEGATE_FAILED, self.to_string()),
            },
            MetaError::Io { .. } | MetaError::StateDir(_) => CniError::io(self.to_string()),
            MetaError::Route(_) => CniError::kernel(self.to_string()),
        }
    }

    pub fn collect(mut errs: Vec<MetaError>) -> Result<(), MetaError> {
        match errs.len() {
            0 => Ok(()),
            1 => Err(errs.remove(0)),
            _ => Err(MetaError::Multiple(errs)),
        }
    }
}

impl From<MetaError> for CniError {
    fn from(e: MetaError) -> Self {
        e.to_cni()
    }
}
