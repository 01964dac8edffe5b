//! Group commit: concurrent client writes reaching the leader share one Raft
//! entry (`Command::Batch`).
//!
//! In openraft 0.9 every append costs one fsync and the next append waits for
//! it, so the number of entries per second is bounded by the disk; the number
//! of *writes* per second is that times the batch size. The batcher takes the
//! first waiting write, waits for a free in-flight slot (at most
//! `max_inflight` entries are being committed at once), and only then drains
//! whatever else has queued up meanwhile, up to `max_batch`. So a lone write
//! goes out at once, and under load batches grow by themselves while the
//! previous entries are being fsynced — bounded in size by `max_batch` and in
//! latency by one commit round.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::error::{ClientWriteError, RaftError};
use switchboard_storage::state::{Command, NodeId, Outcome, Proposal};
use switchboard_storage::types::Raft;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::error::ApiError;

/// A committed write: its log index and what applying it did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Written {
    /// Log index of the entry.
    pub index: u64,
    /// Id of the leader that committed it.
    pub leader_id: NodeId,
    /// The command's own outcome (not the whole batch's).
    pub outcome: Outcome,
}

type Reply = oneshot::Sender<Result<Written, ApiError>>;

/// Handle to the batching task.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<(Command, Reply)>,
}

impl Batcher {
    /// Start the batching task for `raft`; it ends when every handle is dropped.
    pub fn spawn(raft: Raft, id: NodeId, max_batch: usize, max_inflight: usize) -> Batcher {
        let (tx, rx) = mpsc::channel(max_batch * max_inflight * 2);
        tokio::spawn(run(raft, id, rx, max_batch, max_inflight));
        Batcher { tx }
    }

    /// Propose `command` on this node, which should be the leader. A
    /// `Unavailable` error (with the leader hint) means it was not proposed.
    pub async fn submit(&self, command: Command) -> Result<Written, ApiError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send((command, reply))
            .await
            .map_err(|_| ApiError::unavailable("node is shutting down"))?;
        rx.await.map_err(|_| ApiError::unavailable("node is shutting down"))?
    }
}

/// The proposer's clock in ms since the Unix epoch (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

async fn run(
    raft: Raft,
    id: NodeId,
    mut rx: mpsc::Receiver<(Command, Reply)>,
    max_batch: usize,
    max_inflight: usize,
) {
    let slots = Arc::new(Semaphore::new(max_inflight));
    while let Some(first) = rx.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            commit(&raft, id, batch).await;
            drop(slot);
        });
    }
}

/// Propose one entry for `batch` and hand each writer its own outcome.
async fn commit(raft: &Raft, id: NodeId, batch: Vec<(Command, Reply)>) {
    let (commands, replies): (Vec<Command>, Vec<Reply>) = batch.into_iter().unzip();
    let single = commands.len() == 1;
    let command = if single {
        commands.into_iter().next().unwrap_or(Command::Batch(Vec::new()))
    } else {
        Command::Batch(commands)
    };
    let n = replies.len();
    match raft.client_write(Proposal { at_ms: now_ms(), command }).await {
        Ok(resp) => {
            let index = resp.log_id.index;
            let outcomes = match resp.data {
                Outcome::Batch(outs) if !single => outs,
                other => vec![other],
            };
            if outcomes.len() != n {
                // apply() returns one outcome per batched command; anything
                // else is a bug, reported to every writer rather than hidden.
                let e = ApiError::Internal(format!("{n} writes got {} outcomes", outcomes.len()));
                for r in replies {
                    let _ = r.send(Err(e.clone()));
                }
                return;
            }
            for (r, outcome) in replies.into_iter().zip(outcomes) {
                let _ = r.send(Ok(Written { index, leader_id: id, outcome }));
            }
        }
        Err(e) => {
            let e = write_error(e);
            for r in replies {
                let _ = r.send(Err(e.clone()));
            }
        }
    }
}

/// Map openraft's write error to ours.
///
/// openraft answers `ForwardToLeader` either when the entry was never
/// appended (this node is not the leader) or when it was truncated by a new
/// leader (so it can never commit): either way nothing was applied, which is
/// what `Unavailable` promises, and the write may be retried at the leader.
pub fn write_error(
    e: RaftError<NodeId, ClientWriteError<NodeId, openraft::BasicNode>>,
) -> ApiError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => ApiError::Unavailable {
            message: "not the leader".into(),
            leader: f.leader_id.zip(f.leader_node.map(|n| n.addr)),
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            ApiError::FailedPrecondition(e.to_string())
        }
        // The write may or may not have been committed: not "Unavailable",
        // which promises that nothing was applied.
        RaftError::Fatal(f) => ApiError::Internal(format!("raft stopped: {f}")),
    }
}
