//! `switchboard.v1.Router`: the redirect server, answered from local state
//! (or after a read barrier when the client asks for LINEARIZABLE).

use std::sync::atomic::{AtomicU64, Ordering};

use switchboard_proto::v1 as pb;
use switchboard_proto::v1::router_server::Router;
use switchboard_storage::state::route::{route, Decision, RouteRequest};
use tonic::{Request, Response, Status};

use super::convert::{consistency, target_kind};
use crate::node::Node;

/// The Router service of one node.
pub struct RouterService {
    node: Node,
    /// Successive requests get successive `spread` values, so that the
    /// weighted choice among equal-priority gateways spreads the load.
    requests: AtomicU64,
    /// This node's id as a metrics label.
    node_label: String,
}

impl RouterService {
    /// Serve routing for `node`.
    pub fn new(node: Node) -> Self {
        let node_label = node.id().to_string();
        RouterService { node, requests: AtomicU64::new(0), node_label }
    }
}

#[tonic::async_trait]
impl Router for RouterService {
    async fn route(
        &self,
        req: Request<pb::RouteRequest>,
    ) -> Result<Response<pb::RouteResponse>, Status> {
        let r = req.into_inner();
        switchboard_storage::state::dialplan::validate_digits(&r.digits)
            .map_err(|e| Status::invalid_argument(format!("digits: {e}")))?;
        self.node.read_barrier(consistency(r.consistency)?).await?;
        let spread = self.requests.fetch_add(1, Ordering::Relaxed);
        let ask = RouteRequest {
            digits: &r.digits,
            origin_node: Some(if r.origin_node == 0 { self.node.id() } else { r.origin_node }),
            now_ms: self.node.cluster_now(),
            spread,
        };
        let decision = self.node.read(|s, _| route(s, &ask));
        let result = match &decision {
            Decision::Route { .. } => "routed",
            Decision::Failure { code, .. } => code.label(),
        };
        metrics::counter!(
            "switchboard_route_requests_total",
            "node" => self.node_label.clone(),
            "result" => result
        )
        .increment(1);
        Ok(Response::new(match decision {
            Decision::Route { targets, handling_node } => pb::RouteResponse {
                targets: targets
                    .into_iter()
                    .map(|t| pb::Target { uri: t.uri, kind: target_kind(t.kind).into(), id: t.id })
                    .collect(),
                handling_node,
                failure: None,
            },
            Decision::Failure { code, reason } => pb::RouteResponse {
                targets: Vec::new(),
                handling_node: 0,
                failure: Some(pb::RouteFailure { code: u32::from(code.code()), reason }),
            },
        }))
    }
}
