//! `switchboard.v1.Calls`: calls in progress, compare-and-set updates.

use switchboard_proto::v1 as pb;
use switchboard_proto::v1::calls_server::Calls;
use switchboard_storage::state::{Command, Outcome};
use tonic::{Request, Response, Status};

use super::convert::{call, consistency, meta, once, parse_call_state};
use super::unexpected;
use crate::batch::Written;
use crate::node::Node;

/// The Calls service of one node.
pub struct CallsService {
    node: Node,
}

impl CallsService {
    /// Serve calls for `node`.
    pub fn new(node: Node) -> Self {
        CallsService { node }
    }
}

fn call_response(w: Written) -> Result<Response<pb::CallResponse>, Status> {
    match &w.outcome {
        Outcome::CallStarted(c)
        | Outcome::CallUpdated(c)
        | Outcome::CallReleased { call: c, .. } => {
            Ok(Response::new(pb::CallResponse { call: Some(call(c)), meta: meta(&w) }))
        }
        other => Err(unexpected(other)),
    }
}

#[tonic::async_trait]
impl Calls for CallsService {
    async fn start_call(
        &self,
        req: Request<pb::StartCallRequest>,
    ) -> Result<Response<pb::CallResponse>, Status> {
        let mut r = req.into_inner();
        let request_id = r.request_id.take();
        let command = Command::StartCall {
            call_id: r.call_id,
            from: r.from,
            to: r.to,
            owner: (r.node_id != 0).then_some(r.node_id),
            gateway: (!r.gateway.is_empty()).then_some(r.gateway),
        };
        let command = once(request_id, command)?;
        call_response(self.node.write(command).await?)
    }

    async fn update_call(
        &self,
        req: Request<pb::UpdateCallRequest>,
    ) -> Result<Response<pb::CallResponse>, Status> {
        let mut r = req.into_inner();
        let request_id = r.request_id.take();
        let command = Command::UpdateCall {
            call_id: r.call_id,
            state: parse_call_state(&r.state)?,
            expected_version: r.expected_version,
        };
        let command = once(request_id, command)?;
        call_response(self.node.write(command).await?)
    }

    async fn end_call(
        &self,
        req: Request<pb::EndCallRequest>,
    ) -> Result<Response<pb::CallResponse>, Status> {
        let mut r = req.into_inner();
        let request_id = r.request_id.take();
        let command = Command::EndCall {
            call_id: r.call_id,
            expected_version: (r.expected_version != 0).then_some(r.expected_version),
        };
        let command = once(request_id, command)?;
        call_response(self.node.write(command).await?)
    }

    async fn get_call(
        &self,
        req: Request<pb::GetCallRequest>,
    ) -> Result<Response<pb::CallResponse>, Status> {
        let r = req.into_inner();
        if r.call_id.is_empty() {
            return Err(Status::invalid_argument("call_id is empty"));
        }
        self.node.read_barrier(consistency(r.consistency)?).await?;
        let found = self.node.read(|s, _| s.calls.get(&r.call_id).map(call));
        match found {
            Some(c) => Ok(Response::new(pb::CallResponse { call: Some(c), meta: None })),
            None => Err(Status::not_found(format!("no call {:?}", r.call_id))),
        }
    }

    async fn list_calls(
        &self,
        req: Request<pb::ListCallsRequest>,
    ) -> Result<Response<pb::ListCallsResponse>, Status> {
        let r = req.into_inner();
        self.node.read_barrier(consistency(r.consistency)?).await?;
        Ok(Response::new(self.node.read(|s, _| {
            pb::ListCallsResponse {
                calls: s
                    .calls
                    .iter()
                    .filter(|c| r.node_id == 0 || c.owner == r.node_id)
                    .map(call)
                    .collect(),
            }
        })))
    }
}
