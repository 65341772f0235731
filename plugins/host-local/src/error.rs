//! The library's errors and the CNI code each one maps to.

use plexus_cni::error::plexus_codes;
use plexus_cni::{CniError, ErrorCode};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The network configuration is wrong (CNI code 7).
    #[error("{0}")]
    Config(String),
    /// `CNI_ARGS` is wrong (CNI code 4).
    #[error("{0}")]
    Args(String),
    /// A requested address cannot be honoured because the request itself is
    /// invalid: outside every range, the gateway, or two in one range set (7).
    #[error("{0}")]
    BadRequest(String),
    /// The address space is exhausted, a requested address is taken, or the
    /// attachment already has an address (102).
    #[error("{0}")]
    Unavailable(String),
    /// CHECK found no allocation for the attachment (3).
    #[error("{0}")]
    NotAllocated(String),
    /// STATUS: some range set has no free address left (50).
    #[error("{0}")]
    NoAddressesLeft(String),
    /// dataDir or the network's directory is a symlink or not ours (5).
    #[error(transparent)]
    StateDir(#[from] plexus_base::files::StateDirError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub fn code(&self) -> u32 {
        let c = match self {
            Error::Config(_) | Error::BadRequest(_) => ErrorCode::InvalidConfig,
            Error::Args(_) => ErrorCode::InvalidEnvironment,
            Error::Unavailable(_) => ErrorCode::Plugin(plexus_codes::ADDRESS_UNAVAILABLE),
            Error::NotAllocated(_) => ErrorCode::UnknownContainer,
            Error::NoAddressesLeft(_) => ErrorCode::PluginNotAvailable,
            Error::Io { .. } | Error::StateDir(_) => ErrorCode::Io,
        };
        c.code()
    }
}

impl From<Error> for CniError {
    fn from(e: Error) -> Self {
        let code = e.code();
        let msg = e.to_string();
        let mut err = CniError::new(ErrorCode::InvalidConfig, msg);
        err.code = code;
        err
    }
}
