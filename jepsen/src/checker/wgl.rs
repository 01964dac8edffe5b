//! The Wing–Gong–Lowe linearizability search for the operations of ONE key.
//!
//! # The question
//!
//! Is there a total order of the key's operations that (1) respects real time
//! — if A completed before B was invoked, A comes first — and (2) is accepted
//! by the sequential [`Model`]? If so the key is linearizable.
//!
//! # What is checked
//!
//! Before searching, each operation is classified:
//!
//! - `Fail`: definitely did not happen; **removed**.
//! - `Ok` and completed: must be linearized somewhere between its invocation
//!   and its completion, and the model must produce its return value.
//! - indeterminate (`Info`, or never completed) and **not** read-only: its
//!   completion is treated as +infinity, so it may take effect at any instant
//!   after its invocation, even after the client gave up; and it may also
//!   never take effect. The model says which states it may leave
//!   ([`Model::step_indeterminate`]).
//! - indeterminate and read-only: **removed**. A read changes nothing, and
//!   with its answer lost it constrains nothing either.
//!
//! Two events at the same nanosecond are ordered invoke-before-complete: an
//! operation invoked at the instant another completed counts as concurrent
//! with it. This is the cautious choice (it can only allow more orders).
//!
//! # The search
//!
//! The events (invocations and completions) are kept in one time-ordered,
//! doubly linked list. The search walks it from the front: at an invocation
//! it tries to linearize that operation now (the model accepts it from the
//! current state), in which case the operation's two events are unlinked, the
//! choice is pushed on an explicit stack (no recursion, so long histories do
//! not overflow the thread stack) and the walk restarts at the front. Reaching
//! the completion of an operation not yet linearized means the current prefix
//! is a dead end: the last choice is popped, its events relinked, and the walk
//! continues with the next alternative. Reaching the end of the list, or the
//! completion of an indeterminate operation (all the rest are indeterminate
//! too, since their completions sort last), means every definite operation is
//! linearized: the key is valid.
//!
//! Lowe's memoization prunes the search: a configuration is the set of
//! linearized operations (a bitset, stored compacted) with the model state it
//! produced. Two prefixes reaching the same configuration have the same
//! futures, so a configuration is explored at most once.
//!
//! # Cost
//!
//! An indeterminate operation stays a candidate until the end of the
//! history, so a key with `k` indeterminate writes outstanding pays about `k`
//! extra steps (and possibly `k` extra memoized configurations) per
//! linearized operation. Keys with a few thousand operations check in well
//! under a second; a single key with tens of thousands of operations and
//! thousands of indeterminate writes can exhaust the default budget. Spread
//! workloads over many keys.
//!
//! # Budget
//!
//! The search is exponential in the worst case. It counts steps (one per
//! event examined) and memoized configurations, and watches a clock; when any
//! [`Budget`] limit is reached it stops with [`KeyResult::Unknown`]. Running
//! out of budget never yields [`KeyResult::Valid`].

use std::collections::HashSet;
use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::bitset::{Bitset, CompactBitset};
use crate::history::{Call, Op, Ret};
use crate::model::Model;

/// How much work a key's search may do before giving up with
/// [`KeyResult::Unknown`]. `None` means no limit of that kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    /// The most search steps (events examined) per key.
    pub max_steps: Option<u64>,
    /// The most configurations memoized per key: the search's memory bound.
    pub max_configurations: Option<usize>,
    /// The most wall-clock time per key.
    pub time_limit: Option<Duration>,
}

impl Budget {
    /// The default step limit: a hundred million steps (tens of seconds in a
    /// release build).
    pub const DEFAULT_MAX_STEPS: u64 = 100_000_000;
    /// The default memo limit: sixteen million configurations (one to two
    /// gigabytes for the workloads' states). Four million ran out on
    /// 300-operation register keys with ~30 indeterminate writes in the
    /// 3-node CI smoke after 28 s, well inside the time and step limits.
    pub const DEFAULT_MAX_CONFIGURATIONS: usize = 16_000_000;
    /// The default time limit per key: five minutes.
    pub const DEFAULT_TIME_LIMIT: Duration = Duration::from_secs(300);

    /// No limit at all (only for histories known to be small).
    pub fn unlimited() -> Self {
        Budget { max_steps: None, max_configurations: None, time_limit: None }
    }

    /// At most `max_steps` steps and nothing else (deterministic, for tests).
    pub fn steps(max_steps: u64) -> Self {
        Budget { max_steps: Some(max_steps), ..Budget::unlimited() }
    }
}

impl Default for Budget {
    /// [`Budget::DEFAULT_MAX_STEPS`], [`Budget::DEFAULT_MAX_CONFIGURATIONS`]
    /// and [`Budget::DEFAULT_TIME_LIMIT`].
    fn default() -> Self {
        Budget {
            max_steps: Some(Self::DEFAULT_MAX_STEPS),
            max_configurations: Some(Self::DEFAULT_MAX_CONFIGURATIONS),
            time_limit: Some(Self::DEFAULT_TIME_LIMIT),
        }
    }
}

/// The verdict on one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyResult {
    /// A linearization exists.
    Valid,
    /// No linearization exists; the witness shows where every attempt fails.
    Invalid {
        /// Where the search got stuck.
        witness: Witness,
    },
    /// The search could not decide: the budget ran out, or the input was not
    /// something this model can judge. Never to be read as valid.
    Unknown {
        /// Why.
        reason: String,
    },
}

impl KeyResult {
    /// Valid, Invalid or Unknown, without the details.
    pub fn verdict(&self) -> super::Verdict {
        match self {
            KeyResult::Valid => super::Verdict::Valid,
            KeyResult::Invalid { .. } => super::Verdict::Invalid,
            KeyResult::Unknown { .. } => super::Verdict::Unknown,
        }
    }
}

/// Evidence that a key is not linearizable, taken from the deepest point the
/// search reached.
///
/// `linearized` is a longest linearizable prefix the search found (the first
/// one, if several are as long; no explored prefix is longer). Of the
/// operations not in it, `op` is the one with the earliest completion: it had
/// to be linearized before that completion, but from `state` neither `op` nor
/// any other operation invoked before that completion could be applied with
/// the result it returned, so the search had to backtrack there.
///
/// The smallest window to read is therefore: the end of `linearized`, `op`,
/// and `concurrent` — the operations whose real-time interval overlaps
/// `op`'s, which are the only ones that could legally have been ordered
/// either side of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Witness {
    /// The ids of the longest linearizable prefix found, in linearization
    /// order. May include indeterminate operations the search chose to apply.
    pub linearized: Vec<u64>,
    /// The model state after `linearized`, as the model's `Debug` output.
    pub state: String,
    /// The id of the first operation that could not be linearized: it
    /// completed while no order of the pending operations could explain its
    /// result.
    pub op: u64,
    /// Ids of the checked operations whose interval `[invoke, complete]`
    /// overlaps `op`'s (indeterminate ones extend to +infinity), ascending,
    /// `op` excluded. Failed operations and indeterminate reads were removed
    /// before the search and never appear.
    pub concurrent: Vec<u64>,
}

impl fmt::Display for Witness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "op {} cannot be linearized after the {} ops {:?} (state {}); concurrent with {:?}",
            self.op,
            self.linearized.len(),
            self.linearized,
            self.state,
            self.concurrent
        )
    }
}

impl fmt::Display for KeyResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyResult::Valid => write!(f, "valid"),
            KeyResult::Invalid { witness } => write!(f, "invalid: {witness}"),
            KeyResult::Unknown { reason } => write!(f, "unknown: {reason}"),
        }
    }
}

/// What a key's search cost.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchStats {
    /// Operations given for the key.
    pub ops: usize,
    /// Operations searched (after removing failed ones and indeterminate
    /// reads).
    pub checked: usize,
    /// Search steps taken.
    pub steps: u64,
    /// Configurations memoized.
    pub cache_entries: usize,
    /// Wall-clock time spent on the key.
    pub elapsed: Duration,
}

/// A key's verdict and what it cost.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyCheck {
    /// The verdict.
    pub result: KeyResult,
    /// The cost.
    pub stats: SearchStats,
}

/// Checks that `ops`, taken as the whole history of ONE key, are
/// linearizable with respect to `model`. The ops' `key` fields are not looked
/// at; [`super::check`] does the splitting by key.
///
/// Returns [`KeyResult::Unknown`] without searching if an op's call is not
/// one the model [`handles`](Model::handles), or if an op completes before it
/// is invoked (see [`crate::history::validate`]).
pub fn check_key<M: Model>(model: &M, ops: &[Op], budget: &Budget) -> KeyCheck {
    let refs: Vec<&Op> = ops.iter().collect();
    check_key_refs(model, &refs, budget)
}

/// [`check_key`] over borrowed operations.
pub(crate) fn check_key_refs<M: Model>(model: &M, ops: &[&Op], budget: &Budget) -> KeyCheck {
    let started = Instant::now();
    let mut stats = SearchStats { ops: ops.len(), ..SearchStats::default() };
    let result = match prepare(model, ops) {
        Err(reason) => KeyResult::Unknown { reason },
        Ok(entries) => {
            stats.checked = entries.len();
            let mut search = Search::new(model, &entries, budget, started);
            let result = search.run();
            stats.steps = search.steps;
            stats.cache_entries = search.cache.len();
            result
        }
    };
    stats.elapsed = started.elapsed();
    KeyCheck { result, stats }
}

/// One operation as the search sees it.
struct Entry<'a> {
    id: u64,
    call: &'a Call,
    /// The return value; `None` for an indeterminate operation.
    ret: Option<&'a Ret>,
    invoke_ns: u64,
    /// The completion; `None` stands for +infinity (indeterminate).
    return_ns: Option<u64>,
}

/// Drops what the search ignores and refuses what it cannot judge.
fn prepare<'a, M: Model>(model: &M, ops: &[&'a Op]) -> Result<Vec<Entry<'a>>, String> {
    let mut entries = Vec::with_capacity(ops.len());
    for op in ops {
        if !model.handles(&op.call) {
            return Err(format!(
                "op {} calls {:?}, which this model does not specify",
                op.id, op.call
            ));
        }
        if let Some(complete_ns) = op.complete_ns {
            if complete_ns < op.invoke_ns {
                return Err(format!(
                    "op {} completes at {complete_ns} ns, before its invocation at {} ns",
                    op.id, op.invoke_ns
                ));
            }
        }
        if op.is_failed() || (op.is_indeterminate() && op.call.is_read_only()) {
            continue;
        }
        let (ret, return_ns) = match op.ok_ret() {
            Some(ret) if !op.is_indeterminate() => (Some(ret), op.complete_ns),
            _ => (None, None),
        };
        entries.push(Entry { id: op.id, call: &op.call, ret, invoke_ns: op.invoke_ns, return_ns });
    }
    // Index definite operations first, in invocation order, then the
    // indeterminate ones: the linearized set is then "a prefix, a window, and
    // some of the tail", which compacts well (see `Bitset::compact`).
    entries.sort_by_key(|e| (e.ret.is_none(), e.invoke_ns, e.id));
    Ok(entries)
}

/// The end of the event list.
const NIL: usize = usize::MAX;
/// The list's sentinel node.
const HEAD: usize = 0;

#[derive(Clone, Copy)]
enum Event {
    Head,
    Call(usize),
    Return(usize),
}

/// The time-ordered events as a doubly linked list over a vector, from which
/// an operation's two events are unlinked when it is linearized and relinked,
/// in the reverse order, when the search backtracks.
struct EventList {
    next: Vec<usize>,
    prev: Vec<usize>,
    event: Vec<Event>,
    call_node: Vec<usize>,
    return_node: Vec<usize>,
}

impl EventList {
    fn new(entries: &[Entry<'_>]) -> Self {
        // Sort key: infinite completions last, then time, then invocations
        // before completions at the same instant, then id (determinism).
        let mut order: Vec<((bool, u64, u8, u64), Event)> = Vec::with_capacity(2 * entries.len());
        for (i, e) in entries.iter().enumerate() {
            order.push(((false, e.invoke_ns, 0, e.id), Event::Call(i)));
            let done = match e.return_ns {
                Some(t) => (false, t, 1, e.id),
                None => (true, 0, 1, e.id),
            };
            order.push((done, Event::Return(i)));
        }
        order.sort_by_key(|(key, _)| *key);

        let nodes = order.len() + 1;
        let mut list = EventList {
            next: (1..=nodes).map(|n| if n == nodes { NIL } else { n }).collect(),
            prev: (0..nodes).map(|n| n.checked_sub(1).unwrap_or(NIL)).collect(),
            event: Vec::with_capacity(nodes),
            call_node: vec![NIL; entries.len()],
            return_node: vec![NIL; entries.len()],
        };
        list.event.push(Event::Head);
        for (node, (_, event)) in order.into_iter().enumerate().map(|(k, x)| (k + 1, x)) {
            match event {
                Event::Call(i) => list.call_node[i] = node,
                Event::Return(i) => list.return_node[i] = node,
                Event::Head => {}
            }
            list.event.push(event);
        }
        list
    }

    fn unlink(&mut self, x: usize) {
        let (p, n) = (self.prev[x], self.next[x]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    fn relink(&mut self, x: usize) {
        let (p, n) = (self.prev[x], self.next[x]);
        self.next[p] = x;
        if n != NIL {
            self.prev[n] = x;
        }
    }

    /// Removes operation `i`'s events.
    fn lift(&mut self, i: usize) {
        self.unlink(self.call_node[i]);
        self.unlink(self.return_node[i]);
    }

    /// Restores operation `i`'s events; must undo the most recent `lift`.
    fn unlift(&mut self, i: usize) {
        self.relink(self.return_node[i]);
        self.relink(self.call_node[i]);
    }
}

/// One linearization choice: operation `op`, its `alt`-th possible outcome,
/// and the state before it.
struct Frame<S> {
    op: usize,
    alt: usize,
    before: S,
}

/// The deepest dead end seen so far.
struct Deepest<S> {
    prefix: Vec<usize>,
    state: S,
    op: usize,
}

struct Search<'m, 'e, M: Model> {
    model: &'m M,
    entries: &'e [Entry<'e>],
    budget: Budget,
    started: Instant,
    steps: u64,
    cache: HashSet<(CompactBitset, M::State)>,
}

impl<'m, 'e, M: Model> Search<'m, 'e, M> {
    fn new(model: &'m M, entries: &'e [Entry<'e>], budget: &Budget, started: Instant) -> Self {
        Search { model, entries, budget: *budget, started, steps: 0, cache: HashSet::new() }
    }

    /// The states operation `i` may leave from `s`, in a fixed order. An
    /// indeterminate operation that would change nothing is left out: taking
    /// effect without a visible change is the same as never taking effect.
    fn successors(&self, i: usize, s: &M::State) -> Vec<M::State> {
        let e = &self.entries[i];
        match e.ret {
            Some(ret) => self.model.step(s, e.call, ret).into_iter().collect(),
            None => {
                let mut next = self.model.step_indeterminate(s, e.call);
                next.retain(|n| n != s);
                next
            }
        }
    }

    /// Why the search must stop now, if it must.
    fn out_of_budget(&self) -> Option<String> {
        if let Some(max) = self.budget.max_steps {
            if self.steps >= max {
                return Some(format!(
                    "step budget of {max} exhausted ({} ops, {} configurations explored)",
                    self.entries.len(),
                    self.cache.len()
                ));
            }
        }
        if let Some(max) = self.budget.max_configurations {
            if self.cache.len() >= max {
                return Some(format!(
                    "memo limit of {max} configurations reached after {} steps ({} ops)",
                    self.steps,
                    self.entries.len()
                ));
            }
        }
        if let Some(limit) = self.budget.time_limit {
            if self.steps.is_multiple_of(1024) && self.started.elapsed() >= limit {
                return Some(format!(
                    "time limit of {limit:?} exceeded after {} steps ({} ops)",
                    self.steps,
                    self.entries.len()
                ));
            }
        }
        None
    }

    fn run(&mut self) -> KeyResult {
        let mut list = EventList::new(self.entries);
        let mut state = self.model.init();
        let mut linearized = Bitset::new(self.entries.len());
        let mut stack: Vec<Frame<M::State>> = Vec::new();
        let mut deepest: Option<Deepest<M::State>> = None;
        let mut node = list.next[HEAD];
        // The first outcome to try at `node` (non-zero right after a backtrack).
        let mut first_alt = 0;
        loop {
            if let Some(reason) = self.out_of_budget() {
                return KeyResult::Unknown { reason };
            }
            self.steps += 1;
            if node == NIL {
                return KeyResult::Valid;
            }
            match list.event[node] {
                Event::Head => unreachable!("the head is never after another node"),
                Event::Call(i) => {
                    let mut advanced = false;
                    for (alt, next) in
                        self.successors(i, &state).into_iter().enumerate().skip(first_alt)
                    {
                        debug_assert!(!linearized.contains(i));
                        linearized.insert(i);
                        if self.cache.insert((linearized.compact(), next.clone())) {
                            let before = std::mem::replace(&mut state, next);
                            stack.push(Frame { op: i, alt, before });
                            list.lift(i);
                            node = list.next[HEAD];
                            advanced = true;
                            break;
                        }
                        linearized.remove(i);
                    }
                    first_alt = 0;
                    if !advanced {
                        node = list.next[node];
                    }
                }
                Event::Return(i) => {
                    if self.entries[i].ret.is_none() {
                        // Only indeterminate completions (at +infinity) are
                        // left: every definite operation is linearized.
                        return KeyResult::Valid;
                    }
                    debug_assert_eq!(linearized.len(), stack.len());
                    if deepest.as_ref().is_none_or(|d| stack.len() > d.prefix.len()) {
                        deepest = Some(Deepest {
                            prefix: stack.iter().map(|f| f.op).collect(),
                            state: state.clone(),
                            op: i,
                        });
                    }
                    match stack.pop() {
                        None => {
                            // Recorded just above when nothing deeper was.
                            let d = deepest.unwrap_or_else(|| Deepest {
                                prefix: Vec::new(),
                                state,
                                op: i,
                            });
                            return KeyResult::Invalid { witness: self.witness(d) };
                        }
                        Some(frame) => {
                            state = frame.before;
                            linearized.remove(frame.op);
                            list.unlift(frame.op);
                            node = list.call_node[frame.op];
                            first_alt = frame.alt + 1;
                        }
                    }
                }
            }
        }
    }

    fn witness(&self, d: Deepest<M::State>) -> Witness {
        let stuck = &self.entries[d.op];
        let stuck_end = stuck.return_ns.unwrap_or(u64::MAX);
        let mut concurrent: Vec<u64> = self
            .entries
            .iter()
            .enumerate()
            .filter(|(j, e)| {
                *j != d.op
                    && e.invoke_ns <= stuck_end
                    && e.return_ns.is_none_or(|end| stuck.invoke_ns <= end)
            })
            .map(|(_, e)| e.id)
            .collect();
        concurrent.sort_unstable();
        Witness {
            linearized: d.prefix.iter().map(|&j| self.entries[j].id).collect(),
            state: format!("{:?}", d.state),
            op: stuck.id,
            concurrent,
        }
    }
}
