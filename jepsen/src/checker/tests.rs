//! Hand-made histories with exactly known verdicts and witnesses.

use super::*;
use crate::history::{Call, CallValue, OpResult, Ret};
use crate::model::{CasModel, RegisterModel};

const KEY: &str = "1000";

fn op(id: u64, call: Call, result: OpResult, invoke_ns: u64, complete_ns: Option<u64>) -> Op {
    Op { id, process: id, key: KEY.into(), call, result, invoke_ns, complete_ns }
}

fn ok(id: u64, call: Call, ret: Ret, invoke_ns: u64, complete_ns: u64) -> Op {
    op(id, call, OpResult::Ok(ret), invoke_ns, Some(complete_ns))
}

fn register(id: u64, contact: &str, generation: u64, invoke_ns: u64, complete_ns: u64) -> Op {
    ok(
        id,
        Call::Register { contact: contact.into() },
        Ret::Registered { generation },
        invoke_ns,
        complete_ns,
    )
}

fn register_info(id: u64, contact: &str, invoke_ns: u64, complete_ns: Option<u64>) -> Op {
    op(
        id,
        Call::Register { contact: contact.into() },
        OpResult::Info("timeout".into()),
        invoke_ns,
        complete_ns,
    )
}

fn lookup(id: u64, found: Option<&str>, invoke_ns: u64, complete_ns: u64) -> Op {
    ok(id, Call::Lookup, Ret::Found(found.map(str::to_owned)), invoke_ns, complete_ns)
}

fn unregister(id: u64, generation: Option<u64>, removed: bool, invoke_ns: u64, done: u64) -> Op {
    ok(id, Call::Unregister { generation }, Ret::Removed(removed), invoke_ns, done)
}

fn registers(ops: &[Op]) -> KeyCheck {
    check_key(&RegisterModel, ops, &Budget::unlimited())
}

fn witness(check: &KeyCheck) -> &Witness {
    match &check.result {
        KeyResult::Invalid { witness } => witness,
        other => panic!("expected invalid, got {other}"),
    }
}

fn register_state(contact: Option<(&str, Option<u64>)>, next_generation: u64) -> String {
    use crate::model::{Binding, RegisterState};
    let binding =
        contact.map(|(contact, generation)| Binding { contact: contact.into(), generation });
    format!("{:?}", RegisterState { binding, next_generation })
}

#[test]
fn empty_history_is_valid() {
    let check = registers(&[]);
    assert_eq!(check.result, KeyResult::Valid);
    assert_eq!((check.stats.ops, check.stats.checked), (0, 0));
}

#[test]
fn sequential_register_history_is_valid() {
    let history = [
        lookup(1, None, 0, 5),
        register(2, "a", 1, 10, 20),
        lookup(3, Some("a"), 30, 40),
        register(4, "b", 7, 50, 60),
        lookup(5, Some("b"), 70, 80),
        unregister(6, Some(1), false, 90, 100),
        unregister(7, Some(7), true, 110, 120),
        lookup(8, None, 130, 140),
        register(9, "c", 8, 150, 160),
        unregister(10, None, true, 170, 180),
        unregister(11, None, false, 190, 200),
    ];
    let check = registers(&history);
    assert_eq!(check.result, KeyResult::Valid);
    assert_eq!((check.stats.ops, check.stats.checked), (11, 11));
    assert_eq!(check.stats.cache_entries, 11, "a sequential history never backtracks");
}

#[test]
fn concurrent_register_history_is_valid() {
    // b is invoked after a but the server ordered it first (generation 1):
    // b, then lookup b, then a, then lookup a.
    let history = [
        register(1, "a", 2, 0, 100),
        register(2, "b", 1, 10, 90),
        lookup(3, Some("b"), 20, 30),
        lookup(4, Some("a"), 95, 110),
        // Overlaps everything, sees the final state.
        lookup(5, Some("a"), 5, 120),
    ];
    assert_eq!(registers(&history).result, KeyResult::Valid);
}

#[test]
fn reads_may_see_either_side_of_a_concurrent_write() {
    let history = [
        register(1, "a", 1, 0, 10),
        register(2, "b", 2, 20, 60),
        lookup(3, Some("a"), 25, 35),
        lookup(4, Some("b"), 30, 40),
        lookup(5, Some("b"), 45, 55),
    ];
    assert_eq!(registers(&history).result, KeyResult::Valid);
}

#[test]
fn stale_read_is_invalid_and_the_witness_names_it() {
    let history = [
        register(1, "a", 1, 0, 10),
        register(2, "b", 2, 20, 30),
        // Began after b was acknowledged, yet sees a.
        lookup(3, Some("a"), 40, 50),
        // An innocent read concurrent with the stale one.
        lookup(4, Some("b"), 35, 60),
    ];
    let check = registers(&history);
    assert_eq!(
        *witness(&check),
        Witness {
            linearized: vec![1, 2, 4],
            state: register_state(Some(("b", Some(2))), 3),
            op: 3,
            concurrent: vec![4],
        }
    );
    assert_eq!(check.result.verdict(), Verdict::Invalid);
}

#[test]
fn lost_write_is_invalid() {
    // Acknowledged, then a later, non-concurrent read sees nothing.
    let history = [register(1, "a", 1, 0, 10), lookup(2, None, 20, 30)];
    let check = registers(&history);
    assert_eq!(
        *witness(&check),
        Witness {
            linearized: vec![1],
            state: register_state(Some(("a", Some(1))), 2),
            op: 2,
            concurrent: vec![],
        }
    );

    // Acknowledged, then a later read sees the value it replaced.
    let history = [
        register(1, "old", 4, 0, 10),
        register(2, "new", 5, 20, 30),
        lookup(3, Some("new"), 40, 50),
        lookup(4, Some("old"), 60, 70),
    ];
    let check = registers(&history);
    assert_eq!(
        *witness(&check),
        Witness {
            linearized: vec![1, 2, 3],
            state: register_state(Some(("new", Some(5))), 6),
            op: 4,
            concurrent: vec![],
        }
    );
}

#[test]
fn lost_unregister_is_invalid() {
    let history = [
        register(1, "a", 1, 0, 10),
        unregister(2, Some(1), true, 20, 30),
        lookup(3, Some("a"), 40, 50),
    ];
    assert_eq!(witness(&registers(&history)).op, 3);
}

#[test]
fn generations_going_backwards_is_invalid() {
    let history = [register(1, "a", 5, 0, 10), register(2, "b", 3, 20, 30)];
    let check = registers(&history);
    assert_eq!(
        *witness(&check),
        Witness {
            linearized: vec![1],
            state: register_state(Some(("a", Some(5))), 6),
            op: 2,
            concurrent: vec![],
        }
    );
}

#[test]
fn read_of_a_value_never_written_is_invalid() {
    let history = [register(1, "a", 1, 0, 10), lookup(2, Some("zz"), 5, 15)];
    let check = registers(&history);
    assert_eq!(
        *witness(&check),
        Witness {
            linearized: vec![1],
            state: register_state(Some(("a", Some(1))), 2),
            op: 2,
            concurrent: vec![1],
        }
    );
}

#[test]
fn indeterminate_register_later_read_is_valid() {
    let history = [
        register(1, "a", 1, 0, 10),
        register_info(2, "b", 20, Some(30)),
        // b had not taken effect yet when this read ran...
        lookup(3, Some("a"), 40, 50),
        // ...and took effect after the client gave up.
        lookup(4, Some("b"), 60, 70),
        // A register that never completed, observed later still.
        register_info(5, "c", 80, None),
        lookup(6, Some("c"), 90, 100),
        // b and c used up generations 2 and 3 at least.
        register(7, "d", 4, 110, 120),
        lookup(8, Some("d"), 130, 140),
    ];
    let check = registers(&history);
    assert_eq!(check.result, KeyResult::Valid);
    assert_eq!(check.stats.checked, 8);
}

#[test]
fn indeterminate_register_never_observed_is_valid() {
    let history = [
        register(1, "a", 1, 0, 10),
        register_info(2, "b", 20, Some(30)),
        register_info(3, "c", 25, None),
        lookup(4, Some("a"), 40, 50),
        lookup(5, Some("a"), 1_000, 1_010),
    ];
    assert_eq!(registers(&history).result, KeyResult::Valid);
}

#[test]
fn an_indeterminate_write_takes_effect_at_most_once() {
    let history = [
        register(1, "a", 1, 0, 10),
        register_info(2, "b", 20, Some(30)),
        lookup(3, Some("b"), 40, 50),
        lookup(4, Some("a"), 60, 70),
    ];
    let check = registers(&history);
    assert_eq!(
        *witness(&check),
        Witness {
            linearized: vec![1, 2, 3],
            state: register_state(Some(("b", None)), 3),
            op: 4,
            concurrent: vec![2],
        }
    );
}

#[test]
fn two_indeterminate_registers_cannot_both_land_below_a_known_generation() {
    // Each indeterminate register uses a generation: after two of them on top
    // of generation 1 (so at least 2 and 3), an acknowledged generation 3
    // cannot come later than both.
    let history = [
        register(1, "a", 1, 0, 10),
        register_info(2, "b", 20, Some(30)),
        register_info(3, "c", 20, Some(30)),
        lookup(4, Some("b"), 40, 50),
        lookup(5, Some("c"), 60, 70),
        register(6, "d", 3, 80, 90),
    ];
    assert_eq!(registers(&history).result.verdict(), Verdict::Invalid);
    // With room for both it is fine.
    let mut history = history;
    history[5] = register(6, "d", 4, 80, 90);
    assert_eq!(registers(&history).result, KeyResult::Valid);
}

#[test]
fn failed_ops_and_indeterminate_reads_are_ignored() {
    let history = [
        register(1, "a", 1, 0, 10),
        op(
            2,
            Call::Register { contact: "b".into() },
            OpResult::Fail("no leader".into()),
            20,
            Some(30),
        ),
        op(
            3,
            Call::Unregister { generation: None },
            OpResult::Fail("refused".into()),
            31,
            Some(32),
        ),
        op(4, Call::Lookup, OpResult::Info("timeout".into()), 33, Some(34)),
        op(5, Call::Lookup, OpResult::Ok(Ret::Found(Some("zz".into()))), 35, None),
        lookup(6, Some("a"), 40, 50),
    ];
    let check = registers(&history);
    assert_eq!(check.result, KeyResult::Valid);
    assert_eq!((check.stats.ops, check.stats.checked), (6, 2));
}

#[test]
fn a_failed_write_that_is_observed_is_invalid() {
    // "Fail" promises the write did not happen, so seeing it is an anomaly.
    let history = [
        op(
            1,
            Call::Register { contact: "b".into() },
            OpResult::Fail("no leader".into()),
            0,
            Some(10),
        ),
        lookup(2, Some("b"), 20, 30),
    ];
    assert_eq!(witness(&registers(&history)).op, 2);
}

fn cas(id: u64, expected_version: u64, new_state: &str, ret: Ret, invoke: u64, done: u64) -> Op {
    ok(id, Call::Cas { expected_version, new_state: new_state.into() }, ret, invoke, done)
}

fn start(id: u64, state: &str, invoke: u64, done: u64) -> Op {
    ok(id, Call::Start { state: state.into() }, Ret::Started { version: 1 }, invoke, done)
}

fn read(id: u64, value: Option<(&str, u64)>, invoke: u64, done: u64) -> Op {
    let value = value.map(|(state, version)| CallValue { state: state.into(), version });
    ok(id, Call::Read, Ret::Value(value), invoke, done)
}

fn calls(ops: &[Op]) -> KeyCheck {
    check_key(&CasModel, ops, &Budget::unlimited())
}

#[test]
fn cas_history_with_a_refused_swap_is_valid() {
    let history = [
        read(1, None, 0, 2),
        cas(2, 1, "early", Ret::CasConflict { actual: None }, 1, 3),
        start(3, "ringing", 4, 5),
        cas(4, 1, "answered", Ret::Cased { version: 2 }, 10, 20),
        cas(5, 1, "rejected", Ret::CasConflict { actual: Some(2) }, 12, 22),
        read(6, Some(("answered", 2)), 30, 40),
        cas(7, 2, "ended", Ret::Cased { version: 3 }, 50, 60),
        read(8, Some(("ended", 3)), 70, 80),
    ];
    assert_eq!(calls(&history).result, KeyResult::Valid);
}

#[test]
fn two_successful_cas_at_the_same_version_is_invalid() {
    let history = [
        start(1, "ringing", 0, 5),
        cas(2, 1, "answered", Ret::Cased { version: 2 }, 10, 20),
        cas(3, 1, "rejected", Ret::Cased { version: 2 }, 12, 22),
    ];
    let check = calls(&history);
    assert_eq!(
        *witness(&check),
        Witness {
            linearized: vec![1, 2],
            state: format!("{:?}", Some(CallValue { state: "answered".into(), version: 2 })),
            op: 3,
            concurrent: vec![2],
        }
    );
}

#[test]
fn indeterminate_cas_may_or_may_not_have_happened() {
    let info_cas = |id, invoke| {
        op(
            id,
            Call::Cas { expected_version: 1, new_state: "answered".into() },
            OpResult::Info("timeout".into()),
            invoke,
            None,
        )
    };
    let happened =
        [start(1, "ringing", 0, 5), info_cas(2, 10), read(3, Some(("answered", 2)), 30, 40)];
    assert_eq!(calls(&happened).result, KeyResult::Valid);
    let did_not =
        [start(1, "ringing", 0, 5), info_cas(2, 10), read(3, Some(("ringing", 1)), 30, 40)];
    assert_eq!(calls(&did_not).result, KeyResult::Valid);
    // But a conflicting acknowledged swap cannot coexist with it being seen.
    let both = [
        start(1, "ringing", 0, 5),
        info_cas(2, 10),
        cas(3, 1, "rejected", Ret::Cased { version: 2 }, 20, 25),
        read(4, Some(("answered", 2)), 30, 40),
    ];
    assert_eq!(calls(&both).result.verdict(), Verdict::Invalid);
}

#[test]
fn calls_of_another_workload_are_unknown_not_judged() {
    let history = [register(1, "a", 1, 0, 10)];
    let check = calls(&history);
    assert_eq!(
        check.result,
        KeyResult::Unknown {
            reason: "op 1 calls Register { contact: \"a\" }, which this model does not specify"
                .into()
        }
    );
}

#[test]
fn completion_before_invocation_is_unknown() {
    let check = registers(&[lookup(1, None, 10, 5)]);
    assert_eq!(check.result.verdict(), Verdict::Unknown);
}

/// Twelve overlapping indeterminate registers then a read of a contact
/// nobody wrote: invalid, but only after trying every subset of the twelve.
fn pathological() -> Vec<Op> {
    let mut history: Vec<Op> =
        (1..=12).map(|i| register_info(i, &format!("c{i}"), i, None)).collect();
    history.push(lookup(13, Some("nobody"), 100, 110));
    history
}

#[test]
fn exhausted_step_budget_is_unknown_never_valid() {
    let check = check_key(&RegisterModel, &pathological(), &Budget::steps(100));
    assert_eq!(
        check.result,
        KeyResult::Unknown {
            reason: format!(
                "step budget of 100 exhausted (13 ops, {} configurations explored)",
                check.stats.cache_entries
            )
        }
    );
    assert_eq!(check.stats.steps, 100);

    // With room to finish, the verdict is Invalid.
    let check = registers(&pathological());
    assert_eq!(
        *witness(&check),
        Witness {
            linearized: (1..=12).collect(),
            state: register_state(Some(("c12", None)), 12),
            op: 13,
            concurrent: (1..=12).collect(),
        }
    );
    assert!(check.stats.steps > 100);
}

#[test]
fn exhausted_time_limit_is_unknown() {
    let budget = Budget { time_limit: Some(Duration::ZERO), ..Budget::unlimited() };
    let check = check_key(&RegisterModel, &pathological(), &budget);
    assert_eq!(check.result.verdict(), Verdict::Unknown);
    assert_eq!(check.stats.steps, 0);
}

#[test]
fn exhausted_memo_limit_is_unknown() {
    let budget = Budget { max_configurations: Some(20), ..Budget::unlimited() };
    let check = check_key(&RegisterModel, &pathological(), &budget);
    let KeyResult::Unknown { reason } = &check.result else {
        panic!("expected unknown, got {}", check.result);
    };
    assert!(reason.starts_with("memo limit of 20 configurations reached"), "{reason}");
    assert_eq!(check.stats.cache_entries, 20);
}

#[test]
fn long_sequential_history_needs_no_recursion() {
    let mut history = Vec::new();
    for i in 0..5_000u64 {
        let t = i * 100;
        history.push(register(2 * i + 1, &format!("c{i}"), i + 1, t, t + 10));
        history.push(lookup(2 * i + 2, Some(&format!("c{i}")), t + 20, t + 30));
    }
    let check = registers(&history);
    assert_eq!(check.result, KeyResult::Valid);
    assert_eq!(check.stats.cache_entries, 10_000);
}

#[test]
fn verdicts_combine_invalid_over_unknown_over_valid() {
    use Verdict::*;
    assert_eq!(Verdict::combine([]), Valid);
    assert_eq!(Verdict::combine([Valid, Valid]), Valid);
    assert_eq!(Verdict::combine([Valid, Unknown, Valid]), Unknown);
    assert_eq!(Verdict::combine([Unknown, Invalid, Valid]), Invalid);
    assert_eq!(Verdict::combine([Invalid, Unknown]), Invalid);
}

fn on_key(key: &str, id_base: u64, mut ops: Vec<Op>) -> Vec<Op> {
    for op in &mut ops {
        op.key = key.into();
        op.id += id_base;
        op.process += id_base;
    }
    ops
}

#[test]
fn one_invalid_key_makes_the_history_invalid_and_is_named() {
    let mut history =
        on_key("1000", 0, vec![register(1, "a", 1, 0, 10), lookup(2, Some("a"), 20, 30)]);
    // Same contact and generations on another key: keys are independent.
    history.extend(on_key(
        "2000",
        100,
        vec![register(1, "a", 1, 0, 10), register(2, "b", 2, 20, 30), lookup(3, Some("a"), 40, 50)],
    ));
    history.extend(on_key("3000", 200, vec![lookup(1, None, 0, 10)]));
    // An indeterminate key elsewhere.
    history.extend(on_key("4000", 300, vec![register_info(1, "x", 0, None)]));

    let options = CheckOptions { budget: Budget::unlimited(), threads: NonZeroUsize::new(2) };
    let report = check(&RegisterModel, &history, &options).unwrap();
    assert_eq!(report.verdict, Verdict::Invalid);
    assert_eq!(report.invalid_keys(), vec!["2000"]);
    assert!(report.unknown_keys().is_empty());
    assert_eq!(
        report.keys.keys().map(String::as_str).collect::<Vec<_>>(),
        vec!["1000", "2000", "3000", "4000"]
    );
    assert_eq!(report.threads, 2);
    assert_eq!(witness(&report.keys["2000"]).op, 103);
    assert_eq!(witness(&report.keys["2000"]).linearized, vec![101, 102]);
    assert_eq!(report.keys["1000"].result, KeyResult::Valid);
    assert_eq!(report.keys["2000"].stats.ops, 3);

    // The report serializes (for the report writer).
    let json = serde_json::to_string(&report).unwrap();
    let back: CheckReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back, report);
}

#[test]
fn an_undecided_key_makes_the_history_unknown() {
    let mut history = on_key("1000", 0, vec![register(1, "a", 1, 0, 10)]);
    history.extend(on_key("2000", 100, pathological()));
    let options = CheckOptions { budget: Budget::steps(100), threads: None };
    let report = check(&RegisterModel, &history, &options).unwrap();
    assert_eq!(report.verdict, Verdict::Unknown);
    assert_eq!(report.unknown_keys(), vec!["2000"]);
    assert!(report.invalid_keys().is_empty());
    assert!(report.threads >= 1 && report.threads <= 2);
}

#[test]
fn a_malformed_history_is_an_error() {
    let history = [register(1, "a", 1, 0, 10), lookup(1, None, 20, 30)];
    let err = check(&RegisterModel, &history, &CheckOptions::default()).unwrap_err();
    assert!(matches!(err, HistoryError::DuplicateId(1)), "{err}");
}

#[test]
fn an_empty_history_checks_valid() {
    let report = check(&CasModel, &[], &CheckOptions::default()).unwrap();
    assert_eq!(report.verdict, Verdict::Valid);
    assert!(report.keys.is_empty());
    assert_eq!(report.threads, 1);
}
