//! A Raft core that stopped by itself, and what the node does about it.
//!
//! openraft stops its core for good on a fatal error — a storage call that
//! failed (an fsync returning `EIO`, an entry that does not decode) or a
//! panic — and never restarts it. The rest of the node would carry on: it
//! answered LOCAL reads from the frozen state, reported SERVING and answered
//! the leader's liveness pings, so the cluster never declared it down and
//! its clients read ever staler data.
//!
//! Owns:
//! - [`cause`]: whether Raft has stopped, and why (openraft's metrics);
//! - [`refuse_if_stopped`]: the one answer every read, write, ping and watch
//!   gets from then on, `UNAVAILABLE` "raft stopped: <cause>";
//! - [`serve_until_raft_stops`]: how `run` reacts — log the cause at error
//!   level, report NOT_SERVING for every health service, keep refusing for
//!   [`REFUSING_FOR`] so that probes and clients learn why, then stop the
//!   server (waiting at most [`CLOSE_WAIT`] for open streams) so that `run`
//!   returns [`crate::RunError::RaftStopped`] and `switchboard serve` exits
//!   non-zero with the cause.
//!
//! Does not own restarting: a disk that failed an fsync needs an operator
//! (or a supervisor's policy) to look at it first.

use std::future::Future;
use std::time::Duration;

use openraft::error::Fatal;
use switchboard_storage::types::Raft;
use tokio::sync::oneshot;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::error::ApiError;

/// How long a node whose Raft stopped keeps answering (NOT_SERVING,
/// UNAVAILABLE) before it stops its server.
pub const REFUSING_FOR: Duration = Duration::from_secs(3);

/// How long the server may then take to close; streams that stay open
/// (a health or event watch) are not waited for any longer.
pub const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Why Raft has stopped, or `None` while it runs. Allocates only once stopped.
pub fn cause(raft: &Raft) -> Option<String> {
    let metrics = raft.metrics();
    let state = metrics.borrow().running_state.clone();
    match state {
        // The core records its error before it ends; a core task that ended
        // without one (its metrics sender is gone) panicked.
        Ok(()) => metrics.has_changed().is_err().then(|| "the raft core task ended".to_owned()),
        Err(Fatal::Stopped) => Some("the node is shutting down".to_owned()),
        Err(e) => Some(e.to_string()),
    }
}

/// `Ok` while Raft runs; afterwards the `Unavailable` error every request gets.
pub fn refuse_if_stopped(raft: &Raft) -> Result<(), ApiError> {
    match cause(raft) {
        None => Ok(()),
        Some(cause) => Err(ApiError::unavailable(format!("raft stopped: {cause}"))),
    }
}

/// Completes once Raft has stopped, with the cause.
pub async fn stopped(raft: &Raft) -> String {
    let mut metrics = raft.metrics();
    loop {
        if let Some(cause) = cause(raft) {
            return cause;
        }
        if metrics.changed().await.is_err() {
            return cause(raft).unwrap_or_else(|| "the raft core task ended".to_owned());
        }
    }
}

/// Drive `server` until it ends by itself (the node's shutdown) or Raft
/// stops. In the second case: log, turn every health status to
/// NOT_SERVING, go on serving refusals for [`REFUSING_FOR`], then send
/// `stop_server` (which `server`'s shutdown signal must listen to) and wait
/// at most [`CLOSE_WAIT`] for it. Returns the server's result and, if Raft
/// stopped, why.
pub async fn serve_until_raft_stops<S>(
    server: S,
    stop_server: oneshot::Sender<()>,
    raft: &Raft,
    health: &HealthReporter,
) -> (Result<(), tonic::transport::Error>, Option<String>)
where
    S: Future<Output = Result<(), tonic::transport::Error>>,
{
    tokio::pin!(server);
    let cause = tokio::select! {
        served = &mut server => return (served, None),
        cause = stopped(raft) => cause,
    };
    tracing::error!(
        cause = %cause,
        "raft stopped: refusing every request, stopping in {} ms",
        REFUSING_FOR.as_millis()
    );
    crate::health::set_all(health, ServingStatus::NotServing).await;
    tokio::select! {
        // Asked to shut down meanwhile.
        served = &mut server => return (served, Some(cause)),
        _ = tokio::time::sleep(REFUSING_FOR) => {}
    }
    let _ = stop_server.send(());
    match tokio::time::timeout(CLOSE_WAIT, &mut server).await {
        Ok(served) => (served, Some(cause)),
        Err(_) => {
            tracing::warn!(
                "connections still open {} ms after raft stopped; not waiting for them",
                CLOSE_WAIT.as_millis()
            );
            (Ok(()), Some(cause))
        }
    }
}
