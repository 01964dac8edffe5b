//! The node-to-node gRPC service: hands peers' Raft RPCs to openraft, runs
//! writes that followers forward, answers read-index requests and liveness
//! polls. Once Raft has stopped (see `crate::fatal`), forwarded writes
//! and liveness polls are refused, so the leader declares this node down.
//! Request payloads are decoded with the storage codec; a payload
//! that does not decode is refused with `InvalidArgument` before it reaches
//! Raft.

use serde::de::DeserializeOwned;
use serde::Serialize;
use switchboard_proto::v1::raft_server::Raft as RaftRpc;
use switchboard_proto::v1::{
    PingRequest, PingResponse, RaftPayload, ReadIndexRequest, ReadIndexResponse,
};
use switchboard_storage::codec;
use switchboard_storage::state::Command;
use tonic::{Request, Response, Status};

use crate::node::{ForwardReply, Node};

/// The `switchboard.v1.Raft` service of one node.
pub struct RaftService {
    node: Node,
}

impl RaftService {
    /// Serve Raft traffic for `node`.
    pub fn new(node: Node) -> Self {
        RaftService { node }
    }
}

fn decode<T: DeserializeOwned>(req: Request<RaftPayload>) -> Result<T, Status> {
    codec::decode(&req.into_inner().data)
        .map_err(|e| Status::invalid_argument(format!("undecodable raft payload: {e}")))
}

fn encode<T: Serialize>(v: &T) -> Result<Response<RaftPayload>, Status> {
    codec::encode(v)
        .map(|data| Response::new(RaftPayload { data }))
        .map_err(|e| Status::internal(format!("cannot encode reply: {e}")))
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn append_entries(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc = decode(req)?;
        encode(&self.node.raft().append_entries(rpc).await)
    }

    async fn vote(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc = decode(req)?;
        encode(&self.node.raft().vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc = decode(req)?;
        encode(&self.node.raft().install_snapshot(rpc).await)
    }

    async fn forward(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let command: Command = decode(req)?;
        if let Err(e) = crate::fatal::refuse_if_stopped(self.node.raft()) {
            return encode(&ForwardReply::Err(e));
        }
        let reply: ForwardReply = self.node.write_here(command).await;
        encode(&reply)
    }

    async fn forward_batch(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let commands: Vec<Command> = decode(req)?;
        if let Err(e) = crate::fatal::refuse_if_stopped(self.node.raft()) {
            let refused: Vec<ForwardReply> = vec![Err(e); commands.len()];
            return encode(&refused);
        }
        encode(&self.node.write_here_many(commands).await)
    }

    async fn read_index(
        &self,
        _req: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexResponse>, Status> {
        let reply = match self.node.read_index_here().await {
            Ok(index) => ReadIndexResponse { index, error: String::new() },
            Err(e) => ReadIndexResponse { index: 0, error: e.to_string() },
        };
        Ok(Response::new(reply))
    }

    async fn ping(&self, _req: Request<PingRequest>) -> Result<Response<PingResponse>, Status> {
        crate::fatal::refuse_if_stopped(self.node.raft())?;
        let applied_index = self.node.read(|_, applied| applied);
        let wall_ms = self.node.clock().wall_ms();
        Ok(Response::new(PingResponse { node_id: self.node.id(), applied_index, wall_ms }))
    }
}
