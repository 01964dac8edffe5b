//! Anchor calls: "no call moves off a node that never went down".
//!
//! Before the faults start, one call is placed on every node (an explicit
//! owner). The nemesis records when each fault starts and stops harming
//! which nodes (a *touch*: killed, paused, isolated or on a partition's
//! minority side, drained, removed); clock skew touches nobody. While the
//! run lasts a monitor lists the calls (LINEARIZABLE) every 250 ms and
//! notes each change of an anchor's owner, bracketed by the last listing
//! that still showed the old owner and the first that shows the new one.
//! Every such move must be explained by a touch of the old owner that
//! overlaps that bracket (with [`GRACE`] after the fault's end for
//! detection and commit). A move with no such touch means the cluster
//! declared a healthy node down — for instance a deposed leader's stale
//! decision committed by its successor right after the leader came back.
//! At the end every anchor must still exist.
//!
//! Black-box: calls are placed and listed through the public gRPC API, and
//! the rule is the harness's own, not the node's takeover code.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use serde::Serialize;
use switchboard_proto::v1 as pb;
use switchboard_proto::v1::calls_client::CallsClient;

use crate::api::Api;
use crate::checker::Verdict;
use crate::nemesis::{Recorder, Touch};
use crate::report::Anomaly;

/// How long after a fault's end a move off the node it harmed is still
/// explained by it (liveness detection, election, commit).
pub const GRACE: Duration = Duration::from_secs(5);
/// How often the monitor lists the calls.
const POLL: Duration = Duration::from_millis(250);

/// One observed change of an anchor's owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Move {
    /// The anchor call.
    pub call: String,
    /// Owner before.
    pub from: u64,
    /// Owner after.
    pub to: u64,
    /// Last listing that showed `from` (ns since the run started).
    pub after_ns: u64,
    /// First listing that showed `to`.
    pub by_ns: u64,
    /// The node whose listing last showed `from` (0: the placement).
    pub from_via: u64,
    /// The node whose listing first showed `to`. With both named, a stale
    /// read (an isolated node still listing an old owner) points at itself.
    pub to_via: u64,
}

/// List the anchors' owners every [`POLL`] until `until`, and return every
/// change seen.
pub async fn monitor(
    api: Api,
    nodes: Vec<u64>,
    placed: BTreeMap<String, u64>,
    rec: Recorder,
    until: Instant,
) -> Vec<Move> {
    // call id -> (owner, when last listed, by which node)
    let mut last: BTreeMap<String, (u64, u64, u64)> =
        placed.iter().map(|(k, &o)| (k.clone(), (o, 0, 0))).collect();
    let mut moves = Vec::new();
    let mut i = 0usize;
    while Instant::now() < until {
        let via = nodes[i % nodes.len()];
        i += 1;
        if let Ok(owners) = list_owners(&api, via, &placed).await {
            let now = rec.now_ns();
            for (call, owner) in owners {
                if let Some((seen, seen_at, seen_via)) = last.get_mut(&call) {
                    if *seen != owner {
                        moves.push(Move {
                            call: call.clone(),
                            from: *seen,
                            to: owner,
                            after_ns: *seen_at,
                            by_ns: now,
                            from_via: *seen_via,
                            to_via: via,
                        });
                        *seen = owner;
                    }
                    *seen_at = now;
                    *seen_via = via;
                }
            }
        }
        tokio::time::sleep(POLL).await;
    }
    moves
}

/// The anchors' owners as node `via` lists them (LINEARIZABLE).
async fn list_owners(
    api: &Api,
    via: u64,
    placed: &BTreeMap<String, u64>,
) -> Result<BTreeMap<String, u64>> {
    let mut r = tonic::Request::new(pb::ListCallsRequest {
        node_id: 0,
        consistency: pb::Consistency::Linearizable as i32,
    });
    r.set_timeout(Duration::from_secs(1));
    let calls = CallsClient::new(api.channel(via))
        .list_calls(r)
        .await
        .map_err(|s| anyhow!("via {via}: {:?}: {}", s.code(), s.message()))?
        .into_inner()
        .calls;
    Ok(calls
        .into_iter()
        .filter(|c| placed.contains_key(&c.call_id))
        .map(|c| (c.call_id, c.owner))
        .collect())
}

/// The anchor call placed on `node`.
fn call_id(node: u64) -> String {
    format!("anchor-{node}")
}

/// Place one call on each of `nodes` (retried with the same request id,
/// so a retry never starts it twice). Returns call id -> owner.
pub async fn place(api: &Api, nodes: &[u64]) -> Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    for &n in nodes {
        let req = pb::StartCallRequest {
            call_id: call_id(n),
            from: "anchor".into(),
            to: n.to_string(),
            node_id: n,
            gateway: String::new(),
            request_id: Some(pb::RequestId { client: "jepsen-anchors".into(), seq: n }),
        };
        let mut last = anyhow!("not tried");
        let mut placed = false;
        for attempt in 0..20u64 {
            let via = nodes[(attempt as usize) % nodes.len()];
            let mut r = tonic::Request::new(req.clone());
            r.set_timeout(Duration::from_secs(2));
            match CallsClient::new(api.channel(via)).start_call(r).await {
                Ok(resp) => {
                    let owner = resp.into_inner().call.map_or(0, |c| c.owner);
                    out.insert(call_id(n), owner);
                    placed = true;
                    break;
                }
                Err(s) => last = anyhow!("via {via}: {:?}: {}", s.code(), s.message()),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if !placed {
            return Err(last.context(format!("placing the anchor call on node {n}")));
        }
    }
    Ok(out)
}

/// What the anchor check found.
#[derive(Debug, Clone, Serialize)]
pub struct AnchorResult {
    /// Anchors placed (call id -> owner at placement).
    pub placed: BTreeMap<String, u64>,
    /// Owners at the end (call id -> owner; missing = call gone).
    pub at_end: BTreeMap<String, u64>,
    /// What the nemesis harmed, and when.
    pub touches: Vec<Touch>,
    /// Every owner change seen (the last one possibly only at the end).
    pub moves: Vec<Move>,
    /// Moves off a node that no fault harmed around that time.
    pub unexplained: Vec<Move>,
    /// Anchors that disappeared.
    pub lost: Vec<String>,
    /// The node that gave the final listing.
    pub end_via: u64,
}

impl AnchorResult {
    /// Valid when every move is explained and no anchor was lost.
    pub fn verdict(&self) -> Verdict {
        if self.unexplained.is_empty() && self.lost.is_empty() {
            Verdict::Valid
        } else {
            Verdict::Invalid
        }
    }

    /// The anomalies, for the report.
    pub fn anomalies(&self) -> Vec<Anomaly> {
        let one = |key: &String, what: String| Anomaly {
            workload: "anchors".into(),
            key: key.clone(),
            what,
            window: Vec::new(),
        };
        let mut out = Vec::new();
        for m in &self.unexplained {
            let what = format!(
                "call moved off node {} to {} between {:.2} s (listed by node {}) and {:.2} s \
                 (listed by node {}), when no fault harmed node {}",
                m.from,
                m.to,
                m.after_ns as f64 / 1e9,
                m.from_via,
                m.by_ns as f64 / 1e9,
                m.to_via,
                m.from
            );
            out.push(one(&m.call, what));
        }
        for k in &self.lost {
            let what = format!(
                "anchor call disappeared (not in the final listing by node {})",
                self.end_via
            );
            out.push(one(k, what));
        }
        out
    }
}

/// List the calls at the end (LINEARIZABLE, from the first node that
/// answers) and judge the anchors with the moves the monitor saw.
pub async fn check(
    api: &Api,
    nodes: &[u64],
    placed: &BTreeMap<String, u64>,
    moves: Vec<Move>,
    rec: &Recorder,
) -> Result<AnchorResult> {
    let mut last = anyhow!("no node to ask");
    let mut at_end = None;
    for attempt in 0..20usize {
        let via = nodes[attempt % nodes.len()];
        match list_owners(api, via, placed).await {
            Ok(owners) => {
                at_end = Some((owners, via));
                break;
            }
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (at_end, via) = at_end.ok_or_else(|| last.context("listing calls for the anchor check"))?;
    Ok(judge(placed, at_end, via, moves, rec.touches(), rec.now_ns()))
}

/// The rule itself (pure, unit-tested). A move the monitor missed (the
/// final owner differs from the last one it saw) is judged as a move
/// somewhere between its last listing and `end_ns`. `at_end` is the final
/// listing, given by node `end_via`.
pub fn judge(
    placed: &BTreeMap<String, u64>,
    at_end: BTreeMap<String, u64>,
    end_via: u64,
    mut moves: Vec<Move>,
    touches: Vec<Touch>,
    end_ns: u64,
) -> AnchorResult {
    let mut lost = Vec::new();
    for (id, &owner) in placed {
        let Some(&now) = at_end.get(id) else {
            lost.push(id.clone());
            continue;
        };
        let seen = moves.iter().rev().find(|m| &m.call == id);
        let (last_owner, last_at, last_via) =
            seen.map_or((owner, 0, 0), |m| (m.to, m.by_ns, m.to_via));
        if now != last_owner {
            moves.push(Move {
                call: id.clone(),
                from: last_owner,
                to: now,
                after_ns: last_at,
                by_ns: end_ns,
                from_via: last_via,
                to_via: end_via,
            });
        }
    }
    let grace = GRACE.as_nanos() as u64;
    let explained = |m: &Move| {
        touches.iter().any(|t| {
            t.node == m.from
                && t.from_ns <= m.by_ns
                && t.until_ns.is_none_or(|u| u.saturating_add(grace) >= m.after_ns)
        })
    };
    let unexplained = moves.iter().filter(|m| !explained(m)).cloned().collect();
    AnchorResult { placed: placed.clone(), at_end, touches, moves, unexplained, lost, end_via }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn mv(call: u64, from: u64, to: u64, after_s: u64, by_s: u64) -> Move {
        let (after_ns, by_ns) = (after_s * S, by_s * S);
        Move { call: call_id(call), from, to, after_ns, by_ns, from_via: 1, to_via: 2 }
    }

    #[test]
    fn a_call_may_leave_a_node_only_while_or_just_after_a_fault_harms_it() {
        let placed: BTreeMap<String, u64> = (1..=3).map(|n| (call_id(n), n)).collect();
        // Node 1 harmed from 10 s to 12 s.
        let touches = vec![Touch { node: 1, from_ns: 10 * S, until_ns: Some(12 * S) }];
        let end = BTreeMap::from([(call_id(1), 2), (call_id(2), 2), (call_id(3), 3)]);
        let ok = judge(&placed, end.clone(), 3, vec![mv(1, 1, 2, 10, 11)], touches.clone(), 60 * S);
        assert_eq!(ok.verdict(), Verdict::Valid, "{ok:?}");
        // Within the grace after the heal: still explained.
        let late =
            judge(&placed, end.clone(), 3, vec![mv(1, 1, 2, 16, 17)], touches.clone(), 60 * S);
        assert_eq!(late.verdict(), Verdict::Valid, "{late:?}");
        // Long after the heal: not.
        let stale =
            judge(&placed, end.clone(), 3, vec![mv(1, 1, 2, 30, 31)], touches.clone(), 60 * S);
        assert_eq!(stale.verdict(), Verdict::Invalid);
        let what = &stale.anomalies()[0].what;
        assert!(
            what.contains("(listed by node 1)") && what.contains("(listed by node 2)"),
            "{what}"
        );
        // Off a node never harmed (a deposed leader's NodeDown for node 2).
        let end2 = BTreeMap::from([(call_id(1), 1), (call_id(2), 3), (call_id(3), 3)]);
        let r = judge(&placed, end2, 3, vec![mv(2, 2, 3, 12, 13)], touches.clone(), 60 * S);
        assert_eq!(r.unexplained, vec![mv(2, 2, 3, 12, 13)]);
        // A move the monitor missed is judged from its last listing to the end.
        let missed = judge(&placed, end, 3, Vec::new(), touches.clone(), 60 * S);
        assert_eq!(missed.verdict(), Verdict::Valid, "before 10 s nothing was seen: {missed:?}");
        // A lost anchor is invalid.
        let gone = BTreeMap::from([(call_id(1), 1), (call_id(2), 2)]);
        let r = judge(&placed, gone, 3, Vec::new(), touches, 60 * S);
        assert_eq!(r.lost, vec![call_id(3)]);
        assert_eq!(r.anomalies().len(), 1);
    }
}
