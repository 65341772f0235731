use std::path::PathBuf;

use plexus_cni::{CniError, ErrorCode};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{0}")]
    Config(String),
    #[error("no network named \"{name}\" in {dir}")]
    NetworkNotFound { name: String, dir: PathBuf },
    #[error("failed to find plugin \"{plugin}\" in path [{path}]")]
    PluginNotFound { plugin: String, path: String },
    #[error("plugin type \"{0}\" is not a plain name (it may not contain '/')")]
    InvalidPluginName(String),
    #[error("cannot run plugin {plugin}: {source}")]
    Spawn {
        plugin: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The plugin answered with an error (its CNI error JSON, or its stderr
    /// text wrapped in one).
    #[error("plugin {plugin} failed: {error}")]
    Plugin { plugin: String, error: CniError },
    #[error("plugin {plugin} returned an unreadable result: {msg}")]
    BadResult { plugin: String, msg: String },
    #[error("result cache {path}: {source}")]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The cache directory or its `results` is a symlink or not ours (5).
    #[error(transparent)]
    StateDir(#[from] plexus_base::files::StateDirError),
    #[error("{0}")]
    Unsupported(String),
    /// Several independent failures (DEL and GC keep going past errors).
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Multiple(Vec<RuntimeError>),
}

impl RuntimeError {
    /// The error as a CNI error for a plugin that wraps the runtime (meta,
    /// bridge delegating to IPAM): a delegate's own error is passed through
    /// unchanged so its code reaches the runtime.
    pub fn to_cni(&self) -> CniError {
        match self {
            RuntimeError::Plugin { error, .. } => error.clone(),
            RuntimeError::Config(m) => CniError::invalid_config(m.clone()),
            RuntimeError::NetworkNotFound { .. } => CniError::invalid_config(self.to_string()),
            RuntimeError::InvalidPluginName(_) => CniError::invalid_config(self.to_string()),
            RuntimeError::PluginNotFound { .. } | RuntimeError::Spawn { .. } => {
                CniError::invalid_config(self.to_string())
            }
            RuntimeError::BadResult { .. } => CniError::decode(self.to_string()),
            RuntimeError::Cache { .. } => CniError::io(self.to_string()),
            RuntimeError::StateDir(_) => CniError::io(self.to_string()),
            RuntimeError::Unsupported(m) => {
                CniError::new(ErrorCode::IncompatibleVersion, m.clone())
            }
            RuntimeError::Multiple(v) => match v.as_slice() {
                [one] => one.to_cni(),
                _ => CniError::plugin(
                    plexus_cni::error::plexus_codes::DELEGATE_FAILED,
                    self.to_string(),
                ),
            },
        }
    }

    /// Fold a list of errors into one, or nothing.
    pub fn collect(mut errs: Vec<RuntimeError>) -> Result<(), RuntimeError> {
        match errs.len() {
            0 => Ok(()),
            1 => Err(errs.remove(0)),
            _ => Err(RuntimeError::Multiple(errs)),
        }
    }
}
