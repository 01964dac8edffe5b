//! Conversions between the replicated state's types and the wire types.
//! Parsing of client-supplied enums (outcome, call state) lives here too, so
//! that a bad value is one `InvalidArgument` with the accepted values named.

use switchboard_proto::v1 as pb;
use switchboard_storage::state::calls::{Call, CallState};
use switchboard_storage::state::dialplan::{Route, RouteTarget};
use switchboard_storage::state::gateways::{
    Gateway, GatewayStatus, OutOfServiceReason, ReportedOutcome,
};
use switchboard_storage::state::nodes::NodeStatus;
use switchboard_storage::state::registrations::Binding;
use switchboard_storage::state::route::TargetKind;
use switchboard_storage::state::Command;

use crate::batch::Written;
use crate::error::ApiError;
use crate::node::Consistency;

/// Wire consistency -> ours (unspecified = local).
pub fn consistency(c: i32) -> Result<Consistency, ApiError> {
    match pb::Consistency::try_from(c) {
        Ok(pb::Consistency::Unspecified | pb::Consistency::Local) => Ok(Consistency::Local),
        Ok(pb::Consistency::Linearizable) => Ok(Consistency::Linearizable),
        Err(_) => Err(ApiError::InvalidArgument(format!("unknown consistency {c}"))),
    }
}

/// `command` made once-only when the request carries a request id.
pub fn once(id: Option<pb::RequestId>, command: Command) -> Result<Command, ApiError> {
    match id {
        None => Ok(command),
        Some(pb::RequestId { client, .. }) if client.is_empty() => {
            Err(ApiError::InvalidArgument("request_id.client is empty".into()))
        }
        Some(pb::RequestId { client, seq }) => {
            Ok(Command::Once { client, seq, command: Box::new(command) })
        }
    }
}

/// Where a write landed.
pub fn meta(w: &Written) -> Option<pb::WriteMeta> {
    Some(pb::WriteMeta { index: w.index, leader_id: w.leader_id })
}

/// A binding on the wire.
pub fn binding(b: &Binding) -> pb::Binding {
    pb::Binding {
        device_id: b.device_id.clone(),
        contact: b.contact.clone(),
        device_name: b.device_name.clone(),
        mac: b.mac.clone(),
        node_id: b.node,
        q: u32::from(b.q),
        expires_at_ms: b.expires_at_ms,
        generation: b.generation,
    }
}

/// The name of a call state.
pub fn call_state_name(s: CallState) -> &'static str {
    match s {
        CallState::Setup => "setup",
        CallState::Ringing => "ringing",
        CallState::Connected => "connected",
        CallState::Held => "held",
        CallState::Released => "released",
    }
}

/// Parse a call state name.
pub fn parse_call_state(s: &str) -> Result<CallState, ApiError> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "setup" => CallState::Setup,
        "ringing" => CallState::Ringing,
        "connected" => CallState::Connected,
        "held" => CallState::Held,
        "released" => CallState::Released,
        _ => {
            return Err(ApiError::InvalidArgument(format!(
                "unknown call state {s:?}; expected setup, ringing, connected, held or released"
            )))
        }
    })
}

/// Parse a reported outcome.
pub fn parse_outcome(s: &str) -> Result<ReportedOutcome, ApiError> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "ok" => ReportedOutcome::Ok,
        "timeout" => ReportedOutcome::Timeout,
        "failure" => ReportedOutcome::Failure,
        _ => {
            return Err(ApiError::InvalidArgument(format!(
                "unknown outcome {s:?}; expected ok, timeout or failure"
            )))
        }
    })
}

/// A call on the wire.
pub fn call(c: &Call) -> pb::Call {
    pb::Call {
        call_id: c.call_id.clone(),
        from: c.from.clone(),
        to: c.to.clone(),
        state: call_state_name(c.state).into(),
        owner: c.owner,
        standby: c.standby.unwrap_or(0),
        gateway: c.gateway.clone().unwrap_or_default(),
        version: c.version,
        started_at_ms: c.started_at_ms,
        updated_at_ms: c.updated_at_ms,
    }
}

/// A gateway on the wire, with its current call count.
pub fn gateway(g: &Gateway, active_calls: u32) -> pb::Gateway {
    let (status, until, reason) = match g.status {
        GatewayStatus::InService => ("in_service", 0, ""),
        GatewayStatus::OutOfService { until_ms, reason } => (
            "out_of_service",
            until_ms,
            match reason {
                OutOfServiceReason::Timeout => "timeout",
                OutOfServiceReason::Failure => "failure",
                OutOfServiceReason::ProbeFailed => "probe_failed",
            },
        ),
    };
    pb::Gateway {
        id: g.id.clone(),
        group: g.group.clone(),
        address: g.address.clone(),
        priority: g.priority,
        weight: g.weight,
        capacity: g.capacity,
        status: status.into(),
        out_of_service_until_ms: until,
        out_of_service_reason: reason.into(),
        attempts: g.counters.attempts,
        timeouts: g.counters.timeouts,
        failures: g.counters.failures,
        active_calls,
    }
}

/// A dial-plan route on the wire.
pub fn route(r: &Route) -> pb::DialRoute {
    pb::DialRoute {
        pattern: r.pattern.clone(),
        priority: r.priority,
        group: match &r.target {
            RouteTarget::Registered => String::new(),
            RouteTarget::GatewayGroup(g) => g.clone(),
        },
        strip: u32::from(r.strip),
        prefix: r.prefix.clone(),
    }
}

/// A wire route -> ours.
pub fn route_from(r: pb::DialRoute) -> Result<Route, ApiError> {
    let strip = u8::try_from(r.strip)
        .map_err(|_| ApiError::InvalidArgument(format!("strip {} is too large", r.strip)))?;
    Ok(Route {
        pattern: r.pattern,
        priority: r.priority,
        target: if r.group.is_empty() {
            RouteTarget::Registered
        } else {
            RouteTarget::GatewayGroup(r.group)
        },
        strip,
        prefix: r.prefix,
    })
}

/// The name of a target kind.
pub fn target_kind(k: TargetKind) -> &'static str {
    match k {
        TargetKind::Device => "device",
        TargetKind::Gateway => "gateway",
    }
}

/// The name of a node status.
pub fn node_status(s: NodeStatus) -> &'static str {
    match s {
        NodeStatus::Up => "up",
        NodeStatus::Down { .. } => "down",
        NodeStatus::Draining => "draining",
    }
}
