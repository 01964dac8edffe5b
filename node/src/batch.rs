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
//!
//! Every proposal is bounded by the write timeout: openraft answers a
//! `client_write` only when the entry is applied or truncated, and not at
//! all when a snapshot install purges it, so an unbounded wait would hold
//! its in-flight slot forever (`max_inflight` such entries and the node
//! never proposed again). A write whose caller has gone (timed out,
//! cancelled) while it was queued is dropped, not proposed: proposing it
//! later could land a timed-out Register after the same client's later
//! Unregister.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

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

/// openraft's answer to a proposal that did not commit.
type ProposeError = RaftError<NodeId, ClientWriteError<NodeId, openraft::BasicNode>>;

/// What the batcher needs from Raft: propose one entry and wait for its
/// index and outcome. A seam of our own so the unit tests below can hold,
/// lose and count proposals, which a real Raft does not let a test do on cue.
trait Propose: Clone + Send + Sync + 'static {
    fn propose(
        &self,
        proposal: Proposal,
    ) -> impl Future<Output = Result<(u64, Outcome), ProposeError>> + Send;
}

impl Propose for Raft {
    fn propose(
        &self,
        proposal: Proposal,
    ) -> impl Future<Output = Result<(u64, Outcome), ProposeError>> + Send {
        let raft = self.clone();
        async move { raft.client_write(proposal).await.map(|r| (r.log_id.index, r.data)) }
    }
}

/// Handle to the batching task.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<(Command, Reply)>,
}

/// The time the leader stamps on an entry (see `clock::Clock::stamp`).
pub type Stamp = Arc<dyn Fn() -> u64 + Send + Sync>;

/// How the batching task runs.
pub struct BatchConfig {
    /// This node's id.
    pub id: NodeId,
    /// Most writes in one entry.
    pub max_batch: usize,
    /// Most entries being committed at once.
    pub max_inflight: usize,
    /// Longest wait for one proposal to commit.
    pub timeout: Duration,
    /// The entry's time.
    pub stamp: Stamp,
}

impl Batcher {
    /// Start the batching task for `raft`; it ends when every handle is dropped.
    pub fn spawn(raft: Raft, config: BatchConfig) -> Batcher {
        Self::spawn_on(raft, config)
    }

    fn spawn_on<P: Propose>(raft: P, config: BatchConfig) -> Batcher {
        let (tx, rx) = mpsc::channel(config.max_batch * config.max_inflight * 2);
        tokio::spawn(run(raft, rx, config));
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

    /// Queue every command, in order, before waiting for any (so they can
    /// share an entry); each returned future is one command's answer.
    pub async fn submit_many(
        &self,
        commands: Vec<Command>,
    ) -> Vec<impl Future<Output = Result<Written, ApiError>>> {
        let mut pending = Vec::with_capacity(commands.len());
        for command in commands {
            let (reply, rx) = oneshot::channel();
            let queued = self.tx.send((command, reply)).await.is_ok();
            pending.push(async move {
                if !queued {
                    return Err(ApiError::unavailable("node is shutting down"));
                }
                rx.await.map_err(|_| ApiError::unavailable("node is shutting down"))?
            });
        }
        pending
    }
}

async fn run<P: Propose>(raft: P, mut rx: mpsc::Receiver<(Command, Reply)>, config: BatchConfig) {
    let config = Arc::new(config);
    let slots = Arc::new(Semaphore::new(config.max_inflight));
    while let Some(first) = rx.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < config.max_batch {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        // Writes whose caller stopped waiting (while they queued for a
        // slot) are not proposed: see the module header.
        batch.retain(|(_, reply)| !reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let raft = raft.clone();
        let config = Arc::clone(&config);
        tokio::spawn(async move {
            commit(&raft, &config, batch).await;
            drop(slot);
        });
    }
}

/// Propose one entry for `batch` and hand each writer its own outcome.
async fn commit<P: Propose>(raft: &P, config: &BatchConfig, batch: Vec<(Command, Reply)>) {
    let (commands, replies): (Vec<Command>, Vec<Reply>) = batch.into_iter().unzip();
    let single = commands.len() == 1;
    let command = if single {
        commands.into_iter().next().unwrap_or(Command::Batch(Vec::new()))
    } else {
        Command::Batch(commands)
    };
    let n = replies.len();
    let proposal = Proposal { at_ms: (config.stamp)(), command };
    let proposed = std::time::Instant::now();
    let written = tokio::time::timeout(config.timeout, raft.propose(proposal)).await;
    // Propose to applied on this leader: append, replication to a quorum,
    // commit and apply (the batcher's queue is not included).
    metrics::histogram!("switchboard_raft_commit_seconds").record(proposed.elapsed());
    metrics::histogram!("switchboard_raft_entry_writes").record(n as f64);
    match written {
        Ok(Ok((index, data))) => {
            let outcomes = match data {
                Outcome::Batch(outs) if !single => outs,
                other => vec![other],
            };
            if outcomes.len() != n {
                // apply() returns one outcome per batched command; anything
                // else is a bug, reported to every writer rather than hidden.
                let e = ApiError::Internal(format!("{n} writes got {} outcomes", outcomes.len()));
                return fail_all(replies, e);
            }
            for (r, outcome) in replies.into_iter().zip(outcomes) {
                let _ = r.send(Ok(Written { index, leader_id: config.id, outcome }));
            }
        }
        Ok(Err(e)) => fail_all(replies, write_error(e)),
        Err(_) => {
            let e = ApiError::DeadlineExceeded(format!(
                "entry not committed within {} ms; it may or may not take effect",
                config.timeout.as_millis()
            ));
            fail_all(replies, e)
        }
    }
}

/// Give every writer of a batch the same error.
fn fail_all(replies: Vec<Reply>, e: ApiError) {
    for r in replies {
        let _ = r.send(Err(e.clone()));
    }
}

/// Map openraft's write error to ours.
///
/// openraft answers `ForwardToLeader` either when the entry was never
/// appended (this node is not the leader) or when it was truncated by a new
/// leader (so it can never commit): either way nothing was applied, which is
/// what `Unavailable` promises, and the write may be retried at the leader.
pub fn write_error(e: ProposeError) -> ApiError {
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
        RaftError::Fatal(f) => ApiError::RaftStopped(f.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn raft_stopping_under_a_write_is_its_own_error() {
        let e = write_error(RaftError::Fatal(openraft::error::Fatal::Stopped));
        assert!(matches!(e, ApiError::RaftStopped(_)), "{e:?}");
        assert!(e.to_string().starts_with("internal error: raft stopped: "), "{e}");
        let status = tonic::Status::from(e);
        assert_eq!(status.code(), tonic::Code::Internal);
    }

    /// A Raft stand-in that records every proposal and answers each one
    /// only when the test says so (or never).
    #[derive(Clone, Default)]
    struct Held {
        proposed: Arc<Mutex<Vec<Command>>>,
        /// One sender per proposal, in order: send `true` to commit it.
        gates: Arc<Mutex<Vec<oneshot::Sender<bool>>>>,
    }

    impl Held {
        fn proposed(&self) -> Vec<Command> {
            self.proposed.lock().unwrap().clone()
        }

        /// Commit the `i`-th proposal.
        fn release(&self, i: usize) {
            let _ = self.take(i).send(true);
        }

        /// Never answer the `i`-th proposal.
        fn lose(&self, i: usize) {
            drop(self.take(i));
        }

        fn take(&self, i: usize) -> oneshot::Sender<bool> {
            let mut gates = self.gates.lock().unwrap();
            std::mem::replace(&mut gates[i], oneshot::channel().0)
        }
    }

    impl Propose for Held {
        fn propose(
            &self,
            proposal: Proposal,
        ) -> impl Future<Output = Result<(u64, Outcome), ProposeError>> + Send {
            let (tx, rx) = oneshot::channel();
            let index = {
                let mut proposed = self.proposed.lock().unwrap();
                proposed.push(proposal.command.clone());
                self.gates.lock().unwrap().push(tx);
                proposed.len() as u64
            };
            let outcome = match proposal.command {
                Command::Batch(cs) => Outcome::Batch(cs.iter().map(|_| Outcome::Nothing).collect()),
                _ => Outcome::Nothing,
            };
            async move {
                // A dropped gate (never released) models an entry openraft
                // never answers, as when a snapshot install purges it.
                match rx.await {
                    Ok(true) => Ok((index, outcome)),
                    _ => std::future::pending().await,
                }
            }
        }
    }

    fn command(number: &str) -> Command {
        Command::Unregister { number: number.into(), device_id: None, generation: None }
    }

    fn config(timeout_ms: u64) -> BatchConfig {
        BatchConfig {
            id: 1,
            max_batch: 16,
            max_inflight: 1,
            timeout: Duration::from_millis(timeout_ms),
            stamp: Arc::new(|| 0),
        }
    }

    /// Submit a write from its own task; the handle gives its answer.
    fn submit_later(
        batcher: &Batcher,
        number: &str,
    ) -> tokio::task::JoinHandle<Result<Written, ApiError>> {
        let (b, c) = (batcher.clone(), command(number));
        tokio::spawn(async move { b.submit(c).await })
    }

    async fn until(what: &str, mut f: impl FnMut() -> bool) {
        for _ in 0..500 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("timed out waiting for {what}");
    }

    /// Issue 8 item 3: a write whose caller gave up while it waited for an
    /// in-flight slot must never be proposed (else a timed-out Register
    /// could land after the same client's later Unregister).
    #[tokio::test]
    async fn a_write_whose_caller_left_while_queued_is_never_proposed() {
        let raft = Held::default();
        let batcher = Batcher::spawn_on(raft.clone(), config(60_000));
        let first = submit_later(&batcher, "A");
        until("the first proposal", || raft.proposed().len() == 1).await;
        // The only slot is taken: B queues, and its caller leaves.
        let gone = tokio::time::timeout(Duration::from_millis(50), batcher.submit(command("B")));
        assert!(gone.await.is_err(), "B cannot have been answered: the slot is held");
        let third = submit_later(&batcher, "C");
        tokio::time::sleep(Duration::from_millis(20)).await;
        raft.release(0);
        assert_eq!(first.await.unwrap().unwrap().index, 1);
        until("the second proposal", || raft.proposed().len() == 2).await;
        raft.release(1);
        let c = third.await.unwrap().unwrap();
        assert_eq!(c.index, 2);
        assert_eq!(raft.proposed(), vec![command("A"), command("C")], "B must not be proposed");
    }

    /// Issue 8 item 3: an entry that is never answered (a snapshot install
    /// purged it) times out, tells its writer so, and frees its slot.
    #[tokio::test]
    async fn an_unanswered_proposal_times_out_and_frees_its_slot() {
        let raft = Held::default();
        let batcher = Batcher::spawn_on(raft.clone(), config(100));
        let lost = submit_later(&batcher, "lost");
        until("the first proposal", || raft.proposed().len() == 1).await;
        raft.lose(0);
        let err = tokio::time::timeout(Duration::from_secs(5), lost)
            .await
            .expect("the writer is told within the write timeout")
            .unwrap()
            .unwrap_err();
        assert!(matches!(err, ApiError::DeadlineExceeded(_)), "{err:?}");
        let next = submit_later(&batcher, "next");
        until("the next proposal", || raft.proposed().len() == 2).await;
        raft.release(1);
        let w = tokio::time::timeout(Duration::from_secs(5), next).await;
        assert_eq!(w.expect("slot freed").unwrap().unwrap().index, 2);
    }
}
