//! What `/api/status` answers (and the page embeds): this node's view of
//! the cluster, built by a pure function from facts gathered elsewhere
//! (openraft's metrics, the applied state, pings just sent), so that the
//! exact JSON is unit-tested without a cluster.
//!
//! Health is judged *as this node sees it*: a member is `down` when the
//! node table says the leader declared it down, or when this node could
//! not reach it just now. The second rule is what shows a killed node as
//! down within one page refresh even while the cluster is still electing a
//! new leader (no leader = nobody commits `NodeDown` yet), and it keeps
//! working on a node that just lost the leadership.

use std::collections::BTreeMap;

use serde::Serialize;
use switchboard_storage::state::gateways::{Gateway, GatewayStatus, OutOfServiceReason};
use switchboard_storage::state::nodes::NodeStatus;
use switchboard_storage::state::NodeId;

/// The Raft side, copied out of openraft's metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftFacts {
    /// This node's id.
    pub node_id: NodeId,
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub state: &'static str,
    /// The leader this node knows of.
    pub leader_id: Option<NodeId>,
    /// Current term.
    pub term: u64,
    /// Last log index here.
    pub last_log_index: u64,
    /// Applied index here.
    pub applied_index: u64,
    /// Members: id -> (address, voter?).
    pub members: BTreeMap<NodeId, (String, bool)>,
    /// On the leader: each follower's matched log index (`None` = nothing
    /// matched yet). Empty on other nodes.
    pub matched: BTreeMap<NodeId, Option<u64>>,
}

/// One row of the replicated node table, with its load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableNode {
    /// Liveness as the leader last committed it.
    pub status: NodeStatus,
    /// Call capacity (0 = no limit).
    pub capacity: u32,
    /// Calls it owns.
    pub owned: u32,
    /// Calls it stands by for.
    pub standby: u32,
    /// SIP address (may be empty).
    pub sip_addr: String,
}

/// The replicated-state side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateFacts {
    /// The cluster's time as this node judges it, ms.
    pub now_ms: u64,
    /// The node table.
    pub nodes: BTreeMap<NodeId, TableNode>,
    /// Every gateway with its active calls.
    pub gateways: Vec<(Gateway, u32)>,
    /// Numbers with bindings.
    pub registrations: usize,
    /// Calls in progress.
    pub calls: usize,
}

/// The whole answer of `/api/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusView {
    /// The node answering (the page is served by it).
    pub node_id: NodeId,
    /// Its Raft role.
    pub state: &'static str,
    /// The leader it knows of (`null` while none is known).
    pub leader_id: Option<NodeId>,
    /// Current term.
    pub term: u64,
    /// Last log index on this node.
    pub last_log_index: u64,
    /// Applied index on this node.
    pub applied_index: u64,
    /// Replicated cluster time, ms since the Unix epoch.
    pub cluster_time_ms: u64,
    /// Numbers with at least one binding.
    pub registrations: usize,
    /// Calls in progress.
    pub calls: usize,
    /// Every member, in id order.
    pub members: Vec<MemberView>,
    /// Every gateway, in id order.
    pub gateways: Vec<GatewayView>,
}

/// One member as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberView {
    /// Node id.
    pub id: NodeId,
    /// gRPC address.
    pub addr: String,
    /// `voter` or `learner`.
    pub role: &'static str,
    /// Whether this node believes it is the leader.
    pub leader: bool,
    /// `up` or `down` (see the module comment).
    pub health: &'static str,
    /// The node table's word: `up`, `down`, `draining`, or `unknown` (not
    /// in the table yet).
    pub liveness: &'static str,
    /// When the leader declared it down (cluster time, ms).
    pub down_since_ms: Option<u64>,
    /// Whether it answered this node's ping just now.
    pub reachable: bool,
    /// Its applied index, as it answered the ping.
    pub applied_index: Option<u64>,
    /// This node's last log index minus the member's applied index.
    pub lag: Option<u64>,
    /// On the leader only: the follower's matched log index.
    pub matched_index: Option<u64>,
    /// Call capacity (0 = no limit).
    pub capacity: u32,
    /// Calls it owns.
    pub calls: u32,
    /// Calls it stands by for.
    pub standby_calls: u32,
    /// SIP address (empty when it serves no SIP).
    pub sip_addr: String,
}

/// One gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GatewayView {
    /// Gateway id.
    pub id: String,
    /// Trunk group.
    pub group: String,
    /// `host:port`.
    pub address: String,
    /// Lower is offered first.
    pub priority: u32,
    /// Share among equal priorities.
    pub weight: u32,
    /// `in_service` or `out_of_service`.
    pub status: &'static str,
    /// Why it is out: `timeout`, `failure`, `probe_failed` (null in service).
    pub reason: Option<&'static str>,
    /// When it may be offered again (cluster time, ms; null in service).
    pub retry_at_ms: Option<u64>,
    /// How long until then (0 once passed: offered again behind the others).
    pub retry_in_ms: Option<u64>,
    /// Attempts reported by proxies.
    pub attempts: u64,
    /// Timeouts reported.
    pub timeouts: u64,
    /// Failures reported.
    pub failures: u64,
    /// Calls in progress through it.
    pub calls: u32,
    /// Most concurrent calls (0 = no limit).
    pub capacity: u32,
}

/// Build the view. `pings` holds each member's answer to this node's ping
/// (its applied index), `None` for no answer; this node needs no entry.
pub fn build(
    raft: &RaftFacts,
    state: &StateFacts,
    pings: &BTreeMap<NodeId, Option<u64>>,
) -> StatusView {
    let members = raft
        .members
        .iter()
        .map(|(&id, (addr, voter))| {
            let applied = if id == raft.node_id {
                Some(raft.applied_index)
            } else {
                pings.get(&id).copied().flatten()
            };
            let row = state.nodes.get(&id);
            let (liveness, down_since_ms) = match row.map(|n| n.status) {
                Some(NodeStatus::Up) => ("up", None),
                Some(NodeStatus::Down { since_ms }) => ("down", Some(since_ms)),
                Some(NodeStatus::Draining) => ("draining", None),
                None => ("unknown", None),
            };
            let reachable = applied.is_some();
            MemberView {
                id,
                addr: addr.clone(),
                role: if *voter { "voter" } else { "learner" },
                leader: raft.leader_id == Some(id),
                health: if liveness == "down" || !reachable { "down" } else { "up" },
                liveness,
                down_since_ms,
                reachable,
                applied_index: applied,
                lag: applied.map(|a| raft.last_log_index.saturating_sub(a)),
                matched_index: raft.matched.get(&id).copied().flatten(),
                capacity: row.map_or(0, |n| n.capacity),
                calls: row.map_or(0, |n| n.owned),
                standby_calls: row.map_or(0, |n| n.standby),
                sip_addr: row.map(|n| n.sip_addr.clone()).unwrap_or_default(),
            }
        })
        .collect();
    let gateways =
        state.gateways.iter().map(|(g, calls)| gateway(g, *calls, state.now_ms)).collect();
    StatusView {
        node_id: raft.node_id,
        state: raft.state,
        leader_id: raft.leader_id,
        term: raft.term,
        last_log_index: raft.last_log_index,
        applied_index: raft.applied_index,
        cluster_time_ms: state.now_ms,
        registrations: state.registrations,
        calls: state.calls,
        members,
        gateways,
    }
}

fn gateway(g: &Gateway, calls: u32, now_ms: u64) -> GatewayView {
    let (status, reason, retry_at_ms) = match g.status {
        GatewayStatus::InService => ("in_service", None, None),
        GatewayStatus::OutOfService { until_ms, reason } => (
            "out_of_service",
            Some(match reason {
                OutOfServiceReason::Timeout => "timeout",
                OutOfServiceReason::Failure => "failure",
                OutOfServiceReason::ProbeFailed => "probe_failed",
            }),
            Some(until_ms),
        ),
    };
    GatewayView {
        id: g.id.clone(),
        group: g.group.clone(),
        address: g.address.clone(),
        priority: g.priority,
        weight: g.weight,
        status,
        reason,
        retry_at_ms,
        retry_in_ms: retry_at_ms.map(|t| t.saturating_sub(now_ms)),
        attempts: g.counters.attempts,
        timeouts: g.counters.timeouts,
        failures: g.counters.failures,
        calls,
        capacity: g.capacity,
    }
}

#[cfg(test)]
mod tests {
    use switchboard_storage::state::gateways::GatewayCounters;

    use super::*;

    fn gw(id: &str, status: GatewayStatus) -> Gateway {
        Gateway {
            id: id.into(),
            group: "pstn".into(),
            address: format!("10.0.0.{}:5060", id.len()),
            priority: 10,
            weight: 60,
            capacity: 30,
            status,
            counters: GatewayCounters { attempts: 7, timeouts: 2, failures: 1 },
        }
    }

    fn facts() -> (RaftFacts, StateFacts) {
        let raft = RaftFacts {
            node_id: 1,
            state: "leader",
            leader_id: Some(1),
            term: 4,
            last_log_index: 120,
            applied_index: 119,
            members: BTreeMap::from([
                (1, ("127.0.0.1:7001".into(), true)),
                (2, ("127.0.0.1:7002".into(), true)),
                (3, ("127.0.0.1:7003".into(), true)),
                (4, ("127.0.0.1:7004".into(), false)),
            ]),
            matched: BTreeMap::from([(1, Some(120)), (2, Some(118)), (3, Some(90)), (4, None)]),
        };
        let node = |status, owned| TableNode {
            status,
            capacity: 100,
            owned,
            standby: 1,
            sip_addr: "127.0.0.1:5061".into(),
        };
        let state = StateFacts {
            now_ms: 1_000_000,
            nodes: BTreeMap::from([
                (1, node(NodeStatus::Up, 3)),
                (2, node(NodeStatus::Draining, 0)),
                (3, node(NodeStatus::Down { since_ms: 999_000 }, 0)),
            ]),
            gateways: vec![
                (gw("east", GatewayStatus::InService), 2),
                (
                    gw(
                        "west",
                        GatewayStatus::OutOfService {
                            until_ms: 1_004_500,
                            reason: OutOfServiceReason::Timeout,
                        },
                    ),
                    0,
                ),
                (
                    gw(
                        "backup",
                        GatewayStatus::OutOfService {
                            until_ms: 990_000,
                            reason: OutOfServiceReason::ProbeFailed,
                        },
                    ),
                    0,
                ),
            ],
            registrations: 5,
            calls: 3,
        };
        (raft, state)
    }

    /// The exact JSON operators script against: every field, for a leader
    /// that sees one member declared down, one that does not answer its
    /// ping and one learner that has matched nothing yet.
    #[test]
    fn status_json_has_exactly_these_fields() {
        let (raft, state) = facts();
        let pings = BTreeMap::from([(2, Some(118)), (3, None), (4, Some(0))]);
        let json = serde_json::to_value(build(&raft, &state, &pings)).unwrap();
        let member = |id: u64, addr: &str, role: &str, health: &str, liveness: &str| {
            serde_json::json!({"id": id, "addr": addr, "role": role, "leader": id == 1,
                "health": health, "liveness": liveness})
        };
        let mut m1 = member(1, "127.0.0.1:7001", "voter", "up", "up");
        let mut m2 = member(2, "127.0.0.1:7002", "voter", "up", "draining");
        let mut m3 = member(3, "127.0.0.1:7003", "voter", "down", "down");
        let mut m4 = member(4, "127.0.0.1:7004", "learner", "up", "unknown");
        let rest =
            |down: Option<u64>, reachable: bool, applied: Option<u64>, matched: Option<u64>| {
                serde_json::json!({"down_since_ms": down, "reachable": reachable,
                "applied_index": applied, "lag": applied.map(|a| 120 - a),
                "matched_index": matched})
            };
        let load = |capacity: u32, calls: u32, standby: u32, sip: &str| {
            serde_json::json!({"capacity": capacity, "calls": calls,
                "standby_calls": standby, "sip_addr": sip})
        };
        for (m, r, l) in [
            (&mut m1, rest(None, true, Some(119), Some(120)), load(100, 3, 1, "127.0.0.1:5061")),
            (&mut m2, rest(None, true, Some(118), Some(118)), load(100, 0, 1, "127.0.0.1:5061")),
            (
                &mut m3,
                rest(Some(999_000), false, None, Some(90)),
                load(100, 0, 1, "127.0.0.1:5061"),
            ),
            (&mut m4, rest(None, true, Some(0), None), load(0, 0, 0, "")),
        ] {
            let obj = m.as_object_mut().unwrap();
            obj.extend(r.as_object().unwrap().clone());
            obj.extend(l.as_object().unwrap().clone());
        }
        let expected = serde_json::json!({
            "node_id": 1, "state": "leader", "leader_id": 1, "term": 4,
            "last_log_index": 120, "applied_index": 119, "cluster_time_ms": 1_000_000,
            "registrations": 5, "calls": 3,
            "members": [m1, m2, m3, m4],
            "gateways": [
                {"id": "east", "group": "pstn", "address": "10.0.0.4:5060", "priority": 10,
                 "weight": 60, "status": "in_service", "reason": null, "retry_at_ms": null,
                 "retry_in_ms": null, "attempts": 7, "timeouts": 2, "failures": 1,
                 "calls": 2, "capacity": 30},
                {"id": "west", "group": "pstn", "address": "10.0.0.4:5060", "priority": 10,
                 "weight": 60, "status": "out_of_service", "reason": "timeout",
                 "retry_at_ms": 1_004_500, "retry_in_ms": 4_500, "attempts": 7,
                 "timeouts": 2, "failures": 1, "calls": 0, "capacity": 30},
                {"id": "backup", "group": "pstn", "address": "10.0.0.6:5060", "priority": 10,
                 "weight": 60, "status": "out_of_service", "reason": "probe_failed",
                 "retry_at_ms": 990_000, "retry_in_ms": 0, "attempts": 7,
                 "timeouts": 2, "failures": 1, "calls": 0, "capacity": 30},
            ],
        });
        assert_eq!(json, expected);
    }

    /// A member the node table still calls up is down on the page as soon
    /// as this node cannot reach it (a killed leader: nobody commits
    /// NodeDown until a new leader is elected and its polls miss).
    #[test]
    fn unreachable_is_down_before_the_table_says_so() {
        let (mut raft, mut state) = facts();
        raft.state = "follower";
        raft.leader_id = None;
        raft.matched.clear();
        state.nodes.insert(
            3,
            TableNode {
                status: NodeStatus::Up,
                capacity: 10,
                owned: 0,
                standby: 0,
                sip_addr: String::new(),
            },
        );
        let view = build(&raft, &state, &BTreeMap::from([(2, Some(119)), (3, None)]));
        let health: Vec<_> = view.members.iter().map(|m| (m.id, m.health, m.liveness)).collect();
        assert_eq!(
            health,
            vec![(1, "up", "up"), (2, "up", "draining"), (3, "down", "up"), (4, "down", "unknown")]
        );
        assert!(view.members.iter().all(|m| !m.leader && m.matched_index.is_none()), "{view:?}");
    }
}
