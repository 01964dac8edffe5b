//! What the `power` nemesis checks after every power cycle, and what it
//! reports: once the cluster has a leader again, a LINEARIZABLE read of the
//! set must hold every element whose add was acknowledged before the read
//! began — in particular every one acknowledged before the power was cut.
//!
//! Owns: [`PowerCycle`] (one cycle's record in `results.json`),
//! [`acknowledged_before`] and [`audit`]. The final-read set check and the
//! linearizability checker still run over the whole history at the end;
//! this audit pins a loss to the cycle that caused it.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use serde::Serialize;

use crate::api::Api;
use crate::history::{Call, Op, Ret};
use crate::nemesis::Recorder;
use crate::workload::{read_set, Recorded};

/// One power cycle.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PowerCycle {
    /// `node` (one node lost power) or `cluster` (all at once).
    pub scope: String,
    /// Nodes that lost power.
    pub nodes: Vec<u64>,
    /// When the power was cut (s since the run started).
    pub cut_at_s: f64,
    /// Unsynced bytes the file systems dropped, and in how many files.
    pub dropped_bytes: u64,
    /// Files with unsynced data at the cut.
    pub dropped_files: u64,
    /// Of the unsynced bytes, those a torn cut put on the disk all the same.
    pub torn_bytes: u64,
    /// Nodes whose cut came right after a write request (the others had
    /// written nothing within the arming window).
    pub cut_on_write: usize,
    /// Seconds from restarting the nodes to an agreed leader (None: never).
    pub recovered_after_s: Option<f64>,
    /// Set elements acknowledged before the audit read began.
    pub acknowledged: usize,
    /// Of those, missing from the read after the restart.
    pub lost: Vec<String>,
    /// Why the cycle failed (a node that did not come back, no read), if it did.
    pub failure: Option<String>,
}

impl PowerCycle {
    /// Whether acknowledged writes survived and the cluster came back.
    pub fn ok(&self) -> bool {
        self.lost.is_empty() && self.failure.is_none()
    }
}

/// Set elements whose add was acknowledged before `t_ns`.
pub fn acknowledged_before(ops: &[Op], t_ns: u64) -> BTreeSet<String> {
    ops.iter()
        .filter(|op| op.complete_ns.is_some_and(|c| c < t_ns))
        .filter(|op| matches!(op.ok_ret(), Some(Ret::Added)))
        .filter_map(|op| match &op.call {
            Call::Add { element } => Some(element.clone()),
            _ => None,
        })
        .collect()
}

/// Read the set (LINEARIZABLE, any node, retried until `timeout`); returns
/// how many elements had been acknowledged when the successful read began,
/// and those of them it lacks.
pub async fn audit(
    api: &Api,
    out: &Recorded,
    rec: &Recorder,
    timeout: Duration,
) -> Result<(usize, Vec<String>)> {
    let deadline = Instant::now() + timeout;
    let mut last = anyhow!("not tried");
    while Instant::now() < deadline {
        for id in api.ids() {
            let acknowledged = acknowledged_before(&out.ops(), rec.now_ns());
            match read_set(api, id).await {
                Ok(elements) => {
                    let present: BTreeSet<String> = elements.into_iter().collect();
                    let lost = acknowledged.difference(&present).cloned().collect();
                    return Ok((acknowledged.len(), lost));
                }
                Err(s) => last = anyhow!("node {id}: {:?}: {}", s.code(), s.message()),
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Err(last.context("no linearizable read of the set after the power cycle"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::OpResult;

    fn add(id: u64, element: &str, result: OpResult, complete: Option<u64>) -> Op {
        Op {
            id,
            process: 1,
            key: "set".into(),
            call: Call::Add { element: element.into() },
            result,
            invoke_ns: 0,
            complete_ns: complete,
        }
    }

    #[test]
    fn only_adds_acknowledged_before_the_cut_count() {
        let ops = vec![
            add(1, "a", OpResult::Ok(Ret::Added), Some(10)),
            add(2, "b", OpResult::Ok(Ret::Added), Some(30)),
            add(3, "c", OpResult::Fail("no".into()), Some(5)),
            add(4, "d", OpResult::Info("timeout".into()), None),
        ];
        let got = acknowledged_before(&ops, 20);
        assert_eq!(got.into_iter().collect::<Vec<_>>(), vec!["a".to_string()]);
    }
}
