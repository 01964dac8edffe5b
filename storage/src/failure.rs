//! [`Failure`]: what goes wrong inside the log and state-machine stores,
//! before it is wrapped in openraft's `StorageError` (which keeps the
//! message and its source chain) or, at start-up, in [`OpenError`].

use tokio::task::JoinError;

use crate::codec::CodecError;
use crate::engine::{Engine, EngineError};
use crate::OpenError;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    /// The engine failed (I/O, sled).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A stored value does not decode.
    #[error("{what} is unreadable: {source}")]
    Codec {
        /// Which value.
        what: String,
        /// Why.
        #[source]
        source: CodecError,
    },
    /// Stored values decode but contradict each other.
    #[error("{0}")]
    Corrupt(String),
    /// The blocking task running the I/O failed.
    #[error("storage task failed: {0}")]
    Join(#[from] JoinError),
}

impl Failure {
    /// The start-up error for this failure in `engine`'s directory.
    pub(crate) fn into_open_error(self, engine: &dyn Engine) -> OpenError {
        match self {
            Failure::Engine(e) => OpenError::Engine(e),
            Failure::Codec { what, source } => OpenError::Corrupt { what, source },
            other => OpenError::Inconsistent {
                path: engine.path().to_path_buf(),
                detail: other.to_string(),
            },
        }
    }
}

/// Runs `f` on tokio's blocking pool (sled and fsync block the thread).
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, Failure>
where
    F: FnOnce() -> Result<T, Failure> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f).await?
}
