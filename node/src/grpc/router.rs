//! `switchboard.v1.Router`: the redirect server, answered from local state
//! (or after a read barrier when the client asks for LINEARIZABLE).

use std::sync::atomic::{AtomicU64, Ordering};

use switchboard_proto::v1 as pb;
use switchboard_proto::v1::router_server::Router;
use switchboard_storage::state::explain::{explain, Explanation};
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
        // Explained when asked, or when the debug log wants the reasons; the
        // decision and its reasons come from one read of the state.
        let why_wanted = r.explain || tracing::enabled!(tracing::Level::DEBUG);
        let (decision, why) = self.node.read(|s, _| {
            if why_wanted {
                let (d, why) = explain(s, &ask);
                (d, Some(why))
            } else {
                (route(s, &ask), None)
            }
        });
        if let Some(why) = &why {
            tracing::debug!(digits = %r.digits, ?decision, explanation = %one_line(why), "route");
        }
        let explanation = why.filter(|_| r.explain).map(to_pb);
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
                explanation,
            },
            Decision::Failure { code, reason } => pb::RouteResponse {
                targets: Vec::new(),
                handling_node: 0,
                failure: Some(pb::RouteFailure { code: u32::from(code.code()), reason }),
                explanation,
            },
        }))
    }
}

/// The explanation in its wire form.
fn to_pb(why: Explanation) -> pb::RouteExplanation {
    pb::RouteExplanation {
        patterns: why
            .patterns
            .into_iter()
            .map(|p| pb::PatternConsidered {
                pattern: p.pattern,
                priority: p.priority,
                verdict: p.verdict.label().into(),
                reason: p.reason,
            })
            .collect(),
        digits: why.digits,
        candidates: why
            .candidates
            .into_iter()
            .map(|c| pb::CandidateConsidered {
                kind: target_kind(c.kind).into(),
                id: c.id,
                position: c.position.unwrap_or(0),
                reason: c.reason,
            })
            .collect(),
        handling: why.handling,
    }
}

/// The explanation as one log field: `pattern verdict (reason); ...`.
fn one_line(why: &Explanation) -> String {
    let patterns =
        why.patterns.iter().map(|p| format!("{} {} ({})", p.pattern, p.verdict.label(), p.reason));
    let candidates = why.candidates.iter().map(|c| format!("{} {}", c.id, c.reason));
    let mut parts: Vec<String> = patterns.chain(candidates).collect();
    if !why.handling.is_empty() {
        parts.push(why.handling.clone());
    }
    parts.join("; ")
}
