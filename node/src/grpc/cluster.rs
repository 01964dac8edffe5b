//! `switchboard.v1.Cluster`: status, membership changes and drains.
//!
//! Membership changes run at the leader (a follower relays the request to
//! it over the same client API) and are serialised by one lock, because
//! concurrent `change_membership` calls can leave a joint configuration
//! behind. Adding a node makes it a learner, waits until it has caught up,
//! then promotes it to voter.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, ServerState};
use switchboard_proto::v1 as pb;
use switchboard_proto::v1::cluster_client::ClusterClient;
use switchboard_proto::v1::cluster_server::Cluster;
use switchboard_storage::state::{Command, NodeId, Outcome};
use tokio::sync::Mutex;
use tonic::{Request, Response, Status};

use super::convert::{meta, node_status};
use super::unexpected;
use crate::batch::write_error;
use crate::error::ApiError;
use crate::node::Node;

/// How many times adding a node is started again after the leader changed.
const ADD_ATTEMPTS: u32 = 3;

/// Adding a node is idempotent, so Raft stopping under it (this node is
/// shutting down or failed) is not the "may or may not have happened" of a
/// write but a reason to start again at the next leader.
fn stopped_is_unavailable(e: ApiError) -> ApiError {
    match e {
        ApiError::RaftStopped(m) => ApiError::unavailable(format!("raft stopped: {m}")),
        e => e,
    }
}

/// Whether a failed attempt to add a node may simply be made again: the
/// leader it ran at stepped down or went away (its answer was
/// `Unavailable`, or the relayed call broke).
fn retriable(s: &Status) -> bool {
    matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown)
}

/// The Cluster service of one node.
pub struct ClusterService {
    node: Node,
    /// Serialises membership changes on this node.
    changes: Mutex<()>,
}

impl ClusterService {
    /// Serve cluster administration for `node`.
    pub fn new(node: Node) -> Self {
        ClusterService { node, changes: Mutex::new(()) }
    }

    /// `msg` to send on to the leader, with the caller's `authorization`
    /// (the leader checks the caller's token again; the hop itself grants
    /// nothing).
    fn onward<T>(msg: T, auth: Option<tonic::metadata::AsciiMetadataValue>) -> Request<T> {
        let mut r = Request::new(msg);
        if let Some(a) = auth {
            r.metadata_mut().insert("authorization", a);
        }
        r
    }

    /// A client to the leader's Cluster service, when this node is not the leader.
    fn leader_client(&self) -> Result<Option<ClusterClient<tonic::transport::Channel>>, ApiError> {
        match self.node.leader() {
            Some((id, _)) if id == self.node.id() => Ok(None),
            Some((id, addr)) => {
                let ch =
                    self.node.peers().channel(id, &addr).map_err(|e| {
                        ApiError::unavailable(format!("leader address {addr}: {e}"))
                    })?;
                Ok(Some(ClusterClient::new(ch)))
            }
            None => Err(ApiError::unavailable("no leader elected yet")),
        }
    }

    async fn status_here(&self) -> pb::StatusResponse {
        let m = self.node.raft().metrics().borrow().clone();
        let last = m.last_log_index.unwrap_or(0);
        let membership = m.membership_config.membership().clone();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let replication = m.replication.clone().unwrap_or_default();
        let table: BTreeMap<NodeId, &'static str> =
            self.node.read(|s, _| s.nodes.iter().map(|n| (n.id, node_status(n.status))).collect());
        let mut members = Vec::new();
        for (id, node) in membership.nodes() {
            let applied = self.poll(*id, &node.addr).await;
            members.push(pb::Member {
                id: *id,
                addr: node.addr.clone(),
                role: if voters.contains(id) { "voter" } else { "learner" }.into(),
                matched_index: replication.get(id).cloned().flatten().map_or(0, |l| l.index),
                lag: applied.map_or(0, |a| last.saturating_sub(a)),
                status: table.get(id).copied().unwrap_or("unknown").into(),
                applied_index: applied.unwrap_or(0),
                reachable: applied.is_some(),
            });
        }
        pb::StatusResponse {
            node_id: self.node.id(),
            leader_id: m.current_leader.unwrap_or(0),
            term: m.current_term,
            state: match m.state {
                ServerState::Leader => "leader",
                ServerState::Follower => "follower",
                ServerState::Candidate => "candidate",
                ServerState::Learner => "learner",
                ServerState::Shutdown => "shutdown",
            }
            .into(),
            last_log_index: last,
            applied_index: m.last_applied.map_or(0, |l| l.index),
            members,
            snapshot_index: m.snapshot.map_or(0, |l| l.index),
            purged_index: m.purged.map_or(0, |l| l.index),
        }
    }

    /// A member's applied index, asked just now (`None` if it does not answer quickly).
    async fn poll(&self, id: NodeId, addr: &str) -> Option<u64> {
        if id == self.node.id() {
            return Some(self.node.read(|_, applied| applied));
        }
        self.node.ping(id, addr, Duration::from_millis(300)).await.map(|r| r.applied_index)
    }

    /// One attempt at adding a node: relayed to the leader, or run here
    /// when this node leads.
    async fn add_node_once(
        &self,
        r: &pb::AddNodeRequest,
        auth: &Option<tonic::metadata::AsciiMetadataValue>,
    ) -> Result<Response<pb::AddNodeResponse>, Status> {
        if let Some(mut leader) = self.leader_client()? {
            return leader.add_node(Self::onward(r.clone(), auth.clone())).await;
        }
        let _serial = self.changes.lock().await;
        let node = BasicNode { addr: r.addr.clone() };
        // Learner first. Not openraft's `blocking` wait: it calls a learner
        // caught up when it lags by at most `replication_lag_threshold`
        // (5 000) entries, even one that never answered, so in a young
        // cluster a node that is not running was promoted at once (t40).
        let mut attempt = 0;
        let added = loop {
            match self.node.raft().add_learner(r.id, node.clone(), false).await {
                Ok(resp) => break resp.log_id,
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                    ChangeMembershipError::InProgress(_),
                ))) if attempt < 50 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(stopped_is_unavailable(write_error(e)).into()),
            }
        };
        self.wait_caught_up(r, added.index).await?;
        self.change(ChangeMembers::AddVoterIds(BTreeSet::from([r.id])))
            .await
            .map_err(stopped_is_unavailable)?;
        Ok(Response::new(pb::AddNodeResponse { status: Some(self.status_here().await) }))
    }

    /// Waits until learner `r.id` has acknowledged the log up to `index`
    /// (the entry that added it, or anything later, e.g. through a
    /// snapshot): proof that it runs, is reachable at its address and holds
    /// the state, so promoting it cannot cost the cluster its quorum.
    async fn wait_caught_up(&self, r: &pb::AddNodeRequest, index: u64) -> Result<(), ApiError> {
        let limit = Duration::from_millis(self.node.config().raft.learner_catch_up_ms);
        let mut rx = self.node.raft().metrics();
        let wait = async {
            loop {
                {
                    let m = rx.borrow_and_update();
                    let Some(replication) = &m.replication else {
                        // Not the leader any more: the caller starts again
                        // at the new one.
                        return Err(ApiError::unavailable("leadership lost while adding a node"));
                    };
                    let matched = replication.get(&r.id).cloned().flatten();
                    if matched.is_some_and(|l| l.index >= index) {
                        return Ok(());
                    }
                }
                if rx.changed().await.is_err() {
                    return Err(ApiError::unavailable("node is shutting down"));
                }
            }
        };
        let wait = async {
            tokio::select! {
                done = wait => done,
                _ = self.node.stopping() => Err(ApiError::unavailable("node is shutting down")),
            }
        };
        match tokio::time::timeout(limit, wait).await {
            Ok(done) => done,
            Err(_) => Err(ApiError::FailedPrecondition(format!(
                "node {} at {} has not caught up within {} ms (is it running, and reachable \
                 at that address?); it stays a learner: add it again once it runs, or remove it",
                r.id,
                r.addr,
                limit.as_millis()
            ))),
        }
    }

    /// Run a membership change at this node (the leader), retrying while
    /// another change is still in progress.
    async fn change(&self, changes: ChangeMembers<NodeId, BasicNode>) -> Result<(), ApiError> {
        for attempt in 0..50u32 {
            match self.node.raft().change_membership(changes.clone(), false).await {
                Ok(_) => return Ok(()),
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                    ChangeMembershipError::InProgress(_),
                ))) if attempt < 49 => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                    return Err(ApiError::FailedPrecondition(e.to_string()))
                }
                Err(e) => return Err(write_error(e)),
            }
        }
        Err(ApiError::unavailable("membership change still in progress"))
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn status(
        &self,
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        Ok(Response::new(self.status_here().await))
    }

    async fn add_node(
        &self,
        req: Request<pb::AddNodeRequest>,
    ) -> Result<Response<pb::AddNodeResponse>, Status> {
        let auth = req.metadata().get("authorization").cloned();
        let r = req.into_inner();
        if r.id == 0 {
            return Err(Status::invalid_argument("node id must be > 0"));
        }
        crate::config::parse_members(&format!("{}={}", r.id, r.addr))
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        // Adding a node can take long (the learner catches up first), long
        // enough for the leader to change meanwhile: the old leader answers
        // "not the leader", or its connection breaks. Adding is idempotent
        // (a learner already there is caught up again, a voter already
        // there stays one), so it is simply started again at whichever node
        // leads now, a few times.
        let mut attempt = 0;
        loop {
            let leader = self.node.leader().map(|(id, _)| id);
            match self.add_node_once(&r, &auth).await {
                Err(s) if attempt < ADD_ATTEMPTS && retriable(&s) => {
                    attempt += 1;
                    tracing::info!(node = r.id, attempt, error = %s.message(),
                        "adding a node: the leader changed or was unreachable, starting again");
                    let changed = self.node.wait_leader_other_than(leader);
                    let _ = tokio::time::timeout(Duration::from_secs(2), changed).await;
                }
                other => return other,
            }
        }
    }

    async fn remove_node(
        &self,
        req: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::RemoveNodeResponse>, Status> {
        let auth = req.metadata().get("authorization").cloned();
        let r = req.into_inner();
        if let Some(mut leader) = self.leader_client()? {
            return leader.remove_node(Self::onward(r, auth)).await;
        }
        if r.id == self.node.id() {
            // A leader removing itself made openraft 0.9.25's core panic
            // ("Only leader is allowed to call
            // update_effective_membership()", t40): hand leadership over
            // first, then the new leader removes this node.
            self.node.step_down().await?;
            let Some(mut leader) = self.leader_client()? else {
                return Err(ApiError::unavailable("still the leader after handing over").into());
            };
            return leader.remove_node(Self::onward(r, auth)).await;
        }
        let _serial = self.changes.lock().await;
        let m = self.node.raft().metrics().borrow().membership_config.clone();
        if m.membership().get_node(&r.id).is_none() {
            return Err(Status::not_found(format!("node {} is not a member", r.id)));
        }
        // Calls off it first, so nothing is owned by a node that has left.
        let known = self.node.read(|s, _| s.nodes.get(r.id).is_some());
        if known {
            self.node.write(Command::DrainNode { id: r.id }).await?;
        }
        if m.membership().voter_ids().any(|v| v == r.id) {
            self.change(ChangeMembers::RemoveVoters(BTreeSet::from([r.id]))).await?;
        }
        self.change(ChangeMembers::RemoveNodes(BTreeSet::from([r.id]))).await?;
        if known {
            self.node.write(Command::RemoveNode { id: r.id }).await?;
        }
        Ok(Response::new(pb::RemoveNodeResponse { status: Some(self.status_here().await) }))
    }

    async fn resume_node(
        &self,
        req: Request<pb::ResumeNodeRequest>,
    ) -> Result<Response<pb::ResumeNodeResponse>, Status> {
        let id = req.into_inner().id;
        let w = self.node.write(Command::NodeUp { id }).await?;
        Ok(Response::new(pb::ResumeNodeResponse { meta: meta(&w) }))
    }

    async fn drain_node(
        &self,
        req: Request<pb::DrainNodeRequest>,
    ) -> Result<Response<pb::DrainNodeResponse>, Status> {
        let auth = req.metadata().get("authorization").cloned();
        let r = req.into_inner();
        let w = self.node.write(Command::DrainNode { id: r.id }).await?;
        let moved_calls = match &w.outcome {
            Outcome::NodeStatus { moved, .. } => {
                moved.iter().filter(|m| m.previous_owner == r.id).count()
            }
            other => return Err(unexpected(other)),
        };
        if self.node.leader().is_some_and(|(l, _)| l == r.id) {
            if let Some(mut leader) = self.leader_client()? {
                // The drained node is the leader but not us: it steps down when asked there.
                leader.drain_node(Self::onward(r, auth)).await?;
            } else {
                self.node.step_down().await?;
            }
        }
        Ok(Response::new(pb::DrainNodeResponse {
            moved_calls: u32::try_from(moved_calls).unwrap_or(u32::MAX),
            meta: meta(&w),
        }))
    }
    async fn snapshot(
        &self,
        _req: Request<pb::SnapshotRequest>,
    ) -> Result<Response<pb::SnapshotResponse>, Status> {
        let target = self.node.read(|_, applied| applied);
        if target == 0 {
            return Err(ApiError::FailedPrecondition("nothing applied yet".into()).into());
        }
        let raft = self.node.raft();
        raft.trigger().snapshot().await.map_err(|e| Status::unavailable(e.to_string()))?;
        // Every storage step of the build is bounded by the I/O limit; the
        // wait is bounded by a little more than one of them.
        let limit = Duration::from_millis(self.node.config().storage.io_timeout_ms) * 2;
        let m = raft
            .wait(Some(limit))
            .metrics(|m| m.snapshot.is_some_and(|l| l.index >= target), "snapshot")
            .await
            .map_err(|e| Status::deadline_exceeded(format!("snapshot not built: {e}")))?;
        let index = m.snapshot.map_or(0, |l| l.index);
        let built = self.node.last_snapshot_built().filter(|b| b.index == index);
        Ok(Response::new(pb::SnapshotResponse {
            node_id: self.node.id(),
            index,
            build_ms: built.map_or(0, |b| b.build_ms),
            view_us: built.map_or(0, |b| b.view_us),
            bytes: built.map_or(0, |b| b.bytes),
        }))
    }
}
