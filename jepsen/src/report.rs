//! One directory per run: `history.jsonl` (client operations),
//! `nemesis.jsonl` (faults), `local_reads.jsonl`, `results.json` (the
//! verdict, per-workload ok / fail / info counts, every anomaly with the
//! window of operations that shows it), `latency.svg`, `throughput.svg`,
//! and every node's log.

use std::collections::BTreeMap;
use std::fs;
use std::io::BufWriter;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::checker::{CheckReport, KeyResult, Verdict};
use crate::history::{write_jsonl, NemesisEvent, Op, OpResult};
use crate::model::SetResult;
use crate::plot;
use crate::route::check::RouteResult;
use crate::workload::{LocalRead, LocalResult};

/// ok / fail / info counts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    /// Acknowledged.
    pub ok: usize,
    /// Definitely not applied.
    pub fail: usize,
    /// Indeterminate.
    pub info: usize,
}

impl Counts {
    /// Count `ops`.
    pub fn of<'a>(ops: impl IntoIterator<Item = &'a Op>) -> Counts {
        let mut c = Counts::default();
        for op in ops {
            match op.result {
                OpResult::Ok(_) if op.complete_ns.is_some() => c.ok += 1,
                OpResult::Fail(_) => c.fail += 1,
                _ => c.info += 1,
            }
        }
        c
    }
}

/// One anomaly and the operations around it.
#[derive(Debug, Clone, Serialize)]
pub struct Anomaly {
    /// Workload.
    pub workload: String,
    /// Key (number, call id, set).
    pub key: String,
    /// What is wrong.
    pub what: String,
    /// The smallest window of operations that shows it: the offending
    /// operation, the operations concurrent with it, and the last few that
    /// were linearized before it.
    pub window: Vec<Op>,
}

/// Everything `results.json` holds.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    /// `true`, `false` or `"unknown"`.
    pub valid: serde_json::Value,
    /// Seed of the run.
    pub seed: u64,
    /// Nodes.
    pub nodes: u64,
    /// Seconds of load.
    pub time_s: u64,
    /// Hosting mode, and what it could not do.
    pub mode: String,
    /// Nemeses scheduled.
    pub nemeses: Vec<String>,
    /// Faults injected (starts).
    pub faults: usize,
    /// Per workload: counts and verdict.
    pub workloads: BTreeMap<String, WorkloadResult>,
    /// Every power cycle of the `power` nemesis (absent without it).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub power: Vec<crate::power::PowerCycle>,
    /// Every anomaly found.
    pub anomalies: Vec<Anomaly>,
}

/// One workload's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadResult {
    /// Operation counts.
    pub counts: Counts,
    /// Valid / Invalid / Unknown.
    pub verdict: Verdict,
    /// Checker details (keys, timings, set audit, local-read audit, route
    /// setup and check).
    pub detail: serde_json::Value,
    /// A few words for the run summary, if the workload has any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The verdict as JSON: `true`, `false` or `"unknown"`.
pub fn verdict_json(v: Verdict) -> serde_json::Value {
    match v {
        Verdict::Valid => serde_json::Value::Bool(true),
        Verdict::Invalid => serde_json::Value::Bool(false),
        Verdict::Unknown => serde_json::Value::String("unknown".into()),
    }
}

/// Anomalies of a linearizability report, with their windows.
pub fn linearizability_anomalies(workload: &str, report: &CheckReport, ops: &[Op]) -> Vec<Anomaly> {
    let by_id: BTreeMap<u64, &Op> = ops.iter().map(|o| (o.id, o)).collect();
    let mut out = Vec::new();
    for (key, check) in &report.keys {
        if let KeyResult::Invalid { witness } = &check.result {
            let mut ids: Vec<u64> = witness.linearized.iter().rev().take(5).copied().collect();
            ids.push(witness.op);
            ids.extend(&witness.concurrent);
            ids.sort_unstable();
            ids.dedup();
            out.push(Anomaly {
                workload: workload.into(),
                key: key.clone(),
                what: format!("not linearizable: {witness}"),
                window: ids.iter().filter_map(|id| by_id.get(id).map(|o| (*o).clone())).collect(),
            });
        }
    }
    out
}

/// Anomalies of the set audit.
pub fn set_anomalies(set: &SetResult) -> Vec<Anomaly> {
    set.lost()
        .into_iter()
        .map(|(key, element)| Anomaly {
            workload: "set".into(),
            key: key.into(),
            what: format!("acknowledged add of {element} is missing from the final read"),
            window: Vec::new(),
        })
        .collect()
}

/// Anomalies of the LOCAL-read audit.
pub fn local_anomalies(local: &LocalResult) -> Vec<Anomaly> {
    let mut out = Vec::new();
    for r in &local.invented {
        out.push(Anomaly {
            workload: "local".into(),
            key: r.key.clone(),
            what: format!("node {} returned {:?}, which no client wrote", r.node, r.contact),
            window: Vec::new(),
        });
    }
    for (a, b) in &local.backwards {
        out.push(Anomaly {
            workload: "local".into(),
            key: b.key.clone(),
            what: format!(
                "node {} went back: applied {} gen {:?} after applied {} gen {:?}",
                b.node, b.applied_index, b.generation, a.applied_index, a.generation
            ),
            window: Vec::new(),
        });
    }
    out
}

/// Anomalies of the route check: each wrong answer, with its operation.
pub fn route_anomalies(route: &RouteResult) -> Vec<Anomaly> {
    route
        .wrong
        .iter()
        .map(|w| Anomaly {
            workload: "route".into(),
            key: w.op.key.clone(),
            what: w.describe(),
            window: vec![w.op.clone()],
        })
        .collect()
}

/// Write every file of the run into `dir`.
pub fn write(
    dir: &Path,
    results: &Results,
    ops: &[Op],
    events: &[NemesisEvent],
    locals: &[LocalRead],
    end_s: f64,
) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let file = |name: &str| -> Result<BufWriter<fs::File>> {
        Ok(BufWriter::new(
            fs::File::create(dir.join(name)).with_context(|| format!("creating {name}"))?,
        ))
    };
    write_jsonl(file("history.jsonl")?, ops)?;
    write_jsonl(file("nemesis.jsonl")?, events)?;
    write_jsonl(file("local_reads.jsonl")?, locals)?;
    serde_json::to_writer_pretty(file("results.json")?, results)?;
    fs::write(dir.join("latency.svg"), plot::latency_svg(ops, events, end_s))?;
    fs::write(dir.join("throughput.svg"), plot::throughput_svg(ops, events, end_s))?;
    Ok(())
}
