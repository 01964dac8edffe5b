//! `switchboard.v1.DialPlan`: the dial-plan routes.

use switchboard_proto::v1 as pb;
use switchboard_proto::v1::dial_plan_server::DialPlan;
use switchboard_storage::state::Command;
use tonic::{Request, Response, Status};

use super::convert::{consistency, meta, route, route_from};
use crate::node::Node;

/// The DialPlan service of one node.
pub struct DialPlanService {
    node: Node,
}

impl DialPlanService {
    /// Serve the dial plan for `node`.
    pub fn new(node: Node) -> Self {
        DialPlanService { node }
    }
}

#[tonic::async_trait]
impl DialPlan for DialPlanService {
    async fn put_route(
        &self,
        req: Request<pb::PutRouteRequest>,
    ) -> Result<Response<pb::PutRouteResponse>, Status> {
        let r =
            req.into_inner().route.ok_or_else(|| Status::invalid_argument("route is missing"))?;
        let w = self.node.write(Command::PutRoute(route_from(r)?)).await?;
        Ok(Response::new(pb::PutRouteResponse { meta: meta(&w) }))
    }

    async fn delete_route(
        &self,
        req: Request<pb::DeleteRouteRequest>,
    ) -> Result<Response<pb::DeleteRouteResponse>, Status> {
        let w = self.node.write(Command::DeleteRoute { pattern: req.into_inner().pattern }).await?;
        Ok(Response::new(pb::DeleteRouteResponse { meta: meta(&w) }))
    }

    async fn list_routes(
        &self,
        req: Request<pb::ListRoutesRequest>,
    ) -> Result<Response<pb::ListRoutesResponse>, Status> {
        self.node.read_barrier(consistency(req.into_inner().consistency)?).await?;
        Ok(Response::new(self.node.read(|s, _| pb::ListRoutesResponse {
            routes: s.dial_plan.iter().map(route).collect(),
        })))
    }
}
