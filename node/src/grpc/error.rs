//! The one place an [`ApiError`] becomes a `tonic::Status`.

use tonic::{Code, Status};

use crate::error::ApiError;

/// Metadata key carrying the leader's id on `Unavailable`.
pub const LEADER_ID: &str = "x-leader-id";
/// Metadata key carrying the leader's gRPC address on `Unavailable`.
pub const LEADER_ADDR: &str = "x-leader-addr";

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        let msg = e.to_string();
        match e {
            ApiError::InvalidArgument(_) => Status::invalid_argument(msg),
            ApiError::NotFound(_) => Status::not_found(msg),
            ApiError::AlreadyExists(_) => Status::already_exists(msg),
            ApiError::FailedPrecondition(_) => Status::failed_precondition(msg),
            ApiError::ResourceExhausted(_) => Status::resource_exhausted(msg),
            ApiError::DeadlineExceeded(_) => Status::deadline_exceeded(msg),
            ApiError::Internal(_) | ApiError::RaftStopped(_) => Status::internal(msg),
            ApiError::Unavailable { leader, .. } => {
                let mut status = Status::new(Code::Unavailable, msg);
                if let Some((id, addr)) = leader {
                    let md = status.metadata_mut();
                    if let Ok(v) = id.to_string().parse() {
                        md.insert(LEADER_ID, v);
                    }
                    if let Ok(v) = addr.parse() {
                        md.insert(LEADER_ADDR, v);
                    }
                }
                status
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_carries_the_leader_hint() {
        let s: Status = ApiError::Unavailable {
            message: "not the leader".into(),
            leader: Some((3, "127.0.0.1:7003".into())),
        }
        .into();
        assert_eq!(s.code(), Code::Unavailable);
        assert_eq!(s.metadata().get(LEADER_ID).unwrap(), "3");
        assert_eq!(s.metadata().get(LEADER_ADDR).unwrap(), "127.0.0.1:7003");
    }

    #[test]
    fn apply_errors_map_to_their_codes() {
        use switchboard_storage::state::ApplyError;
        let code = |e: ApplyError| Status::from(ApiError::from(e)).code();
        assert_eq!(code(ApplyError::Invalid("x".into())), Code::InvalidArgument);
        assert_eq!(code(ApplyError::NotFound("x".into())), Code::NotFound);
        assert_eq!(
            code(ApplyError::VersionConflict { call_id: "c".into(), expected: 1, actual: 2 }),
            Code::FailedPrecondition
        );
        assert_eq!(code(ApplyError::NoCapacity("x".into())), Code::ResourceExhausted);
        assert_eq!(code(ApplyError::AlreadyExists("x".into())), Code::AlreadyExists);
    }
}
