//! Sequential specifications of one key, written from the workloads' contract
//! and deliberately **not** from the server's code: the checker must not share
//! the server's bugs. Each [`Model`] describes what a single key may answer when
//! operations happen one at a time; the linearizability checker
//! ([`crate::checker`]) searches for an order of a concurrent history that this
//! spec accepts.
//!
//! - [`RegisterModel`]: the "register" workload (a phone number bound to at
//!   most one contact, with server-assigned generations).
//! - [`CasModel`]: the "cas" workload (a call's state as a versioned
//!   compare-and-set register).
//! - [`check_set`]: the "set" workload, which is not a linearizability check
//!   but a final-read audit of acknowledged adds.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Debug;
use std::hash::Hash;

use serde::{Deserialize, Serialize};

use crate::checker::Verdict;
use crate::history::{Call, CallValue, Op, Ret};

/// A sequential specification of one key.
///
/// `step` says whether an operation that returned `ret` could have run, alone,
/// from state `s`, and to which state. `step_indeterminate` is for operations
/// whose answer was lost: it lists every state the operation could have left if
/// it took effect (the checker separately considers that it never did).
pub trait Model {
    /// The key's state. Compared and hashed for the checker's memoization, so
    /// it must be exact (two states that answer differently must differ).
    type State: Clone + Eq + Hash + Debug;

    /// The state of a key nobody has touched.
    fn init(&self) -> Self::State;

    /// The state after `call` returned `ret` from `s`, or `None` if that
    /// answer is impossible from `s`.
    fn step(&self, s: &Self::State, call: &Call, ret: &Ret) -> Option<Self::State>;

    /// Every state `call` may leave when applied to `s` with its answer
    /// unknown. Returning `s` itself (or nothing) means the call would change
    /// nothing. Not called for read-only calls.
    fn step_indeterminate(&self, s: &Self::State, call: &Call) -> Vec<Self::State>;

    /// Whether this model specifies `call` at all; the checker refuses to
    /// judge a key holding calls of another workload.
    fn handles(&self, call: &Call) -> bool;
}

/// The "register" workload: each key (a phone number) holds at most one
/// binding (one device per number in this workload).
///
/// - `Register{contact}` -> `Registered{generation}`: replaces the binding
///   with `(contact, generation)`. Generations are assigned by the server,
///   unique and increasing; across one key's linearization every acknowledged
///   generation must be greater than every earlier one (gaps are fine: other
///   keys consume generations too).
/// - `Lookup` -> `Found(contact)`: exactly the current contact, `None` when
///   unbound.
/// - `Unregister{generation: None}` -> `Removed(r)`: removes any binding;
///   `r` says whether there was one.
/// - `Unregister{generation: Some(g)}` -> `Removed(r)`: removes the binding
///   iff its generation is `g`, and then `r` must be `true`; otherwise nothing
///   changes and `r` must be `false`.
///
/// A register whose answer was lost binds the contact with an unknown
/// generation (greater than all before it, smaller than all after it); an
/// `Unregister{Some(g)}` may or may not match such a binding.
#[derive(Clone, Copy, Debug, Default)]
pub struct RegisterModel;

/// A key's state in the [`RegisterModel`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RegisterState {
    /// The current binding, if any.
    pub binding: Option<Binding>,
    /// The smallest generation a later register may still be acknowledged
    /// with: one past the last known generation, plus one for every
    /// indeterminate register applied since (each of those used up at least
    /// one generation).
    pub next_generation: u64,
}

/// A binding in the [`RegisterModel`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Binding {
    /// The bound contact.
    pub contact: String,
    /// Its generation; `None` when it was created by a register whose answer
    /// was lost, so the generation is unknown.
    pub generation: Option<u64>,
}

impl Model for RegisterModel {
    type State = RegisterState;

    fn init(&self) -> RegisterState {
        RegisterState { binding: None, next_generation: 0 }
    }

    fn step(&self, s: &RegisterState, call: &Call, ret: &Ret) -> Option<RegisterState> {
        match (call, ret) {
            (Call::Register { contact }, Ret::Registered { generation }) => {
                if *generation < s.next_generation {
                    return None;
                }
                Some(RegisterState {
                    binding: Some(Binding {
                        contact: contact.clone(),
                        generation: Some(*generation),
                    }),
                    next_generation: generation.checked_add(1)?,
                })
            }
            (Call::Lookup, Ret::Found(found)) => {
                let current = s.binding.as_ref().map(|b| &b.contact);
                (current == found.as_ref()).then(|| s.clone())
            }
            (Call::Unregister { generation: None }, Ret::Removed(removed)) => (*removed
                == s.binding.is_some())
            .then(|| RegisterState { binding: None, ..s.clone() }),
            (Call::Unregister { generation: Some(g) }, Ret::Removed(removed)) => {
                let removed_state = RegisterState { binding: None, ..s.clone() };
                match (s.binding.as_ref().map(|b| b.generation), *removed) {
                    // Nothing bound: nothing to remove.
                    (None, false) => Some(s.clone()),
                    (None, true) => None,
                    // Known generation: exact.
                    (Some(Some(current)), removed) => {
                        if removed == (current == *g) {
                            Some(if removed { removed_state } else { s.clone() })
                        } else {
                            None
                        }
                    }
                    // Unknown generation: either answer is consistent.
                    (Some(None), true) => Some(removed_state),
                    (Some(None), false) => Some(s.clone()),
                }
            }
            _ => None,
        }
    }

    fn step_indeterminate(&self, s: &RegisterState, call: &Call) -> Vec<RegisterState> {
        let removed_state = || RegisterState { binding: None, ..s.clone() };
        match call {
            Call::Register { contact } => vec![RegisterState {
                binding: Some(Binding { contact: contact.clone(), generation: None }),
                next_generation: s.next_generation.saturating_add(1),
            }],
            Call::Unregister { generation: None } => vec![removed_state()],
            Call::Unregister { generation: Some(g) } => {
                match s.binding.as_ref().map(|b| b.generation) {
                    None => vec![s.clone()],
                    Some(Some(current)) if current == *g => vec![removed_state()],
                    Some(Some(_)) => vec![s.clone()],
                    Some(None) => vec![removed_state(), s.clone()],
                }
            }
            _ => vec![s.clone()],
        }
    }

    fn handles(&self, call: &Call) -> bool {
        matches!(call, Call::Register { .. } | Call::Lookup | Call::Unregister { .. })
    }
}

/// The "cas" workload: each key is a call whose state is a versioned
/// compare-and-set register. The state is `None` until the call is started.
///
/// - `Start{state}` -> `Started{version}`: only when no call exists, and
///   `version` must be 1. (A refused start is a `Fail` result and never
///   reaches the model.)
/// - `Cas{expected_version, new_state}` -> `Cased{version}`: only when the
///   call's version is `expected_version`; the new version is
///   `expected_version + 1` and `version` must equal it.
/// - `Cas{..}` -> `CasConflict{actual}`: a definite refusal; only when the
///   call's version differs from `expected_version`, and `actual` must be the
///   call's version (`None` when no call exists). Nothing changes.
/// - `Read` -> `Value(v)`: exactly the current state and version.
#[derive(Clone, Copy, Debug, Default)]
pub struct CasModel;

impl Model for CasModel {
    type State = Option<CallValue>;

    fn init(&self) -> Option<CallValue> {
        None
    }

    fn step(&self, s: &Option<CallValue>, call: &Call, ret: &Ret) -> Option<Option<CallValue>> {
        let version = s.as_ref().map(|v| v.version);
        match (call, ret) {
            (Call::Start { state }, Ret::Started { version: 1 }) if s.is_none() => {
                Some(Some(CallValue { state: state.clone(), version: 1 }))
            }
            (Call::Cas { expected_version, new_state }, Ret::Cased { version: new }) => {
                let next = expected_version.checked_add(1)?;
                (version == Some(*expected_version) && *new == next)
                    .then(|| Some(CallValue { state: new_state.clone(), version: next }))
            }
            (Call::Cas { expected_version, .. }, Ret::CasConflict { actual }) => {
                (version != Some(*expected_version) && *actual == version).then(|| s.clone())
            }
            (Call::Read, Ret::Value(value)) => (value == s).then(|| s.clone()),
            _ => None,
        }
    }

    fn step_indeterminate(&self, s: &Option<CallValue>, call: &Call) -> Vec<Option<CallValue>> {
        match (call, s) {
            (Call::Start { state }, None) => {
                vec![Some(CallValue { state: state.clone(), version: 1 })]
            }
            (Call::Cas { expected_version, new_state }, Some(current))
                if current.version == *expected_version =>
            {
                match expected_version.checked_add(1) {
                    Some(next) => vec![Some(CallValue { state: new_state.clone(), version: next })],
                    None => vec![s.clone()],
                }
            }
            // Refused (start of an existing call, cas at another version) or a
            // read: no change.
            _ => vec![s.clone()],
        }
    }

    fn handles(&self, call: &Call) -> bool {
        matches!(call, Call::Start { .. } | Call::Cas { .. } | Call::Read)
    }
}

/// The outcome of [`check_set`] over a whole history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetResult {
    /// Invalid if any key is invalid, else Unknown if any key is unknown,
    /// else Valid (Valid for a history without set operations).
    pub verdict: Verdict,
    /// Per set (key) results.
    pub keys: BTreeMap<String, SetKeyResult>,
}

impl SetResult {
    /// Elements lost across all keys, as `(key, element)`.
    pub fn lost(&self) -> Vec<(&str, &str)> {
        self.keys
            .iter()
            .flat_map(|(k, r)| r.lost.iter().map(move |e| (k.as_str(), e.as_str())))
            .collect()
    }
}

/// The final-read audit of one set (one key).
///
/// Every element attempted on the key falls in exactly one class:
/// - **must be present**: some add of it was acknowledged (`Ok`) and
///   completed before the final read was invoked. If absent it is **lost**.
/// - **must be absent**: every add of it ended `Fail`. If present it is in
///   `failed_present`.
/// - **indeterminate**: otherwise (its adds ended `Info` or never completed,
///   or it was acknowledged only after the final read began). Either way is
///   fine; it is counted in `indeterminate_present` or
///   `indeterminate_absent`.
///
/// An element present in the final read but never attempted before the read
/// completed is **unexpected** (this overrides the classes above: an element
/// first added after the read completed cannot be in it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetKeyResult {
    /// Invalid if anything was lost, unexpected or present despite failing;
    /// Unknown if the key has no successful read; Valid otherwise.
    pub verdict: Verdict,
    /// The op id of the final read: the acknowledged `ReadSet` invoked last
    /// (ties: the highest id). `None` if there is none.
    pub final_read: Option<u64>,
    /// Distinct elements with at least one add invoked.
    pub attempted: usize,
    /// Distinct elements with at least one acknowledged add.
    pub acknowledged: usize,
    /// Distinct elements in the final read.
    pub present: usize,
    /// Acknowledged before the final read began, yet absent (sorted).
    pub lost: Vec<String>,
    /// Present but never attempted before the final read completed (sorted).
    pub unexpected: Vec<String>,
    /// Present although every add of it failed definitively (sorted).
    pub failed_present: Vec<String>,
    /// Indeterminate elements present in the final read.
    pub indeterminate_present: usize,
    /// Indeterminate elements absent from the final read.
    pub indeterminate_absent: usize,
}

/// Audits the "set" workload: for each key, compares the final read with the
/// adds (see [`SetKeyResult`] for the exact rules). Operations other than
/// [`Call::Add`] and [`Call::ReadSet`] are ignored, so a mixed history can be
/// passed whole. Reads other than the final one are not examined.
pub fn check_set(history: &[Op]) -> SetResult {
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in history {
        if matches!(op.call, Call::Add { .. } | Call::ReadSet) {
            by_key.entry(op.key.as_str()).or_default().push(op);
        }
    }
    let keys: BTreeMap<String, SetKeyResult> =
        by_key.into_iter().map(|(key, ops)| (key.to_owned(), check_one_set(&ops))).collect();
    let verdict = Verdict::combine(keys.values().map(|r| r.verdict));
    SetResult { verdict, keys }
}

/// What the adds of one element say about it.
#[derive(Default)]
struct Attempts {
    /// Some acknowledged add completed before the final read was invoked.
    must_be_present: bool,
    /// Some add was acknowledged at all.
    acknowledged: bool,
    /// Some add did not fail definitively.
    not_all_failed: bool,
    /// Some add was invoked before the final read completed.
    before_read_end: bool,
}

fn check_one_set(ops: &[&Op]) -> SetKeyResult {
    let final_read = ops
        .iter()
        .filter(|op| matches!(op.call, Call::ReadSet))
        .filter_map(|op| match op.ok_ret() {
            Some(Ret::Elements(elements)) => Some((*op, elements)),
            _ => None,
        })
        .max_by_key(|(op, _)| (op.invoke_ns, op.id));

    let read_invoke = final_read.map_or(u64::MAX, |(op, _)| op.invoke_ns);
    let read_complete = final_read.map_or(u64::MAX, |(op, _)| op.complete_ns.unwrap_or(u64::MAX));
    let mut attempts: HashMap<&str, Attempts> = HashMap::new();
    for op in ops {
        let Call::Add { element } = &op.call else { continue };
        let a = attempts.entry(element.as_str()).or_default();
        let acknowledged = matches!(op.ok_ret(), Some(Ret::Added));
        a.acknowledged |= acknowledged;
        a.must_be_present |= acknowledged && op.complete_ns.is_some_and(|c| c < read_invoke);
        a.not_all_failed |= !op.is_failed();
        a.before_read_end |= op.invoke_ns <= read_complete;
    }

    let mut result = SetKeyResult {
        verdict: Verdict::Unknown,
        final_read: final_read.map(|(op, _)| op.id),
        attempted: attempts.len(),
        acknowledged: attempts.values().filter(|a| a.acknowledged).count(),
        present: 0,
        lost: Vec::new(),
        unexpected: Vec::new(),
        failed_present: Vec::new(),
        indeterminate_present: 0,
        indeterminate_absent: 0,
    };
    let Some((_, elements)) = final_read else { return result };

    let present: HashSet<&str> = elements.iter().map(String::as_str).collect();
    result.present = present.len();
    for (element, a) in &attempts {
        let here = present.contains(element);
        if here && !a.before_read_end {
            // Added only after the read completed: it cannot be in the read.
            result.unexpected.push((*element).to_owned());
        } else if a.must_be_present {
            if !here {
                result.lost.push((*element).to_owned());
            }
        } else if !a.not_all_failed {
            if here {
                result.failed_present.push((*element).to_owned());
            }
        } else if here {
            result.indeterminate_present += 1;
        } else {
            result.indeterminate_absent += 1;
        }
    }
    result
        .unexpected
        .extend(present.iter().filter(|e| !attempts.contains_key(*e)).map(|e| (*e).to_owned()));
    result.unexpected.sort();
    result.lost.sort();
    result.failed_present.sort();
    result.verdict = if result.lost.is_empty()
        && result.unexpected.is_empty()
        && result.failed_present.is_empty()
    {
        Verdict::Valid
    } else {
        Verdict::Invalid
    };
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::OpResult;

    fn reg(contact: &str) -> Call {
        Call::Register { contact: contact.into() }
    }

    fn found(contact: Option<&str>) -> Ret {
        Ret::Found(contact.map(str::to_owned))
    }

    fn bound(contact: &str, generation: Option<u64>, next_generation: u64) -> RegisterState {
        RegisterState {
            binding: Some(Binding { contact: contact.into(), generation }),
            next_generation,
        }
    }

    #[test]
    fn register_model_follows_its_spec() {
        let m = RegisterModel;
        let s0 = m.init();
        assert_eq!(m.step(&s0, &Call::Lookup, &found(None)), Some(s0.clone()));
        assert_eq!(m.step(&s0, &Call::Lookup, &found(Some("a"))), None);

        let s1 = m.step(&s0, &reg("a"), &Ret::Registered { generation: 5 }).unwrap();
        assert_eq!(s1, bound("a", Some(5), 6));
        assert_eq!(m.step(&s1, &Call::Lookup, &found(Some("a"))), Some(s1.clone()));
        assert_eq!(m.step(&s1, &Call::Lookup, &found(None)), None);
        // Generations only grow.
        assert_eq!(m.step(&s1, &reg("b"), &Ret::Registered { generation: 5 }), None);
        assert_eq!(m.step(&s1, &reg("b"), &Ret::Registered { generation: 4 }), None);
        let s2 = m.step(&s1, &reg("b"), &Ret::Registered { generation: 9 }).unwrap();
        assert_eq!(s2, bound("b", Some(9), 10));

        // Unregister by generation: only the current one, and the answer must say so.
        let stale = Call::Unregister { generation: Some(5) };
        assert_eq!(m.step(&s2, &stale, &Ret::Removed(false)), Some(s2.clone()));
        assert_eq!(m.step(&s2, &stale, &Ret::Removed(true)), None);
        let current = Call::Unregister { generation: Some(9) };
        let unbound = RegisterState { binding: None, next_generation: 10 };
        assert_eq!(m.step(&s2, &current, &Ret::Removed(true)), Some(unbound.clone()));
        assert_eq!(m.step(&s2, &current, &Ret::Removed(false)), None);
        assert_eq!(m.step(&unbound, &current, &Ret::Removed(false)), Some(unbound.clone()));
        assert_eq!(m.step(&unbound, &current, &Ret::Removed(true)), None);

        // Unregister of anything.
        let any = Call::Unregister { generation: None };
        assert_eq!(m.step(&s2, &any, &Ret::Removed(true)), Some(unbound.clone()));
        assert_eq!(m.step(&s2, &any, &Ret::Removed(false)), None);
        assert_eq!(m.step(&unbound, &any, &Ret::Removed(false)), Some(unbound.clone()));
        assert_eq!(m.step(&unbound, &any, &Ret::Removed(true)), None);

        // Mismatched answers are impossible.
        assert_eq!(m.step(&s0, &reg("a"), &found(None)), None);
        assert_eq!(m.step(&s0, &Call::Lookup, &Ret::Removed(false)), None);
        assert!(m.handles(&Call::Lookup));
        assert!(!m.handles(&Call::Read));
    }

    #[test]
    fn register_model_handles_lost_answers() {
        let m = RegisterModel;
        let s1 = m.step(&m.init(), &reg("a"), &Ret::Registered { generation: 3 }).unwrap();
        // A lost register binds with an unknown generation and uses one up.
        let s2 = m.step_indeterminate(&s1, &reg("b"));
        assert_eq!(s2, vec![bound("b", None, 5)]);
        let s2 = &s2[0];
        assert_eq!(m.step(s2, &reg("c"), &Ret::Registered { generation: 4 }), None);
        assert!(m.step(s2, &reg("c"), &Ret::Registered { generation: 5 }).is_some());
        // Either answer to a generation-restricted unregister fits an unknown generation.
        let by_gen = Call::Unregister { generation: Some(4) };
        let unbound = RegisterState { binding: None, next_generation: 5 };
        assert_eq!(m.step(s2, &by_gen, &Ret::Removed(true)), Some(unbound.clone()));
        assert_eq!(m.step(s2, &by_gen, &Ret::Removed(false)), Some(s2.clone()));
        assert_eq!(m.step_indeterminate(s2, &by_gen), vec![unbound.clone(), s2.clone()]);
        // With a known generation a lost unregister is exact.
        assert_eq!(
            m.step_indeterminate(&s1, &Call::Unregister { generation: Some(3) }),
            vec![RegisterState { binding: None, next_generation: 4 }]
        );
        assert_eq!(
            m.step_indeterminate(&s1, &Call::Unregister { generation: Some(2) }),
            vec![s1.clone()]
        );
        assert_eq!(
            m.step_indeterminate(&s1, &Call::Unregister { generation: None }),
            vec![RegisterState { binding: None, next_generation: 4 }]
        );
    }

    fn value(state: &str, version: u64) -> Option<CallValue> {
        Some(CallValue { state: state.into(), version })
    }

    fn cas(expected_version: u64, new_state: &str) -> Call {
        Call::Cas { expected_version, new_state: new_state.into() }
    }

    #[test]
    fn cas_model_follows_its_spec() {
        let m = CasModel;
        let s0 = m.init();
        let start = Call::Start { state: "ringing".into() };
        assert_eq!(m.step(&s0, &start, &Ret::Started { version: 2 }), None);
        let s1 = m.step(&s0, &start, &Ret::Started { version: 1 }).unwrap();
        assert_eq!(s1, value("ringing", 1));
        assert_eq!(m.step(&s1, &start, &Ret::Started { version: 1 }), None);

        assert_eq!(m.step(&s1, &Call::Read, &Ret::Value(value("ringing", 1))), Some(s1.clone()));
        assert_eq!(m.step(&s1, &Call::Read, &Ret::Value(value("answered", 1))), None);
        assert_eq!(m.step(&s1, &Call::Read, &Ret::Value(None)), None);

        let s2 = m.step(&s1, &cas(1, "answered"), &Ret::Cased { version: 2 }).unwrap();
        assert_eq!(s2, value("answered", 2));
        assert_eq!(m.step(&s1, &cas(1, "answered"), &Ret::Cased { version: 3 }), None);
        assert_eq!(m.step(&s2, &cas(1, "rejected"), &Ret::Cased { version: 2 }), None);
        assert_eq!(
            m.step(&s2, &cas(1, "rejected"), &Ret::CasConflict { actual: Some(2) }),
            Some(s2.clone())
        );
        assert_eq!(m.step(&s2, &cas(1, "rejected"), &Ret::CasConflict { actual: Some(3) }), None);
        assert_eq!(m.step(&s2, &cas(2, "ended"), &Ret::CasConflict { actual: Some(2) }), None);
        assert_eq!(
            m.step(&s0, &cas(1, "answered"), &Ret::CasConflict { actual: None }),
            Some(None)
        );
        assert_eq!(m.step(&s0, &cas(1, "answered"), &Ret::Cased { version: 2 }), None);
    }

    #[test]
    fn cas_model_handles_lost_answers() {
        let m = CasModel;
        let start = Call::Start { state: "ringing".into() };
        assert_eq!(m.step_indeterminate(&None, &start), vec![value("ringing", 1)]);
        let s1 = value("ringing", 1);
        assert_eq!(m.step_indeterminate(&s1, &start), vec![s1.clone()]);
        assert_eq!(m.step_indeterminate(&s1, &cas(1, "answered")), vec![value("answered", 2)]);
        assert_eq!(m.step_indeterminate(&s1, &cas(7, "answered")), vec![s1.clone()]);
        assert!(m.handles(&Call::Read));
        assert!(!m.handles(&Call::Lookup));
    }

    fn set_op(id: u64, call: Call, result: OpResult, invoke_ns: u64, complete: Option<u64>) -> Op {
        Op { id, process: id, key: "s".into(), call, result, invoke_ns, complete_ns: complete }
    }

    fn add(id: u64, element: &str, result: OpResult, invoke_ns: u64, complete: Option<u64>) -> Op {
        set_op(id, Call::Add { element: element.into() }, result, invoke_ns, complete)
    }

    fn ok_added() -> OpResult {
        OpResult::Ok(Ret::Added)
    }

    fn read(id: u64, elements: &[&str], invoke_ns: u64, complete_ns: u64) -> Op {
        let elements = elements.iter().map(|e| (*e).to_owned()).collect();
        set_op(
            id,
            Call::ReadSet,
            OpResult::Ok(Ret::Elements(elements)),
            invoke_ns,
            Some(complete_ns),
        )
    }

    #[test]
    fn set_all_acknowledged_present_is_valid() {
        let history = [
            add(1, "a", ok_added(), 0, Some(10)),
            add(2, "b", ok_added(), 5, Some(12)),
            read(3, &["a", "b"], 20, 30),
        ];
        let r = check_set(&history);
        assert_eq!(r.verdict, Verdict::Valid);
        let k = &r.keys["s"];
        assert_eq!(k.final_read, Some(3));
        assert_eq!((k.attempted, k.acknowledged, k.present), (2, 2, 2));
        assert!(k.lost.is_empty() && k.unexpected.is_empty() && k.failed_present.is_empty());
    }

    #[test]
    fn set_lost_element_is_invalid_and_named() {
        let history = [
            add(1, "a", ok_added(), 0, Some(10)),
            add(2, "b", ok_added(), 5, Some(12)),
            add(3, "c", ok_added(), 6, Some(13)),
            // An earlier read is not the final one.
            read(4, &["a"], 14, 15),
            read(5, &["a"], 20, 30),
        ];
        let r = check_set(&history);
        assert_eq!(r.verdict, Verdict::Invalid);
        let k = &r.keys["s"];
        assert_eq!(k.final_read, Some(5));
        assert_eq!(k.lost, vec!["b".to_owned(), "c".to_owned()]);
        assert_eq!(r.lost(), vec![("s", "b"), ("s", "c")]);
        assert!(k.unexpected.is_empty());
    }

    #[test]
    fn set_unexpected_element_is_invalid() {
        let history = [add(1, "a", ok_added(), 0, Some(10)), read(2, &["a", "zz"], 20, 30)];
        let r = check_set(&history);
        assert_eq!(r.verdict, Verdict::Invalid);
        let k = &r.keys["s"];
        assert_eq!(k.unexpected, vec!["zz".to_owned()]);
        assert!(k.lost.is_empty());
        assert_eq!(k.present, 2);
    }

    #[test]
    fn set_indeterminate_adds_may_be_present_or_absent() {
        let history = [
            add(1, "a", ok_added(), 0, Some(10)),
            add(2, "maybe-in", OpResult::Info("timeout".into()), 1, Some(11)),
            add(3, "maybe-out", OpResult::Info("timeout".into()), 2, Some(12)),
            add(4, "never-done", OpResult::Ok(Ret::Added), 3, None),
            // Acknowledged only after the final read began: may be missing.
            add(5, "late", ok_added(), 15, Some(40)),
            read(6, &["a", "maybe-in"], 20, 30),
        ];
        let r = check_set(&history);
        assert_eq!(r.verdict, Verdict::Valid, "{r:?}");
        let k = &r.keys["s"];
        assert_eq!(k.indeterminate_present, 1);
        assert_eq!(k.indeterminate_absent, 3);
        assert_eq!(k.attempted, 5);
        // An `Ok` that never completed is not an acknowledgement.
        assert_eq!(k.acknowledged, 2);
    }

    #[test]
    fn set_failed_adds_must_be_absent_and_other_calls_are_ignored() {
        let history = [
            add(1, "no", OpResult::Fail("refused".into()), 0, Some(10)),
            add(2, "gone", OpResult::Fail("refused".into()), 0, Some(10)),
            Op {
                id: 9,
                process: 9,
                key: "1000".into(),
                call: Call::Lookup,
                result: OpResult::Ok(Ret::Found(None)),
                invoke_ns: 0,
                complete_ns: Some(1),
            },
            read(3, &["no"], 20, 30),
        ];
        let r = check_set(&history);
        assert_eq!(r.verdict, Verdict::Invalid);
        assert_eq!(r.keys.len(), 1);
        let k = &r.keys["s"];
        assert_eq!(k.failed_present, vec!["no".to_owned()]);
        assert!(k.lost.is_empty() && k.unexpected.is_empty());
    }

    #[test]
    fn set_element_added_after_the_read_cannot_be_in_it() {
        let history = [read(1, &["later"], 0, 10), add(2, "later", ok_added(), 20, Some(30))];
        let k = &check_set(&history).keys["s"];
        assert_eq!(k.verdict, Verdict::Invalid);
        assert_eq!(k.unexpected, vec!["later".to_owned()]);
        assert_eq!(k.indeterminate_present, 0);
    }

    #[test]
    fn set_without_a_final_read_is_unknown() {
        let history = [
            add(1, "a", ok_added(), 0, Some(10)),
            set_op(2, Call::ReadSet, OpResult::Info("timeout".into()), 20, Some(30)),
        ];
        let r = check_set(&history);
        assert_eq!(r.verdict, Verdict::Unknown);
        assert_eq!(r.keys["s"].final_read, None);
        assert_eq!(check_set(&[]).verdict, Verdict::Valid);
    }
}
