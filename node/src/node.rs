//! [`Node`]: one Switchboard node's handle on its Raft instance, its applied
//! state and its peers — what every service (gRPC, SIP, leader tasks) uses
//! to write and to read at a chosen consistency.
//!
//! Writes may be made at any node: the leader batches them (see `batch`);
//! a follower forwards them to the leader over the node-to-node service and
//! relays the one answer. A forward is retried only when the leader answered
//! "not the leader" (the write was then certainly not applied), at most a few
//! times and within the write deadline.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, RaftError};
use switchboard_proto::v1::raft_client::RaftClient;
use switchboard_proto::v1::{PingRequest, PingResponse, ReadIndexRequest};
use switchboard_storage::sm_store::StateReader;
use switchboard_storage::state::{Command, NodeId, Outcome, State};
use switchboard_storage::types::Raft;
use tokio::time::Instant;

use crate::batch::{BatchConfig, Batcher, Written};
use crate::clock::Clock;
use crate::config::Config;
use crate::error::ApiError;
use crate::forward::{ForwardConfig, Forwarder};
use crate::raft::network::Peers;

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// This node's applied state.
    Local,
    /// Linearizable: read index through the leader, then wait to apply it.
    Linearizable,
}

/// The reply a leader sends to a forwarded write.
pub type ForwardReply = Result<Written, ApiError>;

/// Shared by every service of a node. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

struct Inner {
    id: NodeId,
    config: Arc<Config>,
    raft: Raft,
    reader: StateReader,
    batcher: Batcher,
    /// Sends this node's client writes to the leader when it is a follower.
    forwarder: Forwarder,
    peers: Peers,
    clock: Arc<Clock>,
    /// Set while this node hands leadership over (drain): it proposes nothing.
    stepping_down: AtomicBool,
    /// Set once this node has caught up with the cluster's commit index
    /// after start-up; LOCAL reads wait for it (see [`Node::catch_up`]).
    caught_up: AtomicBool,
    /// Read-index requests waiting for the next leadership round.
    reads: std::sync::Mutex<ReadRounds>,
    /// Becomes true when the node starts shutting down: requests that wait
    /// long (adding a node) end then instead of holding the shutdown up.
    stopping: tokio::sync::watch::Sender<bool>,
}

/// Read-index requests are coalesced: one leadership confirmation (a
/// heartbeat round to a quorum) answers every request that arrived before
/// the round started, instead of one round per read.
#[derive(Default)]
struct ReadRounds {
    /// Whether a driver task is running rounds.
    running: bool,
    /// Requests that arrived since the current round started; the next
    /// round answers them.
    waiting: Vec<tokio::sync::oneshot::Sender<Result<u64, ApiError>>>,
}

/// A follower keeps this many times `writes.max_inflight` forwarding RPCs
/// in flight: each one lasts a whole commit at the leader, so with as few
/// slots as the leader's batcher, writes queued at the follower for a free
/// slot (measured at 64 clients: 4.3 ms added to a 7.9 ms write).
const FORWARD_INFLIGHT_FACTOR: usize = 4;

/// Most attempts of one write (each after a "not the leader" answer).
const MAX_WRITE_ATTEMPTS: usize = 8;

impl Node {
    /// Assemble a node from its parts.
    pub fn new(config: Arc<Config>, raft: Raft, reader: StateReader, peers: Peers) -> Node {
        let clock = Arc::new(Clock::new(&config.advertise_addr(), config.data.clone()));
        let stamp = {
            let (clock, reader, raft) = (Arc::clone(&clock), reader.clone(), raft.clone());
            Arc::new(move || stamp(&clock, &reader, &raft))
        };
        let batcher = Batcher::spawn(
            raft.clone(),
            BatchConfig {
                id: config.id,
                max_batch: config.writes.max_batch,
                max_inflight: config.writes.max_inflight,
                timeout: config.write_timeout(),
                stamp,
            },
        );
        let forwarder = Forwarder::spawn(
            peers.clone(),
            ForwardConfig {
                max_batch: config.writes.max_batch,
                max_inflight: config.writes.max_inflight * FORWARD_INFLIGHT_FACTOR,
                timeout: config.write_timeout(),
            },
        );
        Node {
            inner: Arc::new(Inner {
                id: config.id,
                config,
                raft,
                reader,
                batcher,
                forwarder,
                peers,
                clock,
                stepping_down: AtomicBool::new(false),
                stopping: tokio::sync::watch::Sender::new(false),
                caught_up: AtomicBool::new(false),
                reads: std::sync::Mutex::default(),
            }),
        }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The channel cache to other nodes.
    pub fn peers(&self) -> &Peers {
        &self.inner.peers
    }

    /// Marks the node as shutting down (see [`Node::stopping`]).
    pub fn begin_stopping(&self) {
        self.inner.stopping.send_replace(true);
    }

    /// Completes once the node has started shutting down.
    pub async fn stopping(&self) {
        let mut rx = self.inner.stopping.subscribe();
        // The sender lives as long as the node (it is in `inner`).
        let _ = rx.wait_for(|stopping| *stopping).await;
    }

    /// Pings node `id` at `addr` over the Raft service: its answer, if it
    /// comes within `timeout` and from that node (an address now held by
    /// another node does not count). Used by the liveness checker, the
    /// status page and `Cluster.Status`.
    pub async fn ping(&self, id: NodeId, addr: &str, timeout: Duration) -> Option<PingResponse> {
        let channel = self.peers().channel(id, addr).ok()?;
        let mut req = tonic::Request::new(PingRequest { from: self.id() });
        req.set_timeout(timeout);
        let answer = tokio::time::timeout(timeout, RaftClient::new(channel).ping(req)).await;
        answer.ok()?.ok().map(|r| r.into_inner()).filter(|r| r.node_id == id)
    }

    /// The Raft instance.
    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    /// Wait until this node has applied the entry at `index` (a write it
    /// forwarded to the leader, say), for at most the write timeout, so a
    /// read that follows shows that write.
    pub async fn wait_applied(&self, index: u64) -> Result<(), ApiError> {
        let limit = self.config().write_timeout();
        self.inner
            .raft
            .wait(Some(limit))
            .applied_index_at_least(Some(index), "apply a write this node answers")
            .await
            .map_err(|e| ApiError::DeadlineExceeded(format!("waiting to apply {index}: {e}")))?;
        Ok(())
    }

    /// Read the applied state (no consistency check: see [`Node::read_barrier`]).
    pub fn read<R>(&self, f: impl FnOnce(&State, u64) -> R) -> R {
        self.inner.reader.read(|s, applied| f(s, applied.map_or(0, |l| l.index)))
    }

    /// What the last snapshot built on this node since it started cost.
    pub fn last_snapshot_built(&self) -> Option<switchboard_storage::sm_store::SnapshotStats> {
        self.inner.reader.last_snapshot_built()
    }

    /// The cluster's SIP nonce secret (the registrar mints and checks
    /// digest nonces with it), once the first leader has installed it.
    /// Every node holds the same one, so a nonce from any node is accepted
    /// at every other.
    pub fn sip_secret(&self) -> Option<[u8; 32]> {
        self.read(|s, _| s.sip_secret.map(|k| *k.bytes()))
    }

    /// This node's clocks.
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// The cluster's time as this node judges it: the replicated clock
    /// carried forward by local monotonic time (see `clock`). Reads judge
    /// expiry against this, never against the local wall clock.
    pub fn cluster_now(&self) -> u64 {
        self.inner.clock.cluster_now(self.inner.reader.clock())
    }

    /// The time this node would stamp on an entry now (see `Clock::stamp`).
    pub fn stamp_now(&self) -> u64 {
        stamp(&self.inner.clock, &self.inner.reader, &self.inner.raft)
    }

    /// The term this node leads in, if it is the leader now.
    pub fn leader_term(&self) -> Option<u64> {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        (m.state == openraft::ServerState::Leader && m.current_leader == Some(self.id()))
            .then_some(m.current_term)
    }

    /// Commit a decision this node took as the leader of `term` from its
    /// own view (liveness, probes, the expiry sweep, the policy, clock
    /// ticks). It is proposed here only — never forwarded to another
    /// leader, never retried elsewhere — and fenced by `term`: if this node
    /// was deposed meanwhile, the entry (if it commits at all) is refused
    /// by `apply` and changes nothing. The caller decides again at its next
    /// tick, from the new leader's view if that is where it runs.
    pub async fn decide(&self, term: u64, command: Command) -> Result<Written, ApiError> {
        if self.leader_term() != Some(term) {
            return Err(ApiError::unavailable(format!("no longer the leader of term {term}")));
        }
        let command = Command::Leader { term, command: Box::new(command) };
        switchboard_storage::state::validate(&command)?;
        let written = self.write_here(command).await?;
        match written.outcome {
            Outcome::Error(e) => Err(e.into()),
            _ => Ok(written),
        }
    }

    /// The current leader as this node knows it: (id, gRPC address).
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let m = self.inner.raft.metrics().borrow().clone();
        let id = m.current_leader?;
        let addr = m.membership_config.membership().get_node(&id).map(|n| n.addr.clone())?;
        Some((id, addr))
    }

    /// Commit `command` through the leader, wherever that is. A malformed
    /// command is refused here, before it reaches the log; an `Ok` carries
    /// the command's own outcome, which is never an error.
    pub async fn write(&self, command: Command) -> Result<Written, ApiError> {
        crate::fatal::refuse_if_stopped(&self.inner.raft)?;
        switchboard_storage::state::validate(&command)?;
        let mut written = self.write_any(command).await?;
        // A retried once-only request answers its first outcome.
        written.outcome = written.outcome.into_first();
        match written.outcome {
            Outcome::Error(e) => Err(e.into()),
            _ => Ok(written),
        }
    }

    async fn write_any(&self, command: Command) -> Result<Written, ApiError> {
        let deadline = Instant::now() + self.inner.config.write_timeout();
        let fut = self.write_until(command, deadline);
        match tokio::time::timeout_at(deadline, fut).await {
            Ok(r) => r,
            Err(_) => Err(ApiError::DeadlineExceeded(format!(
                "write not committed within {} ms; it may or may not take effect",
                self.inner.config.writes.timeout_ms
            ))),
        }
    }

    async fn write_until(&self, command: Command, deadline: Instant) -> Result<Written, ApiError> {
        let mut last = ApiError::unavailable("no leader elected yet");
        for attempt in 0..MAX_WRITE_ATTEMPTS {
            let leader = match self.leader() {
                Some(l) => l,
                None => match self.wait_for_leader(deadline).await {
                    Some(l) => l,
                    None => return Err(last),
                },
            };
            let started = Instant::now();
            let (result, path) = if leader.0 == self.id() {
                (self.write_here(command.clone()).await, "leader")
            } else {
                (self.forward(&leader, &command).await, "forwarded")
            };
            // One attempt as this node saw it: at the leader, the batcher's
            // queue and the commit; at a follower, the whole forward.
            metrics::histogram!("switchboard_write_seconds", "path" => path)
                .record(started.elapsed());
            match result {
                // Certainly not applied: try again once the cluster has
                // moved on (a new leader, typically after an election), or
                // after a short pause if this node still sees the same one.
                Err(e @ ApiError::Unavailable { .. }) => {
                    last = e;
                    let pause = Duration::from_millis(25 << attempt.min(4));
                    let _ = tokio::time::timeout(pause, self.leader_changed_from(leader.0)).await;
                }
                other => return other,
            }
        }
        Err(last)
    }

    /// Propose on this node without forwarding (the Forward handler's path).
    pub async fn write_here(&self, command: Command) -> ForwardReply {
        if self.inner.stepping_down.load(Ordering::Acquire) {
            return Err(ApiError::unavailable("leader is handing over leadership"));
        }
        let started = Instant::now();
        let written = self.inner.batcher.submit(command).await;
        // Every write the leader takes, its own clients' and forwarded ones:
        // the batcher's queue plus the commit.
        metrics::histogram!("switchboard_leader_write_seconds").record(started.elapsed());
        written
    }

    /// Propose a follower's batch of forwarded writes (the ForwardBatch
    /// handler's path): all are queued at the batcher before any is
    /// awaited, so they can share a log entry. One answer per command, in
    /// order.
    pub async fn write_here_many(&self, commands: Vec<Command>) -> Vec<ForwardReply> {
        if self.inner.stepping_down.load(Ordering::Acquire) {
            let e = ApiError::unavailable("leader is handing over leadership");
            return vec![Err(e); commands.len()];
        }
        let started = Instant::now();
        let pending = self.inner.batcher.submit_many(commands).await;
        let mut answers = Vec::with_capacity(pending.len());
        for p in pending {
            answers.push(p.await);
        }
        let elapsed = started.elapsed();
        for _ in &answers {
            metrics::histogram!("switchboard_leader_write_seconds").record(elapsed);
        }
        answers
    }

    /// Hand leadership to another node (drain). openraft 0.9 has no leader
    /// transfer, so the leader stops proposing, stops sending heartbeats and
    /// stops campaigning; the followers' election timers then elect one of
    /// them. Writes that arrive meanwhile are refused with `Unavailable` (so
    /// they are retried at the new leader). Everything is switched back on
    /// once another node leads, or after a few seconds if none does.
    pub async fn step_down(&self) -> Result<(), ApiError> {
        let raft = &self.inner.raft;
        self.inner.stepping_down.store(true, Ordering::Release);
        raft.runtime_config().elect(false);
        raft.runtime_config().heartbeat(false);
        let me = self.id();
        let handed_over = raft
            .wait(Some(Duration::from_secs(5)))
            .metrics(|m| m.current_leader.is_some_and(|l| l != me), "another leader")
            .await
            .is_ok();
        raft.runtime_config().heartbeat(true);
        raft.runtime_config().elect(true);
        self.inner.stepping_down.store(false, Ordering::Release);
        if handed_over {
            Ok(())
        } else {
            Err(ApiError::unavailable("no other node took over leadership within 5 s"))
        }
    }

    async fn forward(&self, leader: &(NodeId, String), command: &Command) -> ForwardReply {
        self.inner.forwarder.forward(leader, command.clone()).await
    }

    /// Waits until a leader is known and it is not `old` (returns at once
    /// when that is already so). Unbounded: callers put a timeout on it.
    pub async fn wait_leader_other_than(&self, old: Option<NodeId>) {
        self.wait_leader_until(|now| now.is_some() && now != old).await
    }

    /// Completes once the leader this node sees satisfies `done` (at once
    /// if it already does); never, once Raft has stopped.
    async fn wait_leader_until(&self, done: impl Fn(Option<NodeId>) -> bool) {
        let mut rx = self.inner.raft.metrics();
        loop {
            if done(rx.borrow_and_update().current_leader) {
                return;
            }
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    async fn wait_for_leader(&self, deadline: Instant) -> Option<(NodeId, String)> {
        let timeout = deadline.saturating_duration_since(Instant::now());
        let mut rx = self.inner.raft.metrics();
        let wait = async {
            loop {
                if let Some(l) = self.leader() {
                    return l;
                }
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.ok()
    }

    /// Whether a LOCAL read may be served now (the synchronous half of
    /// [`Node::read_barrier`], for callers that cannot wait: the SIP
    /// redirect server answers from local state in its receive loop).
    pub fn local_read_ok(&self) -> Result<(), ApiError> {
        crate::fatal::refuse_if_stopped(&self.inner.raft)?;
        self.joined()?;
        if crate::failpoint::stale_linearizable_reads()
            || self.inner.caught_up.load(Ordering::Acquire)
        {
            Ok(())
        } else {
            Err(ApiError::unavailable("catching up with the cluster after start-up"))
        }
    }

    /// Refuse reads at a node that has not joined a cluster.
    fn joined(&self) -> Result<(), ApiError> {
        // A node that has not joined a cluster (empty data directory, waiting
        // to be added) has no state to speak of: it must not answer "not
        // registered" for numbers it simply has not heard of yet.
        let joined = self
            .inner
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .next()
            .is_some();
        if joined {
            Ok(())
        } else {
            Err(ApiError::unavailable("this node has not joined a cluster yet"))
        }
    }

    /// Wait until a read at `consistency` may be served from the local state.
    pub async fn read_barrier(&self, consistency: Consistency) -> Result<(), ApiError> {
        if consistency == Consistency::Local {
            return self.local_read_ok();
        }
        crate::fatal::refuse_if_stopped(&self.inner.raft)?;
        self.joined()?;
        // The failpoint (tests only) makes every read a local one: the chaos
        // harness must then find stale reads.
        if crate::failpoint::stale_linearizable_reads() {
            return Ok(());
        }
        let deadline = Instant::now() + self.inner.config.write_timeout();
        let fut = async {
            // A read index is safe to ask for again, so when the leader
            // changes (or stops answering: a paused leader keeps its TCP
            // connections) the request moves to the new leader instead of
            // waiting for the old one until the deadline.
            let mut last = ApiError::unavailable("no leader elected yet");
            let index = loop {
                let leader = match self.leader() {
                    Some(l) => l,
                    None => self.wait_for_leader(deadline).await.ok_or(last)?,
                };
                let asked = async {
                    if leader.0 == self.id() {
                        self.read_index_here().await
                    } else {
                        self.read_index_at(&leader).await
                    }
                };
                tokio::select! {
                    r = asked => match r {
                        Ok(index) => break index,
                        Err(e) => {
                            last = e;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    },
                    _ = self.leader_changed_from(leader.0) => {
                        last = ApiError::unavailable("leader changed during the read index");
                    }
                }
            };
            self.inner
                .raft
                .wait(None)
                .applied_index_at_least(Some(index), "linearizable read")
                .await
                .map_err(|e| ApiError::unavailable(format!("waiting to apply {index}: {e}")))?;
            Ok(())
        };
        match tokio::time::timeout_at(deadline, fut).await {
            Ok(r) => r,
            Err(_) => Err(ApiError::DeadlineExceeded("linearizable read timed out".into())),
        }
    }

    /// After start-up, learn the cluster's commit index from the leader (a
    /// read index) and apply up to it before serving LOCAL reads. Without
    /// this a node restarted after `kill -9` could answer from a state older
    /// than what it had shown before: the committed index it persists is
    /// not fsynced (that would double the fsyncs per write), so after a
    /// crash it may remember an older one. Found by the chaos harness.
    /// Retries until it succeeds or the node stops.
    pub async fn catch_up(&self) {
        loop {
            match self.read_barrier(Consistency::Linearizable).await {
                Ok(()) => {
                    self.inner.caught_up.store(true, Ordering::Release);
                    tracing::info!(applied = self.read(|_, a| a), "caught up with the cluster");
                    return;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "not caught up yet");
                    // Try again when something changes (joined, a leader
                    // elected), or after a short pause.
                    let mut metrics = self.inner.raft.metrics();
                    let _ =
                        tokio::time::timeout(Duration::from_millis(100), metrics.changed()).await;
                }
            }
        }
    }

    /// The read index, confirmed by a quorum, when this node is the leader.
    ///
    /// Not less than this leader's last log index: openraft 0.9 restores a
    /// node that was leader before a restart as leader at once, with the
    /// first entry of its term as its "noop", so its read index is
    /// `max(that entry, committed)` — and our committed index is written
    /// without a sync, so a power loss rolls it back. After a whole-cluster
    /// power loss that read index was below entries committed (and
    /// acknowledged) before the cut (found by the `power` nemesis, see
    /// docs/chaos.md). Every committed entry is in the leader's log, and
    /// this leader can commit the entries of its own term, so waiting for
    /// its last entry is safe; it costs at most the entries in flight.
    ///
    /// Requests are coalesced (see [`ReadRounds`]): a request joins the
    /// next round to *start*, never one already in flight, so the round
    /// that answers it confirmed leadership after it arrived, which is
    /// what makes the read linearizable.
    pub async fn read_index_here(&self) -> Result<u64, ApiError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let start_driver = {
            let mut r = self.inner.reads.lock().unwrap_or_else(|p| p.into_inner());
            r.waiting.push(tx);
            !std::mem::replace(&mut r.running, true)
        };
        if start_driver {
            let node = self.clone();
            tokio::spawn(async move { node.read_rounds().await });
        }
        rx.await.unwrap_or_else(|_| Err(ApiError::unavailable("read-index round abandoned")))
    }

    /// Run rounds while requests wait; each round answers the requests
    /// that were waiting when it started.
    async fn read_rounds(&self) {
        // If this task ends in any other way than by finding no request
        // (a panic, the runtime shutting down), the next request must start
        // a new driver instead of waiting for this one forever.
        struct Stopped<'a>(&'a Node, bool);
        impl Drop for Stopped<'_> {
            fn drop(&mut self) {
                if self.1 {
                    let mut r = self.0.inner.reads.lock().unwrap_or_else(|p| p.into_inner());
                    r.running = false;
                }
            }
        }
        let mut stopped = Stopped(self, true);
        loop {
            let batch = {
                let mut r = self.inner.reads.lock().unwrap_or_else(|p| p.into_inner());
                if r.waiting.is_empty() {
                    // Under the lock: a request that comes after this sees
                    // `running == false` and starts a new driver.
                    r.running = false;
                    stopped.1 = false;
                    return;
                }
                std::mem::take(&mut r.waiting)
            };
            let result = self.read_index_round().await;
            for tx in batch {
                let _ = tx.send(result.clone());
            }
        }
    }

    /// One leadership confirmation: the read index, or why there is none.
    async fn read_index_round(&self) -> Result<u64, ApiError> {
        match self.inner.raft.get_read_log_id().await {
            Ok((read, _applied)) => {
                let last = self.inner.raft.metrics().borrow().last_log_index.unwrap_or(0);
                Ok(read.map_or(0, |l| l.index).max(last))
            }
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(ApiError::Unavailable {
                    message: "not the leader".into(),
                    leader: f.leader_id.zip(f.leader_node.map(|n| n.addr)),
                })
            }
            Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(q))) => {
                Err(ApiError::unavailable(format!("leadership not confirmed by a quorum: {q}")))
            }
            Err(RaftError::Fatal(f)) => Err(ApiError::unavailable(format!("raft stopped: {f}"))),
        }
    }

    /// Completes once this node sees a leader other than `leader` (or none).
    async fn leader_changed_from(&self, leader: NodeId) {
        self.wait_leader_until(|now| now != Some(leader)).await
    }

    async fn read_index_at(&self, leader: &(NodeId, String)) -> Result<u64, ApiError> {
        let channel = self
            .inner
            .peers
            .channel(leader.0, &leader.1)
            .map_err(|e| ApiError::unavailable(format!("leader address {}: {e}", leader.1)))?;
        let reply = RaftClient::new(channel)
            .read_index(ReadIndexRequest { from: self.id() })
            .await
            .map_err(|s| {
                ApiError::unavailable(format!(
                    "read index from leader {}: {}",
                    leader.0,
                    s.message()
                ))
            })?
            .into_inner();
        if !reply.error.is_empty() {
            return Err(ApiError::unavailable(reply.error));
        }
        Ok(reply.index)
    }
}

/// The time the leader stamps on an entry: its clock's stamp given the
/// replicated clock and the number of voters.
fn stamp(clock: &Clock, reader: &StateReader, raft: &Raft) -> u64 {
    let voters = raft.metrics().borrow().membership_config.membership().voter_ids().count();
    clock.stamp(reader.clock(), voters)
}
