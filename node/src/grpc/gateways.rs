//! `switchboard.v1.Gateways`: configure gateways, list them, take proxies'
//! outcome reports.

use switchboard_proto::v1 as pb;
use switchboard_proto::v1::gateways_server::Gateways;
use switchboard_storage::state::{Command, Outcome};
use tonic::{Request, Response, Status};

use super::convert::{consistency, gateway, meta, once, parse_outcome};
use super::unexpected;
use crate::node::Node;

/// The Gateways service of one node.
pub struct GatewaysService {
    node: Node,
}

impl GatewaysService {
    /// Serve gateways for `node`.
    pub fn new(node: Node) -> Self {
        GatewaysService { node }
    }
}

#[tonic::async_trait]
impl Gateways for GatewaysService {
    async fn put_gateway(
        &self,
        req: Request<pb::PutGatewayRequest>,
    ) -> Result<Response<pb::PutGatewayResponse>, Status> {
        let r = req.into_inner();
        let command = Command::PutGateway {
            id: r.id,
            group: r.group,
            address: r.address,
            priority: r.priority,
            weight: if r.weight == 0 { 1 } else { r.weight },
            capacity: r.capacity,
        };
        let w = self.node.write(command).await?;
        Ok(Response::new(pb::PutGatewayResponse { meta: meta(&w) }))
    }

    async fn delete_gateway(
        &self,
        req: Request<pb::DeleteGatewayRequest>,
    ) -> Result<Response<pb::DeleteGatewayResponse>, Status> {
        let w = self.node.write(Command::DeleteGateway { id: req.into_inner().id }).await?;
        Ok(Response::new(pb::DeleteGatewayResponse { meta: meta(&w) }))
    }

    async fn list_gateways(
        &self,
        req: Request<pb::ListGatewaysRequest>,
    ) -> Result<Response<pb::ListGatewaysResponse>, Status> {
        self.node.read_barrier(consistency(req.into_inner().consistency)?).await?;
        Ok(Response::new(self.node.read(|s, _| pb::ListGatewaysResponse {
            gateways: s.gateways.iter().map(|g| gateway(g, s.calls.gateway_load(&g.id))).collect(),
        })))
    }

    async fn report_outcome(
        &self,
        req: Request<pb::ReportOutcomeRequest>,
    ) -> Result<Response<pb::ReportOutcomeResponse>, Status> {
        let mut r = req.into_inner();
        let request_id = r.request_id.take();
        let outcome = parse_outcome(&r.outcome)?;
        let retry_s = if r.retry_after_s == 0 {
            self.node.config().gateways.default_retry_after_s
        } else {
            r.retry_after_s
        };
        let command = Command::ReportOutcome {
            id: r.id.clone(),
            outcome,
            retry_after_ms: u64::from(retry_s) * 1_000,
        };
        let command = once(request_id, command)?;
        let w = self.node.write(command).await?;
        let Outcome::GatewayStatus { changed, .. } = w.outcome else {
            return Err(unexpected(&w.outcome));
        };
        // The gateway as this node has applied it, at least up to the write:
        // a follower forwarded it and may not have applied it yet.
        self.node.wait_applied(w.index).await?;
        let gw = self
            .node
            .read(|s, _| s.gateways.get(&r.id).map(|g| gateway(g, s.calls.gateway_load(&g.id))));
        Ok(Response::new(pb::ReportOutcomeResponse { gateway: gw, changed, meta: meta(&w) }))
    }
}
