//! Linearizability checking of a whole history, one key at a time.
//!
//! Linearizability is P-compositional (Herlihy & Wing's locality, the basis of
//! Horn & Kroening's partitioning): a history is linearizable iff, for every
//! key, the sub-history of that key's operations is linearizable with respect
//! to the one-key model. [`check`] therefore splits the history by key, runs
//! the WGL search ([`wgl`]) on each key independently — in parallel, on a
//! small pool of scoped threads — and combines the verdicts: Invalid if any
//! key is invalid, else Unknown if any key is unknown, else Valid.
//!
//! The "set" workload is audited separately by [`crate::model::check_set`].

mod bitset;
pub mod wgl;

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::history::{self, HistoryError, Op};
use crate::model::Model;
pub use wgl::{check_key, Budget, KeyCheck, KeyResult, SearchStats, Witness};

/// A verdict without its details, for a key, a workload or a whole run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Consistent.
    Valid,
    /// An anomaly was found.
    Invalid,
    /// Could not be decided; never to be read as valid.
    Unknown,
}

impl Verdict {
    /// Invalid if any is Invalid, else Unknown if any is Unknown, else Valid
    /// (Valid for none at all).
    pub fn combine(verdicts: impl IntoIterator<Item = Verdict>) -> Verdict {
        verdicts.into_iter().fold(Verdict::Valid, |acc, v| match (acc, v) {
            (Verdict::Invalid, _) | (_, Verdict::Invalid) => Verdict::Invalid,
            (Verdict::Unknown, _) | (_, Verdict::Unknown) => Verdict::Unknown,
            _ => Verdict::Valid,
        })
    }
}

/// How [`check`] runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckOptions {
    /// The search budget of each key (each key gets the whole budget).
    pub budget: Budget,
    /// Worker threads; `None` for [`thread::available_parallelism`]. Never
    /// more threads than keys.
    pub threads: Option<NonZeroUsize>,
}

/// The outcome of [`check`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckReport {
    /// The combination of every key's verdict (Valid for an empty history).
    pub verdict: Verdict,
    /// Every key's result and cost, by key.
    pub keys: BTreeMap<String, KeyCheck>,
    /// Wall-clock time of the whole check.
    pub elapsed: Duration,
    /// Worker threads used.
    pub threads: usize,
}

impl CheckReport {
    /// The keys found not linearizable, in key order.
    pub fn invalid_keys(&self) -> Vec<&str> {
        self.keys_with(Verdict::Invalid)
    }

    /// The keys that could not be decided, in key order.
    pub fn unknown_keys(&self) -> Vec<&str> {
        self.keys_with(Verdict::Unknown)
    }

    fn keys_with(&self, verdict: Verdict) -> Vec<&str> {
        self.keys
            .iter()
            .filter(|(_, k)| k.result.verdict() == verdict)
            .map(|(key, _)| key.as_str())
            .collect()
    }
}

/// Checks that `history` is linearizable with respect to `model`, key by key.
///
/// Every op in `history` is checked against `model`: pass only the ops of the
/// model's workload (a key holding calls the model does not handle comes out
/// Unknown). The history is first validated ([`history::validate`]); a
/// malformed history is an error, not a verdict.
pub fn check<M>(
    model: &M,
    history: &[Op],
    options: &CheckOptions,
) -> Result<CheckReport, HistoryError>
where
    M: Model + Sync,
{
    let started = Instant::now();
    history::validate(history)?;

    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in history {
        by_key.entry(op.key.as_str()).or_default().push(op);
    }
    // Biggest keys first, so one huge key does not start last.
    let mut jobs: Vec<(&str, Vec<&Op>)> = by_key.into_iter().collect();
    jobs.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(b.0)));

    let wanted = options
        .threads
        .or_else(|| thread::available_parallelism().ok())
        .map_or(1, NonZeroUsize::get);
    let threads = wanted.min(jobs.len()).max(1);
    let next_job = AtomicUsize::new(0);
    let budget = options.budget;

    let done: Vec<(usize, KeyCheck)> = thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let j = next_job.fetch_add(1, Ordering::Relaxed);
                        let Some((_, ops)) = jobs.get(j) else { break };
                        mine.push((j, wgl::check_key_refs(model, ops, &budget)));
                    }
                    mine
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect()
    });

    let keys: BTreeMap<String, KeyCheck> =
        done.into_iter().map(|(j, result)| (jobs[j].0.to_owned(), result)).collect();
    let verdict = Verdict::combine(keys.values().map(|k| k.result.verdict()));
    Ok(CheckReport { verdict, keys, elapsed: started.elapsed(), threads })
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
