//! [`Failure`]: what goes wrong inside the log and state-machine stores,
//! before it is wrapped in openraft's `StorageError` (which keeps the
//! message and its source chain) or, at start-up, in [`OpenError`].

use std::time::Duration;

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
    /// The I/O did not finish within the engine's time limit.
    #[error(
        "storage I/O did not finish within {} ms: the disk or file system is not \
         responding (the call is abandoned; what it wrote may or may not be durable)",
        limit.as_millis()
    )]
    Stuck {
        /// The limit that passed.
        limit: Duration,
    },
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

/// Runs `f` on tokio's blocking pool (sled and fsync block the thread),
/// waiting at most `limit` for it.
///
/// Why a limit: a disk that stops answering, or sled after an I/O error
/// (seen on the power-loss file system: a flush that never returned), would
/// otherwise hold the Raft log's append forever while the node looked
/// healthy. Past the limit the caller gets [`Failure::Stuck`], which
/// openraft treats as fatal: the node stops with that message instead of
/// hanging. The abandoned thread is left to finish or hang on its own; a
/// blocking call cannot be cancelled.
pub(crate) async fn blocking<T, F>(limit: Duration, f: F) -> Result<T, Failure>
where
    F: FnOnce() -> Result<T, Failure> + Send + 'static,
    T: Send + 'static,
{
    match tokio::time::timeout(limit, tokio::task::spawn_blocking(f)).await {
        Ok(joined) => joined?,
        Err(_) => Err(Failure::Stuck { limit }),
    }
}
