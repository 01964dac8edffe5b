//! Property tests: histories made by actually running a small sequential
//! server, one operation at a time at known instants, then stretching each
//! operation into a random interval around its instant (so operations overlap)
//! and randomly losing answers or failing operations. Such a history is
//! linearizable by construction — the instants are a linearization — so the
//! checker must never call it Invalid. The servers here are written apart from
//! the models, as another reading of the same contract.

use proptest::prelude::*;

use super::*;
use crate::history::{Call, CallValue, OpResult, Ret};
use crate::model::{CasModel, RegisterModel};

/// How an operation's outcome is recorded.
#[derive(Clone, Copy, Debug)]
enum Fate {
    /// Applied and acknowledged.
    Ok,
    /// Not applied, recorded `Fail`.
    Fail,
    /// Applied, answer lost (`Info`, completed).
    InfoApplied,
    /// Not applied, answer lost (`Info`, completed).
    InfoNotApplied,
    /// Applied, never completed.
    PendingApplied,
    /// Not applied, never completed.
    PendingNotApplied,
}

#[derive(Clone, Debug)]
struct Step {
    key: usize,
    action: u8,
    arg: u8,
    fate: Fate,
    /// How long before its instant the op is invoked.
    before: u64,
    /// How long after its instant the op completes.
    after: u64,
    /// Generations used up by other keys before this one.
    gap: u64,
}

/// Instants are this far apart; intervals stretch up to three times as far
/// each side, so up to about six operations overlap.
const SPACING: u64 = 20;
const KEYS: usize = 3;

fn fate() -> impl Strategy<Value = Fate> {
    prop_oneof![
        12 => Just(Fate::Ok),
        2 => Just(Fate::Fail),
        2 => Just(Fate::InfoApplied),
        1 => Just(Fate::InfoNotApplied),
        1 => Just(Fate::PendingApplied),
        1 => Just(Fate::PendingNotApplied),
    ]
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let step = (0..KEYS, 0..4u8, 0..4u8, fate(), 0..3 * SPACING, 0..3 * SPACING, 0..3u64).prop_map(
        |(key, action, arg, fate, before, after, gap)| Step {
            key,
            action,
            arg,
            fate,
            before,
            after,
            gap,
        },
    );
    prop::collection::vec(step, 1..40)
}

/// A sequential implementation of one workload over [`KEYS`] keys.
trait Server {
    /// The call `step` makes and the answer it gets, or `None` for the answer
    /// when the server refuses it (recorded `Fail`). The state changes only
    /// when `apply` is true.
    fn run(&mut self, step: &Step, apply: bool) -> (Call, Option<Ret>);
}

#[derive(Default)]
struct RegisterServer {
    bindings: [Option<(String, u64)>; KEYS],
    generation: u64,
}

impl Server for RegisterServer {
    fn run(&mut self, step: &Step, apply: bool) -> (Call, Option<Ret>) {
        let binding = &mut self.bindings[step.key];
        match step.action {
            0 | 1 => {
                let contact = format!("c{}", step.arg);
                let generation = self.generation + 1 + step.gap;
                if apply {
                    self.generation = generation;
                    *binding = Some((contact.clone(), generation));
                }
                (Call::Register { contact }, Some(Ret::Registered { generation }))
            }
            2 => (Call::Lookup, Some(Ret::Found(binding.as_ref().map(|b| b.0.clone())))),
            _ => {
                let current = binding.as_ref().map(|b| b.1);
                let generation = match step.arg {
                    0 => None,
                    1 => Some(current.unwrap_or(0)),
                    2 => Some(self.generation.saturating_sub(1)),
                    _ => Some(self.generation),
                };
                let removes = current.is_some() && (generation.is_none() || generation == current);
                if apply && removes {
                    *binding = None;
                }
                (Call::Unregister { generation }, Some(Ret::Removed(removes)))
            }
        }
    }
}

#[derive(Default)]
struct CasServer {
    calls: [Option<CallValue>; KEYS],
}

impl Server for CasServer {
    fn run(&mut self, step: &Step, apply: bool) -> (Call, Option<Ret>) {
        let call = &mut self.calls[step.key];
        let version = call.as_ref().map(|c| c.version);
        match step.action {
            0 => {
                let state = format!("s{}", step.arg);
                if call.is_some() {
                    return (Call::Start { state }, None);
                }
                if apply {
                    *call = Some(CallValue { state: state.clone(), version: 1 });
                }
                (Call::Start { state }, Some(Ret::Started { version: 1 }))
            }
            1 | 2 => {
                let seen = version.unwrap_or(1);
                let expected_version = match step.arg {
                    0 | 1 => seen,
                    2 => seen + 1,
                    _ => seen.saturating_sub(1),
                };
                let new_state = format!("s{}{}", step.action, step.arg);
                let cas = Call::Cas { expected_version, new_state: new_state.clone() };
                if version == Some(expected_version) {
                    if apply {
                        *call = Some(CallValue { state: new_state, version: expected_version + 1 });
                    }
                    (cas, Some(Ret::Cased { version: expected_version + 1 }))
                } else {
                    (cas, Some(Ret::CasConflict { actual: version }))
                }
            }
            _ => (Call::Read, Some(Ret::Value(call.clone()))),
        }
    }
}

/// Runs `steps` on `server` in order, the i-th at instant `1000 + i *
/// SPACING`, and records the history. Processes are reused when free, so no
/// process ever has two operations outstanding.
fn build(steps: &[Step], server: &mut impl Server) -> Vec<Op> {
    let mut ops = Vec::with_capacity(steps.len());
    // Per process: when it is free again; `None` once it has an op that
    // never completes.
    let mut free_at: Vec<Option<u64>> = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let at = 1_000 + SPACING * i as u64;
        let invoke_ns = at - step.before;
        let done = Some(at + step.after);
        let applied = matches!(step.fate, Fate::Ok | Fate::InfoApplied | Fate::PendingApplied);
        let (call, ret) = server.run(step, applied);
        let (result, complete_ns) = match (ret, step.fate) {
            (None, _) => (OpResult::Fail("refused".into()), done),
            (Some(ret), Fate::Ok) => (OpResult::Ok(ret), done),
            (Some(_), Fate::Fail) => (OpResult::Fail("unavailable".into()), done),
            (Some(_), Fate::InfoApplied | Fate::InfoNotApplied) => {
                (OpResult::Info("timeout".into()), done)
            }
            (Some(_), Fate::PendingApplied | Fate::PendingNotApplied) => {
                (OpResult::Info("still running".into()), None)
            }
        };
        let process = match free_at.iter().position(|f| f.is_some_and(|t| t <= invoke_ns)) {
            Some(p) => p,
            None => {
                free_at.push(None);
                free_at.len() - 1
            }
        };
        free_at[process] = complete_ns;
        ops.push(Op {
            id: i as u64 + 1,
            process: process as u64,
            key: format!("k{}", step.key),
            call,
            result,
            invoke_ns,
            complete_ns,
        });
    }
    ops
}

fn options() -> CheckOptions {
    CheckOptions { budget: Budget::steps(1_000_000), threads: None }
}

fn show(ops: &[Op]) -> String {
    ops.iter().map(|op| format!("{op}\n")).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn executed_register_histories_are_never_invalid(steps in steps()) {
        let ops = build(&steps, &mut RegisterServer::default());
        let report = check(&RegisterModel, &ops, &options()).unwrap();
        prop_assert_ne!(report.verdict, Verdict::Invalid, "{:#?}\n{}", report.keys, show(&ops));
    }

    #[test]
    fn executed_cas_histories_are_never_invalid(steps in steps()) {
        let ops = build(&steps, &mut CasServer::default());
        let report = check(&CasModel, &ops, &options()).unwrap();
        prop_assert_ne!(report.verdict, Verdict::Invalid, "{:#?}\n{}", report.keys, show(&ops));
    }

    /// The other direction, as a sanity check that Valid is earned: a lookup
    /// answered with a contact nobody registered makes its key invalid.
    #[test]
    fn a_corrupted_lookup_is_caught(steps in steps()) {
        let mut ops = build(&steps, &mut RegisterServer::default());
        let Some(target) = ops
            .iter()
            .position(|op| op.call == Call::Lookup && op.ok_ret().is_some())
        else {
            return Ok(());
        };
        ops[target].result = OpResult::Ok(Ret::Found(Some("never-written".into())));
        let report = check(&RegisterModel, &ops, &options()).unwrap();
        prop_assert_eq!(
            report.invalid_keys(),
            vec![ops[target].key.as_str()],
            "{:#?}\n{}",
            report.keys,
            show(&ops)
        );
    }
}
