//! [`ApiError`]: every way a client request can fail, independent of the
//! transport. `grpc/error.rs` turns it into a `tonic::Status` (the one place
//! that does); the SIP front end will map it to response codes the same way.

use serde::{Deserialize, Serialize};
use switchboard_storage::state::{ApplyError, NodeId};

/// A failed client request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// The thing named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The thing to create exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// A compare-and-set conflict or a state that forbids the request.
    #[error("{0}")]
    FailedPrecondition(String),
    /// No node or gateway has room.
    #[error("{0}")]
    ResourceExhausted(String),
    /// No leader is known or reachable now; retry, at the leader if a hint is given.
    /// The request was *not* applied.
    #[error("{message}")]
    Unavailable {
        /// What went wrong.
        message: String,
        /// The leader, if known: (id, gRPC address).
        leader: Option<(NodeId, String)>,
    },
    /// The request did not finish in time; a write may or may not have been applied.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// A bug or a storage failure on the node.
    #[error("internal error: {0}")]
    Internal(String),
    /// Raft stopped (this node is shutting down or its storage failed)
    /// while a write was in flight: it may or may not have been committed,
    /// so to a client this is an internal error, not `Unavailable`. Its own
    /// variant so that callers whose requests are idempotent (AddNode) can
    /// tell it apart without reading the message.
    #[error("internal error: raft stopped: {0}")]
    RaftStopped(String),
}

impl ApiError {
    /// `Unavailable` without a leader hint.
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError::Unavailable { message: message.into(), leader: None }
    }
}

impl From<ApplyError> for ApiError {
    fn from(e: ApplyError) -> Self {
        let msg = e.to_string();
        match e {
            ApplyError::Invalid(_) => ApiError::InvalidArgument(msg),
            ApplyError::NotFound(_) => ApiError::NotFound(msg),
            ApplyError::AlreadyExists(_) => ApiError::AlreadyExists(msg),
            ApplyError::VersionConflict { .. }
            | ApplyError::Precondition(_)
            | ApplyError::OutOfOrder { .. } => ApiError::FailedPrecondition(msg),
            ApplyError::NoCapacity(_) => ApiError::ResourceExhausted(msg),
            // Only leader tasks propose fenced decisions; they decide again.
            ApplyError::StaleTerm { .. } => ApiError::unavailable(msg),
            ApplyError::RequestTooOld { .. } => ApiError::FailedPrecondition(msg),
        }
    }
}
