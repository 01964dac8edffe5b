//! The client gRPC services (`switchboard.v1`), one file per service, plus
//! the one error mapping (`error`) and the wire conversions (`convert`).

pub mod calls;
pub mod cluster;
pub mod convert;
pub mod dialplan;
pub mod error;
pub mod events;
pub mod gateways;
pub mod registrar;
pub mod router;
pub mod tokens;
pub mod users;

use switchboard_storage::state::Outcome;
use tonic::Status;

/// A write came back with an outcome of another kind than its command's:
/// a bug, reported rather than hidden.
pub(crate) fn unexpected(outcome: &Outcome) -> Status {
    Status::internal(format!("unexpected outcome {outcome:?}"))
}
