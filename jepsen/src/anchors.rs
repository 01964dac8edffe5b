//! Anchor calls: "no call moves off a node that never went down".
//!
//! Before the faults start, one call is placed on every node (an explicit
//! owner). The nemesis records every node it touches — killed, paused,
//! isolated or on a partition's minority side, drained, removed, powered
//! off — and touches nothing with clock skew. At the end, after healing,
//! every anchor must still exist, and one that changed owner must have
//! left a touched node: a call taken off a node the harness never harmed
//! means the cluster declared a healthy node down (for instance a deposed
//! leader's stale decision committed by its successor).
//!
//! Black-box: calls are placed and listed through the public gRPC API, and
//! the rule is the harness's own, not the node's takeover code.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{anyhow, Result};
use serde::Serialize;
use switchboard_proto::v1 as pb;
use switchboard_proto::v1::calls_client::CallsClient;

use crate::api::Api;
use crate::checker::Verdict;
use crate::report::Anomaly;

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
    /// Nodes the nemesis touched.
    pub touched: BTreeSet<u64>,
    /// Anchors that moved off a node that was never touched.
    pub moved_off_live: Vec<String>,
    /// Anchors that disappeared.
    pub lost: Vec<String>,
}

impl AnchorResult {
    /// Valid when no anchor moved off a live node and none was lost.
    pub fn verdict(&self) -> Verdict {
        if self.moved_off_live.is_empty() && self.lost.is_empty() {
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
        for k in &self.moved_off_live {
            let what = format!(
                "call moved off node {} (now on {}), which no fault touched",
                self.placed[k],
                self.at_end.get(k).copied().unwrap_or(0)
            );
            out.push(one(k, what));
        }
        for k in &self.lost {
            out.push(one(k, "anchor call disappeared".into()));
        }
        out
    }
}

/// List the calls (LINEARIZABLE, from the first node that answers) and
/// judge the anchors.
pub async fn check(
    api: &Api,
    nodes: &[u64],
    placed: &BTreeMap<String, u64>,
    touched: &BTreeSet<u64>,
) -> Result<AnchorResult> {
    let mut last = anyhow!("no node to ask");
    let mut calls = None;
    for attempt in 0..20usize {
        let via = nodes[attempt % nodes.len()];
        let mut r = tonic::Request::new(pb::ListCallsRequest {
            node_id: 0,
            consistency: pb::Consistency::Linearizable as i32,
        });
        r.set_timeout(Duration::from_secs(3));
        match CallsClient::new(api.channel(via)).list_calls(r).await {
            Ok(resp) => {
                calls = Some(resp.into_inner().calls);
                break;
            }
            Err(s) => last = anyhow!("via {via}: {:?}: {}", s.code(), s.message()),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let calls = calls.ok_or_else(|| last.context("listing calls for the anchor check"))?;
    let at_end: BTreeMap<String, u64> = calls
        .into_iter()
        .filter(|c| placed.contains_key(&c.call_id))
        .map(|c| (c.call_id, c.owner))
        .collect();
    Ok(judge(placed, at_end, touched))
}

/// The rule itself (pure, unit-tested).
pub fn judge(
    placed: &BTreeMap<String, u64>,
    at_end: BTreeMap<String, u64>,
    touched: &BTreeSet<u64>,
) -> AnchorResult {
    let mut moved_off_live = Vec::new();
    let mut lost = Vec::new();
    for (id, owner) in placed {
        match at_end.get(id) {
            None => lost.push(id.clone()),
            Some(now) if now != owner && !touched.contains(owner) => {
                moved_off_live.push(id.clone())
            }
            Some(_) => {}
        }
    }
    AnchorResult { placed: placed.clone(), at_end, touched: touched.clone(), moved_off_live, lost }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_may_leave_only_a_touched_node() {
        let placed: BTreeMap<String, u64> = (1..=3).map(|n| (call_id(n), n)).collect();
        let touched = BTreeSet::from([1]);
        let end = BTreeMap::from([(call_id(1), 2), (call_id(2), 2), (call_id(3), 3)]);
        let r = judge(&placed, end, &touched);
        assert_eq!(r.verdict(), Verdict::Valid, "{r:?}");
        let end = BTreeMap::from([(call_id(1), 1), (call_id(2), 3), (call_id(3), 3)]);
        let r = judge(&placed, end, &touched);
        assert_eq!(r.verdict(), Verdict::Invalid);
        assert_eq!(r.moved_off_live, vec![call_id(2)]);
        let end = BTreeMap::from([(call_id(1), 1), (call_id(2), 2)]);
        let r = judge(&placed, end, &touched);
        assert_eq!(r.lost, vec![call_id(3)]);
        assert_eq!(r.anomalies().len(), 1);
    }
}
