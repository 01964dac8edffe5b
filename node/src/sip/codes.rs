//! The one place where an [`ApiError`] becomes a SIP status code, as
//! `grpc/error.rs` is for gRPC statuses.

use crate::error::ApiError;

/// The SIP status for a failed replicated write or read, and whether a
/// Retry-After belongs with it.
pub fn of(e: &ApiError) -> (u16, bool) {
    match e {
        ApiError::InvalidArgument(_) | ApiError::FailedPrecondition(_) => (400, false),
        ApiError::AlreadyExists(_) => (400, false),
        ApiError::NotFound(_) => (404, false),
        // No room, no leader, or not committed in time: the client should
        // try again shortly (at this node or another).
        ApiError::ResourceExhausted(_)
        | ApiError::Unavailable { .. }
        | ApiError::DeadlineExceeded(_) => (503, true),
        ApiError::Internal(_) | ApiError::RaftStopped(_) => (500, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_a_code() {
        assert_eq!(of(&ApiError::unavailable("no leader")), (503, true));
        assert_eq!(of(&ApiError::DeadlineExceeded("slow".into())), (503, true));
        assert_eq!(of(&ApiError::FailedPrecondition("cseq".into())), (400, false));
        assert_eq!(of(&ApiError::Internal("disk".into())), (500, false));
        assert_eq!(of(&ApiError::RaftStopped("panicked".into())), (500, false));
        assert_eq!(of(&ApiError::NotFound("x".into())), (404, false));
    }
}
